// Content addresses for blocks. Hashing is synchronous node:crypto rather than multiformats'
// `sha256.digest`: this runs on every 1 MiB block of ingest and every verified read, and the
// native one-shot hash avoids the async hop and the WebCrypto copy.
import { createHash } from 'node:crypto';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { sha256 } from 'multiformats/hashes/sha2';
import { VaultError } from '../src/core/errors.ts';

/** Multihash codes `cidMatches` can check, mapped to their node:crypto algorithm. */
const HASHES: ReadonlyMap<number, string> = new Map([
  [0x12, 'sha256'], // sha2-256
  [0x13, 'sha512'], // sha2-512
]);
const IDENTITY = 0x00;

export type RawCid = CID<Uint8Array, typeof raw.code, typeof sha256.code, 1>;

/** The CIDv1 (raw codec 0x55, sha2-256) of `bytes`; equal to what multiformats computes. */
export function rawCid(bytes: Uint8Array): RawCid {
  return CID.createV1(raw.code, Digest.create(sha256.code, sha256Digest(bytes)));
}

/**
 * Whether `bytes` hash to `cid`'s multihash. Only the hash function matters, not the codec, so
 * raw blocks and dag-cbor nodes (0x71) check alike. Supports sha2-256, sha2-512 and identity;
 * throws VaultError('INTERNAL') for any other hash rather than report a block it cannot check as
 * either good or corrupt.
 */
export function cidMatches(cid: CID, bytes: Uint8Array): boolean {
  const { code, digest } = cid.multihash;
  if (code === IDENTITY) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).equals(digest);
  const algorithm = HASHES.get(code);
  if (algorithm === undefined) {
    throw new VaultError('INTERNAL', `cannot verify block ${cid}: unsupported multihash 0x${code.toString(16)}`, {
      details: { cid: cid.toString(), multihash: code },
    });
  }
  return createHash(algorithm).update(bytes).digest().equals(digest);
}

function sha256Digest(bytes: Uint8Array): Uint8Array {
  // Copied out so a CID never pins a slice of Buffer's shared 8 KiB pool.
  return new Uint8Array(createHash('sha256').update(bytes).digest());
}
