// The S3 backend against a real S3-compatible server (Swift's s3api on loopback, started here):
// the shared conformance suite, start-up checks, retries and deadlines through a fault-injecting
// proxy, large blocks, and a node serving studies from a bucket, including the server being
// stopped in the middle of an ingest. Tests in this file run one after another: one of them
// stops the server.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CID } from 'multiformats/cid';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance, type GeneratedStudy } from '../bench/generate.ts';
import { resolveNodeOptions } from '../src/config.ts';
import { startNode, type RunningNode } from '../src/server.ts';
import { createLogger } from '../src/vault.ts';
import { verifyStudy } from '../src/verify.ts';
import { decodeInstanceNode } from '../ingest/dag.ts';
import { rawCid } from '../storage/cid.ts';
import { openBlockStore, resolveBlockStoreConfig } from '../storage/open.ts';
import { S3BlockStore, type S3BlockStoreOptions } from '../storage/s3.ts';
import { getVerified } from '../storage/verified.ts';
import { retrieve, stow } from './support/dicomweb.ts';
import { startFaultProxy, type FaultProxy } from './support/s3-fault-proxy.ts';
import {
  adminClient,
  createBucket,
  listKeys,
  removeBucket,
  s3Env,
  s3StoreOptions,
  S3_ENDPOINT,
  startSwift,
  stopSwift,
  uniqueBucket,
} from './support/s3.ts';
import { blockStoreConformance, expectCode, expectSameBytes } from './storage-conformance.ts';

const MiB = 1024 * 1024;

let admin: S3Client;
let bucket: string;
let proxy: FaultProxy;
let prefixes = 0;
const nextPrefix = (label: string): string => `${label}-${++prefixes}/`;

beforeAll(async () => {
  await startSwift();
  admin = adminClient();
  bucket = uniqueBucket('test');
  await createBucket(admin, bucket);
  proxy = await startFaultProxy(S3_ENDPOINT);
}, 300_000);

afterAll(async () => {
  await proxy?.close();
  if (admin && bucket) await removeBucket(admin, bucket);
  admin?.destroy();
});

function block(size: number): { cid: CID; bytes: Uint8Array } {
  const bytes = randomBytes(size);
  return { cid: rawCid(bytes), bytes };
}

/** A store reached through the fault proxy (its rule is reset after each test). */
function viaProxy(extra: Partial<S3BlockStoreOptions> = {}): Promise<S3BlockStore> {
  return S3BlockStore.open(s3StoreOptions(bucket, { endpoint: proxy.url, prefix: nextPrefix('p'), ...extra }));
}

blockStoreConformance('S3BlockStore (Swift s3api)', async () => {
  const store = await viaProxy();
  const forbidden = new Set<string>();
  proxy.rule = (req) => (forbidden.has(req.url.split('?')[0]!) ? { status: 403, code: 'AccessDenied' } : undefined);
  return {
    store,
    async cleanup() {
      proxy.rule = () => undefined;
      await store.close();
    },
    async corruptBlock(cid) {
      const key = store.key(cid);
      const res = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const bytes = await res.Body!.transformToByteArray();
      bytes[bytes.length >> 1]! ^= 0xff;
      await admin.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes }));
    },
    async makeUnreadable(cid) {
      // A 403 for this object, as a bucket policy or an expired grant gives: an error, never "absent".
      forbidden.add(`/${bucket}/${store.key(cid)}`);
    },
  };
});

describe('S3BlockStore start-up checks', () => {
  it('refuses wrong credentials when opening, naming the credentials, before any upload', async () => {
    const err = await expectCode(
      S3BlockStore.open(s3StoreOptions(bucket, { credentials: { accessKeyId: 'test:tester', secretAccessKey: 'not-the-secret' } })),
      'CONFIG_INVALID',
    );
    expect(err.message).toMatch(/refused access.*credentials/);
    expect(err.details).toMatchObject({ status: 403, bucket });
  });

  it('refuses a bucket that does not exist when opening', async () => {
    const missing = uniqueBucket('missing');
    const err = await expectCode(S3BlockStore.open(s3StoreOptions(missing)), 'CONFIG_INVALID');
    expect(err.message).toContain(`"${missing}" does not exist`);
  });

  it('reports an endpoint where nothing listens as STORE_UNAVAILABLE', async () => {
    const err = await expectCode(
      S3BlockStore.open(s3StoreOptions(bucket, { endpoint: 'http://127.0.0.1:9', maxAttempts: 2 })),
      'STORE_UNAVAILABLE',
    );
    expect(err.message).toContain('cannot reach S3 bucket');
    expect(err.cause).toBeDefined();
  });

  it('makes a node with --store s3 and a wrong secret fail at start-up', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-s3-'));
    try {
      const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir }, s3Env(bucket, { AWS_SECRET_ACCESS_KEY: 'wrong' }));
      await expectCode(startNode(options, createLogger('silent')), 'CONFIG_INVALID');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('rejects an s3 configuration without a bucket, and an unknown backend', () => {
    expect(() => resolveBlockStoreConfig('s3', '/tmp/x', {})).toThrowError(/DICOM_VAULT_S3_BUCKET/);
    expect(() => resolveBlockStoreConfig('tape', '/tmp/x', {})).toThrowError(/fs, ipfs, s3/);
    expect(() => resolveBlockStoreConfig('s3', '/tmp/x', { DICOM_VAULT_S3_BUCKET: 'b', DICOM_VAULT_S3_CHECKSUMS: 'md5' })).toThrowError(
      /DICOM_VAULT_S3_CHECKSUMS/,
    );
  });

  it('opens from the environment alone (DICOM_VAULT_S3_*, AWS_*)', async () => {
    const store = await openBlockStore(resolveBlockStoreConfig('s3', '/unused', s3Env(bucket, { DICOM_VAULT_S3_PREFIX: nextPrefix('env') })));
    try {
      const { cid, bytes } = block(1000);
      await store.put(cid, bytes);
      expectSameBytes(await getVerified(store, cid), bytes);
      expect(store).toBeInstanceOf(S3BlockStore);
      expect(await listKeys(admin, bucket, (store as S3BlockStore).prefix)).toEqual([(store as S3BlockStore).key(cid)]);
    } finally {
      await store.close?.();
    }
  });
});

describe('S3BlockStore under server faults (fault-injecting proxy in front of Swift)', () => {
  afterEach(() => {
    proxy.rule = () => undefined;
  });

  it('retries intermittent 500, 503 SlowDown and 429 answers until they succeed', async () => {
    const store = await viaProxy({ maxAttempts: 4 });
    try {
      const faults: Fault[] = [
        { status: 503, code: 'SlowDown' },
        { status: 500, code: 'InternalError' },
        { status: 429, code: 'TooManyRequests' },
      ];
      // Every other request fails, so each call sees at most one failure before it succeeds.
      proxy.rule = (req) => (req.n % 2 === 0 ? faults[(req.n / 2) % faults.length] : undefined);
      const blocks = Array.from({ length: 6 }, () => block(256 * 1024));
      for (const { cid, bytes } of blocks) await store.put(cid, bytes);
      for (const { cid, bytes } of blocks) expectSameBytes(await getVerified(store, cid), bytes);
      for (const { cid } of blocks) expect(await store.has(cid)).toBe(true);
      const injected = proxy.log.filter((r) => r.fault !== undefined).length;
      expect(injected).toBeGreaterThanOrEqual(6);
    } finally {
      await store.close();
    }
  });

  it('gives up after maxAttempts when the server keeps failing, with STORE_UNAVAILABLE and the status', async () => {
    const store = await viaProxy({ maxAttempts: 3 });
    try {
      const { cid, bytes } = block(1000);
      proxy.rule = (req) => (req.method === 'PUT' ? { status: 503, code: 'ServiceUnavailable' } : undefined);
      const before = proxy.log.length;
      const err = await expectCode(store.put(cid, bytes), 'STORE_UNAVAILABLE');
      expect(err.details).toMatchObject({ status: 503, cid: cid.toString() });
      expect(proxy.log.slice(before).filter((r) => r.method === 'PUT')).toHaveLength(3);
      proxy.rule = () => undefined;
      expect(await store.has(cid)).toBe(false);
    } finally {
      await store.close();
    }
  });

  it('retries a request that got no answer within requestTimeoutMs, and then succeeds', async () => {
    const store = await viaProxy({ requestTimeoutMs: 500, maxAttempts: 3 });
    try {
      const { cid, bytes } = block(64 * 1024);
      await store.put(cid, bytes);
      // The first GET of this block hangs far past the per-attempt timeout; the retry is answered.
      let stalled = 0;
      proxy.rule = (req) => (req.method === 'GET' && req.url.includes(cid.toString()) && stalled++ === 0 ? { delayMs: 30_000 } : undefined);
      expectSameBytes(await getVerified(store, cid), bytes);
      expect(stalled).toBeGreaterThanOrEqual(2);
    } finally {
      await store.close();
    }
  });

  it('fails a call cleanly with STORE_UNAVAILABLE when the server stays slower than the operation deadline', async () => {
    const store = await viaProxy({ requestTimeoutMs: 10_000, operationTimeoutMs: 1_000, maxAttempts: 5 });
    try {
      const { cid, bytes } = block(1000);
      proxy.rule = () => ({ delayMs: 60_000 });
      const err = await expectCode(store.put(cid, bytes), 'STORE_UNAVAILABLE');
      expect(err.message).toContain('no answer within 1000 ms');
      await expectCode(store.get(cid), 'STORE_UNAVAILABLE');
    } finally {
      await store.close();
    }
  });

  it('honours an abort signal while the server is slow, with ABORTED', async () => {
    const store = await viaProxy();
    try {
      const { cid, bytes } = block(1000);
      proxy.rule = () => ({ delayMs: 60_000 });
      const controller = new AbortController();
      const pending = store.put(cid, bytes, { signal: controller.signal });
      setTimeout(() => controller.abort(), 200);
      await expectCode(pending, 'ABORTED');
    } finally {
      await store.close();
    }
  });
});

describe('S3BlockStore large blocks', () => {
  it('uploads a block above the multipart threshold in parts and reads it back with ranged GETs', async () => {
    const store = await viaProxy({ multipartThreshold: 12 * MiB, partSize: 5 * MiB });
    try {
      const { cid, bytes } = block(13 * MiB);
      const before = proxy.log.length;
      await store.put(cid, bytes);
      const puts = proxy.log.slice(before).filter((r) => r.url.includes('partNumber='));
      expect(puts).toHaveLength(3);
      const mid = proxy.log.length;
      expectSameBytes(await getVerified(store, cid), bytes);
      const ranges = proxy.log.slice(mid).map((r) => r.headers.range).filter((r) => r !== undefined);
      expect(ranges.sort()).toEqual(['bytes=0-5242879', 'bytes=10485760-13631487', 'bytes=5242880-10485759']);
    } finally {
      await store.close();
    }
  });
});

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
    const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'chunk-size': '4096' }, env);
    const node = await startNode(options, createLogger('warn', logSink));
    nodes.push(node);
    return node;
  }

  afterAll(async () => {
    for (const node of nodes) await node.close().catch(() => undefined);
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('stores a study as objects in the bucket and serves it back byte for byte', async () => {
    const prefix = nextPrefix('node');
    const node = await startS3Node(s3Env(bucket, { DICOM_VAULT_S3_PREFIX: prefix }));
    const study = small(11, 3);
    const parts = await Promise.all(study.instances.map(bytesOf));
    expect((await stow(node.url, parts)).status).toBe(200);
    await expectStudy(node, study, parts);
    const keys = await listKeys(admin, bucket, prefix);
    // 3 instances of about 3 KiB in 4 KiB chunks: chunks + 3 instance nodes + 1 manifest.
    expect(keys.length).toBeGreaterThanOrEqual(7);
    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect(report.problems).toEqual([]);
  });

  it('names a block missing from the bucket, in retrieval and in verify', async () => {
    const prefix = nextPrefix('missing');
    const node = await startS3Node(s3Env(bucket, { DICOM_VAULT_S3_PREFIX: prefix }));
    const study = small(12, 2);
    const parts = await Promise.all(study.instances.map(bytesOf));
    expect((await stow(node.url, parts)).status).toBe(200);
    const victim = node.vault.catalog.listInstances({ study: study.studyInstanceUID })[0]!;
    const nodeCid = CID.parse(victim.nodeCid);
    const chunk = decodeInstanceNode(await getVerified(node.vault.store, nodeCid), nodeCid).chunks[0]!;
    await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${prefix}${chunk}` }));

    const res = await fetch(`${node.url}/studies/${study.studyInstanceUID}/series/${victim.seriesInstanceUID}/instances/${victim.sopInstanceUID}`, {
      headers: { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
    });
    if (res.status === 200) {
      // Headers went out before the block was read: the body must break off, never complete,
      // and the node's log must name the block.
      await expect(res.arrayBuffer()).rejects.toThrow();
      await until(() => logged.some((line) => line.includes(`block ${chunk} not found`)));
    } else {
      expect(res.status).toBe(500);
      expect(await res.json()).toMatchObject({ code: 'BLOCK_NOT_FOUND', details: { cid: chunk.toString() } });
    }

    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'missing', cid: chunk.toString() })]);
  });

  it('fails an ingest cleanly when the S3 server stops in the middle, and takes the study again once it is back', async () => {
    const prefix = nextPrefix('outage');
    // Through the proxy only to count uploads; the outage itself is the real server stopping.
    const node = await startS3Node(s3Env(bucket, { DICOM_VAULT_S3_PREFIX: prefix, DICOM_VAULT_S3_ENDPOINT: proxy.url, DICOM_VAULT_S3_MAX_ATTEMPTS: '3' }));
    const study = planStudy({ kind: 'single', instances: 40, rows: 64, columns: 64, seed: 13 });
    const parts = await Promise.all(study.instances.map(bytesOf));

    let puts = 0;
    let stopping: Promise<void> | undefined;
    proxy.rule = (req) => {
      if (req.method === 'PUT' && req.url.includes(prefix) && ++puts === 60) stopping = stopSwift();
      return undefined;
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

    await startSwift();
    await untilS3Answers();
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

type Fault = { status: number; code: string };

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

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 50));
  expect(check()).toBe(true);
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
