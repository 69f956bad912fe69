// Erasure on a real node (issue 25): a patient erased by the operator's command, then the proof
// that it is gone: a scan of every file under the data directory finds none of the patient's
// names, IDs, UIDs or pixel bytes; blocks copied out before cannot be decrypted with anything
// the node still holds; the certificate is signed and names no UID; the other patient's studies
// still read and verify.
import { generateKeyPairSync } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { CID } from 'multiformats/cid';
import { afterEach, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { publicKeyOf, loadSigningKey, SIGNING_KEY_FILE, verifyCertificate, type ErasureCertificate } from '../../../src/erasure/certificate.ts';
import { ERASURE_DB_FILE } from '../../../src/erasure/store.ts';
import { decodeInstanceNode, decodeStudyManifest, openStudyEnvelope } from '../../../src/format/dag.ts';
import { KEY_DB_FILE } from '../../../src/format/keys.ts';
import { IDENTITY_DB_FILE } from '../../../src/identity/store.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
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

async function start(): Promise<TestNode> {
  const node = await startTestNode({ chunkSize: 4096 });
  nodes.push(node);
  return node;
}

interface StoredStudy {
  studyInstanceUID: string;
  patientId: string;
  /** Every UID of the study, and 64 bytes from the middle of each instance (pixel data, in clear). */
  needles: Array<[string, Buffer]>;
  urls: string[];
  bytes: Buffer[];
}

async function storeStudy(node: TestNode, seed: number, patientId: string, instances = 2): Promise<StoredStudy> {
  const study = planStudy({ kind: 'single', instances, rows: 64, columns: 64, seed, patientId });
  const bytes: Buffer[] = [];
  const needles: Array<[string, Buffer]> = [
    ['Patient ID', Buffer.from(patientId)],
    ["patient's name", Buffer.from(`BENCH^${patientId}`)],
    ['Study Instance UID', Buffer.from(study.studyInstanceUID)],
  ];
  const urls: string[] = [];
  for (const i of study.instances) {
    const b = await bytesOf(i);
    bytes.push(b);
    needles.push(['Series Instance UID', Buffer.from(i.seriesInstanceUID)], ['SOP Instance UID', Buffer.from(i.sopInstanceUID)]);
    needles.push(['pixel bytes', b.subarray(b.length - 4096, b.length - 4032)]);
    urls.push(`/studies/${study.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`);
  }
  expect((await stow(node.url, bytes)).status).toBe(200);
  return { studyInstanceUID: study.studyInstanceUID, patientId, needles, urls, bytes };
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out;
}

/** Every (file, needle) where a needle occurs in a file under `dir`: WAL and shm files, free pages, blocks, everything. */
async function scan(dir: string, needles: Array<[string, Buffer]>): Promise<string[]> {
  const found: string[] = [];
  for (const f of await filesUnder(dir)) {
    const content = await readFile(f);
    for (const [what, n] of needles) if (content.includes(n)) found.push(`${what} in ${f.slice(dir.length + 1)}`);
  }
  return found;
}

describe('erasing a patient', () => {
  it('leaves nothing of them in any file of the data directory, nothing decryptable, a signed certificate; the other patient is untouched', async () => {
    const node = await start();
    const gone = await storeStudy(node, 9101, 'ERASE-ME-0001');
    const gone2 = await storeStudy(node, 9102, 'ERASE-ME-0001', 1);
    const kept = await storeStudy(node, 9103, 'KEEP-ME-0002');
    const needles = [...gone.needles, ...gone2.needles];
    // The scan finds what is there: before the erasure every name, ID and UID is in some file
    // (the catalog). Pixel bytes are in none even then: blocks hold them encrypted.
    const before = await scan(node.dataDir, needles);
    for (const [what] of needles)
      expect(
        before.some((f) => f.startsWith(what)),
        what,
      ).toBe(what !== 'pixel bytes');

    // Blocks copied out before the erasure (as a CAR export or an IPFS peer would hold them).
    const rootOf = (s: StoredStudy): CID => CID.parse(node.vault.catalog.latestVersion(s.studyInstanceUID)!.root);
    const copied = [rootOf(gone), rootOf(gone2)].map(async (cid) => ({ cid, bytes: await node.vault.store.get(cid) }));
    const manifests = await Promise.all(copied);
    const salt = Buffer.from(node.vault.keys.anchorSalt(gone.studyInstanceUID)!);
    needles.push(['anchor salt', salt]);

    // The patient's account: a key file, a passkey, an enrollment code, a session. And one
    // account bound to both patients (a guardian's, say): it loses the erased ID only.
    const identity = node.vault.identity;
    const account = identity.createPatient([{ id: 'ERASE-ME-0001', issuer: null }]);
    const keyFile = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    identity.addPatientKey(account, { keyId: 'key-file-of-erased', kind: 'ed25519', publicKey: keyFile });
    identity.addPatientKey(account, {
      keyId: 'passkey-of-erased',
      kind: 'webauthn',
      publicKey: 'pQECAyYgASFYIPASSKEYOFERASED',
      credentialId: 'CREDIDOFERASED',
      counter: 1,
    });
    identity.createEnrollment(account, new Date(Date.now() + 60_000));
    const session = identity.issueToken('patient', account);
    const both = identity.createPatient([
      { id: 'ERASE-ME-0001', issuer: null },
      { id: 'KEEP-ME-0002', issuer: null },
    ]);
    expect((await fetch(new URL('/api/patient/grants', node.url), { headers: { authorization: `Bearer ${session}` } })).status).toBe(200);
    needles.push(['account id', Buffer.from(account)], ['passkey', Buffer.from('PASSKEYOFERASED')], ['credential id', Buffer.from('CREDIDOFERASED')]);
    needles.push(['key file', Buffer.from(keyFile.split('\n')[1]!)]);

    // The operator's command, beside the running node.
    const cli = await run(['erase', '--patient', 'ERASE-ME-0001', '--reason', 'patient request (Art. 17)', '--json', '--data-dir', node.dataDir]);
    expect(cli.code, cli.stderr).toBe(0);
    const cert = JSON.parse(cli.stdout) as ErasureCertificate;

    // The certificate: signed by this node's key, both studies by commitment, no UID, no Patient ID.
    expect(cert).toMatchObject({ v: 'dicom-vault-erasure/1', scope: 'patient', patientKey: true, reason: 'patient request (Art. 17)' });
    expect(cert.studies).toHaveLength(2);
    expect(cert.studies.every((s) => /^[0-9a-f]{64}$/.test(s.commitment) && s.blocks > 0)).toBe(true);
    expect(verifyCertificate(cert, publicKeyOf(loadSigningKey(join(node.dataDir, SIGNING_KEY_FILE))))).toBe(true);
    expect(verifyCertificate({ ...cert, erasedAt: '2020-01-01T00:00:00.000Z' }, cert.signature.publicKey)).toBe(false);
    for (const [, n] of needles) expect(Buffer.from(cli.stdout).includes(n)).toBe(false);

    // The running node answers as for a study never stored, at once.
    for (const url of gone.urls) expect((await retrieve(`${node.url}${url}`)).status).toBe(404);
    const qido = await fetch(`${node.url}/studies?PatientID=ERASE-ME-0001`);
    expect(qido.status === 204 || ((await qido.json()) as unknown[]).length === 0).toBe(true);

    // The account is gone with its keys and sessions: the session no longer opens the API; the
    // shared account keeps its other Patient ID only.
    expect(identity.lookupToken(session)).toBeUndefined();
    expect(identity.patientKeys(account)).toEqual([]);
    expect(identity.patientIds(account)).toEqual([]);
    expect(identity.accountsFor({ id: 'ERASE-ME-0001', issuer: null })).toEqual([]);
    expect(identity.patientIds(both)).toEqual([{ id: 'KEEP-ME-0002', issuer: null }]);
    expect((await fetch(new URL('/api/patient/grants', node.url), { headers: { authorization: `Bearer ${session}` } })).status).toBe(401);

    // Nothing left in any file under the data directory (databases, WAL and shm files, blocks, keys).
    await stopKeeping(node);
    expect(await scan(node.dataDir, needles)).toEqual([]);
    // The WALs of the databases that held the patient are empty.
    for (const db of [KEY_DB_FILE, 'catalog.db', ERASURE_DB_FILE, IDENTITY_DB_FILE]) {
      const wal = await readFile(join(node.dataDir, `${db}-wal`)).catch(() => Buffer.alloc(0));
      expect(wal.length, db).toBe(0);
    }

    // The copied blocks open with nothing the node still holds: every study key left, every patient key.
    const again = await startTestNode({ chunkSize: 4096, dataDir: node.dataDir });
    nodes.push(again);
    const db = new DatabaseSync(join(node.dataDir, KEY_DB_FILE));
    const studies = (db.prepare('SELECT study_uid FROM study_keys').all() as Array<{ study_uid: string }>).map((r) => r.study_uid);
    db.close();
    expect(studies).toEqual([kept.studyInstanceUID]);
    for (const { cid, bytes } of manifests) {
      const m = decodeStudyManifest(bytes, cid);
      expect(again.vault.keys.byKeyId(m.keyId)).toBeUndefined();
      for (const s of studies) expect(() => openStudyEnvelope(again.vault.keys.require(s).key, m)).toThrow();
    }

    // The other patient: reads byte for byte, verifies.
    for (const [i, url] of kept.urls.entries()) expect((await retrieve(`${again.url}${url}`)).parts[0]!.body.equals(kept.bytes[i]!)).toBe(true);
    expect((await verifyStudy(again.vault, kept.studyInstanceUID)).ok).toBe(true);
  });
});

describe('erasing a study whose instance lists its chunks through link nodes (format 2)', () => {
  it('deletes every block of it: chunks, link nodes, instance node, manifest', async () => {
    const node = await start();
    const listed = async (): Promise<Set<string>> => {
      const out = new Set<string>();
      for await (const cid of node.vault.store.list!()) out.add(cid.toString());
      return out;
    };
    const before = await listed();
    // 1,536 x 1,536 16-bit pixels at 4 KiB chunks: about 1,150 chunks, past the 1,024 links an
    // instance node holds, so they hang under link nodes.
    const study = planStudy({ kind: 'single', instances: 1, rows: 1536, columns: 1536, seed: 9201, patientId: 'ERASE-TREE-0003' });
    const bytes = await bytesOf(study.instances[0]!);
    expect((await stow(node.url, [bytes])).status).toBe(200);
    const inst = node.vault.catalog.getInstance(study.instances[0]!.sopInstanceUID)!;
    const nodeCid = CID.parse(inst.nodeCid);
    expect(decodeInstanceNode(await node.vault.store.get(nodeCid), nodeCid).depth).toBe(1);
    const stored = [...(await listed())].filter((c) => !before.has(c));
    expect(stored.length).toBeGreaterThan(Math.ceil(bytes.length / 4096) + 2);

    const cli = await run(['erase', '--study', study.studyInstanceUID, '--reason', 'test', '--json', '--data-dir', node.dataDir]);
    expect(cli.code, cli.stderr).toBe(0);
    const cert = JSON.parse(cli.stdout) as ErasureCertificate;
    expect(cert.studies[0]!.blocks).toBe(stored.length);
    const after = await listed();
    expect(stored.filter((c) => after.has(c))).toEqual([]);
  });
});

/** Stops a node but keeps its data directory (the test scans it). */
async function stopKeeping(node: TestNode): Promise<void> {
  nodes.splice(nodes.indexOf(node), 1);
  // startTestNode removes a temp dir it made on stop(): close the running parts only.
  await node.close();
  dirs.push(node.dataDir);
}
