// Encryption of everything that carries patient data: chunks of an instance and the small
// encrypted envelopes inside DAG nodes. AES-256-GCM.
//
// Nonces are never reused under a key, by construction rather than by chance: every instance
// (and every manifest) gets a fresh random 128-bit salt, its own key is derived from the study's
// data key with HKDF-SHA256(salt), and under that key nonce = (purpose, counter). So a chunk's
// nonce is its index, which also binds each chunk to its position: swapped or reordered chunks
// fail their tag. Random 96-bit nonces under one study key would cap a study at 2^32 chunks
// (NIST SP 800-38D); this scheme has no such cap. Destroying the study's data key still
// destroys every derived key (crypto-shredding).
//
// Format 2 (the tree layout, dag.ts) adds associated data and separates the derivations: an
// instance's key and a manifest's key come from HKDF infos of their own (so an instance's envelope
// cannot open as a manifest's, whatever the salts), each chunk's AAD binds its index, whether it
// is the last, the chunk size and (on the last) the instance's size, and each envelope's AAD binds
// its node's other fields (dag.ts). Format 1 (flat nodes, no AAD, one HKDF info) stays readable.
import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes } from 'node:crypto';
import { VaultError } from '../core/errors.ts';

export const KEY_BYTES = 32;
export const SALT_BYTES = 16;
export const TAG_BYTES = 16;

const HKDF_INFO = Buffer.from('dicom-vault/v1/derived-key');
/** Format 2: what a derived key is for is part of its derivation. */
const HKDF_INFO_V2 = {
  instance: Buffer.from('dicom-vault/v2/instance-key'),
  manifest: Buffer.from('dicom-vault/v2/manifest-key'),
} as const;
export type KeyPurpose = keyof typeof HKDF_INFO_V2;
/** Nonce prefixes keep the chunk and envelope counters apart under one derived key. */
const PURPOSE_CHUNK = 0;
const PURPOSE_ENVELOPE = 1;

export function newSalt(): Buffer {
  return randomBytes(SALT_BYTES);
}

// Keys go to node:crypto as KeyObjects, not as bytes: given bytes, createCipheriv and hkdfSync
// first ask whether they hold a KeyObject by catching the TypeError its brand check throws (Node
// 24, internal/crypto/keys.js isKeyObject), which cost more than wrapping them does: 12 against
// 3-5 µs per cipher and 11 against 7 per derivation, measured here, and about 25 µs a call while
// ingest is cold (V8 profile of a new node's first 1,000 instances).
export function deriveKey(dataKey: Uint8Array, salt: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', createSecretKey(dataKey), salt, HKDF_INFO, KEY_BYTES));
}

/** Format 2: the key of an instance (its chunks and envelope) or of a manifest (its envelope). */
export function deriveKeyFor(purpose: KeyPurpose, dataKey: Uint8Array, salt: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', createSecretKey(dataKey), salt, HKDF_INFO_V2[purpose], KEY_BYTES));
}

/** Bytes of a format-2 chunk's associated data (chunkAad). */
export const CHUNK_AAD_BYTES = 22;

/**
 * A format-2 chunk's associated data: format (1 byte, 2), index (8), last (1), chunk size (4),
 * the instance's size on the last chunk and 0 on the others (8). The size is bound on the last
 * chunk only because ingest streams: earlier chunks are sealed before the size is known. That
 * binds it all the same: a reader derives the last index from the node's size, checks the last
 * flag of every chunk it opens and the exact length of each (the chunk size is bound too), so a
 * node whose size was shrunk or grown (or whose last chunk was dropped) fails a tag.
 */
export function chunkAad(index: number, last: boolean, chunkSize: number, size: number): Buffer {
  const aad = Buffer.alloc(CHUNK_AAD_BYTES);
  aad.writeUInt8(2, 0);
  aad.writeBigUInt64BE(BigInt(index), 1);
  aad.writeUInt8(last ? 1 : 0, 9);
  aad.writeUInt32BE(chunkSize, 10);
  aad.writeBigUInt64BE(BigInt(last ? size : 0), 14);
  return aad;
}

function nonce(purpose: number, counter: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(purpose, 0);
  n.writeBigUInt64BE(BigInt(counter), 4);
  return n;
}

function seal(key: Uint8Array, iv: Buffer, plaintext: Uint8Array, aad?: Uint8Array): Buffer {
  const cipher = createCipheriv('aes-256-gcm', createSecretKey(key), iv);
  if (aad !== undefined) cipher.setAAD(aad);
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  const tag = cipher.getAuthTag();
  // One allocation for ciphertext || tag (GCM's final() is empty, so `head` is the ciphertext).
  const out = Buffer.allocUnsafe(head.length + tail.length + TAG_BYTES);
  head.copy(out, 0);
  tail.copy(out, head.length);
  tag.copy(out, head.length + tail.length);
  return out;
}

function open(key: Uint8Array, iv: Buffer, sealed: Uint8Array, what: string, aad?: Uint8Array): Buffer {
  if (sealed.length < TAG_BYTES) throw new VaultError('BLOCK_CORRUPT', `${what} is shorter than its authentication tag`);
  const decipher = createDecipheriv('aes-256-gcm', createSecretKey(key), iv);
  if (aad !== undefined) decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    const head = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
    const tail = decipher.final();
    return tail.length === 0 ? head : Buffer.concat([head, tail]);
  } catch (cause) {
    throw new VaultError('BLOCK_CORRUPT', `${what} failed its AES-GCM authentication`, { cause });
  }
}

/** Chunk `index` of an instance: ciphertext || 16-byte tag. `aad`: chunkAad (format 2), none (format 1). */
export function sealChunk(instanceKey: Uint8Array, index: number, plaintext: Uint8Array, aad?: Uint8Array): Buffer {
  return seal(instanceKey, nonce(PURPOSE_CHUNK, index), plaintext, aad);
}

export function openChunk(instanceKey: Uint8Array, index: number, block: Uint8Array, aad?: Uint8Array): Buffer {
  return open(instanceKey, nonce(PURPOSE_CHUNK, index), block, `chunk ${index}`, aad);
}

/** The one encrypted envelope of a DAG node (its patient-bearing fields); `aad`: the node's other fields (format 2). */
export function sealEnvelope(nodeKey: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array): Buffer {
  return seal(nodeKey, nonce(PURPOSE_ENVELOPE, 0), plaintext, aad);
}

export function openEnvelope(nodeKey: Uint8Array, sealed: Uint8Array, aad?: Uint8Array): Buffer {
  return open(nodeKey, nonce(PURPOSE_ENVELOPE, 0), sealed, 'envelope', aad);
}
