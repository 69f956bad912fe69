// Rendered frames (PS3.18 rendered and thumbnail resources) as a viewer would see them: decoded
// on the worker pool, windowed, encoded, and read back by Pillow; the instance's attributes come
// from pydicom's DICOM JSON of the real files.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecodePool, type DecodedFrame } from '../../../src/dicom/codecs/index.ts';
import type { DicomJsonDataset } from '../../../src/dicom/model.ts';
import {
  applyVoi,
  parseWindowParameter,
  renderFrame,
  renderInfoFromMetadata,
  renderThumbnail,
  thumbnailOptions,
  THUMBNAIL_SIZE,
  type RenderInfo,
} from '../../../src/dicom/render/index.ts';
import { missingReferees, PYTHON } from '../../support/codec-fixtures.ts';
import { PYDICOM_DATA } from '../../support/pydicom.ts';

const REFEREE = new URL('../../support/render-referee.py', import.meta.url).pathname;
const TEST_FILES = join(PYDICOM_DATA, 'test_files');
const EXPLICIT_LE = '1.2.840.10008.1.2.1';

const missing = missingReferees();
const dir = missing === undefined ? mkdtempSync(join(tmpdir(), 'render-')) : '';

function referee<T>(command: string, arg: string): T {
  return JSON.parse(execFileSync(PYTHON, [REFEREE, command, arg], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 })) as T;
}

interface Picture {
  format: string;
  mode: string;
  width: number;
  height: number;
  pixels: Buffer;
}

let images = 0;
/** Pillow's reading of an image the node rendered. */
function pillow(bytes: Uint8Array): Picture {
  const file = join(dir, `out-${images++}`);
  writeFileSync(file, bytes);
  const r = referee<Omit<Picture, 'pixels'> & { pixels: string }>('image', file);
  return { ...r, pixels: Buffer.from(r.pixels, 'base64') };
}

function metadata(file: string): DicomJsonDataset {
  return referee<DicomJsonDataset>('metadata', file);
}

/** The frame's stored pixels: the file's own native Pixel Data, or the first frame decoded by the pool. */
async function frameOf(pool: DecodePool, file: string, info: RenderInfo): Promise<DecodedFrame> {
  const native = referee<{ pixelData: string; transferSyntax: string }>('native', file);
  const bytes = Buffer.from(native.pixelData, 'base64');
  const ts = native.transferSyntax;
  if (ts === EXPLICIT_LE)
    return { pixels: bytes, photometricInterpretation: info.photometricInterpretation, planarConfiguration: info.planarConfiguration === 1 ? 1 : 0 };
  return pool.decode(ts, firstFragment(bytes), info);
}

/** The first frame of encapsulated Pixel Data with a single fragment per frame (as 693_J2KI.dcm has). */
function firstFragment(pixelData: Buffer): Buffer {
  const view = new DataView(pixelData.buffer, pixelData.byteOffset, pixelData.byteLength);
  let pos = 8 + view.getUint32(4, true); // Basic Offset Table item
  const length = view.getUint32(pos + 4, true);
  pos += 8;
  return pixelData.subarray(pos, pos + length);
}

if (missing !== undefined) throw new Error(`${missing}: run test/services/setup.sh as root`);

describe('rendered frames', () => {
  let pool: DecodePool;
  beforeAll(() => {
    pool = new DecodePool({ workers: 2 });
  });
  afterAll(async () => {
    await pool?.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  describe('a CT frame (693_J2KI.dcm: JPEG 2000, window 40/100, rescale intercept -1024)', () => {
    const file = join(TEST_FILES, '693_J2KI.dcm');
    let info: RenderInfo;
    let frame: DecodedFrame;
    let hu: Float64Array;
    beforeAll(async () => {
      info = renderInfoFromMetadata(metadata(file));
      frame = await frameOf(pool, file, info);
      const stored = new Int16Array(frame.pixels.buffer, frame.pixels.byteOffset, frame.pixels.length / 2);
      hu = Float64Array.from(stored, (v) => v * (info.rescaleSlope ?? 1) + (info.rescaleIntercept ?? 0));
    });

    it('reads the window and rescale from the DICOM JSON metadata', () => {
      expect(info).toMatchObject({
        rows: 512,
        columns: 512,
        bitsStored: 14,
        pixelRepresentation: 1,
        photometricInterpretation: 'MONOCHROME2',
        windowCenter: [40],
        windowWidth: [100],
        rescaleIntercept: -1024,
        rescaleSlope: 1,
      });
    });

    it('renders with its own window unless the query gives one, and the two differ as the windows say', async () => {
      const own = pillow(await renderFrame(frame, info, { format: 'image/png' }));
      const lung = pillow(await renderFrame(frame, info, { format: 'image/png', window: parseWindowParameter('-600,1500,linear') }));
      for (const p of [own, lung]) expect(p).toMatchObject({ format: 'PNG', mode: 'L', width: 512, height: 512 });
      // PS3.3 C.11.2.1.2 LINEAR: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 255.
      const expected = (x: number, c: number, w: number): number =>
        x <= c - 0.5 - (w - 1) / 2 ? 0 : x > c - 0.5 + (w - 1) / 2 ? 255 : ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
      let ownOff = 0;
      let lungOff = 0;
      let lungTissue = 0;
      let lungTissueShown = 0;
      let lungTissueBlackInOwn = 0;
      for (let i = 0; i < hu.length; i++) {
        ownOff = Math.max(ownOff, Math.abs(own.pixels[i]! - expected(hu[i]!, 40, 100)));
        lungOff = Math.max(lungOff, Math.abs(lung.pixels[i]! - expected(hu[i]!, -600, 1500)));
        if (hu[i]! > -900 && hu[i]! < -400) {
          lungTissue++;
          if (own.pixels[i] === 0) lungTissueBlackInOwn++; // black under the soft-tissue window
          if (lung.pixels[i]! > 0 && lung.pixels[i]! < 255) lungTissueShown++; // grey under the lung window
        }
      }
      expect(ownOff).toBeLessThanOrEqual(0.5); // the equation, rounded
      expect(lungOff).toBeLessThanOrEqual(0.5);
      expect(lungTissue).toBeGreaterThan(1000);
      expect(lungTissueBlackInOwn).toBe(lungTissue);
      expect(lungTissueShown).toBe(lungTissue);
      expect(own.pixels.equals(lung.pixels)).toBe(false);
    });

    it('inverts MONOCHROME1', async () => {
      const mono2 = pillow(await renderFrame(frame, info, { format: 'image/png' }));
      const inverted: RenderInfo = { ...info, photometricInterpretation: 'MONOCHROME1' };
      const mono1 = pillow(await renderFrame({ ...frame, photometricInterpretation: 'MONOCHROME1' }, inverted, { format: 'image/png' }));
      expect(mono1.pixels.equals(Buffer.from(mono2.pixels.map((v) => 255 - v)))).toBe(true);
      expect(mono2.pixels.some((v) => v !== 127 && v !== 128)).toBe(true);
    });

    it('encodes JPEG that Pillow reads back at the size, close to the lossless PNG, smaller at lower quality', async () => {
      const png = pillow(await renderFrame(frame, info, { format: 'image/png' }));
      const q90 = await renderFrame(frame, info, { format: 'image/jpeg', quality: 90 });
      const q30 = await renderFrame(frame, info, { format: 'image/jpeg', quality: 30 });
      const jpeg = pillow(q90);
      expect(jpeg).toMatchObject({ format: 'JPEG', mode: 'L', width: 512, height: 512 });
      let sum = 0;
      for (let i = 0; i < png.pixels.length; i++) sum += Math.abs(jpeg.pixels[i]! - png.pixels[i]!);
      expect(sum / png.pixels.length).toBeLessThan(2);
      expect(q30.length).toBeLessThan(q90.length);
    });

    it('renders the same on the pool (decode and render in one trip) as here', async () => {
      const here = await renderFrame(frame, info, { format: 'image/png', window: parseWindowParameter('40,400,sigmoid') });
      const native = Buffer.from(referee<{ pixelData: string }>('native', file).pixelData, 'base64');
      const there = await pool.render('1.2.840.10008.1.2.4.91', firstFragment(native), info, {
        format: 'image/png',
        window: parseWindowParameter('40,400,sigmoid'),
      });
      expect(Buffer.from(there).equals(Buffer.from(here))).toBe(true);
    });

    it('makes a thumbnail of at most THUMBNAIL_SIZE pixels, or fits a given box, keeping the aspect', async () => {
      expect(pillow(await renderThumbnail(frame, info))).toMatchObject({ format: 'JPEG', width: THUMBNAIL_SIZE, height: THUMBNAIL_SIZE });
      expect(pillow(await renderFrame(frame, info, { format: 'image/png', size: { width: 300, height: 100 } }))).toMatchObject({ width: 100, height: 100 });
    });
  });

  it('fits a tall frame (JPEG-lossy.dcm, 256 x 1024, 12-bit JPEG) into a thumbnail keeping its aspect', async () => {
    const file = join(TEST_FILES, 'JPEG-lossy.dcm');
    const info = renderInfoFromMetadata(metadata(file));
    const frame = await frameOf(pool, file, info);
    const thumb = pillow(await renderThumbnail(frame, info, { format: 'image/png' }));
    expect(thumb).toMatchObject({ format: 'PNG', mode: 'L', width: 32, height: 128 });
    // No window in the file: the frame's own range, end to end.
    expect(Math.max(...thumb.pixels)).toBeGreaterThan(200);
    expect(Math.min(...thumb.pixels)).toBeLessThanOrEqual(2); // area-averaged: a thumbnail pixel is rarely all background
    // A frame smaller than a thumbnail is not enlarged.
    expect(thumbnailOptions({ rows: 3, columns: 3 }).size).toEqual({ width: 3, height: 3 });
  });

  it('maps a frame without a window from its minimum to black and its maximum to white (CT_small.dcm)', async () => {
    const file = join(TEST_FILES, 'CT_small.dcm');
    const info = renderInfoFromMetadata(metadata(file));
    expect(info.windowCenter).toBeUndefined();
    const png = pillow(await renderFrame(await frameOf(pool, file, info), info, { format: 'image/png' }));
    expect(Math.min(...png.pixels)).toBe(0);
    expect(Math.max(...png.pixels)).toBe(255);
  });

  it('renders colour: JPEG YBR_FULL decoded to RGB shows the same pixels as GDCM decodes (SC_rgb_jpeg_dcmtk.dcm)', async () => {
    const file = join(TEST_FILES, 'SC_rgb_jpeg_dcmtk.dcm');
    const info = renderInfoFromMetadata(metadata(file));
    const frame = await frameOf(pool, file, info);
    const png = pillow(await renderFrame(frame, info, { format: 'image/png' }));
    expect(png).toMatchObject({ mode: 'RGB', width: 100, height: 100 });
    expect(png.pixels.equals(Buffer.from(frame.pixels))).toBe(true);
    expect([...png.pixels.subarray(0, 3)]).toEqual([254, 0, 0]); // the top bar is red
  });

  it('renders native YBR_FULL_422 as pydicom converts it to RGB (SC_ybr_full_422_uncompressed.dcm)', async () => {
    const file = join(TEST_FILES, 'SC_ybr_full_422_uncompressed.dcm');
    const info = renderInfoFromMetadata(metadata(file));
    const ref = referee<{ pixelData: string; rgb: string }>('native', file);
    const png = pillow(await pool.render(EXPLICIT_LE, Buffer.from(ref.pixelData, 'base64'), info, { format: 'image/png' }));
    const rgb = Buffer.from(ref.rgb, 'base64');
    expect(png).toMatchObject({ mode: 'RGB', width: 100, height: 100 });
    let max = 0;
    for (let i = 0; i < rgb.length; i++) max = Math.max(max, Math.abs(png.pixels[i]! - rgb[i]!));
    expect(max).toBeLessThanOrEqual(1); // rounding of the same PS3.3 C.7.6.3.1.2 equations
  });

  it('renders PALETTE COLOR through the palette, as pydicom applies it (HOT_IRON, 8- and 16-bit entries)', async () => {
    const palette = metadata(join(PYDICOM_DATA, 'palettes', 'hotiron.dcm'));
    const image: DicomJsonDataset = {
      ...palette,
      '00280002': { vr: 'US', Value: [1] },
      '00280004': { vr: 'CS', Value: ['PALETTE COLOR'] },
      '00280010': { vr: 'US', Value: [16] },
      '00280011': { vr: 'US', Value: [16] },
      '00280100': { vr: 'US', Value: [8] },
      '00280101': { vr: 'US', Value: [8] },
      '00280103': { vr: 'US', Value: [0] },
    };
    const info = renderInfoFromMetadata(image);
    expect(info.palette?.red.descriptor).toEqual([256, 0, 8]);
    const values = Uint8Array.from({ length: 256 }, (_, i) => i);
    const expected = Buffer.from(referee<{ rgb: string }>('palette', 'HOT_IRON').rgb, 'base64');
    const eight = pillow(
      await renderFrame({ pixels: values, photometricInterpretation: 'PALETTE COLOR', planarConfiguration: 0 }, info, { format: 'image/png' }),
    );
    expect(eight.mode).toBe('RGB');
    expect(eight.pixels.equals(expected)).toBe(true);
    // The same palette in 16-bit entries (value x 257): the top 8 bits are shown.
    const wide = (lut: NonNullable<RenderInfo['palette']>['red']) => ({ descriptor: [256, 0, 16] as const, data: Uint16Array.from(lut.data, (v) => v * 257) });
    const sixteen: RenderInfo = { ...info, palette: { red: wide(info.palette!.red), green: wide(info.palette!.green), blue: wide(info.palette!.blue) } };
    const out = pillow(
      await renderFrame({ pixels: values, photometricInterpretation: 'PALETTE COLOR', planarConfiguration: 0 }, sixteen, { format: 'image/png' }),
    );
    expect(out.pixels.equals(expected)).toBe(true);
  });

  it('parses the PS3.18 window parameter and refuses bad ones with INVALID_QUERY', () => {
    expect(parseWindowParameter('40,400,linear')).toEqual({ center: 40, width: 400, function: 'LINEAR' });
    expect(parseWindowParameter('-600, 1500, linear-exact')).toEqual({ center: -600, width: 1500, function: 'LINEAR_EXACT' });
    expect(parseWindowParameter('0.5,2e2,SIGMOID')).toEqual({ center: 0.5, width: 200, function: 'SIGMOID' });
    for (const bad of ['40,400', '40,400,gamma', 'a,400,linear', '40,0.5,linear', '40,0,sigmoid', '40,-3,linear-exact']) {
      expect(() => parseWindowParameter(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_QUERY' }));
    }
  });

  it('computes the three VOI LUT functions of PS3.3 C.11.2.1.2', () => {
    const w = { center: 100, width: 50 };
    expect(applyVoi(75, { ...w, function: 'LINEAR_EXACT' })).toBe(0);
    expect(applyVoi(125, { ...w, function: 'LINEAR_EXACT' })).toBe(255);
    expect(applyVoi(100, { ...w, function: 'LINEAR_EXACT' })).toBe(128); // 127.5 rounded
    expect(applyVoi(100, { ...w, function: 'SIGMOID' })).toBe(128);
    expect(applyVoi(100 + 50, { ...w, function: 'SIGMOID' })).toBe(Math.round(255 / (1 + Math.exp(-4))));
    expect(applyVoi(75, { ...w, function: 'LINEAR' })).toBe(0);
    expect(applyVoi(125, { ...w, function: 'LINEAR' })).toBe(255);
  });

  it('refuses a bad quality or size with INVALID_QUERY', async () => {
    const info: RenderInfo = {
      rows: 2,
      columns: 2,
      samplesPerPixel: 1,
      bitsAllocated: 8,
      bitsStored: 8,
      pixelRepresentation: 0,
      photometricInterpretation: 'MONOCHROME2',
      planarConfiguration: 0,
    };
    const frame: DecodedFrame = { pixels: Uint8Array.from([0, 1, 2, 3]), photometricInterpretation: 'MONOCHROME2', planarConfiguration: 0 };
    await expect(renderFrame(frame, info, { format: 'image/jpeg', quality: 0 })).rejects.toMatchObject({ code: 'INVALID_QUERY' });
    await expect(renderFrame(frame, info, { format: 'image/png', size: { width: 0, height: 10 } })).rejects.toMatchObject({ code: 'INVALID_QUERY' });
  });
});
