// Erasure on a node whose blocks live in an IPFS repo (--store ipfs): the erased study's version
// roots are unpinned and every one of its blocks leaves the local blockstore; the other study
// stays pinned and readable.
import { afterEach, describe, expect, it } from 'vitest';
import { CID } from 'multiformats/cid';
import * as dagCbor from '@ipld/dag-cbor';
import { planStudy } from '../../../bench/generate.ts';
import { childLinks } from '../../../src/format/dag.ts';
import type { IpfsBlockStore } from '../../../storage/ipfs.ts';
import { bytesOf } from '../../support/generated.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const nodes: TestNode[] = [];
afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
});

/** Every block of a study version (manifest, instance nodes, chunks), by walking its links. */
async function blocksOf(store: IpfsBlockStore, root: CID): Promise<CID[]> {
  const out: CID[] = [root];
  for (const node of childLinks(dagCbor.decode(await store.get(root)))) {
    out.push(node);
    out.push(...childLinks(dagCbor.decode(await store.get(node))));
  }
  return out;
}

describe('erasure on --store ipfs', () => {
  it('unpins the erased study and deletes its blocks from the repo; the other study stays pinned', async () => {
    const node = await startTestNode({ chunkSize: 4096, flags: { store: 'ipfs' } });
    nodes.push(node);
    const store = node.vault.store as IpfsBlockStore;
    const urls: string[] = [];
    const roots: CID[] = [];
    for (const [seed, patientId] of [
      [9401, 'IPFS-GONE'],
      [9402, 'IPFS-KEPT'],
    ] as const) {
      const s = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed, patientId });
      expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)))).status).toBe(200);
      const i = s.instances[0]!;
      urls.push(`${node.url}/studies/${s.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`);
      roots.push(CID.parse(node.vault.catalog.latestVersion(s.studyInstanceUID)!.root));
    }
    const [goneRoot, keptRoot] = roots as [CID, CID];
    const goneBlocks = await blocksOf(store, goneRoot);
    const keptBlocks = await blocksOf(store, keptRoot);
    expect(await store.isPinnedRoot(goneRoot)).toBe(true);
    for (const b of goneBlocks) expect(await store.isPinned(b)).toBe(true);

    const cert = await node.vault.erasure.erase({ kind: 'patient', patientId: 'IPFS-GONE' }, { requestedBy: 'test' });
    expect(cert.studies[0]!.blocks).toBe(goneBlocks.length);

    expect(await store.isPinnedRoot(goneRoot)).toBe(false);
    for (const b of goneBlocks) {
      expect(await store.has(b), b.toString()).toBe(false);
      expect(await store.isPinned(b)).toBe(false);
    }
    for (const b of keptBlocks) expect(await store.isPinned(b)).toBe(true);
    expect((await retrieve(urls[0]!)).status).toBe(404);
    expect((await retrieve(urls[1]!)).status).toBe(200);
    // And gc afterwards finds nothing of it to collect.
    const gc = await store.gc({ graceS: 3600, keep: [keptRoot] });
    expect(gc.deleted).toBe(0);
  });
});
