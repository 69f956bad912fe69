// The audit log's incremental tree and its proofs against RFC 9162's own definitions (MTH, PATH and
// SUBPROOF of §2.1, written out here independently of src/audit/tree.ts) and anchor/merkle.ts's
// batch tree, for every size to 40 and every pair of sizes.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MerkleTree, leafHash as batchLeafHash, nodeHash as batchNodeHash, verifyInclusion } from '../../../anchor/merkle.ts';
import { consistencyProof, EMPTY_ROOT, Frontier, inclusionProof, leafHash, type NodeReader, nodeHash, verifyConsistency } from '../../../src/audit/tree.ts';

const sha = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const split = (n: number): number => 2 ** Math.floor(Math.log2(n - 1));
function mth(d: Buffer[]): Buffer {
  if (d.length === 0) return sha();
  if (d.length === 1) return sha(Buffer.of(0), d[0]!);
  const k = split(d.length);
  return sha(Buffer.of(1), mth(d.slice(0, k)), mth(d.slice(k)));
}
function refSubproof(m: number, d: Buffer[], b: boolean): Buffer[] {
  if (m === d.length) return b ? [] : [mth(d)];
  const k = split(d.length);
  return m <= k ? [...refSubproof(m, d.slice(0, k), b), mth(d.slice(k))] : [...refSubproof(m - k, d.slice(k), false), mth(d.slice(0, k))];
}
const leavesOf = (n: number): Buffer[] => Array.from({ length: n }, (_, i) => Buffer.from(`audit entry ${i}`));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Grows a tree leaf by leaf, keeping the nodes a store would keep. */
function grow(leaves: Buffer[]): { f: Frontier; read: NodeReader; roots: Uint8Array[] } {
  const nodes = new Map<string, Uint8Array>();
  const f = Frontier.empty();
  const roots: Uint8Array[] = [EMPTY_ROOT];
  for (const l of leaves) {
    for (const n of f.push(leafHash(l))) nodes.set(`${n.level}/${n.index}`, n.hash);
    roots.push(f.root());
  }
  return {
    f,
    roots,
    read: (level, index) => {
      const h = nodes.get(`${level}/${index}`);
      if (h === undefined) throw new Error(`no node ${level}/${index}`);
      return h;
    },
  };
}

describe('audit tree (RFC 9162)', () => {
  const N = 40;
  const leaves = leavesOf(N);
  const { read, roots } = grow(leaves);

  it("hashes leaves and nodes as the batch tree does, and knows the last leaf's hash", () => {
    for (const l of leaves) expect(hex(leafHash(l))).toBe(hex(batchLeafHash(l)));
    expect(hex(nodeHash(leafHash(leaves[0]!), leafHash(leaves[1]!)))).toBe(hex(batchNodeHash(batchLeafHash(leaves[0]!), batchLeafHash(leaves[1]!))));
    const f = Frontier.empty();
    expect(f.last).toBeUndefined();
    for (const l of leaves.slice(0, 6)) {
      f.push(leafHash(l));
      expect(hex(f.last!)).toBe(hex(leafHash(l)));
      expect(hex(f.clone().last!)).toBe(hex(leafHash(l)));
    }
  });

  it('has the RFC root at every size, the same as the batch tree', () => {
    for (let n = 0; n <= N; n++) {
      expect(hex(roots[n]!)).toBe(hex(mth(leaves.slice(0, n))));
      if (n > 0) expect(hex(roots[n]!)).toBe(hex(MerkleTree.fromLeaves(leaves.slice(0, n)).root));
    }
  });

  it('gives inclusion paths that anchor/merkle.ts verifies, for every leaf of every size', () => {
    for (let n = 1; n <= N; n++) {
      const tree = MerkleTree.fromLeaves(leaves.slice(0, n));
      for (let m = 0; m < n; m++) {
        const path = inclusionProof(read, m, n);
        expect(path.map(hex)).toEqual(tree.inclusionPath(m).map(hex));
        expect(verifyInclusion(leaves[m]!, m, n, path, roots[n]!)).toBe(true);
      }
    }
  });

  it('gives the RFC consistency proof between every two sizes, which verifies; a wrong root or proof does not', () => {
    for (let n = 1; n <= N; n++) {
      for (let m = 1; m <= n; m++) {
        const proof = consistencyProof(read, m, n);
        expect(proof.map(hex)).toEqual(m === n ? [] : refSubproof(m, leaves.slice(0, n), true).map(hex));
        expect(verifyConsistency(m, n, proof, roots[m]!, roots[n]!)).toBe(true);
        if (m < n) {
          expect(verifyConsistency(m, n, proof, roots[m - 1]!, roots[n]!)).toBe(false);
          expect(verifyConsistency(m, n, proof, roots[m]!, roots[n - 1]!)).toBe(false);
          if (proof.length > 0) {
            const bad = proof.map((p, i) => (i === proof.length - 1 ? sha(p) : p));
            expect(verifyConsistency(m, n, bad, roots[m]!, roots[n]!)).toBe(false);
          }
        }
      }
    }
  });

  it('refuses a consistency proof between two trees that share a prefix but then part (a split view)', () => {
    const other = [
      ...leaves.slice(0, 20),
      ...leavesOf(40)
        .slice(20)
        .map((l) => Buffer.concat([l, Buffer.from(' forked')])),
    ];
    const b = grow(other);
    for (const m of [21, 25, 32, 33]) {
      for (const n of [33, 40]) {
        if (m > n) continue;
        // Neither log can prove that the other's head extends its own.
        expect(verifyConsistency(m, n, consistencyProof(read, m, n), b.roots[m]!, roots[n]!)).toBe(false);
        expect(verifyConsistency(m, n, consistencyProof(b.read, m, n), b.roots[m]!, roots[n]!)).toBe(false);
      }
    }
  });

  it('rebuilds its right edge from the stored nodes at any size', () => {
    for (let n = 0; n <= N; n++) expect(hex(Frontier.of(read, n).root())).toBe(hex(roots[n]!));
  });
});
