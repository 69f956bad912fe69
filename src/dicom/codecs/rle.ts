// RLE Lossless (PS3.5 Annex G): a 64-byte header of segment offsets, then one PackBits segment
// per byte of each sample (most significant byte first, one sample plane after another).
//
// Hand-written: no maintained npm package decodes DICOM RLE. Cornerstone's decoder lives inside
// @cornerstonejs/dicom-image-loader (not exported, 8/16-bit only, and that package brings
// @cornerstonejs/core and vtk.js as peers); the format is small enough to decode here, and
// pydicom's own RLE decoder referees it in test/unit/dicom/codecs.test.ts.
import { VaultError } from '../../core/errors.ts';
import type { DecodedFrame, FrameInfo } from './frame.ts';

const HEADER = 64;

function fail(reason: string): never {
  throw new VaultError('DECODE_FAILED', `RLE Lossless: ${reason}`);
}

/** Decodes one RLE frame into native little-endian samples, colour interleaved (planar 0). */
export function decodeRle(encoded: Uint8Array, info: FrameInfo): DecodedFrame {
  const bytesPerSample = info.bitsAllocated / 8;
  const needed = info.samplesPerPixel * bytesPerSample;
  if (encoded.length < HEADER) fail(`${encoded.length} bytes, shorter than the 64-byte header`);
  const view = new DataView(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  const segments = view.getUint32(0, true);
  if (segments !== needed) fail(`the header declares ${segments} segments; ${info.samplesPerPixel} samples of ${info.bitsAllocated} bits need ${needed}`);
  const offsets: number[] = [];
  for (let i = 0; i < segments; i++) offsets.push(view.getUint32(4 + 4 * i, true));
  offsets.push(encoded.length);
  for (let i = 0; i < segments; i++) {
    if (offsets[i]! < HEADER || offsets[i]! > offsets[i + 1]!)
      fail(`segment ${i + 1} has offset ${offsets[i]} (next ${offsets[i + 1]}, frame ${encoded.length} bytes)`);
  }

  const pixels = info.rows * info.columns;
  const out = new Uint8Array(pixels * needed);
  const stride = needed; // bytes from one pixel to the next, interleaved
  for (let seg = 0; seg < segments; seg++) {
    const sample = Math.floor(seg / bytesPerSample);
    const byteInSample = bytesPerSample - 1 - (seg % bytesPerSample); // little endian: MSB segment last
    let o = sample * bytesPerSample + byteInSample;
    let written = 0;
    let i = offsets[seg]!;
    const end = offsets[seg + 1]!;
    while (written < pixels && i < end) {
      const n = encoded[i++]!;
      if (n < 128) {
        // Literal run of n + 1 bytes.
        const count = Math.min(n + 1, pixels - written);
        if (i + n + 1 > end) fail(`segment ${seg + 1} ends inside a literal run`);
        for (let k = 0; k < count; k++, o += stride) out[o] = encoded[i + k]!;
        i += n + 1;
        written += count;
      } else if (n > 128) {
        // Replicate run: the next byte 257 - n times.
        if (i >= end) fail(`segment ${seg + 1} ends inside a replicate run`);
        const value = encoded[i++]!;
        const count = Math.min(257 - n, pixels - written);
        for (let k = 0; k < count; k++, o += stride) out[o] = value;
        written += count;
      } // 128 (-128): no operation
    }
    if (written < pixels) fail(`segment ${seg + 1} decodes to ${written} of ${pixels} bytes`);
  }
  return { pixels: out, photometricInterpretation: info.photometricInterpretation, planarConfiguration: 0 };
}
