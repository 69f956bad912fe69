// Streaming transcoding to Explicit VR Little Endian (the default of WADO-RS), Implicit VR LE and
// Deflated, and of compressed instances with their frames decoded, checked by pydicom: the
// transcoded file must hold the same elements and the same pixels as the original.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFileMeta } from '../../../src/dicom/file-meta.ts';
import { DicomScanner } from '../../../src/dicom/scanner.ts';
import type { ScannedInstance } from '../../../src/dicom/model.ts';
import { transcode, transcodeToExplicitLE, type FrameDecoder } from '../../../src/dicom/transcode.ts';
import { DecodePool } from '../../../src/dicom/codecs/index.ts';
import { decodedLayout, frameInfoOf } from '../../../src/dicom/decompress.ts';
import {
  DEFLATED_EXPLICIT_VR_LE,
  EXPLICIT_VR_BE,
  EXPLICIT_VR_LE,
  IMPLICIT_VR_LE,
  canTranscode,
  conversionRefusal,
  describeTransferSyntax,
} from '../../../src/dicom/transfer-syntax.ts';
import { isVaultError, VaultError } from '../../../src/core/errors.ts';
import { PYDICOM_DATA, requirePydicom } from '../../support/pydicom.ts';

const TEST_FILES = join(PYDICOM_DATA, 'test_files');
const INSTANCES = new URL('../../support/instances.py', import.meta.url).pathname;

/** Every pydicom test file in a transcodable encoding that is valid Part 10. */
const SOURCES = [
  'MR_small_implicit.dcm',
  'MR_small_bigendian.dcm',
  'MR_small_expb.dcm',
  'ExplVR_BigEnd.dcm',
  'SC_rgb_jpeg_dcmd.dcm',
  'image_dfl.dcm',
  'liver_expb_1frame.dcm',
  'rtdose.dcm',
  'rtdose_1frame.dcm',
  'rtdose_expb.dcm',
  'rtdose_expb_1frame.dcm',
  'rtplan.dcm',
  'nested_priv_SQ.dcm',
  'priv_SQ.dcm',
  'no_meta_group_length.dcm',
  'empty_charset_LEI.dcm',
];

/** Sources without an image (no Pixel Data, or no Rows to read it with). */
const NO_IMAGE = new Set(['rtplan.dcm', 'nested_priv_SQ.dcm', 'priv_SQ.dcm', 'no_meta_group_length.dcm', 'empty_charset_LEI.dcm']);

/** What the transcoder needs of the catalogue; enough for files that have no identity. */
function stored(bytes: Uint8Array): ScannedInstance {
  const meta = parseFileMeta(bytes, true)!;
  return {
    studyInstanceUID: '1.2.3',
    seriesInstanceUID: '1.2.3.4',
    sopInstanceUID: '1.2.3.4.5',
    sopClassUID: '1.2.3.4.5.6',
    transferSyntaxUID: meta.transferSyntaxUID,
    metadata: {},
    layout: { transferSyntaxUID: meta.transferSyntaxUID, datasetOffset: meta.datasetOffset, pixelData: null, frames: [], bulk: {} },
    size: bytes.length,
  };
}

async function* pieces(bytes: Uint8Array, size: (i: number) => number): AsyncGenerator<Uint8Array> {
  for (let pos = 0, i = 0; pos < bytes.length; i++) {
    const n = Math.max(1, size(i));
    yield bytes.subarray(pos, pos + n);
    pos += n;
  }
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of source) out.push(Buffer.from(c));
  return Buffer.concat(out);
}

async function failure(source: AsyncIterable<Uint8Array>): Promise<unknown> {
  try {
    await collect(source);
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

function scan(bytes: Uint8Array): ScannedInstance {
  const scanner = new DicomScanner();
  scanner.push(bytes);
  return scanner.end();
}

// pydicom compares original and transcoded: every element (values decoded by pydicom with
// each file's own encoding) and the pixel arrays. An optional third file must have the same pixels.
const COMPARE = `
import os, sys, json, warnings
import numpy as np, pydicom
warnings.simplefilter('ignore')
WIDTH = {'OW': 2, 'OF': 4, 'OL': 4, 'OD': 8, 'OV': 8}
EXPECT = os.environ.get('EXPECT_TS', '1.2.840.10008.1.2.1')
IMPLICIT = EXPECT == '1.2.840.10008.1.2'
# Elements the caller expects to differ (those a decoded instance rewrites), as 8 hex digits.
IGNORE = {int(t, 16) for t in os.environ.get('IGNORE', '').split(',') if t}

def compare(a, b, path, out, big):
    for e in a:
        if e.tag.element == 0 or e.tag == 0x7FE00010 or e.tag in IGNORE:
            continue
        # Read implicit, private elements have no VR to decode them with.
        if IMPLICIT and e.tag.is_private:
            continue
        p = path + '%08X' % e.tag
        if e.tag not in b:
            out.append(p + ' missing'); continue
        f = b[e.tag]
        if e.VR == 'SQ':
            if f.VR != 'SQ' or len(e.value) != len(f.value):
                out.append(p + ' sequence differs'); continue
            for i, (x, y) in enumerate(zip(e.value, f.value)):
                compare(x, y, p + '.' + str(i) + '.', out, big)
            continue
        v, w = e.value, f.value
        if big and e.VR in WIDTH and isinstance(v, bytes):
            n = len(v) - len(v) % WIDTH[e.VR]
            v = np.frombuffer(v[:n], '>u%d' % WIDTH[e.VR]).astype('<u%d' % WIDTH[e.VR]).tobytes() + v[n:]
        if v != w or (e.VR != f.VR and not IMPLICIT):
            out.append('%s %s/%s %r != %r' % (p, e.VR, f.VR, str(v)[:60], str(w)[:60]))
    for f in b:
        if f.tag.element != 0 and f.tag not in a and f.tag not in IGNORE:
            out.append(path + '%08X extra' % f.tag)

orig, new = pydicom.dcmread(sys.argv[1]), pydicom.dcmread(sys.argv[2])
out = []
if new.file_meta.TransferSyntaxUID != EXPECT or new.is_implicit_VR != IMPLICIT or not new.is_little_endian:
    out.append('not in ' + EXPECT)
for e in orig.file_meta:
    if e.tag not in (0x00020000, 0x00020010) and (e.tag not in new.file_meta or new.file_meta[e.tag].value != e.value):
        out.append('File Meta %s differs' % e.tag)
compare(orig, new, '', out, not orig.is_little_endian)
pixels = 'none'
if 'PixelData' in orig and 'Rows' in orig:
    pa, pb = orig.pixel_array, new.pixel_array
    if str(orig.PhotometricInterpretation) in ('YBR_FULL', 'YBR_FULL_422') and str(new.PhotometricInterpretation) == 'RGB':
        from pydicom.pixel_data_handlers.util import convert_color_space
        pa = convert_color_space(pa, 'YBR_FULL', 'RGB')
    pixels = 'equal' if pa.shape == pb.shape and np.array_equal(pa, pb) else 'different'
    if len(sys.argv) > 3:
        pc = pydicom.dcmread(sys.argv[3]).pixel_array
        if not np.array_equal(pb, pc):
            pixels = 'different from ' + sys.argv[3]
print(json.dumps({'differences': out, 'pixels': pixels}))
`;

function pydicomCompare(
  original: string,
  transcoded: string,
  sameImageAs?: string,
  env: { EXPECT_TS?: string; IGNORE?: string } = {},
): { differences: string[]; pixels: string } {
  const args = ['-c', COMPARE, original, transcoded, ...(sameImageAs === undefined ? [] : [sameImageAs])];
  try {
    return JSON.parse(execFileSync('/usr/bin/python3', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
  } catch (err) {
    throw new Error(`pydicom failed: ${(err as { stderr?: string }).stderr ?? String(err)}`);
  }
}

describe('transcoding the pydicom test files to Explicit VR LE', () => {
  let tmp: string;
  beforeAll(() => {
    requirePydicom();
    tmp = mkdtempSync(join(tmpdir(), 'transcode-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  for (const name of SOURCES) {
    it(`transcodes ${name}: pydicom reads the same elements and pixels`, async () => {
      const bytes = readFileSync(join(TEST_FILES, name));
      const from = parseFileMeta(bytes, true)!.transferSyntaxUID;
      expect([IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE]).toContain(from);
      let i = 0;
      const sizes = [1, 7, 333, 4096, 2];
      const out = await collect(
        transcodeToExplicitLE(
          pieces(bytes, () => sizes[i++ % sizes.length]!),
          stored(bytes),
        ),
      );
      const path = join(tmp, name);
      writeFileSync(path, out);
      // The three encodings of MR_small hold the same image.
      const sameAs = name.startsWith('MR_small') ? join(TEST_FILES, 'MR_small.dcm') : undefined;
      const verdict = pydicomCompare(join(TEST_FILES, name), path, sameAs);
      expect(verdict.differences).toEqual([]);
      expect(verdict.pixels).toBe(NO_IMAGE.has(name) ? 'none' : 'equal');
      // Chunking does not change a byte.
      expect(
        Buffer.compare(
          await collect(
            transcodeToExplicitLE(
              pieces(bytes, () => bytes.length),
              stored(bytes),
            ),
          ),
          out,
        ),
      ).toBe(0);
    });
  }

  it('gives an instance our scanner reads as the original: same metadata, same frame values', async () => {
    for (const name of ['MR_small_bigendian.dcm', 'rtdose_expb.dcm', 'rtdose.dcm', 'MR_small_implicit.dcm']) {
      const bytes = readFileSync(join(TEST_FILES, name));
      const original = scan(bytes);
      const out = await collect(
        transcodeToExplicitLE(
          pieces(bytes, () => 100),
          original,
        ),
      );
      const again = scan(out);
      expect(again.transferSyntaxUID).toBe(EXPLICIT_VR_LE);
      expect(again.metadata, name).toEqual(original.metadata);
      expect(again.layout.frames).toHaveLength(original.layout.frames.length);
      const width = (original.metadata['00280100']!.Value![0] as number) / 8;
      for (let f = 0; f < original.layout.frames.length; f++) {
        const before = Buffer.from(
          bytes.subarray(original.layout.frames[f]![0]!.offset, original.layout.frames[f]![0]!.offset + original.layout.frames[f]![0]!.length),
        );
        const after = out.subarray(again.layout.frames[f]![0]!.offset, again.layout.frames[f]![0]!.offset + again.layout.frames[f]![0]!.length);
        if (original.transferSyntaxUID === EXPLICIT_VR_BE) {
          if (width === 2) before.swap16();
          else before.swap32();
        }
        expect(Buffer.compare(after, before), `${name} frame ${f}`).toBe(0);
      }
    }
  });

  it('refuses a truncated source as DICOM_TRUNCATED while streaming', async () => {
    const bytes = readFileSync(join(TEST_FILES, 'rtplan_truncated.dcm'));
    const err = await failure(
      transcodeToExplicitLE(
        pieces(bytes, () => 256),
        stored(bytes),
      ),
    );
    expect(isVaultError(err, 'DICOM_TRUNCATED')).toBe(true);
    const deflated = readFileSync(join(TEST_FILES, 'image_dfl.dcm'));
    const cut = deflated.subarray(0, deflated.length - 500);
    expect(
      isVaultError(
        await failure(
          transcodeToExplicitLE(
            pieces(cut, () => 512),
            stored(cut),
          ),
        ),
        'DICOM_TRUNCATED',
      ),
    ).toBe(true);
  });

  it('passes Explicit VR LE through untouched and refuses compressed sources', async () => {
    const explicit = readFileSync(join(TEST_FILES, 'CT_small.dcm'));
    expect(
      Buffer.compare(
        await collect(
          transcodeToExplicitLE(
            pieces(explicit, () => 1000),
            scan(explicit),
          ),
        ),
        explicit,
      ),
    ).toBe(0);
    const jpeg = readFileSync(join(TEST_FILES, 'JPEG2000.dcm'));
    expect(
      isVaultError(
        await failure(
          transcodeToExplicitLE(
            pieces(jpeg, () => 1000),
            scan(jpeg),
          ),
        ),
        'NOT_ACCEPTABLE',
      ),
    ).toBe(true);
  });
});

describe('transcoding a large instance', () => {
  const u16 = (v: number): Buffer => Buffer.from([v & 0xff, v >> 8]);
  const u16be = (v: number): Buffer => Buffer.from([v >> 8, v & 0xff]);
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
  };
  const u32be = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v);
    return b;
  };
  const uid = (s: string): Buffer => Buffer.from(s.length % 2 ? `${s}\0` : s, 'latin1');
  const metaEl = (tag: number, vr: string, value: Buffer): Buffer =>
    Buffer.concat([u16(tag >>> 16), u16(tag & 0xffff), Buffer.from(vr), vr === 'OB' ? Buffer.concat([u16(0), u32(value.length)]) : u16(value.length), value]);
  const part10 = (ts: string, dataset: Buffer): Buffer => {
    const meta = Buffer.concat([
      metaEl(0x00020001, 'OB', Buffer.from([0, 1])),
      metaEl(0x00020002, 'UI', uid('1.2.840.10008.5.1.4.1.1.7')),
      metaEl(0x00020003, 'UI', uid('1.2.3.4.5')),
      metaEl(0x00020010, 'UI', uid(ts)),
    ]);
    return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), metaEl(0x00020000, 'UL', u32(meta.length)), meta, dataset]);
  };
  const rows = 512;
  const columns = 512;
  const frameCount = 600;
  const frameBytes = rows * columns * 2;

  it('streams 300 MiB of implicit VR pixel data through with bounded memory', async () => {
    const implicit = (tag: number, value: Buffer, length = value.length): Buffer => Buffer.concat([u16(tag >>> 16), u16(tag & 0xffff), u32(length), value]);
    const head = part10(
      IMPLICIT_VR_LE,
      Buffer.concat([
        implicit(0x00080016, uid('1.2.840.10008.5.1.4.1.1.7')),
        implicit(0x00080018, uid('1.2.3.4.5')),
        implicit(0x0020000d, uid('1.2.3')),
        implicit(0x0020000e, uid('1.2.3.4')),
        implicit(0x00280002, u16(1)),
        implicit(0x00280008, Buffer.from('600 ')),
        implicit(0x00280010, u16(rows)),
        implicit(0x00280011, u16(columns)),
        implicit(0x00280100, u16(16)),
        implicit(0x00280103, u16(0)),
        implicit(0x7fe00010, Buffer.alloc(0), frameBytes * frameCount),
      ]),
    );
    const total = head.length + frameBytes * frameCount;
    const chunk = Buffer.alloc(1024 * 1024);
    async function* source(): AsyncGenerator<Uint8Array> {
      for (let offset = 0; offset < total; offset += chunk.length) {
        const n = Math.min(chunk.length, total - offset);
        chunk.fill(0);
        if (offset === 0) head.copy(chunk);
        // Every pixel value is its frame number.
        for (let p = Math.max(offset, head.length); p < offset + n; p += 2) chunk.writeUInt16LE(Math.floor((p - head.length) / frameBytes), p - offset);
        yield chunk.subarray(0, n);
      }
    }
    const baseline = process.memoryUsage().arrayBuffers;
    let peak = 0;
    const rescan = new DicomScanner();
    let size = 0;
    let last = Buffer.alloc(0);
    for await (const out of transcodeToExplicitLE(source(), { ...stored(head), transferSyntaxUID: IMPLICIT_VR_LE })) {
      rescan.push(out);
      size += out.length;
      last = Buffer.from(out.subarray(-2));
      peak = Math.max(peak, process.memoryUsage().arrayBuffers);
    }
    const scanned = rescan.end();
    expect(scanned.transferSyntaxUID).toBe(EXPLICIT_VR_LE);
    expect(scanned.layout.frames).toHaveLength(frameCount);
    expect(scanned.layout.pixelData?.vr).toBe('OW');
    // +2: the longer Transfer Syntax UID; +4: Pixel Data's explicit OW header (long form).
    expect(size).toBe(total + 6);
    expect(size - scanned.layout.pixelData!.valueOffset).toBe(frameBytes * frameCount);
    expect(last.readUInt16LE(0)).toBe(frameCount - 1);
    expect(peak - baseline).toBeLessThan(32 * 1024 * 1024);
  });

  it('swaps big endian 16-bit pixels correctly across arbitrary chunk boundaries', async () => {
    const explicitBE = (tag: number, vr: string, value: Buffer): Buffer =>
      Buffer.concat([
        u16be(tag >>> 16),
        u16be(tag & 0xffff),
        Buffer.from(vr),
        vr === 'OW' ? Buffer.concat([u16be(0), u32be(value.length)]) : u16be(value.length),
        value,
      ]);
    const values = Array.from({ length: 5000 }, (_, i) => (i * 7919) & 0xffff);
    const be = Buffer.concat(values.map(u16be));
    const file = part10(
      EXPLICIT_VR_BE,
      Buffer.concat([
        explicitBE(0x00080016, 'UI', uid('1.2.840.10008.5.1.4.1.1.7')),
        explicitBE(0x00080018, 'UI', uid('1.2.3.4.5')),
        explicitBE(0x0020000d, 'UI', uid('1.2.3')),
        explicitBE(0x0020000e, 'UI', uid('1.2.3.4')),
        explicitBE(0x00280010, 'US', u16be(50)),
        explicitBE(0x00280011, 'US', u16be(100)),
        explicitBE(0x00280100, 'US', u16be(16)),
        explicitBE(0x7fe00010, 'OW', be),
      ]),
    );
    const original = scan(file);
    for (const size of [1, 3, 5, 4097]) {
      const out = await collect(
        transcodeToExplicitLE(
          pieces(file, () => size),
          original,
        ),
      );
      const again = scan(out);
      expect(again.metadata['00280010']).toEqual({ vr: 'US', Value: [50] });
      const [frame] = again.layout.frames[0]!;
      const le = out.subarray(frame!.offset, frame!.offset + frame!.length);
      expect(
        Array.from({ length: 5000 }, (_, i) => le.readUInt16LE(i * 2)),
        `chunks of ${size}`,
      ).toEqual(values);
    }
  });
});

describe('transfer syntax facts', () => {
  it('knows how each standard transfer syntax is encoded', () => {
    expect(describeTransferSyntax(IMPLICIT_VR_LE)).toMatchObject({ explicitVR: false, littleEndian: true, deflated: false, encapsulated: false });
    expect(describeTransferSyntax(EXPLICIT_VR_BE)).toMatchObject({ explicitVR: true, littleEndian: false, retired: true });
    expect(describeTransferSyntax(DEFLATED_EXPLICIT_VR_LE)).toMatchObject({ deflated: true, encapsulated: false });
    expect(describeTransferSyntax('1.2.840.10008.1.2.4.50')).toMatchObject({ encapsulated: true, codestream: 'jpeg' });
    expect(describeTransferSyntax('1.2.840.10008.1.2.4.201')).toMatchObject({ encapsulated: true, codestream: 'j2k' });
    expect(describeTransferSyntax('1.2.840.10008.1.2.5')).toMatchObject({ encapsulated: true });
    // A private transfer syntax: explicit VR LE with opaque pixel data.
    expect(describeTransferSyntax('1.3.46.670589.33.1.4.1')).toMatchObject({ explicitVR: true, littleEndian: true, encapsulated: true });
  });

  it('transcodes native encodings to the native targets, and says why it cannot do the rest', () => {
    for (const from of [IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE]) {
      for (const to of [EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE]) expect(canTranscode(from, to), `${from} -> ${to}`).toBe(true);
      expect(canTranscode(from, EXPLICIT_VR_BE), from).toBe(from === EXPLICIT_VR_BE);
    }
    expect(canTranscode('1.2.840.10008.1.2.4.50', EXPLICIT_VR_LE)).toBe(false);
    expect(canTranscode('1.2.840.10008.1.2.4.50', '1.2.840.10008.1.2.4.50')).toBe(true);
    // Compressed sources need a decoder; compressed targets, an encoder, which there is none of.
    expect(conversionRefusal('1.2.840.10008.1.2.4.50', EXPLICIT_VR_LE, true)).toBeUndefined();
    expect(conversionRefusal('1.2.840.10008.1.2.4.100', EXPLICIT_VR_LE, false)).toMatch(/no decoder here reads the pixel data of 1.2.840.10008.1.2.4.100/);
    expect(conversionRefusal(EXPLICIT_VR_LE, '1.2.840.10008.1.2.4.90', true)).toMatch(/no encoder here writes 1.2.840.10008.1.2.4.90/);
    expect(conversionRefusal('1.2.840.10008.1.2.4.50', '1.2.840.10008.1.2.4.90', true)).toMatch(/no encoder/);
    expect(conversionRefusal(IMPLICIT_VR_LE, EXPLICIT_VR_BE, true)).toMatch(/retired/);
    expect(conversionRefusal(IMPLICIT_VR_LE, '1.2.3.4', true)).toMatch(/1.2.3.4 \(unknown\)/);
  });
});

describe('transcoding to Implicit VR LE and Deflated Explicit VR LE', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'transcode-targets-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  for (const to of [IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE]) {
    for (const name of ['CT_small.dcm', 'MR_small_bigendian.dcm', 'image_dfl.dcm', 'rtdose.dcm', 'rtplan.dcm', 'MR_small_implicit.dcm']) {
      it(`writes ${name} as ${to}: pydicom reads the same elements and pixels`, async () => {
        const bytes = readFileSync(join(TEST_FILES, name));
        const out = await collect(
          transcode(
            pieces(bytes, () => 777),
            scan(bytes),
            { transferSyntaxUID: to },
          ),
        );
        const path = join(tmp, `${to}-${name}`);
        writeFileSync(path, out);
        const verdict = pydicomCompare(join(TEST_FILES, name), path, undefined, { EXPECT_TS: to });
        expect(verdict.differences).toEqual([]);
        expect(verdict.pixels).toBe(name === 'rtplan.dcm' ? 'none' : 'equal');
      });
    }
  }
});

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
