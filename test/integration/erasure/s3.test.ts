// Erasure on a node whose blocks live in S3 packs (the local Swift of test/services): the erased
// study's blocks leave the pack index, a pack left with none is deleted, and a scan of every
// object in the bucket finds none of the patient's ID, name, UIDs or pixel bytes; the other
// patient's study still reads.
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CID } from 'multiformats/cid';
import { addedTree, chunkTree, decodeInstanceNode, decodeStudyManifest } from '../../../src/format/dag.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { bytesOf } from '../../support/generated.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { startNodeWithTester } from '../../support/node.ts';
import { adminClient, createBucket, listKeys, removeBucket, s3StoreOptions, startSwift, uniqueBucket } from '../../support/s3.ts';

let admin: S3Client;
let bucket: string;
let dataDir: string;
let node: RunningNode;

beforeAll(async () => {
  await startSwift();
  admin = adminClient();
  bucket = uniqueBucket('erasure');
  await createBucket(admin, bucket);
  dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-erasure-s3-'));
  const options = {
    ...resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'chunk-size': '4096', 'dimse-port': 'off' }, {}),
    // Small packs: each study's blocks land in packs of their own.
    blockStore: { kind: 's3' as const, s3: s3StoreOptions(bucket, { indexPath: join(dataDir, 's3-index.db'), packBytes: 16 * 1024 }) },
  };
  node = await startNodeWithTester(options, createLogger('silent'));
}, 300_000);

afterAll(async () => {
  await node?.close();
  if (admin && bucket) await removeBucket(admin, bucket);
  admin?.destroy();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

async function objects(): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const key of await listKeys(admin, bucket)) {
    const r = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    out.set(key, Buffer.from(await r.Body!.transformToByteArray()));
  }
  return out;
}

describe('erasure on --store s3', () => {
  it('deletes the erased study from the bucket; no object names the patient; the other study still reads', async () => {
    const stored: Array<{ url: string; bytes: Buffer; root: CID; needles: Uint8Array[] }> = [];
    for (const [seed, patientId] of [
      [9501, 'S3-GONE-PAT'],
      [9502, 'S3-KEPT-PAT'],
    ] as const) {
      const s = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed, patientId });
      const bytes = await Promise.all(s.instances.map(bytesOf));
      expect((await stow(node.url, bytes)).status).toBe(200);
      const i = s.instances[0]!;
      const b = bytes[0]!;
      stored.push({
        url: `${node.url}/studies/${s.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`,
        bytes: b,
        root: CID.parse(node.vault.catalog.latestVersion(s.studyInstanceUID)!.root),
        needles: [patientId, `BENCH^${patientId}`, s.studyInstanceUID, i.seriesInstanceUID, ...s.instances.map((x) => x.sopInstanceUID)]
          .map((t): Uint8Array => Buffer.from(t))
          .concat([b.subarray(b.length - 4096, b.length - 4032)]),
      });
    }
    const [gone, kept] = stored as [(typeof stored)[0], (typeof stored)[0]];
    await node.vault.store.flush?.();
    const before = await objects();
    expect(before.size).toBeGreaterThan(0);
    expect(await node.vault.store.has(gone.root)).toBe(true);

    const cert = await node.vault.erasure.erase({ kind: 'patient', patientId: 'S3-GONE-PAT' }, { requestedBy: 'test' });
    expect(cert.studies[0]!.blocks).toBeGreaterThan(0);
    expect(await node.vault.store.has(gone.root)).toBe(false);
    expect((await retrieve(gone.url)).status).toBe(404);

    const after = await objects();
    // Packs that held only the erased study's blocks are gone from the bucket.
    expect(after.size).toBeLessThan(before.size);
    for (const [key, body] of after) for (const n of gone.needles) expect(body.includes(Buffer.from(n)), `${key}`).toBe(false);
    const r = await retrieve(kept.url);
    expect(r.status).toBe(200);
    expect(r.parts[0]!.body.equals(kept.bytes)).toBe(true);
  });

  it('rewrites at once a pack the erased study shared with another, though it stays more than half live: no erased ciphertext is left in the bucket', async () => {
    const shared = uniqueBucket('erasure-shared');
    await createBucket(admin, shared);
    const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-erasure-s3-shared-'));
    const options = {
      ...resolveNodeOptions({ port: '0', 'data-dir': dir, 'chunk-size': '4096', 'dimse-port': 'off' }, {}),
      // Packs of 1 MiB: both studies, sent in one request, land in one pack.
      blockStore: { kind: 's3' as const, s3: s3StoreOptions(shared, { indexPath: join(dir, 's3-index.db'), packBytes: 1024 * 1024 }) },
    };
    const n = await startNodeWithTester(options, createLogger('silent'));
    const all = async (): Promise<Map<string, Buffer>> => {
      const out = new Map<string, Buffer>();
      for (const key of await listKeys(admin, shared)) {
        const r = await admin.send(new GetObjectCommand({ Bucket: shared, Key: key }));
        out.set(key, Buffer.from(await r.Body!.transformToByteArray()));
      }
      return out;
    };
    try {
      const gone = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 9511, patientId: 'S3-SHARED-GONE' });
      const kept = planStudy({ kind: 'single', instances: 6, rows: 64, columns: 64, seed: 9512, patientId: 'S3-SHARED-KEPT' });
      const keptBytes = await Promise.all(kept.instances.map(bytesOf));
      expect((await stow(n.url, [await bytesOf(gone.instances[0]!), ...keptBytes])).status).toBe(200);
      await n.vault.store.flush?.();
      // Every block of each study, by 48 bytes from its middle (ciphertext: unique to the block).
      const slices = async (study: string): Promise<Buffer[]> => {
        const out: Buffer[] = [];
        for (let cursor: CID | null = CID.parse(n.vault.catalog.latestVersion(study)!.root); cursor !== null; ) {
          const m = decodeStudyManifest(await n.vault.store.get(cursor), cursor);
          // Link nodes too (format 2's trees), as the walks read them.
          const read = async (cid: CID): Promise<Uint8Array> => {
            const b = await n.vault.store.get(cid);
            out.push(mid(b));
            return b;
          };
          for await (const { cid: node } of addedTree(m, cursor, read).leaves()) {
            const inst = decodeInstanceNode(await n.vault.store.get(node), node);
            for await (const { cid: c } of chunkTree(inst, node, read).leaves()) out.push(mid(await n.vault.store.get(c)));
            out.push(mid(await n.vault.store.get(node)));
          }
          out.push(mid(await n.vault.store.get(cursor)));
          cursor = m.prev;
        }
        return out;
      };
      const goneBlocks = await slices(gone.studyInstanceUID);
      const keptBlocks = await slices(kept.studyInstanceUID);
      const before = await all();
      // One pack holds blocks of both studies, and the kept study's are most of it.
      const sharedPack = [...before.entries()].find(([, body]) => goneBlocks.some((b) => body.includes(b)) && keptBlocks.some((b) => body.includes(b)));
      expect(sharedPack, 'a pack with blocks of both studies').toBeDefined();

      await n.vault.erasure.erase({ kind: 'patient', patientId: 'S3-SHARED-GONE' }, { requestedBy: 'test' });
      const after = await all();
      expect(after.has(sharedPack![0])).toBe(false); // rewritten, the old object deleted
      for (const [key, body] of after) for (const b of goneBlocks) expect(body.includes(b), key).toBe(false);
      // The kept study's blocks moved with it and read intact.
      for (const b of keptBlocks) expect([...after.values()].some((body) => body.includes(b))).toBe(true);
      const i = kept.instances[0]!;
      const r = await retrieve(`${n.url}/studies/${kept.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`);
      expect(r.parts[0]!.body.equals(keptBytes[0]!)).toBe(true);
    } finally {
      await n.close();
      await removeBucket(admin, shared);
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

function mid(b: Uint8Array): Buffer {
  const at = Math.max(0, (b.length >> 1) - 24);
  return Buffer.from(b.subarray(at, at + 48));
}
