// Rendered resources of PS3.18 (…/rendered as image/jpeg or image/png, …/thumbnail): a decoded
// frame made into an 8-bit picture as a viewer would show it, scaled, and encoded.
//
//   renderInfoFromMetadata(instanceMetadata)         FrameInfo + window, rescale, palette
//   parseWindowParameter('40,400,linear')            PS3.18 `window` query parameter
//   renderFrame(decoded, info, {format, window?, size?, quality?})  -> image bytes
//   renderThumbnail(decoded, info, {format?, size?})                 -> image bytes
// All of it is synchronous CPU work but the JPEG encoder's first load: on the server, run it on
// the decode pool's workers with DecodePool.render, which decodes and renders in one trip.
import { VaultError } from '../../core/errors.ts';
import type { DecodedFrame } from '../codecs/frame.ts';
import type { DicomJsonDataset, DicomJsonElement } from '../model.ts';
import { checkWindow, toDisplay, type PaletteLut, type RenderInfo, type VoiFunction, type VoiWindow } from './display.ts';
import { encodeJpeg, encodePngImage, fitInside, resize } from './image.ts';

export {
  applyVoi,
  toDisplay,
  type DisplayImage,
  type PaletteLut,
  type RenderAttributes,
  type RenderInfo,
  type VoiFunction,
  type VoiWindow,
} from './display.ts';

export type RenderFormat = 'image/jpeg' | 'image/png';

export interface RenderOptions {
  format: RenderFormat;
  /** The caller's window (PS3.18 `window`); else the instance's; else the frame's min..max. */
  window?: VoiWindow;
  /** Fit inside this box keeping the aspect ratio (PS3.18 `viewport` vw,vh); default: the frame's size. */
  size?: { width: number; height: number };
  /** JPEG quality 1..100 (PS3.18 `quality`); default DEFAULT_JPEG_QUALITY. */
  quality?: number;
}

export const DEFAULT_JPEG_QUALITY = 90;

/**
 * Longest side of a thumbnail, in pixels. Viewers show series thumbnails at roughly 100 to 128 CSS
 * pixels (OHIF's study browser, Orthanc Explorer's previews), and PS3.18 leaves the size to the
 * origin server; 128 keeps a thumbnail a few KiB. A caller wanting sharper ones on high-density
 * screens passes a larger size.
 */
export const THUMBNAIL_SIZE = 128;

/** Renders a decoded frame as an 8-bit JPEG or PNG. */
export async function renderFrame(frame: DecodedFrame, info: RenderInfo, options: RenderOptions): Promise<Uint8Array> {
  if (options.window !== undefined) checkWindow(options.window);
  const quality = options.quality ?? DEFAULT_JPEG_QUALITY;
  if (!Number.isInteger(quality) || quality < 1 || quality > 100)
    throw new VaultError('INVALID_QUERY', `quality must be an integer from 1 to 100, not ${quality}`);
  let image = toDisplay(frame, info, options.window);
  if (options.size !== undefined) {
    const { width, height } = options.size;
    if (!(width >= 1 && height >= 1 && width <= 65535 && height <= 65535)) throw new VaultError('INVALID_QUERY', `cannot render at ${width}x${height}`);
    const fit = fitInside(image.width, image.height, options.size);
    image = resize(image, fit.width, fit.height);
  }
  switch (options.format) {
    case 'image/jpeg':
      return encodeJpeg(image, quality);
    case 'image/png':
      return encodePngImage(image);
    default:
      throw new VaultError('NOT_ACCEPTABLE', `cannot render as ${String(options.format)}`);
  }
}

export interface ThumbnailOptions {
  format?: RenderFormat;
  /** Longest side at most; default THUMBNAIL_SIZE. */
  size?: number;
  quality?: number;
}

/** The render options of a thumbnail: the frame with its own window, fitted inside size x size, never enlarged; JPEG by default. */
export function thumbnailOptions(info: { rows: number; columns: number }, options: ThumbnailOptions = {}): RenderOptions {
  const box = options.size ?? THUMBNAIL_SIZE;
  const size = info.columns <= box && info.rows <= box ? { width: info.columns, height: info.rows } : { width: box, height: box };
  return { format: options.format ?? 'image/jpeg', size, ...(options.quality === undefined ? {} : { quality: options.quality }) };
}

/** A thumbnail of a decoded frame (thumbnailOptions). */
export function renderThumbnail(frame: DecodedFrame, info: RenderInfo, options: ThumbnailOptions = {}): Promise<Uint8Array> {
  return renderFrame(frame, info, thumbnailOptions(info, options));
}

/**
 * The PS3.18 `window` query parameter, "center,width,function" (function: linear, linear-exact
 * or sigmoid; PS3.3's LINEAR, LINEAR_EXACT and SIGMOID are taken too). INVALID_QUERY otherwise.
 */
export function parseWindowParameter(text: string): VoiWindow {
  const parts = text.split(',').map((p) => p.trim());
  const bad = (): never => {
    throw new VaultError('INVALID_QUERY', `window must be "center,width,function" (function linear, linear-exact or sigmoid), not "${text}"`);
  };
  if (parts.length !== 3) bad();
  const [c, w, f] = parts as [string, string, string];
  const number = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
  if (!number.test(c) || !number.test(w)) bad();
  const fn = f.toUpperCase().replace('-', '_');
  if (fn !== 'LINEAR' && fn !== 'LINEAR_EXACT' && fn !== 'SIGMOID') bad();
  const window: VoiWindow = { center: Number(c), width: Number(w), function: fn as VoiFunction };
  checkWindow(window);
  return window;
}

// --- From DICOM JSON metadata ---------------------------------------------------------------

const TAGS = {
  samplesPerPixel: '00280002',
  photometricInterpretation: '00280004',
  planarConfiguration: '00280006',
  rows: '00280010',
  columns: '00280011',
  bitsAllocated: '00280100',
  bitsStored: '00280101',
  pixelRepresentation: '00280103',
  windowCenter: '00281050',
  windowWidth: '00281051',
  rescaleIntercept: '00281052',
  rescaleSlope: '00281053',
  voiLutFunction: '00281056',
  paletteDescriptors: ['00281101', '00281102', '00281103'],
  paletteData: ['00281201', '00281202', '00281203'],
} as const;

function numbers(el: DicomJsonElement | undefined): number[] {
  return (el?.Value ?? []).map((v) => (typeof v === 'number' ? v : Number(v))).filter((v) => Number.isFinite(v));
}

function binary(el: DicomJsonElement | undefined): Uint8Array | undefined {
  return el?.InlineBinary === undefined ? undefined : new Uint8Array(Buffer.from(el.InlineBinary, 'base64'));
}

/**
 * The rendering facts of an instance from its DICOM JSON metadata (PS3.18 F.2): the Image Pixel
 * module (0028,0002 … 0028,0103), Window Center/Width (0028,1050/1051), Rescale Intercept/Slope
 * (0028,1052/1053), VOI LUT Function (0028,1056) and, when the data is inline (InlineBinary), the
 * PALETTE COLOR tables (0028,1101-1103 and 0028,1201-1203). Palette data held as BulkDataURI is
 * the caller's to fetch and set as `palette`.
 */
export function renderInfoFromMetadata(metadata: DicomJsonDataset): RenderInfo {
  const first = (tag: string): number | undefined => numbers(metadata[tag])[0];
  const need = (tag: string, name: string): number => {
    const v = first(tag);
    if (v === undefined) throw new VaultError('DICOM_MALFORMED', `the instance has no ${name} (${tag})`);
    return v;
  };
  const photometric = metadata[TAGS.photometricInterpretation]?.Value?.[0];
  const info: RenderInfo = {
    rows: need(TAGS.rows, 'Rows'),
    columns: need(TAGS.columns, 'Columns'),
    samplesPerPixel: first(TAGS.samplesPerPixel) ?? 1,
    bitsAllocated: need(TAGS.bitsAllocated, 'Bits Allocated'),
    bitsStored: first(TAGS.bitsStored) ?? need(TAGS.bitsAllocated, 'Bits Allocated'),
    pixelRepresentation: first(TAGS.pixelRepresentation) ?? 0,
    photometricInterpretation: typeof photometric === 'string' ? photometric.trim() : 'MONOCHROME2',
    planarConfiguration: first(TAGS.planarConfiguration) ?? 0,
  };
  const centers = numbers(metadata[TAGS.windowCenter]);
  const widths = numbers(metadata[TAGS.windowWidth]);
  if (centers.length > 0 && widths.length > 0) {
    info.windowCenter = centers;
    info.windowWidth = widths;
  }
  const slope = first(TAGS.rescaleSlope);
  const intercept = first(TAGS.rescaleIntercept);
  if (slope !== undefined) info.rescaleSlope = slope;
  if (intercept !== undefined) info.rescaleIntercept = intercept;
  const fn = metadata[TAGS.voiLutFunction]?.Value?.[0];
  if (typeof fn === 'string') info.voiLutFunction = fn.trim();
  if (info.photometricInterpretation === 'PALETTE COLOR') {
    const luts = TAGS.paletteDescriptors.map((d, i) => paletteLut(metadata[d], metadata[TAGS.paletteData[i]!], info.pixelRepresentation === 1));
    if (luts.every((l) => l !== undefined)) info.palette = { red: luts[0]!, green: luts[1]!, blue: luts[2]! };
  }
  return info;
}

function paletteLut(descriptor: DicomJsonElement | undefined, data: DicomJsonElement | undefined, signed: boolean): PaletteLut | undefined {
  let d = numbers(descriptor);
  if (d.length < 3) {
    // In implicit VR the descriptor (US or SS) may arrive as binary.
    const raw = binary(descriptor);
    if (raw === undefined || raw.length < 6) return undefined;
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    d = [view.getUint16(0, true), view.getUint16(2, true), view.getUint16(4, true)];
  }
  const [entries, firstMapped, bits] = d as [number, number, number];
  // The first mapped value is SS when pixel data is signed.
  const first = signed && firstMapped > 32767 ? firstMapped - 65536 : firstMapped;
  const raw = binary(data);
  if (raw === undefined) return undefined;
  const values =
    bits === 8 && raw.length < 2 * (entries === 0 ? 65536 : entries)
      ? raw
      : new Uint16Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + (raw.byteLength & ~1)));
  return { descriptor: [entries, first, bits], data: values };
}
