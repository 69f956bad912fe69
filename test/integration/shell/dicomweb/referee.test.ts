// dicom-parser as an independent referee of the node's hand-written streaming scanner: for every
// pydicom file that is valid Part 10, the attributes the node catalogued (seen through QIDO-RS and
// WADO-RS metadata, over HTTP) must be the ones dicom-parser reads from the same bytes; and every
// file the node refuses is one dicom-parser cannot file either.
import { basename } from 'node:path';
import type { DataSet } from 'dicom-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { declaredTransferSyntax, parseFile } from '../../../support/dicom-parser.ts';
import { stow } from '../../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../../support/node.ts';
import { NOT_PART10, pydicomFiles, read } from '../../../support/pydicom.ts';

type Element = { vr: string; Value?: unknown[] };
type Dataset = Record<string, Element>;

/** The attributes compared, with how dicom-parser reads each. */
const UIDS = { StudyInstanceUID: '0020000D', SeriesInstanceUID: '0020000E', SOPInstanceUID: '00080018', SOPClassUID: '00080016' } as const;
const US = { Rows: '00280010', Columns: '00280011' } as const;
const NUMBER_OF_FRAMES = '00280008';
const PATIENT_ID = '00100020';
const AVAILABLE_TRANSFER_SYNTAX = '00083002';

const x = (tag: string): string => `x${tag.toLowerCase()}`;

/** What dicom-parser reads; undefined where the file has no value. */
function refereeOf(ds: DataSet): Record<string, string | number | undefined> {
  const out: Record<string, string | number | undefined> = {};
  for (const tag of Object.values(UIDS)) out[tag] = ds.string(x(tag));
  for (const tag of Object.values(US)) out[tag] = ds.uint16(x(tag));
  // IS: the text as written (trimmed); compared as a number where it is one.
  const frames = ds.string(x(NUMBER_OF_FRAMES));
  out[NUMBER_OF_FRAMES] = frames === undefined || frames === '' ? undefined : /^[+-]?\d+$/.test(frames) ? Number(frames) : frames;
  const pid = ds.string(x(PATIENT_ID));
  out[PATIENT_ID] = pid === '' ? undefined : pid;
  return out;
}

const firstValue = (el: Element | undefined): unknown => el?.Value?.[0];

describe('dicom-parser as referee of the catalogued attributes', () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode();
  });
  afterAll(async () => node?.stop());

  const get = async (path: string): Promise<Dataset[]> => {
    const res = await fetch(`${node.url}${path}`, { headers: { accept: 'application/dicom+json' } });
    expect(res.status, path).toBe(200);
    return (await res.json()) as Dataset[];
  };

  const files = pydicomFiles();
  let compared = 0;

  // In file order, one at a time: files that share a SOP Instance UID (MR_small*, rtdose*) are
  // versions of one instance, so each is compared right after it is stored.
  for (const path of files) {
    const name = basename(path);
    if (NOT_PART10[name]) {
      it(`agrees that ${name} cannot be stored (${NOT_PART10[name]})`, () => {
        let ds: DataSet | undefined;
        try {
          ds = parseFile(read(path), { name });
        } catch {
          ds = undefined; // dicom-parser cannot read it at all
        }
        if (ds !== undefined) {
          // Readable, but without the identity a stored instance needs.
          expect([UIDS.StudyInstanceUID, UIDS.SeriesInstanceUID, UIDS.SOPInstanceUID].map((t) => ds!.string(x(t)) ?? '')).toContain('');
        }
      });
      continue;
    }
    it(`catalogues ${name} as dicom-parser reads it`, async () => {
      const bytes = read(path);
      const ref = refereeOf(parseFile(bytes, { name }));
      const tsuid = declaredTransferSyntax(bytes);
      const r = await stow(node.url, [bytes]);
      expect(r.status, JSON.stringify(r.body)).toBe(200);

      const study = ref[UIDS.StudyInstanceUID] as string;
      const sop = ref[UIDS.SOPInstanceUID] as string;
      const found = await get(`/instances?StudyInstanceUID=${study}&SOPInstanceUID=${sop}&includefield=${NUMBER_OF_FRAMES},${US.Rows},${US.Columns}`);
      expect(found).toHaveLength(1);
      const q = found[0]!;
      const [meta] = await get(`/studies/${study}/series/${ref[UIDS.SeriesInstanceUID]}/instances/${sop}/metadata`);

      for (const [source, ds] of [
        ['QIDO', q],
        ['metadata', meta!],
      ] as const) {
        for (const [keyword, tag] of Object.entries({ ...UIDS, ...US, NumberOfFrames: NUMBER_OF_FRAMES, PatientID: PATIENT_ID })) {
          expect(firstValue(ds[tag]), `${source} ${keyword}`).toEqual(ref[tag]);
        }
      }
      expect(firstValue(q[AVAILABLE_TRANSFER_SYNTAX]), 'QIDO TransferSyntaxUID').toBe(tsuid);
      compared++;
    });
  }

  it('compared every valid Part 10 file', () => {
    expect(compared).toBe(files.filter((f) => !NOT_PART10[basename(f)]).length);
    expect(compared).toBeGreaterThan(60);
  });
});
