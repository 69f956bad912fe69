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
import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes } from 'node:crypto';
import { VaultError } from '../core/errors.ts';

export const KEY_BYTES = 32;
export const SALT_BYTES = 16;
export const TAG_BYTES = 16;

const HKDF_INFO = Buffer.from('dicom-vault/v1/derived-key');
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

function nonce(purpose: number, counter: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(purpose, 0);
  n.writeBigUInt64BE(BigInt(counter), 4);
  return n;
}

function seal(key: Uint8Array, iv: Buffer, plaintext: Uint8Array): Buffer {
  const cipher = createCipheriv('aes-256-gcm', createSecretKey(key), iv);
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

function open(key: Uint8Array, iv: Buffer, sealed: Uint8Array, what: string): Buffer {
  if (sealed.length < TAG_BYTES) throw new VaultError('BLOCK_CORRUPT', `${what} is shorter than its authentication tag`);
  const decipher = createDecipheriv('aes-256-gcm', createSecretKey(key), iv);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    const head = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
    const tail = decipher.final();
    return tail.length === 0 ? head : Buffer.concat([head, tail]);
  } catch (cause) {
    throw new VaultError('BLOCK_CORRUPT', `${what} failed its AES-GCM authentication`, { cause });
  }
}

/** Chunk `index` of an instance: ciphertext || 16-byte tag. */
export function sealChunk(instanceKey: Uint8Array, index: number, plaintext: Uint8Array): Buffer {
  return seal(instanceKey, nonce(PURPOSE_CHUNK, index), plaintext);
}

export function openChunk(instanceKey: Uint8Array, index: number, block: Uint8Array): Buffer {
  return open(instanceKey, nonce(PURPOSE_CHUNK, index), block, `chunk ${index}`);
}

/** The one encrypted envelope of a DAG node (its patient-bearing fields). */
export function sealEnvelope(nodeKey: Uint8Array, plaintext: Uint8Array): Buffer {
  return seal(nodeKey, nonce(PURPOSE_ENVELOPE, 0), plaintext);
}

export function openEnvelope(nodeKey: Uint8Array, sealed: Uint8Array): Buffer {
  return open(nodeKey, nonce(PURPOSE_ENVELOPE, 0), sealed, 'envelope');
}
