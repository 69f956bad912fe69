// Shared by the transcoder's tests (test/unit/dicom/transcode-*.test.ts): feeding an instance in
// pieces, collecting what comes out, and pydicom as the referee of a transcoded file.
import { execFileSync } from 'node:child_process';
import { parseFileMeta } from '../../src/dicom/file-meta.ts';
import type { ScannedInstance } from '../../src/dicom/model.ts';
import { DicomScanner } from '../../src/dicom/scanner.ts';

/** What the transcoder needs of the catalogue; enough for files that have no identity. */
export function stored(bytes: Uint8Array): ScannedInstance {
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

export async function* pieces(bytes: Uint8Array, size: (i: number) => number): AsyncGenerator<Uint8Array> {
  for (let pos = 0, i = 0; pos < bytes.length; i++) {
    const n = Math.max(1, size(i));
    yield bytes.subarray(pos, pos + n);
    pos += n;
  }
}

export async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of source) out.push(Buffer.from(c));
  return Buffer.concat(out);
}

export async function failure(source: AsyncIterable<Uint8Array>): Promise<unknown> {
  try {
    await collect(source);
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

export function scan(bytes: Uint8Array): ScannedInstance {
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

export function pydicomCompare(
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
