// Streaming transcoding of a stored Part 10 instance to Explicit VR Little Endian, the default
// of WADO-RS. Native encodings only (Implicit VR LE, Explicit VR BE, Deflated): nothing is
// decompressed. Only the header is buffered; Pixel Data and other bulk values stream through
// (byte-swapped for big endian), a deflated data set is inflated as it streams.
//
// Neither dcmjs nor dicom-parser can do this: both read and write whole buffers, and a 4 GiB
// instance must never be held in memory. The structure is walked with the ingest scanner's
// tokenizer, which knows every element's VR and length.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { VaultError, isVaultError } from '../core/errors.ts';
import { parseFileMeta, type FileMeta } from './file-meta.ts';
import { GrowableBuffer } from './growable-buffer.ts';
import { DEFAULT_BULK_DATA_THRESHOLD } from './scanner.ts';
import { DicomTokenizer, type DicomTokenSink, type ElementToken, type ItemToken } from './tokenizer.ts';
import { BITS_ALLOCATED, LONG_LENGTH_VRS, PIXEL_DATA, swapBytes, swapUnit } from './metadata.ts';
import type { ScannedInstance } from './model.ts';
import { canTranscode, describeTransferSyntax, EXPLICIT_VR_LE } from './transfer-syntax.ts';

/** Bytes of header output collected before they are yielded as one chunk: 64 KiB. */
const OUTPUT_CHUNK = 64 * 1024;

/**
 * Yields `source` (an instance's original Part 10 bytes) re-encoded as Explicit VR Little
 * Endian: new File Meta (Transfer Syntax UID and group length replaced, the rest kept), every
 * element with its explicit VR, sequences and items with undefined length, big endian values
 * swapped, group lengths in the data set dropped (they would be wrong). Explicit VR LE input is
 * passed through untouched. Throws NOT_ACCEPTABLE for encapsulated (compressed) sources.
 */
export async function* transcodeToExplicitLE(source: AsyncIterable<Uint8Array>, scanned: ScannedInstance): AsyncIterable<Uint8Array> {
  const from = scanned.transferSyntaxUID;
  if (from === EXPLICIT_VR_LE) {
    yield* source;
    return;
  }
  if (!canTranscode(from, EXPLICIT_VR_LE)) {
    throw new VaultError('NOT_ACCEPTABLE', `instances in transfer syntax ${from} cannot be sent as Explicit VR Little Endian (no decompression)`);
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
    yield encodeFileMeta(head.view().subarray(0, 128), meta);
    const rest = head.view().subarray(meta.datasetOffset);
    const remaining = async function* (): AsyncGenerator<Uint8Array> {
      if (rest.length > 0) yield rest;
      while (!finished) {
        const next = await iterator.next();
        if (next.done === true) finished = true;
        else yield next.value;
      }
    };
    if (describeTransferSyntax(from).deflated) {
      // An inflated Deflated Explicit VR LE data set is already Explicit VR LE.
      yield* inflate(remaining());
      return;
    }
    const facts = describeTransferSyntax(from);
    const writer = new ExplicitLEWriter();
    const tokenizer = new DicomTokenizer({
      sink: writer,
      explicitVR: facts.explicitVR,
      littleEndian: facts.littleEndian,
      startOffset: meta.datasetOffset,
      bulkDataThreshold: DEFAULT_BULK_DATA_THRESHOLD,
      // The header was bounded when the instance was ingested (with the node's own limit).
      maxBufferedBytes: Number.MAX_SAFE_INTEGER,
    });
    for await (const chunk of remaining()) {
      tokenizer.push(chunk);
      yield* writer.drain();
    }
    tokenizer.end();
    yield* writer.drain(true);
  } finally {
    if (!finished) await iterator.return?.();
  }
}

/** Preamble, 'DICM' and the File Meta with Explicit VR LE as transfer syntax. */
function encodeFileMeta(preamble: Uint8Array, meta: FileMeta): Uint8Array {
  const out = new ByteWriter();
  const body = new ByteWriter();
  for (const element of meta.elements) {
    if (element.tag === 0x00020000) continue;
    const value = element.tag === 0x00020010 ? uidBytes(EXPLICIT_VR_LE) : element.value;
    body.header(element.tag, element.vr, value.length, LONG_LENGTH_VRS.has(element.vr));
    body.bytes(value);
  }
  const bodyBytes = body.take();
  out.bytes(preamble);
  out.bytes(new Uint8Array([0x44, 0x49, 0x43, 0x4d]));
  out.header(0x00020000, 'UL', 4, false);
  out.uint32(bodyBytes.length);
  out.bytes(bodyBytes);
  return out.take();
}

function uidBytes(uid: string): Uint8Array {
  const bytes = new Uint8Array(uid.length + (uid.length % 2));
  for (let i = 0; i < uid.length; i++) bytes[i] = uid.charCodeAt(i);
  return bytes; // padded with a NUL to even length
}

async function* inflate(compressed: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const inflater = zlib.createInflateRaw();
  const feeding = pipeline(Readable.from(compressed), inflater);
  // Errors reach the consumer through the iteration below; this only avoids an unhandled rejection.
  feeding.catch(() => {});
  try {
    for await (const chunk of inflater) yield chunk as Buffer;
    await feeding;
  } catch (err) {
    if (isVaultError(err)) throw err;
    const code = (err as { code?: string }).code;
    if (code === 'Z_BUF_ERROR') throw new VaultError('DICOM_TRUNCATED', 'deflated data set ends before its deflate stream does', { cause: err });
    throw new VaultError('DICOM_MALFORMED', 'deflated data set is corrupt', { cause: err });
  } finally {
    inflater.destroy();
  }
}

/** Little-endian byte output, grown as needed. */
class ByteWriter {
  #buf = new Uint8Array(1024);
  #view = new DataView(this.#buf.buffer);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  #ensure(n: number): void {
    if (this.#length + n <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#length + n));
    grown.set(this.#buf.subarray(0, this.#length));
    this.#buf = grown;
    this.#view = new DataView(grown.buffer);
  }

  uint16(v: number): void {
    this.#ensure(2);
    this.#view.setUint16(this.#length, v, true);
    this.#length += 2;
  }

  uint32(v: number): void {
    this.#ensure(4);
    this.#view.setUint32(this.#length, v, true);
    this.#length += 4;
  }

  bytes(b: Uint8Array): void {
    this.#ensure(b.length);
    this.#buf.set(b, this.#length);
    this.#length += b.length;
  }

  tag(tag: number): void {
    this.uint16(tag >>> 16);
    this.uint16(tag & 0xffff);
  }

  /** An explicit VR LE element header; `length` -1 = undefined. */
  header(tag: number, vr: string, length: number, longForm: boolean): void {
    this.tag(tag);
    this.uint16(vr.charCodeAt(0) | (vr.charCodeAt(1) << 8));
    if (longForm) {
      this.uint16(0);
      this.uint32(length < 0 ? 0xffffffff : length);
    } else {
      this.uint16(length);
    }
  }

  take(): Uint8Array {
    const out = this.#buf.slice(0, this.#length);
    this.#length = 0;
    return out;
  }
}

/** Re-encodes the tokens of a data set as Explicit VR Little Endian. */
class ExplicitLEWriter implements DicomTokenSink {
  readonly #header = new ByteWriter();
  readonly #out: Uint8Array[] = [];
  /** Swapping of the value streaming now: unit size (1 = none) and the bytes of a split unit. */
  #unit = 1;
  #carry = new Uint8Array(8);
  #carried = 0;

  /** Output ready to be yielded. */
  *drain(final = false): Generator<Uint8Array> {
    if (final || this.#header.length >= OUTPUT_CHUNK) this.#flush();
    yield* this.#out.splice(0);
  }

  #flush(): void {
    if (this.#header.length > 0) this.#out.push(this.#header.take());
  }

  #emit(bytes: Uint8Array): void {
    this.#flush();
    this.#out.push(bytes);
  }

  #elementHeader(el: ElementToken, vr: string, length: number): void {
    if (LONG_LENGTH_VRS.has(vr)) this.#header.header(el.tag, vr, length, true);
    else if (length <= 0xffff) this.#header.header(el.tag, vr, length, false);
    // Too long for a 16-bit length (possible in implicit VR): UN is the one VR that fits.
    else this.#header.header(el.tag, 'UN', length, true);
  }

  #bitsAllocated: number | undefined;

  element(el: ElementToken, value: Uint8Array): void {
    if ((el.tag & 0xffff) === 0) return; // group length: wrong once re-encoded
    if (el.depth === 0 && el.tag === BITS_ALLOCATED && value.length >= 2) {
      this.#bitsAllocated = new DataView(value.buffer, value.byteOffset, 2).getUint16(0, el.littleEndian);
    }
    this.#elementHeader(el, el.vr, value.length);
    this.#header.bytes(el.littleEndian ? value : swapBytes(value, swapUnit(el.vr)));
  }

  bulkStart(el: ElementToken): void {
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
    this.#header.header(el.tag, el.vr === 'OW' ? 'OW' : 'OB', -1, true);
    this.#unit = 1;
  }

  offsetTable(item: ItemToken, value: Uint8Array): void {
    this.#header.tag(0xfffee000);
    this.#header.uint32(item.length);
    this.#header.bytes(value);
  }

  fragmentStart(item: ItemToken): void {
    this.#header.tag(0xfffee000);
    this.#header.uint32(item.length);
  }

  fragmentEnd(): void {}

  fragmentsEnd(): void {
    this.sequenceEnd();
  }
}
