// The local-disk block store: one file per block at `<path>/<shard>/<base32 CID>.data`.
//
// Written by hand rather than wrapping blockstore-fs because that package reports every read
// failure as "not found" (`NotFoundError(String(err))`), drops `cause`, never fsyncs, and
// copies block bytes through streams; this is the ingest hot path and the node's durability
// promise, so each of those matters here.
//
// Durability: a put writes a unique temp file in the shard directory, fdatasyncs it, renames it
// into place and fsyncs the directory (directory fsyncs are group-committed across concurrent
// puts). Puts with `durable: false` skip both syncs and `flush()` performs them later.
// Assumes one FsBlockStore per directory (one process); POSIX rename and directory fsync.
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
// Measured and dropped: writing blocks under 1 MiB buffered (a small instance's one chunk then
// needs no second descriptor for its tail). 1,000 small instances ran at a median 325 against 301
// inst/s one hour, and at 231-267 against 317-340 the next, when the copies into new page-cache
// pages cost the thread pool 1.4-1.8 CPU-s per 1,000 instances (0.3 with O_DIRECT). The cost of
// buffered writes on these VMs depends on the memory's history; that of O_DIRECT does not.
import { randomUUID } from 'node:crypto';
import fsCallbacks, { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { base32 } from 'multiformats/bases/base32';
import { CID } from 'multiformats/cid';
import { VaultError } from '../src/core/errors.ts';
import { abortError, throwIfAborted, raceAbort } from '../src/core/abort.ts';
import { DIRECT_IO_ALIGNMENT, alignedRoom, isAligned, roundUp } from '../src/core/aligned-memory.ts';
import type { AbortOptions, BlockStore, PutOptions } from './block-store.ts';

/**
 * The calls on the put and flush paths that wait for the device (writes of block data, fdatasync,
 * fsync) or read block data, through Node's callback API: fs.promises wraps every descriptor in
 * a FileHandle object with its own close bookkeeping, which cost more main thread time than the
 * calls themselves on small blocks. (get() reads through fs.promises.readFile: see there why.)
 *
 * The calls that only touch metadata the kernel has in memory (open, close, stat, rename, and
 * the buffered write of a few KiB) are made synchronously (`sync` below). Each asynchronous call
 * is a round trip through libuv's thread pool: 30-47 µs of CPU for one fs.stat against 5-6 µs for
 * fs.statSync, measured here (20,000 calls, 16 at once), and a small instance made about twenty
 * such calls. On the two cores this node is sized for, that CPU came out of ingest. On a local
 * filesystem, which is what this store is for, each of these blocks the event loop for a few
 * microseconds; node:sqlite (the catalog) blocks it the same way.
 */
const io = {
  fsync: promisify(fsCallbacks.fsync),
  fdatasync: promisify(fsCallbacks.fdatasync),
  read: (fd: number, into: Uint8Array, offset: number, length: number, position: number): Promise<number> =>
    new Promise((resolve, reject) => fsCallbacks.read(fd, into, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)))),
  write: (fd: number, bytes: Uint8Array, offset: number, length: number, position: number): Promise<number> =>
    new Promise((resolve, reject) => fsCallbacks.write(fd, bytes, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)))),
};

/** Metadata calls, made synchronously: see `io`. */
const sync = {
  open: fsCallbacks.openSync as (path: string, flags: string | number) => number,
  /** Closes quietly: by the time a descriptor is closed its data is written (and synced if asked). */
  close: (fd: number): void => {
    try {
      fsCallbacks.closeSync(fd);
    } catch {
      // EBADF / EIO on close: nothing left to do with the descriptor.
    }
  },
  rename: fsCallbacks.renameSync,
  unlink: fsCallbacks.unlinkSync,
  stat: (file: string) => fsCallbacks.statSync(file, { throwIfNoEntry: false }),
  /** Sets a file's times to now; false if it is gone. */
  touch: (file: string): boolean => {
    const now = new Date();
    try {
      fsCallbacks.utimesSync(file, now, now);
      return true;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw err;
    }
  },
  fstat: fsCallbacks.fstatSync,
  write: fsCallbacks.writeSync,
};

/** Buffered writes up to this size are made synchronously (a copy into the page cache); larger ones through the thread pool. */
const SYNC_WRITE_MAX = 64 << 10;

/** O_DIRECT where the platform has it (Linux); undefined elsewhere, where writes stay buffered. */
const O_DIRECT: number | undefined = (constants as Record<string, number | undefined>).O_DIRECT;

/** Characters of a block's name that pick its shard directory: 2 gives 32² = 1024 directories. */
export const DEFAULT_SHARD_PREFIX_LENGTH = 2;
export const MAX_SHARD_PREFIX_LENGTH = 4;
/** How many files `flush()` fsyncs at once. */
export const DEFAULT_FLUSH_CONCURRENCY = 32;
/** Files written by non-durable puts whose handles stay open until their flush, at most. */
export const DEFAULT_MAX_OPEN_DIRTY = 256;

const EXTENSION = '.data';
const LAYOUT_FILE = 'SHARDING';
const LAYOUT_PREFIX = 'dicom-vault/fs-block-store/v1/next-to-last/';

export interface FsBlockStoreOptions {
  /** Root directory of the store; created with its parents on open if missing. */
  path: string;
  /**
   * How many base32 characters of a block's name, taken just before its last character, name
   * its shard directory (go-ds-flatfs "next-to-last"). Integer 1-4. Default: the length the
   * store was created with (recorded in `<path>/SHARDING`), or 2 for a new store. Opening a
   * store with a different length than recorded throws CONFIG_INVALID, because every existing
   * block would become invisible.
   */
  shardPrefixLength?: number;
  /** How many files `flush()` fsyncs in parallel. Default: 32. */
  flushConcurrency?: number;
  /**
   * Write blocks that lie in aligned memory with O_DIRECT (see the top of this file). Default:
   * true where the platform has O_DIRECT; the store turns it off by itself if the filesystem
   * refuses it.
   */
  directIO?: boolean;
}

export class FsBlockStore implements BlockStore {
  /** Absolute root directory. */
  readonly path: string;
  /** `path` ending in a separator: block paths are joined by hand (path.join normalizes every time). */
  readonly #root: string;
  readonly shardPrefixLength: number;
  readonly #flushConcurrency: number;
  /** Writes blocks in aligned memory with O_DIRECT; cleared for good once the filesystem refused it. */
  #directIO: boolean;
  readonly #dirSync = new DirSyncer();
  /** Shard directories being made (found missing by a put), keyed by path. */
  readonly #shardDirs = new Map<string, Promise<void>>();
  /**
   * Block files and directories written by `durable: false` puts and not yet flushed. A file's
   * handle stays open until its flush (null once more than DEFAULT_MAX_OPEN_DIRTY are open: the
   * flush then opens it again), which saves an open and a close per block.
   */
  #dirtyFiles = new Map<string, number | null>();
  #dirtyDirs = new Set<string>();
  /** Handles held open in #dirtyFiles. */
  #openDirty = 0;
  /** Flushes run one after another so a flush never resolves while an earlier one still syncs. */
  #flushTail: Promise<void> = Promise.resolve();
  /** The flush that has not started yet, which new callers join. */
  #nextFlush: Promise<void> | undefined;
  /** Set once a flush's fsync failed: the kernel may have dropped those pages, so no later flush can promise them. */
  #flushFailure: unknown = undefined;

  private constructor(root: string, shardPrefixLength: number, flushConcurrency: number, directIO: boolean) {
    this.path = root;
    this.#root = root.endsWith(path.sep) ? root : root + path.sep;
    this.shardPrefixLength = shardPrefixLength;
    this.#flushConcurrency = flushConcurrency;
    this.#directIO = directIO && O_DIRECT !== undefined;
  }

  /** Whether blocks in aligned memory are written with O_DIRECT (false once the filesystem refused it). */
  get directIO(): boolean {
    return this.#directIO;
  }

  /**
   * Opens (creating if needed) the store at `options.path`. Throws CONFIG_INVALID for bad
   * options, a layout mismatch, or a non-empty directory that is not a block store;
   * STORE_UNAVAILABLE when the directory cannot be created or read.
   */
  static async open(options: FsBlockStoreOptions): Promise<FsBlockStore> {
    if (typeof options.path !== 'string' || options.path === '') {
      throw new VaultError('CONFIG_INVALID', 'FsBlockStore: path must be a non-empty string');
    }
    const requested = options.shardPrefixLength;
    if (requested !== undefined && !isIntegerIn(requested, 1, MAX_SHARD_PREFIX_LENGTH)) {
      throw new VaultError('CONFIG_INVALID', `FsBlockStore: shardPrefixLength must be an integer from 1 to ${MAX_SHARD_PREFIX_LENGTH}`);
    }
    const flushConcurrency = options.flushConcurrency ?? DEFAULT_FLUSH_CONCURRENCY;
    if (!isIntegerIn(flushConcurrency, 1, 1024)) {
      throw new VaultError('CONFIG_INVALID', 'FsBlockStore: flushConcurrency must be an integer from 1 to 1024');
    }

    const root = path.resolve(options.path);
    let recorded: number | undefined;
    try {
      const created = await fs.mkdir(root, { recursive: true });
      if (created !== undefined) await fsyncDir(path.dirname(created));
      recorded = await readLayout(root);
    } catch (err) {
      if (err instanceof VaultError) throw err;
      throw new VaultError('STORE_UNAVAILABLE', `cannot open block store at ${root}: ${errnoCode(err)}`, { cause: err });
    }
    const length = requested ?? recorded ?? DEFAULT_SHARD_PREFIX_LENGTH;
    if (recorded !== undefined && recorded !== length) {
      throw new VaultError('CONFIG_INVALID', `block store at ${root} uses shardPrefixLength ${recorded}, not ${length}`);
    }
    if (recorded === undefined) {
      try {
        await writeLayout(root, length);
        // After the layout file: a crash in between leaves a store that opens (and makes the
        // missing directories on demand), not a non-empty directory without a layout.
        await createShardDirs(root, length);
      } catch (err) {
        if (err instanceof VaultError) throw err;
        throw new VaultError('STORE_UNAVAILABLE', `cannot initialise block store at ${root}: ${errnoCode(err)}`, { cause: err });
      }
    }
    return new FsBlockStore(root, length, flushConcurrency, options.directIO ?? true);
  }

  /**
   * Does not hash `bytes` (ingest has just computed the CID from them); a mismatch is caught by
   * verified reads. An existing file of the right size counts as the block; one of another size
   * (a torn write from a crash before a flush) is replaced.
   */
  async put(cid: CID, bytes: Uint8Array, options: PutOptions = {}): Promise<void> {
    const { signal } = options;
    const durable = options.durable !== false;
    throwIfAborted(signal);
    const { dir, file } = this.#locate(cid);
    try {
      // The shard directory is not looked for first: a new store made them all (createShardDirs),
      // and a missing one (more shards than that, or removed behind our back) is made when the
      // temp file's open finds it missing (#createTemp). Looking first cost every shard's first
      // put in a new process a trip through the thread pool: a thousand of them in a new node's
      // first thousand small instances.
      // A block written again gets a new time (touch), so that gc (storage/gc.ts) counts it from
      // this write, not from the earlier one (a failed ingest's, whose blocks gc may take).
      if (isStored(file, bytes.byteLength) && sync.touch(file)) {
        // Written earlier, perhaps by a non-durable put not yet flushed (or by a process that
        // died before flushing): a durable put must not resolve before the block is on disk.
        if (durable) {
          await syncFile(file);
          await this.#dirSync.sync(dir);
        }
        return;
      }
      const tmp = `${dir}${path.sep}.${path.basename(file)}.${randomUUID()}.tmp`;
      // Kept open when the flush will need it.
      const keep = !durable && this.#openDirty < DEFAULT_MAX_OPEN_DIRTY;
      const fd = await this.#writeTemp(dir, tmp, bytes, durable, keep, signal);
      try {
        throwIfAborted(signal);
        // Atomic: readers see the old file or the whole new one. A concurrent put of the same
        // CID may replace ours with identical bytes.
        sync.rename(tmp, file);
      } catch (err) {
        if (fd !== undefined) sync.close(fd);
        removeQuietly(tmp);
        throw err;
      }
      if (durable) {
        await this.#dirSync.sync(dir);
      } else {
        const earlier = this.#dirtyFiles.get(file);
        if (earlier !== undefined && earlier !== null) this.#closeDirty(earlier);
        if (fd !== undefined) this.#openDirty++;
        this.#dirtyFiles.set(file, fd ?? null);
        this.#dirtyDirs.add(dir);
      }
    } catch (err) {
      throw failure(err, 'put', cid, signal);
    }
  }

  async get(cid: CID, options: AbortOptions = {}): Promise<Uint8Array> {
    const { signal } = options;
    throwIfAborted(signal);
    const { file } = this.#locate(cid);
    try {
      // fs.promises.readFile, measured against the callback API (open/fstat/read/close, and
      // fs.readFile): equal on small instances, but retrieving 1 GiB of huge instances cost the node
      // 5.3 s of CPU through the callback API and 3.7 s through this one (260 vs 340 MB/s).
      // Its buffer is the whole of its ArrayBuffer, so the crypto pool moves it, not copies it.
      const data = await fs.readFile(file, signal === undefined ? {} : { signal });
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    } catch (err) {
      throw failure(err, 'get', cid, signal);
    }
  }

  /**
   * As `get`, into the caller's buffer: open, fstat, read, close, and no allocation. Into aligned
   * memory (a WADO response's slots) the read is direct: a block streamed out is read once, from
   * the device into the slot, rather than into the page cache and copied from there (a 4 GiB
   * study not in the page cache, same VM: 7.4 CPU-s in reads buffered, 1.2 direct; 329 against
   * 464 MB/s to curl).
   */
  async getInto(cid: CID, target: Uint8Array, options: AbortOptions = {}): Promise<number | undefined> {
    const { signal } = options;
    throwIfAborted(signal);
    const { file } = this.#locate(cid);
    const room = this.#directIO ? alignedRoom(target) : undefined;
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
        this.#directIO = false;
        return this.getInto(cid, target, options);
      }
      throw failure(err, 'get', cid, signal);
    }
  }

  async has(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    const { signal } = options;
    throwIfAborted(signal);
    try {
      await fs.stat(this.#locate(cid).file);
      return true;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw failure(err, 'check', cid, signal);
    }
  }

  /** Idempotent. Not fsynced: a crash may bring a deleted block back, which is harmless. */
  async delete(cid: CID, options: AbortOptions = {}): Promise<void> {
    const { signal } = options;
    throwIfAborted(signal);
    const { file } = this.#locate(cid);
    try {
      await fs.unlink(file);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw failure(err, 'delete', cid, signal);
    }
    const fd = this.#dirtyFiles.get(file);
    this.#dirtyFiles.delete(file);
    if (fd !== undefined && fd !== null) this.#closeDirty(fd);
  }

  #closeDirty(fd: number): void {
    this.#openDirty--;
    sync.close(fd);
  }

  /**
   * Makes every block put with `durable: false` before this call durable. Once a flush has
   * failed on an I/O error, every later flush rejects with STORE_UNAVAILABLE until the store is
   * reopened: the failed pages may be gone and a retried fsync would wrongly report success.
   * A caller whose signal aborts stops waiting; the flush itself goes on for the others.
   */
  flush(options: AbortOptions = {}): Promise<void> {
    const { signal } = options;
    if (signal?.aborted === true) return Promise.reject(abortError(signal));
    // Group commit: calls arriving while a flush runs share the next one, which starts after
    // every one of them was made (so it covers their puts). Ingest asks for a flush at the end
    // of every instance; without sharing, 100 small instances meant 100 flushes in a row, each
    // waiting for the previous one's fsyncs. The shared flush ignores any one caller's signal;
    // each caller stops waiting on its own.
    if (this.#nextFlush === undefined) {
      const next = this.#flushTail.then(() => {
        if (this.#nextFlush === next) this.#nextFlush = undefined;
        return this.#flushOnce();
      });
      this.#nextFlush = next;
      this.#flushTail = next.catch(() => undefined);
    }
    return signal === undefined ? this.#nextFlush : raceAbort(this.#nextFlush, signal);
  }

  /** Every block whose file is where `get` looks for it; temp and foreign files are skipped. */
  async *list(options: AbortOptions = {}): AsyncGenerator<CID> {
    const { signal } = options;
    for (const shard of await this.#shardNames(signal)) {
      throwIfAborted(signal);
      for (const name of await readdirQuietly(path.join(this.path, shard))) {
        const cid = this.#parseName(shard, name);
        if (cid !== undefined) yield cid;
      }
    }
  }

  /** The shard directories' names. */
  async #shardNames(signal: AbortSignal | undefined): Promise<string[]> {
    throwIfAborted(signal);
    try {
      const entries = await fs.readdir(this.path, { withFileTypes: true });
      return entries.filter((e) => e.isDirectory() && e.name.length === this.shardPrefixLength).map((e) => e.name);
    } catch (err) {
      throw new VaultError('STORE_UNAVAILABLE', `cannot list block store: ${errnoCode(err)}`, { cause: err });
    }
  }

  /** A stored block's size and when it was last written (put again included); undefined if absent. */
  async blockInfo(cid: CID, options: AbortOptions = {}): Promise<{ size: number; writtenMs: number } | undefined> {
    const { signal } = options;
    throwIfAborted(signal);
    try {
      const stats = await fs.stat(this.#locate(cid).file);
      return { size: stats.size, writtenMs: stats.mtimeMs };
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw failure(err, 'check', cid, signal);
    }
  }

  /**
   * Deletes the temp files of puts that never finished (a process killed mid-write) last
   * written before `cutoffMs`; returns how many. A put still writing keeps its file young.
   */
  async removeStaleTemps(cutoffMs: number, options: AbortOptions = {}): Promise<number> {
    const { signal } = options;
    let removed = 0;
    for (const shard of await this.#shardNames(signal)) {
      const dir = path.join(this.path, shard);
      for (const name of await readdirQuietly(dir)) {
        if (!name.startsWith('.') || !name.endsWith('.tmp')) continue;
        throwIfAborted(signal);
        const file = path.join(dir, name);
        try {
          if ((await fs.stat(file)).mtimeMs >= cutoffMs) continue;
          await fs.unlink(file);
          removed++;
        } catch (err) {
          if (errnoCode(err) !== 'ENOENT') throw new VaultError('STORE_UNAVAILABLE', `cannot remove ${file}: ${errnoCode(err)}`, { cause: err });
        }
      }
    }
    return removed;
  }

  /** Flushes pending non-durable puts and closes the directories kept open for fsyncs. */
  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      this.#dirSync.close();
    }
  }

  #locate(cid: CID): { dir: string; file: string } {
    // Full CID, not just the multihash as blockstore-fs does, so list() returns each block's
    // codec. Shard = the characters before the last one: in base32 the last character of a
    // sha2-256 CIDv1 carries only 3 bits (blockstore-fs's choice gives 256 dirs, not 1024).
    const name = base32.encode(cid.bytes);
    const dir = this.#root + name.slice(-1 - this.shardPrefixLength, -1);
    return { dir, file: dir + path.sep + name + EXTENSION };
  }

  #parseName(shard: string, fileName: string): CID | undefined {
    if (!fileName.endsWith(EXTENSION) || fileName.startsWith('.')) return undefined;
    let cid: CID;
    try {
      cid = CID.decode(base32.decode(fileName.slice(0, -EXTENSION.length)));
    } catch {
      return undefined;
    }
    return path.basename(this.#locate(cid).dir) === shard ? cid : undefined;
  }

  /** Creates a missing shard directory; puts that find it missing at once share one creation. */
  #shardDir(dir: string): Promise<void> {
    let ready = this.#shardDirs.get(dir);
    if (ready === undefined) {
      ready = this.#createShardDir(dir).finally(() => this.#shardDirs.delete(dir));
      this.#shardDirs.set(dir, ready);
    }
    return ready;
  }

  async #createShardDir(dir: string): Promise<void> {
    try {
      await fs.mkdir(dir);
    } catch (err) {
      // Made meanwhile by another put that found it missing too, or by another process (or a
      // file is in the way: the open then fails with ENOTDIR, reported as such).
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    // The new directory's entry lives in the root: without this, a crash could lose the whole
    // shard including blocks fsynced into it. Also when another made it: its fsync of the root
    // may not have run yet. Rare: only for a shard found missing.
    await this.#dirSync.sync(this.path);
  }

  /** Writes `bytes` to a new temp file; returns its descriptor, still open, when `keep`. */
  async #writeTemp(dir: string, tmp: string, bytes: Uint8Array, durable: boolean, keep: boolean, signal: AbortSignal | undefined): Promise<number | undefined> {
    const opened = await this.#createTemp(dir, tmp, this.#directIO && bytes.byteLength >= DIRECT_IO_ALIGNMENT && isAligned(bytes));
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
        this.#directIO = false;
        return this.#writeTemp(dir, tmp, bytes, durable, keep, signal);
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
        this.#directIO = false;
        removeQuietly(tmp);
        return this.#createTemp(dir, tmp, false);
      }
      if (code !== 'ENOENT') throw err;
      // The shard directory is missing (see put): make it, then open again. A kept descriptor
      // of it names the removed directory.
      this.#dirSync.forget(dir);
      await this.#shardDir(dir);
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

  async #flushOnce(): Promise<void> {
    if (this.#flushFailure !== undefined) {
      throw new VaultError('STORE_UNAVAILABLE', 'an earlier flush failed; blocks put with durable: false may be lost', {
        cause: this.#flushFailure,
      });
    }
    const files = this.#dirtyFiles;
    const dirs = this.#dirtyDirs;
    if (files.size === 0 && dirs.size === 0) return;
    this.#dirtyFiles = new Map();
    this.#dirtyDirs = new Set();
    // Files first: a directory entry must not become durable before the data it names.
    let failed = await forEachLimit(files, this.#flushConcurrency, async ([file, fd]) => {
      if (fd === null) return syncFile(file, { missingOk: true });
      try {
        await io.fdatasync(fd);
      } finally {
        this.#closeDirty(fd);
      }
    });
    if (failed === undefined) failed = await forEachLimit(dirs, this.#flushConcurrency, (dir) => this.#dirSync.sync(dir));
    if (failed !== undefined) {
      this.#flushFailure = failed;
      throw new VaultError('STORE_UNAVAILABLE', `flush failed: ${errnoCode(failed)}`, { cause: failed });
    }
  }
}

/**
 * Group commit of directory fsyncs: callers arriving while a directory's fsync runs share the
 * next one (which starts after theirs renamed), so N parallel puts into one shard need about
 * two fsyncs of it, not N. Each directory's descriptor is opened once and kept (up to
 * MAX_CACHED_DIRS of them), rather than opened and closed around every fsync: a flush syncs a
 * directory per block it wrote.
 */
class DirSyncer {
  readonly #running = new Map<string, Promise<void>>();
  readonly #queued = new Map<string, Promise<void>>();
  readonly #fds = new Map<string, number>();

  sync(dir: string): Promise<void> {
    const queued = this.#queued.get(dir);
    if (queued !== undefined) return queued;
    const running = this.#running.get(dir);
    if (running === undefined) return this.#start(dir);
    const next = running
      .catch(() => undefined)
      .then(() => {
        this.#queued.delete(dir);
        return this.#start(dir);
      });
    this.#queued.set(dir, next);
    return next;
  }

  /** Closes the kept descriptor of `dir` (which was removed, and may be made again): the next sync opens the new one. */
  forget(dir: string): void {
    const fd = this.#fds.get(dir);
    if (fd === undefined) return;
    this.#fds.delete(dir);
    // An fsync under way holds its own reference to the directory; closing the number is safe.
    sync.close(fd);
  }

  /** Closes every kept descriptor. */
  close(): void {
    for (const dir of [...this.#fds.keys()]) this.forget(dir);
  }

  #start(dir: string): Promise<void> {
    const done: Promise<void> = this.#fsync(dir).finally(() => {
      if (this.#running.get(dir) === done) this.#running.delete(dir);
    });
    this.#running.set(dir, done);
    return done;
  }

  async #fsync(dir: string): Promise<void> {
    let fd = this.#fds.get(dir);
    if (fd === undefined) {
      fd = openDir(dir);
      if (this.#fds.size < MAX_CACHED_DIRS) this.#fds.set(dir, fd);
      else return fsyncAndClose(fd);
    }
    await io.fsync(fd);
  }
}

/** Directory descriptors a store keeps open for its fsyncs: every shard of a store with 2-character shards, and its root. */
const MAX_CACHED_DIRS = 1025;

function openDir(dir: string): number {
  // O_DIRECTORY: a file put where a shard directory was fails here (ENOTDIR) rather than being
  // fsynced in its place, which would report blocks durable whose directory entries are gone.
  return sync.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
}

async function fsyncAndClose(fd: number): Promise<void> {
  try {
    await io.fsync(fd);
  } finally {
    sync.close(fd);
  }
}

/** Fsyncs a directory once, for the store's set-up (not through a store's DirSyncer). */
function fsyncDir(dir: string): Promise<void> {
  return fsyncAndClose(openDir(dir));
}

async function syncFile(file: string, options: { missingOk?: boolean } = {}): Promise<void> {
  let fd: number;
  try {
    fd = sync.open(file, 'r');
  } catch (err) {
    // Deleted since it was put: nothing left to make durable.
    if (options.missingOk === true && errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  try {
    await io.fdatasync(fd);
  } finally {
    sync.close(fd);
  }
}

/**
 * Writes bytes[from, to) at file position `from`, however many calls it takes: synchronously when
 * `buffered` and short (a copy into the page cache), through the thread pool otherwise.
 */
async function writeAll(fd: number, bytes: Uint8Array, from: number, to: number, signal: AbortSignal | undefined, buffered: boolean): Promise<void> {
  const now = buffered && to - from <= SYNC_WRITE_MAX;
  for (let offset = from; offset < to; ) {
    offset += now ? sync.write(fd, bytes, offset, to - offset, offset) : await io.write(fd, bytes, offset, to - offset, offset);
    throwIfAborted(signal);
  }
}

/** A shard directory's entries; none if it is gone (removed since it was listed). */
async function readdirQuietly(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new VaultError('STORE_UNAVAILABLE', `cannot list block store: ${errnoCode(err)}`, { cause: err });
  }
}

function isStored(file: string, size: number): boolean {
  const stats = sync.stat(file);
  return stats !== undefined && stats.isFile() && stats.size === size;
}

/**
 * Runs `fn` over `items`, at most `limit` at once, stopping early on the first
 * failure, which it returns (after every started call has settled) instead of throwing.
 */
async function forEachLimit<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<unknown> {
  const iterator = items[Symbol.iterator]();
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    for (let next = iterator.next(); next.done !== true; next = iterator.next()) {
      if (failure !== undefined) return;
      try {
        await fn(next.value);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return failure?.err;
}

/**
 * Shard directories made up front for a new store with at most this many (prefix length 2:
 * 1,024, 4 MiB of directory blocks on ext4). Made on demand instead, the first few thousand puts
 * of a new store each created one and fsynced the root: 1,000 small instances into a new store
 * spent a tenth of the node's main thread there.
 */
export const MAX_PRECREATED_SHARDS = 1024;

const BASE32_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/** Makes every shard directory of a new store (when there are few enough), then fsyncs the root once. */
async function createShardDirs(root: string, shardPrefixLength: number): Promise<void> {
  if (BASE32_ALPHABET.length ** shardPrefixLength > MAX_PRECREATED_SHARDS) return;
  let names = [''];
  for (let i = 0; i < shardPrefixLength; i++) names = names.flatMap((n) => [...BASE32_ALPHABET].map((c) => n + c));
  await forEachLimit(names, 32, async (name) => {
    await fs.mkdir(path.join(root, name)).catch((err: unknown) => {
      if (errnoCode(err) !== 'EEXIST') throw err;
    });
  }).then((failed) => {
    if (failed !== undefined) throw failed;
  });
  await fsyncDir(root);
}

async function readLayout(root: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path.join(root, LAYOUT_FILE), 'utf8');
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
    // A non-empty directory without the marker is something else (a mistyped path): refuse to
    // scatter blocks into it.
    // Ignored: a fresh filesystem's lost+found, and our own marker's temp file from a crash.
    const entries = (await fs.readdir(root)).filter((name) => name !== 'lost+found' && !name.startsWith(`.${LAYOUT_FILE}.`));
    if (entries.length > 0) {
      throw new VaultError('CONFIG_INVALID', `${root} is not empty and not a block store (no ${LAYOUT_FILE} file)`);
    }
    return undefined;
  }
  const length = Number(text.trim().slice(LAYOUT_PREFIX.length));
  if (!text.startsWith(LAYOUT_PREFIX) || !isIntegerIn(length, 1, MAX_SHARD_PREFIX_LENGTH)) {
    throw new VaultError('CONFIG_INVALID', `${path.join(root, LAYOUT_FILE)} names an unknown layout: ${JSON.stringify(text.trim())}`);
  }
  return length;
}

async function writeLayout(root: string, shardPrefixLength: number): Promise<void> {
  const tmp = path.join(root, `.${LAYOUT_FILE}.${randomUUID()}.tmp`);
  const handle = await fs.open(tmp, 'wx');
  try {
    await handle.writeFile(`${LAYOUT_PREFIX}${shardPrefixLength}\n`);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, path.join(root, LAYOUT_FILE));
  await fsyncDir(root);
}

function failure(err: unknown, op: 'put' | 'get' | 'check' | 'delete', cid: CID, signal: AbortSignal | undefined): VaultError {
  if (err instanceof VaultError) return err;
  if (signal?.aborted === true) return abortError(signal);
  const code = errnoCode(err);
  const details = { cid: cid.toString() };
  // Only a missing file means a missing block; ENOTDIR, EACCES, EIO... are the store's fault.
  if (op === 'get' && code === 'ENOENT') {
    return new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found`, { cause: err, details });
  }
  return new VaultError('STORE_UNAVAILABLE', `cannot ${op} block ${cid}: ${code}`, { cause: err, details });
}


function removeQuietly(file: string): void {
  // Best effort: the original error is the one to report, and a leftover temp file is
  // invisible to get/has/list.
  try {
    sync.unlink(file);
  } catch {
    // Already gone, or not ours to remove.
  }
}

function errnoCode(err: unknown): string {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : 'unknown error';
}

function isIntegerIn(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}
