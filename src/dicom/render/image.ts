// Scaling an 8-bit display image and encoding it as JPEG or PNG.
//
// Encoders: JPEG with libjpeg-turbo's encoder from the same WebAssembly build that decodes JPEG
// frames (@cornerstonejs/codec-libjpeg-turbo-8bit), several times faster than jpeg-js (pure
// JavaScript) on full-size images. That build gives its encoder an output buffer the size of the
// raw pixels and traps when the JPEG is larger, which it always is for tiny images (headers
// alone are ~600 bytes) and can be for noise at high quality: tiny images (up to
// SMALL_IMAGE_BYTES of pixels) go to jpeg-js, and a trap falls back to it too. jpeg-js writes
// colour JPEGs only, so a grey image through it comes out as a (grey) colour JPEG. PNG with fast-png
// (image-js, maintained, pure JavaScript over fflate, typed): pngjs, the other choice, is
// stream-oriented and last released in 2023.
import { encode as encodePng } from 'fast-png';
import { VaultError } from '../../core/errors.ts';
import jpegJs from 'jpeg-js';
import { dropWasmCodec, wasmCodec } from '../codecs/wasm.ts';
import type { DisplayImage } from './display.ts';

/** The size that fits `width` x `height` inside `box`, keeping the aspect ratio (at least 1 x 1). */
export function fitInside(width: number, height: number, box: { width: number; height: number }): { width: number; height: number } {
  const scale = Math.min(box.width / width, box.height / height);
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

/**
 * The image scaled to `width` x `height`: each output pixel the mean of the source pixels under it
 * (area averaging, which is what a thumbnail needs: no aliasing), bilinear where it enlarges.
 */
export function resize(image: DisplayImage, width: number, height: number): DisplayImage {
  if (width === image.width && height === image.height) return image;
  const ch = image.channels;
  const src = image.data;
  const out = new Uint8Array(width * height * ch);
  const sx = image.width / width;
  const sy = image.height / height;
  if (sx >= 1 && sy >= 1) {
    for (let y = 0; y < height; y++) {
      const y0 = Math.floor(y * sy);
      const y1 = Math.max(y0 + 1, Math.min(image.height, Math.floor((y + 1) * sy)));
      for (let x = 0; x < width; x++) {
        const x0 = Math.floor(x * sx);
        const x1 = Math.max(x0 + 1, Math.min(image.width, Math.floor((x + 1) * sx)));
        const n = (y1 - y0) * (x1 - x0);
        for (let c = 0; c < ch; c++) {
          let sum = 0;
          for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) sum += src[(yy * image.width + xx) * ch + c]!;
          out[(y * width + x) * ch + c] = Math.round(sum / n);
        }
      }
    }
  } else {
    for (let y = 0; y < height; y++) {
      const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), image.height - 1);
      const y0 = Math.floor(fy);
      const y1 = Math.min(y0 + 1, image.height - 1);
      const dy = fy - y0;
      for (let x = 0; x < width; x++) {
        const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), image.width - 1);
        const x0 = Math.floor(fx);
        const x1 = Math.min(x0 + 1, image.width - 1);
        const dx = fx - x0;
        for (let c = 0; c < ch; c++) {
          const p = (yy: number, xx: number): number => src[(yy * image.width + xx) * ch + c]!;
          const top = p(y0, x0) * (1 - dx) + p(y0, x1) * dx;
          const bottom = p(y1, x0) * (1 - dx) + p(y1, x1) * dx;
          out[(y * width + x) * ch + c] = Math.round(top * (1 - dy) + bottom * dy);
        }
      }
    }
  }
  return { width, height, channels: ch, data: out };
}

/** Pixels (bytes) up to which a JPEG is encoded by jpeg-js rather than libjpeg-turbo: 4 KiB (64 x 64 grey). */
export const SMALL_IMAGE_BYTES = 4096;

/** JPEG (baseline, JFIF) of an 8-bit image at `quality` (1..100). */
export async function encodeJpeg(image: DisplayImage, quality: number): Promise<Uint8Array> {
  if (image.width * image.height * image.channels <= SMALL_IMAGE_BYTES) return encodeJpegJs(image, quality);
  try {
    return await encodeJpegTurbo(image, quality);
  } catch {
    dropWasmCodec('libjpegTurbo'); // a trap may have damaged its memory: a fresh instance next time
    return encodeJpegJs(image, quality);
  }
}

/** jpeg-js takes RGBA. */
function encodeJpegJs(image: DisplayImage, quality: number): Uint8Array {
  const n = image.width * image.height;
  const rgba = new Uint8Array(n * 4);
  const src = image.data;
  if (image.channels === 1) {
    for (let i = 0; i < n; i++) {
      const v = src[i]!;
      rgba[i * 4] = v;
      rgba[i * 4 + 1] = v;
      rgba[i * 4 + 2] = v;
      rgba[i * 4 + 3] = 255;
    }
  } else {
    for (let i = 0; i < n; i++) {
      rgba[i * 4] = src[i * 3]!;
      rgba[i * 4 + 1] = src[i * 3 + 1]!;
      rgba[i * 4 + 2] = src[i * 3 + 2]!;
      rgba[i * 4 + 3] = 255;
    }
  }
  return new Uint8Array(jpegJs.encode({ data: rgba, width: image.width, height: image.height }, quality).data);
}

async function encodeJpegTurbo(image: DisplayImage, quality: number): Promise<Uint8Array> {
  const module = await wasmCodec('libjpegTurbo');
  const Encoder = module.JPEGEncoder as new () => {
    getDecodedBuffer(info: { width: number; height: number; bitsPerSample: number; componentCount: number; isSigned: boolean }): Uint8Array;
    setQuality(q: number): void;
    encode(): void;
    getEncodedBuffer(): Uint8Array;
    delete(): void;
  };
  const encoder = new Encoder();
  try {
    encoder.getDecodedBuffer({ width: image.width, height: image.height, bitsPerSample: 8, componentCount: image.channels, isSigned: false }).set(image.data);
    encoder.setQuality(quality);
    encoder.encode();
    return encoder.getEncodedBuffer().slice();
  } catch (err) {
    throw new VaultError('INTERNAL', 'the JPEG encoder failed', { cause: err });
  } finally {
    encoder.delete();
  }
}

/** PNG (8-bit grey or RGB) of an 8-bit image. */
export function encodePngImage(image: DisplayImage): Uint8Array {
  return encodePng({ width: image.width, height: image.height, data: image.data, channels: image.channels, depth: 8 });
}
