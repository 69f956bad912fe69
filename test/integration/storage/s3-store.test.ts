// The S3 backend against a real S3-compatible server (Swift's s3api on loopback, shared by the
// S3 suites: test/support/s3.ts): the shared conformance suite (packed, the default, and one
// object per block), start-up checks, and retries and deadlines through a fault-injecting proxy.
// Packing: s3-packing.test.ts; a node on --store s3: s3-node.test.ts.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { startNode } from '../../../src/shell/server.ts';
import { openBlockStore, resolveBlockStoreConfig } from '../../../storage/open.ts';
import { S3BlockStore } from '../../../storage/s3/store.ts';
import { getVerified } from '../../../storage/verified.ts';
import { listKeys, s3Env, s3StoreOptions, uniqueBucket } from '../../support/s3.ts';
import { admin, block, bucket, getObject, nextIndex, nextPrefix, proxy, useS3Suite, viaProxy } from '../../support/s3-suite.ts';
import { blockStoreConformance, expectCode, expectSameBytes } from '../../support/storage-conformance.ts';

useS3Suite();

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

type Fault = { status: number; code: string };
