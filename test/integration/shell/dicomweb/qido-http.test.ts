// QIDO-RS through the real app over real HTTP (test/integration/shell/dicomweb/qido.test.ts covers the matching rules in
// depth against a bare service): wildcards, date ranges, includefield, limit/offset, and the
// refusals a client sees, with the node's own error handler.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../../bench/generate.ts';
import { bytesOf } from '../../../support/generated.ts';
import { stow } from '../../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../../support/node.ts';

type Dataset = Record<string, { vr: string; Value?: any[] }>;

/** The generated header's StudyDate (0008,0020) element: tag, 'DA', length 8. */
const STUDY_DATE_HEADER = Buffer.from([0x08, 0x00, 0x20, 0x00, 0x44, 0x41, 0x08, 0x00]);

function withStudyDate(bytes: Buffer, date: string): Buffer {
  const at = bytes.indexOf(STUDY_DATE_HEADER);
  if (at < 0) throw new Error('no StudyDate in the generated header');
  const out = Buffer.from(bytes);
  out.write(date, at + STUDY_DATE_HEADER.length, 'latin1');
  return out;
}

describe('QIDO-RS through the running node', () => {
  let node: TestNode;
  const studies: Record<'A' | 'B' | 'C', GeneratedStudy> = {} as never;

  beforeAll(async () => {
    node = await startTestNode();
    const plan = { A: ['QIDO-A-1', '20200115'], B: ['QIDO-A-2', '20210601'], C: ['QIDO-B-1', '20221231'] } as const;
    for (const [key, [patientId, date]] of Object.entries(plan) as Array<['A' | 'B' | 'C', readonly [string, string]]>) {
      const s = planStudy({ kind: 'single', instances: 2, rows: 8, columns: 8, seed: 1000 + patientId.length + key.charCodeAt(0), patientId });
      studies[key] = s;
      const r = await stow(node.url, await Promise.all(s.instances.map(async (i) => withStudyDate(await bytesOf(i), date))));
      expect(r.status).toBe(200);
    }
  });
  afterAll(async () => node?.stop());

  const query = async (path: string, accept = 'application/dicom+json'): Promise<{ status: number; type: string; body: any }> => {
    const res = await fetch(`${node.url}${path}`, { headers: { accept } });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type') ?? '', body: text ? JSON.parse(text) : undefined };
  };
  const studyUids = (body: Dataset[]): string[] => body.map((d) => d['0020000D']!.Value![0]).sort();
  const uidsOf = (...keys: Array<'A' | 'B' | 'C'>): string[] => keys.map((k) => studies[k].studyInstanceUID).sort();

  it('matches * and ? wildcards', async () => {
    const star = await query('/studies?PatientID=QIDO-A*');
    expect(star.status).toBe(200);
    expect(star.type).toContain('application/dicom+json');
    expect(studyUids(star.body)).toEqual(uidsOf('A', 'B'));
    expect(studyUids((await query('/studies?PatientID=QIDO-?-1')).body)).toEqual(uidsOf('A', 'C'));
    // PN matching ignores case (the node's documented choice).
    expect(studyUids((await query('/studies?PatientName=bench%5Eqido-b*')).body)).toEqual(uidsOf('C'));
    expect((await query('/studies?PatientID=QIDO-Z*')).status).toBe(204);
    // Punctuation in a pattern is taken literally, never as pattern syntax.
    for (const p of ['QIDO-A-1*', '*-B-*', '*(.)[-]{1}+^$|\\/*', 'QIDO.A.1*']) {
      const r = await query(`/studies?PatientID=${encodeURIComponent(p)}`);
      expect(r.status, p).toBe(p.startsWith('QIDO.') || p.startsWith('*(') ? 204 : 200);
    }
  });

  it('matches date ranges, open at either end', async () => {
    expect(studyUids((await query('/studies?StudyDate=20200101-20211231')).body)).toEqual(uidsOf('A', 'B'));
    expect(studyUids((await query('/studies?StudyDate=20210601-')).body)).toEqual(uidsOf('B', 'C'));
    expect(studyUids((await query('/studies?StudyDate=-20200115')).body)).toEqual(uidsOf('A'));
    const one = await query(`/studies?StudyDate=20221231`);
    expect(studyUids(one.body)).toEqual(uidsOf('C'));
    expect(one.body[0]['00080020']).toEqual({ vr: 'DA', Value: ['20221231'] });
  });

  it('returns the attributes includefield asks for, and only then', async () => {
    const a = studies.A;
    const path = `/studies/${a.studyInstanceUID}/series/${a.seriesInstanceUID}/instances`;
    const plain = await query(path);
    expect(plain.body).toHaveLength(2);
    for (const d of plain.body as Dataset[]) expect(d['00080008']).toBeUndefined();
    const withImageType = await query(`${path}?includefield=00080008`);
    for (const d of withImageType.body as Dataset[]) expect(d['00080008']!.Value).toEqual(['ORIGINAL', 'PRIMARY', 'OTHER']);
    const byKeyword = await query(`${path}?includefield=ImageType`);
    expect(byKeyword.body).toEqual(withImageType.body);
  });

  it('pages with limit and offset: pages are disjoint and together hold every match', async () => {
    const all = studyUids((await query('/studies?PatientID=QIDO*')).body);
    expect(all).toEqual(uidsOf('A', 'B', 'C'));
    const pages: string[] = [];
    for (let offset = 0; offset < 3; offset++) {
      const page = await query(`/studies?PatientID=QIDO*&limit=1&offset=${offset}`);
      expect(page.status).toBe(200);
      expect(page.body).toHaveLength(1);
      pages.push(page.body[0]['0020000D'].Value[0]);
    }
    expect(pages.sort()).toEqual(all);
    expect((await query('/studies?PatientID=QIDO*&limit=2')).body).toHaveLength(2);
    expect((await query('/studies?PatientID=QIDO*&offset=3')).status).toBe(204);
  });

  it('refuses an invalid query with 400 INVALID_QUERY and a reason', async () => {
    for (const q of ['limit=abc', 'limit=0', 'offset=-1', 'NoSuchKeyword=1', 'includefield=NoSuchKeyword', 'PatientID=a&PatientID=b', 'fuzzymatching=maybe']) {
      const r = await query(`/studies?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body.code, q).toBe('INVALID_QUERY');
      expect(r.body.message.length, q).toBeGreaterThan(5);
    }
  });

  it('refuses an invalid UID in the URL with 400 INVALID_UID, and answers 404 for an unknown one', async () => {
    const a = studies.A;
    for (const path of [
      '/studies/1.2.abc/series',
      `/studies/${a.studyInstanceUID}/series/1..2/instances`,
      '/studies/..%2F..%2Fetc/instances',
      `/studies/1.${'9'.repeat(70)}/series`,
    ]) {
      const r = await query(path);
      expect(r.status, path).toBe(400);
      expect(r.body.code, path).toBe('INVALID_UID');
    }
    const unknown = await query('/studies/1.2.3.4.5.6.7/series');
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('STUDY_NOT_FOUND');
  });
});
