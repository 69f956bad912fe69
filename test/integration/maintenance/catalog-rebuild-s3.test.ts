// `dicom-vault catalog rebuild --store s3` (the local Swift of test/services): with catalog.db and
// the pack index (s3-index.db) both lost, the packs are indexed again from the bucket and the
// catalog rebuilt from the manifests in them; the node then answers as before.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { type NodeOptions, resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import type { CatalogRebuildReport } from '../../../src/transfer/catalog-rebuild.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startNodeWithTester } from '../../support/node.ts';
import { run } from '../../support/process.ts';
import { adminClient, createBucket, removeBucket, s3Env, startSwift, uniqueBucket } from '../../support/s3.ts';

let admin: S3Client;
let bucket: string;
let dataDir: string;
let options: NodeOptions;
let node: RunningNode | undefined;

const first = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 2721, patientId: 'REBUILD-S3-A' });
const second = planStudy({
  kind: 'single',
  instances: 1,
  rows: 32,
  columns: 32,
  seed: 2722,
  patientId: 'REBUILD-S3-A',
  studyInstanceUID: first.studyInstanceUID,
});
const other = planStudy({ kind: 'multiframe', instances: 1, frames: 2, rows: 64, columns: 64, seed: 2723, patientId: 'REBUILD-S3-B' });
const STUDIES = [first.studyInstanceUID, other.studyInstanceUID];

beforeAll(async () => {
  await startSwift();
  admin = adminClient();
  bucket = uniqueBucket('rebuild');
  await createBucket(admin, bucket);
  dataDir = await mkdtemp(join(tmpdir(), 'dv-catalog-rebuild-s3-'));
  options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'chunk-size': '4096', 'dimse-port': 'off' }, s3Env(bucket));
}, 300_000);

afterAll(async () => {
  await node?.close();
  if (admin && bucket) await removeBucket(admin, bucket);
  admin?.destroy();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

async function observe(url: string): Promise<Record<string, string>> {
  const seen: Record<string, string> = {};
  for (const path of ['/studies?includefield=all', ...STUDIES.map((s) => `/studies/${s}/metadata`)]) {
    const res = await fetch(`${url}${path}`);
    seen[path] = `${res.status} ${(await res.text()).replaceAll(new URL(url).origin, 'ORIGIN')}`;
  }
  for (const s of STUDIES) {
    const r = await retrieve(`${url}/studies/${s}`);
    seen[s] = `${r.status} ${r.parts.map((p) => p.body.toString('base64')).join(',')}`;
  }
  return seen;
}

describe('catalog rebuild on --store s3', () => {
  it('indexes the packs again and rebuilds the catalog from them; the node answers as before', async () => {
    node = await startNodeWithTester(options, createLogger('silent'));
    for (const study of [first, second, other]) expect((await stow(node.url, await Promise.all(study.instances.map(bytesOf)))).status).toBe(200);
    const before = await observe(node.url);
    const versions = STUDIES.map((s) => node!.vault.catalog.versions(s).map((v) => [v.version, v.root, v.prev]));
    await node.close();
    node = undefined;
    for (const f of ['catalog.db', 'catalog.db-wal', 'catalog.db-shm', 's3-index.db', 's3-index.db-wal', 's3-index.db-shm'])
      await rm(join(dataDir, f), { force: true });

    const r = await run(['catalog', 'rebuild', '--data-dir', dataDir, '--json'], s3Env(bucket));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as CatalogRebuildReport;
    expect(report.studies.map((s) => [s.studyInstanceUID, s.versions, s.instances]).sort()).toEqual(
      [
        [first.studyInstanceUID, 2, 3],
        [other.studyInstanceUID, 1, 1],
      ].sort(),
    );
    expect(report.manifests).toBe(3);

    node = await startNodeWithTester(options, createLogger('silent'));
    expect(STUDIES.map((s) => node!.vault.catalog.versions(s).map((v) => [v.version, v.root, v.prev]))).toEqual(versions);
    expect(await observe(node.url)).toEqual(before);
  }, 300_000);
});
