// A node serving studies from a bucket of a real S3-compatible server (Swift's s3api on
// loopback, test/support/s3.ts): packs, a lost pack index rebuilt with `dicom-vault reindex`, gc,
// a missing block named, and the server being stopped in the middle of an ingest. That test stops
// the server, so this file runs on a Swift of its own (a fresh one, stopped after the file),
// never on the one the other S3 suites share; its tests run one after another.
import { DatabaseSync } from 'node:sqlite';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { CID } from 'multiformats/cid';
import { afterAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance, type GeneratedStudy } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { decodeInstanceNode } from '../../../src/format/dag.ts';
import { decodePack } from '../../../storage/s3/pack-format.ts';
import { S3BlockStore } from '../../../storage/s3/store.ts';
import { getVerified } from '../../../storage/verified.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { run } from '../../support/process.ts';
import { listKeys, s3Env, s3StoreOptions, startSwift, stopSwift } from '../../support/s3.ts';
import { admin, block, bucket, getObject, nextIndex, nextPrefix, proxy, until, useS3Suite } from '../../support/s3-suite.ts';
import { expectCode, expectSameBytes } from '../../support/storage-conformance.ts';
import { collectS3 } from '../../../src/maintenance/gc.ts';
import { startNodeWithTester } from '../../support/node.ts';

useS3Suite({ ownSwift: true });

describe('a node on --store s3', () => {
  const nodes: RunningNode[] = [];
  const dirs: string[] = [];

  /** The node's warning and error log lines (JSON), to check what an operator is told. */
  const logged: string[] = [];
  const logSink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logged.push(chunk.toString());
      done();
    },
  });

  async function startS3Node(env: Record<string, string>): Promise<RunningNode> {
    const dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-s3-node-'));
    dirs.push(dataDir);
    const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'chunk-size': '4096', 'dimse-port': 'off' }, env);
    const node = await startNodeWithTester(options, createLogger('warn', logSink));
    nodes.push(node);
    return node;
  }

  afterAll(async () => {
    for (const node of nodes) await node.close().catch(() => undefined);
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('stores a study in pack objects in the bucket and serves it back byte for byte', async () => {
    const prefix = nextPrefix('node');
    const node = await startS3Node(s3Env(bucket, { DICOM_VAULT_S3_PREFIX: prefix }));
    const study = small(11, 3);
    const parts = await Promise.all(study.instances.map(bytesOf));
    expect((await stow(node.url, parts)).status).toBe(200);
    await expectStudy(node, study, parts);
    const keys = await listKeys(admin, bucket, prefix);
    expect(keys.every((k) => k.startsWith(`${prefix}packs/`))).toBe(true);
    // 3 instances of about 3 KiB in 4 KiB chunks: chunks + 3 instance nodes + 1 manifest, in fewer objects.
    const blocks = [];
    for await (const cid of node.vault.store.list!()) blocks.push(cid);
    expect(blocks.length).toBeGreaterThanOrEqual(7);
    expect(keys.length).toBeLessThan(blocks.length);
    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect(report.problems).toEqual([]);
  });

  it('finds a study again after its pack index was lost: `dicom-vault reindex`, then verify passes and the node serves it', async () => {
    const prefix = nextPrefix('reindex');
    const env = s3Env(bucket, { DICOM_VAULT_S3_PREFIX: prefix });
    const node = await startS3Node(env);
    const study = small(13, 3);
    const parts = await Promise.all(study.instances.map(bytesOf));
    expect((await stow(node.url, parts)).status).toBe(200);
    const dataDir = node.vault.options.dataDir;
    await node.close();
    for (const f of ['s3-index.db', 's3-index.db-wal', 's3-index.db-shm']) await rm(join(dataDir, f), { force: true });
    const args = ['--data-dir', dataDir];

    const lost = await run(['verify', study.studyInstanceUID, ...args], env);
    expect(lost.code).not.toBe(0);
    expect(lost.stdout + lost.stderr).toMatch(/not found/);
    const refused = await run(['reindex', ...args], { ...env, DICOM_VAULT_STORE: 'fs' });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('reindex rebuilds the pack index of --store s3');

    const reindexed = await run(['reindex', '--json', ...args], env);
    expect(reindexed.stderr).toBe('');
    expect(reindexed.code).toBe(0);
    const report = JSON.parse(reindexed.stdout) as { objects: number; indexed: number; blocks: number };
    expect(report).toMatchObject({ known: 0, redundant: 0, gone: 0, unreadable: [] });
    expect(report.indexed).toBe(report.objects);
    expect(report.indexed).toBe((await listKeys(admin, bucket, `${prefix}packs/`)).length);
    expect(report.blocks).toBeGreaterThanOrEqual(7); // chunks, 3 instance nodes, the manifest

    const verified = await run(['verify', study.studyInstanceUID, ...args], env);
    expect(verified.stdout).toContain('OK: every block and instance verified');
    expect(verified.code).toBe(0);
    const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'dimse-port': 'off' }, env);
    const again = await startNodeWithTester(options, createLogger('warn', logSink));
    nodes.push(again);
    await expectStudy(again, study, parts);
    // gc beside it: everything is reached, nothing goes.
    const gc = await run(['gc', ...args], env);
    expect(gc.stderr).toBe('');
    expect(gc.code).toBe(0);
    expect(gc.stdout).toMatch(new RegExp(`^${report.blocks} blocks: ${report.blocks} reached from a study version, 0 unreached .* 0 deleted`, 'm'));
    expect(gc.stdout).toMatch(new RegExp(`packs in the bucket: ${report.indexed} \\(.*\\) before, ${report.indexed} \\(`));
  });

  describe('gc', () => {
    const DAY_MS = 24 * 3600 * 1000;

    /** A node holding one small study, and the roots gc keeps (every version of it). */
    async function nodeWithStudy(label: string, seed: number) {
      const prefix = nextPrefix(label);
      const node = await startS3Node(s3Env(bucket, { DICOM_VAULT_S3_PREFIX: prefix }));
      const study = small(seed, 3);
      const parts = await Promise.all(study.instances.map(bytesOf));
      expect((await stow(node.url, parts)).status).toBe(200);
      const roots = node.vault.catalog.versions(study.studyInstanceUID).map((v) => CID.parse(v.root));
      return { prefix, node, study, parts, roots, store: node.vault.store as S3BlockStore };
    }

    it('deletes the blocks no study reaches once old, with their packs, orphan packs included, and compacts a pack left mostly dead; the studies stay whole', async () => {
      const { prefix, node, study, parts, roots, store } = await nodeWithStudy('gc', 14);
      // Garbage that shares a pack with a second study's blocks: pending when that study's
      // request flushes, it goes into the same pack.
      const mixed = block(100_000);
      await store.put(mixed.cid, mixed.bytes, { durable: false });
      const study2 = small(16, 2);
      const parts2 = await Promise.all(study2.instances.map(bytesOf));
      expect((await stow(node.url, parts2)).status).toBe(200);
      const root2 = CID.parse(node.vault.catalog.versions(study2.studyInstanceUID)[0]!.root);
      roots.push(root2);
      const mixedPack = store.locate(mixed.cid).key;
      const node2 = CID.parse(node.vault.catalog.listInstances({ study: study2.studyInstanceUID })[0]!.nodeCid);
      expect(store.locate(node2).key).toBe(mixedPack);
      // Garbage: three blocks in a pack of their own (a flush seals the pending pack).
      const garbage = [block(30_000), block(30_000), block(30_000)];
      for (const g of garbage) await store.put(g.cid, g.bytes, { durable: false });
      await store.flush();
      const garbagePack = store.locate(garbage[0]!.cid).key;
      // An orphan pack: uploaded, never in this node's index (a crash between upload and landing).
      const orphan = block(20_000);
      const other = await S3BlockStore.open(s3StoreOptions(bucket, { prefix, indexPath: nextIndex() }));
      await other.put(orphan.cid, orphan.bytes);
      const orphanPack = other.locate(orphan.cid).key;
      await other.close();
      const packs = await listKeys(admin, bucket, `${prefix}packs/`);
      expect(packs).toEqual(expect.arrayContaining([garbagePack, orphanPack]));

      // Two days from now, with a grace of one hour: everything unreached is old.
      const report = await collectS3(store, roots, { graceS: 3600, now: Date.now() + 2 * DAY_MS });
      expect(report.reindexed).toMatchObject({ indexed: 1, blocks: 1, unreadable: [] });
      expect(report).toMatchObject({ young: 0, deleted: 5, deletedBytes: 3 * 30_000 + 20_000 + 100_000, otherRoots: 0 });
      expect(report.reachable).toBe(report.blocks - 5);
      // The pack of the second study lost its largest block: rewritten with the rest.
      expect(report.compacted).toMatchObject({ packs: 1, skipped: [] });
      expect(report.compacted.blocks).toBeGreaterThan(0);
      expect(report.compacted.bytesAfter).toBeLessThan(report.compacted.bytesBefore / 2);
      expect(report.packsAfter.packs).toBe(report.packsBefore.packs - 2);
      const left = await listKeys(admin, bucket, `${prefix}packs/`);
      for (const gone of [garbagePack, orphanPack, mixedPack]) expect(left).not.toContain(gone);
      expect(left).toContain(store.locate(node2).key);
      expect(left).toHaveLength(packs.length - 2);
      for (const g of [...garbage, orphan, mixed]) await expectCode(store.get(g.cid), 'BLOCK_NOT_FOUND');
      await expectStudy(node, study, parts);
      await expectStudy(node, study2, parts2);
      for (const s of [study, study2]) expect((await verifyStudy(node.vault, s.studyInstanceUID)).problems).toEqual([]);
      // Nothing left to take.
      expect(await collectS3(store, roots, { graceS: 3600, now: Date.now() + 2 * DAY_MS })).toMatchObject({ deleted: 0, young: 0, compacted: { packs: 0 } });
    });

    it('keeps unreached blocks younger than the grace period, and a block put again counts as new', async () => {
      const { node, roots, store } = await nodeWithStudy('gc-young', 15);
      const [old, again] = [block(10_000), block(10_000)];
      for (const b of [old, again]) await store.put(b.cid, b.bytes);
      // Both landed two days ago (the index says so), then `again` is put once more: a retry.
      const db = new DatabaseSync(join(node.vault.options.dataDir, 's3-index.db'));
      try {
        db.prepare('UPDATE packs SET created = created - ?').run(2 * DAY_MS);
      } finally {
        db.close();
      }
      await store.put(again.cid, again.bytes);
      const fresh = block(10_000);
      await store.put(fresh.cid, fresh.bytes, { durable: false });

      const report = await collectS3(store, roots, { graceS: 3600 });
      expect(report).toMatchObject({ young: 2, deleted: 1, deletedBytes: 10_000 });
      await expectCode(store.get(old.cid), 'BLOCK_NOT_FOUND');
      expectSameBytes(await getVerified(store, again.cid), again.bytes);
      expectSameBytes(await getVerified(store, fresh.cid), fresh.bytes);
    });
  });

  // With one block per pack (DICOM_VAULT_S3_PACK_BYTES=1) deleting a pack removes exactly the
  // chunk; with the default packing its neighbours go too, and each is named as missing.
  it.each([
    ['one block per pack', '1'],
    ['default packing', undefined],
  ])('names a block missing from the bucket (its pack deleted), in retrieval and in verify: %s', async (_label, packBytes) => {
    const prefix = nextPrefix('missing');
    const node = await startS3Node(
      s3Env(bucket, { DICOM_VAULT_S3_PREFIX: prefix, ...(packBytes === undefined ? {} : { DICOM_VAULT_S3_PACK_BYTES: packBytes }) }),
    );
    const study = small(12, 2);
    const parts = await Promise.all(study.instances.map(bytesOf));
    expect((await stow(node.url, parts)).status).toBe(200);
    const victim = node.vault.catalog.listInstances({ study: study.studyInstanceUID })[0]!;
    const nodeCid = CID.parse(victim.nodeCid);
    const chunk = decodeInstanceNode(await getVerified(node.vault.store, nodeCid), nodeCid).links[0]!;
    const store = node.vault.store as S3BlockStore;
    const packKey = store.locate(chunk).key;
    expect(packKey).toContain('/packs/');
    const inPack = decodePack(await getObject(packKey)).map((b) => b.cid.toString());
    if (packBytes === '1') expect(inPack).toEqual([chunk.toString()]);
    await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: packKey }));

    const res = await fetch(`${node.url}/studies/${study.studyInstanceUID}/series/${victim.seriesInstanceUID}/instances/${victim.sopInstanceUID}`, {
      headers: { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
    });
    if (res.status === 200) {
      // Headers went out before the block was read: the body must break off, never complete,
      // and the node's log must name the block.
      await expect(res.arrayBuffer()).rejects.toThrow();
      await until(() => logged.some((line) => inPack.some((cid) => line.includes(`block ${cid} not found`))));
    } else {
      expect(res.status).toBe(500);
      const body = (await res.json()) as { code: string; details: { cid: string } };
      expect(body.code).toBe('BLOCK_NOT_FOUND');
      expect(inPack).toContain(body.details.cid);
    }

    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect(report.ok).toBe(false);
    if (packBytes === '1') {
      expect(report.problems).toEqual([expect.objectContaining({ kind: 'missing', cid: chunk.toString() })]);
    } else {
      expect(report.problems.length).toBeGreaterThan(0);
      for (const problem of report.problems) {
        expect(problem).toMatchObject({ kind: 'missing' });
        expect(inPack).toContain((problem as { cid: string }).cid);
      }
    }
  });

  it('fails an ingest cleanly when the S3 server stops in the middle, and takes the study again once it is back', async () => {
    const prefix = nextPrefix('outage');
    // Through the proxy only to count uploads; the outage itself is the real server stopping.
    const node = await startS3Node(s3Env(bucket, { DICOM_VAULT_S3_PREFIX: prefix, DICOM_VAULT_S3_ENDPOINT: proxy.url, DICOM_VAULT_S3_MAX_ATTEMPTS: '3' }));
    const study = planStudy({ kind: 'single', instances: 40, rows: 64, columns: 64, seed: 13 });
    const parts = await Promise.all(study.instances.map(bytesOf));

    // Packed, the 40 small instances make only a few uploads (their flushes are group-committed),
    // so the server is stopped at the second pack upload, which is held back (as is every request
    // after it) until the server is surely down: it then meets a dead server, as do the retries.
    let puts = 0;
    let stopping: Promise<void> | undefined;
    proxy.rule = (req) => {
      if (stopping === undefined && req.method === 'PUT' && req.url.includes(`${prefix}packs/`) && ++puts === 2) stopping = stopSwift();
      return stopping === undefined ? undefined : { delayMs: 3_000 };
    };
    let status: number | string;
    try {
      status = (await stow(node.url, parts)).status;
    } catch (err) {
      status = `connection error: ${String(err)}`; // also an error the client sees
    } finally {
      proxy.rule = () => undefined;
    }
    expect(stopping, 'the server was stopped during the ingest').toBeDefined();
    await stopping;
    expect(status).not.toBe(200);

    // Whatever the node lists of the study, it can serve whole: nothing half-stored is visible.
    const listed = node.vault.catalog.listInstances({ study: study.studyInstanceUID });
    expect(listed.length).toBeLessThan(study.instances.length);

    // The failed ingest leaves none of its blocks: they are deleted from what the ingest recorded
    // as it wrote them, without reading link nodes or instance nodes back from the dead server,
    // so the pack writer tracks none as failed (such a block would fail every later flush). The
    // client may have been cut off before that clean-up ends (each delete's request to the dead
    // server is retried): about 4 s for the 123 blocks here.
    const store = node.vault.store as S3BlockStore;
    for (let i = 0; i < 600 && store.stats.failed > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(store.stats.failed).toBe(0);
    await startSwift();
    await untilS3Answers();
    if (listed.length === 0) {
      const left: string[] = [];
      for await (const cid of store.list()) left.push(cid.toString());
      expect(left).toEqual([]);
    }
    if (listed.length > 0) {
      const byUid = new Map(study.instances.map((inst, i) => [inst.sopInstanceUID, parts[i]!]));
      const back = await retrieve(`${node.url}/studies/${study.studyInstanceUID}`);
      expect(back.status).toBe(200);
      expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual(listed.map((l) => byUid.get(l.sopInstanceUID)!.toString('base64')).sort());
    }

    const again = await stow(node.url, parts);
    expect(again.status, JSON.stringify(again.body).slice(0, 2000)).toBe(200);
    await expectStudy(node, study, parts);
    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect(report.problems).toEqual([]);
  }, 300_000);
});

/** start.sh waits for the proxy only; the object and container servers may take a moment more. */
async function untilS3Answers(): Promise<void> {
  const probe = `${nextPrefix('probe')}ready`;
  for (let i = 0; ; i++) {
    try {
      await admin.send(new PutObjectCommand({ Bucket: bucket, Key: probe, Body: 'x' }));
      await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: probe }));
      return;
    } catch (err) {
      if (i >= 100) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function small(seed: number, instances: number): GeneratedStudy {
  return planStudy({ kind: 'single', instances, rows: 32, columns: 32, seed });
}

async function bytesOf(inst: GeneratedInstance): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of inst.open()) parts.push(p);
  return Buffer.concat(parts);
}

async function expectStudy(node: RunningNode, study: GeneratedStudy, parts: Buffer[]): Promise<void> {
  const back = await retrieve(`${node.url}/studies/${study.studyInstanceUID}`);
  expect(back.status).toBe(200);
  expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual(parts.map((b) => b.toString('base64')).sort());
}
