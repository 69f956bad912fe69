// The file calls of the fs block store, and how each is made. Shared by the store (fs.ts), its
// O_DIRECT path (direct-io.ts), its directory syncs (dir-sync.ts) and its layout (layout.ts).
import fsCallbacks, { constants, promises as fs } from 'node:fs';
import { promisify } from 'node:util';
import { VaultError } from '../../src/core/errors.ts';
import { throwIfAborted } from '../../src/core/abort.ts';

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
export const io = {
  fsync: promisify(fsCallbacks.fsync),
  fdatasync: promisify(fsCallbacks.fdatasync),
  read: (fd: number, into: Uint8Array, offset: number, length: number, position: number): Promise<number> =>
    new Promise((resolve, reject) => fsCallbacks.read(fd, into, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)))),
  write: (fd: number, bytes: Uint8Array, offset: number, length: number, position: number): Promise<number> =>
    new Promise((resolve, reject) => fsCallbacks.write(fd, bytes, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)))),
};

/** Metadata calls, made synchronously: see `io`. */
export const sync = {
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
export const O_DIRECT: number | undefined = (constants as Record<string, number | undefined>).O_DIRECT;

export function openDir(dir: string): number {
  // O_DIRECTORY: a file put where a shard directory was fails here (ENOTDIR) rather than being
  // fsynced in its place, which would report blocks durable whose directory entries are gone.
  return sync.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
}

export async function fsyncAndClose(fd: number): Promise<void> {
  try {
    await io.fsync(fd);
  } finally {
    sync.close(fd);
  }
}

/** Fsyncs a directory once, for the store's set-up (not through a store's DirSyncer). */
export function fsyncDir(dir: string): Promise<void> {
  return fsyncAndClose(openDir(dir));
}

export async function syncFile(file: string, options: { missingOk?: boolean } = {}): Promise<void> {
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
export async function writeAll(fd: number, bytes: Uint8Array, from: number, to: number, signal: AbortSignal | undefined, buffered: boolean): Promise<void> {
  const now = buffered && to - from <= SYNC_WRITE_MAX;
  for (let offset = from; offset < to; ) {
    offset += now ? sync.write(fd, bytes, offset, to - offset, offset) : await io.write(fd, bytes, offset, to - offset, offset);
    throwIfAborted(signal);
  }
}

/** A shard directory's entries; none if it is gone (removed since it was listed). */
export async function readdirQuietly(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new VaultError('STORE_UNAVAILABLE', `cannot list block store: ${errnoCode(err)}`, { cause: err });
  }
}

export function isStored(file: string, size: number): boolean {
  const stats = sync.stat(file);
  return stats?.isFile() === true && stats.size === size;
}

/**
 * Runs `fn` over `items`, at most `limit` at once, stopping early on the first
 * failure, which it returns (after every started call has settled) instead of throwing.
 */
export async function forEachLimit<T>(items: Iterable<T>, limit: number, fn: (item: T) => Promise<void>): Promise<unknown> {
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

export function removeQuietly(file: string): void {
  // Best effort: the original error is the one to report, and a leftover temp file is
  // invisible to get/has/list.
  try {
    sync.unlink(file);
  } catch {
    // Already gone, or not ours to remove.
  }
}

export function errnoCode(err: unknown): string {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : 'unknown error';
}

export function isIntegerIn(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}
