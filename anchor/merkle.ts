// The Merkle tree of one anchoring batch: RFC 6962 / RFC 9162 (Certificate Transparency) over
// SHA-256, the tree COSE Receipts call RFC9162_SHA256. Leaves and interior nodes are hashed with
// different one-byte prefixes, so an interior node can never be presented as a leaf (the
// second-preimage attack on plain Merkle trees). Leaf data is the study version's root CID, as
// bytes.
//
// Hand-written rather than taken from a library: the npm Merkle packages either hash without
// domain separation, sort pairs (which loses the leaf index) or pad odd levels by duplication,
// none of which is RFC 9162; the whole thing is forty lines over node:crypto.
import { createHash } from 'node:crypto';

/** Bytes of a SHA-256 digest: every leaf hash, node hash, path entry and root. */
export const HASH_SIZE = 32;

const LEAF_PREFIX = Uint8Array.of(0x00);
const NODE_PREFIX = Uint8Array.of(0x01);
const HEAD_PREFIX = Uint8Array.of(0x02);

/** RFC 9162 §2.1.1: MTH({d}) = SHA-256(0x00 || d). */
export function leafHash(data: Uint8Array): Uint8Array {
  return createHash('sha256').update(LEAF_PREFIX).update(data).digest();
}

/** RFC 9162 §2.1.1: SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
}

/**
 * The batch's tree head, the 32 bytes anchored on chain: SHA-256(0x02 || size as 8 bytes
 * big-endian || MTH). RFC 9162's root alone does not fix the tree size (a proof can hold for
 * more than one size), so, as Certificate Transparency signs tree_size with root_hash, the head
 * binds them; its own prefix keeps it apart from leaves and nodes.
 */
export function treeHead(size: number, mth: Uint8Array): Uint8Array {
  const n = Buffer.alloc(8);
  n.writeBigUInt64BE(BigInt(size));
  return createHash('sha256').update(HEAD_PREFIX).update(n).update(mth).digest();
}

/**
 * A whole tree kept level by level, so every leaf's inclusion path is read off without hashing
 * again. Levels are built pairwise with an odd last node carried up unhashed: this is the same
 * tree as RFC 9162's recursive split at the largest power of two below n (a left-complete tree),
 * and test/unit/anchor/merkle.test.ts checks it against that definition.
 */
export class MerkleTree {
  readonly #levels: Uint8Array[][];

  private constructor(levels: Uint8Array[][]) {
    this.#levels = levels;
  }

  /** Builds the tree over leaf data (each item is hashed as a leaf). At least one leaf. */
  static fromLeaves(data: readonly Uint8Array[]): MerkleTree {
    if (data.length === 0) throw new RangeError('a Merkle batch needs at least one leaf');
    let level = data.map(leafHash);
    const levels = [level];
    while (level.length > 1) {
      const next: Uint8Array[] = [];
      for (let i = 0; i < level.length; i += 2) {
        next.push(i + 1 < level.length ? nodeHash(level[i]!, level[i + 1]!) : level[i]!);
      }
      levels.push(next);
      level = next;
    }
    return new MerkleTree(levels);
  }

  /** Number of leaves. */
  get size(): number {
    return this.#levels[0]!.length;
  }

  /** MTH of all leaves. */
  get root(): Uint8Array {
    return this.#levels[this.#levels.length - 1]![0]!;
  }

  /** treeHead(size, root): what a batch anchors. */
  get head(): Uint8Array {
    return treeHead(this.size, this.root);
  }

  /** RFC 9162 §2.1.3.1 inclusion path of leaf `index`: sibling hashes from the leaf up. */
  inclusionPath(index: number): Uint8Array[] {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) throw new RangeError(`leaf index ${index} is outside a tree of ${this.size}`);
    const path: Uint8Array[] = [];
    let i = index;
    for (let l = 0; l < this.#levels.length - 1; l++) {
      const level = this.#levels[l]!;
      const sibling = i ^ 1;
      // A node without a sibling is carried up: it adds nothing to the path.
      if (sibling < level.length) path.push(level[sibling]!);
      i >>= 1;
    }
    return path;
  }
}

/**
 * RFC 9162 §2.1.3.2: the root that `path` leads to from leaf hash `leaf` at `index` in a tree of
 * `size` leaves, or undefined when the path's length cannot belong to that index and size.
 */
export function rootFromInclusionPath(leaf: Uint8Array, index: number, size: number, path: readonly Uint8Array[]): Uint8Array | undefined {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return undefined;
  // Plain numbers, not bit operators: those truncate to 32 bits.
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (p.length !== HASH_SIZE || sn === 0) return undefined;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn /= 2;
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : undefined;
}

/** True when leaf data `data` at `index` of a `size`-leaf tree with `root` is proven by `path`. */
export function verifyInclusion(data: Uint8Array, index: number, size: number, path: readonly Uint8Array[], root: Uint8Array): boolean {
  const computed = rootFromInclusionPath(leafHash(data), index, size, path);
  return computed !== undefined && Buffer.from(computed).equals(root);
}

/** True when leaf data `data` is leaf `index` of the `size`-leaf batch whose tree head is `head`. */
export function verifyBatchInclusion(data: Uint8Array, index: number, size: number, path: readonly Uint8Array[], head: Uint8Array): boolean {
  const mth = rootFromInclusionPath(leafHash(data), index, size, path);
  return mth !== undefined && Buffer.from(treeHead(size, mth)).equals(head);
}
