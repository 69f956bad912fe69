// What the patient lets others see, end to end on a real node (issue 23): a patient account with a
// key file signs grants; a grantee sees exactly what a grant names (studies, series, data types,
// actions, a window to the second) and nothing else, with no existence oracle; revocation takes
// effect on the next request and cuts a running stream within a second, whether it comes through
// this node or from another process; share links exchange a single-use code for a token bound to
// one grant; grants the patient did not sign are never enforced.
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import type { AuditEvent } from '../../../src/access/policy.ts';
import { logAuditSink } from '../../../src/shell/log.ts';
import type { GrantRequest } from '../../../src/grants/statement.ts';
import { draftStatement } from '../../../src/grants/statement.ts';
import { createKeyFile, readKeyFile, signStatement, type KeyFile } from '../../../src/grants/signing.ts';
import { GRANTS_DB_FILE } from '../../../src/grants/store.ts';
import { SHARE_CODE_TOKEN_TYPE, TOKEN_EXCHANGE } from '../../../src/shell/api/patient.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { bytesOf } from '../../support/generated.ts';
import { stow } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { run } from '../../support/process.ts';

const STUDY_UID = '0020000D';
const SERIES_UID = '0020000E';
const SOP_UID = '00080018';
const DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*';
const OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';
const JSON_TYPE = 'application/dicom+json';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const value = (item: any, tag: string): unknown => item?.[tag]?.Value?.[0];

interface Answer {
  status: number;
  body: Buffer;
  json: any;
  ms: number;
}

/** A GET as `token` (null: no Authorization), timed. */
async function as(token: string | null, url: string, accept = JSON_TYPE): Promise<Answer> {
  const started = performance.now();
  const res = await fetch(url, { headers: { accept, authorization: token === null ? '' : `Bearer ${token}` } });
  const body = Buffer.from(await res.arrayBuffer());
  const ms = performance.now() - started;
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {}
  return { status: res.status, body, json, ms };
}

/** A GET over node:http with the path exactly as given: fetch would resolve `..` and `%2e%2e` before sending. */
function rawPath(base: string, path: string, token: string): Promise<{ status: number; json: any }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, headers: { accept: JSON_TYPE, authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

describe('patient control: grants enforced end to end', () => {
  let node: TestNode;
  let work: string;
  const audit: Array<AuditEvent & { at: number }> = [];
  // Patient PAT-1: study A (series A1: 3 images, series A2: 2 images), study B (2 images),
  // study D (a larger one, for streams). Patient PAT-2: study C.
  let a1: GeneratedStudy;
  let a2: GeneratedStudy;
  let b: GeneratedStudy;
  let c: GeneratedStudy;
  let d: GeneratedStudy;
  let account: string;
  let keyPath: string;
  let key: KeyFile;
  let drWho: string;
  const studies = () => `${node.url}/studies`;
  const study = (s: GeneratedStudy) => `${node.url}/studies/${s.studyInstanceUID}`;
  const series = (s: GeneratedStudy) => `${study(s)}/series/${s.seriesInstanceUID}`;
  const instance = (s: GeneratedStudy, n = 0) => `${series(s)}/instances/${s.instances[n]!.sopInstanceUID}`;

  /** Signs `request` with the patient's key file and adds it, as `dicom-vault patient grant` does. */
  async function grant(request: GrantRequest): Promise<string> {
    const identity = node.vault.identity;
    const statement = draftStatement({ nodeId: node.vault.grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() }, request);
    await node.vault.grants.add({ statement, proof: signStatement(statement, key) }, account);
    return statement.id;
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-patient-control-'));
    const sink = logAuditSink(createLogger('silent'));
    node = await startTestNode({
      audit: {
        record: (e) => {
          audit.push({ ...e, at: Date.now() });
          sink.record(e);
        },
      },
    });
    a1 = planStudy({ kind: 'single', instances: 3, rows: 32, columns: 32, seed: 2311, patientId: 'PAT-1' });
    a2 = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 2312, patientId: 'PAT-1', studyInstanceUID: a1.studyInstanceUID });
    b = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 2313, patientId: 'PAT-1' });
    c = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 2314, patientId: 'PAT-2' });
    // 24 instances of 1 MiB: a stream a slow reader takes seconds over.
    d = planStudy({ kind: 'single', instances: 24, rows: 1024, columns: 512, seed: 2315, patientId: 'PAT-1' });
    for (const s of [a1, a2, b, c, d]) expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)))).status).toBe(200);

    account = node.vault.identity.createPatient([{ id: 'PAT-1', issuer: null }]);
    keyPath = join(work, 'patient.key');
    const made = createKeyFile(keyPath, { account, node: node.vault.grants.nodeId });
    node.vault.identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    key = readKeyFile(keyPath);
    drWho = node.vault.identity.addUser('dr.who', ['grantee']).token;
  }, 180_000);
  afterAll(async () => {
    await node?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('a grantee without a grant sees nothing: empty searches, and 404 exactly as for an unknown study', async () => {
    const nobody = node.vault.identity.addUser('dr.nobody', ['grantee']).token;
    expect((await as(nobody, studies())).status).toBe(204);
    const known = await as(nobody, `${study(a1)}/metadata`);
    const unknown = await as(nobody, `${node.url}/studies/1.2.3.4.5.6.7.8.9/metadata`);
    expect(known.status).toBe(404);
    expect(unknown.status).toBe(404);
    expect(known.json.code).toBe(unknown.json.code);
    expect(known.json.message.replace(a1.studyInstanceUID, 'X')).toBe(unknown.json.message.replace('1.2.3.4.5.6.7.8.9', 'X'));
    // The patient's own session sees their studies, not another patient's.
    const session = node.vault.identity.issueToken('patient', account);
    const own = await as(session, studies());
    expect(own.json.map((s: any) => value(s, STUDY_UID)).sort()).toEqual([a1.studyInstanceUID, b.studyInstanceUID, d.studyInstanceUID].sort());
    expect((await as(session, `${study(c)}/metadata`)).status).toBe(404);
  });

  describe('a series-scoped grant (series A1 of study A: images, search and view)', () => {
    beforeAll(async () => {
      await grant({ grantee: { kind: 'user', id: 'dr.who' }, series: [{ study: a1.studyInstanceUID, series: a1.seriesInstanceUID }] });
    });

    it('searches show study A with the counts of A1 alone, and nothing of B, C or A2', async () => {
      const found = await as(drWho, `${studies()}?includefield=all`);
      expect(found.status).toBe(200);
      expect(found.json).toHaveLength(1);
      expect(value(found.json[0], STUDY_UID)).toBe(a1.studyInstanceUID);
      expect(value(found.json[0], '00201206')).toBe(1); // NumberOfStudyRelatedSeries
      expect(value(found.json[0], '00201208')).toBe(3); // NumberOfStudyRelatedInstances
      const seriesList = await as(drWho, `${study(a1)}/series`);
      expect(seriesList.json.map((s: any) => value(s, SERIES_UID))).toEqual([a1.seriesInstanceUID]);
      // /instances at study level: A1's three.
      const inStudy = await as(drWho, `${study(a1)}/instances`);
      expect(inStudy.json.map((i: any) => value(i, SOP_UID)).sort()).toEqual(a1.instances.map((i) => i.sopInstanceUID).sort());
      // All series of the node, searched across studies: A1 only.
      expect((await as(drWho, `${node.url}/series`)).json.map((s: any) => value(s, SERIES_UID))).toEqual([a1.seriesInstanceUID]);
    });

    it("the study's metadata holds A1 only; A2 answers 404 at every level, as do B and C", async () => {
      const meta = await as(drWho, `${study(a1)}/metadata`);
      expect(meta.status).toBe(200);
      expect(meta.json.map((i: any) => value(i, SERIES_UID))).toEqual(Array(3).fill(a1.seriesInstanceUID));
      for (const url of [
        `${series(a2)}/metadata`,
        `${instance(a2)}/metadata`,
        `${instance(a2)}/frames/1`,
        `${instance(a2)}/rendered`,
        `${study(b)}/metadata`,
        `${study(c)}/metadata`,
      ]) {
        const accept = url.endsWith('/frames/1') ? OCTETS : url.endsWith('/rendered') ? 'image/jpeg' : JSON_TYPE;
        expect((await as(drWho, url, accept)).status, url).toBe(404);
      }
      expect((await as(drWho, `${instance(a1)}/frames/1`, OCTETS)).status).toBe(200);
      expect((await as(drWho, `${instance(a1)}/rendered`, 'image/jpeg')).status).toBe(200);
    });

    it('whole instances need the download action: a view grant answers 404 for them', async () => {
      expect((await as(drWho, instance(a1), DICOM)).status).toBe(404);
      expect((await as(drWho, study(a1), DICOM)).status).toBe(404);
    });

    it('UID lists and repeated parameters mixing granted and other studies return only the granted', async () => {
      const list = await as(drWho, `${studies()}?StudyInstanceUID=${a1.studyInstanceUID},${b.studyInstanceUID},${c.studyInstanceUID}`);
      expect(list.json.map((s: any) => value(s, STUDY_UID))).toEqual([a1.studyInstanceUID]);
      const repeated = await as(drWho, `${studies()}?StudyInstanceUID=${b.studyInstanceUID}&StudyInstanceUID=${a1.studyInstanceUID}`);
      // Either refused as ambiguous or answered within the grant: never B.
      expect([200, 204, 400]).toContain(repeated.status);
      if (repeated.status === 200) expect(repeated.json.map((s: any) => value(s, STUDY_UID))).toEqual([a1.studyInstanceUID]);
      const byPatient = await as(drWho, `${studies()}?PatientID=PAT-2`);
      expect(byPatient.status).toBe(204);
      // Matching on a count must not reveal hidden series: A has 5 instances, the grantee sees 3.
      expect((await as(drWho, `${studies()}?ModalitiesInStudy=MR`)).json).toHaveLength(1);
    });

    it('path tricks (%2e%2e, encoded slashes) reach nothing outside the grant', async () => {
      const prefix = new URL(node.url).pathname;
      const s = a1.studyInstanceUID;
      for (const path of [
        `${prefix}/studies/${s}/series/${a1.seriesInstanceUID}/%2e%2e/${a2.seriesInstanceUID}/metadata`,
        `${prefix}/studies/${s}/series/${a1.seriesInstanceUID}/../${a2.seriesInstanceUID}/metadata`,
        `${prefix}/studies/${s}/series/${a2.seriesInstanceUID}%2F..%2F${a1.seriesInstanceUID}/metadata`,
        `${prefix}/studies/${s}%2Fseries%2F${a2.seriesInstanceUID}/metadata`,
        `${prefix}/studies/${b.studyInstanceUID}/../${s}/metadata`,
      ]) {
        const r = await rawPath(node.url, path, drWho);
        // A 200 here could only be A1's own metadata (the path resolved to the granted series): check it is.
        if (r.status === 200)
          expect(
            r.json.every((i: any) => value(i, SERIES_UID) === a1.seriesInstanceUID),
            path,
          ).toBe(true);
        else expect([400, 404], path).toContain(r.status);
      }
    });

    it('probing UIDs: a study that exists but is not granted answers like an unknown one, in the same time', async () => {
      const probes = { hidden: [] as number[], unknown: [] as number[] };
      const first = await as(drWho, `${study(b)}/metadata`);
      for (let i = 0; i < 40; i++) {
        const hidden = await as(drWho, `${study(i % 2 ? b : c)}/metadata`);
        const unknown = await as(drWho, `${node.url}/studies/1.2.826.0.1.3680043.2.1125.${1000 + i}/metadata`);
        expect(hidden.status).toBe(404);
        expect(unknown.status).toBe(404);
        probes.hidden.push(hidden.ms);
        probes.unknown.push(unknown.ms);
      }
      expect(first.json.code).toBe('STUDY_NOT_FOUND');
      const ratio = median(probes.hidden) / median(probes.unknown);
      // Same order of time (the catalog answers both from one indexed lookup); a wide band for a shared machine.
      expect(ratio).toBeGreaterThan(1 / 3);
      expect(ratio).toBeLessThan(3);
    });
  });

  it('a metadata-only grant shows the metadata without pixel or bulk data, and no frames', async () => {
    node.vault.identity.addUser('dr.meta', ['grantee']);
    const token = node.vault.identity.issueToken('user', 'dr.meta');
    await grant({ grantee: { kind: 'user', id: 'dr.meta' }, studies: [b.studyInstanceUID], dataTypes: ['metadata'] });
    const meta = await as(token, `${study(b)}/metadata`);
    expect(meta.status).toBe(200);
    expect(meta.json).toHaveLength(2);
    for (const item of meta.json) {
      expect(item['7FE00010']).toBeUndefined();
      expect(JSON.stringify(item)).not.toContain('BulkDataURI');
    }
    expect((await as(token, `${instance(b)}/frames/1`, OCTETS)).status).toBe(404);
    expect((await as(token, `${instance(b)}/rendered`, 'image/jpeg')).status).toBe(404);
    expect((await as(token, instance(b), DICOM)).status).toBe(404);
  });

  it('a grant starts and ends to the second', async () => {
    node.vault.identity.addUser('dr.time', ['grantee']);
    const token = node.vault.identity.issueToken('user', 'dr.time');
    const now = Date.now();
    const start = new Date(Math.ceil((now + 2_000) / 1000) * 1000);
    const end = new Date(start.getTime() + 2_000);
    await grant({ grantee: { kind: 'user', id: 'dr.time' }, studies: [b.studyInstanceUID], notBefore: start, notAfter: end });
    const at = async (t: number) => {
      await sleep(Math.max(0, t - Date.now()));
      return (await as(token, `${study(b)}/metadata`)).status;
    };
    expect(await at(start.getTime() - 400)).toBe(404);
    expect(await at(start.getTime() + 150)).toBe(200);
    expect(await at(end.getTime() - 400)).toBe(200);
    expect(await at(end.getTime() + 150)).toBe(404);
  });

  /** Reads `url` as `token` at about `bytesPerSecond`; resolves when the response ends or breaks. */
  function slowRead(url: string, token: string, bytesPerSecond: number) {
    let bytes = 0;
    let resolveFirst!: () => void;
    const firstBytes = new Promise<void>((r) => (resolveFirst = r));
    const ended = new Promise<{ status: number; bytes: number; complete: boolean }>((resolve, reject) => {
      const req = http.get(url, { headers: { accept: DICOM, authorization: `Bearer ${token}` } }, (res) => {
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          resolveFirst();
          res.pause();
          setTimeout(() => res.resume(), (chunk.length / bytesPerSecond) * 1000);
        });
        res.on('close', () => resolve({ status: res.statusCode ?? 0, bytes, complete: res.complete }));
      });
      req.on('error', (e) => (bytes > 0 ? resolve({ status: 200, bytes, complete: false }) : reject(e)));
    });
    return { firstBytes, ended };
  }

  /** The moment the node recorded the response to `url` as closed (the audit records at close), ms since the epoch. */
  async function closedAt(path: string): Promise<AuditEvent & { at: number }> {
    for (let i = 0; i < 100; i++) {
      const e = audit.findLast((x) => x.url === path);
      if (e !== undefined) return e;
      await sleep(20);
    }
    throw new Error(`no audit record for ${path}`);
  }

  it('revoking through the node cuts a running stream within a second, and the next request is refused', async () => {
    node.vault.identity.addUser('dr.stream', ['grantee']);
    const token = node.vault.identity.issueToken('user', 'dr.stream');
    const id = await grant({ grantee: { kind: 'user', id: 'dr.stream' }, studies: [d.studyInstanceUID], actions: ['search', 'view', 'download'] });
    const before = audit.length;
    const read = slowRead(study(d), token, 2 * 2 ** 20);
    await read.firstBytes;
    await sleep(300);
    const revokedAt = Date.now();
    expect(node.vault.grants.revoke(id, `patient:${account}`, account)).toBe(true);
    const result = await read.ended;
    expect(result.complete).toBe(false);
    expect(result.bytes).toBeLessThan(d.instances.reduce((n, i) => n + i.size, 0));
    const record = await closedAt(new URL(study(d)).pathname);
    expect(audit.length).toBeGreaterThan(before);
    expect(record.complete).toBe(false);
    const latency = record.at - revokedAt;
    expect(latency).toBeLessThan(1_000);
    expect((await as(token, `${study(d)}/metadata`)).status).toBe(404);
  });

  it('revoking from another process (the CLI) cuts a running stream within a second too', async () => {
    node.vault.identity.addUser('dr.cli', ['grantee']);
    const token = node.vault.identity.issueToken('user', 'dr.cli');
    const id = await grant({ grantee: { kind: 'user', id: 'dr.cli' }, studies: [d.studyInstanceUID], actions: ['search', 'view', 'download'] });
    // Slow enough to outlast the CLI's start (a few seconds on a loaded machine).
    const read = slowRead(study(d), token, 1 * 2 ** 20);
    await read.firstBytes;
    const cli = await run(['patient', 'revoke', id, '--key-file', keyPath, '--data-dir', node.dataDir]);
    expect(cli.code, cli.stderr).toBe(0);
    const result = await read.ended;
    expect(result.complete).toBe(false);
    const record = await closedAt(new URL(study(d)).pathname);
    const db = new DatabaseSync(join(node.dataDir, GRANTS_DB_FILE), { readOnly: true });
    const row = db.prepare('SELECT revoked_at, revoked_by FROM grants WHERE id = ?').get(id) as { revoked_at: string; revoked_by: string };
    db.close();
    expect(row.revoked_by).toBe(`patient:${account}`);
    expect(record.at - Date.parse(row.revoked_at)).toBeLessThan(1_000);
    expect((await as(token, `${study(d)}/metadata`)).status).toBe(404);
  });

  it('a share link: a single-use code for a token bound to one grant; revoking the grant kills the token', async () => {
    const id = await grant({ grantee: { kind: 'link' }, series: [{ study: a2.studyInstanceUID, series: a2.seriesInstanceUID }] });
    const { code } = node.vault.grants.createShareCode(account, id);
    const exchange = () =>
      fetch(`${new URL(node.url).origin}/api/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: code, subject_token_type: SHARE_CODE_TOKEN_TYPE }),
      });
    const first = await exchange();
    expect(first.status).toBe(200);
    const { access_token: link } = (await first.json()) as { access_token: string };
    expect(link).toMatch(/^dvl_/);
    const again = await exchange();
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: string }).error).toBe('invalid_grant');
    const seen = await as(link, `${study(a2)}/series`);
    expect(seen.json.map((s: any) => value(s, SERIES_UID))).toEqual([a2.seriesInstanceUID]);
    expect((await as(link, `${series(a1)}/metadata`)).status).toBe(404);
    node.vault.grants.revoke(id, `patient:${account}`, account);
    const after = await as(link, `${study(a2)}/series`);
    expect(after.status).toBe(401);
  });

  it('grants the patient did not sign are never enforced: edited in the database, or inserted there', async () => {
    node.vault.identity.addUser('dr.db', ['grantee']);
    const token = node.vault.identity.issueToken('user', 'dr.db');
    const id = await grant({ grantee: { kind: 'user', id: 'dr.db' }, studies: [b.studyInstanceUID] });
    expect((await as(token, studies())).json).toHaveLength(1);
    const db = new DatabaseSync(join(node.dataDir, GRANTS_DB_FILE));
    try {
      // Widen the signed grant in place: every study of the patient.
      const row = db.prepare('SELECT * FROM grants WHERE id = ?').get(id) as Record<string, string>;
      const statement = JSON.parse(row.statement!);
      statement.scope = {};
      db.prepare('UPDATE grants SET statement = ? WHERE id = ?').run(JSON.stringify(statement), id);
      // And a grant nobody signed, copied from the real one with a new id and scope.
      const forged = { ...statement, id: '00000000-0000-4000-8000-000000000001', scope: { studies: [a1.studyInstanceUID] } };
      db.prepare('INSERT INTO grants (id, patient, grantee, statement, proof, not_before, not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
        forged.id,
        row.patient!,
        row.grantee!,
        JSON.stringify(forged),
        row.proof!,
        row.not_before!,
        row.not_after ?? null,
        row.created_at!,
      );
    } finally {
      db.close();
    }
    // Neither the widened nor the inserted grant shows anything: the edited one no longer verifies either.
    expect((await as(token, studies())).status).toBe(204);
    expect((await as(token, `${study(a1)}/metadata`)).status).toBe(404);
    const check = await run(['patient', 'grants', '--key-file', keyPath, '--data-dir', node.dataDir, '--json']);
    expect(check.code).toBe(3);
    expect(check.stdout).toContain(id);
  });

  it('a request without a token is refused before anything is looked up', async () => {
    const r = await as(null, `${study(a1)}/metadata`);
    expect(r.status).toBe(401);
  });
});
