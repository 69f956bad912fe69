// Streaming transcoding to Explicit VR Little Endian (the default of WADO-RS) of the pydicom test
// files, checked by pydicom: the transcoded file must hold the same elements and the same pixels
// as the original; and of a large instance, with bounded memory. Other targets:
// transcode-targets.test.ts; compressed instances: transcode-decode.test.ts.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isVaultError } from '../../../src/core/errors.ts';
import { parseFileMeta } from '../../../src/dicom/file-meta.ts';
import { DicomScanner } from '../../../src/dicom/scanner.ts';
import { transcodeToExplicitLE } from '../../../src/dicom/transcode.ts';
import { DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE } from '../../../src/dicom/transfer-syntax.ts';
import { PYDICOM_DATA, requirePydicom } from '../../support/pydicom.ts';
import { collect, failure, pieces, pydicomCompare, scan, stored } from '../../support/transcode.ts';

const TEST_FILES = join(PYDICOM_DATA, 'test_files');

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
