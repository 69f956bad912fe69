// A version's added instances as a tree of link nodes (format 2): written by the study writer,
// walked by verify, WADO, gc and CAR export. Fanout 3 here, so that 11 instances make a tree of
// depth 2 (the default, 1,024, needs 1,025 instances for one level).
import { join } from 'node:path';
import { CID } from 'multiformats/cid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { ingestInstance } from '../../../ingest/instance.ts';
import { StudyWriter } from '../../../ingest/study.ts';
import { addedTree, decodeStudyManifest } from '../../../src/format/dag.ts';
import { collectGarbage } from '../../../src/maintenance/gc.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { TRANSPORT_KEY_FILE, exportStudyCar, importStudyCar, loadOrCreateTransportKey } from '../../../src/transfer/car.ts';
import type { FsBlockStore } from '../../../storage/fs.ts';
import { getVerified } from '../../../storage/verified.ts';
import { blockFileOf } from '../../support/blocks.ts';
import { retrieve } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { rm } from 'node:fs/promises';

const study = planStudy({ kind: 'single', instances: 11, rows: 16, columns: 16, seed: 71 });
let node: TestNode;
let root: CID;

beforeAll(async () => {
  node = await startTestNode();
  const { store, keys, catalog } = node.vault;
  const writer = new StudyWriter({ store, keys, catalog, fanout: 3 });
  const ingested = [];
  for (const g of study.instances) ingested.push(await ingestInstance(g.open(), { store, keys }));
  const result = await writer.commit(study.studyInstanceUID, ingested);
  root = CID.parse(result.version!.root);
});

afterAll(async () => {
  await node?.stop();
});

describe("a version's added instances as a tree", () => {
  it('is written as link nodes under the manifest, and read back in order', async () => {
    const manifest = decodeStudyManifest(await getVerified(node.vault.store, root), root);
    expect([manifest.format, manifest.count, manifest.depth, manifest.added.length]).toEqual([2, 11, 2, 2]);
    const tree = addedTree(manifest, root, (c) => getVerified(node.vault.store, c));
    const listed: string[] = [];
    for await (const { cid } of tree.leaves()) listed.push(cid.toString());
    expect(listed).toEqual(study.instances.map((g) => node.vault.catalog.getInstance(g.sopInstanceUID)!.nodeCid));
  });

  it('verifies, is served whole, is kept by gc and moves as a CAR', async () => {
    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect([report.ok, report.instances, report.problems]).toEqual([true, 11, []]);
    const r = await retrieve(`${node.url}/studies/${study.studyInstanceUID}`);
    expect(r.parts).toHaveLength(11);
    const gc = await collectGarbage(node.vault.store as FsBlockStore, [root], { graceS: 3600, now: Date.now() + 2 * 3600_000 });
    expect([gc.deleted, gc.reachable]).toEqual([0, gc.blocks]);

    const dest = await startTestNode();
    try {
      const file = join(dest.dataDir, 'study.car');
      const receiver = loadOrCreateTransportKey(join(dest.dataDir, TRANSPORT_KEY_FILE));
      const exported = await exportStudyCar(node.vault, study.studyInstanceUID, file, { recipient: receiver.publicKey });
      expect(exported.instances).toBe(11);
      const imported = await importStudyCar({ ...dest.vault, transportKey: receiver }, file);
      expect([imported.readable, imported.instances]).toEqual([true, 11]);
      const g = study.instances[7]!;
      const one = await retrieve(`${dest.url}/studies/${study.studyInstanceUID}/series/${g.seriesInstanceUID}/instances/${g.sopInstanceUID}`);
      expect(one.parts[0]!.body.equals(await bytesOf(g))).toBe(true);
    } finally {
      await dest.stop();
    }
  });

  it('with a link node of the manifest missing: verify names it, and the instances under the other branches still verify', async () => {
    const manifest = decodeStudyManifest(await getVerified(node.vault.store, root), root);
    const victim = manifest.added[1]!; // instances 9-10
    await rm(blockFileOf(join(node.dataDir, 'blocks'), victim));
    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect(report.instances).toBe(9);
    expect(report.problems.filter((p) => p.kind === 'missing')).toEqual([expect.objectContaining({ cid: victim.toString() })]);
    // The two instances it held are reported as not reached from the DAG: named, not lost silently.
    expect(report.problems.filter((p) => p.kind === 'mismatch')).toHaveLength(2);
  });
});
