// A link node missing or corrupt in the middle of a large instance (format 2: its chunks listed
// through link nodes, src/format/tree.ts): a read that needs that branch fails with the node's
// CID named, `dicom-vault verify` names it, and frames in the other branches are still served.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { decodeInstanceNode } from '../../../src/format/dag.ts';
import { getVerified } from '../../../storage/verified.ts';
import { blockFileOf } from '../../support/blocks.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { run } from '../../support/process.ts';

const CHUNK = 4096;
const OCTETS = 'multipart/related; type="application/octet-stream"';
// 40 frames of 256 x 256 x 16 bits: 5 MiB, 1,282 chunks of 4 KiB, so two link nodes of the
// default fanout (1,024) under the instance node: chunks 0-1023 and 1024-1281.
const study = planStudy({ kind: 'multiframe', instances: 1, frames: 40, rows: 256, columns: 256, seed: 61 });
const g = study.instances[0]!;
let node: TestNode;
let file: Buffer;
let linkNodes: CID[];

const frameUrl = (n: number): string => `${node.url}/studies/${study.studyInstanceUID}/series/${g.seriesInstanceUID}/instances/${g.sopInstanceUID}/frames/${n}`;
/** The chunk index of frame n's first and last byte. */
const chunksOfFrame = (n: number): [number, number] => {
  const start = g.pixelDataOffset + (n - 1) * g.frameBytes;
  return [Math.floor(start / CHUNK), Math.floor((start + g.frameBytes - 1) / CHUNK)];
};

beforeAll(async () => {
  node = await startTestNode({ chunkSize: CHUNK });
  file = await bytesOf(g);
  expect((await stow(node.url, [file])).status).toBe(200);
  const inst = node.vault.catalog.getInstance(g.sopInstanceUID)!;
  const nodeCid = CID.parse(inst.nodeCid);
  const instanceNode = decodeInstanceNode(await getVerified(node.vault.store, nodeCid), nodeCid);
  expect([instanceNode.depth, instanceNode.links.length]).toEqual([1, 2]);
  linkNodes = instanceNode.links;
});

afterAll(async () => {
  await node?.stop();
});

/** Frames wholly in chunks 0-1023 (first link node) and wholly in 1024 and after (second). */
function framesByBranch(): { first: number[]; second: number[] } {
  const first: number[] = [];
  const second: number[] = [];
  for (let n = 1; n <= 40; n++) {
    const [a, b] = chunksOfFrame(n);
    if (b < 1024) first.push(n);
    else if (a >= 1024) second.push(n);
  }
  return { first, second };
}

async function expectFrame(n: number): Promise<void> {
  const r = await retrieve(frameUrl(n), OCTETS);
  expect(r.status).toBe(200);
  const start = g.pixelDataOffset + (n - 1) * g.frameBytes;
  expect(r.parts[0]!.body.equals(file.subarray(start, start + g.frameBytes))).toBe(true);
}

async function verifyCli(): Promise<{ code: number; report: { ok: boolean; problems: Array<{ kind: string; cid: string; where: string }> } }> {
  const r = await run(['verify', study.studyInstanceUID, '--json', '--data-dir', node.dataDir, '--chunk-size', String(CHUNK)]);
  return { code: r.code, report: JSON.parse(r.stdout) };
}

describe('a link node in the middle of a large instance', () => {
  it('missing: frames under it fail naming it, frames under the other are served, verify names it alone', async () => {
    const { first, second } = framesByBranch();
    expect(first.length).toBeGreaterThan(10);
    expect(second.length).toBeGreaterThan(5);
    const victim = linkNodes[1]!;
    const path = blockFileOf(join(node.dataDir, 'blocks'), victim);
    const saved = await readFile(path);
    await rm(path);
    try {
      const r = await retrieve(frameUrl(second[2]!), OCTETS);
      expect(r.status).toBe(500);
      const err = JSON.parse(r.raw.toString()) as { code: string; details?: { cid?: string } };
      expect(err.code).toBe('BLOCK_NOT_FOUND');
      expect(err.details?.cid).toBe(victim.toString());
      for (const n of [first[0]!, first.at(-1)!]) await expectFrame(n);

      const { code, report } = await verifyCli();
      expect(code).not.toBe(0);
      expect(report.ok).toBe(false);
      expect(report.problems).toEqual([expect.objectContaining({ kind: 'missing', cid: victim.toString() })]);
      expect(report.problems[0]!.where).toContain(`leaves 1024-${Math.ceil(file.length / CHUNK) - 1}`);
    } finally {
      await writeFile(path, saved);
    }
    await expectFrame(second[2]!);
  });

  it('corrupt (bytes altered on disk, or another valid link node in its place): the same, as BLOCK_CORRUPT', async () => {
    const { first, second } = framesByBranch();
    const victim = linkNodes[0]!;
    const path = blockFileOf(join(node.dataDir, 'blocks'), victim);
    const saved = await readFile(path);
    const flipped = Buffer.from(saved);
    flipped[flipped.length >> 1]! ^= 0x01;
    // And a well-formed link node of the wrong shape (a store that does not verify could hand it back: it fails its CID here).
    const other = Buffer.from(dagCbor.encode({ type: 'dicom-vault/links@1', links: [] }));
    try {
      for (const bytes of [flipped, other]) {
        await writeFile(path, bytes);
        const r = await retrieve(frameUrl(first[3]!), OCTETS);
        expect(r.status).toBe(500);
        const err = JSON.parse(r.raw.toString()) as { code: string; details?: { cid?: string } };
        expect([err.code, err.details?.cid]).toEqual(['BLOCK_CORRUPT', victim.toString()]);
        await expectFrame(second[0]!);
        const { report } = await verifyCli();
        expect(report.problems).toEqual([expect.objectContaining({ kind: 'corrupt', cid: victim.toString() })]);
      }
    } finally {
      await writeFile(path, saved);
    }
    expect((await verifyCli()).report.ok).toBe(true);
  });
});
