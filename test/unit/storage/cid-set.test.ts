// CidSet (storage/cid-set.ts): the reachable set of gc, held as 64-bit digest prefixes.
import { randomBytes } from 'node:crypto';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { identity } from 'multiformats/hashes/identity';
import * as Digest from 'multiformats/hashes/digest';
import { describe, expect, it } from 'vitest';
import { rawCid } from '../../../storage/cid.ts';
import { CidSet } from '../../../storage/cid-set.ts';

/** A raw-leaf CID whose sha2-256 digest starts with `prefix` (8 bytes); the rest random. */
function cidWithPrefix(prefix: Uint8Array): CID {
  const digest = new Uint8Array(32);
  digest.set(prefix);
  digest.set(randomBytes(24), 8);
  return CID.createV1(raw.code, Digest.create(0x12, digest));
}

describe('CidSet', () => {
  it('holds what was added, through many growths, and nothing else', () => {
    const set = new CidSet();
    const added = Array.from({ length: 200_000 }, () => rawCid(randomBytes(16)));
    for (const cid of added) expect(set.add(cid)).toBe(true);
    expect(set.size).toBe(added.length);
    for (const cid of added) expect(set.has(cid)).toBe(true);
    expect(set.add(added[123]!)).toBe(false);
    expect(set.add(CID.parse(added[7]!.toString()))).toBe(false); // equal, not the same object
    for (let i = 0; i < 10_000; i++) expect(set.has(rawCid(randomBytes(16)))).toBe(false);
    expect(set.size).toBe(added.length);
  });

  it('takes CIDs that share the first 8 digest bytes for one (gc keeps both), a zero prefix included', () => {
    const set = new CidSet();
    const zero = new Uint8Array(8);
    const a = cidWithPrefix(zero);
    expect(set.has(a)).toBe(false);
    expect(set.add(a)).toBe(true);
    expect(set.has(cidWithPrefix(zero))).toBe(true);
    expect(set.has(cidWithPrefix(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 2)))).toBe(false);
  });

  it('keeps CIDs of other hash functions exactly', () => {
    const set = new CidSet();
    const short = CID.createV1(raw.code, identity.digest(Uint8Array.of(1, 2, 3)));
    const other = CID.createV1(raw.code, identity.digest(Uint8Array.of(1, 2, 4)));
    expect(set.add(short)).toBe(true);
    expect(set.has(short)).toBe(true);
    expect(set.has(other)).toBe(false);
    expect(set.add(short)).toBe(false);
    expect(set.size).toBe(1);
  });
});
