// From decoded samples to 8-bit display values (PS3.3 C.11: the grayscale pipeline of Modality
// LUT, VOI LUT and Presentation LUT; colour to RGB), as a viewer would show the frame.
import { VaultError } from '../../core/errors.ts';
import type { DecodedFrame, FrameInfo } from '../codecs/frame.ts';

export type VoiFunction = 'LINEAR' | 'LINEAR_EXACT' | 'SIGMOID';

/** A VOI window on modality values (after Rescale Slope / Intercept). */
export interface VoiWindow {
  center: number;
  width: number;
  function: VoiFunction;
}

/** A PALETTE COLOR lookup table: (0028,110x) descriptor [entries, first mapped value, bits] and (0028,120x) data. */
export interface PaletteLut {
  descriptor: readonly [number, number, number];
  data: Uint8Array | Uint16Array;
}

/**
 * What rendering needs to know of an instance besides its Image Pixel module (FrameInfo): the
 * Modality LUT, the VOI window and, for PALETTE COLOR, the palette. A plain object, made from
 * the instance's DICOM JSON metadata by renderInfoFromMetadata (index.ts).
 */
export interface RenderAttributes {
  /** (0028,1053) Rescale Slope; default 1. */
  rescaleSlope?: number;
  /** (0028,1052) Rescale Intercept; default 0. */
  rescaleIntercept?: number;
  /** (0028,1050) Window Center: the first value is used. */
  windowCenter?: number[];
  /** (0028,1051) Window Width: the first value is used. */
  windowWidth?: number[];
  /** (0028,1056) VOI LUT Function: LINEAR (default), LINEAR_EXACT or SIGMOID. */
  voiLutFunction?: string;
  /** PALETTE COLOR: the red, green and blue tables. */
  palette?: { red: PaletteLut; green: PaletteLut; blue: PaletteLut };
}

export type RenderInfo = FrameInfo & RenderAttributes;

/** An 8-bit image: 1 channel (grey) or 3 (RGB), interleaved. */
export interface DisplayImage {
  width: number;
  height: number;
  channels: 1 | 3;
  data: Uint8Array;
}

function fail(reason: string): never {
  throw new VaultError('DECODE_FAILED', `cannot render the frame: ${reason}`);
}

/** PS3.3 C.11.2.1.2: one modality value through a VOI window to 0..255. */
export function applyVoi(x: number, w: VoiWindow): number {
  let y: number;
  switch (w.function) {
    case 'LINEAR': {
      const c = w.center - 0.5;
      const width = w.width - 1;
      if (x <= c - width / 2) y = 0;
      else if (x > c + width / 2) y = 255;
      else y = ((x - c) / width + 0.5) * 255;
      break;
    }
    case 'LINEAR_EXACT':
      if (x <= w.center - w.width / 2) y = 0;
      else if (x > w.center + w.width / 2) y = 255;
      else y = ((x - w.center) / w.width + 0.5) * 255;
      break;
    case 'SIGMOID':
      y = 255 / (1 + Math.exp((-4 * (x - w.center)) / w.width));
      break;
  }
  return Math.min(255, Math.max(0, Math.round(y)));
}

/** Checks a window: LINEAR needs a width of at least 1, the others more than 0 (PS3.3 C.11.2.1.2). */
export function checkWindow(w: VoiWindow): void {
  const min = w.function === 'LINEAR' ? 1 : Number.MIN_VALUE;
  if (!Number.isFinite(w.center) || !Number.isFinite(w.width) || w.width < min) {
    throw new VaultError('INVALID_QUERY', `window width ${w.width} is not valid for ${w.function} (center ${w.center})`);
  }
}

function voiFunction(name: string | undefined): VoiFunction {
  const f = (name ?? 'LINEAR').trim().toUpperCase();
  return f === 'LINEAR_EXACT' || f === 'SIGMOID' ? f : 'LINEAR';
}

/** Reads sample i (of all samples, interleaved) as the stored value: masked or sign-extended to Bits Stored. */
function sampleReader(frame: DecodedFrame, info: FrameInfo): (i: number) => number {
  const p = frame.pixels;
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const bits = info.bitsStored;
  const shift = 32 - bits;
  const signed = info.pixelRepresentation === 1;
  const mask = 2 ** Math.min(bits, 31) - 1;
  const raw: (i: number) => number =
    info.bitsAllocated === 8 ? (i) => p[i]! : info.bitsAllocated === 16 ? (i) => view.getUint16(2 * i, true) : (i) => view.getUint32(4 * i, true);
  if (signed) return (i) => (raw(i) << shift) >> shift;
  return bits >= 32 ? raw : (i) => raw(i) & mask;
}

/**
 * The frame as 8-bit display values. Greyscale: Rescale Slope/Intercept, then the window (the
 * caller's, else the instance's first Window Center/Width, else the frame's min..max), MONOCHROME1
 * inverted. Colour (RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR) becomes RGB; a window does not
 * apply to it.
 */
export function toDisplay(frame: DecodedFrame, info: RenderInfo, window?: VoiWindow): DisplayImage {
  const width = info.columns;
  const height = info.rows;
  const pixels = width * height;
  const expected = pixels * info.samplesPerPixel * (info.bitsAllocated / 8);
  const photometric = frame.photometricInterpretation;
  // Native YBR_FULL_422 holds two Y, one Cb and one Cr per pair of pixels.
  const stored = photometric === 'YBR_FULL_422' ? (expected * 2) / 3 : expected;
  if (frame.pixels.length < stored) fail(`${frame.pixels.length} bytes for a ${width}x${height} frame of ${info.samplesPerPixel} x ${info.bitsAllocated} bits`);
  const read = sampleReader(frame, info);

  if (info.samplesPerPixel === 1 && photometric !== 'PALETTE COLOR') {
    if (photometric !== 'MONOCHROME1' && photometric !== 'MONOCHROME2') fail(`photometric interpretation ${photometric} with one sample`);
    const slope = info.rescaleSlope ?? 1;
    const intercept = info.rescaleIntercept ?? 0;
    const out = new Uint8Array(pixels);
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < pixels; i++) {
      const v = read(i);
      if (v < min) min = v;
      if (v > max) max = v;
    }
    let w = window;
    const center = info.windowCenter?.[0];
    const ww = info.windowWidth?.[0];
    if (w === undefined && center !== undefined && ww !== undefined && Number.isFinite(center) && ww >= 1) {
      w = { center, width: ww, function: voiFunction(info.voiLutFunction) };
    }
    if (w === undefined) {
      // No window anywhere: the frame's range of modality values, end to end.
      const a = min * slope + intercept;
      const b = max * slope + intercept;
      const lo = Math.min(a, b);
      const hi = Math.max(a, b);
      w = { center: (lo + hi) / 2, width: Math.max(hi - lo, 1), function: 'LINEAR_EXACT' };
    }
    const invert = photometric === 'MONOCHROME1';
    const map = (v: number): number => {
      const y = applyVoi(v * slope + intercept, w);
      return invert ? 255 - y : y;
    };
    if (max - min <= 65536) {
      // One table entry per stored value present: the window computed once per value.
      const lut = new Uint8Array(max - min + 1);
      for (let v = min; v <= max; v++) lut[v - min] = map(v);
      for (let i = 0; i < pixels; i++) out[i] = lut[read(i) - min]!;
    } else {
      for (let i = 0; i < pixels; i++) out[i] = map(read(i));
    }
    return { width, height, channels: 1, data: out };
  }

  const out = new Uint8Array(pixels * 3);
  if (photometric === 'PALETTE COLOR') {
    const palette = info.palette;
    if (palette === undefined) fail('PALETTE COLOR without its palette (the lookup table data is bulk data the caller must supply)');
    const tables = [palette.red, palette.green, palette.blue].map(paletteTable);
    for (let i = 0; i < pixels; i++) {
      const v = read(i);
      for (let c = 0; c < 3; c++) {
        const t = tables[c]!;
        const k = Math.min(Math.max(v - t.first, 0), t.values.length - 1);
        out[3 * i + c] = t.values[k]!;
      }
    }
    return { width, height, channels: 3, data: out };
  }
  if (info.samplesPerPixel !== 3) fail(`${info.samplesPerPixel} samples per pixel`);
  // Colour samples wider than 8 bits keep their top 8.
  const down = Math.max(0, info.bitsStored - 8);
  const planar = frame.planarConfiguration === 1;
  const at = (pixel: number, sample: number): number => read(planar ? sample * pixels + pixel : 3 * pixel + sample) >>> down;
  switch (photometric) {
    case 'RGB':
      for (let i = 0; i < pixels; i++) for (let c = 0; c < 3; c++) out[3 * i + c] = at(i, c);
      break;
    case 'YBR_FULL':
      for (let i = 0; i < pixels; i++) ybrToRgb(at(i, 0), at(i, 1), at(i, 2), out, 3 * i);
      break;
    case 'YBR_FULL_422': {
      if (width % 2 !== 0 || info.bitsAllocated !== 8) fail('YBR_FULL_422 needs an even number of columns and 8 bits');
      const p = frame.pixels;
      for (let i = 0; i < pixels; i += 2) {
        const o = i * 2; // Y1 Y2 Cb Cr
        ybrToRgb(p[o]!, p[o + 2]!, p[o + 3]!, out, 3 * i);
        ybrToRgb(p[o + 1]!, p[o + 2]!, p[o + 3]!, out, 3 * i + 3);
      }
      break;
    }
    default:
      fail(`photometric interpretation ${photometric}`);
  }
  return { width, height, channels: 3, data: out };
}

/** PS3.3 C.7.6.3.1.2 YBR_FULL to RGB, 8-bit. */
function ybrToRgb(y: number, cb: number, cr: number, out: Uint8Array, o: number): void {
  const clamp = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));
  out[o] = clamp(y + 1.402 * (cr - 128));
  out[o + 1] = clamp(y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128));
  out[o + 2] = clamp(y + 1.772 * (cb - 128));
}

/**
 * A palette as 8-bit values. Descriptor: entries (0 means 65536), first mapped value, bits per
 * entry (8 or 16). 16-bit entries keep their top 8 bits, except in tables whose entries all fit
 * 8 bits: some writers put 8-bit values in 16-bit entries, as viewers (cornerstone) allow.
 */
function paletteTable(lut: PaletteLut): { first: number; values: Uint8Array } {
  const [n, first, bits] = lut.descriptor;
  const entries = n === 0 ? 65536 : n;
  if (lut.data.length < entries) fail(`a palette of ${entries} entries has ${lut.data.length}`);
  const data = lut.data.subarray(0, entries);
  let max = 0;
  for (const v of data) if (v > max) max = v;
  const shift = bits === 16 && max > 255 ? 8 : 0;
  return { first, values: Uint8Array.from(data, (v) => v >> shift) };
}
