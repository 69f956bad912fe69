// Debian's python3-pydicom test files: real DICOM written by others, in many transfer syntaxes.
// test/services/setup.sh installs the package; the suites never skip without it, they fail.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

export const PYDICOM_DATA = '/usr/lib/python3/dist-packages/pydicom/data';

/** Throws, naming the fix, when python3-pydicom's files are missing. */
export function requirePydicom(): void {
  if (!existsSync(join(PYDICOM_DATA, 'test_files'))) {
    throw new Error(`python3-pydicom is not installed (no ${PYDICOM_DATA}/test_files): run test/services/setup.sh as root`);
  }
}

/**
 * Files that are not valid DICOM Part 10 and must be refused, with the reason. Every other *.dcm
 * in the two folders must be stored and come back byte-exact.
 */
export const NOT_PART10: Record<string, string> = {
  'ExplVR_BigEndNoMeta.dcm': 'no preamble or File Meta',
  'ExplVR_LitEndNoMeta.dcm': 'no preamble or File Meta',
  'no_meta.dcm': 'no preamble or File Meta',
  'rtstruct.dcm': 'no preamble or File Meta',
  'meta_missing_tsyntax.dcm': 'File Meta without Transfer Syntax UID',
  'MR_truncated.dcm': 'Pixel Data shorter than its declared length',
  'rtplan_truncated.dcm': 'data set cut off inside an element',
  // Part 10, but not a storable composite instance: no Study/Series/SOP Instance UID to file it under.
  'UN_sequence.dcm': 'no Study Instance UID',
  'empty_charset_LEI.dcm': 'no Study Instance UID',
  'nested_priv_SQ.dcm': 'no Study Instance UID',
  'no_meta_group_length.dcm': 'no Study Instance UID',
  'priv_SQ.dcm': 'no Study Instance UID',
  'chrSQEncoding.dcm': 'no Study Instance UID',
  'chrSQEncoding1.dcm': 'no Study Instance UID',
};

export function pydicomFiles(): string[] {
  requirePydicom();
  const out: string[] = [];
  for (const dir of ['test_files', 'charset_files']) {
    for (const f of readdirSync(join(PYDICOM_DATA, dir)).sort()) if (f.endsWith('.dcm')) out.push(join(PYDICOM_DATA, dir, f));
  }
  return out;
}

export function read(path: string): Buffer {
  return readFileSync(path);
}

/** pydicom's own reading of a file, as an independent referee. */
export function pydicomInfo(path: string): { studyUID: string; seriesUID: string; sopUID: string; frames: number } {
  const script = `
import pydicom, json, sys
def frames(ds):
    try: return int(ds.get("NumberOfFrames", 1) or 1)
    except ValueError: return 1  # badVR.dcm holds '1A'
ds = pydicom.dcmread(sys.argv[1])
print(json.dumps({"studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID, "sopUID": ds.SOPInstanceUID, "frames": frames(ds)}))
`;
  return JSON.parse(execFileSync('/usr/bin/python3', ['-c', script, path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
}
