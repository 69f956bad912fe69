// The study as a content-addressed DAG (IPLD dag-cbor nodes over raw leaves), so IPFS tooling can
// pin, move and verify it. Format 2 (written since issue 27):
//
//   StudyManifest (root of one study version)
//     ├─ prev ──> StudyManifest of the previous version (null for the first)
//     └─ added ─> tree of link nodes ─> [InstanceNode, ...]   instances new in this version
//   InstanceNode
//     └─ links ─> tree of link nodes ─> [raw block, ...]      AES-256-GCM ciphertext of the Part
//                                                              10 bytes, `chunkSize` each
//
// The trees (tree.ts) are balanced with a fixed fanout (1024): up to 1,024 leaves sit in the node
// itself (depth 0, no link node: every small instance), more go under link nodes of 42 KiB each,
// so no block grows with an instance or a version, ingest writes them as the chunks stream, and a
// frame read fetches only its branch. Format 1 (flat `chunks` and `added` lists, no associated
// data) is still read everywhere: a node's `type` says which it is.
//
// Versions are deltas: a version links the instances it adds plus its predecessor, so a study
// pushed one instance per request grows by one small manifest each time instead of rewriting a
// list of every instance (O(n) instead of O(n^2) bytes). The current instance set is the walk of
// the prev chain where later versions supersede earlier ones with the same SOP Instance UID.
//
// Links and sizes are readable without keys (anyone can check that every block is present and
// intact); every field that identifies a patient, a study or an instance (UIDs, hashes of the
// plaintext, times) sits in the node's sealed envelope. In format 2 the envelope's associated data
// is the dag-cbor of the node's other fields (all of them: sizes, salt, fanout, depth, top links,
// prev, key id), so a node edited in any field no longer opens; instance and manifest keys are
// derived apart (seal.ts), so one's envelope never opens as the other's; and each chunk binds its
// index, whether it is the last, and on the last the instance's size (seal.ts chunkAad).
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { VaultError } from '../core/errors.ts';
import { chunkAad, deriveKey, deriveKeyFor, newSalt, openEnvelope, sealEnvelope } from './seal.ts';
import {
  CHUNK_CODEC,
  checkFanout,
  DEFAULT_FANOUT,
  encodeNode,
  INSTANCE_CODEC,
  LINK_NODE_TYPE,
  LinkTree,
  MAX_FANOUT,
  type EncodedNode,
  type TreeTop,
} from './tree.ts';

export { encodeNode, type EncodedNode } from './tree.ts';

/** Plaintext bytes per chunk unless configured (1 MiB: IPFS-sized blocks). Each InstanceNode records its own. */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

/** Format 1 (flat lists, no associated data): read, no longer written. */
export const INSTANCE_NODE_TYPE_V1 = 'dicom-vault/instance@1';
export const STUDY_MANIFEST_TYPE_V1 = 'dicom-vault/study@1';
/** Format 2: trees of link nodes, associated data, separate key derivations. */
export const INSTANCE_NODE_TYPE = 'dicom-vault/instance@2';
export const STUDY_MANIFEST_TYPE = 'dicom-vault/study@2';

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

/** An instance node of either format, decoded into one shape. */
export interface InstanceNode {
  format: 1 | 2;
  /** Plaintext bytes per chunk (the last may be shorter). */
  chunkSize: number;
  /** Plaintext size of the instance in bytes. */
  size: number;
  /** HKDF salt of this instance's derived key. */
  salt: Uint8Array;
  /** Of the chunk tree (format 1: a flat list, depth 0). */
  fanout: number;
  depth: number;
  /** The top links: chunks at depth 0, link nodes below. */
  links: CID[];
  envelope: Uint8Array;
  /** Format 2: the envelope's associated data (the dag-cbor of the node's other fields). */
  aad?: Uint8Array;
}

/** The sealed part of a StudyManifest. */
export interface StudyEnvelope {
  studyInstanceUID: string;
  createdAt: string;
}

/** A manifest of either format, decoded into one shape. */
export interface StudyManifest {
  format: 1 | 2;
  version: number;
  prev: CID | null;
  /** Random id of the study's data key in the key store (not derived from any UID). */
  keyId: string;
  salt: Uint8Array;
  /** Of the tree of added instance nodes (format 1: a flat list, depth 0). */
  fanout: number;
  depth: number;
  /** Instances added by this version. */
  count: number;
  /** The top links of the added instances: instance nodes at depth 0, link nodes below. */
  added: CID[];
  envelope: Uint8Array;
  aad?: Uint8Array;
}

/** Chunks of an instance of `size` bytes. */
export function chunkCount(node: Pick<InstanceNode, 'size' | 'chunkSize'>): number {
  return node.size === 0 ? 0 : Math.ceil(node.size / node.chunkSize);
}

/** The key an instance's chunks and envelope are sealed with. */
export function instanceKeyOf(dataKey: Uint8Array, node: Pick<InstanceNode, 'format' | 'salt'>): Buffer {
  return node.format === 1 ? deriveKey(dataKey, node.salt) : deriveKeyFor('instance', dataKey, node.salt);
}

/** A new instance's salt and key (format 2). */
export function newInstanceKey(dataKey: Uint8Array): { salt: Uint8Array; key: Buffer } {
  const salt = newSalt();
  return { salt, key: deriveKeyFor('instance', dataKey, salt) };
}

/** The associated data of chunk `index` (undefined: format 1 has none). */
export function chunkAadOf(node: Pick<InstanceNode, 'format' | 'size' | 'chunkSize'>, index: number): Buffer | undefined {
  if (node.format === 1) return undefined;
  return chunkAad(index, index === chunkCount(node) - 1, node.chunkSize, node.size);
}

/**
 * `instanceKey` is newInstanceKey's key, the one the chunks were sealed with: the envelope is
 * sealed under it too (its own nonce purpose), with the node's other fields as associated data.
 */
export function buildInstanceNode(
  instanceKey: Uint8Array,
  salt: Uint8Array,
  fields: { chunkSize: number; size: number; fanout: number; tree: TreeTop },
  envelope: InstanceEnvelope,
): EncodedNode {
  const open = {
    type: INSTANCE_NODE_TYPE,
    chunkSize: fields.chunkSize,
    size: fields.size,
    fanout: fields.fanout,
    depth: fields.tree.depth,
    salt,
    links: fields.tree.links,
  };
  return encodeNode({ ...open, envelope: sealEnvelope(instanceKey, dagCbor.encode(envelope), dagCbor.encode(open)) });
}

export function buildStudyManifest(
  dataKey: Uint8Array,
  fields: { version: number; prev: CID | null; keyId: string; fanout: number; tree: TreeTop },
  envelope: StudyEnvelope,
): EncodedNode {
  const salt = newSalt();
  const open = {
    type: STUDY_MANIFEST_TYPE,
    version: fields.version,
    prev: fields.prev,
    keyId: fields.keyId,
    salt,
    fanout: fields.fanout,
    depth: fields.tree.depth,
    count: fields.tree.count,
    added: fields.tree.links,
  };
  return encodeNode({ ...open, envelope: sealEnvelope(deriveKeyFor('manifest', dataKey, salt), dagCbor.encode(envelope), dagCbor.encode(open)) });
}

/**
 * The links a node is walked by (pins, gc): a manifest's added instances (top links), an
 * instance node's chunks (top links), a link node's links; never `prev` (each version root is
 * walked itself). Other nodes: all their links.
 */
export function childLinks(value: unknown): CID[] {
  if (!isRecord(value)) return [];
  if (value.type === STUDY_MANIFEST_TYPE || value.type === STUDY_MANIFEST_TYPE_V1) return cids(value.added);
  if (value.type === INSTANCE_NODE_TYPE_V1) return cids(value.chunks);
  if (value.type === INSTANCE_NODE_TYPE || value.type === LINK_NODE_TYPE) return cids(value.links);
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

/** Whether a decoded node is a study manifest of either format (by its type; the shape is checked when it is decoded for use). */
export function isStudyManifest(value: unknown): boolean {
  return isRecord(value) && (value.type === STUDY_MANIFEST_TYPE || value.type === STUDY_MANIFEST_TYPE_V1);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object';
}

function isCidList(v: unknown): v is CID[] {
  return Array.isArray(v) && v.every((c) => CID.asCID(c) !== null);
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isFanout = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 2 && v <= MAX_FANOUT;

/** The associated data of a format-2 node's envelope: the dag-cbor of all its fields but the envelope. */
function envelopeAad(value: Record<string, unknown>): Uint8Array {
  const { envelope: _, ...open } = value;
  return dagCbor.encode(open);
}

function decode(bytes: Uint8Array, cid: CID, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = dagCbor.decode(bytes);
  } catch (cause) {
    throw new VaultError('BLOCK_CORRUPT', `${what} ${cid} is not valid dag-cbor`, { cause, details: { cid: cid.toString() } });
  }
  if (!isRecord(value)) throw new VaultError('BLOCK_CORRUPT', `${what} ${cid} is not a dag-cbor map`, { details: { cid: cid.toString() } });
  return value;
}

/** Decodes and shape-checks an instance node of either format (the bytes must already be verified against their CID). */
export function decodeInstanceNode(bytes: Uint8Array, cid: CID): InstanceNode {
  const v = decode(bytes, cid, 'instance node');
  const common = isCount(v.chunkSize) && (v.chunkSize as number) > 0 && isCount(v.size) && v.salt instanceof Uint8Array && v.envelope instanceof Uint8Array;
  if (v.type === INSTANCE_NODE_TYPE_V1 && common && isCidList(v.chunks)) {
    const links = v.chunks;
    return {
      format: 1,
      chunkSize: v.chunkSize as number,
      size: v.size as number,
      salt: v.salt as Uint8Array,
      fanout: Math.max(2, links.length),
      depth: 0,
      links,
      envelope: v.envelope as Uint8Array,
    };
  }
  if (v.type === INSTANCE_NODE_TYPE && common && isFanout(v.fanout) && isCount(v.depth) && isCidList(v.links)) {
    return {
      format: 2,
      chunkSize: v.chunkSize as number,
      size: v.size as number,
      salt: v.salt as Uint8Array,
      fanout: v.fanout,
      depth: v.depth,
      links: v.links,
      envelope: v.envelope as Uint8Array,
      aad: envelopeAad(v),
    };
  }
  throw new VaultError('BLOCK_CORRUPT', `block ${cid} is not a dicom-vault instance node`, { details: { cid: cid.toString() } });
}

/** Decodes and shape-checks a study manifest of either format. */
export function decodeStudyManifest(bytes: Uint8Array, cid: CID): StudyManifest {
  const v = decode(bytes, cid, 'manifest');
  const common =
    typeof v.version === 'number' &&
    typeof v.keyId === 'string' &&
    (v.prev === null || CID.asCID(v.prev) !== null) &&
    v.salt instanceof Uint8Array &&
    v.envelope instanceof Uint8Array &&
    isCidList(v.added);
  const prev = v.prev === null ? null : CID.asCID(v.prev);
  if (v.type === STUDY_MANIFEST_TYPE_V1 && common) {
    const added = v.added as CID[];
    return {
      format: 1,
      version: v.version as number,
      prev,
      keyId: v.keyId as string,
      salt: v.salt as Uint8Array,
      fanout: Math.max(2, added.length),
      depth: 0,
      count: added.length,
      added,
      envelope: v.envelope as Uint8Array,
    };
  }
  if (v.type === STUDY_MANIFEST_TYPE && common && isFanout(v.fanout) && isCount(v.depth) && isCount(v.count)) {
    return {
      format: 2,
      version: v.version as number,
      prev,
      keyId: v.keyId as string,
      salt: v.salt as Uint8Array,
      fanout: v.fanout,
      depth: v.depth,
      count: v.count,
      added: v.added as CID[],
      envelope: v.envelope as Uint8Array,
      aad: envelopeAad(v),
    };
  }
  throw new VaultError('BLOCK_CORRUPT', `block ${cid} is not a dicom-vault study manifest`, { details: { cid: cid.toString() } });
}

export function openInstanceEnvelope(dataKey: Uint8Array, node: InstanceNode): InstanceEnvelope {
  return openInstanceEnvelopeWithKey(instanceKeyOf(dataKey, node), node);
}

/**
 * The same, given the instance key (instanceKeyOf), which also opens the chunks: a reader derives
 * it once per instance instead of twice.
 */
export function openInstanceEnvelopeWithKey(instanceKey: Uint8Array, node: InstanceNode): InstanceEnvelope {
  return dagCbor.decode(openEnvelope(instanceKey, node.envelope, node.aad)) as InstanceEnvelope;
}

export function openStudyEnvelope(dataKey: Uint8Array, node: StudyManifest): StudyEnvelope {
  const key = node.format === 1 ? deriveKey(dataKey, node.salt) : deriveKeyFor('manifest', dataKey, node.salt);
  return dagCbor.decode(openEnvelope(key, node.envelope, node.aad)) as StudyEnvelope;
}

/** The chunk tree of an instance node: chunk CIDs by index, read branch by branch. */
export function chunkTree(node: InstanceNode, cid: CID, read: (cid: CID) => Promise<Uint8Array>, onNode?: (cid: CID, bytes: Uint8Array) => void): LinkTree {
  return new LinkTree({
    fanout: node.fanout,
    depth: node.depth,
    count: chunkCount(node),
    links: node.links,
    leafCodec: CHUNK_CODEC,
    read,
    what: `instance ${cid}`,
    ...(onNode === undefined ? {} : { onNode }),
  });
}

/** The tree of a manifest's added instance nodes. */
export function addedTree(
  manifest: StudyManifest,
  cid: CID,
  read: (cid: CID) => Promise<Uint8Array>,
  onNode?: (cid: CID, bytes: Uint8Array) => void,
): LinkTree {
  return new LinkTree({
    fanout: manifest.fanout,
    depth: manifest.depth,
    count: manifest.count,
    links: manifest.added,
    leafCodec: INSTANCE_CODEC,
    read,
    what: `manifest ${cid}`,
    ...(onNode === undefined ? {} : { onNode }),
  });
}

export { checkFanout, DEFAULT_FANOUT };
