// A patient's audit entries as they travel in a patient archive (src/transfer/patient-archive.ts):
// each entry's leaf with its RFC 9162 inclusion proof into one signed head, the head, the node's
// audit public key, the keys of the patient's audit subjects (so that the receiver can check that
// each entry's details are the leaf's, not text written beside it) and, when the head was
// anchored, its receipt. The receiving node checks all of it offline here; the head's receipt is
// checked on a chain by the caller (src/shell/patient-import.ts).
//
// What this proves: the entries are in the log of the node whose audit key signed the head, at
// the positions they claim, with the details they show. What it cannot prove alone: that the key
// is the sending node's. The archive carries it; an anchored head ties the head (and so the key
// that signed it) to the sender's anchoring on a chain the receiver trusts.
import type { KeyObject } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { verifyInclusion } from '../../anchor/merkle.ts';
import { openLeaf, parseLeaf, type AuditRecord } from './entry.ts';
import { headCid, parseHeadBody, publicKeyOf, publicKeyText, verifyHeadSignature } from './head.ts';

/** One entry as exported. */
export interface PortableEntry {
  index: number;
  time: string;
  /** The details, opened by the exporting node; null when it no longer held the key. */
  record: AuditRecord | null;
  /** The leaf, base64. */
  leaf: string;
  /** Size of the head the proof leads to. */
  head?: number;
  /** Inclusion path, base64 hashes, leaf to root. */
  proof?: string[];
}

export interface PortableHead {
  size: number;
  root: string;
  time: string;
  cid: string;
  body: string;
  signature: string;
}

export interface PortableAudit {
  key: { algorithm: 'Ed25519'; publicKey: string };
  head: PortableHead | null;
  /** The anchor receipt of the head's CID, when the head was anchored before the export. */
  headReceipt?: object;
  /** The patient's audit subject keys, base64, by subject: the receiver opens each leaf with them. */
  keys?: Record<string, string>;
  entries: PortableEntry[];
}

export interface PortableAuditCheck {
  entries: number;
  /** Inclusion proofs checked into the signed head. */
  proofs: number;
  /** Entries whose details were opened from their leaf and found equal to those shown. */
  records: number;
  head: { size: number; cid: string; time: string } | null;
  /** The audit key that signed the head, SPKI DER base64. */
  key: string;
}

const b64 = (s: unknown): Buffer | undefined => (typeof s === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(s) ? Buffer.from(s, 'base64') : undefined);

/**
 * Checks the audit part of a patient archive: the head's signature under the archive's audit key
 * (and, when `expectedKey` is given, that the key is that one), every entry's leaf where it says
 * it is, its inclusion proof into the head, its details against its leaf. Returns what was
 * checked, or the first reason to refuse.
 */
export function checkPortableAudit(input: unknown, expectedKey?: KeyObject): { ok: true; check: PortableAuditCheck } | { ok: false; reason: string } {
  const fail = (reason: string) => ({ ok: false as const, reason: `audit: ${reason}` });
  if (typeof input !== 'object' || input === null) return fail('the archive carries no audit part');
  const a = input as Partial<PortableAudit>;
  if (a.key?.algorithm !== 'Ed25519' || typeof a.key.publicKey !== 'string') return fail('the archive carries no Ed25519 audit key');
  let key: KeyObject;
  try {
    key = publicKeyOf(a.key.publicKey);
  } catch {
    return fail('the audit key is not an Ed25519 public key');
  }
  if (expectedKey !== undefined && publicKeyText(expectedKey) !== publicKeyText(key)) return fail("the audit key is not the sending node's pinned key");
  if (!Array.isArray(a.entries)) return fail('the audit entries are missing');
  const head = a.head ?? null;
  if (head === null) {
    if (a.entries.length > 0) return fail(`${a.entries.length} entries but no signed head to prove them into`);
    return { ok: true, check: { entries: 0, proofs: 0, records: 0, head: null, key: a.key.publicKey } };
  }
  if (typeof head.body !== 'string') return fail('the head has no body');
  const fields = parseHeadBody(head.body);
  const root = b64(head.root);
  if (fields === undefined || root === undefined || fields.size !== head.size || !root.equals(fields.root) || fields.time !== head.time)
    return fail("the head's fields are not its body's");
  if (head.cid !== headCid(head.body).toString()) return fail("the head's CID is not its body's");
  const signature = b64(head.signature);
  if (signature === undefined || !verifyHeadSignature({ body: head.body, signature }, key)) return fail("the head is not signed by the archive's audit key");

  const keys = new Map<string, Buffer>();
  for (const [subject, text] of Object.entries(a.keys ?? {})) {
    const k = b64(text);
    if (k?.length !== 32) return fail(`the key of audit subject ${subject} is not 32 bytes`);
    keys.set(subject, k);
  }
  let proofs = 0;
  let records = 0;
  for (const [n, e] of a.entries.entries()) {
    const at = `entry ${typeof e?.index === 'number' ? e.index : `#${n + 1}`}`;
    const leaf = b64(e?.leaf);
    const f = leaf === undefined ? undefined : parseLeaf(leaf);
    if (leaf === undefined || f === undefined) return fail(`${at}: its leaf is not a well-formed entry`);
    if (f.index !== e.index || new Date(f.time).toISOString() !== e.time) return fail(`${at}: its index or time is not its leaf's`);
    if (!Array.isArray(e.proof) || e.head !== fields.size) return fail(`${at} carries no inclusion proof into the signed head`);
    const path = e.proof.map(b64);
    if (path.some((p) => p === undefined) || !verifyInclusion(leaf, f.index, fields.size, path as Buffer[], fields.root))
      return fail(`${at}: its inclusion proof does not lead to the signed head of ${fields.size} entries`);
    proofs++;
    const subjectKey = keys.get(f.subject);
    if (e.record !== null && subjectKey !== undefined) {
      const opened = openLeaf(leaf, subjectKey);
      if (opened === undefined || !isDeepStrictEqual(opened, e.record)) return fail(`${at}: the details shown are not those sealed in its leaf`);
      records++;
    }
  }
  return { ok: true, check: { entries: a.entries.length, proofs, records, head: { size: fields.size, cid: head.cid, time: head.time }, key: a.key.publicKey } };
}

/** The audit part as the receiving node keeps it: without the subject keys (they served the check). */
export function withoutSubjectKeys(input: unknown): unknown {
  if (typeof input !== 'object' || input === null) return input;
  const { keys: _keys, ...rest } = input as PortableAudit;
  return rest;
}
