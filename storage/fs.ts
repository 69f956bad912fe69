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
// Direct I/O: blocks in aligned memory are written (and read into aligned memory) with O_DIRECT,
// falling back to buffered I/O for good where the filesystem refuses it: see fs/direct-io.ts.
// Beside this file in fs/: io.ts (the file calls, and why most are synchronous), dir-sync.ts
// (group-committed directory fsyncs), layout.ts (shard directories, the SHARDING file),
// listing.ts (list, stale temp files). Flushes are group-committed (../group-commit.ts).
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CID } from 'multiformats/cid';
import { VaultError } from '../src/core/errors.ts';
import { abortError, throwIfAborted } from '../src/core/abort.ts';
import type { AbortOptions, BlockStore, PutOptions } from './block-store.ts';
import { DirSyncer } from './fs/dir-sync.ts';
import { DirectIo } from './fs/direct-io.ts';
import { errnoCode, forEachLimit, fsyncDir, io, isIntegerIn, isStored, removeQuietly, sync, syncFile } from './fs/io.ts';
import { DEFAULT_SHARD_PREFIX_LENGTH, MAX_SHARD_PREFIX_LENGTH, blockLocation, createShardDirs, readLayout, writeLayout } from './fs/layout.ts';
import { listBlocks, removeStaleTemps } from './fs/listing.ts';
import { GroupCommit } from './group-commit.ts';

export { DEFAULT_SHARD_PREFIX_LENGTH, MAX_PRECREATED_SHARDS, MAX_SHARD_PREFIX_LENGTH } from './fs/layout.ts';

/** How many files `flush()` fsyncs at once. */
export const DEFAULT_FLUSH_CONCURRENCY = 32;
/** Files written by non-durable puts whose handles stay open until their flush, at most. */
export const DEFAULT_MAX_OPEN_DIRTY = 256;

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
   * Write blocks that lie in aligned memory with O_DIRECT (see fs/direct-io.ts). Default:
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
  /** Writes blocks in aligned memory (and reads into it) with O_DIRECT while the filesystem takes it. */
  readonly #direct: DirectIo;
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
  readonly #flushes = new GroupCommit(() => this.#flushOnce());
  /** Set once a flush's fsync failed: the kernel may have dropped those pages, so no later flush can promise them. */
  #flushFailure: unknown = undefined;

  private constructor(root: string, shardPrefixLength: number, flushConcurrency: number, directIO: boolean) {
    this.path = root;
    this.#root = root.endsWith(path.sep) ? root : root + path.sep;
    this.shardPrefixLength = shardPrefixLength;
    this.#flushConcurrency = flushConcurrency;
    this.#direct = new DirectIo(directIO, (dir) => {
      // A kept descriptor of the missing directory names the removed one.
      this.#dirSync.forget(dir);
      return this.#shardDir(dir);
    });
  }

  /** Whether blocks in aligned memory are written with O_DIRECT (false once the filesystem refused it). */
  get directIO(): boolean {
    return this.#direct.enabled;
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
      // A block written again gets a new time (touch), so that gc (src/maintenance/gc.ts) counts it from
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
      const fd = await this.#direct.writeTemp(dir, tmp, bytes, durable, keep, signal);
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
   * As `get`, into the caller's buffer, with no allocation; undefined if the block does not fit.
   * Into aligned memory (a WADO response's slots) the read is direct (DirectIo.readInto).
   */
  async getInto(cid: CID, target: Uint8Array, options: AbortOptions = {}): Promise<number | undefined> {
    const { signal } = options;
    throwIfAborted(signal);
    const { file } = this.#locate(cid);
    try {
      return await this.#direct.readInto(cid, file, target, signal);
    } catch (err) {
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
    // Group commit (../group-commit.ts): calls arriving while a flush runs share the next one.
    return this.#flushes.flush(options.signal);
  }

  /** Every block whose file is where `get` looks for it; temp and foreign files are skipped. */
  list(options: AbortOptions = {}): AsyncGenerator<CID> {
    return listBlocks(this.path, this.shardPrefixLength, options.signal);
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
  removeStaleTemps(cutoffMs: number, options: AbortOptions = {}): Promise<number> {
    return removeStaleTemps(this.path, this.shardPrefixLength, cutoffMs, options.signal);
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
    return blockLocation(this.#root, this.shardPrefixLength, cid);
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
