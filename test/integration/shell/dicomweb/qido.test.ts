// QIDO-RS over HTTP (fastify inject) against a catalog seeded with a few studies.
import { createHash } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../../../src/catalog/catalog.ts';
import type { CatalogInstance } from '../../../../src/catalog/records.ts';
import { qidoService, type QidoOptions } from '../../../../src/shell/dicomweb/qido.ts';
import type { DicomJsonDataset, DicomJsonElement } from '../../../../src/dicom/model.ts';
import { isVaultError } from '../../../../src/core/errors.ts';

const CT_IMAGE = '1.2.840.10008.5.1.4.1.1.2';
const MR_IMAGE = '1.2.840.10008.5.1.4.1.1.4';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const JPEG_LS = '1.2.840.10008.1.2.4.80';

const str = (vr: string, ...values: Array<string | number>): DicomJsonElement => ({ vr, Value: values });
const pn = (name: { Alphabetic?: string; Ideographic?: string }): DicomJsonElement => ({ vr: 'PN', Value: [name] });

// Study A: CT + MR; B: MR; C: CT. Values chosen so that SQL LIKE wildcards in them (% _)
// would match the wrong study if they were not taken literally.
const A = '1.2.826.0.1.3680043.8.498.10';
const B = '1.2.826.0.1.3680043.8.498.20';
const C = '1.2.826.0.1.3680043.8.498.30';
const BIG = '1.2.826.0.1.3680043.8.498.40';
const A_CT = `${A}.1`;
const A_MR = `${A}.2`;
const B_MR = `${B}.1`;
const C_CT = `${C}.1`;
const BIG_SERIES = `${BIG}.1`;

const STUDY_ATTRS: Record<string, DicomJsonDataset> = {
  [A]: {
    '00080005': str('CS', 'ISO_IR 192'),
    '00100010': pn({ Alphabetic: 'Doe^John' }),
    '00100020': str('LO', 'PID_1'),
    '00100030': str('DA', '19700101'),
    '00100040': str('CS', 'M'),
    '00101010': str('AS', '050Y'),
    '00080020': str('DA', '20200115'),
    '00080030': str('TM', '101500'),
    '00080050': str('SH', 'ACC%1'),
    '00080090': pn({ Alphabetic: 'Ref^Doctor' }),
    '00081030': str('LO', 'CT head [contrast]'),
    '00200010': str('SH', 'S1'),
  },
  [B]: {
    '00100010': pn({ Alphabetic: 'Yamada^Tarou', Ideographic: '山田^太郎' }),
    '00100020': str('LO', 'PIDX1'),
    '00080020': str('DA', '20201231'),
    '00080030': str('TM', '0830'),
    '00080050': str('SH', 'ACCX1'),
    '00081030': str('LO', 'MR knee'),
  },
  [C]: {
    '00100010': pn({ Alphabetic: 'doe^jane' }),
    '00100020': str('LO', 'PID-3'),
    '00080020': str('DA', '20210301'),
    '00080030': str('TM', '230000'),
    '00080050': str('SH', 'ACC3'),
  },
  [BIG]: {
    '00100010': pn({ Alphabetic: 'Big^Series' }),
    '00100020': str('LO', 'PID[BIG]'),
    '00080020': str('DA', '19990101'),
  },
};

function inst(study: string, series: string, sop: string, attrs: DicomJsonDataset, sopClass = CT_IMAGE, ts = EXPLICIT_LE): CatalogInstance {
  return {
    studyInstanceUID: study,
    seriesInstanceUID: series,
    sopInstanceUID: sop,
    sopClassUID: sopClass,
    transferSyntaxUID: ts,
    size: 10_000,
    sha256: createHash('sha256').update(sop).digest('hex'),
    nodeCid: `bafy-${sop}`,
    metadata: {
      ...STUDY_ATTRS[study],
      '00080016': str('UI', sopClass),
      '00080018': str('UI', sop),
      '0020000D': str('UI', study),
      '0020000E': str('UI', series),
      '00280010': str('US', 512),
      '00280011': str('US', 512),
      '00280100': str('US', 16),
      '7FE00010': { vr: 'OW', BulkDataURI: 'bulk/7FE00010' },
      ...attrs,
    },
    layout: { transferSyntaxUID: ts, datasetOffset: 300, pixelData: null, frames: [], bulk: {} },
  };
}

function seed(catalog: Catalog): void {
  const ct = (n: number) => ({ '00080060': str('CS', 'CT'), '00200011': str('IS', 1), '0008103E': str('LO', 'Axial'), '00200013': str('IS', n) });
  const mr = (n: number) => ({ '00080060': str('CS', 'MR'), '00200011': str('IS', 2), '00200013': str('IS', n) });
  const commit = (study: string, instances: CatalogInstance[]) =>
    catalog.commitStudyVersion({ studyInstanceUID: study, version: 1, root: `root-${study}`, prev: null, instances, createdAt: '2024-01-01T00:00:00Z' });
  commit(A, [
    inst(A, A_CT, `${A_CT}.2`, ct(2)),
    inst(A, A_CT, `${A_CT}.1`, { ...ct(1), '00280010': str('US', 256) }),
    inst(A, A_MR, `${A_MR}.1`, mr(1), MR_IMAGE, JPEG_LS),
  ]);
  commit(B, [inst(B, B_MR, `${B_MR}.1`, mr(1), MR_IMAGE)]);
  commit(C, [inst(C, C_CT, `${C_CT}.1`, ct(1))]);
  // Shuffled, so that the order of the listing is the catalog's doing.
  const big = Array.from({ length: 1000 }, (_, i) => inst(BIG, BIG_SERIES, `${BIG_SERIES}.${i + 1}`, { ...ct(i + 1), '00080060': str('CS', 'OT') }));
  big.sort((x, y) => (x.sha256 < y.sha256 ? -1 : 1));
  commit(BIG, big);
}

async function buildApp(catalog: Catalog, options: QidoOptions = {}): Promise<FastifyInstance> {
  const app = Fastify();
  app.setErrorHandler((err, _request, reply) => {
    if (isVaultError(err)) return reply.code(err.status).send({ code: err.code, message: err.message });
    return reply.code(500).send({ code: 'INTERNAL', message: String(err) });
  });
  await app.register(qidoService({ catalog }, options), { prefix: '/dicom-web' });
  return app;
}

let catalog: Catalog;
let app: FastifyInstance;

beforeAll(async () => {
  catalog = Catalog.open({ path: ':memory:' });
  seed(catalog);
  app = await buildApp(catalog);
});
afterAll(async () => {
  await app?.close();
  catalog?.close();
});

interface Answer {
  status: number;
  type: string | undefined;
  body: string;
  json: DicomJsonDataset[];
  headers: Record<string, unknown>;
}

async function get(url: string, accept = 'application/dicom+json', on: FastifyInstance = app): Promise<Answer> {
  const r = await on.inject({ method: 'GET', url: `/dicom-web${url}`, headers: { accept } });
  const type = r.headers['content-type'];
  return {
    status: r.statusCode,
    type: typeof type === 'string' ? type : undefined,
    body: r.body,
    json: r.statusCode === 200 && r.body !== '' ? (JSON.parse(r.body) as DicomJsonDataset[]) : [],
    headers: r.headers,
  };
}

const values = (ds: DicomJsonDataset | undefined, tag: string): unknown[] | undefined => ds?.[tag]?.Value;
const first = (ds: DicomJsonDataset | undefined, tag: string): unknown => values(ds, tag)?.[0];
const endsWith = (s: string): RegExp => new RegExp(`${s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
const studyUids = (a: Answer): unknown[] => a.json.map((ds) => first(ds, '0020000D')).sort();

async function expectStudies(query: string, expected: string[]): Promise<void> {
  const r = await get(`/studies?${query}`);
  if (expected.length === 0) {
    expect(r.status, query).toBe(204);
    return;
  }
  expect(r.status, `${query}: ${r.body}`).toBe(200);
  expect(studyUids(r), query).toEqual([...expected].sort());
}

async function expectInvalid(url: string, parameter: string): Promise<void> {
  const r = await get(url);
  expect(r.status, url).toBe(400);
  const body = JSON.parse(r.body) as { code: string; message: string };
  expect(body.code, url).toBe('INVALID_QUERY');
  expect(body.message, url).toContain(parameter);
}

describe('QIDO-RS: study search', () => {
  it('returns every study with the attributes PS3.18 requires', async () => {
    const r = await get('/studies');
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^application\/dicom\+json/);
    expect(studyUids(r)).toEqual([A, B, C, BIG].sort());
    const a = r.json.find((ds) => first(ds, '0020000D') === A)!;
    for (const tag of [
      '00080020',
      '00080030',
      '00080050',
      '00080056',
      '00080061',
      '00080090',
      '00081190',
      '00100010',
      '00100020',
      '00100030',
      '00100040',
      '0020000D',
      '00200010',
      '00201206',
      '00201208',
    ]) {
      expect(a[tag], tag).toBeDefined();
    }
    expect(first(a, '00080005')).toBe('ISO_IR 192');
    expect(values(a, '00080061')).toEqual(['CT', 'MR']);
    expect(first(a, '00201206')).toBe(2);
    expect(first(a, '00201208')).toBe(3);
    expect(first(a, '00080056')).toBe('ONLINE');
    expect(first(a, '00081190')).toMatch(/^http:\/\/[^/]+\/dicom-web\/studies\//);
    expect(first(a, '00081190')).toMatch(endsWith(`/dicom-web/studies/${A}`));
    expect(a['00081190']?.vr).toBe('UR');
    // Required but unknown attributes are present and empty; no instance attributes leak in.
    const c = r.json.find((ds) => first(ds, '0020000D') === C)!;
    expect(c['00080090']).toEqual({ vr: 'PN' });
    expect(c['00280010']).toBeUndefined();
  });

  it('orders by study date, most recent first, and pages with limit and offset', async () => {
    const all = (await get('/studies')).json.map((ds) => first(ds, '0020000D'));
    expect(all).toEqual([C, B, A, BIG]);
    expect((await get('/studies?limit=2')).json.map((ds) => first(ds, '0020000D'))).toEqual([C, B]);
    expect((await get('/studies?limit=2&offset=2')).json.map((ds) => first(ds, '0020000D'))).toEqual([A, BIG]);
    expect((await get('/studies?offset=3')).json.map((ds) => first(ds, '0020000D'))).toEqual([BIG]);
    const past = await get('/studies?offset=10');
    expect(past.status).toBe(204);
  });

  it('answers 204 with an empty body when nothing matches', async () => {
    const r = await get('/studies?PatientID=nobody');
    expect(r.status).toBe(204);
    expect(r.body).toBe('');
  });

  it('single value matching by keyword or tag, case-sensitive for LO', async () => {
    await expectStudies('PatientID=PID-3', [C]);
    await expectStudies('00100020=PID-3', [C]);
    await expectStudies('PatientID=pid-3', []);
    await expectStudies('AccessionNumber=ACC3', [C]);
  });

  it('takes % and _ and [ in values literally', async () => {
    await expectStudies('PatientID=PID_1', [A]);
    await expectStudies(`AccessionNumber=${encodeURIComponent('ACC%1')}`, [A]);
    await expectStudies(`StudyDescription=${encodeURIComponent('CT head [contrast]')}`, [A]);
    await expectStudies(`StudyDescription=${encodeURIComponent('* [contrast]')}`, [A]);
    // Indexed columns (PatientID, AccessionNumber) are matched with GLOB: its [ must be escaped.
    await expectStudies(`PatientID=${encodeURIComponent('PID[BIG]')}`, [BIG]);
    await expectStudies(`PatientID=${encodeURIComponent('PID[B*')}`, [BIG]);
    await expectStudies(`AccessionNumber=${encodeURIComponent('ACC%*')}`, [A]);
  });

  it('wildcard matching with * and ?', async () => {
    await expectStudies('PatientID=PID?1', [A, B]);
    await expectStudies('PatientID=PID*', [A, B, C, BIG]);
    await expectStudies('PatientID=*3', [C]);
    await expectStudies('AccessionNumber=ACC?', [C]);
    await expectStudies('StudyDescription=MR*', [B]);
  });

  it('PN matching is case-insensitive and looks at every component group', async () => {
    await expectStudies('PatientName=doe*', [A, C]);
    await expectStudies('PatientName=DOE^JOHN', [A]);
    await expectStudies('PatientName=Doe', []);
    await expectStudies(`PatientName=${encodeURIComponent('山田*')}`, [B]);
    await expectStudies('ReferringPhysicianName=ref*', [A]);
  });

  it('date and time range matching', async () => {
    await expectStudies('StudyDate=20200101-20201231', [A, B]);
    await expectStudies('StudyDate=20200115', [A]);
    await expectStudies('StudyDate=-2020', [A, B, BIG]);
    await expectStudies('StudyDate=2021-', [C]);
    await expectStudies('StudyDate=202012-202103', [B, C]);
    await expectStudies('StudyTime=0800-0900', [B]);
    await expectStudies('StudyTime=10', [A]);
    await expectStudies('StudyTime=2200-', [C]);
    await expectStudies('PatientBirthDate=19700101', [A]);
  });

  it('UID list matching, comma or backslash separated', async () => {
    await expectStudies(`StudyInstanceUID=${A},${C}`, [A, C]);
    await expectStudies(`StudyInstanceUID=${A}${encodeURIComponent('\\')}${B}`, [A, B]);
    await expectStudies(`StudyInstanceUID=${A}&StudyInstanceUID=${B}`, [A, B]);
    await expectStudies('StudyInstanceUID=1.2.3.4', []);
  });

  it('ModalitiesInStudy matches a study when any of its modalities matches', async () => {
    await expectStudies('ModalitiesInStudy=MR', [A, B]);
    await expectStudies('ModalitiesInStudy=CT', [A, C]);
    await expectStudies('ModalitiesInStudy=CT,OT', [A, C, BIG]);
    await expectStudies('ModalitiesInStudy=US', []);
  });

  it('universal matching returns the key, even when empty', async () => {
    const r = await get('/studies?PatientAge=&StudyDate=');
    expect(studyUids(r)).toEqual([A, B, C, BIG].sort());
    const a = r.json.find((ds) => first(ds, '0020000D') === A)!;
    const b = r.json.find((ds) => first(ds, '0020000D') === B)!;
    expect(first(a, '00101010')).toBe('050Y');
    expect(b['00101010']).toEqual({ vr: 'AS' });
    await expectStudies('PatientName=*', [A, B, C, BIG]);
  });

  it('combines keys with AND', async () => {
    await expectStudies('PatientName=doe*&StudyDate=2021-', [C]);
    await expectStudies('PatientName=doe*&ModalitiesInStudy=MR', [A]);
  });

  it('includefield adds study attributes, all adds every stored one, lower levels are not returned', async () => {
    const r = await get(`/studies?StudyInstanceUID=${A}&includefield=PatientAge,00080062&includefield=Rows`);
    const a = r.json[0]!;
    expect(first(a, '00101010')).toBe('050Y');
    expect(values(a, '00080062')).toEqual([CT_IMAGE, MR_IMAGE]);
    expect(a['00280010']).toBeUndefined();
    const all = (await get(`/studies?StudyInstanceUID=${A}&includefield=all`)).json[0]!;
    expect(first(all, '00101010')).toBe('050Y');
    expect(first(all, '00081030')).toBe('CT head [contrast]');
    // A study-level includefield of an attribute the study does not have is simply absent.
    const b = (await get(`/studies?StudyInstanceUID=${B}&includefield=PatientAge`)).json[0]!;
    expect(b['00101010']).toBeUndefined();
  });

  it('accepts fuzzymatching', async () => {
    await expectStudies('fuzzymatching=false&PatientID=PID-3', [C]);
    await expectStudies('fuzzymatching=true&PatientID=PID-3', [C]);
  });
});

describe('QIDO-RS: series search', () => {
  it("lists a study's series with the series attributes", async () => {
    const r = await get(`/studies/${A}/series`);
    expect(r.status).toBe(200);
    expect(r.json.map((ds) => first(ds, '0020000E'))).toEqual([A_CT, A_MR]);
    const ct = r.json[0]!;
    expect(first(ct, '00080060')).toBe('CT');
    expect(first(ct, '00200011')).toBe(1);
    expect(first(ct, '0008103E')).toBe('Axial');
    expect(first(ct, '00201209')).toBe(2);
    expect(first(ct, '0020000D')).toBe(A);
    expect(ct['00400244']).toEqual({ vr: 'DA' });
    expect(first(ct, '00081190')).toMatch(endsWith(`/dicom-web/studies/${A}/series/${A_CT}`));
    // Study-scoped: no study attributes.
    expect(ct['00100010']).toBeUndefined();
  });

  it('matches series keys, and study keys relationally in /series', async () => {
    let r = await get(`/studies/${A}/series?Modality=MR`);
    expect(r.json.map((ds) => first(ds, '0020000E'))).toEqual([A_MR]);
    r = await get('/series?Modality=CT');
    expect(r.json.map((ds) => first(ds, '0020000E')).sort()).toEqual([A_CT, C_CT].sort());
    r = await get('/series?PatientID=PID_1');
    expect(r.json.map((ds) => first(ds, '0020000E'))).toEqual([A_CT, A_MR]);
    // All Series: the study attributes come along.
    expect(first(r.json[0], '00100020')).toBe('PID_1');
    expect(first(r.json[0], '00201208')).toBe(3);
    r = await get(`/series?SeriesInstanceUID=${B_MR},${C_CT}&includefield=PatientName`);
    expect(r.json.map((ds) => first(ds, '0020000E'))).toEqual([B_MR, C_CT]);
    r = await get('/series?SeriesNumber=2');
    expect(r.json.map((ds) => first(ds, '0020000E'))).toEqual([A_MR, B_MR]);
  });

  it('404 for a study that does not exist, 204 for one whose series do not match', async () => {
    const missing = await get('/studies/1.2.3.4.5.6/series');
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body).code).toBe('STUDY_NOT_FOUND');
    expect((await get(`/studies/${A}/series?Modality=US`)).status).toBe(204);
  });
});

describe('QIDO-RS: instance search', () => {
  it("lists a series' instances with the instance attributes, in InstanceNumber order", async () => {
    const r = await get(`/studies/${A}/series/${A_CT}/instances`);
    expect(r.status).toBe(200);
    expect(r.json.map((ds) => first(ds, '00080018'))).toEqual([`${A_CT}.1`, `${A_CT}.2`]);
    const i = r.json[0]!;
    expect(first(i, '00080016')).toBe(CT_IMAGE);
    expect(first(i, '00200013')).toBe(1);
    expect(first(i, '00280010')).toBe(256);
    expect(first(i, '00280011')).toBe(512);
    expect(first(i, '00280100')).toBe(16);
    expect(first(i, '00083002')).toBe(EXPLICIT_LE);
    expect(first(i, '00080056')).toBe('ONLINE');
    expect(first(i, '00081190')).toMatch(endsWith(`/dicom-web/studies/${A}/series/${A_CT}/instances/${A_CT}.1`));
    // Series-scoped: neither series nor study attributes, and never pixel data.
    expect(i['00080060']).toBeUndefined();
    expect(i['00100010']).toBeUndefined();
    expect(i['7FE00010']).toBeUndefined();
  });

  it('matches instance keys from the stored metadata, and carries higher levels when unscoped', async () => {
    let r = await get(`/studies/${A}/instances?Rows=256`);
    expect(r.json.map((ds) => first(ds, '00080018'))).toEqual([`${A_CT}.1`]);
    // Study's Instances: series attributes come along.
    expect(first(r.json[0], '00080060')).toBe('CT');
    expect(r.json[0]!['00100010']).toBeUndefined();
    r = await get(`/studies/${A}/instances?SOPClassUID=${MR_IMAGE}`);
    expect(r.json.map((ds) => first(ds, '00080018'))).toEqual([`${A_MR}.1`]);
    expect(first(r.json[0], '00083002')).toBe(JPEG_LS);
    r = await get(`/instances?PatientName=${encodeURIComponent('yamada*')}&InstanceNumber=1`);
    expect(r.json.map((ds) => first(ds, '00080018'))).toEqual([`${B_MR}.1`]);
    // All Instances: study and series attributes come along.
    expect(first(r.json[0], '00100020')).toBe('PIDX1');
    expect(first(r.json[0], '00080060')).toBe('MR');
    r = await get('/instances?Modality=CT&InstanceNumber=2');
    expect(r.json.map((ds) => first(ds, '00080018'))).toEqual([`${A_CT}.2`]);
    r = await get('/instances?Modality=CT,OT&InstanceNumber=2');
    expect(r.json.map((ds) => first(ds, '00080018')).sort()).toEqual([`${A_CT}.2`, `${BIG_SERIES}.2`].sort());
  });

  it('includefield=all returns the stored metadata with absolute bulk data URLs', async () => {
    const r = await get(`/studies/${A}/series/${A_CT}/instances?SOPInstanceUID=${A_CT}.1&includefield=all`);
    const i = r.json[0]!;
    expect(first(i, '00100010')).toEqual({ Alphabetic: 'Doe^John' });
    const pixel = i['7FE00010']!;
    expect(pixel.BulkDataURI).toBe(`${first(i, '00081190') as string}/bulk/7FE00010`);
    expect(pixel.BulkDataURI).toMatch(/^http:\/\//);
  });

  it('404 for an unknown series of a known study', async () => {
    const r = await get(`/studies/${A}/series/1.2.3.4.5.6/instances`);
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).code).toBe('SERIES_NOT_FOUND');
    expect((await get(`/studies/${A}/series/${A_CT}/instances?InstanceNumber=99`)).status).toBe(204);
  });

  it('lists a 1,000-instance series completely, in InstanceNumber order', async () => {
    const r = await get(`/studies/${BIG}/series/${BIG_SERIES}/instances`);
    expect(r.status).toBe(200);
    expect(r.json).toHaveLength(1000);
    expect(r.json.map((ds) => first(ds, '00200013'))).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(new Set(r.json.map((ds) => first(ds, '00081190'))).size).toBe(1000);
    // The WADO metadata path reads the same listing.
    const listed = catalog.listInstances({ study: BIG, series: BIG_SERIES });
    expect(listed.map((i) => i.metadata['00200013']?.Value?.[0])).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
  });

  it('pages a series with limit and offset', async () => {
    const r = await get(`/studies/${BIG}/series/${BIG_SERIES}/instances?limit=10&offset=995`);
    expect(r.json.map((ds) => first(ds, '00200013'))).toEqual([996, 997, 998, 999, 1000]);
  });

  it('caps results at maxResults and says more can be requested', async () => {
    const capped = await buildApp(catalog, { maxResults: 100 });
    try {
      const r = await get(`/studies/${BIG}/series/${BIG_SERIES}/instances`, 'application/dicom+json', capped);
      expect(r.json).toHaveLength(100);
      expect(String(r.headers.warning)).toMatch(/^299 .*additional results/);
      const asked = await get(`/studies/${BIG}/series/${BIG_SERIES}/instances?limit=50`, 'application/dicom+json', capped);
      expect(asked.json).toHaveLength(50);
      expect(asked.headers.warning).toBeUndefined();
    } finally {
      await capped.close();
    }
  });
});

describe('QIDO-RS: refusals', () => {
  it('400 INVALID_QUERY naming the parameter', async () => {
    await expectInvalid('/studies?Foo=1', 'Foo');
    await expectInvalid('/studies?0010002=1', '0010002');
    await expectInvalid('/studies?StudyDate=2020-13-01', 'StudyDate');
    await expectInvalid('/studies?StudyDate=20201301', 'StudyDate');
    await expectInvalid('/studies?StudyDate=20201231-20200101', 'StudyDate');
    await expectInvalid('/studies?StudyDate=yesterday', 'StudyDate');
    await expectInvalid('/studies?StudyTime=2500', 'StudyTime');
    await expectInvalid('/studies?StudyInstanceUID=1.2.abc', 'StudyInstanceUID');
    await expectInvalid('/studies?StudyInstanceUID=1.02.3', 'StudyInstanceUID');
    await expectInvalid('/studies?limit=abc', 'limit');
    await expectInvalid('/studies?limit=0', 'limit');
    await expectInvalid('/studies?offset=-1', 'offset');
    await expectInvalid('/studies?limit=1&limit=2', 'limit');
    await expectInvalid('/studies?fuzzymatching=maybe', 'fuzzymatching');
    await expectInvalid('/studies?includefield=NoSuchKeyword', 'includefield');
    await expectInvalid('/studies?PatientID=a&PatientID=b', 'PatientID');
    await expectInvalid('/studies?PatientID=a&00100020=b', '00100020');
    await expectInvalid('/studies?Modality=CT', 'Modality');
    await expectInvalid('/series?Rows=512', 'Rows');
    await expectInvalid('/instances?InstanceNumber=one', 'InstanceNumber');
    await expectInvalid('/instances?00400275.00401001=X', '00400275.00401001');
  });

  it('400 INVALID_UID for a malformed UID in the path', async () => {
    const r = await get('/studies/1.2.x/series');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).code).toBe('INVALID_UID');
  });

  it('406 unless DICOM JSON or JSON is acceptable', async () => {
    const xml = await get('/studies', 'multipart/related; type="application/dicom+xml"');
    expect(xml.status).toBe(406);
    expect(JSON.parse(xml.body).code).toBe('NOT_ACCEPTABLE');
    expect((await get('/studies', 'application/dicom+xml')).status).toBe(406);
    const json = await get('/studies', 'application/json');
    expect(json.status).toBe(200);
    expect(json.type).toMatch(/^application\/json/);
    expect((await get('/studies', '*/*')).type).toMatch(/^application\/dicom\+json/);
    expect((await get('/studies', 'application/dicom+xml, application/dicom+json;q=0.5')).status).toBe(200);
  });
});
