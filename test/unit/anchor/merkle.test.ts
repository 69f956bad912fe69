// The batch Merkle tree against RFC 9162's own definitions (the recursive MTH and PATH of
// §2.1.1 and §2.1.3.1, written out here independently) and against Certificate Transparency's
// published test vectors.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MerkleTree, leafHash, nodeHash, rootFromInclusionPath, treeHead, verifyBatchInclusion, verifyInclusion } from '../../../anchor/merkle.ts';

const sha = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
/** Largest power of two smaller than n (n > 1). */
const split = (n: number): number => 2 ** Math.floor(Math.log2(n - 1));
/** RFC 9162 §2.1.1, literally. */
function mth(d: Buffer[]): Buffer {
  if (d.length === 1) return sha(Buffer.of(0), d[0]!);
  const k = split(d.length);
  return sha(Buffer.of(1), mth(d.slice(0, k)), mth(d.slice(k)));
}
/** RFC 9162 §2.1.3.1, literally. */
function refPath(m: number, d: Buffer[]): Buffer[] {
  if (d.length === 1) return [];
  const k = split(d.length);
  return m < k ? [...refPath(m, d.slice(0, k)), mth(d.slice(k))] : [...refPath(m - k, d.slice(k)), mth(d.slice(0, k))];
}
const leavesOf = (n: number): Buffer[] => Array.from({ length: n }, (_, i) => Buffer.from(`study version root ${i}`));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('batch Merkle tree (RFC 9162)', () => {
  it('matches the Certificate Transparency test vectors', () => {
    // certificate-transparency's merkle tree test data: 8 leaves and the root after each.
    const inputs = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map((h) => Buffer.from(h, 'hex'));
    const roots = [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
      'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
      '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
      '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
      'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
      '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
    ];
    for (let n = 1; n <= 8; n++) expect(hex(MerkleTree.fromLeaves(inputs.slice(0, n)).root), `${n} leaves`).toBe(roots[n - 1]);
  });

  // Sizes 1, 2, 3, every odd and even size up to 70, and a few around powers of two.
  const sizes = [...Array.from({ length: 70 }, (_, i) => i + 1), 127, 128, 129, 255, 257];
  it('gives the RFC root and the RFC inclusion path for every leaf position of every size', () => {
    for (const n of sizes) {
      const d = leavesOf(n);
      const tree = MerkleTree.fromLeaves(d);
      expect(tree.size).toBe(n);
      expect(hex(tree.root), `root of ${n}`).toBe(hex(mth(d)));
      for (let i = 0; i < n; i++) {
        const path = tree.inclusionPath(i);
        expect(path.map(hex), `path of leaf ${i} of ${n}`).toEqual(refPath(i, d).map(hex));
        expect(verifyInclusion(d[i]!, i, n, path, tree.root), `leaf ${i} of ${n}`).toBe(true);
      }
    }
  });

  it('a batch of one is its leaf hash, with an empty path', () => {
    const d = leavesOf(1);
    const tree = MerkleTree.fromLeaves(d);
    expect(hex(tree.root)).toBe(hex(leafHash(d[0]!)));
    expect(tree.inclusionPath(0)).toEqual([]);
    expect(verifyInclusion(d[0]!, 0, 1, [], tree.root)).toBe(true);
  });

  it('refuses a proof for another leaf, index or size, or with any path hash changed', () => {
    for (const n of [2, 3, 5, 7, 8, 13]) {
      const d = leavesOf(n);
      const tree = MerkleTree.fromLeaves(d);
      for (let i = 0; i < n; i++) {
        const path = tree.inclusionPath(i);
        expect(verifyInclusion(d[(i + 1) % n]!, i, n, path, tree.root)).toBe(false);
        expect(verifyInclusion(d[i]!, (i + 1) % n, n, path, tree.root)).toBe(false);
        // RFC 9162 alone may accept another size for some positions; the tree head never does.
        expect(verifyBatchInclusion(d[i]!, i, n, path, tree.head)).toBe(true);
        for (const other of [n - 1, n + 1, n + 2, 2 * n])
          if (other > i) expect(verifyBatchInclusion(d[i]!, i, other, path, tree.head), `size ${other} for ${n}`).toBe(false);
        expect(verifyInclusion(d[i]!, i, n, path.slice(1), tree.root)).toBe(false);
        expect(verifyInclusion(d[i]!, i, n, [...path, path[0]!], tree.root)).toBe(false);
        for (let p = 0; p < path.length; p++) {
          const bent = path.map((h) => Buffer.from(h));
          bent[p]![7]! ^= 1;
          expect(verifyInclusion(d[i]!, i, n, bent, tree.root)).toBe(false);
        }
      }
    }
    expect(rootFromInclusionPath(leafHash(Buffer.from('x')), 4, 4, [])).toBeUndefined();
    expect(rootFromInclusionPath(leafHash(Buffer.from('x')), -1, 4, [])).toBeUndefined();
  });

  it('never lets an interior node pass for a leaf (domain separation)', () => {
    // With plain SHA-256 for leaves and nodes, the two children of a node, concatenated, would
    // be a "leaf" that proves into the same root with a shorter path.
    const d = leavesOf(4);
    const tree = MerkleTree.fromLeaves(d);
    const left = nodeHash(leafHash(d[0]!), leafHash(d[1]!));
    const right = nodeHash(leafHash(d[2]!), leafHash(d[3]!));
    const forged = Buffer.concat([leafHash(d[0]!), leafHash(d[1]!)]);
    expect(hex(nodeHash(left, right))).toBe(hex(tree.root));
    expect(verifyInclusion(forged, 0, 2, [right], tree.root)).toBe(false);
    expect(hex(rootFromInclusionPath(left, 0, 2, [right])!)).toBe(hex(tree.root)); // the node itself does lead there...
    expect(hex(leafHash(forged))).not.toBe(hex(left)); // ...but no leaf data hashes to it
  });

  it('binds the tree size into the anchored head', () => {
    const d = leavesOf(5);
    const tree = MerkleTree.fromLeaves(d);
    // Leaf 0's path of a 5-leaf tree also satisfies RFC 9162 for 6 leaves: the root alone does not fix the size.
    expect(verifyInclusion(d[0]!, 0, 6, tree.inclusionPath(0), tree.root)).toBe(true);
    expect(hex(tree.head)).toBe(hex(treeHead(5, tree.root)));
    expect(hex(tree.head)).not.toBe(hex(treeHead(6, tree.root)));
    expect(verifyBatchInclusion(d[0]!, 0, 6, tree.inclusionPath(0), tree.head)).toBe(false);
  });

  it('keeps inclusion paths at ceil(log2 n) hashes or fewer, 14 at 10,000 leaves', () => {
    const tree = MerkleTree.fromLeaves(leavesOf(10_000));
    expect(Math.max(...[0, 4095, 8191, 8192, 9999].map((i) => tree.inclusionPath(i).length))).toBe(14);
    expect(tree.inclusionPath(9999).length).toBeLessThanOrEqual(14);
  });
});
