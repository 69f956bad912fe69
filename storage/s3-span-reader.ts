// The read side of S3 packing: coalesced ranged reads. A read of a packed block fetches, in the
// same ranged GET, the blocks that follow it in its pack (up to `readSpan` bytes), because a
// reader going through an instance asks for them next. Each block is streamed into a buffer of
// its own (no concatenation, no copy); blocks nobody waits for yet are kept in a small
// byte-bounded FIFO cache, from which the next `get` takes them (the caller owns what `get`
// returns, e.g. moves it to a worker thread, so a cached buffer is handed out once and dropped).
// A `get` for a block whose span is already being read waits for that read.
//
// Independent of S3: the index query and the ranged read are passed in.
import type { PackedBlock } from './s3-pack-index.ts';
import { abortError } from '../src/errors.ts';

/** Bytes one coalesced ranged GET covers, 4 MiB (measured against 8 MiB: see storage/README.md). */
export const DEFAULT_READ_SPAN = 4 * 1024 * 1024;
/** Bytes of blocks read ahead and not yet asked for that are kept, 32 MiB; oldest dropped first. */
export const DEFAULT_READ_CACHE_BYTES = 32 * 1024 * 1024;
/** Most blocks one span covers (tiny blocks: the index query stays small). */
const MAX_SPAN_BLOCKS = 256;

export interface SpanTarget {
  /** Byte offset in the pack object. */
  start: number;
  size: number;
  /** Where its bytes go; `size` bytes long. */
  out: Uint8Array;
}

export interface SpanSource {
  /** Up to `limit` indexed blocks of `pack` from byte `start` on, in order. */
  following(pack: string, start: number, limit: number): PackedBlock[];
  /**
   * Reads bytes [start, end) of `pack` into `targets` (in order, inside the range, adjacent).
   * Rejects if the read fails, is short or `signal` aborts.
   */
  read(pack: string, start: number, end: number, targets: readonly SpanTarget[], signal: AbortSignal): Promise<void>;
}

export interface SpanReaderOptions {
  /** Bytes per coalesced read; 0 reads each block alone. */
  readSpan: number;
  /** Bytes the read-ahead cache holds. */
  cacheBytes: number;
}

interface Slot {
  target: SpanTarget;
  waiters: number;
  handedOut: boolean;
}

interface Span {
  slots: Map<string, Slot>;
  waiters: number;
  controller: AbortController;
  /** Settles once the read is done and leftovers are cached; rejects with the read's error. */
  done: Promise<void>;
  settled: boolean;
}

export class SpanReader {
  readonly #o: SpanReaderOptions;
  readonly #source: SpanSource;
  readonly #cache = new Map<string, Uint8Array>();
  #cachedBytes = 0;
  /** Spans being read, by the key of each block they cover. */
  readonly #reading = new Map<string, Span>();
  /** Ranged reads issued, for tests and metrics. */
  reads = 0;

  constructor(options: SpanReaderOptions, source: SpanSource) {
    this.#o = options;
    this.#source = source;
  }

  /** A block read ahead earlier, handed over (and forgotten), or undefined. */
  take(cid: Uint8Array): Uint8Array | undefined {
    const key = keyOf(cid);
    const bytes = this.#cache.get(key);
    if (bytes === undefined) return undefined;
    this.#cache.delete(key);
    this.#cachedBytes -= bytes.byteLength;
    return bytes;
  }

  /** The bytes of `block`, read with the blocks after it unless a read covering it runs already. */
  async get(block: PackedBlock, signal?: AbortSignal): Promise<Uint8Array> {
    const key = keyOf(block.cid);
    const span = this.#reading.get(key) ?? this.#start(key, block);
    const slot = span.slots.get(key)!;
    slot.waiters++;
    span.waiters++;
    try {
      await (signal === undefined ? span.done : raceAbort(span.done, signal));
    } catch (err) {
      slot.waiters--;
      span.waiters--;
      // The last one waiting went away: stop the read (and let new gets start their own).
      if (signal?.aborted === true && span.waiters === 0 && !span.settled) this.#cancel(span);
      throw err;
    }
    slot.waiters--;
    span.waiters--;
    if (slot.handedOut) return slot.target.out.slice(); // a second get of the same block: its own copy
    slot.handedOut = true;
    return slot.target.out;
  }

  /** Drops a block from the cache (it was deleted). */
  forget(cid: Uint8Array): void {
    this.take(cid);
  }

  get cachedBytes(): number {
    return this.#cachedBytes;
  }

  #start(key: string, block: PackedBlock): Span {
    const slots = new Map<string, Slot>([[key, { target: { start: block.start, size: block.size, out: allocate(block.size) }, waiters: 0, handedOut: false }]]);
    let end = block.start + block.size;
    if (this.#o.readSpan > 0 && end - block.start < this.#o.readSpan) {
      for (const row of this.#source.following(block.pack, end, MAX_SPAN_BLOCKS)) {
        const k = keyOf(row.cid);
        // Adjacent blocks only (a deleted block's gap ends the span), none read already.
        if (row.start !== end || this.#cache.has(k) || this.#reading.has(k) || slots.has(k)) break;
        slots.set(k, { target: { start: row.start, size: row.size, out: allocate(row.size) }, waiters: 0, handedOut: false });
        end = row.start + row.size;
        if (end - block.start >= this.#o.readSpan) break;
      }
    }
    const controller = new AbortController();
    const targets = [...slots.values()].map((s) => s.target);
    this.reads++;
    const span: Span = { slots, waiters: 0, controller, settled: false, done: undefined as unknown as Promise<void> };
    span.done = this.#source.read(block.pack, block.start, end, targets, controller.signal).then(
      () => {
        this.#settle(span);
        // Blocks nobody asked for yet wait in the cache for their get.
        for (const [k, slot] of slots) if (slot.waiters === 0) this.#remember(k, slot.target.out);
      },
      (err: unknown) => {
        this.#settle(span);
        throw err;
      },
    );
    span.done.catch(() => undefined); // each waiter gets the error
    for (const k of slots.keys()) this.#reading.set(k, span);
    return span;
  }

  #settle(span: Span): void {
    if (span.settled) return;
    span.settled = true;
    for (const k of span.slots.keys()) if (this.#reading.get(k) === span) this.#reading.delete(k);
  }

  #cancel(span: Span): void {
    this.#settle(span);
    span.controller.abort();
  }

  #remember(key: string, bytes: Uint8Array): void {
    if (bytes.byteLength > this.#o.cacheBytes || this.#cache.has(key)) return;
    this.#cache.set(key, bytes);
    this.#cachedBytes += bytes.byteLength;
    for (const [k, b] of this.#cache) {
      if (this.#cachedBytes <= this.#o.cacheBytes) break;
      this.#cache.delete(k);
      this.#cachedBytes -= b.byteLength;
    }
  }
}

/** A map key for CID bytes; latin1 keeps one character per byte. */
function keyOf(cid: Uint8Array): string {
  return Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1');
}

/**
 * A buffer with an ArrayBuffer of its own (readers may transfer it to a worker), not zeroed:
 * every byte is written by the read before anyone sees it.
 */
function allocate(size: number): Uint8Array {
  return new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size);
}

function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
