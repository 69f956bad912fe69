// Scoped requests through a real node: the access seam hands each request a CatalogScope (here a
// stub policy hands the scope the test sets), the routes pass it to the catalog, and what it
// does not cover reads exactly as what was never stored: 404 with the same body, empty searches,
// counts over the visible series only; a metadata-only bulkScope sends attributes without pixels.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../../bench/generate.ts';
import type { AccessDecision, AccessPolicy } from '../../../../src/access/policy.ts';
import type { CatalogScope } from '../../../../src/catalog/scope.ts';
import { retrieve, stow } from '../../../support/dicomweb.ts';
import { bytesOf } from '../../../support/generated.ts';
import { startTestNode, type TestNode } from '../../../support/node.ts';
import { PYDICOM_DATA, requirePydicom } from '../../../support/pydicom.ts';

const STUDY = '1.2.826.0.1.3680043.8.498.901';
const JSON_TYPE = 'application/dicom+json';
const DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*';
const UNKNOWN = '1.2.826.0.1.3680043.8.498.999999';

type Scoping = Omit<AccessDecision, 'allowed'>;

/**
 * pydicom's CT_small.dcm moved into the study as series Z, with binary values besides its Pixel
 * Data: an Icon Image Sequence (its small Pixel Data inline), a private OB value sent inline and
 * one of 4 KiB, past the scanner's bulk data threshold (a BulkDataURI).
 */
const WITH_BINARY_VALUES = `
import sys, pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
src, out, study, series, sop = sys.argv[1:6]
ds = pydicom.dcmread(src)
ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.PatientID = study, series, sop, 'PAT-A'
ds.file_meta.MediaStorageSOPInstanceUID = sop
icon = Dataset()
icon.Rows, icon.Columns, icon.SamplesPerPixel, icon.PhotometricInterpretation = 2, 2, 1, 'MONOCHROME2'
icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
icon.PixelData = bytes([1, 2, 3, 4])
ds.IconImageSequence = Sequence([icon])
ds.add_new(0x00090010, 'LO', 'DVAULT TEST')
ds.add_new(0x00091010, 'OB', bytes(8))
ds.add_new(0x00091011, 'OB', bytes(4096))
ds.save_as(out, write_like_original=False)
`;

/** pydicom's CT_small.dcm as SOP instance `sop` of series `series` again, with other bytes, and optionally another SOP Class. */
const SENT_AGAIN = `
import sys, pydicom
src, out, study, series, sop, comment, sop_class = sys.argv[1:8]
ds = pydicom.dcmread(src)
ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.PatientID = study, series, sop, 'PAT-A'
ds.file_meta.MediaStorageSOPInstanceUID = sop
ds.ImageComments = comment
if sop_class:
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
ds.save_as(out, write_like_original=False)
`;
const GRAYSCALE_SOFTCOPY_PRESENTATION_STATE = '1.2.840.10008.5.1.4.1.1.11.1';

describe('DICOMweb under a CatalogScope', () => {
  let node: TestNode;
  /** What the stub policy answers for the next requests: nothing (everything visible) unless a test says. */
  let scoping: Scoping = {};
  const policy: AccessPolicy = {
    identify: async () => ({ id: 'user:tester', roles: ['staff'], method: 'token' }),
    authorize: async () => ({ allowed: true, ...scoping }),
  };
  let x: GeneratedStudy; // series X of the study: the caller's
  let y: GeneratedStudy; // series Y of the same study: not the caller's
  let other: GeneratedStudy; // another patient's study
  const z = { series: `${STUDY}.3`, sop: `${STUDY}.3.1` }; // series Z: one CT with binary values besides its pixels

  const get = async (path: string, accept = JSON_TYPE) => {
    const res = await fetch(`${node.url}${path}`, { headers: { accept } });
    const text = await res.text();
    return { status: res.status, json: text === '' ? undefined : (JSON.parse(text) as any) };
  };
  const first = (ds: any, tag: string) => ds?.[tag]?.Value?.[0];

  /** The series-scoped caller: patient A's series X. */
  const seriesScope = (): CatalogScope => ({ clauses: [{ patients: [{ id: 'PAT-A', issuer: null }], studies: [STUDY], series: [x.seriesInstanceUID] }] });

  beforeAll(async () => {
    node = await startTestNode({ access: policy, audit: { record: () => {} } });
    x = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: 901, studyInstanceUID: STUDY, patientId: 'PAT-A' });
    y = planStudy({ kind: 'single', instances: 3, rows: 16, columns: 16, seed: 902, studyInstanceUID: STUDY, patientId: 'PAT-A' });
    other = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: 903, patientId: 'PAT-B' });
    for (const study of [x, y, other]) {
      const r = await stow(node.url, await Promise.all(study.instances.map(bytesOf)));
      expect(r.status).toBe(200);
    }
    requirePydicom();
    const dir = mkdtempSync(join(tmpdir(), 'scoped-'));
    try {
      const file = join(dir, 'z.dcm');
      execFileSync('/usr/bin/python3', ['-c', WITH_BINARY_VALUES, join(PYDICOM_DATA, 'test_files', 'CT_small.dcm'), file, STUDY, z.series, z.sop]);
      expect((await stow(node.url, [readFileSync(file)])).status).toBe(200);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  afterAll(async () => {
    await node?.stop();
  });

  it('unscoped, the study has both series and the other patient is found', async () => {
    scoping = {};
    const studies = await get('/studies');
    expect(studies.json.map((s: any) => first(s, '0020000D')).sort()).toEqual([STUDY, other.studyInstanceUID].sort());
    const mine = studies.json.find((s: any) => first(s, '0020000D') === STUDY);
    expect(first(mine, '00201206')).toBe(3);
    expect(first(mine, '00201208')).toBe(6);
    expect(mine['00080061'].Value).toEqual(['CT', 'MR']);
  });

  it('QIDO: the study with counts over its one visible series; nothing of other patients, series or instances', async () => {
    scoping = { scope: seriesScope() };
    const studies = await get('/studies');
    expect(studies.status).toBe(200);
    expect(studies.json).toHaveLength(1);
    expect(first(studies.json[0], '0020000D')).toBe(STUDY);
    expect(first(studies.json[0], '00201206')).toBe(1); // NumberOfStudyRelatedSeries
    expect(first(studies.json[0], '00201208')).toBe(2); // NumberOfStudyRelatedInstances
    expect(studies.json[0]['00080061'].Value).toEqual(['MR']);

    expect((await get('/studies?PatientID=PAT-B')).status).toBe(204);
    expect((await get(`/studies?StudyInstanceUID=${other.studyInstanceUID}`)).status).toBe(204);

    const series = await get(`/studies/${STUDY}/series`);
    expect(series.json.map((s: any) => first(s, '0020000E'))).toEqual([x.seriesInstanceUID]);
    expect(first(series.json[0], '00201209')).toBe(2); // NumberOfSeriesRelatedInstances
    expect((await get(`/series?SeriesInstanceUID=${y.seriesInstanceUID}`)).status).toBe(204);

    const instances = await get(`/studies/${STUDY}/instances`);
    expect(instances.json.map((i: any) => first(i, '00080018')).sort()).toEqual(x.instances.map((i) => i.sopInstanceUID).sort());
    expect((await get(`/instances?SOPInstanceUID=${y.instances[0]!.sopInstanceUID}`)).status).toBe(204);
  });

  it('out of scope reads as unknown: 404 with the body a never-stored UID gets', async () => {
    scoping = { scope: seriesScope() };
    const y0 = y.instances[0]!.sopInstanceUID;
    const x0 = x.instances[0]!.sopInstanceUID;
    const pairs: Array<[hidden: string, unknown: string, accept?: string]> = [
      [`/studies/${STUDY}/series/${y.seriesInstanceUID}/instances`, `/studies/${STUDY}/series/${UNKNOWN}/instances`],
      [`/studies/${other.studyInstanceUID}/series`, `/studies/${UNKNOWN}/series`],
      [`/studies/${STUDY}/series/${y.seriesInstanceUID}`, `/studies/${STUDY}/series/${UNKNOWN}`, DICOM],
      [`/studies/${other.studyInstanceUID}`, `/studies/${UNKNOWN}`, DICOM],
      [`/studies/${STUDY}/series/${y.seriesInstanceUID}/metadata`, `/studies/${STUDY}/series/${UNKNOWN}/metadata`],
      [`/studies/${other.studyInstanceUID}/metadata`, `/studies/${UNKNOWN}/metadata`],
      [
        `/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${y0}/metadata`,
        `/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${UNKNOWN}/metadata`,
      ],
      [`/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${y0}`, `/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${UNKNOWN}`, DICOM],
      [
        `/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${y0}/frames/1`,
        `/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${UNKNOWN}/frames/1`,
        'multipart/related; type="application/octet-stream"',
      ],
      [
        `/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${y0}/rendered`,
        `/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${UNKNOWN}/rendered`,
        'image/png',
      ],
      [`/studies/${other.studyInstanceUID}/thumbnail`, `/studies/${UNKNOWN}/thumbnail`, 'image/jpeg'],
      [`/studies/${other.studyInstanceUID}/receipt`, `/studies/${UNKNOWN}/receipt`, 'application/json'],
    ];
    for (const [hidden, unknown, accept] of pairs) {
      const h = await get(hidden, accept);
      const u = await get(unknown, accept);
      expect(h.status, hidden).toBe(404);
      expect(h.json, hidden).toEqual(u.json);
    }
    // Its own instance, named under it, is found; named under the other series, it is not.
    expect((await get(`/studies/${STUDY}/series/${x.seriesInstanceUID}/instances/${x0}/metadata`)).status).toBe(200);
    expect((await get(`/studies/${STUDY}/series/${y.seriesInstanceUID}/instances/${x0}/metadata`)).status).toBe(404);
    // The study itself is visible: its receipt is refused for another reason (this node does not anchor).
    expect((await get(`/studies/${STUDY}/receipt`, 'application/json')).json.code).toBe('ANCHOR_DISABLED');
  });

  it('metadata and retrieval of the study hold only the visible series', async () => {
    scoping = { scope: seriesScope() };
    const metadata = await get(`/studies/${STUDY}/metadata`);
    expect(metadata.status).toBe(200);
    expect(metadata.json.map((i: any) => first(i, '00080018')).sort()).toEqual(x.instances.map((i) => i.sopInstanceUID).sort());
    for (const inst of metadata.json) expect(inst['7FE00010'].BulkDataURI).toMatch(/\/bulk\/7FE00010$/);

    const study = await retrieve(`${node.url}/studies/${STUDY}`, DICOM);
    expect(study.status).toBe(200);
    expect(study.parts).toHaveLength(x.instances.length);
    expect((await retrieve(`${node.url}/studies/${STUDY}/series/${x.seriesInstanceUID}`, DICOM)).parts).toHaveLength(x.instances.length);
  });

  it('a metadata-only bulkScope: attributes of every visible instance, no bulk data of those it does not cover', async () => {
    scoping = { scope: seriesScope(), bulkScope: { clauses: [] } };
    const metadata = await get(`/studies/${STUDY}/metadata`);
    expect(metadata.status).toBe(200);
    expect(metadata.json).toHaveLength(x.instances.length);
    for (const inst of metadata.json) {
      expect(first(inst, '00280010')).toBe(16); // Rows: the attributes are there
      expect(inst['7FE00010']).toBeUndefined();
      expect(JSON.stringify(inst)).not.toMatch(/BulkDataURI|InlineBinary/);
    }
    // Binary values other than Pixel Data, inline or bulk, at any depth, go too.
    const zScope: CatalogScope = { clauses: [{ series: [z.series] }] };
    scoping = { scope: zScope };
    const [full] = (await get(`/studies/${STUDY}/series/${z.series}/metadata`)).json;
    expect(full['00091010'].InlineBinary).toBeDefined();
    expect(full['00091011'].BulkDataURI).toMatch(/\/bulk\/00091011$/);
    expect(full['00880200'].Value[0]['7FE00010'].InlineBinary).toBeDefined();
    expect(full['7FE00010'].BulkDataURI).toBeDefined();
    scoping = { scope: zScope, bulkScope: { clauses: [] } };
    const [bare] = (await get(`/studies/${STUDY}/series/${z.series}/metadata`)).json;
    expect(JSON.stringify(bare)).not.toMatch(/BulkDataURI|InlineBinary/);
    expect(Object.keys(bare).filter((tag) => !Object.hasOwn(full, tag))).toEqual([]);
    // What went is what was binary: ours, and the private OB values GE wrote into CT_small.
    const gone = Object.keys(full).filter((tag) => !Object.hasOwn(bare, tag));
    expect(gone).toEqual(expect.arrayContaining(['00091010', '00091011', '7FE00010']));
    for (const tag of gone) expect(full[tag].BulkDataURI ?? full[tag].InlineBinary, tag).toBeDefined();
    expect(bare['00880200'].Value[0]['00280010'].Value).toEqual([2]); // the icon's attributes stay, its pixels go
    expect(bare['00880200'].Value[0]['7FE00010']).toBeUndefined();
    expect(bare['00090010'].Value).toEqual(['DVAULT TEST']);
    // A bulkScope that covers the series (one of its clauses does): Pixel Data is offered; one that does not: it is not.
    const x0 = x.instances[0]!.sopInstanceUID;
    scoping = { scope: seriesScope(), bulkScope: { clauses: [{ series: [x.seriesInstanceUID], studies: [STUDY] }, { studies: [UNKNOWN] }] } };
    const some = await get(`/studies/${STUDY}/series/${x.seriesInstanceUID}/metadata`);
    expect(some.json.map((i: any) => first(i, '00080018')).sort()).toEqual(x.instances.map((i) => i.sopInstanceUID).sort());
    for (const inst of some.json) expect(inst['7FE00010']?.BulkDataURI).toBeDefined();
    scoping = {
      scope: seriesScope(),
      bulkScope: {
        clauses: [
          { studies: [STUDY], referencedByKeyObjects: true },
          { series: [x.seriesInstanceUID], kinds: ['report'] },
        ],
      },
    };
    const none = await get(`/studies/${STUDY}/series/${x.seriesInstanceUID}/instances/${x0}/metadata`);
    expect(none.json).toHaveLength(1);
    expect(none.json[0]['7FE00010']).toBeUndefined();
  });

  // Last: it stores series Z's instance again, twice.
  it('a grant-shaped scope (images of two series): counts and listings follow a re-sent instance and its changed kind', async () => {
    const scope: CatalogScope = {
      clauses: [{ patients: [{ id: 'PAT-A', issuer: null }], studies: [STUDY], series: [x.seriesInstanceUID, z.series], kinds: ['image'] }],
    };
    const xSops = x.instances.map((i) => i.sopInstanceUID);
    const counts = async () => {
      const studies = await get('/studies');
      expect(studies.json).toHaveLength(1);
      const series = await get(`/studies/${STUDY}/series`);
      return {
        series: first(studies.json[0], '00201206'),
        instances: first(studies.json[0], '00201208'),
        modalities: studies.json[0]['00080061']?.Value ?? [],
        perSeries: series.json.map((se: any) => [first(se, '0020000E'), first(se, '00201209')]),
      };
    };
    const sops = async (path: string) => ((await get(path)).json ?? []).map((i: any) => first(i, '00080018')).sort();
    const sendAgain = async (comment: string, sopClass = '') => {
      const dir = mkdtempSync(join(tmpdir(), 'scoped-'));
      try {
        const file = join(dir, 'z.dcm');
        execFileSync('/usr/bin/python3', ['-c', SENT_AGAIN, join(PYDICOM_DATA, 'test_files', 'CT_small.dcm'), file, STUDY, z.series, z.sop, comment, sopClass]);
        expect((await stow(node.url, [readFileSync(file)])).status).toBe(200);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };
    const bothSeries = {
      series: 2,
      instances: 3,
      modalities: ['CT', 'MR'],
      perSeries: expect.arrayContaining([
        [x.seriesInstanceUID, 2],
        [z.series, 1],
      ]),
    };

    scoping = { scope };
    expect(await counts()).toEqual(bothSeries);
    expect(await sops(`/studies/${STUDY}/metadata`)).toEqual([...xSops, z.sop].sort());

    // Other bytes for Z's instance: its first revision is retired, and not counted.
    await sendAgain('sent again');
    expect(await counts()).toEqual(bothSeries);
    expect(await sops(`/studies/${STUDY}/series/${z.series}/metadata`)).toEqual([z.sop]);

    // Sent again as a presentation state: no longer an image, so hidden, and counted nowhere.
    await sendAgain('a presentation state now', GRAYSCALE_SOFTCOPY_PRESENTATION_STATE);
    expect(await counts()).toEqual({ series: 1, instances: 2, modalities: ['MR'], perSeries: [[x.seriesInstanceUID, 2]] });
    expect(await sops(`/studies/${STUDY}/metadata`)).toEqual(xSops.sort());
    expect(await sops(`/studies/${STUDY}/instances`)).toEqual(xSops.sort());
    expect((await get(`/studies/${STUDY}/series/${z.series}/metadata`)).status).toBe(404);
    expect((await get(`/studies?ModalitiesInStudy=CT`)).status).toBe(204);
    expect((await get(`/studies?NumberOfStudyRelatedInstances=2`)).json).toHaveLength(1);
    // Unscoped, the study still holds it.
    scoping = {};
    expect(await sops(`/studies/${STUDY}/series/${z.series}/metadata`)).toEqual([z.sop]);
  });
});
