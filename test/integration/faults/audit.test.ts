// The audit log on a real node (issue 24): every access recorded before it is served, with who,
// what, when, where and why; refusals with their reason; grants and study versions; the patient's
// own entries over HTTP with proofs that verify, another patient's entries 404; heads anchored in
// the batches of study roots, their receipts verified on the chain; a node that shows the patient
// one head and an auditor another is caught against the anchored head; `audit verify` and
// `patient audit --verify` on the live data directory; a flood of refusals; a full log refuses
// service (503); after SIGKILL every access that was answered is in the log.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyInclusion } from '../../../anchor/merkle.ts';
import { verifyReceipt } from '../../../anchor/verify-receipt.ts';
import { createChainClient } from '../../../anchor/chain/client.ts';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import { type AuditRecord, openLeaf } from '../../../src/audit/entry.ts';
import { HeadSigner, publicKeyOf, verifyHeadSignature } from '../../../src/audit/head.ts';
import { AuditLog } from '../../../src/audit/log.ts';
import { AUDIT_DB_FILE, SqliteAuditLogStore } from '../../../src/audit/store.ts';
import { AUDIT_KEYS_DB_FILE, SqliteAuditKeyStore } from '../../../src/audit/subject-keys.ts';
import { verifyConsistency } from '../../../src/audit/tree.ts';
import { createKeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement } from '../../../src/grants/statement.ts';
import { MASTER_KEY_FILE } from '../../../src/format/keys.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { useSharedChain, type TestChain } from '../../support/anvil.ts';
import { storescu } from '../../support/dcmtk.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { enrollTester, startNodeWithTester } from '../../support/node.ts';
import { killed, run, serve } from '../../support/process.ts';

const JSON_TYPE = 'application/dicom+json';
const b64 = (s: string): Buffer => Buffer.from(s, 'base64');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function get(url: string, token: string | null, accept = 'application/json'): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { headers: { accept, authorization: token === null ? '' : `Bearer ${token}` } });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json };
}

/** Every entry of the node's log, opened where the key allows. */
function entries(node: RunningNode): Array<{ index: number; subject: string; r: AuditRecord | undefined }> {
  const { store, keys } = node.vault.audit;
  node.vault.audit.log.flush();
  return store.scan(0, store.size()).map((e) => ({ index: e.index, subject: e.subject, r: openLeaf(e.leaf, keys.key(e.subject) ?? Buffer.alloc(32)) }));
}

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'dicom-vault-audit-'));
  dirs.push(d);
  return d;
}

describe('the audit log of a running node', () => {
  let chain: TestChain;
  let node: RunningNode;
  let dataDir: string;
  let tester: string;
  let a: GeneratedStudy;
  let c: GeneratedStudy;
  let account: string;
  let other: string;
  let keyPath: string;
  let drWho: string;
  let grantId: string;
  const chainFlags = (): Record<string, string> => ({ 'chain-rpc': chain.rpcUrl, 'chain-id': String(chain.chainId), contract: chain.contract });

  beforeAll(async () => {
    chain = await useSharedChain();
    dataDir = await tempDir();
    const options = resolveNodeOptions(
      {
        port: '0',
        'data-dir': dataDir,
        'dimse-port': 'off',
        ...chainFlags(),
        'chain-key-file': await chain.keyFile(2),
        'anchor-batch-size': '1000',
        'anchor-interval': '1',
        confirmations: '1',
        'audit-head-interval': '100',
      },
      {},
    );
    node = await startNodeWithTester(options, createLogger('silent'), { anchoring: true, anchorService: { pollIntervalMs: 50 } });
    tester = enrollTester(node.vault.identity, node.url);
    a = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: 2401, patientId: 'AUD-1' });
    c = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: 2402, patientId: 'AUD-2' });
    for (const s of [a, c]) expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)))).status).toBe(200);
    const identity = node.vault.identity;
    account = identity.createPatient([{ id: 'AUD-1', issuer: null }]);
    other = identity.createPatient([{ id: 'AUD-2', issuer: null }]);
    keyPath = join(dataDir, 'patient.key');
    const made = createKeyFile(keyPath, { account, node: node.vault.grants.nodeId });
    identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    drWho = identity.addUser('dr.who', ['grantee']).token;
    const statement = draftStatement(
      { nodeId: node.vault.grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() },
      { grantee: { kind: 'user', id: 'dr.who' }, studies: [a.studyInstanceUID] },
    );
    await node.vault.grants.add({ statement, proof: signStatement(statement, readKeyFile(keyPath)) }, account);
    grantId = statement.id;
    // Dr Who reads study A under the grant (every test below finds it in the log).
    expect((await get(`${node.url}/studies/${a.studyInstanceUID}/metadata`, drWho, JSON_TYPE)).status).toBe(200);
  }, 120_000);
  afterAll(async () => {
    try {
      await node?.close();
    } finally {
      await chain?.stop();
    }
  });

  it('records each access before serving it, and how it ended: who, what, when, where, why', async () => {
    const before = node.vault.audit.store.size();
    expect((await get(`${node.url}/studies/${a.studyInstanceUID}/metadata`, tester, JSON_TYPE)).status).toBe(200);
    expect((await get(`${node.url}/studies/${a.studyInstanceUID}/metadata`, drWho, JSON_TYPE)).status).toBe(200);
    expect((await get(`${node.url}/studies/${a.studyInstanceUID}/metadata`, 'dvu_not-a-token', JSON_TYPE)).status).toBe(401);
    await sleep(50);
    const all = entries(node);
    const mine = all.filter((e) => e.index >= before);
    const staff = mine.find((e) => e.r?.kind === 'access' && e.r.who.id === 'user:tester')!;
    expect(staff.r).toMatchObject({
      what: { action: 'retrieve', study: a.studyInstanceUID, dataType: 'metadata' },
      why: 'staff policy',
      where: { method: 'GET' },
    });
    // About patient AUD-1: sealed under their key, not the node's.
    expect(staff.subject).toBe(node.vault.audit.keys.subjectsOf([{ id: 'AUD-1', issuer: null }])[0]);
    // How it ended: in an outcome entry that points at it, or, when the metadata was ready in the
    // turn that admitted it, in the access entry itself.
    const outcome = mine.find((e) => e.r?.kind === 'outcome' && e.r.ref === staff.index);
    if (outcome !== undefined) {
      expect(outcome.r).toMatchObject({ what: { status: 200, complete: true } });
      expect(outcome.r!.what.bytes).toBeGreaterThan(100);
    } else {
      expect(staff.r!.what.status).toBe(200);
      expect(staff.r!.what.bodyBytes).toBeGreaterThan(100);
    }
    // A frame is streamed (its first bytes come after the entry is written): an outcome entry.
    const inst = a.instances[0]!;
    const frame = await fetch(`${node.url}/studies/${a.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}/frames/1`, {
      headers: { accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=*', authorization: `Bearer ${tester}` },
    });
    expect(frame.status).toBe(200);
    await frame.arrayBuffer();
    await sleep(50);
    const framed = entries(node).find((e) => e.r?.kind === 'access' && e.r.what.dataType === 'frames' && e.r.who.id === 'user:tester')!;
    expect(framed.r!.what.status).toBeUndefined();
    const frameOutcome = entries(node).find((e) => e.r?.kind === 'outcome' && e.r.ref === framed.index)!;
    expect(frameOutcome.r).toMatchObject({ what: { status: 200, complete: true, dataType: 'frames' } });
    expect(frameOutcome.r!.what.bytes).toBeGreaterThan(256);
    // A search is answered in the turn it is admitted in: its access entry, written after, carries
    // the response (status, body length) and no outcome entry follows it.
    const search = await fetch(`${node.url}/studies?PatientID=AUD-1`, { headers: { accept: JSON_TYPE, authorization: `Bearer ${tester}` } });
    const searchBody = Buffer.from(await search.arrayBuffer());
    expect(search.status).toBe(200);
    await sleep(50);
    const after = entries(node);
    const found = after.filter((e) => e.r?.kind === 'access' && e.r.where?.url === '/dicom-web/studies?PatientID=AUD-1');
    expect(found).toHaveLength(1);
    expect(found[0]!.r!.what).toMatchObject({ action: 'search', status: 200, bodyBytes: searchBody.length });
    expect(after.some((e) => e.r?.kind === 'outcome' && e.r.ref === found[0]!.index)).toBe(false);
    const granted = mine.find((e) => e.r?.kind === 'access' && e.r.who.id === 'user:dr.who')!;
    expect(granted.r!.why).toBe(`grant ${grantId}`);
    const refused = mine.find((e) => e.r?.kind === 'refused')!;
    expect(refused.r).toMatchObject({ who: { id: 'unidentified' }, what: { status: 401, study: a.studyInstanceUID }, why: 'unknown token' });
    // The STOWs made study versions (with their source and who), the patient's grant is there.
    const versions = all.filter((e) => e.r?.kind === 'version');
    expect(versions.map((e) => e.r!.what.study).sort()).toEqual([a.studyInstanceUID, c.studyInstanceUID].sort());
    expect(versions[0]!.r).toMatchObject({ who: { id: 'user:tester' }, what: { source: 'stow', version: 1, instances: 2 } });
    expect(all.some((e) => e.r?.kind === 'grant' && e.r.what.grant === grantId)).toBe(true);
    expect(all.some((e) => e.r?.kind === 'admin' && e.r.what.action === 'patient account created')).toBe(true);
  });

  it("gives the patient their entries with proofs that verify under the node's key; another patient's entry is 404", async () => {
    const session = node.vault.identity.issueToken('patient', account);
    const res = await get(`${node.url.replace('/dicom-web', '')}/api/patient/audit?limit=500`, session);
    expect(res.status).toBe(200);
    const { entries: list, heads, subjects } = res.json;
    expect(list.length).toBeGreaterThan(2);
    const key = publicKeyOf((await get(`${node.url.replace('/dicom-web', '')}/api/audit/key`, null)).json.publicKey);
    const head = heads[0];
    expect(verifyHeadSignature({ body: head.body, signature: b64(head.signature) }, key)).toBe(true);
    for (const e of list) {
      expect(subjects).toContain(e.subject);
      expect(e.head).toBe(head.size);
      expect(verifyInclusion(b64(e.leaf), e.index, head.size, e.proof.map(b64), b64(head.root))).toBe(true);
    }
    // Newest first, and filtered by grantee.
    expect(list.map((e: any) => e.index)).toEqual([...list.map((e: any) => e.index)].sort((x: number, y: number) => y - x));
    const byDr = await get(`${node.url.replace('/dicom-web', '')}/api/patient/audit?grantee=user:dr.who`, session);
    expect(byDr.json.entries.length).toBeGreaterThan(0);
    for (const e of byDr.json.entries) expect(e.record.who.id).toBe('user:dr.who');
    // Patient AUD-2's entry: unknown to AUD-1.
    const otherSubject = node.vault.audit.keys.subjectsOf([{ id: 'AUD-2', issuer: null }])[0]!;
    const theirs = entries(node).find((e) => e.subject === otherSubject)!;
    expect((await get(`${node.url.replace('/dicom-web', '')}/api/patient/audit/${theirs.index}`, session)).status).toBe(404);
    expect((await get(`${node.url.replace('/dicom-web', '')}/api/patient/audit/${list[0].index}`, session)).status).toBe(200);
    // and AUD-2's own session sees it, not AUD-1's.
    const session2 = node.vault.identity.issueToken('patient', other);
    const theirList = (await get(`${node.url.replace('/dicom-web', '')}/api/patient/audit`, session2)).json.entries;
    expect(theirList.map((e: any) => e.index)).toContain(theirs.index);
    expect(theirList.some((e: any) => list.some((m: any) => m.index === e.index))).toBe(false);
    // The operators' view: every entry, for admins only.
    const admin = await get(`${node.url.replace('/dicom-web', '')}/api/audit/entries?limit=1000`, tester);
    expect(admin.status).toBe(200);
    expect(admin.json.entries.map((e: any) => e.index)).toEqual(expect.arrayContaining([theirs.index, list[0].index]));
    expect((await get(`${node.url.replace('/dicom-web', '')}/api/audit/entries`, drWho)).status).toBe(403);
    expect((await get(`${node.url.replace('/dicom-web', '')}/api/audit/entries`, session)).status).toBe(403);
    // A patient session that fails to open is recorded with its reason.
    const login = await fetch(`${node.url.replace('/dicom-web', '')}/api/patient/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ account, keyId: 'k', challenge: 'not-issued', signature: 'AA' }),
    });
    expect(login.status).toBe(401);
    await sleep(50);
    expect(
      entries(node).some(
        (e) => e.r?.kind === 'refused' && e.r.what.action === 'POST /api/patient/session' && e.r.why === 'the challenge is unknown, used or expired',
      ),
    ).toBe(true);
  });

  it('anchors heads as leaves of the study-root batches; a receipt verifies on the chain; a split view is caught against it', async () => {
    const api = node.url.replace('/dicom-web', '');
    // Wait for a batch holding a head to be confirmed.
    let anchored: any;
    for (let i = 0; i < 200 && anchored === undefined; i++) {
      for (const h of node.vault.audit.store.recentHeads(50)) {
        const view = (await get(`${api}/api/audit/head?size=${h.size}`, null)).json;
        if (view.receipt !== null) {
          anchored = view;
          break;
        }
      }
      if (anchored === undefined) await sleep(100);
    }
    expect(anchored).toBeDefined();
    const client = createChainClient({ rpcUrl: chain.rpcUrl });
    const v = await verifyReceipt({ receipt: anchored.receipt, client, expectedCid: anchored.cid });
    expect(v.ok).toBe(true);
    // No transaction of its own: the head's batch also holds study roots when both were waiting.
    expect(anchored.receipt.size).toBeGreaterThanOrEqual(1);

    // The honest log: its latest head extends the anchored one.
    await get(`${node.url}/studies`, tester, JSON_TYPE);
    node.vault.audit.log.flush();
    const latest = node.vault.audit.log.signHead() ?? node.vault.audit.store.latestHead()!;
    const proof = (await get(`${api}/api/audit/consistency?first=${anchored.size}&second=${latest.size}`, null)).json.proof.map(b64);
    expect(verifyConsistency(anchored.size, latest.size, proof, b64(anchored.root), latest.root)).toBe(true);

    // The operator forks the log just before the anchored head and shows an auditor a head of the
    // fork, signed with the node's own key: no proof joins it to the anchored head.
    const forkDir = await tempDir();
    copyFileSync(join(dataDir, AUDIT_DB_FILE), join(forkDir, AUDIT_DB_FILE));
    for (const ext of ['-wal', '-shm'])
      if (existsSync(join(dataDir, AUDIT_DB_FILE + ext))) copyFileSync(join(dataDir, AUDIT_DB_FILE + ext), join(forkDir, AUDIT_DB_FILE + ext));
    const db = new DatabaseSync(join(forkDir, AUDIT_DB_FILE));
    db.prepare('DELETE FROM entries WHERE idx >= ?').run(anchored.size - 1);
    db.prepare('DELETE FROM heads WHERE size >= ?').run(anchored.size - 1);
    db.close();
    const forkStore = SqliteAuditLogStore.open(join(forkDir, AUDIT_DB_FILE));
    const forkKeys = SqliteAuditKeyStore.open(join(forkDir, AUDIT_KEYS_DB_FILE), Buffer.alloc(32, 7));
    const fork = new AuditLog(
      { store: forkStore, keys: forkKeys, signer: HeadSigner.loadOrCreate(join(dataDir, 'audit-signing.key')), origin: 'forged' },
      { headIntervalMs: 0 },
    );
    for (let i = 0; i < latest.size - anchored.size + 3; i++)
      await fork.append({ kind: 'admin', who: { id: 'user:operator' }, what: { action: 'nothing to see' } });
    const forged = forkStore.latestHead()!;
    expect(forged.size).toBeGreaterThan(anchored.size);
    // Signed by the node's key, so a signature check alone would take it...
    expect(verifyHeadSignature(forged, publicKeyOf((await get(`${api}/api/audit/key`, null)).json.publicKey))).toBe(true);
    // ...but neither log can prove it extends the anchored head.
    expect(verifyConsistency(anchored.size, forged.size, fork.consistency(anchored.size, forged.size), b64(anchored.root), forged.root)).toBe(false);
    fork.close();
    forkStore.close();
    forkKeys.close();
  });

  it('`audit verify` and `patient audit --verify` check the live log against its anchored heads', async () => {
    const flags = ['--data-dir', dataDir, '--chain-rpc', chain.rpcUrl, '--chain-id', String(chain.chainId), '--contract', chain.contract];
    // The suite's environment turns chains off (vitest.config.ts); --chain-rpc names this one.
    const env = { DICOM_VAULT_CHAIN: '' };
    const v = await run(['audit', 'verify', ...flags], env);
    expect(v.stdout, v.stderr).toMatch(/^OK: every entry verified/m);
    expect(v.stdout).toMatch(/[1-9]\d* anchored/);
    expect(v.code).toBe(0);
    const p = await run(['patient', 'audit', '--key-file', keyPath, '--verify', ...flags], env);
    expect(p.stderr).toBe('');
    expect(p.stdout).toMatch(/user:dr\.who retrieve\/metadata study/);
    expect(p.stdout).toMatch(/^OK: \d+ entries proven in the signed head of \d+ entries, anchored through entry \d+/m);
    expect(p.code).toBe(0);

    // A copy of the data directory with entry 3 edited on disk: named, exit 3.
    const copy = await tempDir();
    for (const f of [AUDIT_DB_FILE, `${AUDIT_DB_FILE}-wal`, 'audit-signing.key', 'anchor.db', 'anchor.db-wal'])
      if (existsSync(join(dataDir, f))) copyFileSync(join(dataDir, f), join(copy, f));
    const db = new DatabaseSync(join(copy, AUDIT_DB_FILE));
    const { leaf } = db.prepare('SELECT leaf FROM entries WHERE idx = 3').get() as { leaf: Uint8Array };
    const changed = Buffer.from(leaf);
    changed[changed.length - 5]! ^= 1;
    db.prepare('UPDATE entries SET leaf = ? WHERE idx = 3').run(changed);
    db.close();
    const bad = await run(['audit', 'verify', '--data-dir', copy, ...flags.slice(2)], env);
    expect(bad.stdout).toMatch(/^CHANGED entry 3: entry 3 was changed/m);
    expect(bad.stdout).toMatch(/^FAILED/m);
    expect(bad.code).toBe(3);
  });

  it('keeps up with a flood of refused requests: each is recorded (or counted in a summary)', async () => {
    const before = node.vault.audit.store.size();
    const N = 1_000;
    for (let i = 0; i < N; i += 50)
      await Promise.all(Array.from({ length: 50 }, () => get(`${node.url}/studies`, 'dvu_flood', JSON_TYPE).then((r) => expect(r.status).toBe(401))));
    await sleep(50);
    const after = entries(node).filter((e) => e.index >= before);
    const counted =
      after.filter((e) => e.r?.kind === 'refused' && e.r.why === 'unknown token').length +
      after.filter((e) => e.r?.kind === 'summary').reduce((n, e) => n + (e.r!.what.counts?.['unknown token'] ?? 0), 0);
    expect(counted).toBe(N);
    expect((await get(`${node.url}/studies`, tester, JSON_TYPE)).status).toBe(200);
  });
});

describe('study versions name their source', () => {
  it('dimse with the calling AE title, cli with the operating user; the log verifies', async () => {
    const dataDir = await tempDir();
    const node = await startNodeWithTester(
      resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'dimse-port': '0', 'ae-title': 'VAULT' }, {}),
      createLogger('silent'),
    );
    const viaDimse = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: 2403, patientId: 'AUD-3' });
    const file = join(dataDir, 'one.dcm');
    writeFileSync(file, await bytesOf(viaDimse.instances[0]!));
    try {
      const r = await storescu(node.dimse!.port, [file], ['-aet', 'MODALITY1'], 'VAULT');
      expect(r.code, r.output).toBe(0);
    } finally {
      await node.close();
    }
    const viaCli = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: 2404, patientId: 'AUD-3' });
    const input = join(dataDir, 'in');
    mkdirSync(input);
    writeFileSync(join(input, 'a.dcm'), await bytesOf(viaCli.instances[0]!));
    const ingest = await run(['ingest', input, '--data-dir', dataDir]);
    expect(ingest.code, ingest.stderr).toBe(0);
    const master = readFileSync(join(dataDir, MASTER_KEY_FILE));
    const store = SqliteAuditLogStore.open(join(dataDir, AUDIT_DB_FILE));
    const keys = SqliteAuditKeyStore.open(join(dataDir, AUDIT_KEYS_DB_FILE), master);
    try {
      const versions = store
        .scan(0, store.size())
        .map((e) => openLeaf(e.leaf, keys.key(e.subject)!))
        .filter((r) => r?.kind === 'version');
      expect(versions.find((r) => r!.what.study === viaDimse.studyInstanceUID)).toMatchObject({ who: { id: 'ae:MODALITY1' }, what: { source: 'dimse' } });
      expect(versions.find((r) => r!.what.study === viaCli.studyInstanceUID)).toMatchObject({
        who: { id: `cli:${userInfo().username}` },
        what: { source: 'cli' },
      });
      const v = await run(['audit', 'verify', '--data-dir', dataDir]);
      expect(v.stdout).toMatch(/^OK/m);
    } finally {
      store.close();
      keys.close();
    }
  });
});

describe('an audit log that cannot be written', () => {
  it('refuses access with 503 AUDIT_UNAVAILABLE rather than serve it unrecorded', async () => {
    const dataDir = await tempDir();
    const options = {
      ...resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'dimse-port': 'off' }, {}),
      audit: { headIntervalMs: 0, storePragmas: ['max_page_count = 60'] },
    };
    const node = await startNodeWithTester(options, createLogger('silent'));
    try {
      const token = enrollTester(node.vault.identity, node.url);
      expect((await get(`${node.url}/studies`, token, JSON_TYPE)).status).toBe(204);
      // The file grows to its bound (a full disk for SQLite: SQLITE_FULL).
      let full = false;
      for (let i = 0; i < 5_000 && !full; i++)
        await node.vault.audit.log.append({ kind: 'admin', who: { id: 'filler' }, what: { action: 'x'.repeat(200) } }).catch(() => (full = true));
      expect(full).toBe(true);
      const res = await get(`${node.url}/studies`, token, JSON_TYPE);
      expect(res.status).toBe(503);
      expect(res.json.code).toBe('AUDIT_UNAVAILABLE');
    } finally {
      await node.close().catch(() => undefined);
    }
  });
});

describe('after SIGKILL', () => {
  it.each([
    ['normal', 'main'],
    ['full', 'main'],
    ['normal', 'thread'],
  ])('every access that was answered is in the log (--audit-sync %s, --audit-writer %s)', async (sync, writer) => {
    const dataDir = await tempDir();
    const served = await serve(dataDir, ['--audit-head-interval', '100', '--audit-sync', sync, '--audit-writer', writer], { DICOM_VAULT_LOG_LEVEL: 'silent' });
    const answered: string[] = [];
    const ask = async (u: string) => {
      const r = await get(u, served.token, JSON_TYPE).catch(() => undefined);
      if (r !== undefined && r.status === 204) answered.push(u);
    };
    // Twenty answered one after the other, then forty in flight when the kill lands: answered or
    // not, none answered unrecorded.
    for (let i = 0; i < 20; i++) await ask(`${served.url}/studies?PatientID=KILL-${i}`);
    const pending = Array.from({ length: 40 }, async (_, i) => {
      await sleep(i / 2);
      await ask(`${served.url}/studies?PatientID=KILL-${20 + i}`);
    });
    await sleep(10);
    served.child.kill('SIGKILL');
    await killed(served.child);
    await Promise.all(pending);
    expect(answered.length).toBeGreaterThanOrEqual(20);
    const master = readFileSync(join(dataDir, MASTER_KEY_FILE));
    mkdirSync(dataDir, { recursive: true });
    const store = SqliteAuditLogStore.open(join(dataDir, AUDIT_DB_FILE));
    const keys = SqliteAuditKeyStore.open(join(dataDir, AUDIT_KEYS_DB_FILE), master);
    try {
      const urlsInLog = new Set(
        store
          .scan(0, store.size())
          .map((e) => openLeaf(e.leaf, keys.key(e.subject)!))
          .filter((r) => r?.kind === 'access')
          .map((r) => `${served.url.replace('/dicom-web', '')}${r!.where!.url}`),
      );
      for (const u of answered) expect(urlsInLog.has(u), u).toBe(true);
    } finally {
      store.close();
      keys.close();
    }
  });
});

afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});
