// Decoding one encapsulated frame on the calling thread: which codec takes which transfer syntax,
// and how each codec's output becomes native Pixel Data. The pool (pool.ts) runs this on worker
// threads; nothing here should run on the server's main thread.
//
// Codecs, as cornerstone's dicom-image-loader uses them (WebAssembly builds, no native addons):
//   JPEG baseline / 8-bit extended  libjpeg-turbo (@cornerstonejs/codec-libjpeg-turbo-8bit)
//   JPEG 12-bit extended            jpeg12.ts (why hand-written: there)
//   JPEG lossless                   @cornerstonejs/jpeg-lossless-decoder-js (JavaScript)
//   JPEG-LS                         CharLS (@cornerstonejs/codec-charls)
//   JPEG 2000                       OpenJPEG (@cornerstonejs/codec-openjpeg)
//   HTJ2K                           OpenJPH (@cornerstonejs/codec-openjph); OpenJPEG for a
//                                   Part 1 codestream under an HTJ2K UID (OpenJPH takes only HT)
//   RLE Lossless                    rle.ts (why hand-written: there)
import { Decoder as JpegLosslessDecoder } from '@cornerstonejs/jpeg-lossless-decoder-js';
import { VaultError, isVaultError } from '../../core/errors.ts';
import { checkFrameInfo, toNative, type DecodedFrame, type FrameInfo } from './frame.ts';
import { decodeJpeg12, readJpegFrameHeader } from './jpeg12.ts';
import { decodeRle } from './rle.ts';
import { dropWasmCodec, takeMessages, wasmCodec, type CodecName, type CodecObject, type WasmModule } from './wasm.ts';

const P = '1.2.840.10008.1.2';
export const JPEG_BASELINE = `${P}.4.50`;
export const JPEG_EXTENDED = `${P}.4.51`;
export const JPEG_LOSSLESS = `${P}.4.57`;
export const JPEG_LOSSLESS_SV1 = `${P}.4.70`;
export const JPEG_LS_LOSSLESS = `${P}.4.80`;
export const JPEG_LS_NEAR_LOSSLESS = `${P}.4.81`;
export const JPEG_2000_LOSSLESS = `${P}.4.90`;
export const JPEG_2000 = `${P}.4.91`;
export const HTJ2K_LOSSLESS = `${P}.4.201`;
export const HTJ2K_LOSSLESS_RPCL = `${P}.4.202`;
export const HTJ2K = `${P}.4.203`;
export const RLE_LOSSLESS = `${P}.5`;

type Decode = (encoded: Uint8Array, info: FrameInfo) => Promise<DecodedFrame> | DecodedFrame;

const DECODERS: ReadonlyMap<string, Decode> = new Map<string, Decode>([
  [JPEG_BASELINE, decodeJpegDct],
  [JPEG_EXTENDED, decodeJpegDct],
  [JPEG_LOSSLESS, decodeJpegLossless],
  [JPEG_LOSSLESS_SV1, decodeJpegLossless],
  [JPEG_LS_LOSSLESS, decodeJpegLs],
  [JPEG_LS_NEAR_LOSSLESS, decodeJpegLs],
  [JPEG_2000_LOSSLESS, decodeJ2k],
  [JPEG_2000, decodeJ2k],
  [HTJ2K_LOSSLESS, decodeHtj2k],
  [HTJ2K_LOSSLESS_RPCL, decodeHtj2k],
  [HTJ2K, decodeHtj2k],
  [RLE_LOSSLESS, decodeRle],
]);

/** Native little-endian frames (Implicit / Explicit VR Little Endian): nothing to decode, ready to render. */
export function isNativeLittleEndian(transferSyntaxUID: string): boolean {
  return transferSyntaxUID === P || transferSyntaxUID === `${P}.1`;
}

/** Whether frames of this transfer syntax can be decoded. */
export function canDecode(transferSyntaxUID: string): boolean {
  return DECODERS.has(transferSyntaxUID);
}

/** Decodes one frame on this thread. Rejects with DECODE_FAILED naming what failed. */
export async function decodeInThread(transferSyntaxUID: string, encoded: Uint8Array, info: FrameInfo): Promise<DecodedFrame> {
  const decode = DECODERS.get(transferSyntaxUID);
  if (decode === undefined) throw new VaultError('DECODE_FAILED', `no decoder for transfer syntax ${transferSyntaxUID}`);
  checkFrameInfo(info);
  if (encoded.length === 0) throw new VaultError('DECODE_FAILED', 'the frame is empty');
  try {
    return await decode(encoded, info);
  } catch (err) {
    if (isVaultError(err)) throw err;
    throw new VaultError('DECODE_FAILED', `decoding a ${transferSyntaxUID} frame failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

function fail(codec: string, reason: string): never {
  throw new VaultError('DECODE_FAILED', `${codec}: ${reason}`);
}

/** The codestream's frame header, checked against the instance before any decoding. */
function checkJpegHeader(codec: string, data: Uint8Array, info: FrameInfo): { marker: number; precision: number } {
  if (data[0] !== 0xff || data[1] !== 0xd8) fail(codec, 'no SOI marker: not a JPEG codestream');
  const header = readJpegFrameHeader(data);
  if (header === undefined) fail(codec, 'no frame header before the first scan (truncated or corrupt)');
  // Zero lines: the height comes later in a DNL marker; the codec checks it.
  checkSize(codec, header.samplesPerLine, header.lines === 0 ? info.rows : header.lines, header.components, info);
  return header;
}

function checkSize(codec: string, width: number, height: number, components: number, info: FrameInfo): void {
  if (width !== info.columns || height !== info.rows || components !== info.samplesPerPixel) {
    fail(
      codec,
      `the codestream is ${width}x${height} with ${components} components; the instance says ${info.columns}x${info.rows} with ${info.samplesPerPixel}`,
    );
  }
}

/**
 * Runs `use` on a new object of a WebAssembly codec class and deletes it after. A C++ exception
 * arrives as a number (a pointer): its message comes from the module where the build exports
 * one. A trap (RuntimeError) may leave the module's memory inconsistent: the module is dropped.
 */
async function withCodec<T>(name: CodecName, label: string, className: string, use: (object: CodecObject, module: WasmModule) => T): Promise<T> {
  const module = await wasmCodec(name);
  takeMessages(module);
  const Class = module[className] as new () => CodecObject;
  const object = new Class();
  try {
    return use(object, module);
  } catch (err) {
    if (isVaultError(err)) throw err;
    if (err instanceof Error && err.name === 'RuntimeError') dropWasmCodec(name); // a WebAssembly trap or an Emscripten abort
    const getMessage = module.getExceptionMessage as ((e: number) => string | string[]) | undefined;
    const said = typeof err === 'number' && getMessage !== undefined ? [getMessage(err)].flat().join(' ') : '';
    const printed = takeMessages(module)
      .filter((l) => /error/i.test(l))
      .join('; ');
    const reason = said || printed || (typeof err === 'number' ? 'the codec rejected the codestream' : err instanceof Error ? err.message : String(err));
    throw new VaultError('DECODE_FAILED', `${label}: ${reason}`, { cause: err });
  } finally {
    try {
      object.delete();
    } catch {
      // a trapped module cannot free it; the module is being dropped anyway
    }
  }
}

// --- JPEG (DCT) ---------------------------------------------------------------------------

/**
 * The JPEG colour transform follows the DICOM header, not the JPEG markers: RGB means the
 * components are R, G, B (no transform), YBR_FULL and YBR_FULL_422 mean Y, Cb, Cr. libjpeg
 * infers it from a JFIF or Adobe marker or, without either, from the component ids, guessing
 * YCbCr for ids it does not know: pydicom's SC_jpeg_no_color_transform.dcm (RGB, no marker, ids
 * 0, 1, 2) comes out up to 137 off that way. So a copy of the codestream gets an Adobe marker
 * saying which (transform 0: none, 1: YCbCr), and any JFIF or Adobe marker of its own is renamed
 * so that libjpeg passes over it. GDCM follows the header too.
 */
function withColourTransform(data: Uint8Array, photometric: string): Uint8Array {
  const transform = photometric === 'RGB' ? 0 : photometric === 'YBR_FULL' || photometric === 'YBR_FULL_422' ? 1 : undefined;
  if (transform === undefined) return data;
  const out = new Uint8Array(data.length + 16);
  out.set(data.subarray(0, 2));
  out.set([0xff, 0xee, 0x00, 0x0e, 0x41, 0x64, 0x6f, 0x62, 0x65, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, transform], 2);
  out.set(data.subarray(2), 18);
  // Rename the codestream's own JFIF (APP0) and Adobe (APP14) markers, up to the first scan.
  let pos = 18;
  while (pos + 4 <= out.length && out[pos] === 0xff) {
    const m = out[pos + 1]!;
    if (m === 0xff) {
      pos++;
      continue;
    }
    if (m === 0xda || m === 0xd9) break;
    const length = (out[pos + 2]! << 8) | out[pos + 3]!;
    const id = pos + 4;
    if (m === 0xe0 && out[id] === 0x4a && out[id + 1] === 0x46 && out[id + 2] === 0x49 && out[id + 3] === 0x46) out[id] = 0x58; // JFIF -> XFIF
    if (m === 0xee && out[id] === 0x41 && out[id + 1] === 0x64 && out[id + 2] === 0x6f) out[id] = 0x58; // Adobe -> Xdobe
    pos += 2 + length;
  }
  return out;
}

async function decodeJpegDct(encoded: Uint8Array, info: FrameInfo): Promise<DecodedFrame> {
  const { marker, precision } = checkJpegHeader('JPEG', encoded, info);
  if (marker === 0xc3 || marker === 0xf7) fail('JPEG', `a ${marker === 0xc3 ? 'lossless JPEG' : 'JPEG-LS'} codestream under a DCT transfer syntax`);
  if (precision === 12) return decodeJpeg12(encoded, info);
  if (precision !== 8) fail('JPEG', `sample precision ${precision} in a DCT codestream`);
  const colour = info.samplesPerPixel === 3;
  const stream = colour ? withColourTransform(encoded, info.photometricInterpretation) : encoded;
  return withCodec('libjpegTurbo', 'JPEG (libjpeg-turbo)', 'JPEGDecoder', (decoder) => {
    decoder.getEncodedBuffer(stream.length).set(stream);
    decoder.decode();
    const frame = (decoder as unknown as { getFrameInfo(): { width: number; height: number; componentCount: number } }).getFrameInfo();
    checkSize('JPEG (libjpeg-turbo)', frame.width, frame.height, frame.componentCount, info);
    return {
      pixels: toNative(decoder.getDecodedBuffer(), info),
      // libjpeg hands back RGB for colour, whatever the components were.
      photometricInterpretation: colour ? 'RGB' : info.photometricInterpretation,
      planarConfiguration: 0,
    };
  });
}

// --- JPEG lossless ------------------------------------------------------------------------

/** Whether a JPEG codestream ends with EOI (DICOM may pad a frame with one 0x00 after it). */
function endsWithEoi(data: Uint8Array): boolean {
  let end = data.length;
  if (end > 0 && data[end - 1] === 0x00) end--;
  return end >= 2 && data[end - 2] === 0xff && data[end - 1] === 0xd9;
}

function decodeJpegLossless(encoded: Uint8Array, info: FrameInfo): DecodedFrame {
  if (info.bitsAllocated > 16) fail('JPEG lossless', `${info.bitsAllocated} bits allocated`);
  checkJpegHeader('JPEG lossless', encoded, info);
  // The decoder fills a truncated scan with what it has and does not say so.
  if (!endsWithEoi(encoded)) fail('JPEG lossless', 'no EOI marker at the end: the codestream is truncated');
  const decoder = new JpegLosslessDecoder();
  const samples = decoder.decode(encoded.buffer as ArrayBuffer, encoded.byteOffset, encoded.byteLength, info.bitsAllocated / 8) as Uint8Array | Uint16Array;
  checkSize('JPEG lossless', decoder.xDim, decoder.yDim, decoder.numComp, info);
  // No colour transform in lossless JPEG: the components are what the header says.
  return { pixels: toNative(samples, info), photometricInterpretation: info.photometricInterpretation, planarConfiguration: 0 };
}

// --- JPEG-LS ------------------------------------------------------------------------------

async function decodeJpegLs(encoded: Uint8Array, info: FrameInfo): Promise<DecodedFrame> {
  checkJpegHeader('JPEG-LS', encoded, info);
  // CharLS reads on past the end of a truncated codestream for 15 to 30 s before it gives up
  // (measured on a 64x64 frame cut to 60%); one that ends with EOI it refuses at once.
  if (!endsWithEoi(encoded)) fail('JPEG-LS', 'no EOI marker at the end: the codestream is truncated');
  return withCodec('charls', 'JPEG-LS (CharLS)', 'JpegLSDecoder', (decoder) => {
    decoder.getEncodedBuffer(encoded.length).set(encoded);
    decoder.decode();
    const d = decoder as unknown as {
      getFrameInfo(): { width: number; height: number; bitsPerSample: number; componentCount: number };
      getInterleaveMode(): number;
    };
    const frame = d.getFrameInfo();
    checkSize('JPEG-LS (CharLS)', frame.width, frame.height, frame.componentCount, info);
    const bytes = decoder.getDecodedBuffer();
    const wide = frame.bitsPerSample > 8;
    let samples: Uint8Array | Uint16Array = wide ? new Uint16Array(bytes.slice().buffer) : bytes;
    // Interleave mode "none" decodes one plane after another.
    if (d.getInterleaveMode() === 0 && info.samplesPerPixel > 1) samples = interleave(samples, info.samplesPerPixel);
    return { pixels: toNative(samples, info), photometricInterpretation: info.photometricInterpretation, planarConfiguration: 0 };
  });
}

function interleave<T extends Uint8Array | Uint16Array>(planar: T, components: number): T {
  const plane = planar.length / components;
  const out = new (planar.constructor as new (n: number) => T)(planar.length);
  for (let c = 0; c < components; c++) for (let i = 0, o = c; i < plane; i++, o += components) out[o] = planar[c * plane + i]!;
  return out;
}

// --- JPEG 2000 and HTJ2K ------------------------------------------------------------------

interface J2kFrameInfo {
  width: number;
  height: number;
  bitsPerSample: number;
  componentCount: number;
  isSigned: boolean;
}

/**
 * Checks a J2K codestream's image size against the instance (before a corrupt SIZ can make the
 * codec allocate for a huge image), and its tile-parts against its length: OpenJPH decodes a truncated HTJ2K
 * codestream without a word (the missing code-blocks become zeros). Each tile-part (SOT) says how
 * long it is; one that runs past the end, or fewer tiles than the image has, is truncation.
 * JP2-wrapped data (which some writers put in DICOM) is left to the decoder.
 */
function checkJ2kCodestream(codec: string, data: Uint8Array, info: FrameInfo): void {
  if (data[0] !== 0xff || data[1] !== 0x4f) {
    if (data.length >= 12 && data[4] === 0x6a && data[5] === 0x50) return; // 'jP  ' signature box: JP2
    fail(codec, 'no SOC marker: not a JPEG 2000 codestream');
  }
  const u16 = (at: number): number => (data[at]! << 8) | data[at + 1]!;
  const u32 = (at: number): number => data[at]! * 0x1000000 + ((data[at + 1]! << 16) | (data[at + 2]! << 8) | data[at + 3]!);
  if (data.length < 4 + 38 || u16(2) !== 0xff51) fail(codec, 'no SIZ marker after SOC (truncated or not a codestream)');
  const siz = 6;
  // SIZ: Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz.
  const [xsiz, ysiz, xo, yo, xt, yt, xto, yto] = [0, 4, 8, 12, 16, 20, 24, 28].map((k) => u32(siz + 2 + k)) as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  checkSize(codec, xsiz - xo, ysiz - yo, u16(siz + 34), info);
  if (xt === 0 || yt === 0) fail(codec, 'bad SIZ marker');
  const tiles = Math.ceil((xsiz - xto) / xt) * Math.ceil((ysiz - yto) / yt);
  // Main header markers, from SIZ up to the first SOT.
  let pos = 2;
  while (pos + 4 <= data.length && u16(pos) !== 0xff90) {
    if (data[pos] !== 0xff) fail(codec, `bad marker in the main header at byte ${pos}`);
    pos += 2 + u16(pos + 2);
  }
  const seen = new Set<number>();
  while (pos + 12 <= data.length && u16(pos) === 0xff90) {
    const tile = u16(pos + 4);
    const psot = u32(pos + 6);
    seen.add(tile);
    if (psot === 0) return; // the last tile-part, to EOC
    if (pos + psot > data.length) fail(codec, `tile-part of tile ${tile} declares ${psot} bytes, ${data.length - pos} remain: the codestream is truncated`);
    pos += psot;
  }
  if (seen.size < tiles) fail(codec, `the codestream holds ${seen.size} of ${tiles} tiles: truncated`);
}

/** Samples of an OpenJPEG/OpenJPH output buffer: 8-bit or 16-bit, signed as the codestream says. */
function j2kSamples(bytes: Uint8Array, frame: J2kFrameInfo): Int8Array | Uint8Array | Int16Array | Uint16Array {
  const copy = bytes.slice().buffer;
  if (frame.bitsPerSample <= 8) return frame.isSigned ? new Int8Array(copy) : new Uint8Array(copy);
  return frame.isSigned ? new Int16Array(copy) : new Uint16Array(copy);
}

function j2kFrame(codec: string, frame: J2kFrameInfo, bytes: Uint8Array, info: FrameInfo): DecodedFrame {
  if (frame.width === 0) fail(codec, 'the codec decoded nothing');
  checkSize(codec, frame.width, frame.height, frame.componentCount, info);
  if (frame.bitsPerSample > 16 || frame.bitsPerSample > info.bitsAllocated)
    fail(codec, `${frame.bitsPerSample}-bit samples do not fit ${info.bitsAllocated} bits allocated`);
  let samples: ArrayLike<number> = j2kSamples(bytes, frame);
  if (!frame.isSigned && info.pixelRepresentation === 1) {
    // The header says signed, the codestream unsigned (pydicom's J2K_pixelrep_mismatch.dcm): the
    // encoder stored the two's-complement bit pattern; read it as such, as GDCM and pydicom do.
    const shift = 32 - frame.bitsPerSample;
    samples = Int32Array.from(samples, (v) => (v << shift) >> shift);
  }
  // J2K samples are values, not bit patterns: written as they are (no sign extension from
  // Bits Stored, which may be less than the codestream's precision).
  const pixels = toNative(samples, { ...info, pixelRepresentation: 0 });
  // The decoder has undone the multiple component transform (PS3.5 8.2.4: YBR_ICT and YBR_RCT
  // name the compressed data; decoded, it is RGB).
  const photometric = info.photometricInterpretation === 'YBR_ICT' || info.photometricInterpretation === 'YBR_RCT' ? 'RGB' : info.photometricInterpretation;
  return { pixels, photometricInterpretation: photometric, planarConfiguration: 0 };
}

async function decodeJ2k(encoded: Uint8Array, info: FrameInfo): Promise<DecodedFrame> {
  checkJ2kCodestream('JPEG 2000 (OpenJPEG)', encoded, info);
  return withCodec('openjpeg', 'JPEG 2000 (OpenJPEG)', 'J2KDecoder', (decoder, module) => {
    decoder.getEncodedBuffer(encoded.length).set(encoded);
    decoder.decode();
    const frame = (decoder as unknown as { getFrameInfo(): J2kFrameInfo }).getFrameInfo();
    if (frame.width === 0) {
      const errors = takeMessages(module).filter((l) => l.includes('[ERROR]'));
      fail('JPEG 2000 (OpenJPEG)', errors.map((l) => l.replace('[ERROR] ', '').trim()).join('; ') || 'the codec decoded nothing');
    }
    return j2kFrame('JPEG 2000 (OpenJPEG)', frame, decoder.getDecodedBuffer(), info);
  });
}

async function decodeHtj2k(encoded: Uint8Array, info: FrameInfo): Promise<DecodedFrame> {
  checkJ2kCodestream('HTJ2K (OpenJPH)', encoded, info);
  // Rsiz bit 14 marks a codestream with HT code-blocks; OpenJPH decodes nothing else.
  const rsiz = encoded[0] === 0xff && encoded[1] === 0x4f ? (encoded[6]! << 8) | encoded[7]! : 0;
  if ((rsiz & 0x4000) === 0) return decodeJ2k(encoded, info);
  return withCodec('openjph', 'HTJ2K (OpenJPH)', 'HTJ2KDecoder', (decoder, module) => {
    decoder.getEncodedBuffer(encoded.length).set(encoded);
    decoder.decode();
    const frame = (decoder as unknown as { getFrameInfo(): J2kFrameInfo }).getFrameInfo();
    if (frame.width === 0) {
      const errors = takeMessages(module).filter((l) => l.includes('ojph error'));
      fail('HTJ2K (OpenJPH)', errors.map((l) => l.replace(/^ojph error 0x[0-9A-F]+ at [^:]+:\d+: /, '')).join('; ') || 'the codec decoded nothing');
    }
    return j2kFrame('HTJ2K (OpenJPH)', frame, decoder.getDecodedBuffer(), info);
  });
}
