// What the S3BlockStore suites (test/integration/storage/s3-*.test.ts) share: a bucket of their
// own on the test server of test/support/s3.ts, a fault-injecting proxy in front of it, index
// files in a temp directory, and stores opened through the proxy. useS3Suite() registers the
// hooks; each suite file gets its own bucket, proxy and counters (vitest runs each file in a
// process of its own), while the Swift server is shared unless the file asks for one of its own.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { CID } from 'multiformats/cid';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { rawCid } from '../../storage/cid.ts';
import { S3BlockStore, type S3BlockStoreOptions } from '../../storage/s3/store.ts';
import { startFaultProxy, type FaultProxy } from './s3-fault-proxy.ts';
import { adminClient, createBucket, removeBucket, S3_ENDPOINT, s3StoreOptions, startSwift, stopSwift, uniqueBucket } from './s3.ts';

export let admin: S3Client;
export let bucket: string;
export let proxy: FaultProxy;
let prefixes = 0;
export const nextPrefix = (label: string): string => `${label}-${++prefixes}/`;
/** Index files of the stores opened here (one per store unless a test shares one). */
let indexDir: string;
let indexes = 0;
export const nextIndex = (): string => join(indexDir, `index-${++indexes}.db`);

/**
 * Registers the suite's hooks. With `ownSwift`, the file runs on a Swift server of its own,
 * started in a fresh directory and stopped after the file: for a suite that stops the server,
 * which would fail the suites running beside it on the shared one.
 */
export function useS3Suite({ ownSwift = false } = {}): void {
  let swiftDir: string | undefined;
  beforeAll(async () => {
    indexDir = await mkdtemp(join(tmpdir(), 'dicom-vault-s3-index-'));
    if (ownSwift) swiftDir = await mkdtemp(join(tmpdir(), 'dicom-vault-test-swift-own-'));
    await startSwift(swiftDir);
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
    if (swiftDir) {
      await stopSwift();
      await rm(swiftDir, { recursive: true, force: true });
    }
  });

  // Every test sets the proxy's rule it needs; none outlives its test.
  afterEach(() => {
    if (proxy) proxy.rule = () => undefined;
  });
}

export function block(size: number): { cid: CID; bytes: Uint8Array } {
  const bytes = randomBytes(size);
  return { cid: rawCid(bytes), bytes };
}

/**
 * A store reached through the fault proxy (its rule is reset after each test), packing blocks
 * (the default) with an index of its own unless `extra` says otherwise.
 */
export function viaProxy(extra: Partial<S3BlockStoreOptions> = {}): Promise<S3BlockStore> {
  return S3BlockStore.open(s3StoreOptions(bucket, { endpoint: proxy.url, prefix: nextPrefix('p'), indexPath: nextIndex(), ...extra }));
}

export async function getObject(key: string): Promise<Uint8Array> {
  const res = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return res.Body!.transformToByteArray();
}

/** GETs of pack objects under `prefix` that went through the proxy since log entry `from`. */
export function packGets(from: number, prefix: string): number {
  return proxy.log.slice(from).filter((r) => r.method === 'GET' && r.url.includes(`/${prefix}packs/`)).length;
}

export async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 50));
  expect(check()).toBe(true);
}
