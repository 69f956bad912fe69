// Streaming transcoding of a stored Part 10 instance to a native transfer syntax: Explicit VR
// Little Endian (the default of WADO-RS), Implicit VR Little Endian or Deflated Explicit VR Little
// Endian. Native sources (Implicit VR LE, Explicit VR BE, Deflated) are re-encoded; encapsulated
// (compressed) sources have their frames decoded one by one by the caller's decoder (the codecs'
// worker pool) and written as native Pixel Data. Only the header and the frames being decoded are
// held; other bulk values stream through (byte-swapped for big endian), a deflated data set is
// inflated as it streams.
//
// Neither dcmjs nor dicom-parser can do this: both read and write whole buffers, and a 4 GiB
// instance must never be held in memory. The structure is walked with the ingest scanner's
// tokenizer, which knows every element's VR and length.
//
// The parts below the walk live beside it: the frame-decoding plan (decode-plan.ts), the byte
// writer and File Meta encoding (byte-writer.ts), the deflate streams (deflate-stream.ts).
import { VaultError } from '../core/errors.ts';
import { parseFileMeta, type FileMeta } from './file-meta.ts';
import { GrowableBuffer } from './growable-buffer.ts';
import { DEFAULT_BULK_DATA_THRESHOLD } from './scanner.ts';
import { DicomTokenizer, type DicomTokenSink, type ElementToken, type ItemToken } from './tokenizer.ts';
import { BITS_ALLOCATED, EXTENDED_OFFSET_TABLE, EXTENDED_OFFSET_TABLE_LENGTHS, LONG_LENGTH_VRS, PIXEL_DATA, swapBytes, swapUnit } from './metadata.ts';
import type { ScannedInstance } from './model.ts';
import { ByteWriter, encodeFileMeta } from './byte-writer.ts';
import { decodePlan, type DecodePlan, type FrameDecoder } from './decode-plan.ts';
import { deflate, inflate } from './deflate-stream.ts';
import { canTranscode, conversionRefusal, DEFLATED_EXPLICIT_VR_LE, describeTransferSyntax, EXPLICIT_VR_LE, IMPLICIT_VR_LE } from './transfer-syntax.ts';

export { DECODE_AHEAD_BYTES, type FrameDecoder } from './decode-plan.ts';
export { inflate } from './deflate-stream.ts';

/** Bytes of header output collected before they are yielded as one chunk: 64 KiB. */
const OUTPUT_CHUNK = 64 * 1024;

export interface TranscodeOptions {
  /** One of TRANSCODE_TARGETS (transfer-syntax.ts); default Explicit VR Little Endian. */
  transferSyntaxUID?: string;
  /** Decodes the frames of an encapsulated source; without one such a source is refused. */
  decoder?: FrameDecoder;
  /** Frames being decoded at once, at most; default: as many as fit DECODE_AHEAD_BYTES, 1 to 4. */
  decodeAhead?: number;
}

/**
 * Yields `source` (an instance's original Part 10 bytes) re-encoded as Explicit VR Little
 * Endian: new File Meta (Transfer Syntax UID and group length replaced, the rest kept), every
 * element with its explicit VR, sequences and items with undefined length, big endian values
 * swapped, group lengths in the data set dropped (they would be wrong). Explicit VR LE input is
 * passed through untouched. Throws NOT_ACCEPTABLE for encapsulated (compressed) sources.
 */
export function transcodeToExplicitLE(source: AsyncIterable<Uint8Array>, scanned: ScannedInstance): AsyncIterable<Uint8Array> {
  return transcode(source, scanned);
}

/**
 * Yields `source` (an instance's original Part 10 bytes) re-encoded in `options.transferSyntaxUID`
 * (see transcodeToExplicitLE for what changes). An encapsulated source is decoded frame by frame
 * with `options.decoder`: its Pixel Data becomes native OB/OW of frames x frame size (known from
 * the header before any frame is decoded), Photometric Interpretation and Planar Configuration
 * say what the decoded frames are (YBR_FULL_422 JPEG becomes RGB, planar 0), the Extended Offset
 * Table goes, and Lossy Image Compression (0028,2110) says "01" after a lossy syntax. Its frames
 * are grouped as the scanner grouped them (scanned.layout.frames). Throws NOT_ACCEPTABLE for what
 * cannot be produced (TranscodeOptions, conversionRefusal).
 */
export async function* transcode(source: AsyncIterable<Uint8Array>, scanned: ScannedInstance, options: TranscodeOptions = {}): AsyncIterable<Uint8Array> {
  const from = scanned.transferSyntaxUID;
  const to = options.transferSyntaxUID ?? EXPLICIT_VR_LE;
  if (from === to) {
    yield* source;
    return;
  }
  const facts = describeTransferSyntax(from);
  let plan: DecodePlan | undefined;
  if (facts.encapsulated) {
    // Without encapsulated Pixel Data (an SR in a compressed syntax) there is nothing to decode.
    const frames = scanned.layout.pixelData?.encapsulated === true;
    const refusal = conversionRefusal(from, to, options.decoder !== undefined || !frames);
    if (refusal !== undefined || (frames && options.decoder === undefined)) {
      throw new VaultError('NOT_ACCEPTABLE', `instances in transfer syntax ${from} cannot be sent as ${to}: ${refusal ?? 'no decoder was given'}`);
    }
    if (frames) plan = decodePlan(scanned, options.decoder!, options.decodeAhead);
  } else if (!canTranscode(from, to)) {
    throw new VaultError(
      'NOT_ACCEPTABLE',
      `instances in transfer syntax ${from} cannot be sent as ${to}: ${conversionRefusal(from, to, false) ?? 'not a native encoding'}`,
    );
  }
  const iterator = source[Symbol.asyncIterator]();
  let finished = false;
  try {
    // File Meta: buffered until complete (it is small).
    const head = new GrowableBuffer();
    let meta: FileMeta | undefined;
    while (meta === undefined) {
      const next = await iterator.next();
      if (next.done === true) finished = true;
      else head.append(next.value);
      meta = parseFileMeta(head.view(), finished);
    }
    if (meta.transferSyntaxUID !== from) {
      throw new VaultError('INSTANCE_CORRUPT', `stored instance is in ${meta.transferSyntaxUID}, its record says ${from}`);
    }
    yield encodeFileMeta(head.view().subarray(0, 128), meta, to);
    const rest = head.view().subarray(meta.datasetOffset);
    const remaining = async function* (): AsyncGenerator<Uint8Array> {
      if (rest.length > 0) yield rest;
      while (!finished) {
        const next = await iterator.next();
        if (next.done === true) finished = true;
        else yield next.value;
      }
    };
    // An inflated Deflated Explicit VR LE data set is Explicit VR LE.
    const dataset = facts.deflated ? inflate(remaining()) : remaining();
    const explicitLE = facts.deflated || from === EXPLICIT_VR_LE;
    const body =
      explicitLE && plan === undefined && to !== IMPLICIT_VR_LE
        ? dataset
        : rewrite(dataset, {
            explicitVR: facts.explicitVR,
            littleEndian: facts.littleEndian,
            // Offsets of inflated bytes start at 0; the plan (never deflated) uses the file's.
            startOffset: facts.deflated ? 0 : meta.datasetOffset,
            implicitOutput: to === IMPLICIT_VR_LE,
            ...(plan === undefined ? {} : { plan }),
          });
    yield* to === DEFLATED_EXPLICIT_VR_LE ? deflate(body) : body;
  } finally {
    if (!finished) await iterator.return?.();
  }
}

/** Re-encodes a data set's bytes through the tokenizer and the writer. */
async function* rewrite(
  dataset: AsyncIterable<Uint8Array>,
  options: { explicitVR: boolean; littleEndian: boolean; startOffset: number; implicitOutput: boolean; plan?: DecodePlan },
): AsyncGenerator<Uint8Array> {
  const writer = new NativeWriter(options.implicitOutput, options.plan);
  const tokenizer = new DicomTokenizer({
    sink: writer,
    explicitVR: options.explicitVR,
    littleEndian: options.littleEndian,
    startOffset: options.startOffset,
    bulkDataThreshold: DEFAULT_BULK_DATA_THRESHOLD,
    // The header was bounded when the instance was ingested (with the node's own limit).
    maxBufferedBytes: Number.MAX_SAFE_INTEGER,
  });
  try {
    for await (const chunk of dataset) {
      tokenizer.push(chunk);
      yield* writer.drain(false);
    }
    tokenizer.end();
    yield* writer.drain(true);
  } finally {
    writer.abandon();
  }
}

/** A frame of an encapsulated source: its codestream, then its decoding. */
interface FrameSlot {
  number: number;
  encoded: Uint8Array | undefined;
  decoded: Promise<Uint8Array> | undefined;
  done: boolean;
}

const LOSSY_IMAGE_COMPRESSION = 0x00282110;
const PHOTOMETRIC_INTERPRETATION = 0x00280004;
const PLANAR_CONFIGURATION = 0x00280006;

/**
 * Re-encodes the tokens of a data set as Explicit (or Implicit) VR Little Endian, decoding the
 * frames of encapsulated Pixel Data when given a plan. Its output is bytes and frames being
 * decoded, in order; `drain` yields what is ready.
 */
class NativeWriter implements DicomTokenSink {
  readonly #header = new ByteWriter();
  readonly #out: Array<Uint8Array | FrameSlot> = [];
  readonly #implicit: boolean;
  readonly #plan: DecodePlan | undefined;
  /** Swapping of the value streaming now: unit size (1 = none) and the bytes of a split unit. */
  #unit = 1;
  #carry = new Uint8Array(8);
  #carried = 0;
  #bitsAllocated: number | undefined;
  // Decoding (with a plan): the frame being gathered and the frames in flight.
  #inPixelData = false;
  #lossyWritten = false;
  #frame: { number: number; bytes: Uint8Array; filled: number; fragmentEnd: number } | undefined;
  #nextFrame = 0;
  #inFlight = 0;

  constructor(implicit: boolean, plan: DecodePlan | undefined) {
    this.#implicit = implicit;
    this.#header.implicit = implicit;
    this.#plan = plan;
  }

  /**
   * Output ready to be yielded. Frames are decoded `plan.ahead` at a time: while fewer are in
   * flight and more input may bring more, it returns for more input; otherwise it waits for the
   * first frame in line. `final`: everything, waiting for every frame.
   */
  async *drain(final: boolean): AsyncGenerator<Uint8Array> {
    if (final || this.#header.length >= OUTPUT_CHUNK) this.#flush();
    for (;;) {
      this.#startDecoding();
      const head = this.#out[0];
      if (head === undefined) return;
      if (head instanceof Uint8Array) {
        this.#out.shift();
        yield head;
        continue;
      }
      if (!final && !head.done && this.#inFlight < this.#plan!.ahead) return;
      const pixels = await head.decoded!;
      this.#out.shift();
      yield pixels;
    }
  }

  /** The consumer has stopped (or failed): frames still being decoded are left to finish unseen. */
  abandon(): void {
    this.#out.length = 0;
  }

  #startDecoding(): void {
    const plan = this.#plan;
    if (plan === undefined) return;
    for (const slot of this.#out) {
      if (this.#inFlight >= plan.ahead) return;
      if (slot instanceof Uint8Array || slot.decoded !== undefined) continue;
      const encoded = slot.encoded!;
      slot.encoded = undefined;
      this.#inFlight++;
      slot.decoded = plan.decoder.decode(encoded, slot.number).then(
        (frame) => {
          this.#inFlight--;
          slot.done = true;
          if (frame.pixels.length !== plan.frameLength) {
            throw new VaultError('DECODE_FAILED', `frame ${slot.number} decoded to ${frame.pixels.length} bytes; the header says ${plan.frameLength}`);
          }
          if (frame.photometricInterpretation !== plan.photometricInterpretation || frame.planarConfiguration !== 0) {
            throw new VaultError(
              'DECODE_FAILED',
              `frame ${slot.number} decoded as ${frame.photometricInterpretation} (planar ${frame.planarConfiguration}); the header was written as ${plan.photometricInterpretation}`,
            );
          }
          return frame.pixels;
        },
        (err: unknown) => {
          this.#inFlight--;
          slot.done = true;
          throw err;
        },
      );
      // Awaited in order by drain(); one failing while an earlier one is awaited must not go unhandled.
      slot.decoded.catch(() => {});
    }
  }

  #flush(): void {
    if (this.#header.length > 0) this.#out.push(this.#header.take());
  }

  #emit(bytes: Uint8Array): void {
    this.#flush();
    this.#out.push(bytes);
  }

  #elementHeader(el: ElementToken, vr: string, length: number): void {
    if (this.#implicit || LONG_LENGTH_VRS.has(vr)) this.#header.header(el.tag, vr, length, true);
    else if (length <= 0xffff) this.#header.header(el.tag, vr, length, false);
    // Too long for a 16-bit length (possible in implicit VR): UN is the one VR that fits.
    else this.#header.header(el.tag, 'UN', length, true);
  }

  /** Before each top-level element of a decoded instance: Lossy Image Compression goes in its place. */
  #topLevel(tag: number): void {
    const plan = this.#plan;
    if (plan === undefined || !plan.lossy || this.#lossyWritten || tag <= LOSSY_IMAGE_COMPRESSION) return;
    this.#lossyWritten = true;
    this.#header.header(LOSSY_IMAGE_COMPRESSION, 'CS', 2, false);
    this.#header.bytes(csBytes('01'));
  }

  element(el: ElementToken, value: Uint8Array): void {
    if ((el.tag & 0xffff) === 0) return; // group length: wrong once re-encoded
    let bytes = el.littleEndian ? value : swapBytes(value, swapUnit(el.vr));
    if (el.depth === 0) {
      if (el.tag === BITS_ALLOCATED && value.length >= 2) {
        this.#bitsAllocated = new DataView(value.buffer, value.byteOffset, 2).getUint16(0, el.littleEndian);
      }
      const plan = this.#plan;
      if (plan !== undefined) {
        this.#topLevel(el.tag);
        switch (el.tag) {
          case PHOTOMETRIC_INTERPRETATION:
            bytes = csBytes(plan.photometricInterpretation);
            break;
          case PLANAR_CONFIGURATION:
            bytes = new Uint8Array(2); // US 0: decoded colour is interleaved
            break;
          case LOSSY_IMAGE_COMPRESSION:
            this.#lossyWritten = true;
            if (plan.lossy) bytes = csBytes('01');
            break;
          case EXTENDED_OFFSET_TABLE:
          case EXTENDED_OFFSET_TABLE_LENGTHS:
            return; // offsets of the fragments, which are gone
        }
      }
    }
    this.#elementHeader(el, el.vr, bytes.length);
    this.#header.bytes(bytes);
  }

  bulkStart(el: ElementToken): void {
    if (el.depth === 0) this.#topLevel(el.tag);
    this.#elementHeader(el, el.vr, el.length);
    this.#unit = el.littleEndian ? 1 : swapUnit(el.vr);
    // 32- and 64-bit samples in OW Pixel Data are big endian per sample, not per 16-bit word
    // (as pydicom and GDCM read them; OL/OV did not exist when such files were written).
    const bits = this.#bitsAllocated;
    if (!el.littleEndian && el.depth === 0 && el.tag === PIXEL_DATA && el.vr === 'OW' && bits !== undefined && (bits === 32 || bits === 64)) {
      this.#unit = bits / 8;
    }
    this.#carried = 0;
  }

  data(bytes: Uint8Array): void {
    const frame = this.#frame;
    if (frame !== undefined) {
      if (frame.filled + bytes.length > frame.fragmentEnd)
        throw new VaultError('INSTANCE_CORRUPT', `a fragment of frame ${frame.number} is longer than the instance's layout says`);
      frame.bytes.set(bytes, frame.filled);
      frame.filled += bytes.length;
      return;
    }
    const unit = this.#unit;
    if (unit === 1) {
      this.#emit(bytes);
      return;
    }
    // Swap whole units; a unit split across chunks waits in #carry for the rest.
    let input = bytes;
    if (this.#carried > 0) {
      const need = unit - this.#carried;
      const take = Math.min(need, input.length);
      this.#carry.set(input.subarray(0, take), this.#carried);
      this.#carried += take;
      input = input.subarray(take);
      if (this.#carried < unit) return;
      this.#emit(swapBytes(this.#carry.subarray(0, unit), unit));
      this.#carried = 0;
    }
    const whole = input.length - (input.length % unit);
    if (whole > 0) this.#emit(swapBytes(input.subarray(0, whole), unit));
    const tail = input.subarray(whole);
    this.#carry.set(tail, 0);
    this.#carried = tail.length;
  }

  bulkEnd(): void {
    // An odd-sized tail (a broken length) is kept as it is.
    if (this.#carried > 0) this.#emit(this.#carry.slice(0, this.#carried));
    this.#carried = 0;
    this.#unit = 1;
  }

  sequenceStart(el: ElementToken): void {
    if (el.depth === 0) this.#topLevel(el.tag);
    this.#header.header(el.tag, 'SQ', -1, true);
  }

  sequenceEnd(): void {
    this.#header.tag(0xfffee0dd);
    this.#header.uint32(0);
  }

  itemStart(): void {
    this.#header.tag(0xfffee000);
    this.#header.uint32(0xffffffff);
  }

  itemEnd(): void {
    this.#header.tag(0xfffee00d);
    this.#header.uint32(0);
  }

  fragmentsStart(el: ElementToken): void {
    if (el.depth === 0) this.#topLevel(el.tag);
    const plan = this.#plan;
    if (plan !== undefined && el.depth === 0 && el.tag === PIXEL_DATA) {
      // Native Pixel Data of a length known now, before any frame is decoded.
      this.#inPixelData = true;
      this.#header.header(el.tag, plan.vr, plan.pixelDataLength, true);
      return;
    }
    this.#header.header(el.tag, el.vr === 'OW' ? 'OW' : 'OB', -1, true);
    this.#unit = 1;
  }

  offsetTable(item: ItemToken, value: Uint8Array): void {
    if (this.#inPixelData) return;
    this.#header.tag(0xfffee000);
    this.#header.uint32(item.length);
    this.#header.bytes(value);
  }

  fragmentStart(item: ItemToken): void {
    if (!this.#inPixelData) {
      this.#header.tag(0xfffee000);
      this.#header.uint32(item.length);
      return;
    }
    const plan = this.#plan!;
    const place = plan.fragments.get(item.valueOffset);
    if (place === undefined || place.length !== item.length) {
      throw new VaultError(
        'INSTANCE_CORRUPT',
        `a Pixel Data fragment at offset ${item.valueOffset} (${item.length} bytes) is not one the instance's layout names`,
      );
    }
    if (place.at === 0) {
      if (place.frame !== this.#nextFrame || this.#frame !== undefined) {
        throw new VaultError('INSTANCE_CORRUPT', `frame ${place.frame + 1} starts before frame ${this.#nextFrame + 1} is complete`);
      }
      this.#frame = { number: place.frame + 1, bytes: new Uint8Array(plan.encodedLength[place.frame]!), filled: 0, fragmentEnd: 0 };
      this.#nextFrame++;
    }
    const frame = this.#frame;
    if (frame === undefined || frame.number !== place.frame + 1 || frame.filled !== place.at) {
      throw new VaultError('INSTANCE_CORRUPT', `a fragment of frame ${place.frame + 1} is out of order`);
    }
    frame.fragmentEnd = place.at + place.length;
  }

  fragmentEnd(): void {
    const frame = this.#frame;
    if (frame === undefined || frame.filled < frame.bytes.length) return;
    this.#frame = undefined;
    this.#flush();
    this.#out.push({ number: frame.number, encoded: frame.bytes, decoded: undefined, done: false });
  }

  fragmentsEnd(): void {
    if (!this.#inPixelData) {
      this.sequenceEnd();
      return;
    }
    const plan = this.#plan!;
    this.#inPixelData = false;
    if (this.#frame !== undefined || this.#nextFrame !== plan.frames) {
      throw new VaultError('INSTANCE_CORRUPT', `the Pixel Data ends after ${this.#nextFrame} of ${plan.frames} frames`);
    }
    if (plan.pixelDataLength > plan.frames * plan.frameLength) this.#emit(new Uint8Array(1)); // the even-length pad
  }
}

/** A CS value, padded with a space to even length. */
function csBytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text.length % 2 === 0 ? text : `${text} `, 'latin1'));
}
