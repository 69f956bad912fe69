// Directory fsyncs of the fs block store, group-committed per directory (see DirSyncer).
import { fsyncAndClose, io, openDir, sync } from './io.ts';

/**
 * Group commit of directory fsyncs: callers arriving while a directory's fsync runs share the
 * next one (which starts after theirs renamed), so N parallel puts into one shard need about
 * two fsyncs of it, not N. Each directory's descriptor is opened once and kept (up to
 * MAX_CACHED_DIRS of them), rather than opened and closed around every fsync: a flush syncs a
 * directory per block it wrote.
 */
export class DirSyncer {
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
