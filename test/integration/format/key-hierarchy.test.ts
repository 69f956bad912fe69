// The key hierarchy of src/format/keys.ts on a real node: a key per patient wrapping its studies'
// keys, rows bound to whom they belong to (swapped rows fail to open), and the migration of a
// data directory written by release 0.1 (commit 2fe1005: test/integration/fixtures/README.md).
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { KEY_DB_FILE } from '../../../src/format/keys.ts';
import { bytesOf } from '../../support/generated.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const FIXTURE = join(import.meta.dirname, '../fixtures/data-dir-2fe1005.tar.gz');
/** What the fixture holds (its README): seeds and patients of its three studies, two instances each, 32x32. */
const FIXTURE_STUDIES = [
  { seed: 7001, patientId: 'PAT-ALPHA' },
  { seed: 7002, patientId: 'PAT-ALPHA' },
  { seed: 7003, patientId: 'PAT-BETA' },
];

const dirs: string[] = [];
const nodes: TestNode[] = [];

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-keyh-'));
  dirs.push(dir);
  return dir;
}

async function start(dataDir: string): Promise<TestNode> {
  const node = await startTestNode({ dataDir, chunkSize: 4096 });
  nodes.push(node);
  return node;
}

async function stop(node: TestNode): Promise<void> {
  nodes.splice(nodes.indexOf(node), 1);
  await node.stop();
}

function withKeyDb<T>(dir: string, fn: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(join(dir, KEY_DB_FILE));
  try {
    db.exec('PRAGMA busy_timeout = 5000');
    return fn(db);
  } finally {
    db.close();
  }
}

interface Stored {
  url: string;
  bytes: Buffer;
  studyInstanceUID: string;
}

async function storeStudy(node: TestNode, seed: number, patientId: string): Promise<Stored> {
  const study = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed, patientId });
  const i = study.instances[0]!;
  const bytes = await bytesOf(i);
  expect((await stow(node.url, [bytes])).status).toBe(200);
  return {
    url: `/studies/${study.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`,
    bytes,
    studyInstanceUID: study.studyInstanceUID,
  };
}

async function codeOf(node: TestNode, path: string): Promise<string | number> {
  const r = await retrieve(`${node.url}${path}`);
  return r.status === 200 ? 200 : (JSON.parse(r.raw.toString()) as { code: string }).code;
}

describe('key hierarchy', () => {
  it("files a new study's key under its patient's key, one patient key per Patient ID and issuer", async () => {
    const dir = await freshDir();
    const node = await start(dir);
    const a1 = await storeStudy(node, 8101, 'HIER-A');
    const a2 = await storeStudy(node, 8102, 'HIER-A');
    const b = await storeStudy(node, 8103, 'HIER-B');
    const rows = withKeyDb(dir, (db) => db.prepare('SELECT study_uid, patient_id, wrap, length(anchor_salt) AS salt FROM study_keys ORDER BY study_uid').all());
    expect(rows).toEqual(
      [
        { study_uid: a1.studyInstanceUID, patient_id: 'HIER-A', wrap: 2, salt: 32 },
        { study_uid: a2.studyInstanceUID, patient_id: 'HIER-A', wrap: 2, salt: 32 },
        { study_uid: b.studyInstanceUID, patient_id: 'HIER-B', wrap: 2, salt: 32 },
      ].sort((x, y) => x.study_uid.localeCompare(y.study_uid)),
    );
    const patients = withKeyDb(dir, (db) => db.prepare('SELECT patient_id FROM patient_keys ORDER BY patient_id').all());
    expect(patients).toEqual([{ patient_id: 'HIER-A' }, { patient_id: 'HIER-B' }]);
    for (const s of [a1, a2, b]) expect((await retrieve(`${node.url}${s.url}`)).parts[0]!.body.equals(s.bytes)).toBe(true);
  });

  it('refuses to open study keys whose rows were swapped (KEY_UNWRAP_FAILED), and opens them again once put back', async () => {
    const dir = await freshDir();
    let node = await start(dir);
    const a = await storeStudy(node, 8201, 'SWAP-A');
    const a2 = await storeStudy(node, 8202, 'SWAP-A');
    const b = await storeStudy(node, 8203, 'SWAP-B');
    await stop(node);
    type Row = { key_id: string; wrapped: Uint8Array; anchor_salt: Uint8Array };
    const rowOf = (db: DatabaseSync, s: Stored): Row =>
      db.prepare('SELECT key_id, wrapped, anchor_salt FROM study_keys WHERE study_uid = ?').get(s.studyInstanceUID) as unknown as Row;
    const put = (db: DatabaseSync, s: Stored, r: Row): void => {
      db.prepare('UPDATE study_keys SET key_id = ?, wrapped = ?, anchor_salt = ? WHERE study_uid = ?').run(
        `${r.key_id}`,
        r.wrapped,
        r.anchor_salt,
        s.studyInstanceUID,
      );
    };
    const swap = (x: Stored, y: Stored): void =>
      withKeyDb(dir, (db) => {
        const rx = rowOf(db, x);
        const ry = rowOf(db, y);
        // key_id is UNIQUE: park one first.
        db.prepare('UPDATE study_keys SET key_id = ? WHERE study_uid = ?').run('parked', x.studyInstanceUID);
        put(db, y, rx);
        put(db, x, ry);
      });

    // Two studies of one patient (same wrapping key): only the bound study UID tells them apart.
    swap(a, a2);
    node = await start(dir);
    expect(await codeOf(node, a.url)).toBe('KEY_UNWRAP_FAILED');
    expect(await codeOf(node, a2.url)).toBe('KEY_UNWRAP_FAILED');
    expect(await codeOf(node, b.url)).toBe(200);
    await stop(node);
    swap(a, a2);

    // Studies of two patients.
    swap(a, b);
    node = await start(dir);
    expect(await codeOf(node, a.url)).toBe('KEY_UNWRAP_FAILED');
    expect(await codeOf(node, b.url)).toBe('KEY_UNWRAP_FAILED');
    await stop(node);
    swap(a, b);

    // A study row moved to another patient (its patient columns rewritten): it no longer opens.
    withKeyDb(dir, (db) => db.prepare("UPDATE study_keys SET patient_id = 'SWAP-B' WHERE study_uid = ?").run(a.studyInstanceUID));
    node = await start(dir);
    expect(await codeOf(node, a.url)).toBe('KEY_UNWRAP_FAILED');
    await stop(node);
    withKeyDb(dir, (db) => db.prepare("UPDATE study_keys SET patient_id = 'SWAP-A' WHERE study_uid = ?").run(a.studyInstanceUID));

    // Patient keys swapped: every study of both patients stops opening.
    withKeyDb(dir, (db) => {
      const pa = db.prepare("SELECT key_id, wrapped FROM patient_keys WHERE patient_id = 'SWAP-A'").get() as { key_id: string; wrapped: Uint8Array };
      const pb = db.prepare("SELECT key_id, wrapped FROM patient_keys WHERE patient_id = 'SWAP-B'").get() as { key_id: string; wrapped: Uint8Array };
      db.prepare("UPDATE patient_keys SET key_id = 'parked' WHERE patient_id = 'SWAP-A'").run();
      db.prepare("UPDATE patient_keys SET key_id = ?, wrapped = ? WHERE patient_id = 'SWAP-B'").run(pa.key_id, pa.wrapped);
      db.prepare("UPDATE patient_keys SET key_id = ?, wrapped = ? WHERE patient_id = 'SWAP-A'").run(pb.key_id, pb.wrapped);
    });
    node = await start(dir).catch((err: unknown) => {
      throw err;
    });
    expect(await codeOf(node, a.url)).toBe('KEY_UNWRAP_FAILED');
    expect(await codeOf(node, b.url)).toBe('KEY_UNWRAP_FAILED');
    await stop(node);
    withKeyDb(dir, (db) => {
      const pa = db.prepare("SELECT key_id, wrapped FROM patient_keys WHERE patient_id = 'SWAP-A'").get() as { key_id: string; wrapped: Uint8Array };
      const pb = db.prepare("SELECT key_id, wrapped FROM patient_keys WHERE patient_id = 'SWAP-B'").get() as { key_id: string; wrapped: Uint8Array };
      db.prepare("UPDATE patient_keys SET key_id = 'parked' WHERE patient_id = 'SWAP-A'").run();
      db.prepare("UPDATE patient_keys SET key_id = ?, wrapped = ? WHERE patient_id = 'SWAP-B'").run(pa.key_id, pa.wrapped);
      db.prepare("UPDATE patient_keys SET key_id = ?, wrapped = ? WHERE patient_id = 'SWAP-A'").run(pb.key_id, pb.wrapped);
    });

    // Everything put back: all three read again, byte for byte.
    node = await start(dir);
    for (const s of [a, a2, b]) {
      const r = await retrieve(`${node.url}${s.url}`);
      expect(r.status).toBe(200);
      expect(r.parts[0]!.body.equals(s.bytes)).toBe(true);
    }
  });

  it('migrates a data directory written by release 0.1 on start: same data keys, now under patient keys; every instance reads back', async () => {
    const dir = await freshDir();
    execFileSync('tar', ['xzf', FIXTURE, '-C', dir]);
    const before = withKeyDb(
      dir,
      (db) => db.prepare('SELECT study_uid, key_id FROM study_keys ORDER BY study_uid').all() as Array<{ study_uid: string; key_id: string }>,
    );
    expect(before).toHaveLength(3);
    // Release 0.1's schema: no patient table, no wrap column.
    expect(withKeyDb(dir, (db) => db.prepare('PRAGMA user_version').get())).toEqual({ user_version: 1 });

    const node = await start(dir);
    const after = withKeyDb(dir, (db) =>
      db.prepare('SELECT study_uid, key_id, patient_id, wrap, length(anchor_salt) AS salt FROM study_keys ORDER BY study_uid').all(),
    ) as Array<{ study_uid: string; key_id: string; patient_id: string; wrap: number; salt: number }>;
    // The same keys (ids unchanged: no block was re-encrypted), each now under its patient.
    expect(after.map((r) => [r.study_uid, r.key_id])).toEqual(before.map((r) => [r.study_uid, r.key_id]));
    expect(after.every((r) => r.wrap === 2 && r.salt === 32)).toBe(true);
    const patients = withKeyDb(dir, (db) => db.prepare('SELECT patient_id FROM patient_keys ORDER BY patient_id').all());
    expect(patients).toEqual([{ patient_id: 'PAT-ALPHA' }, { patient_id: 'PAT-BETA' }]);

    for (const f of FIXTURE_STUDIES) {
      const study = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: f.seed, patientId: f.patientId });
      expect(after.find((r) => r.study_uid === study.studyInstanceUID)?.patient_id).toBe(f.patientId);
      for (const i of study.instances) {
        const r = await retrieve(`${node.url}/studies/${study.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`);
        expect(r.status).toBe(200);
        expect(r.parts[0]!.body.equals(await bytesOf(i))).toBe(true);
      }
    }
    // Started again: nothing left to migrate, and the keys still open.
    await stop(node);
    const again = await start(dir);
    const study = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 7003, patientId: 'PAT-BETA' });
    const i = study.instances[1]!;
    expect((await retrieve(`${again.url}/studies/${study.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`)).status).toBe(200);
  });
});
