// The read side of S3 packing: coalesced ranged reads. A read of a packed block fetches, in the
// same ranged GET, the blocks that follow it in its pack (up to `readSpan` bytes), because a
// reader going through an instance asks for them next. Each block is streamed into a buffer of
// its own (no concatenation, no copy); blocks nobody waits for yet are kept in a small
// byte-bounded FIFO cache, from which the next `get` takes them (the caller owns what `get`
// returns, e.g. moves it to a worker thread, so a cached buffer is handed out once and dropped).
// A `get` for a block whose span is already being read waits for that read.
//
// Sequential reads are also read ahead by one span: the first time a second block of a span is
// asked for (the reader is going through the pack in order), the next span is fetched too, so
// that one GET is always under way while the blocks of another are consumed. The next span is
// the rest of the same pack or, once the reader has been seen to go on from the end of one pack
// to the start of the pack written next (ingest writes an instance's chunks into consecutive
// packs), the start of the following pack. A lone read (a frame) costs one span and no more, and
// readers of packs written in another order (interleaved ingests) get no cross-pack read-ahead.
//
// Independent of S3: the index query and the ranged read are passed in.
import type { PackedBlock } from './pack-index.ts';
import { raceAbort } from '../../src/core/abort.ts';

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
  /** The pack written just after (`direction` 1) or before (-1) `pack` that still has blocks. */
  adjacentPack(pack: string, direction: 1 | -1): string | undefined;
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

/** What read-ahead needs of a span; kept apart so cached blocks do not hold the span's buffers. */
interface SpanPlace {
  pack: string;
  /** Byte offset in the pack just after the span. */
  end: number;
  nextStarted: boolean;
  /** The reader came here from the end of the previous pack: read ahead into the next pack too. */
  chained: boolean;
}

/** Packs whose last span a reader asked for, most recent last; bounded. */
const ENDED_PACKS = 64;

interface Span {
  place: SpanPlace;
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
  readonly #cache = new Map<string, { bytes: Uint8Array; place: SpanPlace }>();
  #cachedBytes = 0;
  /** Spans being read, by the key of each block they cover. */
  readonly #reading = new Map<string, Span>();
  readonly #ended = new Set<string>();
  /** Ranged reads issued, for tests and metrics. */
  reads = 0;

  constructor(options: SpanReaderOptions, source: SpanSource) {
    this.#o = options;
    this.#source = source;
  }

  /** A block read ahead earlier, handed over (and forgotten), or undefined. */
  take(cid: Uint8Array): Uint8Array | undefined {
    const key = keyOf(cid);
    const cached = this.#cache.get(key);
    if (cached === undefined) return undefined;
    this.#cache.delete(key);
    this.#cachedBytes -= cached.bytes.byteLength;
    this.#readAheadAfter(cached.place);
    return cached.bytes;
  }

  /** The bytes of `block`, read with the blocks after it unless a read covering it runs already. */
  async get(block: PackedBlock, signal?: AbortSignal): Promise<Uint8Array> {
    const key = keyOf(block.cid);
    let span = this.#reading.get(key);
    if (span === undefined) span = this.#start(key, block, this.#continuesPack(block));
    else this.#readAheadAfter(span.place);
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
    const key = keyOf(cid);
    const cached = this.#cache.get(key);
    if (cached === undefined) return;
    this.#cache.delete(key);
    this.#cachedBytes -= cached.bytes.byteLength;
  }

  get cachedBytes(): number {
    return this.#cachedBytes;
  }

  /** Whether a read of `block` is the start of a pack whose predecessor a reader just finished. */
  #continuesPack(block: PackedBlock): boolean {
    if (this.#ended.size === 0) return false;
    const first = this.#source.following(block.pack, 0, 1)[0];
    if (first === undefined || first.start !== block.start) return false;
    const previous = this.#source.adjacentPack(block.pack, -1);
    return previous !== undefined && this.#ended.has(previous);
  }

  #start(key: string, block: PackedBlock, chained: boolean): Span {
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
    const span: Span = {
      place: { pack: block.pack, end, nextStarted: false, chained },
      slots,
      waiters: 0,
      controller,
      settled: false,
      done: undefined as unknown as Promise<void>,
    };
    span.done = this.#source.read(block.pack, block.start, end, targets, controller.signal).then(
      () => {
        this.#settle(span);
        // Blocks nobody asked for yet wait in the cache for their get.
        for (const [k, slot] of slots) if (slot.waiters === 0) this.#remember(k, slot.target.out, span.place);
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

  /**
   * Starts reading the span after `place` (in its pack, else at the start of the next pack when
   * the reading is chained), once per span, unless it is read or cached already.
   */
  #readAheadAfter(place: SpanPlace): void {
    if (place.nextStarted || this.#o.cacheBytes === 0) return;
    place.nextStarted = true;
    let next = this.#source.following(place.pack, place.end, 1)[0];
    if (next !== undefined && next.start !== place.end) return; // a gap (a deleted block): stop
    if (next === undefined) {
      // The reader goes through this pack to its end.
      this.#ended.delete(place.pack);
      this.#ended.add(place.pack);
      if (this.#ended.size > ENDED_PACKS) this.#ended.delete(this.#ended.values().next().value!);
      if (!place.chained) return;
      const pack = this.#source.adjacentPack(place.pack, 1);
      next = pack === undefined ? undefined : this.#source.following(pack, 0, 1)[0];
      if (next === undefined) return;
    }
    const key = keyOf(next.cid);
    if (this.#cache.has(key) || this.#reading.has(key)) return;
    this.#start(key, next, place.chained).done.catch(() => undefined); // nobody waits: a failure shows at the block's own get
  }

  #remember(key: string, bytes: Uint8Array, place: SpanPlace): void {
    if (bytes.byteLength > this.#o.cacheBytes || this.#cache.has(key)) return;
    this.#cache.set(key, { bytes, place });
    this.#cachedBytes += bytes.byteLength;
    for (const [k, c] of this.#cache) {
      if (this.#cachedBytes <= this.#o.cacheBytes) break;
      this.#cache.delete(k);
      this.#cachedBytes -= c.bytes.byteLength;
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
