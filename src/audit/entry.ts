// One audit log entry: what is recorded (AuditRecord, the details), and the leaf the log commits to.
// The details are sealed with AES-256-GCM under the key of the patient they concern (or the node's
// own key for entries about no patient); the leaf holds the ciphertext, so the tree, the heads and
// every proof still verify once a patient's key is destroyed (erasure), while nobody can read the
// details any more.
//
// Leaf data, version 1 (binary, big-endian; every field fixed or length-prefixed, so no two
// entries encode alike):
//   0x01 | index u64 | time (ms since the epoch) u64 | subject length u8 | subject (ASCII)
//   | previous leaf's hash (32 bytes; zeros for entry 0) | IV (12) | ciphertext with GCM tag (16)
// The header (everything before the IV) is the GCM additional data: a ciphertext moved to
// another place, time or patient no longer opens. Index and previous hash let `audit verify`
// name the first entry dropped, inserted or swapped without any other copy of the log.
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject, randomFillSync } from 'node:crypto';
import { VaultError } from '../core/errors.ts';
import { HASH_SIZE } from './tree.ts';

export const LEAF_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const ZERO_HASH = new Uint8Array(HASH_SIZE);

/** What happened. access: a request the access seam let through (recorded before it is served; with its response when that was ready first); outcome: how that request ended (when the access entry does not already say); refused: a request refused (identity or rights); summary: refusals counted while the log was behind. */
export type AuditKind =
  | 'access'
  | 'outcome'
  | 'refused'
  | 'summary'
  | 'grant'
  | 'revoke'
  | 'enroll'
  | 'share-link'
  | 'token-exchange'
  | 'version'
  | 'admin'
  | 'audit-read';

/** The details of an entry: who, what, from where, why. When is the leaf's. */
export interface AuditRecord {
  kind: AuditKind;
  /** The principal (src/identity/principal.ts): id, roles, how it proved itself, display name, the grant a share link is bound to. */
  who: { id: string; roles?: readonly string[]; method?: string; name?: string; grant?: string };
  what: {
    action: string;
    study?: string;
    series?: string;
    instance?: string;
    /** metadata, frames, bulkdata, rendered, dicom, receipt */
    dataType?: string;
    status?: number;
    /** Bytes written to the client's connection for this response (headers included). */
    bytes?: number;
    /** False when the response broke off before its end. */
    complete?: boolean;
    /**
     * access: the length of the response's body when the whole response (status and body) was
     * produced before the entry was written; the entry then carries its `status` too, and an
     * `outcome` follows only if the response did not go out whole with that status.
     */
    bodyBytes?: number;
    /** New study versions: the version, its root CID, how many instances, and where they came from. */
    version?: number;
    root?: string;
    instances?: number;
    source?: 'stow' | 'dimse' | 'cli';
    grant?: string;
    /** summary: refusals counted, by reason. */
    counts?: Record<string, number>;
  };
  where?: { address?: string; method?: string; url?: string };
  /** Why it was allowed (the grant, the staff policy, own studies) or refused (the reason given). */
  why?: string;
  /** outcome: the index of the access entry it completes. */
  ref?: number;
}

/** A leaf as parsed (no key needed). */
export interface LeafFields {
  version: number;
  index: number;
  time: number;
  subject: string;
  prev: Uint8Array;
  iv: Uint8Array;
  ciphertext: Uint8Array;
}

function header(index: number, time: number, subject: string, prev: Uint8Array): Buffer {
  if (subject.length > 255 || !/^[\x21-\x7e]+$/.test(subject)) throw new VaultError('INTERNAL', 'an audit subject is 1 to 255 printable ASCII characters');
  if (prev.length !== HASH_SIZE) throw new VaultError('INTERNAL', 'previous leaf hash must be 32 bytes');
  if (!Number.isSafeInteger(index) || index < 0 || !Number.isSafeInteger(time) || time < 0)
    throw new VaultError('INTERNAL', 'an audit index and time are non-negative integers');
  // Unsafe: every byte is written below. u64 fields as two u32 halves: BigInt conversions cost more
  // than the rest of the header (both values are safe integers, below 2^53).
  const h = Buffer.allocUnsafe(1 + 8 + 8 + 1 + subject.length + HASH_SIZE);
  h[0] = LEAF_VERSION;
  h.writeUInt32BE(Math.floor(index / 2 ** 32), 1);
  h.writeUInt32BE(index >>> 0, 5);
  h.writeUInt32BE(Math.floor(time / 2 ** 32), 9);
  h.writeUInt32BE(time >>> 0, 13);
  h[17] = subject.length;
  h.write(subject, 18, 'latin1');
  h.set(prev, 18 + subject.length);
  return h;
}

// Random IVs drawn from a pool filled 4 KiB at a time: one randomBytes(12) per entry cost more than
// the encryption itself on a busy machine.
const ivPool = Buffer.alloc(4096);
let ivAt = ivPool.length;
function nextIv(): Buffer {
  if (ivAt + IV_BYTES > ivPool.length) {
    randomFillSync(ivPool);
    ivAt = 0;
  }
  const iv = Buffer.from(ivPool.subarray(ivAt, ivAt + IV_BYTES));
  ivAt += IV_BYTES;
  return iv;
}

// A raw key is imported into a KeyObject once, not at every entry.
const keyObjects = new WeakMap<Uint8Array, KeyObject>();
function keyObject(key: Uint8Array): KeyObject {
  let k = keyObjects.get(key);
  if (k === undefined) {
    k = createSecretKey(key);
    keyObjects.set(key, k);
  }
  return k;
}

/** Seals `record` as leaf `index` written at `time`, about `subject`, under `key`, after the leaf whose hash is `prev` (undefined for entry 0). */
export function sealLeaf(record: AuditRecord, index: number, time: number, subject: string, prev: Uint8Array | undefined, key: Uint8Array): Uint8Array {
  const h = header(index, time, subject, prev ?? ZERO_HASH);
  const iv = nextIv();
  const c = createCipheriv('aes-256-gcm', keyObject(key), iv);
  c.setAAD(h);
  const ct = Buffer.concat([c.update(JSON.stringify(record), 'utf8'), c.final(), c.getAuthTag()]);
  return Buffer.concat([h, iv, ct]);
}

/** Parses a leaf; undefined when it is not a well-formed version 1 leaf. */
export function parseLeaf(leaf: Uint8Array): LeafFields | undefined {
  const b = Buffer.from(leaf.buffer, leaf.byteOffset, leaf.byteLength);
  if (b.length < 18 || b[0] !== LEAF_VERSION) return undefined;
  const len = b[17]!;
  const ivAt = 18 + len + HASH_SIZE;
  if (len === 0 || b.length < ivAt + IV_BYTES + TAG_BYTES) return undefined;
  const index = b.readBigUInt64BE(1);
  const time = b.readBigUInt64BE(9);
  if (index > BigInt(Number.MAX_SAFE_INTEGER) || time > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return {
    version: LEAF_VERSION,
    index: Number(index),
    time: Number(time),
    subject: b.subarray(18, 18 + len).toString('ascii'),
    prev: b.subarray(18 + len, ivAt),
    iv: b.subarray(ivAt, ivAt + IV_BYTES),
    ciphertext: b.subarray(ivAt + IV_BYTES),
  };
}

/** The details of a leaf under `key`; undefined when the key does not open it (another patient's key, or the leaf was changed). */
export function openLeaf(leaf: Uint8Array, key: Uint8Array): AuditRecord | undefined {
  const f = parseLeaf(leaf);
  if (f === undefined) return undefined;
  const b = Buffer.from(leaf.buffer, leaf.byteOffset, leaf.byteLength);
  const h = b.subarray(0, 18 + f.subject.length + HASH_SIZE);
  try {
    const d = createDecipheriv('aes-256-gcm', key, f.iv);
    d.setAAD(h);
    d.setAuthTag(f.ciphertext.subarray(f.ciphertext.length - TAG_BYTES));
    const pt = Buffer.concat([d.update(f.ciphertext.subarray(0, f.ciphertext.length - TAG_BYTES)), d.final()]);
    return JSON.parse(pt.toString('utf8')) as AuditRecord;
  } catch {
    return undefined;
  }
}
