// The incremental, pass-through DICOM Part 10 scanner of ingest. An instance (up to several
// GiB) streams through `push()` once while the same bytes are chunked and encrypted elsewhere;
// the scanner keeps only the header, and learns the identity ingest needs before it can pick the
// study key, the DICOM JSON metadata, and the byte ranges of every frame and bulk value.
//
// The tokenizer is hand-written: we need the exact offsets of Pixel Data, of every fragment and
// of each bulk value inside a stream that is never held whole. dicom-parser needs the whole
// buffer; dcmjs's AsyncDicomReader describes itself as preliminary, gives no offsets and cannot
// read deflated data sets. The tokenizer is shared with the transcoder (src/dicom/transcode.ts),
// which re-encodes what it sees.
import zlib from 'node:zlib';
import { VaultError, isVaultError } from '../core/errors.ts';
import type {
  ByteRange,
  DicomJsonDataset,
  DicomJsonElement,
  InstanceIdentity,
  InstanceLayout,
  PixelDataLayout,
  ScannedInstance,
} from './model.ts';
import {
  ALL_VRS,
  BINARY_VRS,
  BITS_ALLOCATED,
  DEFAULT_TEXT_DECODER,
  EXTENDED_OFFSET_TABLE,
  EXTENDED_OFFSET_TABLE_LENGTHS,
  LONG_LENGTH_VRS,
  PIXEL_DATA,
  PIXEL_REPRESENTATION,
  SPECIFIC_CHARACTER_SET,
  decodeElementValue,
  firstNumber,
  firstString,
  implicitVR,
  isPixelDataTag,
  tagHex,
  tagLabel,
  textDecoderFor,
  type TextDecodeFn,
} from './metadata.ts';
import { describeTransferSyntax } from './transfer-syntax.ts';
import { assertUid } from './uid.ts';

/** Default limit of header bytes held in memory: 64 MiB. */
export const DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024;
/** Default size above which binary values become BulkDataURIs: 1024 bytes. */
export const DEFAULT_BULK_DATA_THRESHOLD = 1024;

export interface DicomScannerOptions {
  /**
   * Most bytes the scanner holds and decodes, in bytes. Default DEFAULT_MAX_HEADER_BYTES
   * (64 MiB). Counts everything except values that stream past unbuffered (Pixel Data,
   * fragments, binary values over `bulkDataThreshold`), so it bounds the header (everything
   * before top-level Pixel Data) without refusing, say, a large Encapsulated Document. For
   * deflated data sets it bounds the compressed header and (times two) the inflated one.
   * Exceeded → VaultError('TOO_LARGE').
   */
  maxHeaderBytes?: number;
  /**
   * Binary values (OB OD OF OL OV OW UN) longer than this many bytes are not buffered and
   * become `BulkDataURI`s with their byte range in `layout.bulk`. Default
   * DEFAULT_BULK_DATA_THRESHOLD (1024 bytes).
   */
  bulkDataThreshold?: number;
}

const UNDEFINED_LENGTH = 0xffffffff;
const PREAMBLE_LENGTH = 128;
const DICM = [0x44, 0x49, 0x43, 0x4d];

function malformed(reason: string): VaultError {
  return new VaultError('DICOM_MALFORMED', reason);
}
function truncated(reason: string): VaultError {
  return new VaultError('DICOM_TRUNCATED', reason);
}

function vrAt(bytes: Uint8Array, offset: number): string {
  return String.fromCharCode(bytes[offset]!, bytes[offset + 1]!);
}

/** A byte buffer that grows by doubling, so appending chunk after chunk is linear. */
export class GrowableBuffer {
  #bytes = new Uint8Array(0);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  append(chunk: Uint8Array): void {
    if (this.#length + chunk.length > this.#bytes.length) {
      const grown = new Uint8Array(Math.max(this.#length + chunk.length, this.#bytes.length * 2, 4096));
      grown.set(this.#bytes.subarray(0, this.#length));
      this.#bytes = grown;
    }
    this.#bytes.set(chunk, this.#length);
    this.#length += chunk.length;
  }

  view(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }
}

// ---------------------------------------------------------------------------------------------
// File Meta Information (PS3.10 7.1): preamble, 'DICM', group 0002 in explicit VR LE

export interface FileMetaElement {
  tag: number;
  vr: string;
  /** A copy of the value bytes (little endian). */
  value: Uint8Array;
}

export interface FileMeta {
  elements: FileMetaElement[];
  transferSyntaxUID: string;
  mediaStorageSOPClassUID: string | undefined;
  mediaStorageSOPInstanceUID: string | undefined;
  /** Offset of the first byte of the data set. */
  datasetOffset: number;
}

function metaString(value: Uint8Array): string {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('latin1').replace(/[\0 ]+$/, '').trim();
}

/**
 * Parses preamble and File Meta from the start of an instance. Returns undefined when more
 * bytes are needed (never when `final`). Throws NOT_DICOM without preamble, 'DICM' or group
 * 0002, DICOM_MALFORMED for a broken File Meta, DICOM_TRUNCATED (when `final`) for a cut one.
 *
 * The File Meta ends where the group changes (as pydicom and dcmtk read it: group lengths are
 * often wrong); only for deflated data sets, whose first bytes are compressed, the group length
 * decides.
 */
export function parseFileMeta(buf: Uint8Array, final: boolean): FileMeta | undefined {
  const n = buf.length;
  for (let i = 0; i < 4 && PREAMBLE_LENGTH + i < n; i++) {
    if (buf[PREAMBLE_LENGTH + i] !== DICM[i]) throw new VaultError('NOT_DICOM', "no 'DICM' prefix at offset 128: not a DICOM Part 10 file");
  }
  if (n < PREAMBLE_LENGTH + 4) {
    if (final) throw new VaultError('NOT_DICOM', `only ${n} bytes: shorter than the Part 10 preamble and 'DICM' prefix`);
    return undefined;
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const elements: FileMetaElement[] = [];
  let pos = PREAMBLE_LENGTH + 4;
  let groupEnd: number | undefined;
  let transferSyntaxUID: string | undefined;
  const done = (): FileMeta => {
    if (transferSyntaxUID === undefined || transferSyntaxUID === '') {
      throw malformed('File Meta Information has no Transfer Syntax UID (0002,0010)');
    }
    const find = (tag: number): string | undefined => {
      const e = elements.find((x) => x.tag === tag);
      return e === undefined ? undefined : metaString(e.value);
    };
    return {
      elements,
      transferSyntaxUID,
      mediaStorageSOPClassUID: find(0x00020002),
      mediaStorageSOPInstanceUID: find(0x00020003),
      datasetOffset: pos,
    };
  };
  for (;;) {
    if (groupEnd !== undefined && pos === groupEnd && transferSyntaxUID !== undefined && describeTransferSyntax(transferSyntaxUID).deflated) {
      return done();
    }
    if (pos + 2 > n) {
      if (!final) return undefined;
      if (elements.length === 0) throw new VaultError('NOT_DICOM', 'no File Meta Information (group 0002) after the DICM prefix');
      if (pos < n) throw truncated(`data set cut short at offset ${pos}`);
      return done();
    }
    const group = dv.getUint16(pos, true);
    if (group !== 0x0002) {
      if (elements.length === 0) throw new VaultError('NOT_DICOM', 'no File Meta Information (group 0002) after the DICM prefix');
      return done();
    }
    if (pos + 8 > n) {
      if (final) throw truncated(`File Meta element header at offset ${pos} cut short`);
      return undefined;
    }
    const tag = ((group << 16) | dv.getUint16(pos + 2, true)) >>> 0;
    const vr = vrAt(buf, pos + 4);
    if (!ALL_VRS.has(vr)) throw malformed(`File Meta element ${tagLabel(tag)} at offset ${pos} is not in explicit VR (VR bytes ${JSON.stringify(vr)})`);
    let header = 8;
    let length = dv.getUint16(pos + 6, true);
    if (LONG_LENGTH_VRS.has(vr)) {
      if (pos + 12 > n) {
        if (final) throw truncated(`File Meta element header at offset ${pos} cut short`);
        return undefined;
      }
      header = 12;
      length = dv.getUint32(pos + 8, true);
      if (length === UNDEFINED_LENGTH) throw malformed(`File Meta element ${tagLabel(tag)} at offset ${pos} has undefined length`);
    }
    if (pos + header + length > n) {
      if (final) throw truncated(`declared length ${length} of ${tagLabel(tag)} at offset ${pos} beyond end of data`);
      return undefined;
    }
    const value = buf.slice(pos + header, pos + header + length);
    elements.push({ tag, vr, value });
    if (tag === 0x00020000 && length === 4) groupEnd = pos + header + 4 + dv.getUint32(pos + header, true);
    if (tag === 0x00020010) transferSyntaxUID = metaString(value);
    pos += header + length;
  }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

export interface ElementToken {
  tag: number;
  /** Explicit VR, or for implicit VR the dictionary's (ambiguous ones resolved; 'UN' unknown). */
  vr: string;
  /** Value length in bytes; -1 when undefined. */
  length: number;
  /** Offset of the element's tag. */
  offset: number;
  /** Offset of the value. */
  valueOffset: number;
  /** 0 for the top-level data set. */
  depth: number;
  /** Parent tags and item indexes joined by '.', e.g. '52009230.0.00289110'. */
  path: string;
  /** Byte order of the value. */
  littleEndian: boolean;
}

export interface ItemToken {
  /** Offset of the item tag. */
  offset: number;
  valueOffset: number;
  /** Value length; -1 when undefined. */
  length: number;
  /** 0-based index within its sequence; for fragments 0 is the Basic Offset Table. */
  index: number;
}

/** Receives what the tokenizer finds, in stream order. */
export interface DicomTokenSink {
  /**
   * An element whose whole value was buffered. `value` may be a view of the bytes pushed, valid
   * only during the call: a sink that keeps it keeps a copy.
   */
  element(el: ElementToken, value: Uint8Array): void;
  /** A value that streams past: `data()` calls follow, then `bulkEnd()`. */
  bulkStart(el: ElementToken): void;
  /** The next bytes of the streaming value or fragment; a view valid only during the call. */
  data(bytes: Uint8Array): void;
  bulkEnd(): void;
  sequenceStart(el: ElementToken): void;
  sequenceEnd(): void;
  itemStart(item: ItemToken): void;
  itemEnd(): void;
  /** An undefined-length binary value: encapsulated pixel data. */
  fragmentsStart(el: ElementToken): void;
  /** The first item of encapsulated data (buffered; may be empty; a view valid only during the call). */
  offsetTable(item: ItemToken, value: Uint8Array): void;
  /** A fragment: `data()` calls follow, then `fragmentEnd()`. */
  fragmentStart(item: ItemToken): void;
  fragmentEnd(): void;
  /** `endOffset`: just past the sequence delimiter. */
  fragmentsEnd(endOffset: number): void;
}

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
    const [what, declared] = item !== undefined
      ? [`item at offset ${item.offset}`, item.length]
      : [`${tagLabel(el.tag)} at offset ${el.offset}`, el.length];
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
      (BINARY_VRS.has(el.vr) && el.length > this.#threshold && !(el.depth === 0 && (el.tag === EXTENDED_OFFSET_TABLE || el.tag === EXTENDED_OFFSET_TABLE_LENGTHS)));
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

// ---------------------------------------------------------------------------------------------
// Metadata and layout

interface Fragment {
  itemOffset: number;
  range: ByteRange;
  /** First two bytes of the fragment (big endian), -1 when shorter: JPEG SOI, J2K SOC markers. */
  marker: number;
}

type Level =
  | { kind: 'dataset'; dataset: DicomJsonDataset; decode: TextDecodeFn }
  | { kind: 'sequence'; items: DicomJsonDataset[]; element: DicomJsonElement; decode: TextDecodeFn };

/** Builds DICOM JSON, identity and layout from the tokens of one instance. */
class ScanSink implements DicomTokenSink {
  readonly root: DicomJsonDataset = {};
  readonly bulk: Record<string, ByteRange> = {};
  pixelData: PixelDataLayout | null = null;
  headerComplete = false;
  identity: InstanceIdentity | undefined;
  readonly #levels: Level[];
  readonly #meta: FileMeta;
  /** Offsets refer to the bytes as received (false for deflated data sets). */
  readonly #offsets: boolean;
  #topLevelFragments = false;
  /** Encapsulated data other than the top-level Pixel Data, while its items stream by. */
  #nested: { path: string; valueOffset: number } | undefined;
  readonly fragments: Fragment[] = [];
  basicOffsetTable: number[] = [];
  extendedOffsetTable: Uint8Array | undefined;
  #markerBytes: number[] | undefined;

  readonly #threshold: number;

  constructor(meta: FileMeta, offsets: boolean, bulkDataThreshold: number) {
    this.#meta = meta;
    this.#offsets = offsets;
    this.#threshold = bulkDataThreshold;
    this.#levels = [{ kind: 'dataset', dataset: this.root, decode: DEFAULT_TEXT_DECODER }];
  }

  get #level(): Level {
    return this.#levels[this.#levels.length - 1]!;
  }

  #dataset(): { dataset: DicomJsonDataset; level: Level & { kind: 'dataset' } } {
    const level = this.#level;
    if (level.kind !== 'dataset') throw new VaultError('INTERNAL', 'element outside a data set');
    return { dataset: level.dataset, level };
  }

  /** Whether an element belongs in the metadata at all. */
  #keep(el: ElementToken): boolean {
    if ((el.tag & 0xffff) === 0) return false; // group lengths: meaningless once re-encoded
    if (el.tag === 0xfffcfffc) return false; // data set trailing padding
    if (el.depth === 0 && el.tag >>> 16 === 0x0002) return false; // File Meta has no place in the data set
    return true;
  }

  element(el: ElementToken, value: Uint8Array): void {
    if (el.depth === 0) {
      if (el.tag === EXTENDED_OFFSET_TABLE) this.extendedOffsetTable = value.slice();
    }
    if (!this.#keep(el)) return;
    const level = this.#level;
    if (level.kind !== 'dataset') throw new VaultError('INTERNAL', 'element outside a data set');
    const dataset = level.dataset;
    if (BINARY_VRS.has(el.vr) && value.length > this.#threshold) {
      // Buffered only because the scanner needs it (the Extended Offset Table); still bulk data.
      dataset[tagHex(el.tag)] = { vr: el.vr, BulkDataURI: `bulk/${el.path}` };
      this.bulk[el.path] = { offset: el.valueOffset, length: el.length };
      return;
    }
    // UN for a tag the dictionary knows: written by a converter that did not know it. Decoded
    // with the dictionary's VR, as pydicom does, so that such instances are still identified.
    const vr = el.vr === 'UN' ? this.#knownVR(el) : el.vr;
    const json = decodeElementValue(vr, value, el.littleEndian, level.decode);
    dataset[tagHex(el.tag)] = json;
    if (el.tag === SPECIFIC_CHARACTER_SET) {
      level.decode = textDecoderFor((json.Value ?? []).map((v) => (typeof v === 'string' ? v : '')));
    }
    if (el.depth === 0 && this.identity === undefined && el.tag > 0x0020000e) this.tryIdentify(false);
  }

  #knownVR(el: ElementToken): string {
    const vr = implicitVR(el.tag, { pixelRepresentation: firstNumber(this.root['00280103']), bitsAllocated: firstNumber(this.root['00280100']) }, el.length);
    return vr === 'SQ' ? 'UN' : vr;
  }

  bulkStart(el: ElementToken): void {
    if (el.depth === 0 && isPixelDataTag(el.tag)) {
      if (this.#offsets) {
        this.pixelData = { valueOffset: el.valueOffset, valueLength: el.length, encapsulated: false, vr: el.vr };
        this.bulk[tagHex(el.tag)] = { offset: el.valueOffset, length: el.length };
      }
      this.#completeHeader();
      return;
    }
    if (!this.#keep(el)) return;
    const { dataset } = this.#dataset();
    dataset[tagHex(el.tag)] = { vr: el.vr, BulkDataURI: `bulk/${el.path}` };
    this.bulk[el.path] = { offset: el.valueOffset, length: el.length };
  }

  data(bytes: Uint8Array): void {
    const marker = this.#markerBytes;
    if (marker === undefined) return;
    for (let i = 0; i < bytes.length && marker.length < 2; i++) marker.push(bytes[i]!);
    if (marker.length === 2) this.#endMarker();
  }

  #endMarker(): void {
    const marker = this.#markerBytes;
    const last = this.fragments[this.fragments.length - 1];
    if (marker !== undefined && last !== undefined) last.marker = marker.length === 2 ? (marker[0]! << 8) | marker[1]! : -1;
    this.#markerBytes = undefined;
  }

  bulkEnd(): void {}

  sequenceStart(el: ElementToken): void {
    const { dataset, level } = this.#dataset();
    const element: DicomJsonElement = { vr: 'SQ', Value: [] };
    if (this.#keep(el)) dataset[tagHex(el.tag)] = element;
    this.#levels.push({ kind: 'sequence', items: element.Value as DicomJsonDataset[], element, decode: level.decode });
  }

  sequenceEnd(): void {
    const level = this.#levels.pop();
    if (level?.kind === 'sequence' && level.items.length === 0) delete level.element.Value;
  }

  itemStart(): void {
    const level = this.#level;
    if (level.kind !== 'sequence') throw new VaultError('INTERNAL', 'item outside a sequence');
    const dataset: DicomJsonDataset = {};
    level.items.push(dataset);
    this.#levels.push({ kind: 'dataset', dataset, decode: level.decode });
  }

  itemEnd(): void {
    this.#levels.pop();
  }

  fragmentsStart(el: ElementToken): void {
    if (el.depth === 0 && el.tag === PIXEL_DATA) {
      if (this.#offsets) this.pixelData = { valueOffset: el.valueOffset, valueLength: -1, encapsulated: true, vr: el.vr };
      this.#topLevelFragments = true;
      this.#completeHeader();
      return;
    }
    // Encapsulated data elsewhere (an icon's Pixel Data): one bulk value, items and all.
    if (!this.#keep(el)) return;
    const { dataset } = this.#dataset();
    const element: DicomJsonElement = this.#offsets ? { vr: el.vr, BulkDataURI: `bulk/${el.path}` } : { vr: el.vr };
    dataset[tagHex(el.tag)] = element;
    this.#nested = { path: el.path, valueOffset: el.valueOffset };
  }

  offsetTable(_item: ItemToken, value: Uint8Array): void {
    if (!this.#topLevelFragments) return;
    const dv = new DataView(value.buffer, value.byteOffset, value.byteLength);
    const offsets: number[] = [];
    for (let i = 0; i + 4 <= value.length; i += 4) offsets.push(dv.getUint32(i, true));
    this.basicOffsetTable = offsets;
  }

  fragmentStart(item: ItemToken): void {
    if (!this.#topLevelFragments) return;
    this.fragments.push({ itemOffset: item.offset, range: { offset: item.valueOffset, length: item.length }, marker: -1 });
    this.#markerBytes = [];
  }

  fragmentEnd(): void {
    if (this.#markerBytes !== undefined) this.#endMarker();
  }

  fragmentsEnd(endOffset: number): void {
    if (this.#topLevelFragments) {
      this.#topLevelFragments = false;
      return;
    }
    const nested = this.#nested;
    if (nested !== undefined && this.#offsets) this.bulk[nested.path] = { offset: nested.valueOffset, length: endOffset - nested.valueOffset };
    this.#nested = undefined;
  }

  #completeHeader(): void {
    if (this.headerComplete) return;
    this.headerComplete = true;
    this.tryIdentify(true);
  }

  /** Called at the end of the data set when it has no Pixel Data. */
  finishHeader(): void {
    this.#completeHeader();
  }

  /**
   * Settles the identity once the top-level data set has passed Series Instance UID (tags come
   * in ascending order) or the header is complete. `final`: missing attributes are an error.
   */
  tryIdentify(final: boolean): void {
    if (this.identity !== undefined) return;
    const root = this.root;
    const found: Array<[string, string | undefined]> = [
      ['StudyInstanceUID', firstString(root['0020000D'])],
      ['SeriesInstanceUID', firstString(root['0020000E'])],
      ['SOPInstanceUID', firstString(root['00080018']) ?? this.#meta.mediaStorageSOPInstanceUID],
      ['SOPClassUID', firstString(root['00080016']) ?? this.#meta.mediaStorageSOPClassUID],
    ];
    const missing = found.find(([, v]) => v === undefined || v === '');
    if (missing !== undefined) {
      if (final) throw malformed(`missing ${missing[0]}`);
      return;
    }
    const [study, series, sop, sopClass] = found.map(([what, v]) => assertUid(v!, what)) as [string, string, string, string];
    this.identity = {
      studyInstanceUID: study,
      seriesInstanceUID: series,
      sopInstanceUID: sop,
      sopClassUID: sopClass,
      transferSyntaxUID: this.#meta.transferSyntaxUID,
    };
  }

  /** Frame byte ranges (see InstanceLayout.frames). */
  frames(transferSyntaxUID: string): ByteRange[][] {
    const pixel = this.pixelData;
    if (pixel === null) return [];
    const root = this.root;
    const framesElement = root['00280008'];
    // NumberOfFrames absent → 1; present but not a number (e.g. '1A') → frames are unknown.
    const frameCount = framesElement?.Value === undefined ? 1 : firstNumber(framesElement);
    if (frameCount === undefined || !Number.isInteger(frameCount) || frameCount < 1) return [];
    return pixel.encapsulated ? this.#encapsulatedFrames(frameCount, transferSyntaxUID) : this.#nativeFrames(pixel, frameCount);
  }

  #nativeFrames(pixel: PixelDataLayout, frameCount: number): ByteRange[][] {
    const root = this.root;
    const rows = firstNumber(root['00280010']);
    const columns = firstNumber(root['00280011']);
    const samples = firstNumber(root['00280002']) ?? 1;
    const bitsAllocated =
      pixel.vr === 'OD' ? 64 : pixel.vr === 'OF' ? 32 : firstNumber(root['00280100']);
    if (rows === undefined || columns === undefined || bitsAllocated === undefined) return [];
    const photometric = firstString(root['00280004']);
    // YBR_*_422 native data holds 2 samples per pixel on average (Cb and Cr are shared).
    const effectiveSamples = photometric === 'YBR_FULL_422' || photometric === 'YBR_PARTIAL_422' ? 2 : samples;
    const frameBits = rows * columns * effectiveSamples * bitsAllocated;
    // BitsAllocated 1 packs frames back to back without padding: a frame that is not a whole
    // number of bytes starts mid-byte, which a byte range cannot express. Those get no frames.
    if (frameBits % 8 !== 0) return [];
    const frameBytes = frameBits / 8;
    if (frameBytes === 0 || frameBytes * frameCount > pixel.valueLength) return [];
    const frames: ByteRange[][] = [];
    for (let i = 0; i < frameCount; i++) frames.push([{ offset: pixel.valueOffset + i * frameBytes, length: frameBytes }]);
    return frames;
  }

  #encapsulatedFrames(frameCount: number, transferSyntaxUID: string): ByteRange[][] {
    const fragments = this.fragments;
    if (fragments.length === 0) return [];
    if (frameCount === 1) return [fragments.map((f) => f.range)];
    const first = fragments[0]!.itemOffset;
    // Frames start at these offsets, relative to the first fragment's item tag.
    let starts: number[] | undefined;
    const eot = this.extendedOffsetTable;
    if (eot !== undefined && eot.length === frameCount * 8) {
      const dv = new DataView(eot.buffer, eot.byteOffset, eot.byteLength);
      starts = [];
      for (let i = 0; i < frameCount; i++) starts.push(Number(dv.getBigUint64(i * 8, true)));
    } else if (this.basicOffsetTable.length === frameCount) {
      starts = this.basicOffsetTable;
    }
    if (starts !== undefined) return this.#framesFromStarts(starts.map((s) => first + s));
    if (fragments.length === frameCount) return fragments.map((f) => [f.range]);
    // No offset table and more fragments than frames: JPEG-family frames start with a marker.
    const codestream = describeTransferSyntax(transferSyntaxUID).codestream;
    if (codestream !== undefined) {
      const marker = codestream === 'jpeg' ? 0xffd8 : 0xff4f;
      const frameStarts = fragments.filter((f) => f.marker === marker).map((f) => f.itemOffset);
      if (frameStarts.length === frameCount && frameStarts[0] === first) return this.#framesFromStarts(frameStarts);
    }
    return [];
  }

  /** Groups fragments into frames given each frame's first item offset; [] if they disagree. */
  #framesFromStarts(starts: number[]): ByteRange[][] {
    const byOffset = new Map(this.fragments.map((f, i) => [f.itemOffset, i]));
    const frames: ByteRange[][] = [];
    for (let i = 0; i < starts.length; i++) {
      const from = byOffset.get(starts[i]!);
      const to = i + 1 < starts.length ? byOffset.get(starts[i + 1]!) : this.fragments.length;
      if (from === undefined || to === undefined || to <= from) return [];
      frames.push(this.fragments.slice(from, to).map((f) => f.range));
    }
    return frames;
  }
}

// ---------------------------------------------------------------------------------------------
// The scanner

const PHASE_META = 0;
const PHASE_DATASET = 1;
const PHASE_DEFLATED = 2;
const PHASE_ENDED = 3;

/** First compressed size at which a deflated header is inflated: 16 KiB. */
const DEFLATE_FIRST_ATTEMPT = 16 * 1024;

export class DicomScanner {
  readonly #maxHeaderBytes: number;
  readonly #bulkDataThreshold: number;
  #bytesSeen = 0;
  #phase = PHASE_META;
  #metaBuf: GrowableBuffer | undefined;
  #meta: FileMeta | undefined;
  #tokenizer: DicomTokenizer | undefined;
  #sink: ScanSink | undefined;
  #failure: VaultError | undefined;
  // Deflated data sets: the compressed bytes are kept until the header has been inflated.
  // zlib has no synchronous incremental inflate (processChunkSync closes the stream after one
  // call), and push() is synchronous, so the compressed prefix is re-inflated when it has
  // doubled: linear work overall, and only the new output is fed to the tokenizer.
  #compressed: GrowableBuffer | undefined;
  #inflatedPrefix = 0;
  #inflatedBytes = 0;
  #nextInflate = DEFLATE_FIRST_ATTEMPT;

  constructor(options: DicomScannerOptions = {}) {
    this.#maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    this.#bulkDataThreshold = options.bulkDataThreshold ?? DEFAULT_BULK_DATA_THRESHOLD;
  }

  /** Bytes seen so far. */
  get bytesSeen(): number {
    return this.#bytesSeen;
  }

  /**
   * True once the identifying attributes are known: when the top-level data set has passed
   * Series Instance UID (0020,000E), or at top-level Pixel Data, or at the end of the data set.
   * That is as soon as ingest can pick the study key, and never later than the end of the header.
   */
  get identified(): boolean {
    return this.#sink?.identity !== undefined;
  }

  /** Study/Series/SOP Instance UIDs, SOP Class UID and transfer syntax; once `identified`. */
  identity(): InstanceIdentity {
    const identity = this.#sink?.identity;
    if (identity === undefined) throw new VaultError('INTERNAL', 'DicomScanner.identity() called before the instance was identified');
    return { ...identity };
  }

  /** Feeds the next bytes; throws NOT_DICOM, DICOM_MALFORMED, INVALID_UID or TOO_LARGE as soon as they are known bad. */
  push(chunk: Uint8Array): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#phase === PHASE_ENDED) throw new VaultError('INTERNAL', 'DicomScanner.push() after end()');
    this.#bytesSeen += chunk.length;
    this.#guard(() => this.#push(chunk, false));
  }

  /** At the end of the stream: checks completeness and returns what was learnt. */
  end(): ScannedInstance {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#phase === PHASE_ENDED) throw new VaultError('INTERNAL', 'DicomScanner.end() called twice');
    return this.#guard(() => this.#end());
  }

  #guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      this.#failure = isVaultError(err)
        ? err
        : new VaultError('DICOM_MALFORMED', `unexpected failure while scanning at offset ${this.#bytesSeen}`, { cause: err });
      throw this.#failure;
    }
  }

  #push(chunk: Uint8Array, final: boolean): void {
    switch (this.#phase) {
      case PHASE_META: {
        let buf = chunk;
        if (this.#metaBuf !== undefined || final) {
          this.#metaBuf ??= new GrowableBuffer();
          this.#metaBuf.append(chunk);
          buf = this.#metaBuf.view();
        }
        const meta = parseFileMeta(buf, final);
        if (meta === undefined) {
          if (this.#metaBuf === undefined) {
            this.#metaBuf = new GrowableBuffer();
            this.#metaBuf.append(chunk);
          }
          if (this.#metaBuf.length > this.#maxHeaderBytes) {
            throw new VaultError('TOO_LARGE', `File Meta Information exceeds the limit of ${this.#maxHeaderBytes} bytes`);
          }
          return;
        }
        this.#metaBuf = undefined;
        this.#startDataset(meta);
        const rest = buf.subarray(meta.datasetOffset);
        if (rest.length > 0) this.#push(rest, false);
        return;
      }
      case PHASE_DATASET:
        this.#tokenizer!.push(chunk);
        return;
      case PHASE_DEFLATED: {
        if (this.#sink!.headerComplete) return; // the rest is not needed (and its offsets mean nothing)
        const compressed = this.#compressed!;
        compressed.append(chunk);
        if (compressed.length > this.#maxHeaderBytes) {
          throw new VaultError('TOO_LARGE', `deflated DICOM header exceeds the limit of ${this.#maxHeaderBytes} bytes`);
        }
        if (compressed.length >= this.#nextInflate) this.#inflate();
        return;
      }
      default:
        return;
    }
  }

  #startDataset(meta: FileMeta): void {
    this.#meta = meta;
    const facts = describeTransferSyntax(meta.transferSyntaxUID);
    this.#sink = new ScanSink(meta, !facts.deflated, facts.deflated ? Number.POSITIVE_INFINITY : this.#bulkDataThreshold);
    this.#tokenizer = new DicomTokenizer({
      sink: this.#sink,
      explicitVR: facts.explicitVR,
      littleEndian: facts.littleEndian,
      startOffset: facts.deflated ? 0 : meta.datasetOffset,
      // Offsets into inflated bytes are useless to readers: keep every value inline instead.
      bulkDataThreshold: facts.deflated ? Number.POSITIVE_INFINITY : this.#bulkDataThreshold,
      maxBufferedBytes: this.#maxHeaderBytes,
      stopAtPixelData: facts.deflated,
    });
    if (facts.deflated) {
      this.#phase = PHASE_DEFLATED;
      this.#compressed = new GrowableBuffer();
    } else {
      this.#phase = PHASE_DATASET;
    }
  }

  /**
   * Inflates the compressed prefix and feeds the new output. When the output of the whole
   * prefix would exceed the inflated-size limit (a highly compressible image right after the
   * header), a shorter prefix is tried: the header is usually found in it.
   */
  #inflate(): void {
    const compressed = this.#compressed!.view();
    const limit = 2 * this.#maxHeaderBytes;
    let length = compressed.length;
    let out: Buffer;
    for (;;) {
      try {
        out = zlib.inflateRawSync(compressed.subarray(0, length), { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: limit });
        break;
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' && length - this.#inflatedPrefix > 1) {
          length = this.#inflatedPrefix + Math.floor((length - this.#inflatedPrefix) / 2);
          continue;
        }
        throw inflateError(err, limit);
      }
    }
    this.#inflatedPrefix = length;
    this.#nextInflate = Math.max(2 * length, length + DEFLATE_FIRST_ATTEMPT);
    if (out.length > this.#inflatedBytes) {
      const fresh = out.subarray(this.#inflatedBytes);
      this.#inflatedBytes = out.length;
      this.#tokenizer!.push(fresh);
    }
  }

  #end(): ScannedInstance {
    if (this.#phase === PHASE_META) {
      const pending = this.#metaBuf?.view() ?? new Uint8Array(0);
      this.#metaBuf = undefined;
      this.#push(pending, true);
      if (this.#phase === PHASE_META) throw new VaultError('NOT_DICOM', 'no DICOM data set');
    }
    const sink = this.#sink!;
    const tokenizer = this.#tokenizer!;
    if (this.#phase === PHASE_DEFLATED) {
      if (!sink.headerComplete) {
        const compressed = this.#compressed!.view();
        while (!sink.headerComplete && this.#inflatedPrefix < compressed.length) this.#inflate();
        if (!tokenizer.halted) {
          // The whole data set was inflated with sync flushes; a full inflate also checks that
          // the deflate stream is complete.
          try {
            zlib.inflateRawSync(compressed, { maxOutputLength: 2 * this.#maxHeaderBytes });
          } catch (err) {
            throw inflateError(err, 2 * this.#maxHeaderBytes);
          }
          tokenizer.end();
        }
      }
      this.#compressed = undefined;
    } else {
      tokenizer.end();
    }
    sink.finishHeader();
    this.#phase = PHASE_ENDED;
    const meta = this.#meta!;
    const identity = sink.identity!;
    const layout: InstanceLayout = {
      transferSyntaxUID: meta.transferSyntaxUID,
      datasetOffset: meta.datasetOffset,
      pixelData: sink.pixelData,
      frames: sink.frames(meta.transferSyntaxUID),
      bulk: sink.bulk,
    };
    return { ...identity, metadata: sink.root, layout, size: this.#bytesSeen };
  }
}

function inflateError(err: unknown, limit: number): VaultError {
  const code = (err as { code?: string }).code;
  if (code === 'Z_BUF_ERROR') return truncated('deflated data set ends before its deflate stream does');
  if (code === 'ERR_BUFFER_TOO_LARGE') return new VaultError('TOO_LARGE', `inflated DICOM header exceeds ${limit} bytes`, { cause: err });
  return malformed(`deflated data set is corrupt: ${(err as Error).message}`);
}

/** Scans a whole instance from an async iterable of its bytes (tests and tools). */
export async function scanInstance(source: AsyncIterable<Uint8Array>, options?: DicomScannerOptions): Promise<ScannedInstance> {
  const scanner = new DicomScanner(options);
  for await (const chunk of source) scanner.push(chunk);
  return scanner.end();
}
