// The BALP export of the tamper-evident log (issue 24, item 5): what a real node recorded, read
// back from audit.db over HTTP (admins: everything in a time range, paged; a patient: their own)
// and by `dicom-vault audit export --balp`, as FHIR R4 Bundles that FHIR.js validates, each
// access once, completed by how it ended.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fhirPackage from 'fhir';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { BALP_PROFILE } from '../../../src/audit/balp.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { enrollTester, startNodeWithTester } from '../../support/node.ts';
import { run } from '../../support/process.ts';

const { Fhir } = fhirPackage as unknown as {
  Fhir: new () => { validate(o: unknown, opts: object): { messages: Array<{ severity: string; location: string; message: string }> } };
};
const fhir = new Fhir();
const fhirErrors = (bundle: unknown) => fhir.validate(bundle, { errorOnUnexpected: true }).messages.filter((m) => m.severity === 'error');

let node: RunningNode;
let dataDir: string;
let api: string;
let tester: string;
let drWho: string;
let account: string;
const a = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: 2451, patientId: 'BALP-A' });
const b = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: 2452, patientId: 'BALP-B' });
let startedAt: string;

async function get(url: string, token: string): Promise<{ status: number; type: string | null; json: any }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, type: res.headers.get('content-type'), json: await res.json() };
}

type Resource = { meta?: { profile: string[] }; action: string; outcome: string; recorded: string; agent: any[]; entity?: any[] };
const requestor = (r: Resource) => r.agent.find((x) => x.requestor).who.identifier.value as string;
const patientIn = (r: Resource) => r.entity?.find((x) => x.role.code === '1')?.what.identifier.value as string | undefined;
const studyIn = (r: Resource) => r.entity?.find((x) => x.what?.type === 'ImagingStudy')?.what.identifier.value as string | undefined;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-balp-export-'));
  const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'dimse-port': 'off' }, {});
  node = await startNodeWithTester(options, createLogger('silent'));
  tester = enrollTester(node.vault.identity, node.url);
  api = `${node.url.replace('/dicom-web', '')}/api`;
  startedAt = new Date().toISOString();
  for (const s of [a, b]) expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)))).status).toBe(200);
  const inst = a.instances[0]!;
  const frame = await fetch(`${node.url}/studies/${a.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}/frames/1`, {
    headers: { accept: 'multipart/related; type="application/octet-stream"' },
  });
  expect(frame.status).toBe(200);
  await frame.arrayBuffer();
  expect((await fetch(`${node.url}/studies?PatientID=BALP-B`, { headers: { accept: 'application/dicom+json' } })).status).toBe(200);
  drWho = node.vault.identity.addUser('dr.who', ['grantee']).token;
  // An admin may run the node, not read images: refused (403), and recorded with who.
  const clerk = node.vault.identity.addUser('clerk', ['admin']).token;
  expect((await fetch(`${node.url}/studies/${a.studyInstanceUID}/metadata`, { headers: { authorization: `Bearer ${clerk}` } })).status).toBe(403);
  expect((await fetch(`${node.url}/studies/${b.studyInstanceUID}/metadata`, { headers: { authorization: 'Bearer nope' } })).status).toBe(401);
  account = node.vault.identity.createPatient([{ id: 'BALP-A', issuer: null }]);
  // Outcomes are written when each response closes.
  await new Promise((r) => setTimeout(r, 100));
}, 60_000);

afterAll(async () => {
  await node?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('BALP export of the audit log', () => {
  it('admins get every access as a valid BALP AuditEvent, once each, with its outcome and patient', async () => {
    const res = await get(`${api}/audit/balp?limit=1000&since=${startedAt}`, tester);
    expect(res.status).toBe(200);
    expect(res.type).toMatch(/^application\/fhir\+json/);
    expect(res.json).toMatchObject({ resourceType: 'Bundle', type: 'collection' });
    expect(fhirErrors(res.json)).toEqual([]);
    expect(res.json.link).toBeUndefined();
    const rs: Resource[] = res.json.entry.map((e: any) => e.resource).reverse(); // oldest first
    expect(rs.map((r) => [r.meta?.profile[0]?.slice(BALP_PROFILE.length), r.action, r.outcome, requestor(r), patientIn(r)])).toEqual([
      ['PatientCreate', 'C', '0', 'user:tester', 'BALP-A'],
      ['PatientCreate', 'C', '0', 'user:tester', 'BALP-B'],
      ['PatientRead', 'R', '0', 'user:tester', 'BALP-A'],
      ['Query', 'E', '0', 'user:tester', undefined],
      [undefined, 'R', '4', 'user:clerk', 'BALP-A'],
      [undefined, 'E', '4', 'unidentified', 'BALP-B'],
    ]);
    expect(studyIn(rs[2]!)).toBe(`urn:oid:${a.studyInstanceUID}`);
    expect(rs.every((r) => r.recorded >= startedAt)).toBe(true);
    // Admins only.
    expect((await get(`${api}/audit/balp`, drWho)).status).toBe(403);
    expect((await get(`${api}/audit/balp`, node.vault.identity.issueToken('patient', account))).status).toBe(403);
  });

  it('pages by Bundle.link next, and a time range bounds it', async () => {
    const all = (await get(`${api}/audit/balp?limit=1000&since=${startedAt}`, tester)).json.entry.map((e: any) => e.resource.recorded + e.resource.action);
    const paged: string[] = [];
    let url: string | undefined = `${api}/audit/balp?limit=3&since=${startedAt}`;
    let pages = 0;
    while (url !== undefined) {
      const page = await get(url, tester);
      expect(page.status).toBe(200);
      expect(fhirErrors(page.json)).toEqual([]);
      for (const e of page.json.entry) paged.push(e.resource.recorded + e.resource.action);
      const next = page.json.link?.find((l: any) => l.relation === 'next')?.url;
      url = next === undefined ? undefined : `${api.replace('/api', '')}${next}`;
      pages++;
    }
    expect(pages).toBeGreaterThan(2);
    // The pages hold what the single page holds (reads of the log recorded since are newer: not in them).
    expect(paged).toEqual(expect.arrayContaining(all));
    expect(paged.slice(-all.length)).toEqual(all.slice(-all.length));
    const before = (await get(`${api}/audit/balp?until=${encodeURIComponent(new Date(Date.parse(startedAt) - 1).toISOString())}`, tester)).json;
    expect(before.entry.some((e: any) => e.resource.recorded >= startedAt)).toBe(false);
  });

  it('a patient gets their own accesses only, and the export of them is itself recorded', async () => {
    const session = node.vault.identity.issueToken('patient', account);
    const res = await get(`${api}/patient/audit/balp?limit=1000`, session);
    expect(res.status).toBe(200);
    expect(fhirErrors(res.json)).toEqual([]);
    const rs: Resource[] = res.json.entry.map((e: any) => e.resource);
    expect(rs.length).toBeGreaterThanOrEqual(3); // the STOW, the frame read, the clerk's refusal
    for (const r of rs) expect(patientIn(r)).toBe('BALP-A');
    expect(rs.map(requestor)).toContain('user:clerk');
    expect((await get(`${api}/patient/audit/balp`, tester)).status).toBe(403);
    node.vault.audit.log.flush();
    const mine = (await get(`${api}/patient/audit?limit=5`, session)).json.entries.map((e: any) => e.record?.what.action);
    expect(mine).toContain('audit log exported (BALP)');
  });

  it('`dicom-vault audit export --balp` writes the same accesses as one Bundle', async () => {
    const out = join(dataDir, 'export.json');
    const res = await run(['audit', 'export', '--balp', '--since', startedAt, '--out', out, '--data-dir', dataDir]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const bundle = JSON.parse(await readFile(out, 'utf8'));
    expect(fhirErrors(bundle)).toEqual([]);
    const http = (await get(`${api}/audit/balp?limit=1000&since=${startedAt}`, tester)).json.entry.map((e: any) => [
      e.resource.recorded,
      e.resource.action,
      e.resource.outcome,
    ]);
    const cli = bundle.entry.map((e: any) => [e.resource.recorded, e.resource.action, e.resource.outcome]);
    expect(cli).toEqual([...http].reverse());
    const bad = await run(['audit', 'export', '--data-dir', dataDir]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--balp/);
  });
});
