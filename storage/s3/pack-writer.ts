// The write side of S3 packing: blocks are copied into a pending pack, which is sealed and
// uploaded in the background once it holds `packBytes`, with at most `packUploads` uploads in
// flight (further puts wait: memory stays bounded). Blocks are readable from memory from the
// moment their put resolves until their pack's rows are in the index.
//
// Durability: `flush()` seals the pending pack and resolves once every pack sealed before it has
// been uploaded and indexed. It never reports a false success: a block whose pack failed to upload
// stays tracked (with the sequence number of its put) until it is deleted or put again, and every
// flush started after that put rejects meanwhile. Ingest deletes its blocks when it fails, from
// the CIDs it recorded as it put them (ingest/written.ts), never reading back from the store,
// which clears them, so a study re-sent once the server is back stores fine without reopening
// the store. A `durable: true` put waits for its own pack only.
//
// Independent of S3: the upload and the index are passed in, so the bookkeeping is tested alone.
import type { CID } from 'multiformats/cid';
import { VaultError } from '../../src/core/errors.ts';
import { abortError, throwIfAborted, raceAbort } from '../../src/core/abort.ts';
import { GroupCommit } from '../group-commit.ts';
import type { AbortOptions, PutOptions } from '../block-store.ts';
import { DEFAULT_HEADER_RESERVE, PackBuilder, type PackEntry } from './pack-format.ts';
import { landedBlocks, type LandedBlock } from './pack-index.ts';

/** Target size of a pack's data, 8 MiB: Swift served 8 MiB objects at 1.5-2.5x the MB/s of 1 MiB ones. */
export const DEFAULT_PACK_BYTES = 8 * 1024 * 1024;
/** Pack uploads in flight at once; a put that would need a fifth waits. */
export const DEFAULT_PACK_UPLOADS = 4;
/**
 * Room a pack's buffer has beyond `packBytes`, so that the block which reaches the target (one
 * default 1 MiB chunk plus its GCM tag) still fits; a larger block starts a new pack instead.
 */
const PACK_SLACK = 1024 * 1024 + 64 * 1024;

export interface PackWriterOptions {
  /** Bytes of block data after which a pack is sealed and uploaded. At least 1. */
  packBytes: number;
  /** Uploads in flight at once. At least 1. */
  packUploads: number;
}

export interface PackWriterDeps {
  /** A fresh pack id, unique in the bucket. */
  newId(): string;
  /** Uploads a sealed pack; rejects once retries are exhausted or `signal` aborts. */
  upload(id: string, body: Uint8Array, signal: AbortSignal): Promise<void>;
  /** Indexes the blocks of an uploaded pack in one transaction; returns how many it indexed. */
  land(id: string, bytes: number, blocks: readonly LandedBlock[]): number;
  /** Deletes a pack object that no index row refers to (its blocks were deleted meanwhile). Best effort. */
  discard(id: string): void;
  /** Whether a block is already indexed (a put of it then only renews its time for gc: PackIndex.touch). */
  indexed(cid: CID): boolean;
  /** The error a put or flush reports for `cid` when its pack's upload failed with `err`. */
  describe(err: unknown, cid: CID, pack: string): VaultError;
}

interface Entry {
  cid: CID;
  key: string;
  pack: Pack;
  offset: number;
  length: number;
  /** Order of the put that added it, for flush's failure check. */
  seq: number;
  /** Puts that asked for this entry; an aborted durable put removes it only if it was the only one. */
  claims: number;
}

type PackState = 'open' | 'queued' | 'uploading' | 'done';

class Pack {
  readonly id: string;
  builder: PackBuilder | undefined;
  /** Blocks in the pack and not deleted since. */
  readonly entries = new Map<string, Entry>();
  state: PackState = 'open';
  sealScheduled = false;
  /** Set when the upload was stopped because every block was deleted. */
  cancelled = false;
  readonly controller = new AbortController();
  /** After `done`: the blocks indexed, or those whose upload failed (with `error`). */
  readonly landed = new Set<string>();
  readonly failed = new Set<string>();
  error: unknown;
  /** Resolves (never rejects) once the pack has landed, failed or been dropped. */
  readonly done: Promise<void>;
  readonly finish: () => void;

  constructor(id: string, builder: PackBuilder) {
    this.id = id;
    this.builder = builder;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.done = promise;
    this.finish = () => {
      this.state = 'done';
      this.builder = undefined; // the bytes are in the index's pack now, or lost
      resolve();
    };
  }
}

interface Failure {
  cid: CID;
  seq: number;
  pack: string;
  error: unknown;
}

export class PackWriter {
  readonly #o: PackWriterOptions;
  readonly #deps: PackWriterDeps;
  /** Blocks pending or in flight, by CID string; removed once indexed, failed or deleted. */
  readonly #byCid = new Map<string, Entry>();
  readonly #queued: Pack[] = [];
  readonly #uploading = new Set<Pack>();
  readonly #failed = new Map<string, Failure>();
  readonly #roomWaiters = new Set<() => void>();
  /**
   * Buffers of packs that landed, reused by the next packs: allocating ~9 MiB per pack cost
   * more CPU in garbage collection than the uploads themselves.
   */
  readonly #spare: Uint8Array[] = [];
  #open: Pack | undefined;
  #seq = 0;
  readonly #flushes = new GroupCommit(() => this.#flushOnce());

  constructor(options: PackWriterOptions, deps: PackWriterDeps) {
    this.#o = options;
    this.#deps = deps;
  }

  /**
   * Copies `bytes` into the pending pack (the caller may reuse them once this settles) and
   * resolves once the block is readable, or, with `durable` (the default), once its pack is
   * uploaded and indexed. A block already indexed, pending or in flight is not added again.
   */
  async put(cid: CID, bytes: Uint8Array, options: PutOptions = {}): Promise<void> {
    const { signal } = options;
    throwIfAborted(signal);
    const key = cid.toString();
    let entry: Entry | undefined;
    for (;;) {
      entry = this.#byCid.get(key);
      if (entry !== undefined) break;
      if (this.#deps.indexed(cid)) return;
      // Backpressure: while a sealed pack waits for an upload slot, no new bytes are taken in.
      if (this.#queued.length === 0) {
        entry = this.#add(cid, key, bytes);
        break;
      }
      await this.#room(signal);
    }
    entry.claims++;
    if (options.durable === false) return;
    await this.#landing(entry, signal);
  }

  /** A fresh copy of a pending or in-flight block (the caller owns it), or undefined. */
  read(cid: CID): Uint8Array | undefined {
    const entry = this.#byCid.get(cid.toString());
    return entry?.pack.builder?.view(entry.offset, entry.length).slice();
  }

  /** Whether a block is pending or in flight. */
  has(cid: CID): boolean {
    return this.#byCid.has(cid.toString());
  }

  /** The blocks pending or in flight now. */
  cids(): CID[] {
    return [...this.#byCid.values()].map((e) => e.cid);
  }

  /**
   * Forgets a block pending or in flight (it is not indexed when its pack lands) and stops
   * tracking it if its upload failed. A pack left without blocks is not uploaded (or its upload
   * is stopped). Returns whether the block was pending or in flight.
   */
  delete(cid: CID): boolean {
    const key = cid.toString();
    this.#failed.delete(key);
    const entry = this.#byCid.get(key);
    if (entry === undefined) return false;
    this.#forget(entry);
    return true;
  }

  /**
   * Seals the pending pack and resolves once every pack sealed before has been uploaded and
   * indexed. Rejects with STORE_UNAVAILABLE while any block put before this flush started is
   * tracked as failed. Group commit: calls arriving while a flush runs share the next one. A
   * caller whose signal aborts stops waiting; the flush goes on for the others.
   */
  flush(options: AbortOptions = {}): Promise<void> {
    return this.#flushes.flush(options.signal);
  }

  /** Packs sealed or pending, and blocks tracked as failed: for tests and metrics. */
  get stats(): { pending: number; queued: number; uploading: number; failed: number } {
    return { pending: this.#open?.entries.size ?? 0, queued: this.#queued.length, uploading: this.#uploading.size, failed: this.#failed.size };
  }

  #add(cid: CID, key: string, bytes: Uint8Array): Entry {
    this.#failed.delete(key); // put again: it gets a new chance (and a new sequence number)
    if (this.#open?.builder?.fits(bytes.byteLength) === false) this.#seal(this.#open);
    this.#open ??= this.#newPack(bytes.byteLength);
    const pack = this.#open;
    const { offset, length } = pack.builder!.add(bytes);
    const entry: Entry = { cid, key, pack, offset, length, seq: ++this.#seq, claims: 0 };
    pack.entries.set(key, entry);
    this.#byCid.set(key, entry);
    if (pack.builder!.dataBytes >= this.#o.packBytes) this.#seal(pack);
    return entry;
  }

  #newPack(firstBlock: number): Pack {
    const capacity = Math.max(this.#o.packBytes + PACK_SLACK, firstBlock);
    const spare = capacity === this.#o.packBytes + PACK_SLACK ? this.#spare.pop() : undefined;
    return new Pack(this.#deps.newId(), new PackBuilder(capacity, spare === undefined ? {} : { buffer: spare }));
  }

  /** Keeps a landed pack's buffer for a later pack (bounded: the packs that can be in memory at once). */
  #recycle(builder: PackBuilder | undefined): void {
    if (builder === undefined || builder.buffer.byteLength !== DEFAULT_HEADER_RESERVE + this.#o.packBytes + PACK_SLACK) return;
    if (this.#spare.length < this.#o.packUploads + 2) this.#spare.push(builder.buffer);
  }

  /** A durable put: waits for the block's own pack (sealed at the end of this tick). */
  async #landing(entry: Entry, signal: AbortSignal | undefined): Promise<void> {
    const pack = entry.pack;
    if (pack.state === 'open' && !pack.sealScheduled) {
      // Durable puts made in the same tick (Promise.all over blocks) share one pack.
      pack.sealScheduled = true;
      queueMicrotask(() => {
        if (pack.state === 'open') this.#seal(pack);
      });
    }
    try {
      await (signal === undefined ? pack.done : raceAbort(pack.done, signal));
    } catch (err) {
      // Aborted: the block must not stay behind unless another put asked for it too.
      if (--entry.claims === 0 && this.#byCid.get(entry.key) === entry) this.#forget(entry);
      throw err;
    }
    if (pack.failed.has(entry.key)) {
      // This put reports the failure itself; a flush need not, unless another put relies on it.
      const tracked = this.#failed.get(entry.key);
      if (entry.claims <= 1 && tracked?.pack === pack.id) this.#failed.delete(entry.key);
      throw this.#deps.describe(pack.error, entry.cid, pack.id);
    }
  }

  #forget(entry: Entry): void {
    const { pack } = entry;
    this.#byCid.delete(entry.key);
    pack.entries.delete(entry.key);
    if (pack.entries.size > 0) return;
    if (pack.state === 'open') {
      // Nothing left to upload; a fresh pack starts with the next put.
      if (this.#open === pack) this.#open = undefined;
      pack.finish();
    } else if (pack.state === 'uploading') {
      pack.cancelled = true;
      pack.controller.abort();
    }
    // A queued pack left empty is dropped when its turn comes (#start).
  }

  #seal(pack: Pack): void {
    if (pack.state !== 'open') return;
    if (this.#open === pack) this.#open = undefined;
    pack.state = 'queued';
    this.#queued.push(pack);
    this.#pump();
  }

  #pump(): void {
    while (this.#uploading.size < this.#o.packUploads && this.#queued.length > 0) this.#start(this.#queued.shift()!);
    if (this.#queued.length === 0) {
      for (const wake of [...this.#roomWaiters]) wake();
    }
  }

  #start(pack: Pack): void {
    const builder = pack.builder!;
    if (pack.entries.size === 0) {
      pack.finish();
      this.#recycle(builder);
      return;
    }
    const entries: PackEntry[] = [...pack.entries.values()].map((e) => ({ cid: e.cid, offset: e.offset, length: e.length }));
    const body = builder.seal(entries);
    const dataStart = body.byteLength - builder.dataBytes;
    pack.state = 'uploading';
    this.#uploading.add(pack);
    this.#deps
      .upload(pack.id, body, pack.controller.signal)
      .then(
        () => {
          this.#landed(pack, dataStart, body.byteLength);
          // Only after a success: after a failure the SDK may, for all we know, still be sending.
          this.#recycle(builder);
        },
        (err: unknown) => this.#uploadFailed(pack, err),
      )
      .finally(() => {
        this.#uploading.delete(pack);
        pack.finish();
        this.#pump();
      });
  }

  #landed(pack: Pack, dataStart: number, bytes: number): void {
    // Only blocks not deleted during the upload are indexed.
    const entries = [...pack.entries.values()];
    let live = 0;
    if (entries.length > 0) {
      try {
        live = this.#deps.land(pack.id, bytes, landedBlocks(entries, dataStart));
      } catch (err) {
        this.#deps.discard(pack.id);
        this.#uploadFailed(pack, err);
        return;
      }
    }
    if (live === 0) this.#deps.discard(pack.id);
    for (const e of entries) {
      pack.landed.add(e.key);
      if (this.#byCid.get(e.key) === e) this.#byCid.delete(e.key);
    }
  }

  #uploadFailed(pack: Pack, err: unknown): void {
    if (pack.cancelled && pack.entries.size === 0) {
      // Stopped by us; the object may exist all the same.
      this.#deps.discard(pack.id);
      return;
    }
    pack.error = err;
    for (const e of pack.entries.values()) {
      pack.failed.add(e.key);
      if (this.#byCid.get(e.key) !== e) continue;
      this.#byCid.delete(e.key);
      this.#failed.set(e.key, { cid: e.cid, seq: e.seq, pack: pack.id, error: err });
    }
  }

  async #flushOnce(): Promise<void> {
    const upTo = this.#seq;
    if (this.#open !== undefined && this.#open.entries.size > 0) this.#seal(this.#open);
    await Promise.all([...this.#queued, ...this.#uploading].map((p) => p.done));
    let first: Failure | undefined;
    let count = 0;
    for (const f of this.#failed.values()) {
      if (f.seq > upTo) continue;
      first ??= f;
      count++;
    }
    if (first === undefined) return;
    const cause = this.#deps.describe(first.error, first.cid, first.pack);
    throw new VaultError('STORE_UNAVAILABLE', `${count} block(s) could not be uploaded; first: ${cause.message}`, {
      cause,
      details: { ...cause.details, blocks: count },
    });
  }

  #room(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const wake = (): void => {
        this.#roomWaiters.delete(wake);
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        this.#roomWaiters.delete(wake);
        reject(abortError(signal!));
      };
      this.#roomWaiters.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
