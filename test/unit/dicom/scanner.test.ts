// The streaming Part 10 scanner of ingest, against real DICOM written by others (Debian's
// python3-pydicom test files, with pydicom itself as the independent referee) and against
// synthesized instances: broken ones, and one far larger than memory should ever hold.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFileMeta } from '../../../src/dicom/file-meta.ts';
import { DicomScanner, scanInstance, type DicomScannerOptions } from '../../../src/dicom/scanner.ts';
import { DicomTokenizer, type DicomTokenSink, type ElementToken } from '../../../src/dicom/tokenizer.ts';
import type { ByteRange, DicomJsonDataset, ScannedInstance } from '../../../src/dicom/model.ts';
import { isVaultError, type ErrorCode } from '../../../src/core/errors.ts';

import { PYDICOM_DATA as DATA, requirePydicom } from '../../support/pydicom.ts';

/** Files that must be refused, with the code and why. Every other file must scan. */
const EXPECTED_FAILURES: Record<string, { code: ErrorCode; why: string }> = {
  'ExplVR_BigEndNoMeta.dcm': { code: 'NOT_DICOM', why: 'no preamble, DICM or File Meta' },
  'ExplVR_LitEndNoMeta.dcm': { code: 'NOT_DICOM', why: 'no preamble, DICM or File Meta' },
  'no_meta.dcm': { code: 'NOT_DICOM', why: 'no preamble, DICM or File Meta' },
  'rtstruct.dcm': { code: 'NOT_DICOM', why: 'no preamble, DICM or File Meta' },
  'meta_missing_tsyntax.dcm': { code: 'DICOM_MALFORMED', why: 'File Meta without Transfer Syntax UID' },
  'MR_truncated.dcm': { code: 'DICOM_TRUNCATED', why: 'Pixel Data shorter than its declared length' },
  'rtplan_truncated.dcm': { code: 'DICOM_TRUNCATED', why: 'data set cut off inside an element' },
  // Valid data sets, but not storable instances: no Study/Series Instance UID.
  'UN_sequence.dcm': { code: 'DICOM_MALFORMED', why: 'only a private sequence' },
  'empty_charset_LEI.dcm': { code: 'DICOM_MALFORMED', why: 'no StudyInstanceUID' },
  'nested_priv_SQ.dcm': { code: 'DICOM_MALFORMED', why: 'no StudyInstanceUID' },
  'no_meta_group_length.dcm': { code: 'DICOM_MALFORMED', why: 'no StudyInstanceUID' },
  'priv_SQ.dcm': { code: 'DICOM_MALFORMED', why: 'no StudyInstanceUID' },
  'chrSQEncoding.dcm': { code: 'DICOM_MALFORMED', why: 'no StudyInstanceUID' },
  'chrSQEncoding1.dcm': { code: 'DICOM_MALFORMED', why: 'no StudyInstanceUID' },
};

/** Files without identity that are valid otherwise: scanned again with UIDs inserted. */
const NEEDS_IDENTITY = [
  'UN_sequence.dcm',
  'empty_charset_LEI.dcm',
  'nested_priv_SQ.dcm',
  'no_meta_group_length.dcm',
  'priv_SQ.dcm',
  'chrSQEncoding.dcm',
  'chrSQEncoding1.dcm',
];

function dicomFiles(): string[] {
  requirePydicom();
  const out: string[] = [];
  for (const dir of ['test_files', 'charset_files']) {
    for (const f of readdirSync(join(DATA, dir)).sort()) if (f.endsWith('.dcm')) out.push(join(DATA, dir, f));
  }
  return out;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Deterministic pseudo-random numbers (mulberry32), so a failing chunking can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function scanChunked(bytes: Uint8Array, sizes: () => number, options?: DicomScannerOptions): ScannedInstance {
  const scanner = new DicomScanner(options);
  for (let pos = 0; pos < bytes.length; ) {
    const n = Math.max(1, sizes());
    scanner.push(bytes.subarray(pos, pos + n));
    pos += n;
  }
  return scanner.end();
}

function scanWhole(bytes: Uint8Array, options?: DicomScannerOptions): ScannedInstance {
  const scanner = new DicomScanner(options);
  scanner.push(bytes);
  return scanner.end();
}

function errorOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

function bytesAt(file: Uint8Array, ranges: ByteRange[]): Buffer {
  return Buffer.concat(ranges.map((r) => file.subarray(r.offset, r.offset + r.length)));
}

// ---------------------------------------------------------------------------------------------
// Building instances

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}
function text(s: string, pad = ' '): Buffer {
  return Buffer.from(s.length % 2 ? s + pad : s, 'latin1');
}
function uid(s: string): Buffer {
  return text(s, '\0');
}

const LONG = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);

/** An Explicit VR LE element; `length` overrides the value's length (-1 = undefined). */
function el(tag: number, vr: string, value: Buffer, length = value.length): Buffer {
  const head = LONG.has(vr)
    ? Buffer.concat([u16(tag >>> 16), u16(tag & 0xffff), Buffer.from(vr, 'latin1'), u16(0), u32(length < 0 ? 0xffffffff : length)])
    : Buffer.concat([u16(tag >>> 16), u16(tag & 0xffff), Buffer.from(vr, 'latin1'), u16(length)]);
  return Buffer.concat([head, value]);
}
function implicitEl(tag: number, value: Buffer): Buffer {
  return Buffer.concat([u16(tag >>> 16), u16(tag & 0xffff), u32(value.length), value]);
}
function item(value: Buffer, length = value.length): Buffer {
  return Buffer.concat([u16(0xfffe), u16(0xe000), u32(length < 0 ? 0xffffffff : length), value]);
}
const SEQ_DELIMITER = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);

const STUDY = '1.2.826.0.1.3680043.8.498.1';
const SERIES = '1.2.826.0.1.3680043.8.498.2';
const SOP = '1.2.826.0.1.3680043.8.498.3';
const SOP_CLASS = '1.2.840.10008.5.1.4.1.1.7';

function part10(dataset: Buffer, ts = '1.2.840.10008.1.2.1'): Buffer {
  const meta = Buffer.concat([
    el(0x00020001, 'OB', Buffer.from([0, 1])),
    el(0x00020002, 'UI', uid(SOP_CLASS)),
    el(0x00020003, 'UI', uid(SOP)),
    el(0x00020010, 'UI', uid(ts)),
    el(0x00020012, 'UI', uid('1.2.3.4')),
  ]);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), el(0x00020000, 'UL', u32(meta.length)), meta, dataset]);
}

/** The identifying elements up to Series Instance UID, then Instance Number. */
function identity(study = STUDY): Buffer {
  return Buffer.concat([
    el(0x00080016, 'UI', uid(SOP_CLASS)),
    el(0x00080018, 'UI', uid(SOP)),
    el(0x0020000d, 'UI', uid(study)),
    el(0x0020000e, 'UI', uid(SERIES)),
    el(0x00200013, 'IS', text('1')),
  ]);
}

function imagePixelModule(rows: number, columns: number, bits: number, frames: number): Buffer {
  return Buffer.concat([
    el(0x00280002, 'US', u16(1)),
    el(0x00280004, 'CS', text('MONOCHROME2')),
    el(0x00280008, 'IS', text(String(frames))),
    el(0x00280010, 'US', u16(rows)),
    el(0x00280011, 'US', u16(columns)),
    el(0x00280100, 'US', u16(bits)),
    el(0x00280101, 'US', u16(bits)),
    el(0x00280102, 'US', u16(bits - 1)),
    el(0x00280103, 'US', u16(0)),
  ]);
}

/**
 * Inserts top-level elements into a data set in tag order, encoded like its neighbours (explicit
 * or implicit VR LE): gives valid instances to files that lack an identity.
 */
function insertTopLevel(file: Buffer, elements: Array<[number, string, Buffer]>): Buffer {
  const meta = parseFileMeta(file, true)!;
  const explicit = meta.transferSyntaxUID !== '1.2.840.10008.1.2';
  const starts: Array<[number, number]> = [];
  const note = (e: ElementToken): void => {
    if (e.depth === 0) starts.push([e.tag, e.offset]);
  };
  const sink: DicomTokenSink = {
    element: note,
    bulkStart: note,
    sequenceStart: note,
    fragmentsStart: note,
    data() {},
    bulkEnd() {},
    sequenceEnd() {},
    itemStart() {},
    itemEnd() {},
    offsetTable() {},
    fragmentStart() {},
    fragmentEnd() {},
    fragmentsEnd() {},
  };
  const tokenizer = new DicomTokenizer({
    sink,
    explicitVR: explicit,
    littleEndian: true,
    startOffset: meta.datasetOffset,
    bulkDataThreshold: 1024,
    maxBufferedBytes: 1 << 30,
  });
  tokenizer.push(file.subarray(meta.datasetOffset));
  tokenizer.end();
  const parts: Buffer[] = [];
  let pos = 0;
  for (const [tag, vr, value] of [...elements].sort((a, b) => a[0] - b[0])) {
    const at = starts.find(([t]) => t > tag)?.[1] ?? file.length;
    parts.push(file.subarray(pos, at), explicit ? el(tag, vr, value) : implicitEl(tag, value));
    pos = at;
  }
  parts.push(file.subarray(pos));
  return Buffer.concat(parts);
}

const IDENTITY_ELEMENTS: Array<[number, string, Buffer]> = [
  [0x00080016, 'UI', uid(SOP_CLASS)],
  [0x00080018, 'UI', uid(SOP)],
  [0x0020000d, 'UI', uid(STUDY)],
  [0x0020000e, 'UI', uid(SERIES)],
];

// ---------------------------------------------------------------------------------------------
// pydicom, the referee

const REFEREE = `
import sys, json, hashlib, warnings
import pydicom
from pydicom.encaps import generate_pixel_data_frame
from pydicom.pixel_data_handlers.util import get_expected_length
warnings.simplefilter('ignore')
BINARY = ('OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'UN')
sha = lambda b: hashlib.sha256(b).hexdigest()

def bulk(ds, prefix, out):
    for e in ds:
        path = prefix + '%08X' % e.tag
        if e.VR == 'SQ':
            for i, item in enumerate(e.value):
                bulk(item, path + '.' + str(i) + '.', out)
        elif e.VR in BINARY and isinstance(e.value, bytes) and len(e.value) > 1024 and e.tag != 0xFFFCFFFC and not (prefix == '' and e.tag == 0x7FE00010):
            out[path] = sha(e.value)
    return out

def frames(ds):
    if 'PixelData' not in ds:
        return None
    try:
        n = int(ds.get('NumberOfFrames', 1) or 1)
    except Exception:
        return 'invalid'
    ts = ds.file_meta.TransferSyntaxUID
    if ts == '1.2.840.10008.1.2.1.99':
        return 'deflated'
    if ts.is_compressed:
        return [sha(f) for f in generate_pixel_data_frame(ds.PixelData, n)]
    try:
        size = get_expected_length(ds, 'bytes') // n
    except Exception:
        return 'invalid'  # no Rows/Columns: frames cannot be known
    return [sha(ds.PixelData[i * size:(i + 1) * size]) for i in range(n)]

out = {}
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path)
    r = {}
    r['identity'] = dict(
        studyInstanceUID=ds.StudyInstanceUID, seriesInstanceUID=ds.SeriesInstanceUID,
        sopInstanceUID=ds.SOPInstanceUID if 'SOPInstanceUID' in ds else ds.file_meta.MediaStorageSOPInstanceUID,
        sopClassUID=ds.SOPClassUID, transferSyntaxUID=ds.file_meta.TransferSyntaxUID)
    r['frames'] = frames(ds)
    r['bulk'] = bulk(ds, '', {})
    for t in (0x7FE00010, 0x7FE00008, 0x7FE00009):
        if t in ds:
            del ds[t]
    try:
        r['json'] = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: 'BULK')
    except Exception as e:
        r['json'] = None  # e.g. badVR.dcm: pydicom cannot convert IS '1A'
    out[path] = r
print(json.dumps(out))
`;

interface Referee {
  identity: Record<string, string>;
  frames: string[] | 'invalid' | 'deflated' | null;
  bulk: Record<string, string>;
  json: DicomJsonDataset | null;
}

function referee(paths: string[]): Record<string, Referee> {
  try {
    return JSON.parse(execFileSync('/usr/bin/python3', ['-c', REFEREE, ...paths], { encoding: 'utf8', maxBuffer: 1 << 28, stdio: ['ignore', 'pipe', 'pipe'] }));
  } catch (err) {
    throw new Error(`pydicom referee failed: ${(err as { stderr?: string }).stderr ?? String(err)}`);
  }
}

/**
 * pydicom's DICOM JSON brought to the form we produce where both are right or pydicom is off
 * the standard: no group lengths or trailing padding, multi-valued empty strings as null
 * (PS3.18 F.2.5), empty sequences without Value, trailing spaces trimmed.
 */
function normalisePydicom(ds: DicomJsonDataset, mine: DicomJsonDataset): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const [key, element] of Object.entries(ds)) {
    if (key.endsWith('0000') || key === 'FFFCFFFC') continue;
    const ours = mine[key];
    // Private elements we do not know keep VR UN (pydicom has a private dictionary).
    if ((parseInt(key.slice(0, 4), 16) & 1) === 1 && ours?.vr === 'UN') {
      out[key] = ours;
      continue;
    }
    const e = { ...element };
    if (e.vr === 'SQ' && Array.isArray(e.Value)) {
      const items = (e.Value as DicomJsonDataset[]).map((item, i) => normalisePydicom(item, ((ours?.Value ?? []) as DicomJsonDataset[])[i] ?? {}));
      if (items.length === 0) delete e.Value;
      else e.Value = items;
    } else if (Array.isArray(e.Value)) {
      e.Value = e.Value.map((v) => (typeof v === 'string' ? v.replace(/ +$/, '') : v)).map((v) => (v === '' ? null : v));
    }
    if (e.BulkDataURI !== undefined) e.BulkDataURI = 'BULK';
    out[key] = e;
  }
  return out;
}

function bulkAsMarker(ds: DicomJsonDataset): DicomJsonDataset {
  return JSON.parse(JSON.stringify(ds), (k, v) => (k === 'BulkDataURI' ? 'BULK' : v));
}

// ---------------------------------------------------------------------------------------------

describe('scanning the pydicom test files', () => {
  const files = dicomFiles();
  const scannable = files.filter((f) => EXPECTED_FAILURES[basename(f)] === undefined);
  let tmp: string;
  const patched = new Map<string, string>();
  let judged: Record<string, Referee>;

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'scanner-'));
    for (const name of NEEDS_IDENTITY) {
      const path = join(tmp, name);
      const dir = name.startsWith('chr') ? 'charset_files' : 'test_files';
      writeFileSync(path, insertTopLevel(readFileSync(join(DATA, dir, name)), IDENTITY_ELEMENTS));
      patched.set(name, path);
    }
    judged = referee([...scannable, ...patched.values()]);
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('finds the test files', () => {
    expect(files.length).toBeGreaterThan(80);
  });

  for (const path of files) {
    const name = basename(path);
    const failure = EXPECTED_FAILURES[name];
    if (failure !== undefined) {
      it(`refuses ${name} with ${failure.code} (${failure.why})`, () => {
        const err = errorOf(() => scanWhole(readFileSync(path)));
        expect(isVaultError(err), String(err)).toBe(true);
        expect((err as { code: string }).code).toBe(failure.code);
        // The reason says where: a tag or an offset, or what is missing.
        expect((err as Error).message).toMatch(/\(\w{4},\w{4}\)|offset|missing|DICM|File Meta/);
        // Fed in pieces, the same refusal.
        const r = prng(7);
        const again = errorOf(() => scanChunked(readFileSync(path), () => Math.floor(r() * 700)));
        expect((again as { code: string }).code).toBe(failure.code);
      });
    }
  }

  const subjects = (): Array<[string, string]> => [
    ...scannable.map((p): [string, string] => [basename(p), p]),
    ...NEEDS_IDENTITY.map((n): [string, string] => [`${n} (with UIDs added)`, '']),
  ];

  for (const [label] of subjects()) {
    it(`scans ${label} as pydicom reads it`, () => {
      const name = label.split(' ')[0]!;
      const path = patched.get(name) ?? scannable.find((p) => basename(p) === name)!;
      const bytes = readFileSync(path);
      const ref = judged[path]!;
      const scanned = scanWhole(bytes);

      expect({ ...scanned, metadata: undefined, layout: undefined, size: undefined, heldBytes: undefined }).toEqual({
        ...ref.identity,
        metadata: undefined,
        layout: undefined,
        size: undefined,
        heldBytes: undefined,
      });
      expect(scanned.heldBytes).toBeGreaterThan(0);
      expect(scanned.size).toBe(bytes.length);

      // Frames: the bytes at our ranges are pydicom's frames.
      if (ref.frames === null) {
        expect(scanned.layout.pixelData).toBeNull();
        expect(scanned.layout.frames).toEqual([]);
      } else if (ref.frames === 'invalid' || ref.frames === 'deflated') {
        expect(scanned.layout.frames).toEqual([]);
      } else {
        expect(scanned.layout.frames.map((ranges) => sha(bytesAt(bytes, ranges)))).toEqual(ref.frames);
      }

      // Bulk data: every large binary value is a BulkDataURI whose range holds pydicom's bytes.
      for (const [bulkPath, digest] of Object.entries(ref.bulk)) {
        const range = scanned.layout.bulk[bulkPath];
        expect(range, bulkPath).toBeDefined();
        expect(sha(bytesAt(bytes, [range!]))).toBe(digest);
      }

      // Metadata: pydicom's DICOM JSON (apart from its departures from PS3.18, see normalise).
      if (ref.json !== null) {
        expect(bulkAsMarker(scanned.metadata)).toEqual(bulkAsMarker(normalisePydicom(ref.json, scanned.metadata)));
      }

      // Fed in random pieces, the same result.
      const pieces = prng(bytes.length);
      expect(scanChunked(bytes, () => Math.floor(pieces() * 700))).toEqual(scanned);
    });
  }

  it('gives identical results when fed one byte at a time', () => {
    for (const name of ['MR_small_implicit.dcm', 'MR_small_bigendian.dcm', 'SC_rgb_rle_2frame.dcm', 'image_dfl.dcm', 'chrH32.dcm', 'test-SR.dcm']) {
      const path = dicomFiles().find((p) => basename(p) === name)!;
      const bytes = readFileSync(path);
      expect(
        scanChunked(bytes, () => 1),
        name,
      ).toEqual(scanWhole(bytes));
    }
  });

  it('decodes Specific Character Sets, including ISO 2022 switching and per-item charsets', () => {
    const name = (file: string): unknown => {
      const dir = file.startsWith('chr') ? 'charset_files' : 'test_files';
      return scanWhole(readFileSync(patched.get(file) ?? join(DATA, dir, file))).metadata['00100010']?.Value?.[0];
    };
    expect(name('chrH32.dcm')).toEqual({ Alphabetic: 'ﾔﾏﾀﾞ^ﾀﾛｳ', Ideographic: '山田^太郎', Phonetic: 'やまだ^たろう' });
    expect(name('chrI2.dcm')).toEqual({ Alphabetic: 'Hong^Gildong', Ideographic: '洪^吉洞', Phonetic: '홍^길동' });
    expect(name('chrX2.dcm')).toEqual({ Alphabetic: 'Wang^XiaoDong', Ideographic: '王^小东' });
    expect(name('chrGerm.dcm')).toEqual({ Alphabetic: 'Äneas^Rüdiger' });
    expect(name('chrRuss.dcm')).toEqual({ Alphabetic: 'Люкceмбypг' });
    // The sequence item declares its own charset (ISO 2022 Japanese) inside a UTF-8 data set.
    const sq = scanWhole(readFileSync(patched.get('chrSQEncoding.dcm')!)).metadata;
    const itemName = (Object.values(sq).find((e) => e.vr === 'SQ')!.Value as DicomJsonDataset[])[0]!['00100010']!.Value![0];
    expect(itemName).toEqual({ Alphabetic: 'ﾔﾏﾀﾞ^ﾀﾛｳ', Ideographic: '山田^太郎', Phonetic: 'やまだ^たろう' });
  });

  it('reads an undefined-length UN as the implicit VR LE sequence it is (PS3.5 6.2.2)', () => {
    const md = scanWhole(readFileSync(patched.get('UN_sequence.dcm')!)).metadata;
    const outer = md['4453100C']!;
    expect(outer.vr).toBe('SQ');
    const first = (outer.Value as DicomJsonDataset[])[0]!;
    expect(first['0020000D']).toEqual({ vr: 'UI', Value: ['1.2.840.113619.2.327.3.185221411.476.1398588725.795'] });
  });

  it('puts nested bulk data under its tag path', () => {
    const path = join(DATA, 'test_files', 'waveform_ecg.dcm');
    const scanned = scanWhole(readFileSync(path));
    const waveform = (scanned.metadata['54000100']!.Value as DicomJsonDataset[])[1]!['54001010'];
    expect(waveform).toEqual({ vr: 'OW', BulkDataURI: 'bulk/54000100.1.54001010' });
    expect(scanned.layout.bulk['54000100.1.54001010']!.length).toBeGreaterThan(1024);
  });

  it('maps native multi-frame Pixel Data to frames (rtdose: 15 frames of 10x10x32 bits)', () => {
    const bytes = readFileSync(join(DATA, 'test_files', 'rtdose.dcm'));
    const { layout } = scanWhole(bytes);
    expect(layout.pixelData).toMatchObject({ encapsulated: false, valueLength: 6000 });
    expect(layout.frames).toHaveLength(15);
    expect(layout.frames[14]).toEqual([{ offset: layout.pixelData!.valueOffset + 14 * 400, length: 400 }]);
    expect(layout.bulk['7FE00010']).toEqual({ offset: layout.pixelData!.valueOffset, length: 6000 });
  });

  it('maps encapsulated fragments to frames (RLE, 2 frames) and leaves them out of bulk', () => {
    const bytes = readFileSync(join(DATA, 'test_files', 'SC_rgb_rle_2frame.dcm'));
    const { layout, metadata } = scanWhole(bytes);
    expect(layout.pixelData).toMatchObject({ encapsulated: true, valueLength: -1 });
    expect(layout.frames).toHaveLength(2);
    expect(layout.bulk['7FE00010']).toBeUndefined();
    expect(metadata['7FE00010']).toBeUndefined();
    // An RLE frame starts with its 64-byte header: 3 segments for RGB.
    for (const frame of layout.frames) expect(bytes.readUInt32LE(frame[0]!.offset)).toBe(3);
  });

  it('gives no offsets for a deflated data set but still its metadata', () => {
    const scanned = scanWhole(readFileSync(join(DATA, 'test_files', 'image_dfl.dcm')));
    expect(scanned.transferSyntaxUID).toBe('1.2.840.10008.1.2.1.99');
    expect(scanned.layout.pixelData).toBeNull();
    expect(scanned.layout.frames).toEqual([]);
    expect(scanned.layout.bulk).toEqual({});
    expect(scanned.metadata['00280010']).toEqual({ vr: 'US', Value: [512] });
  });

  it('refuses a deflated data set cut inside its header', () => {
    const bytes = readFileSync(join(DATA, 'test_files', 'image_dfl.dcm'));
    const meta = parseFileMeta(bytes, true)!;
    const err = errorOf(() => scanWhole(bytes.subarray(0, meta.datasetOffset + 200)));
    expect((err as { code: string }).code).toBe('DICOM_TRUNCATED');
  });
});

describe('scanning synthesized instances', () => {
  const header = (study = STUDY): Buffer => Buffer.concat([identity(study), imagePixelModule(4, 4, 8, 1)]);
  const pixels = (n: number, length = n): Buffer => el(0x7fe00010, 'OB', Buffer.alloc(n, 7), length);

  it('identifies the instance from the header alone, before any pixel data arrives', () => {
    const scanner = new DicomScanner();
    const file = part10(Buffer.concat([header(), pixels(16)]));
    const cut = file.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]));
    scanner.push(file.subarray(0, cut));
    expect(scanner.identified).toBe(true);
    expect(scanner.identity()).toEqual({
      studyInstanceUID: STUDY,
      seriesInstanceUID: SERIES,
      sopInstanceUID: SOP,
      sopClassUID: SOP_CLASS,
      transferSyntaxUID: '1.2.840.10008.1.2.1',
    });
    scanner.push(file.subarray(cut));
    expect(scanner.bytesSeen).toBe(file.length);
    expect(scanner.end().layout.frames).toEqual([[{ offset: cut + 12, length: 16 }]]);
  });

  it('refuses random bytes as NOT_DICOM as soon as offset 128 is seen', () => {
    const scanner = new DicomScanner();
    const err = errorOf(() => scanner.push(randomBytes(4096)));
    expect((err as { code: string }).code).toBe('NOT_DICOM');
    expect((errorOf(() => scanWhole(Buffer.from('hello'))) as { code: string }).code).toBe('NOT_DICOM');
  });

  it('refuses a Pixel Data length beyond the data as DICOM_TRUNCATED, naming the tag', () => {
    const err = errorOf(() => scanWhole(part10(Buffer.concat([header(), pixels(10, 1000)]))));
    expect((err as { code: string }).code).toBe('DICOM_TRUNCATED');
    expect((err as Error).message).toMatch(/declared length 1000 of \(7FE0,0010\)/);
  });

  it('refuses an element length beyond the data in the header as DICOM_TRUNCATED', () => {
    const file = part10(Buffer.concat([identity(), el(0x00081030, 'LO', text('cut short'), 200)]));
    const err = errorOf(() => scanWhole(file));
    expect((err as { code: string }).code).toBe('DICOM_TRUNCATED');
    expect((err as Error).message).toMatch(/\(0008,1030\)/);
  });

  it('refuses an undefined-length sequence that is never closed as DICOM_TRUNCATED', () => {
    const file = part10(Buffer.concat([identity(), el(0x00081115, 'SQ', item(el(0x00081150, 'UI', uid('1.2.3'))), -1)]));
    expect((errorOf(() => scanWhole(file)) as { code: string }).code).toBe('DICOM_TRUNCATED');
  });

  it('refuses an invalid VR and a sequence without items as DICOM_MALFORMED', () => {
    const badVR = part10(Buffer.concat([identity(), el(0x00081030, 'zz', text('x'))]));
    expect((errorOf(() => scanWhole(badVR)) as { code: string }).code).toBe('DICOM_MALFORMED');
    const noItem = part10(Buffer.concat([identity(), el(0x00081115, 'SQ', el(0x00081150, 'UI', uid('1.2.3')))]));
    const err = errorOf(() => scanWhole(noItem));
    expect((err as { code: string }).code).toBe('DICOM_MALFORMED');
    expect((err as Error).message).toMatch(/expected an item in \(0008,1115\)/);
  });

  it('refuses an element that overruns its item as DICOM_MALFORMED', () => {
    const inner = el(0x00081150, 'UI', uid('1.2.3'));
    const file = part10(Buffer.concat([identity(), el(0x00081115, 'SQ', item(inner, inner.length - 2)), pixels(16)]));
    expect((errorOf(() => scanWhole(file)) as { code: string }).code).toBe('DICOM_MALFORMED');
  });

  it('refuses a StudyInstanceUID like ../x as INVALID_UID while the header streams in', () => {
    const scanner = new DicomScanner();
    const err = errorOf(() => scanner.push(part10(header('../x'))));
    expect((err as { code: string }).code).toBe('INVALID_UID');
    expect((err as Error).message).toBe('StudyInstanceUID is not a valid DICOM UID');
    // A failed scanner stays failed.
    expect((errorOf(() => scanner.end()) as { code: string }).code).toBe('INVALID_UID');
  });

  it('refuses a missing SeriesInstanceUID as DICOM_MALFORMED', () => {
    const file = part10(Buffer.concat([el(0x00080016, 'UI', uid(SOP_CLASS)), el(0x0020000d, 'UI', uid(STUDY)), pixels(16)]));
    const err = errorOf(() => scanWhole(file));
    expect((err as { code: string }).code).toBe('DICOM_MALFORMED');
    expect((err as Error).message).toBe('missing SeriesInstanceUID');
  });

  it('refuses a header larger than maxHeaderBytes as TOO_LARGE, but not large bulk data', () => {
    const big = el(0x00081030, 'LO', text('x'.repeat(60_000)));
    const file = part10(Buffer.concat([identity(), big, pixels(16)]));
    expect((errorOf(() => scanWhole(file, { maxHeaderBytes: 32 * 1024 })) as { code: string }).code).toBe('TOO_LARGE');
    // The same header with the payload in an OB (an Encapsulated Document, say) streams past.
    const doc = el(0x00420011, 'OB', Buffer.alloc(200_000, 1));
    const scanned = scanWhole(part10(Buffer.concat([identity(), doc])), { maxHeaderBytes: 32 * 1024 });
    expect(scanned.metadata['00420011']).toEqual({ vr: 'OB', BulkDataURI: 'bulk/00420011' });
    expect(scanned.layout.bulk['00420011']!.length).toBe(200_000);
  });

  it('keeps binary values up to bulkDataThreshold inline', () => {
    const file = part10(Buffer.concat([identity(), el(0x00420011, 'OB', Buffer.from([1, 2, 3, 4]))]));
    expect(scanWhole(file, { bulkDataThreshold: 4 }).metadata['00420011']).toEqual({ vr: 'OB', InlineBinary: 'AQIDBA==' });
    expect(scanWhole(file, { bulkDataThreshold: 3 }).metadata['00420011']).toEqual({ vr: 'OB', BulkDataURI: 'bulk/00420011' });
  });

  it('accepts a data set whose transfer syntax says explicit VR but whose elements are implicit', () => {
    const dataset = Buffer.concat([
      implicitEl(0x00080016, uid(SOP_CLASS)),
      implicitEl(0x00080018, uid(SOP)),
      implicitEl(0x0020000d, uid(STUDY)),
      implicitEl(0x0020000e, uid(SERIES)),
      implicitEl(0x00280010, u16(4)),
    ]);
    const scanned = scanWhole(part10(dataset));
    expect(scanned.studyInstanceUID).toBe(STUDY);
    expect(scanned.metadata['00280010']).toEqual({ vr: 'US', Value: [4] });
  });

  describe('encapsulated frames', () => {
    const JPEG = '1.2.840.10008.1.2.4.50';
    const jpeg = (n: number): Buffer => Buffer.concat([Buffer.from([0xff, 0xd8]), Buffer.alloc(n, n)]);
    const more = (n: number): Buffer => Buffer.alloc(n, 0x55);
    const encapsulated = (bot: number[], fragments: Buffer[], extra = Buffer.alloc(0)): Buffer =>
      Buffer.concat([
        identity(),
        imagePixelModule(4, 4, 8, 2),
        extra,
        el(0x7fe00010, 'OB', Buffer.concat([item(Buffer.concat(bot.map(u32))), ...fragments.map((f) => item(f)), SEQ_DELIMITER]), -1),
      ]);
    const frameBytes = (file: Buffer, s: ScannedInstance): string[] => s.layout.frames.map((f) => bytesAt(file, f).toString('hex'));

    it('groups fragments by the Basic Offset Table', () => {
      const frags = [jpeg(10), more(6), jpeg(20)];
      const file = part10(encapsulated([0, 8 + 12 + 8 + 6], frags), JPEG);
      const scanned = scanWhole(file);
      expect(frameBytes(file, scanned)).toEqual([Buffer.concat([frags[0]!, frags[1]!]).toString('hex'), frags[2]!.toString('hex')]);
      expect(scanned.layout.frames[0]).toHaveLength(2);
    });

    it('groups fragments by the Extended Offset Table', () => {
      const frags = [jpeg(10), jpeg(4), more(8)];
      const eot = Buffer.alloc(16);
      eot.writeBigUInt64LE(0n, 0);
      eot.writeBigUInt64LE(BigInt(8 + 12), 8);
      const lengths = Buffer.alloc(16);
      const file = part10(encapsulated([], frags, Buffer.concat([el(0x7fe00001, 'OV', eot), el(0x7fe00002, 'OV', lengths)])), JPEG);
      const scanned = scanWhole(file);
      expect(frameBytes(file, scanned)).toEqual([frags[0]!.toString('hex'), Buffer.concat([frags[1]!, frags[2]!]).toString('hex')]);
    });

    it('without offset tables: one fragment per frame, or JPEG start markers', () => {
      const oneEach = [jpeg(10), jpeg(4)];
      const file1 = part10(encapsulated([], oneEach), JPEG);
      expect(frameBytes(file1, scanWhole(file1))).toEqual(oneEach.map((f) => f.toString('hex')));
      const split = [jpeg(10), more(3), jpeg(4), more(5)];
      // Fed one byte at a time, so the markers are split across pushes.
      const file2 = part10(encapsulated([], split), JPEG);
      expect(
        frameBytes(
          file2,
          scanChunked(file2, () => 1),
        ),
      ).toEqual([Buffer.concat([split[0]!, split[1]!]).toString('hex'), Buffer.concat([split[2]!, split[3]!]).toString('hex')]);
    });

    it('gives no frames when fragments cannot be attributed (RLE, 3 fragments for 2 frames)', () => {
      const file = part10(encapsulated([], [more(4), more(4), more(4)]), '1.2.840.10008.1.2.5');
      const scanned = scanWhole(file);
      expect(scanned.layout.pixelData?.encapsulated).toBe(true);
      expect(scanned.layout.frames).toEqual([]);
    });
  });

  it('leaves frames empty for 1-bit frames that do not end on a byte boundary', () => {
    const file = part10(Buffer.concat([identity(), imagePixelModule(3, 3, 1, 2), el(0x7fe00010, 'OB', Buffer.alloc(4))]));
    expect(scanWhole(file).layout.frames).toEqual([]);
    const aligned = part10(Buffer.concat([identity(), imagePixelModule(4, 4, 1, 2), el(0x7fe00010, 'OB', Buffer.alloc(4))]));
    expect(scanWhole(aligned).layout.frames).toEqual([[{ offset: aligned.length - 4, length: 2 }], [{ offset: aligned.length - 2, length: 2 }]]);
  });

  it('finds the header of a deflated instance whose pixel data inflates far beyond the limits', () => {
    const dataset = Buffer.concat([identity(), imagePixelModule(1024, 1024, 16, 16), el(0x7fe00010, 'OW', Buffer.alloc(32 * 1024 * 1024))]);
    const file = Buffer.concat([part10(Buffer.alloc(0), '1.2.840.10008.1.2.1.99'), zlib.deflateRawSync(dataset)]);
    // 32 MiB of zeros deflate to ~32 KiB, pushed as one piece; the inflated limit is 2 MiB.
    const scanned = scanWhole(file, { maxHeaderBytes: 1024 * 1024 });
    expect(scanned.studyInstanceUID).toBe(STUDY);
    expect(scanned.metadata['00280008']).toEqual({ vr: 'IS', Value: [16] });
    expect(scanned.layout.pixelData).toBeNull();
  });

  it('scans a 300 MiB native multi-frame instance in 1 MiB chunks without holding it', async () => {
    const rows = 512;
    const columns = 512;
    const frameCount = 600;
    const frameBytes = rows * columns * 2;
    const head = part10(Buffer.concat([identity(), imagePixelModule(rows, columns, 16, frameCount)]));
    const pixelHeader = el(0x7fe00010, 'OW', Buffer.alloc(0), frameBytes * frameCount);
    const total = head.length + pixelHeader.length + frameBytes * frameCount;
    const chunk = Buffer.alloc(1024 * 1024);
    /** Where the generator put each frame's first byte (it stamps the frame number there). */
    const stamped: number[] = [];
    let peakArrayBuffers = 0;
    const baseline = process.memoryUsage().arrayBuffers;
    async function* stream(): AsyncGenerator<Uint8Array> {
      const prefix = Buffer.concat([head, pixelHeader]);
      const pixelStart = prefix.length;
      for (let offset = 0; offset < total; offset += chunk.length) {
        const n = Math.min(chunk.length, total - offset);
        chunk.fill(0);
        if (offset < pixelStart) prefix.copy(chunk, 0, offset);
        // Stamp every frame that starts in this chunk (frames are 512 KiB, chunks 1 MiB).
        for (let f = Math.max(0, Math.ceil((offset - pixelStart) / frameBytes)); pixelStart + f * frameBytes < offset + n && f < frameCount; f++) {
          const at = pixelStart + f * frameBytes;
          stamped[f] = at;
          chunk.writeUInt16LE(f, at - offset);
        }
        peakArrayBuffers = Math.max(peakArrayBuffers, process.memoryUsage().arrayBuffers);
        yield chunk.subarray(0, n);
      }
    }
    const scanned = await scanInstance(stream());
    expect(scanned.size).toBe(total);
    expect(scanned.layout.frames).toHaveLength(frameCount);
    expect(scanned.layout.frames.map((f) => f[0]!.offset)).toEqual(stamped);
    expect(scanned.layout.frames.every((f) => f[0]!.length === frameBytes)).toBe(true);
    expect(scanned.layout.pixelData).toEqual({ valueOffset: stamped[0], valueLength: frameBytes * frameCount, encapsulated: false, vr: 'OW' });
    // Nothing near the instance's size was allocated (a copy of the pixel data would be 300 MiB).
    expect(peakArrayBuffers - baseline).toBeLessThan(32 * 1024 * 1024);
  });
});
