// A small catalog for the scope tests (test/unit/catalog/scope.test.ts): two patients, one with an
// Issuer of Patient ID and one without, a third study of the first Patient ID under another
// issuer, CT, MR, an SR, a key object selection referencing two images, a presentation state.
// Instances as the study writer commits them: DICOM JSON metadata, a layout, a DAG node CID.
import { createHash } from 'node:crypto';
import type { CatalogInstance, CommitInput } from '../../src/catalog/records.ts';
import type { DicomJsonDataset, DicomJsonElement } from '../../src/dicom/model.ts';

export const SOP = {
  ct: '1.2.840.10008.5.1.4.1.1.2',
  mr: '1.2.840.10008.5.1.4.1.1.4',
  sr: '1.2.840.10008.5.1.4.1.1.88.22',
  kos: '1.2.840.10008.5.1.4.1.1.88.59',
  pr: '1.2.840.10008.5.1.4.1.1.11.1',
} as const;

const ROOT = '1.2.826.0.1.3680043.8.498.77';
/** Study A: P1 of HOSP_A. B: P2, no issuer. C: P1 of HOSP_B (another person, same Patient ID). */
export const STUDY = { a: `${ROOT}.1`, b: `${ROOT}.2`, c: `${ROOT}.3` } as const;
export const SERIES = {
  aCt: `${STUDY.a}.1`,
  aMr: `${STUDY.a}.2`,
  aSr: `${STUDY.a}.3`,
  aKo: `${STUDY.a}.4`,
  aPr: `${STUDY.a}.5`,
  bCt: `${STUDY.b}.1`,
  cMr: `${STUDY.c}.1`,
} as const;
export const sopOf = (series: string, n: number): string => `${series}.${n}`;
/** The images the key object selection of study A references. */
export const KEY_IMAGES = [sopOf(SERIES.aCt, 1), sopOf(SERIES.aMr, 2)] as const;

const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const str = (vr: string, ...values: unknown[]): DicomJsonElement => ({ vr, Value: values });

interface Spec {
  study: string;
  series: string;
  n: number;
  sopClass: string;
  modality: string;
  seriesNumber: number;
  extra?: DicomJsonDataset;
}

function instance(spec: Spec, patient: { id: string; issuer?: string; name: string }, date: string): CatalogInstance {
  const sop = sopOf(spec.series, spec.n);
  const image = spec.sopClass === SOP.ct || spec.sopClass === SOP.mr;
  const metadata: DicomJsonDataset = {
    '00080016': str('UI', spec.sopClass),
    '00080018': str('UI', sop),
    '00080020': str('DA', date),
    '00080060': str('CS', spec.modality),
    '00100010': str('PN', { Alphabetic: patient.name }),
    '00100020': str('LO', patient.id),
    ...(patient.issuer === undefined ? {} : { '00100021': str('LO', patient.issuer) }),
    '0020000D': str('UI', spec.study),
    '0020000E': str('UI', spec.series),
    '00200011': str('IS', spec.seriesNumber),
    '00200013': str('IS', spec.n),
    ...(image ? { '00280010': str('US', 4), '00280011': str('US', 4), '00280100': str('US', 16) } : {}),
    ...spec.extra,
  };
  return {
    studyInstanceUID: spec.study,
    seriesInstanceUID: spec.series,
    sopInstanceUID: sop,
    sopClassUID: spec.sopClass,
    transferSyntaxUID: EXPLICIT_LE,
    size: 1024,
    sha256: createHash('sha256').update(JSON.stringify(metadata)).digest('hex'),
    nodeCid: `bafy-${sop}`,
    metadata,
    layout: image
      ? {
          transferSyntaxUID: EXPLICIT_LE,
          datasetOffset: 300,
          pixelData: { valueOffset: 900, valueLength: 32, encapsulated: false, vr: 'OW' },
          frames: [[{ offset: 900, length: 32 }]],
          bulk: { '7FE00010': { offset: 900, length: 32 } },
        }
      : { transferSyntaxUID: EXPLICIT_LE, datasetOffset: 300, pixelData: null, frames: [], bulk: {} },
  };
}

/** The Current Requested Procedure Evidence Sequence of a KOS naming `refs` (series UID, SOP UIDs) in `study`. */
export function evidence(study: string, refs: Array<{ series: string; sops: readonly string[]; sopClass: string }>): DicomJsonDataset {
  return {
    '0040A375': {
      vr: 'SQ',
      Value: [
        {
          '0020000D': str('UI', study),
          '00081115': {
            vr: 'SQ',
            Value: refs.map((r) => ({
              '0020000E': str('UI', r.series),
              '00081199': { vr: 'SQ', Value: r.sops.map((sop) => ({ '00081150': str('UI', r.sopClass), '00081155': str('UI', sop) })) },
            })),
          },
        },
        // Evidence of another study: it opens nothing in this one.
        {
          '0020000D': str('UI', STUDY.b),
          '00081115': { vr: 'SQ', Value: [{ '00081199': { vr: 'SQ', Value: [{ '00081155': str('UI', sopOf(SERIES.bCt, 1)) }] } }] },
        },
      ],
    },
  };
}

/** The seed, one commit per study (version 1 of each). */
export function scopeSeed(createdAt = '2024-05-01T10:00:00.000Z'): CommitInput[] {
  const p1a = { id: 'P1', issuer: 'HOSP_A', name: 'Doe^Jane' };
  const p2 = { id: 'P2', name: 'Roe^Richard' };
  const p1b = { id: 'P1', issuer: 'HOSP_B', name: 'Other^Person' };
  const a = STUDY.a;
  const studyA = [
    ...[1, 2, 3].map((n) => instance({ study: a, series: SERIES.aCt, n, sopClass: SOP.ct, modality: 'CT', seriesNumber: 1 }, p1a, '20240102')),
    ...[1, 2].map((n) => instance({ study: a, series: SERIES.aMr, n, sopClass: SOP.mr, modality: 'MR', seriesNumber: 2 }, p1a, '20240102')),
    instance({ study: a, series: SERIES.aSr, n: 1, sopClass: SOP.sr, modality: 'SR', seriesNumber: 3 }, p1a, '20240102'),
    instance(
      {
        study: a,
        series: SERIES.aKo,
        n: 1,
        sopClass: SOP.kos,
        modality: 'KO',
        seriesNumber: 4,
        extra: evidence(a, [
          { series: SERIES.aCt, sops: [KEY_IMAGES[0]], sopClass: SOP.ct },
          { series: SERIES.aMr, sops: [KEY_IMAGES[1]], sopClass: SOP.mr },
        ]),
      },
      p1a,
      '20240102',
    ),
    instance({ study: a, series: SERIES.aPr, n: 1, sopClass: SOP.pr, modality: 'PR', seriesNumber: 5 }, p1a, '20240102'),
  ];
  const studyB = [1, 2].map((n) => instance({ study: STUDY.b, series: SERIES.bCt, n, sopClass: SOP.ct, modality: 'CT', seriesNumber: 1 }, p2, '20240103'));
  const studyC = [instance({ study: STUDY.c, series: SERIES.cMr, n: 1, sopClass: SOP.mr, modality: 'MR', seriesNumber: 1 }, p1b, '20240101')];
  return [
    { studyInstanceUID: a, version: 1, root: `bafyroot-${a}-1`, prev: null, instances: studyA, createdAt },
    { studyInstanceUID: STUDY.b, version: 1, root: `bafyroot-${STUDY.b}-1`, prev: null, instances: studyB, createdAt },
    { studyInstanceUID: STUDY.c, version: 1, root: `bafyroot-${STUDY.c}-1`, prev: null, instances: studyC, createdAt },
  ];
}
