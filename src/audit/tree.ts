// The audit log's Merkle tree, grown one leaf at a time: RFC 9162 §2.1 over SHA-256 (the hashing of
// anchor/merkle.ts, reused), with the proofs a log serves. anchor/merkle.ts builds a whole batch in
// memory; a log of 10^9 entries cannot be, so here every perfect subtree's hash is kept once it is
// complete (the store's nodes) and any range's hash, inclusion path or consistency proof is put
// together from O(log n) of them. Consistency proofs and their check (RFC 9162 §2.1.4) are written
// here: anchor/merkle.ts has no use for them, and no npm package implements RFC 9162 proofs over a
// store of our own (see anchor/merkle.ts on the Merkle packages).
import { createHash, hash } from 'node:crypto';
import { HASH_SIZE } from '../../anchor/merkle.ts';

export { HASH_SIZE };

const LEAF_PREFIX = Buffer.of(0x00);
const NODE_PREFIX = Buffer.of(0x01);

// anchor/merkle.ts's hashing, in one-shot form: the log hashes a leaf and about one node per entry
// on the request path, and crypto.hash over one buffer costs a fraction of a createHash object
// fed three times. test/unit/audit/tree.test.ts checks both give the same bytes.
/** RFC 9162 §2.1.1: SHA-256(0x00 || d). */
export function leafHash(data: Uint8Array): Uint8Array {
  return hash('sha256', Buffer.concat([LEAF_PREFIX, data]), 'buffer');
}

/** RFC 9162 §2.1.1: SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return hash('sha256', Buffer.concat([NODE_PREFIX, left, right], 1 + 2 * HASH_SIZE), 'buffer');
}

/** MTH of the empty tree: SHA-256 of nothing (RFC 9162 §2.1.1). */
export const EMPTY_ROOT: Uint8Array = createHash('sha256').digest();

/** The hash of the perfect subtree of 2^level leaves starting at leaf index * 2^level. */
export type NodeReader = (level: number, index: number) => Uint8Array;

/** A perfect subtree completed by an append: what the store keeps. */
export interface TreeNode {
  level: number;
  index: number;
  hash: Uint8Array;
}

function isPow2(n: number): boolean {
  return n > 0 && Number.isInteger(Math.log2(n));
}

/** Largest power of two strictly below n (n >= 2). */
function splitOf(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH of leaves [start, end), split as RFC 9162 does: any range a proof asks for is aligned. */
export function rangeHash(read: NodeReader, start: number, end: number): Uint8Array {
  const n = end - start;
  if (n <= 0) return EMPTY_ROOT;
  if (isPow2(n) && start % n === 0) return read(Math.log2(n), start / n);
  const k = splitOf(n);
  return nodeHash(rangeHash(read, start, start + k), rangeHash(read, start + k, end));
}

/** RFC 9162 §2.1.3.1 PATH(m, D[start:end]): sibling hashes from the leaf up. */
function path(read: NodeReader, m: number, start: number, end: number): Uint8Array[] {
  const n = end - start;
  if (n === 1) return [];
  const k = splitOf(n);
  if (m < k) return [...path(read, m, start, start + k), rangeHash(read, start + k, end)];
  return [...path(read, m - k, start + k, end), rangeHash(read, start, start + k)];
}

export function inclusionProof(read: NodeReader, index: number, size: number): Uint8Array[] {
  if (!Number.isSafeInteger(index) || index < 0 || index >= size) throw new RangeError(`entry ${index} is outside a log of ${size}`);
  return path(read, index, 0, size);
}

/** RFC 9162 §2.1.4.1 SUBPROOF(m, D[start:end], b). */
function subproof(read: NodeReader, m: number, start: number, end: number, whole: boolean): Uint8Array[] {
  const n = end - start;
  if (m === n) return whole ? [] : [rangeHash(read, start, end)];
  const k = splitOf(n);
  if (m <= k) return [...subproof(read, m, start, start + k, whole), rangeHash(read, start + k, end)];
  return [...subproof(read, m - k, start + k, end, false), rangeHash(read, start, start + k)];
}

/** The proof that the tree of `first` leaves is a prefix of the tree of `second`. */
export function consistencyProof(read: NodeReader, first: number, second: number): Uint8Array[] {
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second)
    throw new RangeError(`no consistency proof from ${first} to ${second} entries`);
  if (first === 0 || first === second) return [];
  return subproof(read, first, 0, second, true);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a).equals(b);
}

/**
 * RFC 9162 §2.1.4.2: true when `proof` shows that the tree of `first` leaves with root
 * `firstRoot` is a prefix of the tree of `second` leaves with root `secondRoot`. Plain numbers
 * rather than bit operators: those truncate to 32 bits.
 */
export function verifyConsistency(first: number, second: number, proof: readonly Uint8Array[], firstRoot: Uint8Array, secondRoot: Uint8Array): boolean {
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second) return false;
  if (proof.some((p) => p.length !== HASH_SIZE)) return false;
  if (first === second) return proof.length === 0 && same(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0;
  if (proof.length === 0) return false;
  const path = isPow2(first) ? [firstRoot, ...proof] : [...proof];
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(fr, firstRoot) && same(sr, secondRoot);
}

/**
 * The right edge of a growing tree: for each level, the perfect subtree still waiting for its
 * right sibling. Appending a leaf completes the subtrees it closes (returned, for the store) and
 * the root of any size is the waiting subtrees folded right to left.
 */
export class Frontier {
  #size: number;
  readonly #edge: Uint8Array[];
  /** The last leaf's hash, once pushed here (the next entry links to it: no read of the store). */
  #last: Uint8Array | undefined;

  private constructor(size: number, edge: Uint8Array[], last?: Uint8Array) {
    this.#size = size;
    this.#edge = edge;
    this.#last = last;
  }

  static empty(): Frontier {
    return new Frontier(0, []);
  }

  /** The right edge of a stored tree of `size` leaves, read from its nodes. */
  static of(read: NodeReader, size: number): Frontier {
    const edge: Uint8Array[] = [];
    let start = 0;
    for (let level = Math.floor(Math.log2(Math.max(size, 1))); level >= 0; level--) {
      const width = 2 ** level;
      if (size - start >= width) {
        edge[level] = read(level, start / width);
        start += width;
      }
    }
    return new Frontier(size, edge);
  }

  get size(): number {
    return this.#size;
  }

  clone(): Frontier {
    return new Frontier(this.#size, [...this.#edge], this.#last);
  }

  /** The hash of the last leaf, when this frontier pushed it or knows it (an odd size: the edge's leaf). */
  get last(): Uint8Array | undefined {
    return this.#last ?? (this.#size % 2 === 1 ? this.#edge[0] : undefined);
  }

  /** Adds a leaf (its hash); returns the perfect subtrees it completes, the leaf itself first. */
  push(hash: Uint8Array): TreeNode[] {
    const out: TreeNode[] = [{ level: 0, index: this.#size, hash }];
    let h = hash;
    let index = this.#size;
    let level = 0;
    while (index % 2 === 1) {
      h = nodeHash(this.#edge[level]!, h);
      index = (index - 1) / 2;
      level++;
      out.push({ level, index, hash: h });
    }
    this.#edge[level] = h;
    this.#size++;
    this.#last = hash;
    return out;
  }

  /** MTH of the leaves so far. */
  root(): Uint8Array {
    let root: Uint8Array | undefined;
    let rest = this.#size;
    for (let level = 0; rest > 0; level++, rest = Math.floor(rest / 2)) {
      if (rest % 2 === 1) root = root === undefined ? this.#edge[level]! : nodeHash(this.#edge[level]!, root);
    }
    return root ?? EMPTY_ROOT;
  }
}
