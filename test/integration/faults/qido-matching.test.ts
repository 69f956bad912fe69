// Hostile QIDO-RS patterns (issue 21, item 11). Wildcards once became a backtracking RegExp run on
// the main thread: `PatientName=*a*a*a*a*a*a*ab` against a 60-character name took 3 s, with one
// more `*a` 31 s, and every other request (a health check too) waited as long. They must answer in
// milliseconds, with the node serving others meanwhile, and queries past the bounds are refused
// with 400 naming the bound. The node runs in its own process (`dicom-vault serve`), as deployed:
// one inside the test's process would share the test's event loop, hiding the stall.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import { DEFAULT_QIDO_MAX_QUERY_LENGTH, DEFAULT_QIDO_MAX_VALUE_LENGTH, DEFAULT_QIDO_MAX_WILDCARDS } from '../../../src/shell/dicomweb/qido.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { serve } from '../../support/process.ts';

/** Far above what a linear matcher needs here (a few ms), far below what backtracking took (seconds). */
const FAST_MS = 200;

// PatientName is 'BENCH^' + PatientID: 60 characters, 54 of them 'a'.
const PATIENT_ID = 'a'.repeat(54);

/** [query key, value, whether the study matches]; every value within the bounds. */
const HOSTILE: ReadonlyArray<readonly [string, string, boolean]> = [
  ['PatientName', `${'*a'.repeat(7)}b`, false],
  ['PatientName', `${'*a'.repeat(8)}b`, false],
  ['PatientName', `${'*a'.repeat(16)}b`, false],
  ['PatientName', '*a'.repeat(DEFAULT_QIDO_MAX_WILDCARDS), false],
  ['PatientName', '*a'.repeat(54), true],
  ['PatientName', `${'*a'.repeat(DEFAULT_QIDO_MAX_WILDCARDS - 1)}b`, false],
  ['PatientName', `${'*?'.repeat(DEFAULT_QIDO_MAX_WILDCARDS / 2)}b`, false],
  ['PatientName', '*?'.repeat(DEFAULT_QIDO_MAX_WILDCARDS / 2), true],
  ['PatientName', `${'*'.repeat(DEFAULT_QIDO_MAX_WILDCARDS - 1)}b`, false],
  ['PatientName', '?'.repeat(60), true],
  ['PatientName', '?'.repeat(59), false],
  ['PatientName', `*${'?'.repeat(61)}`, false],
  ['PatientName', `*${'?'.repeat(59)}`, true],
  // PatientID is matched by SQLite's GLOB on an indexed column, not by the node's matcher.
  ['PatientID', `${'*a'.repeat(DEFAULT_QIDO_MAX_WILDCARDS - 1)}b`, false],
  ['PatientID', '*a'.repeat(54), true],
  ['PatientID', `${'*?'.repeat(DEFAULT_QIDO_MAX_WILDCARDS / 2)}b`, false],
];

interface Answer {
  status: number;
  ms: number;
  body: any;
}

describe('QIDO-RS matching under hostile patterns', () => {
  let dataDir: string;
  let node: Awaited<ReturnType<typeof serve>>;
  let study: GeneratedStudy;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-qido-faults-'));
    node = await serve(dataDir);
    study = planStudy({ kind: 'single', instances: 1, rows: 8, columns: 8, seed: 2111, patientId: PATIENT_ID });
    expect((await stow(node.url, [await bytesOf(study.instances[0]!)])).status).toBe(200);
  });
  afterAll(async () => {
    await node?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  const get = async (url: string): Promise<Answer> => {
    const started = performance.now();
    const res = await fetch(url, { headers: { accept: 'application/dicom+json' } });
    const text = await res.text();
    return { status: res.status, ms: performance.now() - started, body: text === '' ? undefined : JSON.parse(text) };
  };
  const search = (key: string, value: string): Promise<Answer> => get(`${node.url}/studies?${key}=${encodeURIComponent(value)}`);
  const healthz = (): Promise<Answer> => get(`${node.url.replace(/\/dicom-web$/, '')}/healthz`);
  const expectAnswer = (a: Answer, matches: boolean, what: string): void => {
    expect(a.status, what).toBe(matches ? 200 : 204);
    if (matches)
      expect(
        a.body.map((d: any) => d['0020000D'].Value[0]),
        what,
      ).toEqual([study.studyInstanceUID]);
  };

  it('answers the patterns that made the former engine backtrack within milliseconds', async () => {
    expect(`BENCH^${PATIENT_ID}`).toHaveLength(60);
    for (const [key, value, matches] of HOSTILE) {
      const a = await search(key, value);
      expectAnswer(a, matches, `${key}=${value}`);
      expect(a.ms, `${key}=${value}`).toBeLessThan(FAST_MS);
    }
  });

  it('keeps answering /healthz while a burst of them runs', async () => {
    const burst = [...HOSTILE, ...HOSTILE].map(([key, value, matches]) => search(key, value).then((a) => ({ a, key, value, matches })));
    await new Promise((resolve) => setTimeout(resolve, 5));
    const health = await healthz();
    expect(health.status).toBe(200);
    expect(health.ms).toBeLessThan(FAST_MS);
    for (const { a, key, value, matches } of await Promise.all(burst)) expectAnswer(a, matches, `${key}=${value}`);
  });

  it('refuses a value with too many wildcards with 400 naming the bound', async () => {
    const a = await search('PatientName', '*a'.repeat(DEFAULT_QIDO_MAX_WILDCARDS + 1));
    expect(a.status).toBe(400);
    expect(a.body).toMatchObject({ code: 'INVALID_QUERY', details: { parameter: 'PatientName', bound: 'maxWildcards', limit: DEFAULT_QIDO_MAX_WILDCARDS } });
    expect(a.body.message).toContain('maxWildcards');
    const q = await search('PatientID', '?'.repeat(DEFAULT_QIDO_MAX_WILDCARDS + 1));
    expect(q.status).toBe(400);
    expect(q.body.details.bound).toBe('maxWildcards');
  });

  it('refuses a value longer than allowed with 400 naming the bound, and takes one at the bound', async () => {
    const over = await search('PatientName', 'a'.repeat(DEFAULT_QIDO_MAX_VALUE_LENGTH + 1));
    expect(over.status).toBe(400);
    expect(over.body).toMatchObject({
      code: 'INVALID_QUERY',
      details: { parameter: 'PatientName', bound: 'maxValueLength', limit: DEFAULT_QIDO_MAX_VALUE_LENGTH },
    });
    expect(over.body.message).toContain('maxValueLength');
    expect((await search('PatientName', 'a'.repeat(DEFAULT_QIDO_MAX_VALUE_LENGTH))).status).toBe(204);
  });

  it('refuses a query string longer than allowed with 400 naming the bound, and takes one at the bound', async () => {
    // Empty includefield items are ignored: a query of any length that is otherwise valid.
    const query = (length: number): string => `includefield=${','.repeat(length - 'includefield='.length)}`;
    expect(query(DEFAULT_QIDO_MAX_QUERY_LENGTH)).toHaveLength(DEFAULT_QIDO_MAX_QUERY_LENGTH);
    const atBound = await get(`${node.url}/studies?${query(DEFAULT_QIDO_MAX_QUERY_LENGTH)}`);
    expectAnswer(atBound, true, 'at the bound');
    const over = await get(`${node.url}/studies?${query(DEFAULT_QIDO_MAX_QUERY_LENGTH + 1)}`);
    expect(over.status).toBe(400);
    expect(over.body).toMatchObject({ code: 'INVALID_QUERY', details: { bound: 'maxQueryLength', limit: DEFAULT_QIDO_MAX_QUERY_LENGTH } });
    expect(over.body.message).toContain('maxQueryLength');
  });
});
