// Frames and their independent decodings for test/unit/dicom/codecs.test.ts and render.test.ts:
// every compressed file of pydicom's test set, plus frames made here in the syntaxes pydicom
// has no file of (DCMTK's encoders for JPEG lossless, JPEG-LS and 12-bit JPEG; OpenJPH's for
// HTJ2K), all decoded by test/support/codec-referee.py (GDCM, Pillow, pydicom).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeFrame } from '../../bench/decode.ts';
import type { FrameInfo } from '../../src/dicom/codecs/frame.ts';
import { PYDICOM_DATA } from './pydicom.ts';

export const PYTHON = '/usr/bin/python3';
const REFEREE = new URL('./codec-referee.py', import.meta.url).pathname;
const TEST_FILES = join(PYDICOM_DATA, 'test_files');

/** What the referee needs: Debian's pydicom with GDCM and Pillow, and DCMTK's encoders. */
export function missingReferees(): string | undefined {
  if (!existsSync(PYTHON) || !existsSync(TEST_FILES)) return 'python3-pydicom is not installed';
  try {
    execFileSync(PYTHON, ['-c', 'import gdcm, PIL, numpy, pydicom'], { stdio: 'ignore' });
  } catch {
    return 'python3-gdcm and python3-pil are needed as referees';
  }
  for (const tool of ['dcmcjpeg', 'dcmcjpls']) {
    try {
      execFileSync(tool, ['--version'], { stdio: 'ignore' });
    } catch {
      return `DCMTK's ${tool} is needed to make test frames`;
    }
  }
  return undefined;
}

export interface ManifestEntry {
  name: string;
  transferSyntax?: string;
  /** Not a compressed file: why (the syntax it declares, or none). */
  notCompressed?: string;
  /** An uncompressed original the test encoded: its pixels are `reference`. */
  native?: boolean;
  frames?: number;
  info?: FrameInfo;
  referee?: string;
  refereePhotometric?: string;
  /** Compressed, but no referee decodes it: why. */
  skipped?: string;
  encoded?: string[];
  reference?: string[];
}

/** A frame made here: where it came from and what it should decode to. */
export interface MadeFrame {
  name: string;
  transferSyntax: string;
  how: string;
  /** The uncompressed original (manifest name), for the lossless ones and the near-lossless bound. */
  original: string;
  /** Largest difference from the original allowed (0: lossless); undefined: not compared with it. */
  fromOriginal?: number;
}

const P = '1.2.840.10008.1.2';

/** Part 10 files DCMTK makes from pydicom's uncompressed files and the 12-bit sources. */
const DCMTK: { name: string; tool: string; args: string[]; source: string; syntax: string; fromOriginal: number }[] = [
  { name: 'jpll_ct_sv6.dcm', tool: 'dcmcjpeg', args: ['+el', '+sv', '6'], source: 'CT_small.dcm', syntax: `${P}.4.57`, fromOriginal: 0 },
  { name: 'jpll_s12_sv1.dcm', tool: 'dcmcjpeg', args: ['+e1'], source: 'src_s12.dcm', syntax: `${P}.4.70`, fromOriginal: 0 },
  { name: 'jpeg12_u12.dcm', tool: 'dcmcjpeg', args: ['+ee'], source: 'src_u12.dcm', syntax: `${P}.4.51`, fromOriginal: Infinity },
  { name: 'jls_rgb_none.dcm', tool: 'dcmcjpls', args: ['+el', '+in'], source: 'SC_rgb_jpeg_dcmd.dcm', syntax: `${P}.4.80`, fromOriginal: 0 },
  { name: 'jls_rgb_line.dcm', tool: 'dcmcjpls', args: ['+el', '+il'], source: 'SC_rgb_jpeg_dcmd.dcm', syntax: `${P}.4.80`, fromOriginal: 0 },
  { name: 'jls_rgb_sample.dcm', tool: 'dcmcjpls', args: ['+el', '+is'], source: 'SC_rgb_jpeg_dcmd.dcm', syntax: `${P}.4.80`, fromOriginal: 0 },
  { name: 'jls_s12.dcm', tool: 'dcmcjpls', args: ['+el'], source: 'src_s12.dcm', syntax: `${P}.4.80`, fromOriginal: 0 },
  { name: 'jls_u12_near3.dcm', tool: 'dcmcjpls', args: ['+en', '+md', '3'], source: 'src_u12.dcm', syntax: `${P}.4.81`, fromOriginal: 3 },
];

/** HTJ2K codestreams OpenJPH's encoder makes from the originals; Pillow (OpenJPEG 2.5) referees them. */
const OPENJPH: { name: string; source: string; syntax: string; fromOriginal?: number }[] = [
  { name: 'ht_ct_201.j2c', source: 'CT_small.dcm', syntax: `${P}.4.201`, fromOriginal: 0 },
  { name: 'ht_rgb_202.j2c', source: 'SC_rgb_jpeg_dcmd.dcm', syntax: `${P}.4.202`, fromOriginal: 0 },
  { name: 'ht_ct_203.j2c', source: 'CT_small.dcm', syntax: `${P}.4.203` },
];

export interface Fixtures {
  dir: string;
  manifest: ManifestEntry[];
  made: MadeFrame[];
  entry(name: string): ManifestEntry;
  read(file: string): Buffer;
}

/** Makes every frame and runs the referees, in `dir` (a fresh temporary directory). */
export async function prepareFixtures(dir: string): Promise<Fixtures> {
  const python = (...args: string[]): void => {
    execFileSync(PYTHON, [REFEREE, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  python('sources', dir);
  const sourcePath = (name: string): string => (name.startsWith('src_') ? join(dir, name) : join(TEST_FILES, name));
  for (const d of DCMTK) execFileSync(d.tool, [...d.args, sourcePath(d.source), join(dir, d.name)], { stdio: 'ignore' });
  // The originals' pixels (uncompressed files given to the referee come back as references).
  const originals = [...new Set([...DCMTK, ...OPENJPH].map((d) => d.source))].map(sourcePath);
  python('decode', join(dir, 'originals'), ...originals);
  const originalManifest = JSON.parse(readFileSync(join(dir, 'originals', 'manifest.json'), 'utf8')) as ManifestEntry[];
  for (const h of OPENJPH) {
    const original = originalManifest.find((e) => e.name === h.source)!;
    const pixels = readFileSync(join(dir, 'originals', original.reference![0]!));
    writeFileSync(join(dir, h.name), await encodeFrame(h.syntax, pixels, original.info!));
  }
  python('decode', dir, '--pydicom', ...DCMTK.map((d) => join(dir, d.name)), ...OPENJPH.map((h) => join(dir, h.name)), ...originals);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as ManifestEntry[];
  // The codestreams carry no DICOM header: the original's Image Pixel module goes with them.
  for (const h of OPENJPH) {
    const e = manifest.find((x) => x.name === h.name)!;
    const original = manifest.find((x) => x.name === h.source && x.native === true)!;
    Object.assign(e, { transferSyntax: h.syntax, frames: 1, info: original.info, refereePhotometric: original.info!.photometricInterpretation });
  }
  const made: MadeFrame[] = [
    ...DCMTK.map((d) => ({
      name: d.name,
      transferSyntax: d.syntax,
      how: `DCMTK ${d.tool} ${d.args.join(' ')} of ${d.source}`,
      original: d.source,
      ...(Number.isFinite(d.fromOriginal) ? { fromOriginal: d.fromOriginal } : {}),
    })),
    ...OPENJPH.map((h) => ({
      name: h.name,
      transferSyntax: h.syntax,
      how: `OpenJPH's encoder (bench/decode.ts encodeFrame) of ${h.source}`,
      original: h.source,
      ...(h.fromOriginal === undefined ? {} : { fromOriginal: h.fromOriginal }),
    })),
  ];
  const entry = (name: string): ManifestEntry => {
    const e = manifest.find((x) => x.name === name && x.native !== true) ?? manifest.find((x) => x.name === name);
    if (e === undefined) throw new Error(`no fixture ${name}`);
    return e;
  };
  return { dir, manifest, made, entry, read: (file) => readFileSync(join(dir, file)) };
}

/** Largest and mean absolute difference between two frames of native samples. */
export function difference(a: Uint8Array, b: Uint8Array, info: FrameInfo): { max: number; mean: number } {
  const bytes = info.bitsAllocated / 8;
  const signed = info.pixelRepresentation === 1;
  const va = new DataView(a.buffer, a.byteOffset, a.byteLength);
  const vb = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const get = (v: DataView, o: number): number =>
    bytes === 1
      ? signed
        ? v.getInt8(o)
        : v.getUint8(o)
      : bytes === 2
        ? signed
          ? v.getInt16(o, true)
          : v.getUint16(o, true)
        : signed
          ? v.getInt32(o, true)
          : v.getUint32(o, true);
  let max = 0;
  let sum = 0;
  const n = Math.min(a.length, b.length) / bytes;
  for (let i = 0; i < n; i++) {
    const d = Math.abs(get(va, i * bytes) - get(vb, i * bytes));
    if (d > max) max = d;
    sum += d;
  }
  return { max, mean: n === 0 ? 0 : sum / n };
}
