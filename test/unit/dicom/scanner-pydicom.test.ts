// The streaming Part 10 scanner of ingest against real DICOM written by others: Debian's
// python3-pydicom test files, with pydicom itself as the independent referee. Synthesized
// instances (broken ones, and one far larger than memory should ever hold):
// scanner-synthesized.test.ts.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isVaultError, type ErrorCode } from '../../../src/core/errors.ts';
import { parseFileMeta } from '../../../src/dicom/file-meta.ts';
import type { DicomJsonDataset } from '../../../src/dicom/model.ts';
import { DicomTokenizer, type DicomTokenSink, type ElementToken } from '../../../src/dicom/tokenizer.ts';
import { bytesAt, el, errorOf, implicitEl, SERIES, SOP, SOP_CLASS, STUDY, scanChunked, scanWhole, uid } from '../../support/part10.ts';
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
