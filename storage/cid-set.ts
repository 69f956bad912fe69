// A set of CIDs small enough to hold every reachable block of a large store in memory (gc.ts).
// A Set of CID strings cost 1,547 bytes a block, measured (a million CIDs): multiformats builds
// the base32 string by concatenation, and the Set kept each as a tree of string pieces. That was
// 1.5 GB for a 1 TB store of 1 MiB chunks. This keeps only the first 8 bytes of each sha2-256
// digest, in an open-addressing table of 64-bit slots kept at most half full: 25 bytes a block
// measured (16 to 32 by construction; the strings of `cid.bytes` as latin1 would be 79).
//
// Two CIDs whose digests share their first 64 bits count as one. For gc that is the safe side: a
// garbage block taken for a reachable one is kept. With sha2-256 the odds that any two of n
// blocks collide are about n² / 2⁶⁵ (3 in 100 million for a million blocks); and the codec is not
// part of the key, so a raw and a dag-cbor block of the same bytes are one too (kept alike).
// CIDs of any other hash function (short digests, identity) are kept exactly, as strings.
import type { CID } from 'multiformats/cid';

const SHA2_256 = 0x12;
const INITIAL_SLOTS = 1 << 16;

export class CidSet {
  #slots = new BigUint64Array(INITIAL_SLOTS);
  #mask = BigInt(INITIAL_SLOTS - 1);
  #used = 0;
  /** CIDs that are not sha2-256, kept whole. */
  readonly #others = new Set<string>();

  /** Number of distinct keys held. */
  get size(): number {
    return this.#used + this.#others.size;
  }

  /** Adds `cid`; false if it (or a CID with the same key) was there already. */
  add(cid: CID): boolean {
    const key = keyOf(cid);
    if (key === undefined) {
      const s = cid.toString();
      if (this.#others.has(s)) return false;
      this.#others.add(s);
      return true;
    }
    if ((this.#used + 1) * 2 > this.#slots.length) this.#grow();
    return this.#insert(key);
  }

  has(cid: CID): boolean {
    const key = keyOf(cid);
    if (key === undefined) return this.#others.has(cid.toString());
    return this.#slots[this.#probe(key)] === key;
  }

  #insert(key: bigint): boolean {
    const i = this.#probe(key);
    if (this.#slots[i] === key) return false;
    this.#slots[i] = key;
    this.#used++;
    return true;
  }

  /** The slot holding `key`, else the empty slot where it would go (linear probing; never full). */
  #probe(key: bigint): number {
    const slots = this.#slots;
    let i = Number(key & this.#mask);
    while (slots[i] !== 0n && slots[i] !== key) i = (i + 1) & (slots.length - 1);
    return i;
  }

  #grow(): void {
    const old = this.#slots;
    this.#slots = new BigUint64Array(old.length * 2);
    this.#mask = BigInt(this.#slots.length - 1);
    this.#used = 0;
    for (const key of old) if (key !== 0n) this.#insert(key);
  }
}

/** The first 64 bits of a sha2-256 digest (0 stands for empty, so it becomes 1); undefined for other hashes. */
function keyOf(cid: CID): bigint | undefined {
  const { code, digest } = cid.multihash;
  if (code !== SHA2_256 || digest.byteLength < 8) return undefined;
  const key = new DataView(digest.buffer, digest.byteOffset, 8).getBigUint64(0);
  return key === 0n ? 1n : key;
}
