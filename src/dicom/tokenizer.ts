// The DICOM tokenizer: walks a data set's structure as its bytes arrive, for the scanner of
// ingest (src/dicom/scanner.ts) and the transcoder (src/dicom/transcode.ts), which re-encodes
// what it sees.
//
// It is hand-written: we need the exact offsets of Pixel Data, of every fragment and of each
// bulk value inside a stream that is never held whole. dicom-parser needs the whole buffer;
// dcmjs's AsyncDicomReader describes itself as preliminary, gives no offsets and cannot read
// deflated data sets.
//
// The tokens it hands on and the sink that receives them are in tokens.ts.
import { VaultError } from '../core/errors.ts';
import {
  ALL_VRS,
  BINARY_VRS,
  BITS_ALLOCATED,
  EXTENDED_OFFSET_TABLE,
  EXTENDED_OFFSET_TABLE_LENGTHS,
  LONG_LENGTH_VRS,
  PIXEL_DATA,
  PIXEL_REPRESENTATION,
  implicitVR,
  isPixelDataTag,
  tagHex,
  tagLabel,
} from './metadata.ts';
import { type DicomTokenSink, type ElementToken, type ItemToken, LARGE_VALUE_BYTES } from './tokens.ts';
import { malformed, truncated, UNDEFINED_LENGTH, vrAt } from './wire.ts';

export { type DicomTokenSink, type ElementToken, type ItemToken, LARGE_VALUE_BYTES } from './tokens.ts';

export interface DicomTokenizerOptions {
  sink: DicomTokenSink;
  explicitVR: boolean;
  littleEndian: boolean;
  /** Stream offset of the first byte pushed. */
  startOffset: number;
  /** Binary values longer than this stream to the sink instead of being buffered. */
  bulkDataThreshold: number;
  /** Limit of bytes not streamed (headers and buffered values) → TOO_LARGE. */
  maxBufferedBytes: number;
  /** Ignore everything from the top-level Pixel Data on (deflated data sets: see DicomScanner). */
  stopAtPixelData?: boolean;
  /**
   * Most sequences nested in one another; a sequence deeper than this → DICOM_MALFORMED.
   * Default: no limit (the transcoder keeps no record per level; the scanner sets one).
   */
  maxSequenceDepth?: number;
}

const KIND_DATASET = 0;
const KIND_SEQUENCE = 1;
const KIND_ITEM = 2;
const KIND_FRAGMENTS = 3;

interface Context {
  kind: number;
  /** Offset just past the end; -1 when closed by a delimiter (and for the top-level data set). */
  end: number;
  explicitVR: boolean;
  littleEndian: boolean;
  /** Data sets and items: the path prefix of their elements; sequences, fragments: their own path. */
  path: string;
  tag: number;
  offset: number;
  /** Elements (data sets, items), items (sequences) or fragment items (fragments) seen so far. */
  count: number;
  pixelRepresentation: number | undefined;
  bitsAllocated: number | undefined;
}

/** The value of an element not yet buffered. */
const EMPTY = new Uint8Array(0);
const STATE_HEADER = 0;
const STATE_BUFFER = 1;
const STATE_STREAM = 2;
const STATE_PEEK = 3;

const STREAM_VALUE = 0;
const STREAM_FRAGMENT = 1;

/**
 * Walks a data set's structure as its bytes arrive: elements with their VR and length rules,
 * sequences and items of defined and undefined length, encapsulated fragments. Values of binary
 * VRs over the threshold and top-level Pixel Data stream through without being buffered.
 */
export class DicomTokenizer {
  readonly #sink: DicomTokenSink;
  readonly #threshold: number;
  readonly #maxBuffered: number;
  readonly #maxDepth: number;
  readonly #startOffset: number;
  readonly #stack: Context[];
  #offset: number;
  /** Bytes passed to the sink unbuffered. */
  #streamed = 0;
  #state = STATE_HEADER;
  readonly #hdr = new Uint8Array(12);
  readonly #hdrView = new DataView(this.#hdr.buffer);
  #hdrHave = 0;
  #hdrNeed = 8;
  #hdrOffset: number;
  #element: ElementToken | undefined;
  #item: ItemToken | undefined;
  /**
   * The value being buffered: allocated (and filled across pieces) only when it does not lie
   * whole in one piece; otherwise the piece's own bytes are handed on (see STATE_BUFFER).
   */
  #value: Uint8Array = EMPTY;
  #valueLength = 0;
  #valueHave = 0;
  #remaining = 0;
  #streamKind = STREAM_VALUE;
  /** Set while the first element is read: a data set may use the other VR encoding than declared. */
  #firstElement = true;
  readonly #stopAtPixelData: boolean;
  #halted = false;

  constructor(options: DicomTokenizerOptions) {
    this.#sink = options.sink;
    this.#threshold = options.bulkDataThreshold;
    this.#maxBuffered = options.maxBufferedBytes;
    this.#maxDepth = options.maxSequenceDepth ?? Number.POSITIVE_INFINITY;
    this.#startOffset = options.startOffset;
    this.#stopAtPixelData = options.stopAtPixelData ?? false;
    this.#offset = options.startOffset;
    this.#hdrOffset = options.startOffset;
    this.#stack = [
      {
        kind: KIND_DATASET,
        end: -1,
        explicitVR: options.explicitVR,
        littleEndian: options.littleEndian,
        path: '',
        tag: 0,
        offset: options.startOffset,
        count: 0,
        pixelRepresentation: undefined,
        bitsAllocated: undefined,
      },
    ];
  }

  /** Offset just past the last byte pushed. */
  get offset(): number {
    return this.#offset;
  }

  /** VR encoding of the top-level data set (after any correction of a mislabelled one). */
  get explicitVR(): boolean {
    return this.#stack[0]!.explicitVR;
  }

  get #top(): Context {
    return this.#stack[this.#stack.length - 1]!;
  }

  /** True once stopped at the top-level Pixel Data (with `stopAtPixelData`). */
  get halted(): boolean {
    return this.#halted;
  }

  push(chunk: Uint8Array): void {
    const n = chunk.length;
    let pos = 0;
    while (pos < n && !this.#halted) {
      switch (this.#state) {
        case STATE_HEADER:
        case STATE_PEEK: {
          const take = Math.min(this.#hdrNeed - this.#hdrHave, n - pos);
          // At most 12 bytes: copied by hand, without a view object per element header.
          const hdr = this.#hdr;
          for (let i = 0, at = this.#hdrHave; i < take; i++) hdr[at + i] = chunk[pos + i]!;
          this.#hdrHave += take;
          pos += take;
          this.#offset += take;
          if (this.#hdrHave === this.#hdrNeed) {
            if (this.#state === STATE_HEADER) this.#onHeader();
            else this.#onPeek();
          }
          break;
        }
        case STATE_BUFFER: {
          const length = this.#valueLength;
          if (this.#valueHave === 0 && n - pos >= length) {
            // The whole value is in this piece (nearly every header element): the sink gets a
            // view of it, with nothing allocated or copied.
            this.#value = chunk.subarray(pos, pos + length);
            this.#valueHave = length;
            pos += length;
            this.#offset += length;
            this.#onBuffered();
            break;
          }
          if (this.#value.length !== length) this.#value = new Uint8Array(length);
          const take = Math.min(length - this.#valueHave, n - pos);
          this.#value.set(chunk.subarray(pos, pos + take), this.#valueHave);
          this.#valueHave += take;
          pos += take;
          this.#offset += take;
          if (this.#valueHave === length) this.#onBuffered();
          break;
        }
        default: {
          // Streaming: only counted, never copied. This is the path of gigabytes of pixel data.
          const take = Math.min(this.#remaining, n - pos);
          this.#sink.data(chunk.subarray(pos, pos + take));
          this.#remaining -= take;
          this.#streamed += take;
          pos += take;
          this.#offset += take;
          if (this.#remaining === 0) this.#onStreamed();
        }
      }
    }
  }

  /** At the end of the data: throws DICOM_TRUNCATED if anything declared is incomplete. */
  end(): void {
    if (this.#state === STATE_HEADER && this.#hdrHave === 0) {
      this.#closeDefined();
      const open = this.#top;
      if (open.kind === KIND_DATASET) return;
      const what = open.kind === KIND_ITEM ? `item at offset ${open.offset}` : `${tagLabel(open.tag)} at offset ${open.offset}`;
      throw truncated(
        open.end === -1
          ? `${what} has no delimiter before the end of data at offset ${this.#offset}`
          : `declared length of ${what} runs beyond the end of data at offset ${this.#offset}`,
      );
    }
    if (this.#state === STATE_HEADER) {
      throw truncated(`element header at offset ${this.#hdrOffset} cut short by the end of data at offset ${this.#offset}`);
    }
    // A value, fragment or offset table is incomplete.
    const item = this.#item;
    const el = this.#element!;
    const [what, declared] = item !== undefined ? [`item at offset ${item.offset}`, item.length] : [`${tagLabel(el.tag)} at offset ${el.offset}`, el.length];
    throw truncated(`declared length ${declared} of ${what} beyond data: the data ends at offset ${this.#offset}`);
  }

  #checkBudget(more: number): void {
    const held = this.#offset - this.#startOffset - this.#streamed + more;
    if (held > this.#maxBuffered) {
      throw new VaultError('TOO_LARGE', `DICOM header exceeds the limit of ${this.#maxBuffered} bytes (at offset ${this.#offset})`);
    }
  }

  #expectHeader(): void {
    this.#closeDefined();
    this.#state = STATE_HEADER;
    this.#hdrHave = 0;
    this.#hdrNeed = 8;
    this.#hdrOffset = this.#offset;
    this.#element = undefined;
    this.#item = undefined;
  }

  /** Closes defined-length items and sequences that end here. */
  #closeDefined(): void {
    for (;;) {
      const ctx = this.#top;
      if (ctx.end === -1 || this.#offset < ctx.end) return;
      if (this.#offset > ctx.end) {
        throw malformed(`contents overrun the declared end (offset ${ctx.end}) of the ${ctx.kind === KIND_ITEM ? 'item' : 'sequence'} at offset ${ctx.offset}`);
      }
      this.#stack.pop();
      if (ctx.kind === KIND_ITEM) this.#sink.itemEnd();
      else this.#sink.sequenceEnd();
    }
  }

  #onHeader(): void {
    this.#checkBudget(0);
    const ctx = this.#top;
    const le = ctx.littleEndian;
    const dv = this.#hdrView;
    const group = dv.getUint16(0, le);
    const tag = ((group << 16) | dv.getUint16(2, le)) >>> 0;
    if (this.#hdrNeed === 12) {
      this.#startElement(tag, vrAt(this.#hdr, 4), dv.getUint32(8, le));
      return;
    }
    if (group === 0xfffe) {
      this.#onItemTag(tag, dv.getUint32(4, le));
      return;
    }
    if (ctx.kind === KIND_SEQUENCE || ctx.kind === KIND_FRAGMENTS) {
      throw malformed(`expected an item in ${tagLabel(ctx.tag)} (sequence at offset ${ctx.offset}), found ${tagLabel(tag)} at offset ${this.#hdrOffset}`);
    }
    let vr = vrAt(this.#hdr, 4);
    if (this.#firstElement && this.#stack.length === 1) {
      // Some writers label a data set with the other VR encoding; like dcmtk and pydicom, trust
      // the first element's bytes over the transfer syntax.
      this.#firstElement = false;
      ctx.explicitVR = ALL_VRS.has(vr);
    }
    if (ctx.explicitVR) {
      if (!ALL_VRS.has(vr)) {
        throw malformed(`invalid VR bytes ${JSON.stringify(vr)} for ${tagLabel(tag)} at offset ${this.#hdrOffset}`);
      }
      if (LONG_LENGTH_VRS.has(vr)) {
        this.#hdrNeed = 12;
        return;
      }
      this.#startElement(tag, vr, dv.getUint16(6, le));
      return;
    }
    const length = dv.getUint32(4, le);
    vr = implicitVR(tag, ctx, length);
    this.#startElement(tag, vr, length);
  }

  #onItemTag(tag: number, rawLength: number): void {
    const ctx = this.#top;
    const length = rawLength === UNDEFINED_LENGTH ? -1 : rawLength;
    const item: ItemToken = { offset: this.#hdrOffset, valueOffset: this.#offset, length, index: ctx.count };
    switch (tag) {
      case 0xfffee000:
        if (ctx.kind === KIND_SEQUENCE) {
          if (length >= 0 && ctx.end !== -1 && this.#offset + length > ctx.end) {
            throw malformed(`item at offset ${item.offset} of length ${length} overruns its sequence ${tagLabel(ctx.tag)}`);
          }
          ctx.count++;
          this.#stack.push({
            kind: KIND_ITEM,
            end: length < 0 ? -1 : this.#offset + length,
            explicitVR: ctx.explicitVR,
            littleEndian: ctx.littleEndian,
            path: `${ctx.path}.${item.index}.`,
            tag: ctx.tag,
            offset: item.offset,
            count: 0,
            pixelRepresentation: ctx.pixelRepresentation,
            bitsAllocated: ctx.bitsAllocated,
          });
          this.#sink.itemStart(item);
          this.#expectHeader();
          return;
        }
        if (ctx.kind === KIND_FRAGMENTS) {
          if (length < 0) throw malformed(`fragment item at offset ${item.offset} of ${tagLabel(ctx.tag)} has undefined length`);
          ctx.count++;
          this.#item = item;
          if (item.index === 0) {
            this.#checkBudget(length);
            if (length > LARGE_VALUE_BYTES) this.#sink.largeValue?.(length, ctx.tag, ctx.offset);
            this.#startBuffer(length);
          } else {
            this.#sink.fragmentStart(item);
            this.#startStream(length, STREAM_FRAGMENT);
          }
          return;
        }
        throw malformed(`item tag (FFFE,E000) outside a sequence at offset ${item.offset}`);
      case 0xfffee00d:
        if (ctx.kind === KIND_ITEM && ctx.end === -1) {
          this.#stack.pop();
          this.#sink.itemEnd();
          this.#expectHeader();
          return;
        }
        throw malformed(`unexpected item delimiter (FFFE,E00D) at offset ${item.offset}`);
      case 0xfffee0dd:
        if (ctx.kind === KIND_SEQUENCE && ctx.end === -1) {
          this.#stack.pop();
          this.#sink.sequenceEnd();
          this.#expectHeader();
          return;
        }
        if (ctx.kind === KIND_FRAGMENTS) {
          this.#stack.pop();
          this.#sink.fragmentsEnd(this.#offset);
          this.#expectHeader();
          return;
        }
        throw malformed(`unexpected sequence delimiter (FFFE,E0DD) at offset ${item.offset}`);
      default:
        throw malformed(`unknown item tag ${tagLabel(tag)} at offset ${item.offset}`);
    }
  }

  #startElement(tag: number, vr: string, rawLength: number): void {
    const ctx = this.#top;
    const length = rawLength === UNDEFINED_LENGTH ? -1 : rawLength;
    ctx.count++;
    const el: ElementToken = {
      tag,
      vr,
      length,
      offset: this.#hdrOffset,
      valueOffset: this.#offset,
      depth: (this.#stack.length - 1) >> 1,
      path: ctx.path + tagHex(tag),
      littleEndian: ctx.littleEndian,
    };
    this.#element = el;
    if (length >= 0 && ctx.end !== -1 && this.#offset + length > ctx.end) {
      throw malformed(`${tagLabel(tag)} at offset ${el.offset} of length ${length} overruns its item ending at offset ${ctx.end}`);
    }
    if (length === -1) {
      if (vr === 'SQ' || vr === 'UN' || (!ctx.explicitVR && !BINARY_VRS.has(vr))) {
        // An undefined-length UN is a sequence in implicit VR little endian (PS3.5 6.2.2).
        el.vr = 'SQ';
        this.#openSequence(el, -1, vr === 'UN' ? false : ctx.explicitVR, vr === 'UN' ? true : ctx.littleEndian);
      } else if (BINARY_VRS.has(vr)) {
        this.#stack.push({ ...this.#childBase(el), kind: KIND_FRAGMENTS, end: -1 });
        this.#sink.fragmentsStart(el);
        if (this.#stopAtPixelData && el.depth === 0 && el.tag === PIXEL_DATA) {
          this.#halted = true;
          return;
        }
      } else {
        throw malformed(`${tagLabel(tag)} at offset ${el.offset} has undefined length but VR ${vr}`);
      }
      this.#expectHeader();
      return;
    }
    if (vr === 'SQ') {
      this.#openSequence(el, this.#offset + length, ctx.explicitVR, ctx.littleEndian);
      this.#expectHeader();
      return;
    }
    if (ctx.explicitVR && vr === 'UN' && length >= 8 && implicitVR(tag, ctx, length) === 'SQ') {
      // UN for a tag the dictionary knows as SQ (written by a converter that did not know it):
      // if it starts with an item tag, it is a sequence in implicit VR LE (PS3.5 6.2.2). Unknown
      // private data of defined length stays opaque UN, as pydicom and dcmtk keep it.
      this.#state = STATE_PEEK;
      this.#hdrHave = 0;
      this.#hdrNeed = 4;
      return;
    }
    this.#startValue(el);
  }

  #childBase(el: ElementToken): Context {
    const ctx = this.#top;
    return {
      kind: KIND_SEQUENCE,
      end: -1,
      explicitVR: ctx.explicitVR,
      littleEndian: ctx.littleEndian,
      path: el.path,
      tag: el.tag,
      offset: el.offset,
      count: 0,
      pixelRepresentation: ctx.pixelRepresentation,
      bitsAllocated: ctx.bitsAllocated,
    };
  }

  #openSequence(el: ElementToken, end: number, explicitVR: boolean, littleEndian: boolean): void {
    // el.depth sequences enclose this one. Bounded so that nothing reading the structure later
    // (the metadata's JSON, the catalog) can run out of stack on it.
    if (el.depth >= this.#maxDepth) {
      throw malformed(
        `${tagLabel(el.tag)} at offset ${el.offset} is a sequence nested ${el.depth + 1} deep: more than the limit of ${this.#maxDepth} (maxSequenceDepth)`,
      );
    }
    this.#stack.push({ ...this.#childBase(el), end, explicitVR, littleEndian });
    this.#sink.sequenceStart(el);
  }

  #onPeek(): void {
    const el = this.#element!;
    const peeked = this.#hdr.slice(0, 4);
    if (peeked[0] === 0xfe && peeked[1] === 0xff && peeked[2] === 0x00 && peeked[3] === 0xe0) {
      el.vr = 'SQ';
      this.#openSequence(el, el.valueOffset + el.length, false, true);
      // The peeked bytes are the start of the first item's header.
      this.#state = STATE_HEADER;
      this.#hdrOffset = el.valueOffset;
      this.#hdrHave = 4;
      this.#hdrNeed = 8;
      return;
    }
    this.#startValue(el, peeked);
  }

  #startValue(el: ElementToken, prefix?: Uint8Array): void {
    const stream =
      (el.depth === 0 && isPixelDataTag(el.tag)) ||
      (BINARY_VRS.has(el.vr) &&
        el.length > this.#threshold &&
        !(el.depth === 0 && (el.tag === EXTENDED_OFFSET_TABLE || el.tag === EXTENDED_OFFSET_TABLE_LENGTHS)));
    if (stream) {
      this.#sink.bulkStart(el);
      if (this.#stopAtPixelData && el.depth === 0 && isPixelDataTag(el.tag)) {
        this.#halted = true;
        return;
      }
      if (prefix !== undefined) {
        this.#streamed += prefix.length;
        this.#sink.data(prefix);
      }
      this.#startStream(el.length - (prefix?.length ?? 0), STREAM_VALUE);
      return;
    }
    this.#checkBudget(el.length - (prefix?.length ?? 0));
    if (el.length > LARGE_VALUE_BYTES) this.#sink.largeValue?.(el.length, el.tag, el.offset);
    this.#startBuffer(el.length, prefix);
  }

  #startBuffer(length: number, prefix?: Uint8Array): void {
    this.#valueLength = length;
    this.#valueHave = 0;
    this.#value = EMPTY;
    if (prefix !== undefined && prefix.length > 0) {
      this.#value = new Uint8Array(length);
      this.#value.set(prefix);
      this.#valueHave = prefix.length;
    }
    this.#state = STATE_BUFFER;
    if (this.#valueHave === length) this.#onBuffered();
  }

  #startStream(length: number, kind: number): void {
    this.#remaining = length;
    this.#streamKind = kind;
    this.#state = STATE_STREAM;
    if (length === 0) this.#onStreamed();
  }

  #onBuffered(): void {
    const value = this.#value;
    this.#value = EMPTY;
    const item = this.#item;
    if (item !== undefined) {
      this.#sink.offsetTable(item, value);
    } else {
      const el = this.#element!;
      const ctx = this.#top;
      if ((el.tag === PIXEL_REPRESENTATION || el.tag === BITS_ALLOCATED) && value.length >= 2) {
        const v = el.littleEndian ? value[0]! | (value[1]! << 8) : (value[0]! << 8) | value[1]!;
        if (el.tag === PIXEL_REPRESENTATION) ctx.pixelRepresentation = v;
        else ctx.bitsAllocated = v;
      }
      this.#sink.element(el, value);
    }
    this.#expectHeader();
  }

  #onStreamed(): void {
    if (this.#streamKind === STREAM_FRAGMENT) this.#sink.fragmentEnd();
    else this.#sink.bulkEnd();
    this.#expectHeader();
  }
}
