// The O_DIRECT path of the fs block store: writing a block's temp file, and reading a block into
// the caller's buffer, with O_DIRECT where the memory is aligned and the filesystem takes it.
//
// Direct I/O: a block in aligned memory (aligned-memory.ts: the ingest's chunk slots) is written
// with O_DIRECT, from the slot straight to the device, instead of being copied into the page
// cache and written back from there. Blocks are written once and read rarely, so caching them
// only evicts what is worth caching; and on this project's VMs the copy into fresh page-cache
// pages was the most expensive thing ingest did: `dd` of 2 GiB, 4.6 CPU-s buffered against 0.45
// with O_DIRECT (and 362 against 727 MB/s). Where O_DIRECT is refused (ramfs, tmpfs before Linux
// 6.6, some network filesystems: EINVAL) the store falls back to buffered writes for good. Reads
// into aligned memory (getInto: the slots a WADO response streams from) are direct too; other
// reads (get: frames, metadata, verify) go through the page cache.
//
// What was measured and dropped (writing small blocks buffered): storage/README.md.
import { constants } from 'node:fs';
import type { CID } from 'multiformats/cid';
import { VaultError } from '../../src/core/errors.ts';
import { throwIfAborted } from '../../src/core/abort.ts';
import { DIRECT_IO_ALIGNMENT, alignedRoom, isAligned, roundUp } from '../../src/core/aligned-memory.ts';
import { O_DIRECT, errnoCode, io, removeQuietly, sync, writeAll } from './io.ts';

export class DirectIo {
  /** Cleared for good once the filesystem refused O_DIRECT. */
  #enabled: boolean;
  /** Makes a missing shard directory (a temp file's open found it missing). */
  readonly #missingDir: (dir: string) => Promise<void>;

  /** `enabled`: the store's directIO option; off anyway where the platform has no O_DIRECT. */
  constructor(enabled: boolean, missingDir: (dir: string) => Promise<void>) {
    this.#enabled = enabled && O_DIRECT !== undefined;
    this.#missingDir = missingDir;
  }

  /** Whether blocks in aligned memory are written and read with O_DIRECT (false once the filesystem refused it). */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Writes `bytes` to a new temp file; returns its descriptor, still open, when `keep`. */
  async writeTemp(dir: string, tmp: string, bytes: Uint8Array, durable: boolean, keep: boolean, signal: AbortSignal | undefined): Promise<number | undefined> {
    const opened = await this.#createTemp(dir, tmp, this.#enabled && bytes.byteLength >= DIRECT_IO_ALIGNMENT && isAligned(bytes));
    const direct = opened.direct;
    let fd = opened.fd;
    try {
      throwIfAborted(signal);
      // Written straight from the caller's array: no copy.
      if (direct) fd = await this.#writeDirect(fd, tmp, bytes, signal);
      else await writeAll(fd, bytes, 0, bytes.byteLength, signal, true);
      if (durable) await io.fdatasync(fd);
    } catch (err) {
      sync.close(fd);
      removeQuietly(tmp);
      if (direct && errnoCode(err) === 'EINVAL') {
        // The filesystem takes O_DIRECT at open but not these writes (a larger logical block
        // size, say): buffered from now on.
        this.#enabled = false;
        return this.writeTemp(dir, tmp, bytes, durable, keep, signal);
      }
      throw err;
    }
    if (keep) return fd;
    sync.close(fd);
    return undefined;
  }

  /** Creates the temp file, with O_DIRECT when `direct` and the filesystem accepts it (`direct` tells). */
  async #createTemp(dir: string, tmp: string, direct: boolean): Promise<{ fd: number; direct: boolean }> {
    const flags = direct ? constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | O_DIRECT! : 'wx';
    try {
      return { fd: sync.open(tmp, flags), direct };
    } catch (err) {
      const code = errnoCode(err);
      if (direct && code === 'EINVAL') {
        // No O_DIRECT on this filesystem (ramfs; tmpfs before Linux 6.6). Linux refuses it only
        // once the file is made, so the temp file exists now: it goes before the buffered open
        // (O_EXCL) makes it again.
        this.#enabled = false;
        removeQuietly(tmp);
        return this.#createTemp(dir, tmp, false);
      }
      if (code !== 'ENOENT') throw err;
      // The shard directory is missing (see FsBlockStore.put): make it, then open again.
      await this.#missingDir(dir);
      return { fd: sync.open(tmp, flags), direct };
    }
  }

  /**
   * Writes `bytes` (aligned) through `fd` (O_DIRECT) up to the last whole DIRECT_IO_ALIGNMENT
   * block; O_DIRECT takes nothing shorter, so the rest (under 4 KiB, alone in its page and so
   * written without reading anything back) goes through a second, buffered descriptor, which is
   * returned in place of `fd` (then closed) for the sync. An fdatasync of either covers the file.
   * If it throws, `fd` is still open and the caller's to close.
   */
  async #writeDirect(fd: number, tmp: string, bytes: Uint8Array, signal: AbortSignal | undefined): Promise<number> {
    const head = bytes.byteLength - (bytes.byteLength % DIRECT_IO_ALIGNMENT);
    await writeAll(fd, bytes, 0, head, signal, false);
    if (head === bytes.byteLength) return fd;
    const tail = sync.open(tmp, constants.O_WRONLY);
    try {
      await writeAll(tail, bytes, head, bytes.byteLength, signal, true);
    } catch (err) {
      sync.close(tail);
      throw err;
    }
    sync.close(fd);
    return tail;
  }

  /**
   * A block's file into the caller's buffer (FsBlockStore.getInto): open, fstat, read, close, and
   * no allocation; undefined if it does not fit. Into aligned memory (a WADO response's slots) the
   * read is direct: a block streamed out is read once, from the device into the slot, rather than
   * into the page cache and copied from there (a 4 GiB study not in the page cache, same VM: 7.4
   * CPU-s in reads buffered, 1.2 direct; 329 against 464 MB/s to curl).
   */
  async readInto(cid: CID, file: string, target: Uint8Array, signal: AbortSignal | undefined): Promise<number | undefined> {
    throwIfAborted(signal);
    const room = this.#enabled ? alignedRoom(target) : undefined;
    try {
      const fd = sync.open(file, room !== undefined ? constants.O_RDONLY | O_DIRECT! : 'r');
      try {
        const { size } = sync.fstat(fd);
        if (size > target.byteLength) return undefined;
        // O_DIRECT reads whole blocks: ask for the size rounded up (the room past `target` is
        // its slot's padding) and get `size` back, the end of the file.
        const into = room ?? target;
        const want = room !== undefined ? Math.min(roundUp(size, DIRECT_IO_ALIGNMENT), room.byteLength) : size;
        let n = 0;
        while (n < size) {
          throwIfAborted(signal);
          const got = await io.read(fd, into, n, want - n, n);
          if (got === 0) throw new VaultError('STORE_UNAVAILABLE', `block ${cid} ended after ${n} of ${size} bytes`, { details: { cid: cid.toString() } });
          n += got;
        }
        return size;
      } finally {
        sync.close(fd);
      }
    } catch (err) {
      if (room !== undefined && errnoCode(err) === 'EINVAL') {
        // The filesystem refuses O_DIRECT (at open, or for these reads): buffered from now on.
        this.#enabled = false;
        return this.readInto(cid, file, target, signal);
      }
      throw err;
    }
  }
}
