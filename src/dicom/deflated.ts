// Values of a Deflated Explicit VR Little Endian instance. The scanner records no byte offsets for
// such instances (its data set is one raw-deflate stream: an offset into the inflated bytes cannot
// be read without inflating everything before it), so their bulk data and frames are cut out of
// the data set as it is inflated again, from the start, each time they are asked for. Deflated
// instances are rare and small (the syntax exists for structured reports and small images);
// nothing of them is held but the header and the bytes asked for.
import { VaultError } from '../core/errors.ts';
import { tagLabel } from './metadata.ts';
import type { ByteRange } from './model.ts';
import { parseFileMeta, type FileMeta } from './file-meta.ts';
import { GrowableBuffer } from './growable-buffer.ts';
import { DicomTokenizer, type DicomTokenSink, type ElementToken } from './tokenizer.ts';
import { describeTransferSyntax } from './transfer-syntax.ts';
import { inflate } from './deflate-stream.ts';

/** Values above this many bytes stream through the tokenizer instead of being buffered. */
const BUFFERED_VALUE_BYTES = 1024;

/**
 * The bytes of the value at `path` (a tag path as in BulkDataURIs: '7FE00010', '00540016.0.00181072')
 * of a deflated instance, whose stored Part 10 bytes are `source`; with `range`, only those bytes
 * of the value (offset relative to its start). Stops reading `source` once they are out. Throws
 * BULKDATA_NOT_FOUND when the data set has no such value (or it is shorter than `range`).
 */
export async function* deflatedValue(source: AsyncIterable<Uint8Array>, path: string, range?: ByteRange): AsyncGenerator<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]();
  let finished = false;
  try {
    const head = new GrowableBuffer();
    let meta: FileMeta | undefined;
    while (meta === undefined) {
      const next = await iterator.next();
      if (next.done === true) finished = true;
      else head.append(next.value);
      meta = parseFileMeta(head.view(), finished);
    }
    if (!describeTransferSyntax(meta.transferSyntaxUID).deflated) {
      throw new VaultError('INTERNAL', `deflatedValue: the instance is in ${meta.transferSyntaxUID}, not deflated`);
    }
    const rest = head.view().subarray(meta.datasetOffset);
    const compressed = async function* (): AsyncGenerator<Uint8Array> {
      if (rest.length > 0) yield rest;
      while (!finished) {
        const next = await iterator.next();
        if (next.done === true) finished = true;
        else yield next.value;
      }
    };
    const sink = new ValueSink(path, range);
    const tokenizer = new DicomTokenizer({
      sink,
      explicitVR: true,
      littleEndian: true,
      startOffset: 0,
      bulkDataThreshold: BUFFERED_VALUE_BYTES,
      // The header was bounded when the instance was ingested (with the node's own limit).
      maxBufferedBytes: Number.MAX_SAFE_INTEGER,
    });
    const inflated = inflate(compressed());
    try {
      for await (const chunk of inflated) {
        tokenizer.push(chunk);
        yield* sink.out.splice(0);
        if (sink.complete) return;
      }
      tokenizer.end();
    } finally {
      await inflated.return(undefined);
    }
    yield* sink.out.splice(0);
    if (!sink.complete) {
      throw new VaultError(
        'BULKDATA_NOT_FOUND',
        sink.found ? `the value at ${path} is shorter than the bytes asked for` : `the instance has no value at ${path}`,
      );
    }
  } finally {
    if (!finished) await iterator.return?.();
  }
}

/** Cuts the bytes of one value (or part of it) out of the tokens of a data set. */
class ValueSink implements DicomTokenSink {
  readonly out: Uint8Array[] = [];
  found = false;
  complete = false;
  readonly #path: string;
  readonly #start: number;
  readonly #end: number;
  /** Position in the value of the next streamed byte; -1 while not in the value. */
  #position = -1;

  constructor(path: string, range: ByteRange | undefined) {
    this.#path = path;
    this.#start = range?.offset ?? 0;
    this.#end = range === undefined ? Infinity : range.offset + range.length;
  }

  #take(bytes: Uint8Array, at: number): void {
    const from = Math.max(this.#start - at, 0);
    const to = Math.min(this.#end - at, bytes.length);
    if (to > from) this.out.push(bytes.slice(from, to));
    if (at + bytes.length >= this.#end) this.complete = true;
  }

  element(el: ElementToken, value: Uint8Array): void {
    if (el.path !== this.#path) return;
    this.found = true;
    if (this.#end !== Infinity && value.length < this.#end) {
      throw new VaultError('BULKDATA_NOT_FOUND', `${tagLabel(el.tag)} holds ${value.length} bytes, fewer than the ${this.#end} asked for`);
    }
    this.#take(value, 0);
    this.complete = true;
  }

  bulkStart(el: ElementToken): void {
    if (el.path !== this.#path) return;
    this.found = true;
    this.#position = 0;
    if (this.#end > el.length && this.#end !== Infinity) {
      throw new VaultError('BULKDATA_NOT_FOUND', `${tagLabel(el.tag)} holds ${el.length} bytes, fewer than the ${this.#end} asked for`);
    }
  }

  data(bytes: Uint8Array): void {
    if (this.#position < 0 || this.complete) return;
    this.#take(bytes, this.#position);
    this.#position += bytes.length;
  }

  bulkEnd(): void {
    if (this.#position >= 0) this.complete = true;
    this.#position = -1;
  }

  sequenceStart(): void {}
  sequenceEnd(): void {}
  itemStart(): void {}
  itemEnd(): void {}
  fragmentsStart(): void {}
  offsetTable(): void {}
  fragmentStart(): void {}
  fragmentEnd(): void {}
  fragmentsEnd(): void {}
}

/**
 * Reads ranges of one value of a deflated instance, in any order, over as few passes as it can:
 * ranges asked for in ascending order come out of one pass; one before the last starts a new pass.
 */
export class DeflatedValueReader {
  readonly #open: () => AsyncIterable<Uint8Array>;
  readonly #path: string;
  #pass: AsyncGenerator<Uint8Array> | undefined;
  /** Value offset of the first byte the pass has not given yet. */
  #position = 0;
  #pending: Uint8Array | undefined;

  /** `open`: the stored bytes of the instance from its start, afresh for each pass. */
  constructor(open: () => AsyncIterable<Uint8Array>, path: string) {
    this.#open = open;
    this.#path = path;
  }

  /** The bytes of `range`; reads asked for at once are served one after the other, in order. */
  read(range: ByteRange): Promise<Uint8Array> {
    const result = this.#turn.then(() => this.#read(range));
    this.#turn = result.catch(() => {});
    return result;
  }

  /** Settles when the read before has. */
  #turn: Promise<unknown> = Promise.resolve();

  async #read(range: ByteRange): Promise<Uint8Array> {
    if (this.#pass === undefined || range.offset < this.#position) {
      await this.#endPass();
      this.#pass = deflatedValue(this.#open(), this.#path);
      this.#position = 0;
    }
    const out = new Uint8Array(range.length);
    let filled = 0;
    while (filled < range.length) {
      let piece = this.#pending;
      this.#pending = undefined;
      if (piece === undefined) {
        const next = await this.#pass.next();
        if (next.done === true) throw new VaultError('BULKDATA_NOT_FOUND', `the value at ${this.#path} ends before byte ${range.offset + range.length}`);
        piece = next.value;
      }
      const at = this.#position;
      this.#position += piece.length;
      const from = Math.max(range.offset + filled - at, 0);
      if (from >= piece.length) continue;
      const take = Math.min(piece.length - from, range.length - filled);
      out.set(piece.subarray(from, from + take), filled);
      filled += take;
      if (from + take < piece.length) {
        // The rest of this piece belongs to later ranges: kept, and the position set back to it.
        this.#pending = piece.subarray(from + take);
        this.#position = at + from + take;
      }
    }
    return out;
  }

  /** Ends the reading, once the reads asked for have settled. */
  async close(): Promise<void> {
    await this.#turn;
    await this.#endPass();
  }

  async #endPass(): Promise<void> {
    const pass = this.#pass;
    this.#pass = undefined;
    this.#pending = undefined;
    await pass?.return(undefined);
  }
}
