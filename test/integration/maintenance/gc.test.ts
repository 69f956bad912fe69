// `dicom-vault gc`, run as its own process beside a serving node: it deletes what a crashed
// ingest left once older than the grace period, never a block of a stored study, never a block
// of a STOW still in flight, and a block written again counts as new. On --store ipfs by pins, on
// --store fs by walking every study version the catalog knows and every study manifest stored.
// (s3, which collects the same way after an index rebuild: s3-store.test.ts.)
import { blockFileOf } from '../../support/blocks.ts';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { mkdtemp, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CID } from 'multiformats/cid';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { rawCid } from '../../../storage/cid.ts';
import { FsBlockStore } from '../../../storage/fs.ts';
import { DEFAULT_GRACE_S, MIN_GRACE_S, type CollectReport } from '../../../src/maintenance/gc.ts';
import type { IpfsBlockStore, GcReport } from '../../../storage/ipfs.ts';
import { retrieve, stow, failuresIn } from '../../support/dicomweb.ts';
import { run } from '../../support/process.ts';
import { startNodeWithTester } from '../../support/node.ts';

const CHUNK = 4096;
const DAY_S = 24 * 3600;

let kind: 'ipfs' | 'fs';
let dataDir: string;
let node: RunningNode;
let store: IpfsBlockStore | FsBlockStore;

async function startOn(storeKind: 'ipfs' | 'fs'): Promise<void> {
  kind = storeKind;
  dataDir = await mkdtemp(path.join(tmpdir(), `dicom-vault-gc-${kind}-`));
  node = await startNodeWithTester(
    resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'chunk-size': String(CHUNK), store: kind, 'dimse-port': 'off' }, {}),
    createLogger('silent'),
  );
  store = node.vault.store as IpfsBlockStore | FsBlockStore;
}
afterEach(async () => {
  await node.close();
  await rm(dataDir, { recursive: true, force: true });
});

/** The directory of the store's block files (the same layout in both: FsBlockStore's). */
function blocksDir(): string {
  return kind === 'ipfs' ? path.join(dataDir, 'ipfs', 'blocks') : path.join(dataDir, 'blocks');
}

function blockFile(cid: CID, dir = blocksDir()): string {
  return blockFileOf(dir, cid);
}

/** `dicom-vault gc` on this node's data directory, as a separate process. */
function gc(...args: string[]): ReturnType<typeof run> {
  return run(['gc', '--data-dir', dataDir, '--store', kind, ...args]);
}

function reportOf<R = GcReport>(r: { code: number; stdout: string; stderr: string }): R & { graceS: number } {
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return JSON.parse(r.stdout) as R & { graceS: number };
}

/** Blocks as a node killed mid-ingest leaves them (no version reaches them), written `ageS` seconds ago. */
async function leftovers(count: number, ageS: number): Promise<CID[]> {
  const cids: CID[] = [];
  for (let i = 0; i < count; i++) {
    const bytes = randomBytes(CHUNK);
    const cid = rawCid(bytes);
    await store.put(cid, bytes);
    await age(cid, ageS);
    cids.push(cid);
  }
  return cids;
}

/** Sets a block's file time `ageS` seconds into the past. */
async function age(cid: CID, ageS: number, dir = blocksDir()): Promise<void> {
  const when = new Date(Date.now() - ageS * 1000);
  await utimes(blockFile(cid, dir), when, when);
}

async function blockCount(): Promise<number> {
  let n = 0;
  for await (const _ of store.list()) n++;
  return n;
}

async function bytesOf(inst: GeneratedInstance): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of inst.open()) parts.push(p);
  return Buffer.concat(parts);
}

/**
 * Opens a STOW and sends its first instance and the delimiter of the next: the node stores that
 * instance's chunks and node, then waits for the rest of the request with nothing committed.
 * Resolves once those blocks are in the store.
 */
async function stowFirstInstance(first: Buffer): Promise<{ inFlight: number; finish(second: Buffer): Promise<{ status: number; body: string }> }> {
  const before = await blockCount();
  const boundary = `gc-${randomBytes(6).toString('hex')}`;
  const req = request(new URL(`${node.url}/studies`), {
    method: 'POST',
    headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, accept: 'application/dicom+json' },
  });
  const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
    req.once('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
  });
  req.write(Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), first, Buffer.from(`\r\n--${boundary}\r\n`)]));
  const inFlight = Math.ceil(first.length / CHUNK) + 1; // its chunks and its instance node
  for (let i = 0; i < 200 && (await blockCount()) < before + inFlight; i++) await new Promise((r) => setTimeout(r, 25));
  expect(await blockCount()).toBe(before + inFlight);
  return {
    inFlight,
    finish(second) {
      req.end(Buffer.concat([Buffer.from('Content-Type: application/dicom\r\n\r\n'), second, Buffer.from(`\r\n--${boundary}--\r\n`)]));
      return answered;
    },
  };
}

/**
 * Runs gc (another process) while a two-instance STOW is open with its first instance stored:
 * old garbage goes, the in-flight blocks are young and kept, and the STOW then commits whole.
 */
async function gcBesideOpenStow(seed: number): Promise<{ study: ReturnType<typeof planStudy>; parts: Buffer[] }> {
  const study = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed });
  const parts = await Promise.all(study.instances.map(bytesOf));
  const garbage = await leftovers(2, 2 * DAY_S);
  const open = await stowFirstInstance(parts[0]!);
  expect(node.vault.catalog.latestVersion(study.studyInstanceUID)).toBeUndefined();
  expect(reportOf<{ young: number; deleted: number }>(await gc('--json'))).toMatchObject({ young: open.inFlight, deleted: garbage.length });
  expect((await open.finish(parts[1]!)).status).toBe(200);
  await expectStudyWhole(study.studyInstanceUID, parts);
  return { study, parts };
}

/**
 * A study of 3 instances stored in two versions (two STOWs), then leftovers beside it: 3 blocks
 * two days old and 2 a minute old. `studyBlocks`: the store's blocks before the leftovers.
 */
async function twoVersionsAndLeftovers(seed: number) {
  const study = planStudy({ kind: 'single', instances: 3, rows: 64, columns: 64, seed });
  const parts = await Promise.all(study.instances.map(bytesOf));
  expect((await stow(node.url, parts.slice(0, 2))).status).toBe(200);
  expect((await stow(node.url, parts.slice(2))).status).toBe(200);
  const studyBlocks = await blockCount();
  return { study, parts, studyBlocks, old: await leftovers(3, 2 * DAY_S), recent: await leftovers(2, 60) };
}

async function expectStudyWhole(studyUID: string, parts: Buffer[]): Promise<void> {
  const back = await retrieve(`${node.url}/studies/${studyUID}`);
  expect(back.status).toBe(200);
  expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual(parts.map((b) => b.toString('base64')).sort());
  expect((await verifyStudy(node.vault, studyUID)).problems).toEqual([]);
}

describe('dicom-vault gc (--store ipfs)', () => {
  beforeEach(() => startOn('ipfs'));

  it('deletes the unpinned blocks older than the grace period, beside a serving node, and keeps every study', async () => {
    const { study, parts, studyBlocks, old, recent } = await twoVersionsAndLeftovers(51);

    const first = await gc();
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toContain(
      `${studyBlocks + 5} blocks: ${studyBlocks} pinned, 2 unpinned but younger than ${DEFAULT_GRACE_S} s (kept), 3 deleted (0.0 MB)`,
    );
    for (const cid of old) expect(await store.has(cid), cid.toString()).toBe(false);
    for (const cid of recent) expect(await store.has(cid), cid.toString()).toBe(true);
    await expectStudyWhole(study.studyInstanceUID, parts);

    // A shorter grace takes the recent ones too; JSON for scripts.
    const second = reportOf(await gc('--grace', '30', '--json'));
    expect(second).toEqual({
      graceS: 30,
      blocks: studyBlocks + 2,
      pinned: studyBlocks,
      young: 0,
      deleted: 2,
      deletedBytes: 2 * CHUNK,
      repinned: [],
      otherPins: 0,
    });
    expect(await blockCount()).toBe(studyBlocks);
    await expectStudyWhole(study.studyInstanceUID, parts);
  });

  it('never takes the blocks of a STOW still in flight, which then commits whole', async () => {
    const { study, parts } = await gcBesideOpenStow(52);
    // Committed now: the same blocks are pinned, so even a grace of 0 keeps them.
    expect(reportOf(await gc('--grace', '0', '--json'))).toMatchObject({ young: 0, deleted: 0 });
    await expectStudyWhole(study.studyInstanceUID, parts);
  });

  it("with --grace 0 (no protection) takes an in-flight STOW's blocks: that STOW fails whole, and is accepted when sent again", async () => {
    const study = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed: 54 });
    const parts = await Promise.all(study.instances.map(bytesOf));
    const stow1 = await stowFirstInstance(parts[0]!);
    expect(reportOf(await gc('--grace', '0', '--json'))).toMatchObject({ young: 0, deleted: stow1.inFlight });
    const failed = await stow1.finish(parts[1]!);
    // Both instances fail (the study's commit found a node gone), each with the block named; 503: the node's fault.
    expect(failed.status).toBe(503);
    const failures = failuresIn(JSON.parse(failed.body));
    expect(failures).toHaveLength(2);
    for (const f of failures) expect(f).toMatchObject({ code: 'BLOCK_NOT_FOUND', status: 0x0110, reason: expect.stringMatching(/block baf\w+ not found/) });
    // Nothing half-stored is visible.
    expect(node.vault.catalog.latestVersion(study.studyInstanceUID)).toBeUndefined();
    expect((await retrieve(`${node.url}/studies/${study.studyInstanceUID}`)).status).toBe(404);
    expect((await stow(node.url, parts)).status).toBe(200);
    await expectStudyWhole(study.studyInstanceUID, parts);
  });

  it('counts a block written again (a retried ingest or import) from its latest write', async () => {
    const [cid] = await leftovers(1, 2 * DAY_S);
    // The retry stores the same bytes; the store already has them and only freshens their time.
    const bytes = await store.get(cid!);
    await store.put(cid!, bytes);
    expect(reportOf(await gc('--json'))).toMatchObject({ young: 1, deleted: 0 });
    expect(await store.has(cid!)).toBe(true);
  });

  it('pins a catalog study root found unpinned before it sweeps, and keeps pins the catalog does not know', async () => {
    const study = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 53 });
    const parts = [await bytesOf(study.instances[0]!)];
    expect((await stow(node.url, parts)).status).toBe(200);
    const root = node.vault.catalog.latestVersion(study.studyInstanceUID)!.root;
    await (store as IpfsBlockStore).unpin(CID.parse(root)); // a lost pin: the study's blocks now look like garbage
    const foreign = randomBytes(100);
    await store.put(rawCid(foreign), foreign);
    await (store as IpfsBlockStore).pin(rawCid(foreign)); // e.g. a study imported without its key: pinned, not in the catalog

    const r = await gc('--grace', '0');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`pinned again: ${root} (a study version in the catalog that no pin covered)`);
    expect(r.stdout).toMatch(/ 0 deleted \(0\.0 MB\); 1 pinned roots not in the catalog kept$/m);
    expect(await (store as IpfsBlockStore).isPinnedRoot(CID.parse(root))).toBe(true);
    expect(await store.has(rawCid(foreign))).toBe(true);
    await expectStudyWhole(study.studyInstanceUID, parts);
  });
});

describe('dicom-vault gc (--store fs)', () => {
  beforeEach(() => startOn('fs'));

  type FsReport = CollectReport & { graceS: number };

  it('deletes the blocks no study version reaches once older than the grace period, beside a serving node, and keeps every version of every study', async () => {
    // Two versions: the first one's blocks are reached through its own root, not through the second's.
    const { study, parts, studyBlocks, old, recent } = await twoVersionsAndLeftovers(61);
    // Files of writes a kill cut short: an old one and one being written now.
    const shard = path.dirname(blockFile(old[0]!));
    const staleTemp = path.join(shard, '.stale.tmp');
    const freshTemp = path.join(shard, '.fresh.tmp');
    await writeFile(staleTemp, randomBytes(100));
    await utimes(staleTemp, new Date(Date.now() - 2 * DAY_S * 1000), new Date(Date.now() - 2 * DAY_S * 1000));
    await writeFile(freshTemp, randomBytes(100));

    const first = await gc();
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toContain(
      `${studyBlocks + 5} blocks: ${studyBlocks} reached from a study version, 2 unreached but younger than ${DEFAULT_GRACE_S} s (kept), 3 deleted (0.0 MB); 1 unfinished writes removed`,
    );
    for (const cid of old) expect(await store.has(cid), cid.toString()).toBe(false);
    for (const cid of recent) expect(await store.has(cid), cid.toString()).toBe(true);
    expect(await exists(staleTemp)).toBe(false);
    expect(await exists(freshTemp)).toBe(true);
    await expectStudyWhole(study.studyInstanceUID, parts);

    // The recent ones once they are old enough; JSON for scripts.
    for (const cid of recent) await age(cid, 2 * 3600);
    const second = reportOf<FsReport>(await gc('--grace', '3600', '--json'));
    expect(second).toEqual({
      graceS: 3600,
      blocks: studyBlocks + 2,
      reachable: studyBlocks,
      young: 0,
      deleted: 2,
      deletedBytes: 2 * CHUNK,
      temps: 0,
      otherRoots: 0,
    });
    expect(await blockCount()).toBe(studyBlocks);
    await expectStudyWhole(study.studyInstanceUID, parts);
  });

  it('never takes the blocks of a STOW still in flight, which then commits whole', async () => {
    const { study, parts } = await gcBesideOpenStow(62);
    // Committed now: reached, so kept however old they get.
    for await (const cid of store.list()) await age(cid, 2 * DAY_S);
    expect(reportOf<FsReport>(await gc('--json'))).toMatchObject({ young: 0, deleted: 0 });
    await expectStudyWhole(study.studyInstanceUID, parts);
  });

  it('counts a block written again (a retried ingest) from its latest write', async () => {
    const [cid] = await leftovers(1, 2 * DAY_S);
    // The retry stores the same bytes; the store already has them and only gives them a new time.
    const bytes = await store.get(cid!);
    await store.put(cid!, bytes);
    expect(reportOf<FsReport>(await gc('--json'))).toMatchObject({ young: 1, deleted: 0 });
    expect(await store.has(cid!)).toBe(true);
  });

  it('keeps a study stored without its key (imported from a CAR, so in no catalog) with all its blocks, as ipfs keeps its pin', async () => {
    const study = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed: 64 });
    const parts = await Promise.all(study.instances.map(bytesOf));
    expect((await stow(node.url, parts)).status).toBe(200);
    const car = path.join(dataDir, 'study.car');
    const exported = await run(['export', '--car', study.studyInstanceUID, car, '--data-dir', dataDir]);
    expect(exported.code, exported.stderr).toBe(0);
    const replica = await mkdtemp(path.join(tmpdir(), 'dicom-vault-gc-replica-'));
    try {
      const imported = await run(['import', car, '--data-dir', replica, '--store', 'fs']);
      expect(imported.code, imported.stdout + imported.stderr).toBe(0);
      const replicaBlocks = path.join(replica, 'blocks');
      const replicaStore = await FsBlockStore.open({ path: replicaBlocks });
      const cids: CID[] = [];
      for await (const cid of replicaStore.list()) cids.push(cid);
      await replicaStore.close();
      for (const cid of cids) await age(cid, 2 * DAY_S, replicaBlocks);
      const report = reportOf<FsReport>(await run(['gc', '--data-dir', replica, '--store', 'fs', '--json']));
      expect(report).toMatchObject({ blocks: cids.length, reachable: cids.length, young: 0, deleted: 0, otherRoots: 1 });
    } finally {
      await rm(replica, { recursive: true, force: true });
    }
  });

  it('stops before deleting anything when a block of a study version is missing or altered, naming it', async () => {
    const study = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 63 });
    const parts = [await bytesOf(study.instances[0]!)];
    expect((await stow(node.url, parts)).status).toBe(200);
    const root = CID.parse(node.vault.catalog.latestVersion(study.studyInstanceUID)!.root);
    const nodeCid = CID.parse(node.vault.catalog.getInstance(study.instances[0]!.sopInstanceUID)!.nodeCid);
    const garbage = await leftovers(2, 2 * DAY_S);
    const nodeBytes = await store.get(nodeCid);

    // Altered: its links could no longer be trusted to name the study's chunks.
    const altered = Buffer.from(nodeBytes);
    altered.writeUInt8(altered.readUInt8(altered.length - 1) ^ 0x01, altered.length - 1);
    await writeFile(blockFile(nodeCid), altered);
    const corrupt = await gc();
    expect(corrupt.code).toBe(1);
    expect(corrupt.stderr).toContain(
      `BLOCK_CORRUPT: gc stopped before deleting anything: block ${nodeCid} of study version ${root} is corrupt (run verify on its study)`,
    );

    await unlink(blockFile(nodeCid));
    const missing = await gc();
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(
      `BLOCK_NOT_FOUND: gc stopped before deleting anything: block ${nodeCid} of study version ${root} is missing (run verify on its study)`,
    );
    for (const cid of garbage) expect(await store.has(cid)).toBe(true);

    // Put back, gc runs again.
    await store.put(nodeCid, nodeBytes);
    expect(reportOf<FsReport>(await gc('--json'))).toMatchObject({ deleted: garbage.length });
    await expectStudyWhole(study.studyInstanceUID, parts);
  });
});

describe('dicom-vault gc refuses', () => {
  beforeEach(() => startOn('fs'));

  it('a grace too short or malformed, and a directory without data, saying why', async () => {
    const short = await gc('--grace', String(MIN_GRACE_S - 1));
    expect(short.code).toBe(1);
    expect(short.stderr).toContain(`CONFIG_INVALID: gc grace must be at least ${MIN_GRACE_S} seconds on this store (got ${MIN_GRACE_S - 1})`);
    const grace = await gc('--grace', 'a day');
    expect(grace.code).toBe(1);
    expect(grace.stderr).toMatch(/CONFIG_INVALID: --grace must be a whole number of seconds/);
    const empty = await mkdtemp(path.join(tmpdir(), 'dicom-vault-gc-empty-'));
    try {
      const none = await run(['gc', '--data-dir', path.join(empty, 'nothing'), '--store', 'fs']);
      expect(none.code).toBe(1);
      expect(none.stderr).toMatch(/CONFIG_INVALID: no dicom-vault data in /);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}
