// Erasure under bad input and attacks (issue 25), on a real node: a study that does not exist, one
// under a retention hold, one being ingested at that moment, a crash in the middle of an erasure,
// a re-send of an erased study, and a patient's request approved or refused by an operator.
import { request as httpRequest } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { CID } from 'multiformats/cid';
import { afterEach, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { verifyCertificate, type ErasureCertificate } from '../../../src/erasure/certificate.ts';
import { ERASURE_DB_FILE } from '../../../src/erasure/store.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { openVault } from '../../../src/shell/vault.ts';
import { ingestInstance } from '../../../ingest/instance.ts';
import { createKeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement } from '../../../src/grants/statement.ts';
import { bytesOf } from '../../support/generated.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { run } from '../../support/process.ts';

const nodes: TestNode[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function freshDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'dicom-vault-erasure-'));
  dirs.push(d);
  return d;
}

async function start(dataDir?: string): Promise<TestNode> {
  const node = await startTestNode({ chunkSize: 4096, dataDir: dataDir ?? (await freshDir()) });
  nodes.push(node);
  return node;
}

async function stop(node: TestNode): Promise<void> {
  nodes.splice(nodes.indexOf(node), 1);
  await node.stop();
}

async function storeStudy(node: TestNode, seed: number, patientId: string): Promise<{ study: string; url: string; bytes: Buffer }> {
  const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed, patientId });
  const i = s.instances[0]!;
  const bytes = await bytesOf(i);
  expect((await stow(node.url, [bytes])).status).toBe(200);
  return { study: s.studyInstanceUID, url: `${node.url}/studies/${s.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`, bytes };
}

function rejection(p: Promise<unknown>): Promise<{ code: string; status: number; message: string; details?: Record<string, unknown> }> {
  return p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (err: { code: string; status: number; message: string; details?: Record<string, unknown> }) => err,
  );
}

describe('erasure: bad input and attacks', () => {
  it('refuses a study that does not exist (404 STUDY_NOT_FOUND) and a patient with no study (404 NOT_FOUND); the CLI says so in one line', async () => {
    const node = await start();
    const e = await rejection(node.vault.erasure.erase({ kind: 'study', studyInstanceUID: '1.2.3.999' }, { requestedBy: 'test' }));
    expect(e).toMatchObject({ code: 'STUDY_NOT_FOUND', status: 404 });
    expect(await rejection(node.vault.erasure.erase({ kind: 'patient', patientId: 'NOBODY' }, { requestedBy: 'test' }))).toMatchObject({
      code: 'NOT_FOUND',
      status: 404,
    });
    const cli = await run(['erase', '--study', '1.2.3.999', '--data-dir', node.dataDir]);
    expect(cli.code).toBe(1);
    expect(cli.stderr.trim()).toMatch(/^dicom-vault: STUDY_NOT_FOUND: no such study/);
    // Erased already: the same answer, not a second certificate.
    const s = await storeStudy(node, 9201, 'TWICE');
    await node.vault.erasure.erase({ kind: 'study', studyInstanceUID: s.study }, { requestedBy: 'test' });
    expect(await rejection(node.vault.erasure.erase({ kind: 'study', studyInstanceUID: s.study }, { requestedBy: 'test' }))).toMatchObject({
      code: 'STUDY_NOT_FOUND',
    });
    // The patient's key outlived that study's erasure: the patient's erasure takes it alone, once.
    const patient = { patientId: 'TWICE', issuer: '' };
    expect(node.vault.keys.hasPatientKey(patient)).toBe(true);
    const alone = await node.vault.erasure.erase({ kind: 'patient', patientId: 'TWICE' }, { requestedBy: 'test' });
    expect(alone).toMatchObject({ patientKey: true, studies: [] });
    expect(node.vault.keys.hasPatientKey(patient)).toBe(false);
    expect(await rejection(node.vault.erasure.erase({ kind: 'patient', patientId: 'TWICE' }, { requestedBy: 'test' }))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('refuses a study under a retention hold (409 RETENTION_HOLD, the hold named) and erases nothing, of a patient either; lifted, it erases', async () => {
    const node = await start();
    const held = await storeStudy(node, 9211, 'HELD-PAT');
    const free = await storeStudy(node, 9212, 'HELD-PAT');
    const hold = await run([
      'hold',
      'place',
      held.study,
      '--reason',
      'radiology records: 10 years (national law)',
      '--operator',
      'dr-ops',
      '--data-dir',
      node.dataDir,
    ]);
    expect(hold.code, hold.stderr).toBe(0);

    const e = await rejection(node.vault.erasure.erase({ kind: 'study', studyInstanceUID: held.study }, { requestedBy: 'test' }));
    expect(e).toMatchObject({ code: 'RETENTION_HOLD', status: 409 });
    expect(e.message).toContain('radiology records: 10 years (national law)');
    expect(e.message).toContain('operator:dr-ops');
    // The patient: refused whole, the free study kept too (nothing half-erased).
    const p = await rejection(node.vault.erasure.erase({ kind: 'patient', patientId: 'HELD-PAT' }, { requestedBy: 'test' }));
    expect(p).toMatchObject({ code: 'RETENTION_HOLD' });
    expect(p.details?.holds).toEqual([{ study: held.study, reason: 'radiology records: 10 years (national law)', until: null, placedBy: 'operator:dr-ops' }]);
    for (const s of [held, free]) expect((await retrieve(s.url)).status).toBe(200);
    const cli = await run(['erase', '--patient', 'HELD-PAT', '--data-dir', node.dataDir]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/RETENTION_HOLD: study \S+ is under a retention hold: radiology records/);

    // A hold that has ended holds nothing; a lifted one neither.
    node.vault.erasure.placeHold(held.study, 'litigation', 'test', new Date(Date.now() - 1000).toISOString());
    expect((await run(['hold', 'list', '--data-dir', node.dataDir])).stdout).toMatch(/no holds/);
    node.vault.erasure.placeHold(held.study, 'litigation', 'test');
    expect((await run(['hold', 'lift', held.study, '--data-dir', node.dataDir])).code).toBe(0);
    const cert = await node.vault.erasure.erase({ kind: 'patient', patientId: 'HELD-PAT' }, { requestedBy: 'test' });
    expect(cert.studies).toHaveLength(2);
    for (const s of [held, free]) expect((await retrieve(s.url)).status).toBe(404);
  });

  it('a study erased while an instance of it is being stored: that STOW fails cleanly (409 STUDY_ERASED) and nothing of it is kept', async () => {
    const node = await start();
    const first = await storeStudy(node, 9221, 'INFLIGHT');
    const s = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed: 9221, patientId: 'INFLIGHT' });
    const second = s.instances[1]!;
    const bytes = await bytesOf(second);
    const boundary = 'erasure-race';
    const url = new URL(`${node.url}/studies`);
    const response = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(
        url,
        {
          method: 'POST',
          headers: {
            'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
            authorization: `Bearer ${node.token}`,
          },
        },
        (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      // The header and the first chunk (the instance is identified, its key taken), then a pause.
      req.write(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`);
      req.write(bytes.subarray(0, 5000));
      setTimeout(async () => {
        try {
          const cert = await node.vault.erasure.erase({ kind: 'study', studyInstanceUID: first.study }, { requestedBy: 'test' });
          expect(cert.studies).toHaveLength(1);
          req.end(Buffer.concat([bytes.subarray(5000), Buffer.from(`\r\n--${boundary}--\r\n`)]));
        } catch (err) {
          reject(err);
        }
      }, 500);
    });
    const r = await response;
    expect(r.status).toBe(409);
    expect(r.body).toMatch(/STUDY_ERASED/);
    // Nothing of the study: not the first instance, not the second, no catalog row, no key.
    expect((await retrieve(first.url)).status).toBe(404);
    expect((await retrieve(`${node.url}/studies/${s.studyInstanceUID}/series/${second.seriesInstanceUID}/instances/${second.sopInstanceUID}`)).status).toBe(
      404,
    );
    expect(node.vault.catalog.versions(s.studyInstanceUID)).toEqual([]);
    expect(node.vault.keys.get(s.studyInstanceUID)).toBeUndefined();
    // And the blocks of the instance in flight were dropped: none of the study's ciphertext is left.
    const left: string[] = [];
    for await (const cid of node.vault.store.list!()) left.push(cid.toString());
    expect(left).toEqual([]);
  });

  it("an erasure by another process (a CLI beside the node) while the study's first version commits: the commit undoes itself (STUDY_ERASED)", async () => {
    const node = await start();
    const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 9225, patientId: 'OTHER-PROC' });
    const i = s.instances[0]!;
    // The node's ingest: the instance's blocks are written, the key made; its commit waits for "durable".
    const ingested = await ingestInstance(i.open(), { store: node.vault.store, keys: node.vault.keys }, { chunkSize: 4096 });
    let release!: () => void;
    const durable = new Promise<void>((r) => (release = r));
    const commit = node.vault.writer.commit(s.studyInstanceUID, [ingested], { durable });
    // Meanwhile another process opens the same data directory and erases the study (known by its key).
    const other = await openVault(resolveNodeOptions({ 'data-dir': node.dataDir, 'chunk-size': '4096' }, {}), createLogger('silent'));
    try {
      const cert = await other.erasure.erase({ kind: 'study', studyInstanceUID: s.studyInstanceUID }, { requestedBy: 'cli' });
      expect(cert.studies).toHaveLength(1);
    } finally {
      await other.close();
    }
    release();
    await expect(commit).rejects.toMatchObject({ code: 'STUDY_ERASED' });
    // Nothing of the study: no catalog row (names, IDs), no block.
    expect(node.vault.catalog.patientOf(s.studyInstanceUID)).toBeUndefined();
    expect(node.vault.catalog.versions(s.studyInstanceUID)).toEqual([]);
    const left: string[] = [];
    for await (const cid of node.vault.store.list!()) left.push(cid.toString());
    expect(left).toEqual([]);
    expect((await retrieve(`${node.url}/studies/${s.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`)).status).toBe(404);
  });

  for (const step of ['journaled', 'keys', 'anchors', 'catalog', 'blocks'] as const) {
    it(`a crash after the "${step}" step: the next start finishes the erasure (never half), with its certificate`, async () => {
      const dataDir = await freshDir();
      const node = await start(dataDir);
      const gone = await storeStudy(node, 9231, 'CRASH-PAT');
      const kept = await storeStudy(node, 9232, 'OTHER-PAT');
      const blocksBefore: string[] = [];
      for await (const cid of node.vault.store.list!()) blocksBefore.push(cid.toString());
      await stop(node);

      // The erasure stops after `step` as a crash there would: nothing after it runs.
      const vault = await openVault(resolveNodeOptions({ 'data-dir': dataDir, 'chunk-size': '4096' }, {}), createLogger('silent'), {
        afterErasureStep: (s) => {
          if (s === step) throw new Error(`crash after ${s}`);
        },
      });
      await expect(vault.erasure.erase({ kind: 'patient', patientId: 'CRASH-PAT' }, { requestedBy: 'test' })).rejects.toThrow(`crash after ${step}`);
      await vault.close();
      const journal = (): number => {
        const db = new DatabaseSync(join(dataDir, ERASURE_DB_FILE));
        try {
          return (db.prepare('SELECT count(*) AS n FROM journal').get() as { n: number }).n;
        } finally {
          db.close();
        }
      };
      expect(journal()).toBe(1);

      // Restarted: finished before anything is served.
      const again = await start(dataDir);
      expect(journal()).toBe(0);
      expect((await retrieve(gone.url.replace(/^http:\/\/[^/]+\/dicom-web/, again.url))).status).toBe(404);
      expect(again.vault.catalog.versions(gone.study)).toEqual([]);
      expect(again.vault.keys.get(gone.study)).toBeUndefined();
      const db = new DatabaseSync(join(dataDir, ERASURE_DB_FILE));
      const certs = db.prepare('SELECT json FROM certificates').all() as Array<{ json: string }>;
      db.close();
      expect(certs).toHaveLength(1);
      const cert = JSON.parse(certs[0]!.json) as ErasureCertificate;
      expect(verifyCertificate(cert)).toBe(true);
      expect(cert.studies).toHaveLength(1);
      expect(cert.studies[0]!.blocks).toBeGreaterThan(0);
      // Only the other patient's blocks are left.
      const blocksAfter: string[] = [];
      for await (const cid of again.vault.store.list!()) blocksAfter.push(cid.toString());
      const keptRoot = CID.parse(again.vault.catalog.latestVersion(kept.study)!.root).toString();
      expect(blocksAfter).toContain(keptRoot);
      expect(blocksAfter.length).toBeLessThan(blocksBefore.length);
      const r = await retrieve(kept.url.replace(/^http:\/\/[^/]+\/dicom-web/, again.url));
      expect(r.parts[0]!.body.equals(kept.bytes)).toBe(true);
    });
  }

  it('a re-send of an erased study is stored anew under a new key', async () => {
    const node = await start();
    const s = await storeStudy(node, 9241, 'RESEND');
    const oldKey = node.vault.keys.get(s.study)!;
    const oldRoot = node.vault.catalog.latestVersion(s.study)!.root;
    await node.vault.erasure.erase({ kind: 'patient', patientId: 'RESEND' }, { requestedBy: 'test' });
    expect((await stow(node.url, [s.bytes])).status).toBe(200);
    const newKey = node.vault.keys.get(s.study)!;
    expect(newKey.keyId).not.toBe(oldKey.keyId);
    expect(newKey.key.equals(oldKey.key)).toBe(false);
    expect(Buffer.from(newKey.anchorSalt).equals(Buffer.from(oldKey.anchorSalt))).toBe(false);
    const latest = node.vault.catalog.latestVersion(s.study)!;
    expect(latest.version).toBe(1);
    expect(latest.root).not.toBe(oldRoot);
    const r = await retrieve(s.url);
    expect(r.parts[0]!.body.equals(s.bytes)).toBe(true);
  });

  it('revokes the grants an erasure would leave open: a study sent again is not shown to whom the erased one was granted', async () => {
    const node = await start();
    const s1 = await storeStudy(node, 9261, 'GRANT-PAT');
    const s2 = await storeStudy(node, 9262, 'GRANT-PAT');
    const account = node.vault.identity.createPatient([{ id: 'GRANT-PAT', issuer: null }]);
    const keyPath = join(await freshDir(), 'patient.key');
    const made = createKeyFile(keyPath, { account, node: node.vault.grants.nodeId });
    node.vault.identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    const key = readKeyFile(keyPath);
    const dr = node.vault.identity.addUser('dr.erasure', ['grantee']).token;
    const grant = async (studies: string[]): Promise<string> => {
      const statement = draftStatement(
        { nodeId: node.vault.grants.nodeId, account, patientIds: node.vault.identity.patientIds(account), now: new Date() },
        { grantee: { kind: 'user', id: 'dr.erasure' }, studies, actions: ['search', 'view', 'download'] },
      );
      await node.vault.grants.add({ statement, proof: signStatement(statement, key) }, account);
      return statement.id;
    };
    const g1 = await grant([s1.study]);
    const g12 = await grant([s1.study, s2.study]);
    const g2 = await grant([s2.study]);
    const asDr = (url: string): Promise<number> =>
      fetch(url, { headers: { authorization: `Bearer ${dr}`, accept: 'application/dicom' } }).then((r) => r.status);
    expect(await asDr(s1.url)).toBe(200);

    await node.vault.erasure.erase({ kind: 'study', studyInstanceUID: s1.study }, { requestedBy: 'test' });
    const state = (id: string): string | null => node.vault.grants.forPatient(account, new Date()).find((g) => g.statement.id === id)!.revokedBy;
    // Every grant naming the erased study is revoked (also one naming another study too); the rest stand.
    expect(state(g1)).toMatch(/^erasure:/);
    expect(state(g12)).toMatch(/^erasure:/);
    expect(state(g2)).toBeNull();
    expect(await asDr(s2.url)).toBe(200);
    // Sent again: stored anew, and not shown through the grants given for the erased study.
    expect((await stow(node.url, [s1.bytes])).status).toBe(200);
    expect((await retrieve(s1.url)).status).toBe(200);
    expect(await asDr(s1.url)).not.toBe(200);
    // The patient erased whole: every grant of theirs goes.
    await node.vault.erasure.erase({ kind: 'patient', patientId: 'GRANT-PAT' }, { requestedBy: 'test' });
    expect(state(g2)).toMatch(/^erasure:/);
  });

  it("a patient's request: refused with a reason the patient sees; approved, carried out, with a certificate the patient can fetch", async () => {
    const node = await start();
    const mine = await storeStudy(node, 9251, 'REQ-PAT');
    const mine2 = await storeStudy(node, 9252, 'REQ-PAT');
    const theirs = await storeStudy(node, 9253, 'OTHER-REQ');
    const account = node.vault.identity.createPatient([{ id: 'REQ-PAT', issuer: null }]);
    const token = node.vault.identity.issueToken('patient', account);
    const api = node.url.replace(/\/dicom-web$/, '/api');
    const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> => {
      const res = await fetch(`${api}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, json: await res.json() };
    };

    // Another patient's study: answered as one never stored.
    expect((await call('POST', '/patient/erasure-requests', { study: theirs.study })).json).toMatchObject({ code: 'STUDY_NOT_FOUND' });
    // One study: refused by the operator, with a reason.
    const one = await call('POST', '/patient/erasure-requests', { study: mine.study });
    expect(one.status).toBe(202);
    expect(one.json).toMatchObject({ scope: 'study', study: mine.study, state: 'pending' });
    const listed = await run(['erasure', 'requests', '--data-dir', node.dataDir]);
    expect(listed.stdout).toContain(`${one.json.id}  pending`);
    const refused = await run([
      'erasure',
      'refuse',
      one.json.id,
      '--reason',
      'under investigation: records kept until the case closes',
      '--data-dir',
      node.dataDir,
    ]);
    expect(refused.code, refused.stderr).toBe(0);
    expect((await call('GET', '/patient/erasure-requests')).json.requests[0]).toMatchObject({
      id: one.json.id,
      state: 'refused',
      reason: 'under investigation: records kept until the case closes',
    });
    // Refused is final: it cannot be approved afterwards.
    expect((await run(['erasure', 'approve', one.json.id, '--data-dir', node.dataDir])).stderr).toMatch(/ERASURE_REQUEST_STATE/);
    expect((await retrieve(mine.url)).status).toBe(200);

    // All of the patient's studies: approved and carried out.
    const all = await call('POST', '/patient/erasure-requests', {});
    expect(all.json).toMatchObject({ scope: 'patient', state: 'pending' });
    const approved = await run(['erasure', 'approve', all.json.id, '--operator', 'dpo', '--json', '--data-dir', node.dataDir]);
    expect(approved.code, approved.stderr).toBe(0);
    const cert = JSON.parse(approved.stdout) as ErasureCertificate;
    expect(cert).toMatchObject({ scope: 'patient', requestedBy: `patient:${account}`, approvedBy: 'operator:dpo', request: all.json.id });
    expect(cert.studies).toHaveLength(2);
    for (const s of [mine, mine2]) expect((await retrieve(s.url)).status).toBe(404);
    expect((await retrieve(theirs.url)).status).toBe(200);
    // Erased whole, the patient has no account left: the session is gone with it, and the
    // certificate is served to whoever holds the request id, without a session.
    expect((await call('GET', '/patient/erasure-requests')).status).toBe(401);
    expect((await call('GET', `/patient/erasure-requests/${all.json.id}/certificate`)).status).toBe(401);
    const res = await fetch(`${api}/patient/erasure-requests/${all.json.id}/certificate`);
    const fetched = { status: res.status, json: (await res.json()) as ErasureCertificate };
    expect(fetched.status).toBe(200);
    expect(fetched.json).toEqual(cert);
    expect((await fetch(`${api}/patient/erasure-requests/${crypto.randomUUID()}/certificate`)).status).toBe(404);
    expect(verifyCertificate(fetched.json, (await run(['erasure', 'key', '--data-dir', node.dataDir])).stdout.trim())).toBe(true);
    // The API is documented.
    const openapi = (await (await fetch(`${api}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(openapi.paths)).toEqual(expect.arrayContaining(['/api/patient/erasure-requests', '/api/patient/erasure-requests/{id}/certificate']));
  });
});
