// The study as a content-addressed DAG (IPLD dag-cbor nodes over raw leaves), so IPFS tooling can
// pin, move and verify it:
//
//   StudyManifest (root of one study version)
//     ├─ prev ──> StudyManifest of the previous version (null for the first)
//     └─ added ─> [InstanceNode, ...]   instances new in this version
//   InstanceNode
//     └─ chunks > [raw block, ...]      AES-256-GCM ciphertext of the Part 10 bytes, 1 MiB each
//
// Versions are deltas: a version links the instances it adds plus its predecessor, so a study
// pushed one instance per request grows by one small manifest each time instead of rewriting a
// list of every instance (O(n) instead of O(n^2) bytes). The current instance set is the walk of
// the prev chain where later versions supersede earlier ones with the same SOP Instance UID.
//
// Links and sizes are readable without keys (anyone can check that every block is present and
// intact); every field that identifies a patient, a study or an instance (UIDs, hashes of the
// plaintext, times) sits in the node's sealed envelope.
import { createHash } from 'node:crypto';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import * as Digest from 'multiformats/hashes/digest';
import { sha256 } from 'multiformats/hashes/sha2';
import { VaultError } from '../core/errors.ts';
import { deriveKey, newSalt, openEnvelope, sealEnvelope } from './seal.ts';

/** Plaintext bytes per chunk unless configured (1 MiB: IPFS-sized blocks). Each InstanceNode records its own. */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

export const INSTANCE_NODE_TYPE = 'dicom-vault/instance@1';
export const STUDY_MANIFEST_TYPE = 'dicom-vault/study@1';

/** The sealed part of an InstanceNode. */
export interface InstanceEnvelope {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  transferSyntaxUID: string;
  /** SHA-256 of the plaintext Part 10 bytes, hex. */
  sha256: string;
}

export interface InstanceNode {
  type: typeof INSTANCE_NODE_TYPE;
  /** Plaintext bytes per chunk (the last may be shorter). */
  chunkSize: number;
  /** Plaintext size of the instance in bytes. */
  size: number;
  /** HKDF salt of this instance's derived key. */
  salt: Uint8Array;
  chunks: CID[];
  envelope: Uint8Array;
}

/** The sealed part of a StudyManifest. */
export interface StudyEnvelope {
  studyInstanceUID: string;
  createdAt: string;
}

export interface StudyManifest {
  type: typeof STUDY_MANIFEST_TYPE;
  version: number;
  prev: CID | null;
  /** Random id of the study's data key in the key store (not derived from any UID). */
  keyId: string;
  added: CID[];
  salt: Uint8Array;
  envelope: Uint8Array;
}

export interface EncodedNode {
  cid: CID;
  bytes: Uint8Array;
}

/** CIDv1 dag-cbor sha2-256, hashed synchronously (node:crypto) on the ingest path. */
export function encodeNode(node: unknown): EncodedNode {
  const bytes = dagCbor.encode(node);
  const digest = createHash('sha256').update(bytes).digest();
  return { cid: CID.createV1(dagCbor.code, Digest.create(sha256.code, digest)), bytes };
}

function sealJson(dataKey: Uint8Array, salt: Uint8Array, value: unknown): Uint8Array {
  return sealEnvelope(deriveKey(dataKey, salt), dagCbor.encode(value));
}

function openJson<T>(dataKey: Uint8Array, salt: Uint8Array, sealed: Uint8Array): T {
  return dagCbor.decode(openEnvelope(deriveKey(dataKey, salt), sealed)) as T;
}

/**
 * `instanceKey` is deriveKey(dataKey, salt), the key the chunks were sealed with: the envelope is
 * sealed under it too (its own nonce purpose), and ingest has derived it already.
 */
export function buildInstanceNode(
  instanceKey: Uint8Array,
  salt: Uint8Array,
  fields: { chunkSize: number; size: number; chunks: CID[] },
  envelope: InstanceEnvelope,
): EncodedNode {
  const node: InstanceNode = {
    type: INSTANCE_NODE_TYPE,
    chunkSize: fields.chunkSize,
    size: fields.size,
    salt,
    chunks: fields.chunks,
    envelope: sealEnvelope(instanceKey, dagCbor.encode(envelope)),
  };
  return encodeNode(node);
}

export function buildStudyManifest(
  dataKey: Uint8Array,
  fields: { version: number; prev: CID | null; keyId: string; added: CID[] },
  envelope: StudyEnvelope,
): EncodedNode {
  const salt = newSalt();
  const node: StudyManifest = {
    type: STUDY_MANIFEST_TYPE,
    version: fields.version,
    prev: fields.prev,
    keyId: fields.keyId,
    added: fields.added,
    salt,
    envelope: sealJson(dataKey, salt, envelope),
  };
  return encodeNode(node);
}

/**
 * The links a node is walked by (pins, gc): a manifest's `added` instance nodes, an instance
 * node's chunks; never `prev` (each version root is walked itself). Other nodes: all their links.
 */
export function childLinks(value: unknown): CID[] {
  if (!isRecord(value)) return [];
  if (value.type === STUDY_MANIFEST_TYPE) return cids(value.added);
  if (value.type === INSTANCE_NODE_TYPE) return cids(value.chunks);
  const links: CID[] = [];
  const visit = (v: unknown): void => {
    const cid = CID.asCID(v);
    if (cid !== null) links.push(cid);
    else if (Array.isArray(v)) v.forEach(visit);
    else if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) Object.values(v).forEach(visit);
  };
  visit(value);
  return links;
}

function cids(v: unknown): CID[] {
  return Array.isArray(v) ? v.map((c) => CID.asCID(c)).filter((c): c is CID => c !== null) : [];
}

/** Whether a decoded node is a study manifest (by its type; the shape is checked when it is decoded for use). */
export function isStudyManifest(value: unknown): boolean {
  return isRecord(value) && value.type === STUDY_MANIFEST_TYPE;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object';
}

function isCidList(v: unknown): v is CID[] {
  return Array.isArray(v) && v.every((c) => CID.asCID(c) !== null);
}

/** Decodes and shape-checks an instance node (the bytes must already be verified against their CID). */
export function decodeInstanceNode(bytes: Uint8Array, cid: CID): InstanceNode {
  let node: Partial<InstanceNode>;
  try {
    node = dagCbor.decode(bytes) as Partial<InstanceNode>;
  } catch (cause) {
    throw new VaultError('BLOCK_CORRUPT', `instance node ${cid} is not valid dag-cbor`, { cause, details: { cid: cid.toString() } });
  }
  if (
    node.type !== INSTANCE_NODE_TYPE ||
    typeof node.chunkSize !== 'number' ||
    typeof node.size !== 'number' ||
    !(node.salt instanceof Uint8Array) ||
    !(node.envelope instanceof Uint8Array) ||
    !isCidList(node.chunks)
  ) {
    throw new VaultError('BLOCK_CORRUPT', `block ${cid} is not a dicom-vault instance node`, { details: { cid: cid.toString() } });
  }
  return node as InstanceNode;
}

export function decodeStudyManifest(bytes: Uint8Array, cid: CID): StudyManifest {
  let node: Partial<StudyManifest>;
  try {
    node = dagCbor.decode(bytes) as Partial<StudyManifest>;
  } catch (cause) {
    throw new VaultError('BLOCK_CORRUPT', `manifest ${cid} is not valid dag-cbor`, { cause, details: { cid: cid.toString() } });
  }
  if (
    node.type !== STUDY_MANIFEST_TYPE ||
    typeof node.version !== 'number' ||
    typeof node.keyId !== 'string' ||
    !(node.prev === null || CID.asCID(node.prev) !== null) ||
    !(node.salt instanceof Uint8Array) ||
    !(node.envelope instanceof Uint8Array) ||
    !isCidList(node.added)
  ) {
    throw new VaultError('BLOCK_CORRUPT', `block ${cid} is not a dicom-vault study manifest`, { details: { cid: cid.toString() } });
  }
  return node as StudyManifest;
}

export function openInstanceEnvelope(dataKey: Uint8Array, node: InstanceNode): InstanceEnvelope {
  return openInstanceEnvelopeWithKey(deriveKey(dataKey, node.salt), node);
}

/**
 * The same, given the instance key (deriveKey(dataKey, node.salt)), which also opens the chunks:
 * a reader derives it once per instance instead of twice.
 */
export function openInstanceEnvelopeWithKey(instanceKey: Uint8Array, node: InstanceNode): InstanceEnvelope {
  return dagCbor.decode(openEnvelope(instanceKey, node.envelope)) as InstanceEnvelope;
}

export function openStudyEnvelope(dataKey: Uint8Array, node: StudyManifest): StudyEnvelope {
  return openJson<StudyEnvelope>(dataKey, node.salt, node.envelope);
}
