// `dicom-vault catalog rebuild` (issue 27): a node's catalog.db lost or damaged is made again, by
// the command run as its own process, from the study manifests in the block store, opened with
// keys.db and checked with anchor.db. The node then starts and answers QIDO and WADO exactly as
// before, with the same versions and roots; nothing already anchored is queued again; an erased
// study (its blocks back from a restored backup of the store) does not come back.
import { randomBytes } from 'node:crypto';
import { chmod, cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { sha256 } from 'multiformats/hashes/sha2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance } from '../../../bench/generate.ts';
import { ANCHOR_DB_FILE } from '../../../anchor/state.ts';
import { Catalog } from '../../../src/catalog/catalog.ts';
import { buildStudyManifest, decodeInstanceNode } from '../../../src/format/dag.ts';
import { KeyStore } from '../../../src/format/keys.ts';
import { FsBlockStore } from '../../../storage/fs.ts';
import { getVerified } from '../../../storage/verified.ts';
import { type NodeOptions, resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import type { CatalogRebuildReport } from '../../../src/transfer/catalog-rebuild.ts';
import { useSharedChain, type TestChain } from '../../support/anvil.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startNodeWithTester, startTestNode } from '../../support/node.ts';
import { run } from '../../support/process.ts';

const CATALOG = 'catalog.db';
let chain: TestChain;
let dir: string;
let dataDir: string;
let options: NodeOptions;
let node: RunningNode | undefined;

const single = (seed: number, patientId: string, studyInstanceUID?: string): { study: string; inst: GeneratedInstance } => {
  const plan = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed, patientId, ...(studyInstanceUID ? { studyInstanceUID } : {}) });
  return { study: plan.studyInstanceUID, inst: plan.instances[0]! };
};
const { study: STUDY_A, inst: A1 } = single(2701, 'REBUILD-A');
const A2 = single(2702, 'REBUILD-A', STUDY_A).inst;
const A3 = single(2703, 'REBUILD-A', STUDY_A).inst;
const planB = planStudy({ kind: 'multiframe', instances: 1, frames: 3, rows: 64, columns: 64, seed: 2704, patientId: 'REBUILD-B' });
const [STUDY_B, B] = [planB.studyInstanceUID, planB.instances[0]!];
const { study: STUDY_E, inst: E } = single(2705, 'REBUILD-GONE');
const KEPT = [STUDY_A, STUDY_B];

async function start(anchoring: boolean): Promise<RunningNode> {
  node = await startNodeWithTester(options, createLogger('silent'), anchoring ? { anchoring: true, anchorService: { pollIntervalMs: 20 } } : {});
  return node;
}
async function stop(): Promise<void> {
  await node?.close();
  node = undefined;
}

/** What a viewer sees of the kept studies: QIDO bodies at every level, metadata, and every instance's bytes. */
async function observe(url: string): Promise<Record<string, string>> {
  const seen: Record<string, string> = {};
  const text = async (path: string): Promise<void> => {
    const res = await fetch(`${url}${path}`);
    // Each start listens on another port, which the URLs the node hands out (RetrieveURL, BulkDataURI) carry.
    seen[path] = `${res.status} ${(await res.text()).replaceAll(new URL(url).origin, 'ORIGIN')}`;
  };
  await text('/studies?includefield=all');
  await text(`/studies?PatientID=REBUILD-GONE`);
  for (const study of KEPT) {
    await text(`/studies/${study}/series?includefield=all`);
    await text(`/studies/${study}/instances?includefield=all`);
    await text(`/studies/${study}/metadata`);
    const r = await retrieve(`${url}/studies/${study}`);
    seen[`/studies/${study}`] = `${r.status} ${r.parts.map((p) => p.body.toString('base64')).join(',')}`;
  }
  seen.gone = `${(await fetch(`${url}/studies/${STUDY_E}/metadata`)).status}`;
  return seen;
}

/** Versions (number, root, prev) of the kept studies, and the anchor queue, read from catalog.db. */
function catalogFacts(): { versions: unknown; queue: string[] } {
  const catalog = Catalog.open({ path: join(dataDir, CATALOG) });
  try {
    return {
      versions: KEPT.map((s) => catalog.versions(s).map((v) => [v.version, v.root, v.prev, v.instanceCount])),
      queue: catalog.pendingAnchors(1000).map((p) => p.root),
    };
  } finally {
    catalog.close();
  }
}

function anchorLeaves(): { leaves: number; batches: number } {
  const db = new DatabaseSync(join(dataDir, ANCHOR_DB_FILE), { readOnly: true });
  try {
    return {
      leaves: (db.prepare('SELECT count(*) AS n FROM leaves').get() as { n: number }).n,
      batches: (db.prepare('SELECT count(*) AS n FROM batches').get() as { n: number }).n,
    };
  } finally {
    db.close();
  }
}

async function rebuild(...args: string[]): Promise<{ code: number; report: CatalogRebuildReport & { movedAside: string | null }; stderr: string }> {
  const r = await run(['catalog', 'rebuild', '--data-dir', dataDir, '--json', ...args]);
  return { code: r.code, stderr: r.stderr, report: r.code <= 3 && r.stdout !== '' ? JSON.parse(r.stdout) : undefined };
}

let before: Record<string, string>;
let facts: { versions: unknown; queue: string[] };
let anchoredBefore: { leaves: number; batches: number };

beforeAll(async () => {
  chain = await useSharedChain();
  dir = await mkdtemp(join(tmpdir(), 'dv-catalog-rebuild-'));
  dataDir = join(dir, 'data');
  options = resolveNodeOptions(
    {
      port: '0',
      'data-dir': dataDir,
      'chunk-size': '4096',
      'dimse-port': 'off',
      'chain-rpc': chain.rpcUrl,
      'chain-id': String(chain.chainId),
      'chain-key-file': await chain.keyFile(3),
      contract: chain.contract,
      'anchor-batch-size': '4',
      'anchor-interval': '3600',
      confirmations: '1',
    },
    {},
  );
  // Four versions (A twice, B, E) anchored in one batch.
  const n = await start(true);
  const confirmed = new Promise((resolve) => n.anchoring!.service.once('confirmed', resolve));
  for (const inst of [A1, A2, B, E]) expect((await stow(n.url, [await bytesOf(inst)])).status).toBe(200);
  await confirmed;
  // A backup of the store, taken before E is erased.
  await cp(join(dataDir, 'blocks'), join(dir, 'blocks-backup'), { recursive: true });
  await n.vault.erasure.erase({ kind: 'study', studyInstanceUID: STUDY_E }, { requestedBy: 'test' });
  // The certificate is handed over to anchor.db: nothing of this run stays in the catalog's queue.
  for (let i = 0; i < 200 && n.vault.catalog.pendingAnchors(10).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  await stop();
  // A third version of A on a node without anchoring: it waits in the catalog's queue only.
  const m = await start(false);
  expect((await stow(m.url, [await bytesOf(A3)])).status).toBe(200);
  before = await observe(m.url);
  await stop();
  facts = catalogFacts();
  anchoredBefore = anchorLeaves();
}, 120_000);

afterAll(async () => {
  await stop();
  await rm(dir, { recursive: true, force: true });
});

describe('dicom-vault catalog rebuild', () => {
  it('is what the scenario says before the catalog is lost', () => {
    expect(before.gone).toBe('404');
    expect(before['/studies?includefield=all']).toMatch(/^200 /);
    const [a, b] = facts.versions as unknown[][];
    expect([a!.length, b!.length]).toEqual([3, 1]);
    // Only A's third version waits: the rest went to anchor.db (A1, A2, B, E, the certificate).
    expect(facts.queue).toEqual([(a![2] as unknown[])[1]]);
    expect(anchoredBefore).toEqual({ leaves: 5, batches: 1 });
  });

  it('rebuilds a deleted catalog.db; the node answers the same, versions and roots; nothing is anchored twice; the erased study stays erased', async () => {
    // The erased study's blocks come back with a restored backup of the store; its key does not.
    await cp(join(dir, 'blocks-backup'), join(dataDir, 'blocks'), { recursive: true, force: false, errorOnExist: false });
    for (const s of ['', '-wal', '-shm']) await rm(join(dataDir, `${CATALOG}${s}`), { force: true });
    // The node refuses to start over a store full of studies without its catalog.
    await expect(start(false)).rejects.toMatchObject({ code: 'DATA_DIR_INCOMPLETE' });

    const { code, report, stderr } = await rebuild();
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const [a, b] = facts.versions as unknown[][];
    expect(report.studies.map((s) => [s.studyInstanceUID, s.versions, s.anchored, s.queued]).sort()).toEqual(
      [
        [STUDY_A, 3, 2, 1],
        [STUDY_B, 1, 1, 0],
      ].sort(),
    );
    // A3 is in no anchor.db and followed by nothing: included (complete), and said so.
    expect(report.studies.find((s) => s.studyInstanceUID === STUDY_A)!.unconfirmedHead).toBe((a![2] as unknown[])[1]);
    expect(report.studies.find((s) => s.studyInstanceUID === STUDY_B)!.unconfirmedHead).toBeUndefined();
    // E: its manifest is back in the store, its key is not.
    expect(report.unreadable).toHaveLength(1);
    expect(report.unreadable[0]!.manifests).toBe(1);
    expect([report.failed, report.leftOut, report.anchoredMissing, report.keysWithoutManifest, report.damaged, report.movedAside]).toEqual([
      [],
      [],
      [],
      [],
      [],
      null,
    ]);
    expect(JSON.stringify(report)).not.toContain(STUDY_E);

    const rebuilt = catalogFacts();
    expect(rebuilt.versions).toEqual([a, b]);
    expect(rebuilt.queue).toEqual(facts.queue);

    // The node starts, with anchoring: it hands over A3 alone.
    const n = await start(true);
    expect(await observe(n.url)).toEqual(before);
    for (let i = 0; i < 200 && n.vault.catalog.pendingAnchors(10).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(n.vault.catalog.pendingAnchors(10)).toEqual([]);
    await stop();
    expect(anchorLeaves()).toEqual({ leaves: anchoredBefore.leaves + 1, batches: anchoredBefore.batches });
  }, 120_000);

  it('moves a damaged catalog.db aside (kept, not deleted) and rebuilds it', async () => {
    const garbage = Buffer.from('this is not a SQLite database, whatever its name says\n'.repeat(100));
    await writeFile(join(dataDir, CATALOG), garbage);
    await expect(start(false)).rejects.toMatchObject({ code: 'DATABASE_CORRUPT' });
    const { code, report } = await rebuild();
    expect(code).toBe(0);
    expect(report.movedAside).toMatch(/catalog\.db\.damaged-/);
    expect((await readFile(report.movedAside!)).equals(garbage)).toBe(true);
    expect((await readdir(dataDir)).filter((f) => f.startsWith(`${CATALOG}.rebuilding`))).toEqual([]);
    expect(catalogFacts().versions).toEqual(facts.versions);
    const n = await start(false);
    expect(await observe(n.url)).toEqual(before);
    await stop();
  }, 120_000);

  it('refuses to replace a catalog that opens and lists studies, unless --force (which keeps the old one aside)', async () => {
    const refused = await run(['catalog', 'rebuild', '--data-dir', dataDir]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/CONFIG_INVALID: .*opens and lists 2 studies/);
    const { code, report } = await rebuild('--force');
    expect(code).toBe(0);
    expect(report.movedAside).toMatch(/catalog\.db\.replaced-/);
    expect(existsSync(report.movedAside!)).toBe(true);
    expect(catalogFacts().versions).toEqual(facts.versions);
  }, 120_000);

  it('leaves out a version whose ingest wrote its manifest and crashed before the rest, and says so', async () => {
    const keys = KeyStore.open({ path: join(dataDir, 'keys.db'), masterKey: await readFile(join(dataDir, 'master.key')) });
    const dataKey = keys.require(STUDY_A);
    keys.close();
    const head = ((facts.versions as unknown[][])[0]![2] as unknown[])[1] as string;
    // The manifest of a fourth version on top of A3, whose instance node never reached the store.
    const lost = CID.create(1, dagCbor.code, await sha256.digest(randomBytes(32)));
    const orphan = buildStudyManifest(
      dataKey.key,
      { version: 4, prev: CID.parse(head), keyId: dataKey.keyId, fanout: 1024, tree: { depth: 0, count: 1, links: [lost] } },
      { studyInstanceUID: STUDY_A, createdAt: new Date().toISOString() },
    );
    const store = await FsBlockStore.open({ path: join(dataDir, 'blocks') });
    await store.put(orphan.cid, orphan.bytes);
    await store.close();
    const { code, report } = await rebuild('--force');
    expect(code).toBe(0);
    expect(report.leftOut).toEqual([{ studyInstanceUID: STUDY_A, root: orphan.cid.toString(), reason: expect.stringContaining(lost.toString()) }]);
    // A3 stays the head (anchored since the second test, and named as prev by the leftover).
    const a = report.studies.find((s) => s.studyInstanceUID === STUDY_A)!;
    expect([a.root, a.versions, a.anchored, a.queued, a.unconfirmedHead]).toEqual([head, 3, 3, 0, undefined]);
    expect(catalogFacts()).toEqual({ versions: facts.versions, queue: [] });
    const n = await start(false);
    expect(await observe(n.url)).toEqual(before);
    await stop();
  }, 120_000);

  it('names a study with a block missing, leaves it out whole (exit 3), and rebuilds the others', async () => {
    const catalog = Catalog.open({ path: join(dataDir, CATALOG) });
    const nodeCid = CID.parse(catalog.getInstance(B.sopInstanceUID)!.nodeCid);
    catalog.close();
    const store = await FsBlockStore.open({ path: join(dataDir, 'blocks') });
    const chunk = decodeInstanceNode(await getVerified(store, nodeCid), nodeCid).links[1]!;
    await store.delete(chunk);
    await store.close();
    const { code, report } = await rebuild('--force');
    expect(code).toBe(3);
    expect(report.failed).toEqual([
      { studyInstanceUID: STUDY_B, keyId: expect.any(String), code: 'BLOCK_NOT_FOUND', reason: expect.stringContaining(chunk.toString()) },
    ]);
    expect(report.studies.map((s) => s.studyInstanceUID)).toEqual([STUDY_A]);
    const rebuilt = catalogFacts();
    expect(rebuilt.versions).toEqual([(facts.versions as unknown[])[0], []]);
  }, 120_000);

  it('of two complete versions that follow the newest committed one, takes the later written and names the other', async () => {
    const keys = KeyStore.open({ path: join(dataDir, 'keys.db'), masterKey: await readFile(join(dataDir, 'master.key')) });
    const dataKey = keys.require(STUDY_A);
    keys.close();
    const catalog = Catalog.open({ path: join(dataDir, CATALOG) });
    const head = catalog.latestVersion(STUDY_A)!.root;
    const instanceNode = CID.parse(catalog.getInstance(A1.sopInstanceUID)!.nodeCid);
    catalog.close();
    // Two manifests of version 4 on top of A3, each adding A1's stored instance again: both whole.
    const sibling = (createdAt: string) =>
      buildStudyManifest(
        dataKey.key,
        { version: 4, prev: CID.parse(head), keyId: dataKey.keyId, fanout: 1024, tree: { depth: 0, count: 1, links: [instanceNode] } },
        { studyInstanceUID: STUDY_A, createdAt },
      );
    const [earlier, later] = [sibling('2026-12-01T00:00:00.000Z'), sibling('2026-12-02T00:00:00.000Z')];
    const store = await FsBlockStore.open({ path: join(dataDir, 'blocks') });
    for (const m of [later, earlier]) await store.put(m.cid, m.bytes);
    await store.close();
    const { code, report } = await rebuild('--force');
    expect(code).toBe(3); // B still lacks its chunk
    const a = report.studies.find((s) => s.studyInstanceUID === STUDY_A)!;
    expect([a.versions, a.root, a.unconfirmedHead, a.queued]).toEqual([4, later.cid.toString(), later.cid.toString(), 1]);
    // The leftover of the crash test (incomplete, and newest by its time) and the earlier sibling.
    expect(report.leftOut.map((l) => [l.root, l.reason.split(':')[0]!.split(' ').slice(0, 3).join(' ')])).toEqual([
      [expect.any(String), 'incomplete'],
      [earlier.cid.toString(), 'an uncommitted version'],
    ]);
    const versions = catalogFacts().versions as unknown[][];
    expect(versions[0]!.map((v) => (v as unknown[])[1])).toEqual([
      ...(facts.versions as unknown[][])[0]!.map((v) => (v as unknown[])[1]),
      later.cid.toString(),
    ]);
    expect(catalogFacts().queue).toEqual([later.cid.toString()]);
  }, 120_000);
});

describe('catalog rebuild of a data directory of the flat format (1)', () => {
  it('rebuilds its catalog from format-1 manifests and instance nodes; the node answers as with the original catalog', async () => {
    const fixture = join(import.meta.dirname, '../../fixtures/v1-data-dir');
    const study = '1.2.826.0.1.3680043.8.498.27001';
    const seen = async (data: string): Promise<Record<string, string>> => {
      const n = await startTestNode({ dataDir: data, chunkSize: 4096 });
      try {
        const out: Record<string, string> = {};
        for (const path of ['/studies?includefield=all', `/studies/${study}/instances?includefield=all`, `/studies/${study}/metadata`]) {
          const res = await fetch(`${n.url}${path}`);
          out[path] = `${res.status} ${(await res.text()).replaceAll(new URL(n.url).origin, 'ORIGIN')}`;
        }
        const r = await retrieve(`${n.url}/studies/${study}`);
        out.wado = `${r.status} ${r.parts.map((p) => p.body.toString('base64')).join(',')}`;
        out.versions = JSON.stringify(n.vault.catalog.versions(study).map((v) => [v.version, v.root, v.prev, v.instanceCount]));
        return out;
      } finally {
        await n.stop();
      }
    };
    const copies = [join(dir, 'v1-original'), join(dir, 'v1-rebuilt')];
    for (const c of copies) {
      await cp(fixture, c, { recursive: true });
      // git keeps no file mode but the executable bit, and the node refuses a master key others can read.
      await chmod(join(c, 'master.key'), 0o600);
    }
    await rm(join(copies[1]!, CATALOG));
    const r = await run(['catalog', 'rebuild', '--data-dir', copies[1]!, '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as CatalogRebuildReport;
    expect(report.studies.map((s) => [s.studyInstanceUID, s.versions, s.instances])).toEqual([[study, 2, 3]]);
    const original = await seen(copies[0]!);
    expect(original.wado).toMatch(/^200 /);
    expect(await seen(copies[1]!)).toEqual(original);
  }, 120_000);
});
