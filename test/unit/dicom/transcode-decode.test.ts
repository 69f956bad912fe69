// Transcoding compressed instances with their frames decoded (by the decode pool's workers) to
// native Explicit VR LE, checked by pydicom: the same elements apart from those a decoded instance
// rewrites, and for lossless sources the same pixels.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isVaultError, VaultError } from '../../../src/core/errors.ts';
import { DecodePool } from '../../../src/dicom/codecs/index.ts';
import { decodedLayout, frameInfoOf } from '../../../src/dicom/decompress.ts';
import type { ScannedInstance } from '../../../src/dicom/model.ts';
import { transcode, type FrameDecoder } from '../../../src/dicom/transcode.ts';
import { EXPLICIT_VR_LE } from '../../../src/dicom/transfer-syntax.ts';
import { PYDICOM_DATA } from '../../support/pydicom.ts';
import { collect, failure, pieces, pydicomCompare, scan } from '../../support/transcode.ts';

const TEST_FILES = join(PYDICOM_DATA, 'test_files');
const INSTANCES = new URL('../../support/instances.py', import.meta.url).pathname;

describe('transcoding compressed instances with a decoder', () => {
  let tmp: string;
  let pool: DecodePool;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'transcode-decode-'));
    pool = new DecodePool({ workers: 2 });
  });
  afterAll(async () => {
    rmSync(tmp, { recursive: true, force: true });
    await pool?.close();
  });

  const decoderOf = (scanned: ScannedInstance): FrameDecoder => {
    const info = frameInfoOf(scanned.metadata);
    return { decode: (encoded) => pool.decode(scanned.transferSyntaxUID, encoded, info) };
  };

  /** Every frame of an instance decoded by the pool directly, joined. */
  const decodedFrames = async (bytes: Buffer, scanned: ScannedInstance): Promise<Buffer> => {
    const info = frameInfoOf(scanned.metadata);
    const out: Uint8Array[] = [];
    for (const ranges of scanned.layout.frames) {
      const frame = Buffer.concat(ranges.map((r) => bytes.subarray(r.offset, r.offset + r.length)));
      out.push((await pool.decode(scanned.transferSyntaxUID, frame, info)).pixels);
    }
    return Buffer.concat(out);
  };

  // Which elements a decoded instance rewrites: Photometric Interpretation, Planar Configuration,
  // Lossy Image Compression (and the Extended Offset Table, which it drops).
  const REWRITTEN = '00280004,00280006,00282110,7FE00001,7FE00002';

  for (const [name, lossless] of [
    ['JPEG2000.dcm', false],
    ['MR_small_jp2klossless.dcm', true],
    ['SC_rgb_dcmtk_+eb+cy+np.dcm', false],
    ['SC_rgb_rle_2frame.dcm', true],
    ['SC_rgb_small_odd_jpeg.dcm', false],
    ['rtdose_rle.dcm', true],
    ['GDCMJ2K_TextGBR.dcm', true],
  ] as const) {
    it(`decodes ${name}: native Pixel Data of the decoded frames, a header that says what they are, the rest unchanged`, async () => {
      const bytes = readFileSync(join(TEST_FILES, name));
      const scanned = scan(bytes);
      const layout = decodedLayout(scanned.transferSyntaxUID, scanned.metadata);
      const sizes = [1, 7, 333, 4096];
      let i = 0;
      const out = await collect(
        transcode(
          pieces(bytes, () => sizes[i++ % sizes.length]!),
          scanned,
          { decoder: decoderOf(scanned) },
        ),
      );
      // Chunking and how many frames are decoded at once change nothing.
      expect(
        Buffer.compare(
          await collect(
            transcode(
              pieces(bytes, () => bytes.length),
              scanned,
              { decoder: decoderOf(scanned), decodeAhead: 1 },
            ),
          ),
          out,
        ),
      ).toBe(0);
      const again = scan(out);
      expect(again.transferSyntaxUID).toBe(EXPLICIT_VR_LE);
      expect(again.layout.pixelData).toMatchObject({ encapsulated: false, vr: layout.vr, valueLength: layout.pixelDataLength });
      expect(again.layout.pixelData!.valueLength % 2).toBe(0);
      const pd = again.layout.pixelData!;
      expect(out.subarray(pd.valueOffset, pd.valueOffset + layout.frames * layout.frameLength).equals(await decodedFrames(bytes, scanned))).toBe(true);
      expect(again.metadata['00280004']!.Value).toEqual([layout.photometricInterpretation]);
      if (layout.info.samplesPerPixel === 3) expect(again.metadata['00280006']!.Value).toEqual([0]);
      if (layout.lossy) expect(again.metadata['00282110']!.Value).toEqual(['01']);
      const path = join(tmp, name);
      writeFileSync(path, out);
      const verdict = pydicomCompare(join(TEST_FILES, name), path, undefined, { IGNORE: REWRITTEN });
      expect(verdict.differences).toEqual([]);
      // pydicom decodes the original with GDCM: lossless data must come out the same.
      if (lossless) expect(verdict.pixels).toBe('equal');
    });
  }

  it('joins frames of several fragments, as the offset table groups them', async () => {
    const bytes = readFileSync(join(TEST_FILES, 'SC_rgb_rle_2frame.dcm'));
    const path = join(tmp, 'three-fragments.dcm');
    execFileSync('/usr/bin/python3', [INSTANCES, 'refragment', join(TEST_FILES, 'SC_rgb_rle_2frame.dcm'), path, '3', 'table']);
    const split = readFileSync(path);
    const scanned = scan(split);
    expect(scanned.layout.frames.map((f) => f.length)).toEqual([3, 3]);
    const out = await collect(
      transcode(
        pieces(split, () => 500),
        scanned,
        { decoder: decoderOf(scanned) },
      ),
    );
    const original = scan(bytes);
    const expected = await decodedFrames(bytes, original);
    const pd = scan(out).layout.pixelData!;
    expect(out.subarray(pd.valueOffset, pd.valueOffset + pd.valueLength).equals(expected)).toBe(true);
  });

  it('decodes at most decodeAhead frames at once, and more than one', async () => {
    const bytes = readFileSync(join(TEST_FILES, 'rtdose_rle.dcm'));
    const scanned = scan(bytes);
    const inner = decoderOf(scanned);
    let running = 0;
    let most = 0;
    const counting: FrameDecoder = {
      decode: async (encoded, n) => {
        most = Math.max(most, ++running);
        try {
          await new Promise((r) => setTimeout(r, 5));
          return await inner.decode(encoded, n);
        } finally {
          running--;
        }
      },
    };
    await collect(
      transcode(
        pieces(bytes, () => bytes.length),
        scanned,
        { decoder: counting, decodeAhead: 3 },
      ),
    );
    expect(most).toBe(3);
  });

  it('ends with the decoder’s error when a frame fails, after the header', async () => {
    const bytes = readFileSync(join(TEST_FILES, 'rtdose_rle.dcm'));
    const scanned = scan(bytes);
    const inner = decoderOf(scanned);
    const failing: FrameDecoder = {
      decode: (encoded, n) => (n === 7 ? Promise.reject(new VaultError('DECODE_FAILED', 'frame 7 is broken')) : inner.decode(encoded, n)),
    };
    const got: Uint8Array[] = [];
    let caught: unknown;
    try {
      for await (const piece of transcode(
        pieces(bytes, () => 1000),
        scanned,
        { decoder: failing },
      ))
        got.push(piece);
    } catch (err) {
      caught = err;
    }
    expect(isVaultError(caught, 'DECODE_FAILED')).toBe(true);
    expect(Buffer.concat(got).subarray(128, 132).toString()).toBe('DICM');
    const frameLength = decodedLayout(scanned.transferSyntaxUID, scanned.metadata).frameLength;
    // Frames 1 to 6 went out, nothing of frame 7 or after.
    expect(Buffer.concat(got).length).toBeLessThan(bytes.length + 7 * frameLength);
  });

  it('refuses fragments that are not where the layout says (INSTANCE_CORRUPT), and a source without a decoder (NOT_ACCEPTABLE)', async () => {
    const bytes = readFileSync(join(TEST_FILES, 'SC_rgb_rle_2frame.dcm'));
    const scanned = scan(bytes);
    const moved: ScannedInstance = {
      ...scanned,
      layout: { ...scanned.layout, frames: scanned.layout.frames.map((f) => f.map((r) => ({ offset: r.offset + 2, length: r.length }))) },
    };
    expect(
      isVaultError(
        await failure(
          transcode(
            pieces(bytes, () => 100),
            moved,
            { decoder: decoderOf(scanned) },
          ),
        ),
        'INSTANCE_CORRUPT',
      ),
    ).toBe(true);
    expect(
      isVaultError(
        await failure(
          transcode(
            pieces(bytes, () => 100),
            scanned,
          ),
        ),
        'NOT_ACCEPTABLE',
      ),
    ).toBe(true);
    const lost: ScannedInstance = { ...scanned, layout: { ...scanned.layout, frames: [] } };
    const err = await failure(
      transcode(
        pieces(bytes, () => 100),
        lost,
        { decoder: decoderOf(scanned) },
      ),
    );
    expect(isVaultError(err, 'NOT_ACCEPTABLE')).toBe(true);
    expect((err as Error).message).toMatch(/cannot be located among its fragments/);
  });
});
