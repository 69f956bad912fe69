// The real S3-compatible server for the S3 suites: OpenStack Swift with s3api on loopback, started
// by test/services/s3-swift/start.sh (idempotent) and stoppable for fault tests. No mocks. Its
// Debian packages come from test/services/setup.sh; without them start.sh fails, saying so.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import type { S3BlockStoreOptions } from '../../storage/s3/store.ts';

const run = promisify(execFile);

export const SWIFT_SCRIPTS = fileURLToPath(new URL('../services/s3-swift/', import.meta.url));
/**
 * One fixed base dir, so that every suite and stop/start act on the same daemons (and ports: kept
 * in its `ports` file). Not the old `dicom-vault-s3-swift`, whose daemons sit on fixed ports.
 */
export const SWIFT_BASE_DIR = process.env.DICOM_VAULT_TEST_SWIFT_DIR ?? join(tmpdir(), 'dicom-vault-test-swift');
/** The S3 endpoint; its port is the one start.sh picked, so it is set by startSwift(). */
export let S3_ENDPOINT = 'http://127.0.0.1:0';
export const S3_REGION = 'us-east-1';
export const S3_CREDENTIALS = { accessKeyId: 'test:tester', secretAccessKey: 'testing' };

/**
 * The base dir of this file's Swift: the shared one, unless the suite started one of its own in
 * another (a suite that stops the server must not stop the one other suites run on).
 */
let baseDir = SWIFT_BASE_DIR;

/** Starts Swift (5-10 s) from `dir`, which later calls then act on; returns at once if it runs. */
export async function startSwift(dir = baseDir): Promise<void> {
  baseDir = dir;
  await run('bash', [join(SWIFT_SCRIPTS, 'start.sh'), dir], { timeout: 300_000 });
  const port = /^PORT=(\d+)$/m.exec(await readFile(join(dir, 'ports'), 'utf8'))?.[1];
  if (port === undefined) throw new Error(`no PORT in ${join(dir, 'ports')}`);
  S3_ENDPOINT = `http://127.0.0.1:${port}`;
}

/** Stops exactly the daemons start.sh started from the dir startSwift() last used. */
export async function stopSwift(): Promise<void> {
  await run('bash', [join(SWIFT_SCRIPTS, 'stop.sh'), baseDir], { timeout: 60_000 });
  // The proxy's workers exit shortly after their parent: wait until the port refuses.
  for (let i = 0; i < 100; i++) {
    if (!(await healthy())) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('Swift still answers after stop.sh');
}

export async function healthy(endpoint = S3_ENDPOINT): Promise<boolean> {
  try {
    return (await fetch(`${endpoint}/healthcheck`, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

/** Store options for the test server; Swift needs path-style and checksums only when required. */
export function s3StoreOptions(bucket: string, extra: Partial<S3BlockStoreOptions> = {}): S3BlockStoreOptions {
  return {
    bucket,
    endpoint: S3_ENDPOINT,
    region: S3_REGION,
    forcePathStyle: true,
    checksums: 'when_required',
    credentials: S3_CREDENTIALS,
    ...extra,
  };
}

/** The environment a node needs for `--store s3` against the test server. */
export function s3Env(bucket: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DICOM_VAULT_STORE: 's3',
    DICOM_VAULT_S3_ENDPOINT: S3_ENDPOINT,
    DICOM_VAULT_S3_BUCKET: bucket,
    DICOM_VAULT_S3_CHECKSUMS: 'when_required',
    AWS_REGION: S3_REGION,
    AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey,
    ...extra,
  };
}

/** A client that bypasses the store: to create buckets, tamper with objects, count them. */
export function adminClient(endpoint = S3_ENDPOINT): S3Client {
  return new S3Client({
    endpoint,
    region: S3_REGION,
    forcePathStyle: true,
    credentials: S3_CREDENTIALS,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export function uniqueBucket(label: string): string {
  return `dv-${label}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

export async function createBucket(client: S3Client, bucket: string): Promise<void> {
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
}

export async function listKeys(client: S3Client, bucket: string, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Empties and removes a bucket; best effort (a run's buckets are unique anyway). */
export async function removeBucket(client: S3Client, bucket: string): Promise<void> {
  try {
    const keys = await listKeys(client, bucket);
    for (let i = 0; i < keys.length; i += 500) {
      await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 500).map((Key) => ({ Key })) } }));
    }
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
  } catch {
    // left for the next machine reset
  }
}
