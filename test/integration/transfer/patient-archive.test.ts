// Portability (GDPR Art. 20, issue 25): every study of a patient, their anchor receipts, grants and
// audit entries move from node A to node B as one archive sealed to B. B serves the same bytes
// under the same UIDs, the receipts verify on the chain, the grants are listed; a tampered archive,
// or one sealed to another node, is refused and leaves nothing behind.
import { generateKeyPairSync, sign } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import { encodeTrustFile, trustAnchorOf } from '../../../anchor/trust.ts';
import { verifyReceipt } from '../../../anchor/verify-receipt.ts';
import { publicKeyText } from '../../../src/audit/head.ts';
import type { PortableAudit } from '../../../src/audit/portable.ts';
import { openLeaf } from '../../../src/audit/entry.ts';
import { createKeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement } from '../../../src/grants/statement.ts';
import { KEY_DB_FILE } from '../../../src/format/keys.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { patientArchiveContents } from '../../../src/shell/patient-export.ts';
import { parseRecipientKey } from '../../../src/transfer/car.ts';
import { exportPatientArchive, type PatientArchiveContents } from '../../../src/transfer/patient-archive.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { useSharedChain, type TestChain } from '../../support/anvil.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startNodeWithTester } from '../../support/node.ts';
import { run } from '../../support/process.ts';

let chain: TestChain;
let a: RunningNode;
const dirs: string[] = [];
let aDir: string;
const PATIENT = 'PORT-PAT-0001';
const OTHER = 'PORT-OTHER-0002';
/** The patient's studies on A: one in two versions, one in one; and another patient's. */
const mine: Array<{ study: GeneratedStudy; bytes: Buffer[] }> = [];
let theirs: GeneratedStudy;
let account: string;
let grantId: string;
/** The trust file of A's chain, as a receiving operator gets it from A (`anchor trust-file`). */
let trustFile: string;

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'dicom-vault-port-'));
  dirs.push(d);
  return d;
}

beforeAll(async () => {
  chain = await useSharedChain();
  aDir = await tempDir();
  const options = resolveNodeOptions(
    {
      port: '0',
      'data-dir': aDir,
      'chunk-size': '4096',
      'dimse-port': 'off',
      'chain-rpc': chain.rpcUrl,
      'chain-id': String(chain.chainId),
      'chain-key-file': await chain.keyFile(4),
      contract: chain.contract,
      // The four versions below (three of the patient, one of the other) in one batch.
      'anchor-batch-size': '4',
      'anchor-interval': '3600',
      confirmations: '1',
    },
    {},
  );
  a = await startNodeWithTester(options, createLogger('silent'), { anchoring: true, anchorService: { pollIntervalMs: 20 } });
  const confirmed = once(a.anchoring!.service, 'confirmed');
  for (const [seed, n] of [
    [9401, 3],
    [9402, 1],
  ] as const) {
    const study = planStudy({ kind: 'single', instances: n, rows: 32, columns: 32, seed, patientId: PATIENT });
    const bytes = await Promise.all(study.instances.map(bytesOf));
    mine.push({ study, bytes });
  }
  expect((await stow(a.url, mine[0]!.bytes.slice(0, 2))).status).toBe(200);
  expect((await stow(a.url, mine[0]!.bytes.slice(2))).status).toBe(200); // a second version
  expect((await stow(a.url, mine[1]!.bytes)).status).toBe(200);
  theirs = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed: 9403, patientId: OTHER });
  expect((await stow(a.url, [await bytesOf(theirs.instances[0]!)])).status).toBe(200);
  await confirmed;

  // The patient's account, and a grant to a doctor: it travels as a FHIR Consent.
  account = a.vault.identity.createPatient([{ id: PATIENT, issuer: null }]);
  const keyPath = join(await tempDir(), 'patient.key');
  const made = createKeyFile(keyPath, { account, node: a.vault.grants.nodeId });
  a.vault.identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
  a.vault.identity.addUser('dr.port', ['grantee']);
  const statement = draftStatement(
    { nodeId: a.vault.grants.nodeId, account, patientIds: a.vault.identity.patientIds(account), now: new Date() },
    { grantee: { kind: 'user', id: 'dr.port' }, studies: [mine[0]!.study.studyInstanceUID], actions: ['search', 'view'] },
  );
  await a.vault.grants.add({ statement, proof: signStatement(statement, readKeyFile(keyPath)) }, account);
  grantId = statement.id;
  // An access to the patient's study: an audit entry of theirs.
  expect((await retrieve(`${a.url}/studies/${mine[1]!.study.studyInstanceUID}`)).status).toBe(200);
  trustFile = join(await tempDir(), 'a-chain.trust.json');
  await writeFile(trustFile, JSON.stringify(encodeTrustFile([await trustAnchorOf(chain.client(0), chain.contract)])));
}, 180_000);

afterAll(async () => {
  try {
    await a?.close();
  } finally {
    await chain?.stop();
  }
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function publicKeyFile(dataDir: string): Promise<string> {
  const pub = await run(['public-key', '--data-dir', dataDir]);
  expect(pub.code, pub.stderr).toBe(0);
  const file = join(await tempDir(), 'receiver.pem');
  await writeFile(file, pub.stdout);
  return file;
}

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** What a refused import must not leave: no block, no key, no catalog row. */
async function nothingImported(dataDir: string): Promise<void> {
  // (The fs store's SHARDING marker is written when the store opens.)
  expect((await filesUnder(join(dataDir, 'blocks'))).filter((f) => !f.endsWith('SHARDING'))).toEqual([]);
  const keys = new DatabaseSync(join(dataDir, KEY_DB_FILE), { readOnly: true });
  try {
    expect(keys.prepare('SELECT count(*) AS n FROM study_keys').get()).toEqual({ n: 0 });
  } finally {
    keys.close();
  }
  const catalog = new DatabaseSync(join(dataDir, 'catalog.db'), { readOnly: true });
  try {
    expect(catalog.prepare('SELECT count(*) AS n FROM studies').get()).toEqual({ n: 0 });
  } finally {
    catalog.close();
  }
}

interface ImportJson {
  studies: Array<{ study: string; versions: number; instances: number }>;
  receipts: Array<{ study: string; receipt: { cid: string } }>;
  consents: { resourceType: string; entry: Array<{ resource: { resourceType: string; id?: string; status: string } }> };
  audit: { entries: Array<{ proof?: string[]; record: unknown }>; head: { size: number } | null };
  verified: {
    receipts: { carried: number; checked: number; verdicts: Record<string, number>; unverified?: string };
    audit: { entries: number; proofs: number; records: number; key: string; keyPinned: boolean; head: { size: number; anchored: string } | null };
  };
  saved: string;
}

/**
 * An archive for the node at `bDir` built by the module's own functions from A's real contents,
 * with `alter` applied before it is sealed: what a sender (or anyone holding B's public key)
 * could forge. The blocks, keys and seal are all sound; only the evidence lies.
 */
async function forged(bDir: string, alter: (c: PatientArchiveContents) => void): Promise<string> {
  const recipient = parseRecipientKey(await readFile(await publicKeyFile(bDir)));
  const gathered = patientArchiveContents(a.vault, { id: PATIENT, issuer: null });
  try {
    alter(gathered.contents);
    const file = join(await tempDir(), 'forged.car');
    await exportPatientArchive(a.vault, gathered.contents, recipient, file);
    return file;
  } finally {
    gathered.close();
  }
}

const flip = (b64: string): string => {
  const b = Buffer.from(b64, 'base64');
  b[0]! ^= 0x01;
  return b.toString('base64');
};

describe('a patient moved to another provider', () => {
  it('export on A, import on B: the same bytes under the same UIDs, receipts that verify, grants and audit entries listed', async () => {
    const bDir = await tempDir();
    const pem = await publicKeyFile(bDir);
    const archive = join(await tempDir(), 'patient.car');
    const exported = await run(['export', '--patient', PATIENT, archive, '--to', pem, '--json', '--data-dir', aDir]);
    expect(exported.code, exported.stderr).toBe(0);
    expect(JSON.parse(exported.stdout)).toMatchObject({ studies: 2, versions: 3, instances: 4, receipts: 3 });
    // The hand-over is recorded in the patient's audit log, as a disclosure.
    const audit = a.vault.audit;
    const disclosures = audit.store
      .query({ subjects: audit.keys.subjectsOf([{ id: PATIENT, issuer: null }]), limit: 1_000 })
      .map((e) => openLeaf(e.leaf, audit.keys.key(e.subject)!))
      .filter((r) => r?.what.action.startsWith('patient data exported for another provider'));
    expect(disclosures).toHaveLength(1);
    expect(disclosures[0]).toMatchObject({ kind: 'admin', who: { id: 'cli' } });
    // Whoever else holds the file reads nothing: no UID, no Patient ID in it.
    const file = await readFile(archive);
    for (const needle of [PATIENT, mine[0]!.study.studyInstanceUID, mine[1]!.study.studyInstanceUID, 'dr.port'])
      expect(file.includes(needle), needle).toBe(false);

    // A tampered copy (one byte in the middle) is refused, and leaves nothing on B.
    const tampered = join(await tempDir(), 'tampered.car');
    const edited = Buffer.from(file);
    edited[edited.length >> 1]! ^= 0x01;
    await writeFile(tampered, edited);
    const refused = await run(['import', tampered, '--data-dir', bDir]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/CAR_INVALID/);
    await nothingImported(bDir);

    const imported = await run([
      'import',
      archive,
      '--json',
      '--trust',
      trustFile,
      '--rpc',
      chain.rpcUrl,
      '--audit-key',
      publicKeyText(a.vault.audit.log.publicKey),
      '--data-dir',
      bDir,
    ]);
    expect(imported.code, imported.stderr).toBe(0);
    const report = JSON.parse(imported.stdout) as ImportJson;
    // Every receipt checked on A's chain (a development chain: self-attested), every audit entry's
    // proof into the signed head, its details against its leaf.
    expect(report.verified.receipts).toMatchObject({ carried: 3, checked: 3, verdicts: { 'self-attested': 3 }, chain: { chainId: chain.chainId } });
    expect(report.verified.receipts.unverified).toBeUndefined();
    expect(report.verified.audit.proofs).toBe(report.audit.entries.length);
    expect(report.verified.audit.records).toBe(report.audit.entries.length);
    expect(report.verified.audit).toMatchObject({ key: publicKeyText(a.vault.audit.log.publicKey), keyPinned: true });
    // The subject keys served the check; B keeps none.
    expect(JSON.parse(await readFile(join(report.saved, 'audit.json'), 'utf8'))).not.toHaveProperty('keys');
    expect(report.audit).not.toHaveProperty('keys');
    expect(report.studies.map((s) => [s.study, s.versions, s.instances]).sort()).toEqual(
      [
        [mine[0]!.study.studyInstanceUID, 2, 3],
        [mine[1]!.study.studyInstanceUID, 1, 1],
      ].sort(),
    );
    // The grant, listed as a FHIR Consent; the audit entries with their proofs.
    expect(report.consents.resourceType).toBe('Bundle');
    expect(report.consents.entry.map((e) => e.resource.resourceType)).toEqual(['Consent']);
    expect(JSON.stringify(report.consents)).toContain(grantId);
    expect(report.audit.entries.length).toBeGreaterThan(0);
    expect(report.audit.entries.every((e) => Array.isArray(e.proof) && e.record !== null)).toBe(true);
    expect(JSON.parse(await readFile(join(report.saved, 'consents.fhir.json'), 'utf8'))).toEqual(report.consents);
    // Imported again (as after a crash in its second pass): nothing new, nothing broken. Without
    // --trust, on a node with no chain: the receipts are kept, said to be unverified.
    const again = await run(['import', archive, '--json', '--data-dir', bDir]);
    expect(again.code, again.stderr).toBe(0);
    const second = JSON.parse(again.stdout) as ImportJson;
    expect(second.studies.map((s) => s.versions)).toEqual([0, 0]);
    expect(second.verified.receipts).toMatchObject({ carried: 3, checked: 0, unverified: expect.stringMatching(/no chain/) });
    expect(second.verified.audit.proofs).toBe(report.audit.entries.length);

    // B serves the patient's instances byte for byte; the other patient's study did not travel.
    const b = await startNodeWithTester(
      resolveNodeOptions({ port: '0', 'data-dir': bDir, 'chunk-size': '4096', 'dimse-port': 'off' }, {}),
      createLogger('silent'),
    );
    try {
      for (const { study, bytes } of mine) {
        for (const [i, inst] of study.instances.entries()) {
          const r = await retrieve(`${b.url}/studies/${study.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}`);
          expect(r.status).toBe(200);
          expect(r.parts[0]!.body.equals(bytes[i]!)).toBe(true);
        }
        expect(await verifyStudy(b.vault, study.studyInstanceUID)).toMatchObject({ ok: true });
        expect(b.vault.catalog.latestVersion(study.studyInstanceUID)!.root).toBe(a.vault.catalog.latestVersion(study.studyInstanceUID)!.root);
      }
      expect((await retrieve(`${b.url}/studies/${theirs.studyInstanceUID}`)).status).toBe(404);
    } finally {
      await b.close();
    }
    // Every receipt verifies on the chain, for a version root B now holds.
    expect(report.receipts).toHaveLength(3);
    for (const { receipt } of report.receipts) {
      const v = await verifyReceipt({ receipt, client: chain.client(0) });
      expect(v.failed, JSON.stringify(v.checks)).toEqual([]);
    }

    // Erasure on B reaches what the imports kept beside the data: one study erased drops its
    // receipts (each carries the version's CID and salt); the patient's last study erased removes
    // the import folders whole (consents and audit entries name the patient).
    const [first, last] = mine.map((m) => m.study.studyInstanceUID) as [string, string];
    const folders = [report.saved, second.saved];
    const erasedOne = await run(['erase', '--study', first, '--reason', 'test', '--data-dir', bDir]);
    expect(erasedOne.code, erasedOne.stderr).toBe(0);
    for (const dir of folders) {
      const kept = JSON.parse(await readFile(join(dir, 'receipts.json'), 'utf8')) as Array<{ study: string }>;
      expect(kept.map((r) => r.study)).toEqual([last]);
    }
    const erasedAll = await run(['erase', '--patient', PATIENT, '--reason', 'test', '--data-dir', bDir]);
    expect(erasedAll.code, erasedAll.stderr).toBe(0);
    for (const dir of folders) expect(existsSync(dir)).toBe(false);
  }, 240_000);

  it('refuses an archive sealed to another node, and leaves nothing', async () => {
    const bDir = await tempDir();
    const someoneElse = join(await tempDir(), 'other.pem');
    await writeFile(someoneElse, generateKeyPairSync('x25519').publicKey.export({ type: 'spki', format: 'pem' }));
    const archive = join(await tempDir(), 'patient.car');
    expect((await run(['export', '--patient', PATIENT, archive, '--to', someoneElse, '--data-dir', aDir])).code).toBe(0);
    await run(['public-key', '--data-dir', bDir]);
    const refused = await run(['import', archive, '--data-dir', bDir]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/CAR_INVALID.*sealed to another node/);
    await nothingImported(bDir);
  }, 120_000);

  it("the patient asks through the API: prepared, downloaded by the patient's session, imported on B; another patient's ID is refused", async () => {
    const bDir = await tempDir();
    const pem = await readFile(await publicKeyFile(bDir), 'utf8');
    const api = a.url.replace(/\/dicom-web$/, '/api');
    const session = a.vault.identity.issueToken('patient', account);
    const other = a.vault.identity.issueToken('patient', a.vault.identity.createPatient([{ id: OTHER, issuer: null }]));
    const call = (method: string, path: string, token: string, body?: unknown): Promise<Response> =>
      fetch(`${api}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });

    // Another patient's ID: answered as one unknown, nothing prepared.
    const refused = await call('POST', '/patient/exports', session, { recipientKey: pem, patientId: OTHER });
    expect(refused.status).toBe(404);
    expect(((await refused.json()) as { code: string }).code).toBe('NOT_FOUND');
    // A key that is not an X25519 public key: 400.
    expect((await call('POST', '/patient/exports', session, { recipientKey: 'not a key' })).status).toBe(400);

    const asked = await call('POST', '/patient/exports', session, { recipientKey: pem });
    expect(asked.status).toBe(202);
    const job = (await asked.json()) as { id: string; state: string };
    expect(job.state).toBe('preparing');
    let state = job.state;
    for (let i = 0; i < 600 && state === 'preparing'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      state = ((await (await call('GET', `/patient/exports/${job.id}`, session)).json()) as { state: string }).state;
    }
    expect(state).toBe('ready');
    // Another patient's session does not see it.
    expect((await call('GET', `/patient/exports/${job.id}`, other)).status).toBe(404);
    expect((await call('GET', `/patient/exports/${job.id}/archive`, other)).status).toBe(404);

    const download = await call('GET', `/patient/exports/${job.id}/archive`, session);
    expect(download.status).toBe(200);
    expect(download.headers.get('content-type')).toBe('application/vnd.ipld.car');
    const archive = join(await tempDir(), 'from-api.car');
    await writeFile(archive, Buffer.from(await download.arrayBuffer()));
    const imported = await run(['import', archive, '--json', '--data-dir', bDir]);
    expect(imported.code, imported.stderr).toBe(0);
    const fromApi = JSON.parse(imported.stdout) as ImportJson;
    expect(fromApi.studies.map((s) => s.study).sort()).toEqual(mine.map((m) => m.study.studyInstanceUID).sort());
    expect(fromApi.verified.audit.proofs).toBeGreaterThan(0);
  }, 180_000);

  it('refuses forged evidence in a well-sealed archive, each with its reason, and imports nothing', async () => {
    const other = generateKeyPairSync('ed25519');
    const cases: Array<{ what: string; alter: (c: PatientArchiveContents) => void; reason: RegExp; args?: string[] }> = [
      {
        what: 'a receipt with its time moved an hour back',
        alter: (c) => {
          const real = c.receiptOf;
          let first = true;
          c.receiptOf = (root) => {
            const r = real(root) as { time: number } | undefined;
            if (r === undefined || !first) return r;
            first = false;
            return { ...r, time: r.time - 3600 };
          };
        },
        reason: /CAR_INVALID.*receipt 1 \(study version \S+\) does not verify on the chain \(.*time/,
      },
      {
        what: "an audit entry's inclusion proof altered",
        alter: (c) => {
          const e = (c.audit as PortableAudit).entries[0]!;
          e.proof = [flip(e.proof![0]!), ...e.proof!.slice(1)];
        },
        reason: /CAR_INVALID.*audit: entry \d+: its inclusion proof does not lead to the signed head/,
      },
      {
        what: 'the head signed by another key',
        alter: (c) => {
          const head = (c.audit as PortableAudit).head!;
          head.signature = sign(null, Buffer.from(head.body), generateKeyPairSync('ed25519').privateKey).toString('base64');
        },
        reason: /CAR_INVALID.*audit: the head is not signed by the archive's audit key/,
      },
      {
        what: "an audit entry's details rewritten beside its leaf",
        alter: (c) => {
          const e = (c.audit as PortableAudit).entries.find((x) => x.record !== null)!;
          e.record = { ...e.record!, who: { id: 'someone-else' } };
        },
        reason: /CAR_INVALID.*audit: entry \d+: the details shown are not those sealed in its leaf/,
      },
      {
        what: "another key named as the audit key and the head signed by it, where the sender's key is pinned",
        alter: (c) => {
          const audit = c.audit as PortableAudit;
          audit.key.publicKey = publicKeyText(other.publicKey);
          audit.head!.signature = sign(null, Buffer.from(audit.head!.body), other.privateKey).toString('base64');
        },
        reason: /CAR_INVALID.*audit: the audit key is not the sending node's pinned key/,
        args: ['--audit-key', publicKeyText(a.vault.audit.log.publicKey)],
      },
    ];
    for (const { what, alter, reason, args = [] } of cases) {
      const bDir = await tempDir();
      const file = await forged(bDir, alter);
      const refused = await run(['import', file, '--trust', trustFile, '--rpc', chain.rpcUrl, ...args, '--data-dir', bDir]);
      expect(refused.code, what).toBe(1);
      expect(refused.stderr, what).toMatch(reason);
      await nothingImported(bDir);
    }
    // The same path with nothing altered imports: the refusals above are the alterations'.
    const bDir = await tempDir();
    const sound = await run(['import', await forged(bDir, () => undefined), '--json', '--trust', trustFile, '--rpc', chain.rpcUrl, '--data-dir', bDir]);
    expect(sound.code, sound.stderr).toBe(0);
    expect((JSON.parse(sound.stdout) as ImportJson).verified.receipts.checked).toBe(3);
  }, 240_000);

  it('writes plain DICOM Part 10 files for a provider without dicom-vault', async () => {
    const out = await tempDir();
    const r = await run(['export', '--patient', PATIENT, out, '--dicom', '--json', '--data-dir', aDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ studies: 2, instances: 4 });
    for (const { study, bytes } of mine)
      for (const [i, inst] of study.instances.entries())
        expect((await readFile(join(out, study.studyInstanceUID, inst.seriesInstanceUID, `${inst.sopInstanceUID}.dcm`))).equals(bytes[i]!)).toBe(true);
  }, 120_000);
});
