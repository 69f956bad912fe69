// The S3 backend against a real S3-compatible server (Swift's s3api on loopback, started here):
// the shared conformance suite (packed, the default, and one object per block), start-up checks,
// retries and deadlines through a fault-injecting proxy, packing (packs, their index, failed
// uploads, deletes, coalesced reads), large blocks, and a node serving studies from a bucket,
// including the server being stopped in the middle of an ingest. Tests in this file run one
// after another: one of them stops the server.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CID } from 'multiformats/cid';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance, type GeneratedStudy } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { startNode, type RunningNode } from '../../../src/shell/server.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { decodeInstanceNode } from '../../../src/format/dag.ts';
import { rawCid } from '../../../storage/cid.ts';
import { openBlockStore, resolveBlockStoreConfig } from '../../../storage/open.ts';
import { decodePack } from '../../../storage/s3/pack-format.ts';
import { S3BlockStore, type S3BlockStoreOptions } from '../../../storage/s3/store.ts';
import { getVerified } from '../../../storage/verified.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { run } from '../../support/process.ts';
import { startFaultProxy, type FaultProxy } from '../../support/s3-fault-proxy.ts';
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
} from '../../support/s3.ts';
import { blockStoreConformance, expectCode, expectSameBytes } from '../../support/storage-conformance.ts';
import { collectS3 } from '../../../src/maintenance/gc.ts';
import { startNodeWithTester } from '../../support/node.ts';

const MiB = 1024 * 1024;

let admin: S3Client;
let bucket: string;
let proxy: FaultProxy;
let prefixes = 0;
const nextPrefix = (label: string): string => `${label}-${++prefixes}/`;
/** Index files of the stores opened here (one per store unless a test shares one). */
let indexDir: string;
let indexes = 0;
const nextIndex = (): string => join(indexDir, `index-${++indexes}.db`);

beforeAll(async () => {
  indexDir = await mkdtemp(join(tmpdir(), 'dicom-vault-s3-index-'));
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
  if (indexDir) await rm(indexDir, { recursive: true, force: true });
});

// Every test sets the proxy's rule it needs; none outlives its test.
afterEach(() => {
  if (proxy) proxy.rule = () => undefined;
});

function block(size: number): { cid: CID; bytes: Uint8Array } {
  const bytes = randomBytes(size);
  return { cid: rawCid(bytes), bytes };
}

/**
 * A store reached through the fault proxy (its rule is reset after each test), packing blocks
 * (the default) with an index of its own unless `extra` says otherwise.
 */
function viaProxy(extra: Partial<S3BlockStoreOptions> = {}): Promise<S3BlockStore> {
  return S3BlockStore.open(s3StoreOptions(bucket, { endpoint: proxy.url, prefix: nextPrefix('p'), indexPath: nextIndex(), ...extra }));
}

async function getObject(key: string): Promise<Uint8Array> {
  const res = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return res.Body!.transformToByteArray();
}

/** GETs of pack objects under `prefix` that went through the proxy since log entry `from`. */
function packGets(from: number, prefix: string): number {
  return proxy.log.slice(from).filter((r) => r.method === 'GET' && r.url.includes(`/${prefix}packs/`)).length;
}

const variants: Array<[string, () => Promise<S3BlockStore>]> = [
  ['packed', () => viaProxy()],
  // As before packing: no index at all.
  ['one object per block', () => S3BlockStore.open(s3StoreOptions(bucket, { endpoint: proxy.url, prefix: nextPrefix('p'), packBytes: 0 }))],
];
for (const [label, open] of variants) {
  blockStoreConformance(`S3BlockStore (Swift s3api, ${label})`, async () => {
    const store = await open();
    const forbidden = new Set<string>();
    proxy.rule = (req) => (forbidden.has(req.url.split('?')[0]!) ? { status: 403, code: 'AccessDenied' } : undefined);
    return {
      store,
      async cleanup() {
        proxy.rule = () => undefined;
        await store.close();
      },
      async corruptBlock(cid) {
        // The block's own object, or its bytes inside its pack.
        const { key, range } = store.locate(cid);
        const bytes = await getObject(key);
        const at = range === undefined ? bytes.length >> 1 : range.start + (range.size >> 1);
        bytes[at]! ^= 0xff;
        await admin.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes }));
      },
      async makeUnreadable(cid) {
        // A 403 for its object (or pack), as a bucket policy or an expired grant gives: an error, never "absent".
        forbidden.add(`/${bucket}/${store.locate(cid).key}`);
      },
    };
  });
}

describe('S3BlockStore start-up checks', () => {
  it('refuses wrong credentials when opening, naming the credentials, before any upload', async () => {
    const err = await expectCode(
      S3BlockStore.open(s3StoreOptions(bucket, { indexPath: nextIndex(), credentials: { accessKeyId: 'test:tester', secretAccessKey: 'not-the-secret' } })),
      'CONFIG_INVALID',
    );
    expect(err.message).toMatch(/refused access.*credentials/);
    expect(err.details).toMatchObject({ status: 403, bucket });
  });

  it('refuses a bucket that does not exist when opening', async () => {
    const missing = uniqueBucket('missing');
    const err = await expectCode(S3BlockStore.open(s3StoreOptions(missing, { indexPath: nextIndex() })), 'CONFIG_INVALID');
    expect(err.message).toContain(`"${missing}" does not exist`);
  });

  it('reports an endpoint where nothing listens as STORE_UNAVAILABLE', async () => {
    const err = await expectCode(
      S3BlockStore.open(s3StoreOptions(bucket, { endpoint: 'http://127.0.0.1:9', maxAttempts: 2, indexPath: nextIndex() })),
      'STORE_UNAVAILABLE',
    );
    expect(err.message).toContain('cannot reach S3 bucket');
    expect(err.cause).toBeDefined();
  });

  it('makes a node with --store s3 and a wrong secret fail at start-up', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-s3-'));
    try {
      const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'dimse-port': 'off' }, s3Env(bucket, { AWS_SECRET_ACCESS_KEY: 'wrong' }));
      await expectCode(startNode(options, createLogger('silent')), 'CONFIG_INVALID');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses packing without an index path, and reads the pack size from the environment', async () => {
    const err = await expectCode(S3BlockStore.open(s3StoreOptions(bucket, { packBytes: 1024 })), 'CONFIG_INVALID');
    expect(err.message).toContain('indexPath');
    const config = resolveBlockStoreConfig('s3', '/srv/dv', { DICOM_VAULT_S3_BUCKET: 'b', DICOM_VAULT_S3_PACK_BYTES: '0' });
    expect(config).toMatchObject({ kind: 's3', s3: { packBytes: 0, indexPath: join('/srv/dv', 's3-index.db') } });
    expect(() => resolveBlockStoreConfig('s3', '/tmp/x', { DICOM_VAULT_S3_BUCKET: 'b', DICOM_VAULT_S3_PACK_BYTES: '8M' })).toThrowError(
      /DICOM_VAULT_S3_PACK_BYTES/,
    );
  });

  it('rejects an s3 configuration without a bucket, and an unknown backend', () => {
    expect(() => resolveBlockStoreConfig('s3', '/tmp/x', {})).toThrowError(/DICOM_VAULT_S3_BUCKET/);
    expect(() => resolveBlockStoreConfig('tape', '/tmp/x', {})).toThrowError(/fs, ipfs, s3/);
    expect(() => resolveBlockStoreConfig('s3', '/tmp/x', { DICOM_VAULT_S3_BUCKET: 'b', DICOM_VAULT_S3_CHECKSUMS: 'md5' })).toThrowError(
      /DICOM_VAULT_S3_CHECKSUMS/,
    );
  });

  it('opens from the environment alone (DICOM_VAULT_S3_*, AWS_*), its index in the data directory', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-s3-env-'));
    const store = await openBlockStore(resolveBlockStoreConfig('s3', dataDir, s3Env(bucket, { DICOM_VAULT_S3_PREFIX: nextPrefix('env') })));
    try {
      const { cid, bytes } = block(1000);
      await store.put(cid, bytes);
      expectSameBytes(await getVerified(store, cid), bytes);
      expect(store).toBeInstanceOf(S3BlockStore);
      const s3 = store as S3BlockStore;
      expect(s3.locate(cid).key).toMatch(/\/packs\/p-[0-9a-z]{9}-[0-9a-f]{16}$/);
      expect(await listKeys(admin, bucket, s3.prefix)).toEqual([s3.locate(cid).key]);
      expect(existsSync(join(dataDir, 's3-index.db'))).toBe(true);
    } finally {
      await store.close?.();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('S3BlockStore under server faults (fault-injecting proxy in front of Swift)', () => {
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

  it('signs each upload with the SHA-256 of its body, so a body damaged in transit is refused, never stored', async () => {
    for (const packBytes of [undefined, 0]) {
      const store = await viaProxy({ maxAttempts: 1, ...(packBytes === undefined ? {} : { packBytes }) });
      try {
        const { cid, bytes } = block(300_000);
        proxy.rule = (req) => (req.method === 'PUT' ? { corruptBody: true } : undefined);
        const before = proxy.log.length;
        const err = await expectCode(store.put(cid, bytes), 'STORE_UNAVAILABLE');
        const put = proxy.log.slice(before).find((r) => r.method === 'PUT')!;
        // The payload hash the signature covers is the body's, not UNSIGNED-PAYLOAD.
        expect(put.headers['x-amz-content-sha256']).toMatch(/^[0-9a-f]{64}$/);
        expect(err.details).toMatchObject({ status: 400 });
        proxy.rule = () => undefined;
        expect(await store.has(cid)).toBe(false);
        await store.put(cid, bytes);
        expectSameBytes(await getVerified(store, cid), bytes);
      } finally {
        await store.close();
      }
    }
  });

  it('retries a request that got no answer within requestTimeoutMs, and then succeeds', async () => {
    const store = await viaProxy({ requestTimeoutMs: 500, maxAttempts: 3 });
    try {
      const { cid, bytes } = block(64 * 1024);
      await store.put(cid, bytes);
      // The first GET of this block('s pack) hangs far past the per-attempt timeout; the retry is answered.
      let stalled = 0;
      const key = store.locate(cid).key;
      proxy.rule = (req) => (req.method === 'GET' && req.url.includes(key) && stalled++ === 0 ? { delayMs: 30_000 } : undefined);
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

describe('S3BlockStore packing', () => {
  /** Reads blocks in order with 4 gets in flight, as the instance reader does. */
  async function readInOrder(store: S3BlockStore, cids: readonly CID[]): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    const ahead: Array<Promise<Uint8Array>> = [];
    let next = 0;
    while (out.length < cids.length) {
      while (ahead.length < 4 && next < cids.length) ahead.push(getVerified(store, cids[next++]!));
      out.push(await ahead.shift()!);
    }
    return out;
  }

  it('spreads blocks over several packs, and a second store on the same index reads them all', async () => {
    const indexPath = nextIndex();
    const prefix = nextPrefix('spread');
    const a = await viaProxy({ prefix, indexPath, packBytes: 64 * 1024 });
    const b = await viaProxy({ prefix, indexPath, packBytes: 64 * 1024 });
    try {
      const blocks = Array.from({ length: 20 }, () => block(20 * 1024));
      for (const { cid, bytes } of blocks) await a.put(cid, bytes, { durable: false });
      await a.flush();
      const packs = await listKeys(admin, bucket, `${prefix}packs/`);
      expect(packs).toHaveLength(5); // 4 blocks of 20 KiB reach 64 KiB
      expect(new Set(blocks.map(({ cid }) => a.locate(cid).key))).toEqual(new Set(packs));
      // The second store (as a CLI next to the server would) sees what the first committed.
      for (const { cid, bytes } of blocks) expectSameBytes(await getVerified(b, cid), bytes);
      const listed: string[] = [];
      for await (const cid of b.list()) listed.push(cid.toString());
      expect(listed.sort()).toEqual(blocks.map(({ cid }) => cid.toString()).sort());
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('coalesces reads: 32 sequential blocks of 256 KiB cost 8 ranged GETs with a 1 MiB span', async () => {
    const indexPath = nextIndex();
    const prefix = nextPrefix('span');
    const writer = await viaProxy({ prefix, indexPath });
    const blocks = Array.from({ length: 32 }, () => block(256 * 1024));
    try {
      for (const { cid, bytes } of blocks) await writer.put(cid, bytes, { durable: false });
      await writer.flush();
      expect(await listKeys(admin, bucket, `${prefix}packs/`)).toHaveLength(1);
    } finally {
      await writer.close();
    }
    for (const [readSpan, gets] of [
      [1024 * 1024, 8],
      [0, 32],
    ] as const) {
      const reader = await viaProxy({ prefix, indexPath, readSpan });
      try {
        const before = proxy.log.length;
        const read = await readInOrder(
          reader,
          blocks.map((b) => b.cid),
        );
        for (const [i, bytes] of read.entries()) expectSameBytes(bytes, blocks[i]!.bytes);
        expect(packGets(before, prefix)).toBe(gets);
        expect(reader.stats.packReads).toBe(gets);
        const ranges = proxy.log
          .slice(before)
          .filter((r) => r.method === 'GET')
          .map((r) => r.headers.range);
        expect(ranges.every((r) => r !== undefined && /^bytes=\d+-\d+$/.test(r))).toBe(true);
      } finally {
        await reader.close();
      }
    }
  });

  it('fails the flush when a pack upload fails beyond the retries; the blocks put again after recovery store fine without reopening', async () => {
    const store = await viaProxy({ maxAttempts: 2 });
    try {
      const blocks = Array.from({ length: 3 }, () => block(10_000));
      proxy.rule = (req) => (req.method === 'PUT' && req.url.includes('/packs/') ? { status: 503, code: 'ServiceUnavailable' } : undefined);
      for (const { cid, bytes } of blocks) await store.put(cid, bytes, { durable: false });
      const err = await expectCode(store.flush(), 'STORE_UNAVAILABLE');
      expect(err.details).toMatchObject({ status: 503 });
      expect(blocks.map(({ cid }) => cid.toString())).toContain(err.details?.cid);
      expect(err.message).toContain('503');
      // Not stored, so not there: never a false success.
      await expectCode(store.get(blocks[0]!.cid), 'BLOCK_NOT_FOUND');
      expect(await store.has(blocks[0]!.cid)).toBe(false);
      proxy.rule = () => undefined;
      await expectCode(store.flush(), 'STORE_UNAVAILABLE'); // still owed
      for (const { cid, bytes } of blocks) await store.put(cid, bytes, { durable: false });
      await store.flush();
      for (const { cid, bytes } of blocks) expectSameBytes(await getVerified(store, cid), bytes);
    } finally {
      await store.close();
    }
  });

  it('deletes a pending, an in-flight and an indexed block, and the pack object with its last live block', async () => {
    const prefix = nextPrefix('del');
    const store = await viaProxy({ prefix });
    try {
      // Pending: left out of its pack.
      const [a, b, c] = [block(1000), block(1000), block(1000)];
      for (const x of [a, b, c]) await store.put(x.cid, x.bytes, { durable: false });
      await store.delete(a.cid);
      await store.flush();
      const packKey = store.locate(b.cid).key;
      expect(decodePack(await getObject(packKey)).map((x) => x.cid.toString())).toEqual([b.cid, c.cid].map(String));
      expect(await store.has(a.cid)).toBe(false);

      // In flight: its pack lands without it.
      const [d, e] = [block(1000), block(1000)];
      proxy.rule = (req) => (req.method === 'PUT' && req.url.includes('/packs/') ? { delayMs: 500 } : undefined);
      for (const x of [d, e]) await store.put(x.cid, x.bytes, { durable: false });
      const flushing = store.flush();
      await until(() => proxy.log.some((r) => r.method === 'PUT' && r.fault !== undefined));
      await store.delete(d.cid);
      await flushing;
      expect(store.locate(d.cid).range).toBeUndefined();
      await expectCode(store.get(d.cid), 'BLOCK_NOT_FOUND');
      expectSameBytes(await getVerified(store, e.cid), e.bytes);
      proxy.rule = () => undefined;

      // Indexed: the pack stays while one of its blocks lives, and goes with the last.
      await store.delete(b.cid);
      expect(await listKeys(admin, bucket, `${prefix}packs/`)).toContain(packKey);
      expectSameBytes(await getVerified(store, c.cid), c.bytes);
      await store.delete(c.cid);
      expect(await listKeys(admin, bucket, `${prefix}packs/`)).not.toContain(packKey);
      await expectCode(store.get(c.cid), 'BLOCK_NOT_FOUND');
    } finally {
      await store.close();
    }
  });

  it('reports a block whose pack object is gone as BLOCK_NOT_FOUND naming the CID, and has() as false', async () => {
    const store = await viaProxy();
    try {
      const { cid, bytes } = block(1000);
      await store.put(cid, bytes);
      const { key } = store.locate(cid);
      await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      const err = await expectCode(getVerified(store, cid), 'BLOCK_NOT_FOUND');
      expect(err.details).toMatchObject({ cid: cid.toString() });
      const raw = await expectCode(store.get(cid), 'BLOCK_NOT_FOUND');
      expect(raw.message).toContain(key);
      expect(await store.has(cid)).toBe(false);
    } finally {
      await store.close();
    }
  });

  it('uploads pending blocks on close, and still reads packs with packing turned off, writing new blocks as objects', async () => {
    const indexPath = nextIndex();
    const prefix = nextPrefix('switch');
    const first = await viaProxy({ prefix, indexPath });
    const x = block(5000);
    await first.put(x.cid, x.bytes, { durable: false });
    await first.close();
    const second = await viaProxy({ prefix, indexPath, packBytes: 0 });
    try {
      expectSameBytes(await getVerified(second, x.cid), x.bytes);
      const y = block(5000);
      await second.put(y.cid, y.bytes);
      expect(second.locate(y.cid)).toEqual({ key: second.key(y.cid) });
      expect(await listKeys(admin, bucket, second.key(y.cid))).toEqual([second.key(y.cid)]);
      const listed: string[] = [];
      for await (const cid of second.list()) listed.push(cid.toString());
      expect(listed.sort()).toEqual([x.cid.toString(), y.cid.toString()].sort());
    } finally {
      await second.close();
    }
  });
});

describe('S3BlockStore index rebuild', () => {
  it('indexes every pack of the bucket from its header into a lost index, leaves known packs alone, and names objects that are not packs', async () => {
    const prefix = nextPrefix('rebuild');
    const writer = await viaProxy({ prefix, packBytes: 64 * 1024 });
    const blocks = Array.from({ length: 20 }, () => block(20 * 1024));
    // 2,000 blocks of 4 bytes in one pack: its header (about 90 KiB) outgrows the 64 KiB the
    // writer keeps in front of the data, so it takes a second GET.
    const tiny = Array.from({ length: 2000 }, () => block(4));
    let tinyPack: string;
    try {
      for (const { cid, bytes } of blocks) await writer.put(cid, bytes, { durable: false });
      await writer.flush();
      for (const { cid, bytes } of tiny) await writer.put(cid, bytes, { durable: false });
      await writer.flush();
      tinyPack = writer.locate(tiny[0]!.cid).key;
      expect(new Set(tiny.map(({ cid }) => writer.locate(cid).key))).toEqual(new Set([tinyPack]));
    } finally {
      await writer.close();
    }
    expect(await listKeys(admin, bucket, `${prefix}packs/`)).toHaveLength(6);
    // Two objects that are not packs: garbage, and a pack cut short inside its header.
    await admin.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}packs/not-a-pack`, Body: randomBytes(100) }));
    await admin.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}packs/cut-short`, Body: (await getObject(tinyPack)).subarray(0, 70_000) }));

    const store = await viaProxy({ prefix }); // an index of its own: empty
    try {
      await expectCode(store.get(blocks[0]!.cid), 'BLOCK_NOT_FOUND');
      const from = proxy.log.length;
      const report = await store.rebuildIndex();
      expect(report).toEqual({
        objects: 8,
        known: 0,
        indexed: 6,
        blocks: 2020,
        redundant: 0,
        gone: 0,
        unreadable: [
          { key: `${prefix}packs/cut-short`, reason: expect.stringContaining('runs past') },
          { key: `${prefix}packs/not-a-pack`, reason: expect.stringContaining('no DVPACK1 magic') },
        ],
      });
      // A ranged GET of each head; the large header's pack needs a second one.
      expect(packGets(from, prefix)).toBe(8 + 1);
      for (const { cid, bytes } of blocks) expectSameBytes(await getVerified(store, cid), bytes);
      for (const { cid, bytes } of tiny.filter((_, i) => i % 100 === 99)) expectSameBytes(await getVerified(store, cid), bytes);
      expect(store.locate(tiny[1999]!.cid).key).toBe(tinyPack);

      // Run again: every pack is known, nothing is read.
      const again = proxy.log.length;
      expect(await store.rebuildIndex()).toMatchObject({ objects: 8, known: 6, indexed: 0, blocks: 0, unreadable: [{}, {}] });
      expect(packGets(again, prefix)).toBe(2); // the two objects that are not packs, read again
    } finally {
      await store.close();
    }
  });

  it('counts a pack whose blocks another pack already holds as redundant, and leaves it in the bucket', async () => {
    const prefix = nextPrefix('redundant');
    const x = block(3000);
    const first = await viaProxy({ prefix });
    const indexPath = nextIndex();
    const second = await viaProxy({ prefix, indexPath });
    try {
      // Two stores with indexes of their own each pack the same block: two packs hold it.
      await first.put(x.cid, x.bytes);
      await second.put(x.cid, x.bytes);
    } finally {
      await first.close();
      await second.close();
    }
    const store = await viaProxy({ prefix, indexPath });
    try {
      expect(await store.rebuildIndex()).toEqual({ objects: 2, known: 1, indexed: 0, blocks: 0, redundant: 1, gone: 0, unreadable: [] });
      expect(await listKeys(admin, bucket, `${prefix}packs/`)).toHaveLength(2);
      expectSameBytes(await getVerified(store, x.cid), x.bytes);
    } finally {
      await store.close();
    }
  });
});

describe('S3BlockStore compaction', () => {
  it('rewrites a pack left mostly dead; readers that looked a block up before the move still find it', async () => {
    const prefix = nextPrefix('compact');
    const indexPath = nextIndex();
    const store = await viaProxy({ prefix, indexPath });
    const reader = await viaProxy({ prefix, indexPath }); // as a second process on the same index
    try {
      const blocks = Array.from({ length: 8 }, () => block(50_000));
      for (const b of blocks) await store.put(b.cid, b.bytes, { durable: false });
      await store.flush();
      const oldPack = store.locate(blocks[0]!.cid).key;
      expect(new Set(blocks.map((b) => store.locate(b.cid).key))).toEqual(new Set([oldPack]));
      const full = block(50_000); // a pack of its own, all live: left alone
      await store.put(full.cid, full.bytes);
      const fullPack = store.locate(full.cid).key;
      for (const b of blocks.slice(0, 6)) await store.delete(b.cid);
      const kept = blocks.slice(6); // 2 of 8 live

      // The reader's first GET and first HEAD of the old pack reach the server only after the
      // compaction has deleted it.
      const held = new Set<string>();
      proxy.rule = (req) => {
        if (!req.url.includes(oldPack) || (req.method !== 'GET' && req.method !== 'HEAD') || held.has(req.method)) return undefined;
        held.add(req.method);
        return { delayMs: 2000 };
      };
      const reading = getVerified(reader, kept[0]!.cid);
      const checking = reader.has(kept[1]!.cid);
      await until(() => held.size === 2);
      const report = await store.compact();
      expect(report).toMatchObject({ packs: 1, blocks: 2, skipped: [] });
      expect(report.bytesAfter).toBeLessThan(report.bytesBefore / 3);
      const newPack = store.locate(kept[0]!.cid).key;
      expect(newPack).not.toBe(oldPack);
      const keys = await listKeys(admin, bucket, `${prefix}packs/`);
      expect(keys.sort()).toEqual([fullPack, newPack].sort());

      expectSameBytes(await reading, kept[0]!.bytes);
      expect(await checking).toBe(true);
      for (const b of kept) expectSameBytes(await getVerified(store, b.cid), b.bytes);
      for (const b of blocks.slice(0, 6)) await expectCode(store.get(b.cid), 'BLOCK_NOT_FOUND');
      expect(await store.compact()).toMatchObject({ packs: 0, blocks: 0 });
    } finally {
      await store.close();
      await reader.close();
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
      const ranges = proxy.log
        .slice(mid)
        .map((r) => r.headers.range)
        .filter((r) => r !== undefined);
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
