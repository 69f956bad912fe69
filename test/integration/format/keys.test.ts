// The node's keys (src/format/keys.ts) seen from outside: the master key file, a wrong master key, a
// destroyed data key (crypto-shredding), and chunks moved to another position in an instance.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { CID } from 'multiformats/cid';
import { afterEach, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import * as dagCbor from '@ipld/dag-cbor';
import { decodeInstanceNode, encodeNode } from '../../../src/format/dag.ts';
import { KEY_DB_FILE, MASTER_KEY_FILE } from '../../../src/format/keys.ts';
import { CATALOG_FILE } from '../../../src/shell/vault.ts';
import { getVerified } from '../../../storage/verified.ts';
import { bytesOf } from '../../support/generated.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const dirs: string[] = [];
const nodes: TestNode[] = [];

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-keys-'));
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

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** Stores a 64x64 instance (three 4 KiB chunks) and returns what is needed to fetch it. */
async function storeOne(node: TestNode, seed: number): Promise<{ study: GeneratedStudy; bytes: Buffer; url: string }> {
  const study = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed });
  const bytes = await bytesOf(study.instances[0]!);
  expect((await stow(node.url, [bytes])).status).toBe(200);
  const i = study.instances[0]!;
  return { study, bytes, url: `${node.url}/studies/${study.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}` };
}

function errorOf(r: { status: number; raw: Buffer }): { code: string; message: string; details?: Record<string, unknown> } {
  expect(r.raw.length).toBeGreaterThan(0);
  return JSON.parse(r.raw.toString());
}

describe('keys', () => {
  it('creates the master key on first start: 32 bytes, mode 0600, kept across restarts', async () => {
    const dir = await freshDir();
    const node = await start(dir);
    const path = join(dir, MASTER_KEY_FILE);
    const st = await stat(path);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.size).toBe(32);
    const { url, bytes } = await storeOne(node, 901);
    await stop(node);

    // A key left readable by others is refused with the fix named (it may have leaked); fixed, it opens the data.
    await chmod(path, 0o644);
    await expect(start(dir)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining(`chmod 600 ${path}`) });
    await chmod(path, 0o600);
    const again = await start(dir);
    const back = await retrieve(url.replace(node.url, again.url));
    expect(back.status).toBe(200);
    expect(back.parts[0]!.body.equals(bytes)).toBe(true);
  });

  it('refuses to start with a master key file of the wrong size (CONFIG_INVALID)', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, MASTER_KEY_FILE), randomBytes(16), { mode: 0o600 });
    await expect(startTestNode({ dataDir: dir })).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('32 bytes') });
  });

  it('refuses to start under another master key (test/integration/faults/data-dir.test.ts has every case)', async () => {
    const dir = await freshDir();
    const node = await start(dir);
    await storeOne(node, 902);
    await stop(node);
    await writeFile(join(dir, MASTER_KEY_FILE), randomBytes(32), { mode: 0o600 });
    await expect(start(dir)).rejects.toMatchObject({ code: 'MASTER_KEY_MISMATCH' });
  });

  it('answers KEY_UNWRAP_FAILED (500) for a study whose wrapped key was altered in keys.db', async () => {
    const dir = await freshDir();
    const node = await start(dir);
    const { url, study } = await storeOne(node, 905);
    const other = await storeOne(node, 906);
    await stop(node);
    const db = new DatabaseSync(join(dir, KEY_DB_FILE));
    try {
      const row = db.prepare('SELECT wrapped FROM study_keys WHERE study_uid = ?').get(study.studyInstanceUID) as { wrapped: Uint8Array };
      const wrapped = Buffer.from(row.wrapped);
      wrapped[wrapped.length - 1]! ^= 1;
      db.prepare('UPDATE study_keys SET wrapped = ? WHERE study_uid = ?').run(wrapped, study.studyInstanceUID);
    } finally {
      db.close();
    }
    const again = await start(dir);
    const r = await retrieve(url.replace(node.url, again.url));
    expect(r.status).toBe(500);
    expect(errorOf(r).code).toBe('KEY_UNWRAP_FAILED');
    expect((await retrieve(other.url.replace(node.url, again.url))).status).toBe(200);
  });

  it("answers KEY_NOT_FOUND (500) with a clear reason once a study's data key row is destroyed, at once and after a restart", async () => {
    const dir = await freshDir();
    const node = await start(dir);
    const one = await storeOne(node, 903);
    const other = await storeOne(node, 904);
    expect((await retrieve(one.url)).status).toBe(200); // the key has been used (and may be cached)

    // Destroyed the way an operator's tool would: a DELETE on keys.db from another connection.
    const db = new DatabaseSync(join(dir, KEY_DB_FILE));
    try {
      db.exec('PRAGMA busy_timeout = 5000');
      const deleted = db.prepare('DELETE FROM study_keys WHERE study_uid = ?').run(one.study.studyInstanceUID);
      expect(deleted.changes).toBe(1);
    } finally {
      db.close();
    }

    const check = async (base: string): Promise<void> => {
      const r = await retrieve(one.url.replace(node.url, base));
      expect(r.status).toBe(500);
      const err = errorOf(r);
      expect(err.code).toBe('KEY_NOT_FOUND');
      expect(err.message).toMatch(/no data key for this study/i);
      // Other studies are untouched.
      const fine = await retrieve(other.url.replace(node.url, base));
      expect(fine.status).toBe(200);
      expect(fine.parts[0]!.body.equals(other.bytes)).toBe(true);
    };
    await check(node.url);
    await stop(node);
    await check((await start(dir)).url);
  });

  it("fails retrieval when an instance's chunks change places (the node's links are bound to its sealed envelope)", async () => {
    const dir = await freshDir();
    const node = await start(dir);
    const { study, url } = await storeOne(node, 905);
    const inst = node.vault.catalog.getInstance(study.instances[0]!.sopInstanceUID)!;
    const nodeCid = CID.parse(inst.nodeCid);
    const value = dagCbor.decode(await node.vault.store.get(nodeCid)) as { links: CID[] };
    expect(decodeInstanceNode(await node.vault.store.get(nodeCid), nodeCid).links.length).toBeGreaterThanOrEqual(3);
    const [c0, c1] = value.links as [CID, CID];

    // The same blocks, intact, listed in another order: an instance node a tamperer could build
    // from public links alone (no key is needed to read or write links).
    const swapped = encodeNode({ ...value, links: [c1, c0, ...value.links.slice(2)] });
    await node.vault.store.put(swapped.cid, swapped.bytes);
    const db = new DatabaseSync(join(dir, CATALOG_FILE));
    try {
      db.exec('PRAGMA busy_timeout = 5000');
      db.prepare('UPDATE instances SET node_cid = ? WHERE node_cid = ?').run(swapped.cid.toString(), inst.nodeCid);
    } finally {
      db.close();
    }
    // Every block still hashes to its CID: only its position changed.
    for (const c of [c0, c1, swapped.cid]) await expect(getVerified(node.vault.store, c)).resolves.toBeInstanceOf(Uint8Array);

    // Refused when the node is opened (its envelope's associated data is its fields), before any
    // chunk is read; a node re-sealed with the key would still fail at the chunks' tags
    // (test/integration/format/forgery.test.ts).
    const r = await retrieve(url);
    expect(r.status).toBe(500);
    const err = errorOf(r);
    expect(err.code).toBe('BLOCK_CORRUPT');
    expect(err.details?.cid).toBe(swapped.cid.toString());
  });
});
