// WADO-RS decoding compressed instances, over real HTTP against a running node: every compressed
// file of pydicom's test set (and the DCMTK-, OpenJPH- and pydicom-made ones for the syntaxes it
// lacks) stored with STOW, then retrieved with the default Accept and as frames. pydicom reads
// what comes back (an independent parser: it must be Explicit VR Little Endian with a consistent
// header) and its pixels must be what the referees (GDCM, Pillow, pydicom's RLE decoder; see
// test/support/codec-referee.py) decode from the original. Then what cannot be done: corrupt
// codestreams, syntaxes nothing here writes or reads, frames past the last, fragment tables that
// lie; and a deflated instance's Pixel Data as bulk data.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, phantom } from '../../../../bench/decode.ts';
import type { FrameInfo } from '../../../../src/dicom/codecs/frame.ts';
import { difference, missingReferees, prepareFixtures, PYTHON, type Fixtures, type ManifestEntry } from '../../../support/codec-fixtures.ts';
import { getRaw, retrieve, stow } from '../../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../../support/node.ts';
import { PYDICOM_DATA } from '../../../support/pydicom.ts';

const P = '1.2.840.10008.1.2';
const EXPLICIT_VR_LE = `${P}.1`;
const DICOM = 'multipart/related; type="application/dicom"';
const OCTETS = 'multipart/related; type="application/octet-stream"';
const TEST_FILES = join(PYDICOM_DATA, 'test_files');
const INSTANCES = new URL('../../../support/instances.py', import.meta.url).pathname;

/**
 * Lossy syntaxes: how far a sample may be from the referee's (the same bounds, for the same
 * reasons, as test/unit/dicom/codecs.test.ts: libjpeg's fixed-point colour conversion against
 * pydicom's floating-point one; floating-point 9/7 wavelets). Everything else byte-exact.
 */
const TOLERANCE: Record<string, { max: number; mean: number }> = {
  [`${P}.4.50`]: { max: 1, mean: 0.05 },
  [`${P}.4.91`]: { max: 1, mean: 0.01 },
  [`${P}.4.203`]: { max: 1, mean: 0.01 },
};

/** Syntaxes lossy by definition: the decompressed instance must say Lossy Image Compression 01. */
const ALWAYS_LOSSY = new Set([`${P}.4.50`, `${P}.4.51`, `${P}.4.81`]);

/** A compressed file of pydicom's set no decoder (ours or GDCM) reads correctly (see codecs.test.ts). */
const KNOWN_BROKEN = 'JPEG2000-embedded-sequence-delimiter.dcm';

/** pydicom's reading of a retrieved instance: its encoding, Image Pixel module, and pixels (written to a file). */
const READ = `
import sys, json, warnings
import pydicom
from pydicom import config
from pydicom.pixel_data_handlers import numpy_handler
warnings.simplefilter('ignore')
ds = pydicom.dcmread(sys.argv[1])
config.pixel_data_handlers = [numpy_handler]
arr = ds.pixel_array
with open(sys.argv[2], 'wb') as f:
    f.write(arr.astype(arr.dtype.newbyteorder('<')).tobytes())
print(json.dumps({
    'transferSyntax': str(ds.file_meta.TransferSyntaxUID),
    'implicit': ds.is_implicit_VR, 'littleEndian': ds.is_little_endian,
    'photometric': str(ds.PhotometricInterpretation),
    'planar': int(ds.PlanarConfiguration) if 'PlanarConfiguration' in ds else None,
    'lossy': ds.get('LossyImageCompression'),
    'frames': int(ds.get('NumberOfFrames', 1) or 1),
    'vr': ds['PixelData'].VR, 'length': len(ds.PixelData),
    'extendedOffsetTable': 'ExtendedOffsetTable' in ds,
}))
`;

interface PydicomReading {
  transferSyntax: string;
  implicit: boolean;
  littleEndian: boolean;
  photometric: string;
  planar: number | null;
  lossy: string | undefined;
  frames: number;
  vr: string;
  length: number;
  extendedOffsetTable: boolean;
  pixels: Buffer;
}

function pydicomRead(file: string): PydicomReading {
  const pixels = `${file}.pixels`;
  const out = execFileSync(PYTHON, ['-c', READ, file, pixels], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return { ...JSON.parse(out), pixels: readFileSync(pixels) };
}

function python(...args: string[]): void {
  execFileSync(PYTHON, [INSTANCES, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

const missing = missingReferees();
const dir = missing === undefined ? mkdtempSync(join(tmpdir(), 'wado-decode-')) : '';
const fixtures: Fixtures | undefined = missing === undefined ? await prepareFixtures(dir) : undefined;

/** Part 10 files to store, with the manifest entry whose referee pixels they must decode to. */
function cases(f: Fixtures): Array<{ name: string; file: string; entry: ManifestEntry }> {
  const out: Array<{ name: string; file: string; entry: ManifestEntry }> = [];
  for (const e of f.manifest) {
    if (e.notCompressed !== undefined || e.native === true || e.skipped !== undefined) continue;
    if (e.name.endsWith('.j2c')) {
      // An HTJ2K codestream: wrapped in a Part 10 instance with its original's Image Pixel module.
      const made = f.made.find((m) => m.name === e.name)!;
      const file = join(f.dir, `${e.name}.dcm`);
      python('wrap', join(TEST_FILES, made.original), made.transferSyntax, file, join(f.dir, e.encoded![0]!));
      out.push({ name: `${e.name} (wrapped)`, file, entry: e });
    } else {
      const made = f.made.some((m) => m.name === e.name);
      out.push({ name: e.name, file: made ? join(f.dir, e.name) : join(TEST_FILES, e.name), entry: e });
    }
  }
  return out;
}

if (missing !== undefined) throw new Error(`${missing}: run test/services/setup.sh as root`);

describe('WADO-RS decodes compressed instances', () => {
  let node: TestNode;
  const f = fixtures!;
  const results: string[] = [];
  beforeAll(async () => {
    // Chunks smaller than most of these files: frames cross chunk boundaries.
    node = await startTestNode({ chunkSize: 8192 });
  });
  afterAll(async () => {
    await node?.stop();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
    if (results.length > 0) console.log(`decoded through WADO-RS:\n${results.join('\n')}`);
  });

  const store = async (bytes: Uint8Array): Promise<string> => {
    const r = await stow(node.url, [bytes]);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body['00081199']!.Value![0]['00081190'].Value[0];
  };

  const compare = (name: string, e: ManifestEntry, ours: Buffer, frame?: number): string => {
    const refs = (frame === undefined ? e.reference! : [e.reference![frame]!]).map((r) => f.read(r));
    const ref = Buffer.concat(refs);
    expect(ours.length, `${name}: length`).toBe(ref.length);
    const tolerance = TOLERANCE[e.transferSyntax!];
    if (tolerance === undefined) {
      expect(ours.equals(ref), `${name}: byte-exact`).toBe(true);
      return 'exact';
    }
    const d = difference(ours, ref, e.info!);
    expect(d.max, name).toBeLessThanOrEqual(tolerance.max);
    expect(d.mean, name).toBeLessThanOrEqual(tolerance.mean);
    return d.max === 0 ? 'exact' : `max ${d.max}, mean ${d.mean.toFixed(4)}`;
  };

  for (const c of fixtures === undefined ? [] : cases(fixtures)) {
    const e = c.entry;
    if (c.name === KNOWN_BROKEN) continue; // below, with the corrupt ones
    it(`${c.name} (${e.transferSyntax}, ${e.frames} frame(s)): default Accept brings Explicit VR LE with the referee's pixels; so do its frames`, async () => {
      const url = await store(readFileSync(c.file));
      const r = await retrieve(url, DICOM);
      expect(r.status, r.raw.toString().slice(0, 300)).toBe(200);
      expect(r.parts).toHaveLength(1);
      expect(r.parts[0]!.headers['content-type']).toBe(`application/dicom; transfer-syntax=${EXPLICIT_VR_LE}`);
      const file = join(dir, `${c.name}.out.dcm`);
      writeFileSync(file, r.parts[0]!.body);
      const read = pydicomRead(file);
      expect(read).toMatchObject({
        transferSyntax: EXPLICIT_VR_LE,
        implicit: false,
        littleEndian: true,
        photometric: e.refereePhotometric,
        frames: e.frames,
        extendedOffsetTable: false,
      });
      expect(read.vr).toBe(e.info!.bitsAllocated > 8 ? 'OW' : 'OB');
      const total = e.frames! * e.info!.rows * e.info!.columns * e.info!.samplesPerPixel * (e.info!.bitsAllocated / 8);
      expect(read.length).toBe(total + (total % 2));
      if (e.info!.samplesPerPixel === 3) expect(read.planar).toBe(0);
      if (ALWAYS_LOSSY.has(e.transferSyntax!)) expect(read.lossy).toBe('01');
      const verdict = compare(c.name, e, read.pixels);

      // Every frame, last first, decoded: each the referee's frame.
      const numbers = Array.from({ length: e.frames! }, (_, i) => e.frames! - i);
      const frames = await retrieve(`${url}/frames/${numbers.join(',')}`, OCTETS);
      expect(frames.status, frames.raw.toString().slice(0, 300)).toBe(200);
      expect(frames.parts.map((p) => p.headers['content-type'])).toEqual(numbers.map(() => `application/octet-stream; transfer-syntax=${EXPLICIT_VR_LE}`));
      for (const [i, n] of numbers.entries()) compare(`${c.name} frame ${n}`, e, frames.parts[i]!.body, n - 1);
      results.push(`${c.name}\t${e.transferSyntax}\t${e.frames} frame(s)\t${verdict}`);
    });
  }

  it('decodes for Accept */*, for an explicit Explicit VR LE, and writes Implicit VR LE and Deflated when asked; transfer-syntax=* and the stored syntax bring the bytes as stored', async () => {
    const e = f.entry('SC_rgb_dcmtk_+eb+cy+np.dcm'); // YBR_FULL_422 JPEG baseline
    const bytes = readFileSync(join(TEST_FILES, e.name));
    const url = await store(bytes);
    for (const [accept, ts] of [
      ['*/*', EXPLICIT_VR_LE],
      [`${DICOM}; transfer-syntax=${EXPLICIT_VR_LE}`, EXPLICIT_VR_LE],
      [`${DICOM}; transfer-syntax=${P}`, P],
      [`${DICOM}; transfer-syntax=${P}.1.99`, `${P}.1.99`],
    ] as const) {
      const r = await retrieve(url, accept);
      expect(r.status, accept).toBe(200);
      expect(r.parts[0]!.headers['content-type'], accept).toBe(`application/dicom; transfer-syntax=${ts}`);
      const file = join(dir, `accept-${ts}.dcm`);
      writeFileSync(file, r.parts[0]!.body);
      const read = pydicomRead(file);
      expect(read, accept).toMatchObject({ transferSyntax: ts, implicit: ts === P, photometric: 'RGB', planar: 0, lossy: '01' });
      compare(`${e.name} as ${ts}`, e, read.pixels);
    }
    for (const accept of [`${DICOM}; transfer-syntax=*`, `${DICOM}; transfer-syntax=${P}.4.50`]) {
      const asStored = await retrieve(url, accept);
      expect(asStored.status).toBe(200);
      expect(asStored.parts[0]!.body.equals(bytes), accept).toBe(true);
    }
  });

  it('answers 406 with a reason for a syntax nothing here writes, or reads', async () => {
    const native = await store(readFileSync(join(TEST_FILES, 'CT_small.dcm')));
    for (const [ts, reason] of [
      [`${P}.4.90`, /no encoder here writes 1\.2\.840\.10008\.1\.2\.4\.90/],
      [`${P}.4.100`, /no encoder here writes/],
      [`${P}.2`, /Explicit VR Big Endian .* is retired/],
    ] as const) {
      const r = await retrieve(native, `${DICOM}; transfer-syntax=${ts}`);
      expect(r.status, ts).toBe(406);
      const body = JSON.parse(r.raw.toString());
      expect(body.code).toBe('NOT_ACCEPTABLE');
      expect(body.message).toMatch(reason);
    }
    // An MPEG-2 instance: no decoder reads it, so it comes only as stored.
    const mpegFile = join(dir, 'mpeg2.dcm');
    const stream = join(dir, 'mpeg2.bin');
    writeFileSync(stream, Buffer.from([0x00, 0x00, 0x01, 0xb3, 0x12, 0x34]));
    python('wrap', join(TEST_FILES, 'SC_rgb_jpeg_dcmtk.dcm'), `${P}.4.100`, mpegFile, stream);
    const mpeg = await store(readFileSync(mpegFile));
    const r = await retrieve(mpeg, DICOM);
    expect(r.status).toBe(406);
    expect(JSON.parse(r.raw.toString()).message).toMatch(/no decoder here reads the pixel data of 1\.2\.840\.10008\.1\.2\.4\.100/);
    const frames = await retrieve(`${mpeg}/frames/1`, OCTETS);
    expect(frames.status).toBe(406);
    expect(JSON.parse(frames.raw.toString()).message).toMatch(/no decoder here reads/);
    const asVideo = await retrieve(`${mpeg}/frames/1`, 'multipart/related; type="video/mpeg"');
    expect(asVideo.status).toBe(200);
    expect(asVideo.parts[0]!.headers['content-type']).toBe(`video/mpeg; transfer-syntax=${P}.4.100`);
    expect((await retrieve(mpeg)).status).toBe(200); // transfer-syntax=*
  });

  it('serves compressed frames as stored under their own media type (image/jp2), and refuses another one', async () => {
    const e = f.entry('MR_small_jp2klossless.dcm');
    const url = await store(readFileSync(join(TEST_FILES, e.name)));
    const r = await retrieve(`${url}/frames/1`, 'multipart/related; type="image/jp2"');
    expect(r.status).toBe(200);
    expect(r.contentType).toMatch(/^multipart\/related; type="image\/jp2"/);
    expect(r.parts[0]!.headers['content-type']).toBe(`image/jp2; transfer-syntax=${P}.4.90`);
    expect(r.parts[0]!.body.equals(f.read(e.encoded![0]!))).toBe(true);
    expect((await retrieve(`${url}/frames/1`, 'multipart/related; type="image/jpeg"')).status).toBe(406);
  });

  it('answers 404 FRAME_NOT_FOUND for a frame past the last, compressed or not', async () => {
    for (const name of ['rtdose_rle.dcm', 'rtdose.dcm']) {
      const url = await store(readFileSync(join(TEST_FILES, name)));
      for (const accept of [OCTETS, `${OCTETS}; transfer-syntax=*`]) {
        const r = await retrieve(`${url}/frames/1,16`, accept);
        expect(r.status, `${name} ${accept}`).toBe(404);
        const body = JSON.parse(r.raw.toString());
        expect(body.code).toBe('FRAME_NOT_FOUND');
        expect(body.message).toBe('frame 16 requested, the instance has 15');
      }
      expect((await retrieve(`${url}/frames/15`, OCTETS)).status).toBe(200);
    }
  });

  it('says what is wrong with a fragment table that does not fit the frames, and still sends the instance as stored', async () => {
    const wrong = join(dir, 'wrong-table.dcm');
    const none = join(dir, 'no-table.dcm');
    python('refragment', join(TEST_FILES, 'rtdose_rle.dcm'), wrong, '2', 'wrong');
    python('refragment', join(TEST_FILES, 'rtdose_rle.dcm'), none, '2', 'none');
    for (const [file, reason] of [
      [wrong, /cannot be located: entry 2 of its Basic Offset Table \(\d+\) is not where a fragment starts .*Number of Frames is 15/],
      [none, /cannot be located: its 30 fragments cannot be grouped into its 15 frames: no Basic Offset Table/],
    ] as const) {
      const bytes = readFileSync(file);
      const url = await store(bytes);
      for (const accept of [OCTETS, `${OCTETS}; transfer-syntax=*`]) {
        const r = await retrieve(`${url}/frames/1`, accept);
        expect(r.status).toBe(406);
        const body = JSON.parse(r.raw.toString());
        expect(body.code).toBe('NOT_ACCEPTABLE');
        expect(body.message).toMatch(reason);
        expect(body.message).not.toMatch(/deflated|no pixel data/i);
      }
      const whole = await retrieve(url, DICOM);
      expect(whole.status).toBe(406);
      expect(JSON.parse(whole.raw.toString()).message).toMatch(/the 15 frames of its Pixel Data cannot be located among its fragments/);
      const stored = await retrieve(url);
      expect(stored.status).toBe(200);
      expect(stored.parts[0]!.body.equals(bytes)).toBe(true);
    }
  });

  it("gives a deflated instance's Pixel Data a BulkDataURI that brings pydicom's pixel bytes; its frames and default retrieval too", async () => {
    const bytes = readFileSync(join(TEST_FILES, 'image_dfl.dcm'));
    const url = await store(bytes);
    const [meta] = (await (await fetch(`${url}/metadata`)).json()) as Array<Record<string, { vr: string; BulkDataURI?: string; InlineBinary?: string }>>;
    expect(meta!['7FE00010']).toEqual({ vr: 'OB', BulkDataURI: `${url}/bulk/7FE00010` });
    const expected = Buffer.from(
      execFileSync(PYTHON, ['-c', 'import sys, pydicom; sys.stdout.buffer.write(pydicom.dcmread(sys.argv[1]).PixelData)', join(TEST_FILES, 'image_dfl.dcm')]),
    );
    expect(expected.length).toBe(512 * 512);
    const bulk = await retrieve(meta!['7FE00010']!.BulkDataURI!, OCTETS);
    expect(bulk.status).toBe(200);
    expect(bulk.parts).toHaveLength(1);
    expect(bulk.parts[0]!.headers['content-type']).toBe(`application/octet-stream; transfer-syntax=${EXPLICIT_VR_LE}`);
    expect(bulk.parts[0]!.body.equals(expected)).toBe(true);
    const frame = await retrieve(`${url}/frames/1`, OCTETS);
    expect(frame.status).toBe(200);
    expect(frame.parts[0]!.headers['content-type']).toBe(`application/octet-stream; transfer-syntax=${EXPLICIT_VR_LE}`);
    expect(frame.parts[0]!.body.equals(expected)).toBe(true);
    expect((await retrieve(`${url}/frames/2`, OCTETS)).status).toBe(404);
    expect((await retrieve(`${url}/bulk/00091010`, OCTETS)).status).toBe(404);
    const asStored = await retrieve(url);
    expect(asStored.parts[0]!.body.equals(bytes)).toBe(true);
    const file = join(dir, 'dfl.out.dcm');
    writeFileSync(file, (await retrieve(url, DICOM)).parts[0]!.body);
    expect(pydicomRead(file)).toMatchObject({ transferSyntax: EXPLICIT_VR_LE, pixels: expected });
  });

  describe('a corrupt codestream', () => {
    const failures = async (): Promise<number> => {
      const text = await (await fetch(`${new URL(node.url).origin}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`dicomvault_decode_failures_total{transfer_syntax="${P}.4.50"}`));
      return line === undefined ? 0 : Number(line.split(' ').pop());
    };

    it('breaks the response off (or answers 500 naming the instance), is counted in /metrics, and the node decodes on', async () => {
      const file = join(dir, 'garbage.dcm');
      python('garbage', join(TEST_FILES, 'SC_rgb_jpeg_dcmtk.dcm'), file);
      const url = await store(readFileSync(file));
      const sop = url.split('/').pop()!;
      const before = await failures();

      // The instance: its header goes out before its first frame is decoded.
      const whole = await getRaw(url, DICOM);
      if (whole.status === 200) expect(whole.complete).toBe(false);
      else expect(whole.status).toBe(500);
      // Its frame and its rendering: decoded before anything is sent.
      for (const [path, accept] of [
        ['frames/1', OCTETS],
        ['rendered', 'image/jpeg'],
      ]) {
        const r = await getRaw(`${url}/${path}`, accept);
        expect(r.status, path).toBe(500);
        const body = JSON.parse(r.body.toString());
        expect(body.code).toBe('DECODE_FAILED');
        expect(body.message).toContain(`frame 1 of instance ${sop}`);
        expect(body.message).toMatch(/JPEG/);
      }
      expect(await failures()).toBe(before + 3);

      // The node serves on: a good JPEG instance decodes, on the same workers.
      const e = f.entry('SC_rgb_jpeg_dcmtk.dcm');
      const good = await store(readFileSync(join(TEST_FILES, e.name)));
      const r = await retrieve(`${good}/frames/1`, OCTETS);
      expect(r.status).toBe(200);
      compare(e.name, e, r.parts[0]!.body, 0);
      expect(await failures()).toBe(before + 3);
    });

    it(`refuses ${KNOWN_BROKEN} (a SIZ marker overwritten) the same way`, async () => {
      const url = await store(readFileSync(join(TEST_FILES, KNOWN_BROKEN)));
      const r = await getRaw(`${url}/frames/1`, OCTETS);
      expect(r.status).toBe(500);
      expect(JSON.parse(r.body.toString())).toMatchObject({ code: 'DECODE_FAILED', message: expect.stringContaining('JPEG 2000') });
      const whole = await getRaw(url, DICOM);
      expect(whole.status === 500 || (whole.status === 200 && !whole.complete)).toBe(true);
    });
  });

  describe('decode throughput through WADO-RS', () => {
    // A 512 x 512 CT-like frame (bench/decode.ts phantom), encoded once, repeated: decoding costs the
    // same for each. Lossless, so every frame that comes back must be the phantom, exactly. 30
    // frames: a longer frame list is more than fastify's 100 characters of a URL parameter.
    const FRAMES = 30;
    const info: FrameInfo = {
      rows: 512,
      columns: 512,
      samplesPerPixel: 1,
      bitsAllocated: 16,
      bitsStored: 16,
      pixelRepresentation: 1,
      photometricInterpretation: 'MONOCHROME2',
      planarConfiguration: 0,
    };
    for (const [syntax, label] of [
      [`${P}.4.90`, 'JPEG 2000 lossless'],
      [`${P}.4.80`, 'JPEG-LS lossless'],
    ] as const) {
      it(`${label}: ${FRAMES} frames of 512 x 512, as an instance and as frames, every frame exact`, async () => {
        const pixels = phantom(512);
        const stream = join(dir, `phantom-${syntax}.bin`);
        writeFileSync(stream, await encodeFrame(syntax, pixels, info));
        const file = join(dir, `phantom-${syntax}.dcm`);
        python('wrap', join(TEST_FILES, 'CT_small.dcm'), syntax, file, '--size', '512x512', ...Array.from({ length: FRAMES }, () => stream));
        const url = await store(readFileSync(file));
        const start = performance.now();
        const r = await retrieve(url, DICOM);
        const instanceSeconds = (performance.now() - start) / 1000;
        expect(r.status).toBe(200);
        const out = join(dir, `phantom-${syntax}.out.dcm`);
        writeFileSync(out, r.parts[0]!.body);
        const read = pydicomRead(out);
        expect(read.frames).toBe(FRAMES);
        for (let n = 0; n < FRAMES; n++) {
          expect(read.pixels.subarray(n * pixels.length, (n + 1) * pixels.length).equals(Buffer.from(pixels)), `frame ${n + 1}`).toBe(true);
        }
        const t = performance.now();
        const frames = await retrieve(`${url}/frames/${Array.from({ length: FRAMES }, (_, i) => i + 1).join(',')}`, OCTETS);
        const framesSeconds = (performance.now() - t) / 1000;
        expect(frames.status, frames.raw.toString().slice(0, 300)).toBe(200);
        expect(frames.parts).toHaveLength(FRAMES);
        for (const p of frames.parts) expect(p.body.equals(Buffer.from(pixels))).toBe(true);
        results.push(
          `${label}\t${FRAMES} x 512x512\tinstance ${(FRAMES / instanceSeconds).toFixed(0)} frames/s\tframes ${(FRAMES / framesSeconds).toFixed(0)} frames/s`,
        );
      });
    }
  });
});
