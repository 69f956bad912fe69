// What a decoder is told about a frame (from the instance's Image Pixel module) and what it gives
// back: the frame's samples as Explicit VR Little Endian Pixel Data would hold them.
import { VaultError } from '../../core/errors.ts';

/** The Image Pixel attributes of the instance (PS3.3 C.7.6.3) a frame is decoded against. */
export interface FrameInfo {
  /** (0028,0010) */
  rows: number;
  /** (0028,0011) */
  columns: number;
  /** (0028,0002) */
  samplesPerPixel: number;
  /** (0028,0100) */
  bitsAllocated: number;
  /** (0028,0101) */
  bitsStored: number;
  /** (0028,0103): 0 unsigned, 1 two's complement. */
  pixelRepresentation: number;
  /** (0028,0004) as stored with the compressed data, e.g. YBR_FULL_422 for most JPEG baseline colour. */
  photometricInterpretation: string;
  /** (0028,0006) as stored; 0 when absent. */
  planarConfiguration: number;
}

/**
 * One decoded frame. `pixels` holds rows x columns x samplesPerPixel samples of bitsAllocated
 * bits, little endian, exactly as one frame of native Pixel Data; `photometricInterpretation`
 * and `planarConfiguration` are what those bytes are (a JPEG baseline YBR_FULL_422 frame decodes
 * to RGB, planar 0), so a transcoder rewrites the header with them. Colour is always
 * interleaved (planar 0). Signed samples narrower than bitsAllocated are sign-extended.
 */
export interface DecodedFrame {
  pixels: Uint8Array;
  photometricInterpretation: string;
  planarConfiguration: 0 | 1;
}

/** Bytes of one decoded frame: rows x columns x samples x bitsAllocated / 8. */
export function decodedFrameLength(info: FrameInfo): number {
  return info.rows * info.columns * info.samplesPerPixel * (info.bitsAllocated / 8);
}

/** Throws DECODE_FAILED unless `info` describes a frame the decoders can produce. */
export function checkFrameInfo(info: FrameInfo): void {
  const positive = (n: unknown, max: number): boolean => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= max;
  const bad = (what: string): never => {
    throw new VaultError('DECODE_FAILED', `cannot decode a frame with ${what}`);
  };
  if (!positive(info.rows, 65535) || !positive(info.columns, 65535)) bad(`${info.rows} rows and ${info.columns} columns`);
  if (info.samplesPerPixel !== 1 && info.samplesPerPixel !== 3) bad(`${info.samplesPerPixel} samples per pixel`);
  if (![8, 16, 32].includes(info.bitsAllocated)) bad(`${info.bitsAllocated} bits allocated`);
  if (!positive(info.bitsStored, info.bitsAllocated)) bad(`${info.bitsStored} bits stored of ${info.bitsAllocated}`);
  if (info.pixelRepresentation !== 0 && info.pixelRepresentation !== 1) bad(`pixel representation ${info.pixelRepresentation}`);
}

/**
 * Writes decoded samples (one per array element, interleaved) as native little-endian bytes of
 * `bitsAllocated`, sign-extending from bitsStored when the data is signed. JPEG, JPEG lossless and
 * JPEG-LS hand back the stored bit pattern as an unsigned number; native Pixel Data of signed
 * 12-bit CT holds it sign-extended, which is what readers that ignore Bits Stored expect.
 */
export function toNative(samples: ArrayLike<number>, info: FrameInfo): Uint8Array {
  const count = info.rows * info.columns * info.samplesPerPixel;
  if (samples.length < count) throw new VaultError('DECODE_FAILED', `the decoder produced ${samples.length} samples, the frame has ${count}`);
  const signed = info.pixelRepresentation === 1;
  const extend = signed && info.bitsStored < info.bitsAllocated;
  // Samples already of the allocated width, with nothing to sign-extend: one copy.
  const width = info.bitsAllocated / 8;
  if (!extend && (samples instanceof Uint8Array || samples instanceof Uint16Array || samples instanceof Int16Array) && samples.BYTES_PER_ELEMENT === width) {
    return new Uint8Array(samples.buffer.slice(samples.byteOffset, samples.byteOffset + count * width));
  }
  const shift = 32 - info.bitsStored;
  const fix = extend ? (v: number): number => (v << shift) >> shift : (v: number): number => v;
  switch (info.bitsAllocated) {
    case 8: {
      const out = new Uint8Array(count);
      for (let i = 0; i < count; i++) out[i] = fix(samples[i]!);
      return out;
    }
    case 16: {
      const out = new Uint16Array(count); // little endian on every platform Node runs on here
      for (let i = 0; i < count; i++) out[i] = fix(samples[i]!);
      return new Uint8Array(out.buffer);
    }
    default: {
      const out = new Uint32Array(count);
      for (let i = 0; i < count; i++) out[i] = fix(samples[i]!);
      return new Uint8Array(out.buffer);
    }
  }
}
