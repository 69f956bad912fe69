// A data directory written by the release before the tree layout (format 1: flat chunk and
// instance lists, no associated data; test/fixtures/v1-data-dir, made by commit 2fe1005) is read,
// verified, collected, exported and added to by the current code.
import { chmod, cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CID } from 'multiformats/cid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { decodeInstanceNode, decodeStudyManifest } from '../../../src/format/dag.ts';
import { collectGarbage } from '../../../src/maintenance/gc.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { TRANSPORT_KEY_FILE, exportStudyCar, importStudyCar, loadOrCreateTransportKey } from '../../../src/transfer/car.ts';
import type { FsBlockStore } from '../../../storage/fs.ts';
import { getVerified } from '../../../storage/verified.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const FIXTURE = join(import.meta.dirname, '../../fixtures/v1-data-dir');
const STUDY = '1.2.826.0.1.3680043.8.498.27001';
// The instances the fixture holds, as its README says they were made.
const multiframe = planStudy({ kind: 'multiframe', instances: 1, frames: 3, rows: 64, columns: 128, seed: 27, studyInstanceUID: STUDY }).instances[0]!;
const singles = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 28, studyInstanceUID: STUDY }).instances;
const OCTETS = 'multipart/related; type="application/octet-stream"';

let dir: string;
let node: TestNode;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dv-legacy-'));
  await cp(FIXTURE, join(dir, 'data'), { recursive: true });
  // git keeps no file mode but the executable bit, and the node refuses a master key others can read.
  await chmod(join(dir, 'data', 'master.key'), 0o600);
  node = await startTestNode({ dataDir: join(dir, 'data'), chunkSize: 4096 });
});

afterAll(async () => {
  await node?.stop();
  await rm(dir, { recursive: true, force: true });
});

const instanceUrl = (i: { seriesInstanceUID: string; sopInstanceUID: string }): string =>
  `${node.url}/studies/${STUDY}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`;

describe('a data directory of the flat format (1)', () => {
  it('is what the fixture says: two format-1 versions, a 13-chunk instance listed flat', async () => {
    const latest = node.vault.catalog.latestVersion(STUDY)!;
    expect(latest.version).toBe(2);
    const root = CID.parse(latest.root);
    const manifest = decodeStudyManifest(await getVerified(node.vault.store, root), root);
    expect(manifest.format).toBe(1);
    const inst = node.vault.catalog.getInstance(multiframe.sopInstanceUID)!;
    const nodeCid = CID.parse(inst.nodeCid);
    const instanceNode = decodeInstanceNode(await getVerified(node.vault.store, nodeCid), nodeCid);
    expect([instanceNode.format, instanceNode.links.length, instanceNode.chunkSize]).toEqual([1, 13, 4096]);
  });

  it('serves every instance byte for byte, and a frame from the chunks that hold it', async () => {
    for (const g of [multiframe, ...singles]) {
      const r = await retrieve(instanceUrl(g));
      expect(r.status).toBe(200);
      expect(r.parts[0]!.body.equals(await bytesOf(g))).toBe(true);
    }
    const file = await bytesOf(multiframe);
    const frame = await retrieve(`${instanceUrl(multiframe)}/frames/2`, OCTETS);
    expect(frame.status).toBe(200);
    const start = multiframe.pixelDataOffset + multiframe.frameBytes;
    expect(frame.parts[0]!.body.equals(file.subarray(start, start + multiframe.frameBytes))).toBe(true);
  });

  it('verifies, and takes a new version in format 2 on top of the old ones; all of it verifies and is served', async () => {
    const before = await verifyStudy(node.vault, STUDY);
    expect([before.ok, before.versions, before.instances, before.problems]).toEqual([true, 2, 3, []]);

    const added = planStudy({ kind: 'single', instances: 1, rows: 40, columns: 40, seed: 29, studyInstanceUID: STUDY }).instances[0]!;
    expect((await stow(node.url, [await bytesOf(added)])).status).toBe(200);
    const latest = node.vault.catalog.latestVersion(STUDY)!;
    const root = CID.parse(latest.root);
    const manifest = decodeStudyManifest(await getVerified(node.vault.store, root), root);
    expect([manifest.format, manifest.version]).toEqual([2, 3]);
    const prev = decodeStudyManifest(await getVerified(node.vault.store, manifest.prev!), manifest.prev!);
    expect(prev.format).toBe(1);

    const after = await verifyStudy(node.vault, STUDY);
    expect([after.ok, after.versions, after.instances, after.problems]).toEqual([true, 3, 4, []]);
    const study = await retrieve(`${node.url}/studies/${STUDY}`);
    expect(study.status).toBe(200);
    expect(study.parts).toHaveLength(4);
  });

  it('keeps every block of both formats through gc', async () => {
    const store = node.vault.store as FsBlockStore;
    const roots = node.vault.catalog.versions(STUDY).map((v) => CID.parse(v.root));
    const report = await collectGarbage(store, roots, { graceS: 3600, now: Date.now() + 2 * 3600_000 });
    expect(report.deleted).toBe(0);
    expect(report.reachable).toBe(report.blocks);
    expect((await verifyStudy(node.vault, STUDY)).ok).toBe(true);
  });

  it('moves to another node as a CAR, readable there byte for byte', async () => {
    const dest = await startTestNode({ chunkSize: 4096 });
    try {
      const file = join(dir, 'study.car');
      const receiver = loadOrCreateTransportKey(join(dest.dataDir, TRANSPORT_KEY_FILE));
      await exportStudyCar(node.vault, STUDY, file, { recipient: receiver.publicKey });
      const report = await importStudyCar({ ...dest.vault, transportKey: receiver }, file);
      expect([report.readable, report.versions, report.instances]).toEqual([true, 3, 4]);
      const r = await retrieve(`${dest.url}/studies/${STUDY}/series/${multiframe.seriesInstanceUID}/instances/${multiframe.sopInstanceUID}`);
      expect(r.parts[0]!.body.equals(await bytesOf(multiframe))).toBe(true);
    } finally {
      await dest.stop();
    }
  });
});
