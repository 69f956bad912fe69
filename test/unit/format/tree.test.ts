// The tree of link nodes (src/format/tree.ts): built as leaves stream in, read branch by branch.
import { createHash } from 'node:crypto';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { describe, expect, it } from 'vitest';
import { VaultError } from '../../../src/core/errors.ts';
import { DEFAULT_FANOUT, LinkTree, LinkTreeBuilder, MAX_FANOUT, type EncodedNode } from '../../../src/format/tree.ts';

const leaf = (i: number): CID => CID.createV1(raw.code, Digest.create(0x12, createHash('sha256').update(`leaf ${i}`).digest()));

/** Builds a tree of `count` leaves; returns its blocks, top and the most links the builder held at once. */
function build(
  count: number,
  fanout: number,
  trackHeld = false,
): { blocks: Map<string, EncodedNode>; top: ReturnType<LinkTreeBuilder['finish']>; held: number } {
  const builder = new LinkTreeBuilder(fanout);
  const blocks = new Map<string, EncodedNode>();
  let held = 0;
  for (let i = 0; i < count; i++) {
    for (const n of builder.push(leaf(i))) blocks.set(n.cid.toString(), n);
    if (trackHeld) held = Math.max(held, builder.pending().length);
  }
  const top = builder.finish();
  for (const n of top.nodes) blocks.set(n.cid.toString(), n);
  return { blocks, top, held };
}

function reader(blocks: Map<string, EncodedNode>, top: { depth: number; count: number; links: CID[] }, fanout: number, reads: string[] = []): LinkTree {
  return new LinkTree({
    fanout,
    ...top,
    leafCodec: raw.code,
    what: 'instance test',
    read: async (cid) => {
      reads.push(cid.toString());
      const b = blocks.get(cid.toString());
      if (b === undefined) throw new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found`, { details: { cid: cid.toString() } });
      return b.bytes;
    },
  });
}

describe('LinkTreeBuilder and LinkTree', () => {
  it('give back every leaf in order, for counts around each level boundary, with the least depth', async () => {
    for (const fanout of [2, 3, 16]) {
      for (const count of [0, 1, fanout - 1, fanout, fanout + 1, fanout ** 2, fanout ** 2 + 1, fanout ** 3 - 1, fanout ** 3 + 2]) {
        const { blocks, top } = build(count, fanout);
        expect(top.count).toBe(count);
        expect(top.links.length).toBeLessThanOrEqual(fanout);
        // The least depth that holds `count` leaves under at most `fanout` top links.
        let depth = 0;
        while (fanout ** (depth + 1) < count) depth++;
        expect([fanout, count, top.depth]).toEqual([fanout, count, depth]);
        const tree = reader(blocks, top, fanout);
        const got: string[] = [];
        for await (const { index, cid } of tree.leaves()) {
          expect(index).toBe(got.length);
          got.push(cid.toString());
        }
        expect(got).toEqual(Array.from({ length: count }, (_, i) => leaf(i).toString()));
      }
    }
  });

  it('holds at most fanout links per level while building, whatever the count', () => {
    const small = build(100, 4, true);
    const large = build(20_000, 4, true);
    expect(large.top.depth).toBe(7);
    expect(small.held).toBeLessThanOrEqual(4 * (small.top.depth + 1));
    expect(large.held).toBeLessThanOrEqual(4 * (large.top.depth + 1));
  });

  it('reads only the link nodes on the path to a leaf', async () => {
    const fanout = 8;
    const { blocks, top } = build(8 ** 3 + 5, fanout); // depth 3: 3 link nodes on every path
    expect(top.depth).toBe(3);
    const reads: string[] = [];
    const tree = reader(blocks, top, fanout, reads);
    expect((await tree.leaf(300)).equals(leaf(300))).toBe(true);
    expect(reads).toHaveLength(3);
    // A neighbour in the same branch reads nothing more; one in another branch reads its own path only.
    await tree.leaf(301);
    expect(reads).toHaveLength(3);
    await tree.leaf(7); // shares the node under its top link with leaf 300
    expect(reads).toHaveLength(5);
    await tree.leaf(515); // under the other top link
    expect(reads).toHaveLength(8);
    expect(tree.nodeReads).toBe(8);
  });

  it('keeps each link node of a 1,024 fanout under 64 KiB, and refuses a fanout whose nodes could pass 1 MiB', () => {
    const { blocks } = build(DEFAULT_FANOUT * 2 + 1, DEFAULT_FANOUT);
    const sizes = [...blocks.values()].map((b) => b.bytes.length);
    expect(Math.max(...sizes)).toBeLessThan(64 * 1024);
    const full = build(MAX_FANOUT + 1, MAX_FANOUT);
    expect(Math.max(...[...full.blocks.values()].map((b) => b.bytes.length))).toBeLessThan(1024 * 1024);
    expect(() => new LinkTreeBuilder(MAX_FANOUT + 1)).toThrow(/fanout/);
    expect(() => new LinkTreeBuilder(1)).toThrow(/fanout/);
  });

  it('fails the leaves under a missing or altered link node, naming it and the leaves, and serves the other branches', async () => {
    const fanout = 4;
    const { blocks, top } = build(4 ** 3, fanout); // depth 2: 4 top links over 16 link nodes
    expect(top.depth).toBe(2);
    const tree = reader(blocks, top, fanout);
    // The link node holding leaves 20-23 (level 1, number 5).
    const victim = (dagCbor.decode(blocks.get(top.links[1]!.toString())!.bytes) as { links: CID[] }).links[1]!;
    blocks.delete(victim.toString());
    const err = await tree.leaf(21).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BLOCK_NOT_FOUND', details: { cid: victim.toString(), firstLeaf: 20, endLeaf: 24 } });
    expect(String((err as Error).message)).toContain(victim.toString());
    expect(String((err as Error).message)).toContain('leaves 20-23');
    expect((await tree.leaf(19)).equals(leaf(19))).toBe(true);
    expect((await tree.leaf(24)).equals(leaf(24))).toBe(true);

    // Altered: a node of the wrong shape in its place (as a store that does not verify would hand it back).
    blocks.set(victim.toString(), { cid: victim, bytes: dagCbor.encode({ type: 'dicom-vault/links@1', links: [leaf(1)] }) });
    const shape = await reader(blocks, top, fanout)
      .leaf(22)
      .catch((e: unknown) => e);
    expect(shape).toMatchObject({ code: 'BLOCK_CORRUPT', details: { cid: victim.toString(), firstLeaf: 20, endLeaf: 24 } });
  });

  it('refuses top links that do not fit the declared shape', () => {
    const { blocks, top } = build(10, 4);
    expect(() => reader(blocks, { ...top, count: 30 }, 4)).toThrow(/not well formed/);
    expect(() => reader(blocks, { ...top, depth: top.depth + 1 }, 4)).toThrow(/not well formed/);
    expect(() => reader(blocks, { ...top, links: top.links.slice(1) }, 4)).toThrow(/not well formed/);
  });
});
