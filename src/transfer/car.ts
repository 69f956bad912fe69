// How a study moves between nodes and providers: a CAR file (CARv1, the IPFS archive format) of
// every block of its DAG, from the latest manifest through `prev` to the first version, each
// version's instance nodes and their chunks, with the link nodes of both trees (format 2, tree.ts). Any IPFS tool can read or import it (`ipfs dag
// import`); another dicom-vault node imports it, re-hashing every block, and the study is
// verifiable there at once.
//
// The blocks are ciphertext. For the study to be readable on the other node its data key must
// travel too: `exportStudyCar` with a recipient seals it to that node's X25519 public key (HPKE,
// RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM; @hpke/core) in one extra dag-cbor block
// named as the CAR's second root. Importing unwraps it with the node's private key, stores it in
// the KeyStore and rebuilds the catalog entries by re-reading every instance. Without the key
// envelope (or sealed for another node), the import still stores and checks every block and
// reports the study as "verifiable, not readable".
//
// Memory stays bounded: blocks stream one at a time in both directions (CarWriter waits for its
// output to drain; CarBlockIterator reads the file as it goes).
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';
import { createReadStream, createWriteStream, existsSync, readFileSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { CarBlockIterator, CarWriter } from '@ipld/car';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { VaultError, isVaultError } from '../core/errors.ts';
import type { Catalog } from '../catalog/catalog.ts';
import type { CatalogInstance } from '../catalog/records.ts';
import { createSecretFileOnce, type DataKey } from '../format/keys.ts';
import { scanInstance } from '../dicom/scanner.ts';
import {
  addedTree,
  chunkAadOf,
  chunkTree,
  decodeInstanceNode,
  decodeStudyManifest,
  encodeNode,
  instanceKeyOf,
  openInstanceEnvelope,
  openStudyEnvelope,
  type StudyManifest,
} from '../format/dag.ts';
import { openChunk } from '../format/seal.ts';
import type { BlockStore } from '../../storage/block-store.ts';
import { cidMatches } from '../../storage/cid.ts';
import { getVerified } from '../../storage/verified.ts';

/** The node's transport key pair (X25519, PKCS#8 PEM, 0600), beside master.key. */
export const TRANSPORT_KEY_FILE = 'transport.key';
export const KEY_ENVELOPE_TYPE = 'dicom-vault/key-envelope@2';
/** Release 0.1's envelope (hand-written ECIES): recognised, and refused with what to do. */
const LEGACY_KEY_ENVELOPE_TYPE = 'dicom-vault/key-envelope@1';
const HPKE_INFO = new TextEncoder().encode('dicom-vault/car-key-envelope/2');
/** Block puts in flight during an import. */
export const DEFAULT_IMPORT_CONCURRENCY = 8;

// ---------------------------------------------------------------------------------------------
// The node's transport key

export interface TransportKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

/** Reads `<dataDir>/transport.key`, creating it (0600, fsynced) on first use. */
export function loadOrCreateTransportKey(path: string): TransportKey {
  if (!existsSync(path)) {
    const { privateKey } = generateKeyPairSync('x25519');
    createSecretFileOnce(path, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
  }
  const privateKey = createPrivateKey(readFileSync(path));
  if (privateKey.asymmetricKeyType !== 'x25519') throw new VaultError('CONFIG_INVALID', `${path} is not an X25519 private key`);
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/** The public key as SPKI PEM: what a sender passes to `export --car --to`. */
export function publicKeyPem(key: TransportKey): string {
  return key.publicKey.export({ format: 'pem', type: 'spki' }).toString();
}

/** Parses a recipient's public key file (SPKI PEM); CONFIG_INVALID if it is not X25519. */
export function parseRecipientKey(pem: string | Buffer): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (cause) {
    throw new VaultError('CONFIG_INVALID', 'the recipient key is not a PEM public key', { cause });
  }
  if (key.asymmetricKeyType !== 'x25519') throw new VaultError('CONFIG_INVALID', `the recipient key is ${key.asymmetricKeyType}, not X25519`);
  return key;
}

export function spki(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' });
}

// ---------------------------------------------------------------------------------------------
// Export

export interface ExportDeps {
  store: Pick<BlockStore, 'get'>;
  catalog: Pick<Catalog, 'latestVersion'>;
  keys: { require(studyInstanceUID: string): DataKey };
}

export interface ExportOptions {
  /** Seal the study's data key to this node's public key (X25519). Default: no key travels. */
  recipient?: KeyObject;
  signal?: AbortSignal;
}

export interface ExportReport {
  root: string;
  versions: number;
  instances: number;
  /** Blocks of the DAG written (the key envelope not counted). */
  blocks: number;
  bytes: number;
  keyIncluded: boolean;
}

/**
 * Every block of a study, newest version first (manifests, the link nodes of both trees, instance
 * nodes, chunks), read with `get` and handed to `put` in the order a CAR reader wants them;
 * counts versions and instances into `report`. A link node is put as the walk reads it (each is
 * read once: the trees are walked in order). The study CAR and the patient archive both write
 * their studies with it.
 */
export async function putStudyBlocks(
  root: CID,
  get: (cid: CID) => Promise<Uint8Array>,
  put: (cid: CID, bytes: Uint8Array) => Promise<void>,
  report: { versions: number; instances: number },
): Promise<void> {
  const getAndPut = async (cid: CID): Promise<Uint8Array> => {
    const bytes = await get(cid);
    await put(cid, bytes);
    return bytes;
  };
  for (let cursor: CID | null = root; cursor !== null; ) {
    const bytes = await get(cursor);
    const manifest = decodeStudyManifest(bytes, cursor);
    await put(cursor, bytes);
    report.versions++;
    for await (const { cid: nodeCid } of addedTree(manifest, cursor, getAndPut).leaves()) {
      const nodeBytes = await get(nodeCid);
      const node = decodeInstanceNode(nodeBytes, nodeCid);
      await put(nodeCid, nodeBytes);
      report.instances++;
      for await (const { cid: chunk } of chunkTree(node, nodeCid, getAndPut).leaves()) await put(chunk, await get(chunk));
    }
    cursor = manifest.prev;
  }
}

/**
 * Writes the study's whole DAG as a CAR file at `path` (written beside it and renamed, so a
 * failed export leaves no file that looks whole). Every block is verified before it is written.
 */
export async function exportStudyCar(deps: ExportDeps, studyInstanceUID: string, path: string, options: ExportOptions = {}): Promise<ExportReport> {
  const latest = deps.catalog.latestVersion(studyInstanceUID);
  if (latest === undefined) throw new VaultError('STUDY_NOT_FOUND', 'no such study');
  const root = CID.parse(latest.root);
  const report: ExportReport = { root: root.toString(), versions: 0, instances: 0, blocks: 0, bytes: 0, keyIncluded: false };
  const roots = [root];
  let envelope: { cid: CID; bytes: Uint8Array } | undefined;
  if (options.recipient !== undefined) {
    envelope = await sealKeyEnvelope(deps.keys.require(studyInstanceUID), studyInstanceUID, root, options.recipient);
    roots.push(envelope.cid);
    report.keyIncluded = true;
  }
  const { writer, out } = CarWriter.create(roots);
  const partial = `${path}.partial`;
  const writing = pipeline(Readable.from(out), createWriteStream(partial));
  const get = (cid: CID): Promise<Uint8Array> => getVerified(deps.store, cid, options.signal ? { signal: options.signal } : {});
  const put = async (cid: CID, bytes: Uint8Array): Promise<void> => {
    await writer.put({ cid, bytes });
    report.blocks++;
    report.bytes += bytes.byteLength;
  };
  try {
    const walk = (async () => {
      if (envelope !== undefined) await writer.put(envelope);
      await putStudyBlocks(root, get, put, report);
    })();
    // If the walk fails, close the writer anyway so the output pipeline ends.
    await walk.finally(() => writer.close());
    await writing;
    await rename(partial, path);
    return report;
  } catch (err) {
    await writing.catch(() => undefined);
    await rm(partial, { force: true });
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Import

export interface ImportDeps {
  store: Pick<BlockStore, 'put' | 'get' | 'has' | 'flush'>;
  catalog: Pick<Catalog, 'latestVersion' | 'versions' | 'commitStudyVersion'>;
  keys: { get(studyInstanceUID: string): DataKey | undefined; importKey(studyInstanceUID: string, dk: DataKey): void };
  /** This node's transport key, to open a key envelope sealed to it. */
  transportKey?: TransportKey;
}

export interface ImportReport {
  root: string;
  /** Blocks read from the CAR and stored (the key envelope not counted). */
  blocks: number;
  bytes: number;
  /** Every block of the DAG is here and hashes to its CID. */
  verifiable: true;
  /** The data key came along and the study is in the catalog: it can be retrieved here. */
  readable: boolean;
  /** Why not readable, when not. */
  reason?: string;
  studyInstanceUID?: string;
  versions?: number;
  instances?: number;
}

/**
 * Imports a CAR written by `exportStudyCar` (or any CAR of a dicom-vault study DAG). Throws
 * CAR_INVALID for a malformed file, a block that does not hash to its CID or a DAG with blocks
 * missing; the blocks already stored stay (they are content-addressed and unreferenced).
 */
export async function importStudyCar(deps: ImportDeps, path: string, options: { signal?: AbortSignal; concurrency?: number } = {}): Promise<ImportReport> {
  const signal = options.signal;
  let reader: CarBlockIterator;
  try {
    reader = await CarBlockIterator.fromIterable(createReadStream(path));
  } catch (cause) {
    if (isVaultError(cause)) throw cause;
    throw new VaultError('CAR_INVALID', `${path} is not a CAR file`, { cause });
  }
  const roots = await reader.getRoots();
  const root = roots[0];
  if (root === undefined || root.code !== dagCbor.code) throw new VaultError('CAR_INVALID', 'the CAR names no dag-cbor study root');
  const envelopeCid = roots[1];
  let envelopeBytes: Uint8Array | undefined;
  const report: ImportReport = { root: root.toString(), blocks: 0, bytes: 0, verifiable: true, readable: false };

  const limit = options.concurrency ?? DEFAULT_IMPORT_CONCURRENCY;
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  try {
    for await (const { cid, bytes } of reader) {
      if (!cidMatches(cid, bytes)) {
        throw new VaultError('CAR_INVALID', `block ${cid} in the CAR does not hash to its CID`, { details: { cid: cid.toString() } });
      }
      if (envelopeCid !== undefined && cid.equals(envelopeCid)) {
        envelopeBytes = bytes; // travels with the CAR, never stored as a block
        continue;
      }
      // Not durable one by one: a single flush below makes the whole import durable.
      const p = deps.store.put(cid, bytes, { durable: false, ...(signal ? { signal } : {}) }).then(
        () => void inFlight.delete(p),
        (err: unknown) => {
          inFlight.delete(p);
          failure ??= err;
        },
      );
      inFlight.add(p);
      report.blocks++;
      report.bytes += bytes.byteLength;
      while (inFlight.size >= limit) await Promise.race(inFlight);
      if (failure !== undefined) throw failure;
    }
  } catch (err) {
    await Promise.allSettled(inFlight);
    if (isVaultError(err)) throw err;
    throw new VaultError('CAR_INVALID', `cannot read the CAR: ${err instanceof Error ? err.message : 'unknown error'}`, { cause: err });
  }
  await Promise.all(inFlight);
  if (failure !== undefined) throw failure;
  await deps.store.flush?.(signal ? { signal } : {});

  // Complete? Links are readable without keys, so the whole DAG can be checked here.
  const manifests = await checkComplete(deps.store, root, signal);

  if (envelopeBytes === undefined) return { ...report, reason: 'the CAR carries no data key: the study is verifiable here but not readable' };
  if (deps.transportKey === undefined) return { ...report, reason: 'this node has no transport key to open the data key with' };
  const opened = await openKeyEnvelope(envelopeBytes, root, deps.transportKey);
  if (typeof opened === 'string') return { ...report, reason: opened };
  const { studyInstanceUID, dataKey } = opened;
  const newest = manifests[0]!;
  if (newest.keyId !== dataKey.keyId || openStudyEnvelope(dataKey.key, newest).studyInstanceUID !== studyInstanceUID) {
    throw new VaultError('CAR_INVALID', 'the data key in the CAR does not open its study manifest');
  }
  const existing = deps.keys.get(studyInstanceUID);
  if (existing !== undefined && existing.keyId !== dataKey.keyId) {
    return { ...report, studyInstanceUID, reason: 'this node already holds this study under another data key; its versions cannot be merged' };
  }
  deps.keys.importKey(studyInstanceUID, dataKey);
  const versions = await rebuildCatalog(deps, studyInstanceUID, dataKey, root, manifests.slice().reverse(), signal);
  return { ...report, readable: true, studyInstanceUID, versions, instances: deps.catalog.latestVersion(studyInstanceUID)?.instanceCount ?? 0 };
}

/** Walks the DAG (manifests, instance nodes, chunk presence); newest manifest first. */
export async function checkComplete(
  store: Pick<BlockStore, 'get' | 'has'>,
  root: CID,
  signal: AbortSignal | undefined,
): Promise<Array<StudyManifest & { cid: CID }>> {
  const opts = signal ? { signal } : {};
  const manifests: Array<StudyManifest & { cid: CID }> = [];
  const missing = (cid: CID, err?: unknown): VaultError =>
    new VaultError('CAR_INVALID', `the CAR lacks block ${cid} of the study`, { details: { cid: cid.toString() }, ...(err ? { cause: err } : {}) });
  const fetch = async (cid: CID): Promise<Uint8Array> => {
    try {
      return await getVerified(store, cid, opts);
    } catch (err) {
      if (isVaultError(err, 'BLOCK_NOT_FOUND')) throw missing(cid, err);
      throw err;
    }
  };
  for (let cursor: CID | null = root; cursor !== null; ) {
    const manifest = decodeStudyManifest(await fetch(cursor), cursor);
    manifests.push({ ...manifest, cid: cursor });
    for await (const { cid: nodeCid } of addedTree(manifest, cursor, fetch).leaves()) {
      const node = decodeInstanceNode(await fetch(nodeCid), nodeCid);
      for await (const { cid: chunk } of chunkTree(node, nodeCid, fetch).leaves()) if (!(await store.has(chunk, opts))) throw missing(chunk);
    }
    cursor = manifest.prev;
  }
  return manifests;
}

/**
 * Commits each version the catalog does not have yet, oldest first, re-reading every added
 * instance (decrypted, checked against its SHA-256) to rebuild its DICOM metadata and layout.
 */
export async function rebuildCatalog(
  deps: { store: Pick<BlockStore, 'get'>; catalog: ImportDeps['catalog'] },
  studyInstanceUID: string,
  dataKey: DataKey,
  root: CID,
  oldestFirst: Array<StudyManifest & { cid: CID }>,
  signal: AbortSignal | undefined,
): Promise<number> {
  const known = new Set(deps.catalog.versions(studyInstanceUID).map((v) => v.root));
  let committed = 0;
  for (const manifest of oldestFirst) {
    if (known.has(manifest.cid.toString())) continue;
    const instances: CatalogInstance[] = [];
    const read = (cid: CID): Promise<Uint8Array> => getVerified(deps.store, cid, signal ? { signal } : {});
    for await (const { cid: nodeCid } of addedTree(manifest, manifest.cid, read).leaves())
      instances.push(await readInstance(deps.store, dataKey, nodeCid, signal));
    deps.catalog.commitStudyVersion({
      studyInstanceUID,
      version: manifest.version,
      root: manifest.cid.toString(),
      prev: manifest.prev?.toString() ?? null,
      instances,
      createdAt: openStudyEnvelope(dataKey.key, manifest).createdAt,
    });
    committed++;
  }
  if (deps.catalog.latestVersion(studyInstanceUID)?.root !== root.toString()) {
    throw new VaultError('CONFLICT', 'the study has other versions on this node than in the CAR');
  }
  return committed;
}

async function readInstance(store: Pick<BlockStore, 'get'>, dataKey: DataKey, nodeCid: CID, signal: AbortSignal | undefined): Promise<CatalogInstance> {
  const opts = signal ? { signal } : {};
  const node = decodeInstanceNode(await getVerified(store, nodeCid, opts), nodeCid);
  const env = openInstanceEnvelope(dataKey.key, node);
  const key = instanceKeyOf(dataKey.key, node);
  const hash = createHash('sha256');
  let size = 0;
  const chunks = chunkTree(node, nodeCid, (cid) => getVerified(store, cid, opts));
  const plaintext = async function* (): AsyncGenerator<Uint8Array> {
    for await (const { index: i, cid } of chunks.leaves()) {
      const plain = openChunk(key, i, await getVerified(store, cid, opts), chunkAadOf(node, i));
      hash.update(plain);
      size += plain.length;
      yield plain;
    }
  };
  const scanned = await scanInstance(plaintext());
  if (size !== node.size || hash.digest('hex') !== env.sha256) {
    throw new VaultError('INSTANCE_CORRUPT', `instance ${nodeCid} does not match the SHA-256 recorded at ingest`, { details: { cid: nodeCid.toString() } });
  }
  return {
    studyInstanceUID: env.studyInstanceUID,
    seriesInstanceUID: env.seriesInstanceUID,
    sopInstanceUID: env.sopInstanceUID,
    sopClassUID: env.sopClassUID,
    transferSyntaxUID: env.transferSyntaxUID,
    size: node.size,
    sha256: env.sha256,
    nodeCid: nodeCid.toString(),
    metadata: scanned.metadata,
    layout: scanned.layout,
  };
}

// ---------------------------------------------------------------------------------------------
// The key envelope (ECIES over X25519)

interface KeyEnvelope {
  type: typeof KEY_ENVELOPE_TYPE;
  /** The study root this key opens (also bound as the AEAD's associated data). */
  root: CID;
  /** SHA-256 of the recipient's SPKI public key: tells a node whether it is meant for it. */
  recipient: Uint8Array;
  /** HPKE's encapsulated key (the sender's ephemeral X25519 public key, 32 bytes). */
  enc: Uint8Array;
  /** HPKE ciphertext (AES-256-GCM, tag included) of dag-cbor { studyInstanceUID, keyId, key }. */
  sealed: Uint8Array;
}

/**
 * RFC 9180 HPKE, base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, from @hpke/core
 * (the maintained implementation of the hpke-js family, WebCrypto underneath); it replaces the
 * hand-written ECIES of release 0.1 (key-envelope@1).
 */
export const HPKE = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

export function rawX25519(key: KeyObject): Uint8Array {
  return spki(key).subarray(-32); // SPKI DER of X25519: a 12-byte header, then the 32-byte key
}

export async function sealKeyEnvelope(dataKey: DataKey, studyInstanceUID: string, root: CID, recipient: KeyObject): Promise<{ cid: CID; bytes: Uint8Array }> {
  const recipientKey = await HPKE.kem.deserializePublicKey(rawX25519(recipient));
  const plain = dagCbor.encode({ studyInstanceUID, keyId: dataKey.keyId, key: new Uint8Array(dataKey.key) });
  const { enc, ct } = await HPKE.seal({ recipientPublicKey: recipientKey, info: HPKE_INFO }, plain, root.bytes);
  const envelope: KeyEnvelope = {
    type: KEY_ENVELOPE_TYPE,
    root,
    recipient: createHash('sha256').update(spki(recipient)).digest(),
    enc: new Uint8Array(enc),
    sealed: new Uint8Array(ct),
  };
  return encodeNode(envelope);
}

/** The study UID and data key, or the reason it cannot be opened here. */
export async function openKeyEnvelope(
  bytes: Uint8Array,
  root: CID,
  transportKey: TransportKey,
): Promise<{ studyInstanceUID: string; dataKey: DataKey } | string> {
  let env: Omit<Partial<KeyEnvelope>, 'type'> & { type?: unknown };
  try {
    env = dagCbor.decode(bytes) as Omit<Partial<KeyEnvelope>, 'type'> & { type?: unknown };
  } catch (cause) {
    throw new VaultError('CAR_INVALID', 'the key envelope is not dag-cbor', { cause });
  }
  if (env.type === LEGACY_KEY_ENVELOPE_TYPE)
    return `the data key in the CAR is in the envelope of release 0.1 (${LEGACY_KEY_ENVELOPE_TYPE}): export the study again from the sending node`;
  if (env.type !== KEY_ENVELOPE_TYPE || !(env.recipient instanceof Uint8Array) || !(env.enc instanceof Uint8Array) || !(env.sealed instanceof Uint8Array)) {
    throw new VaultError('CAR_INVALID', "the CAR's second root is not a dicom-vault key envelope");
  }
  if (CID.asCID(env.root)?.equals(root) !== true) throw new VaultError('CAR_INVALID', 'the key envelope belongs to another study root');
  if (!Buffer.from(env.recipient).equals(createHash('sha256').update(spki(transportKey.publicKey)).digest())) {
    return 'the data key in the CAR is sealed to another node: the study is verifiable here but not readable';
  }
  let plain: ArrayBuffer;
  try {
    const recipientKey = await HPKE.kem.importKey('jwk', transportKey.privateKey.export({ format: 'jwk' }), false);
    plain = await HPKE.open({ recipientKey, enc: env.enc, info: HPKE_INFO }, env.sealed, root.bytes);
  } catch (cause) {
    throw new VaultError('CAR_INVALID', 'the key envelope fails authentication', { cause });
  }
  const value = dagCbor.decode(new Uint8Array(plain)) as { studyInstanceUID?: unknown; keyId?: unknown; key?: unknown };
  if (typeof value.studyInstanceUID !== 'string' || typeof value.keyId !== 'string' || !(value.key instanceof Uint8Array)) {
    throw new VaultError('CAR_INVALID', 'the key envelope holds no data key');
  }
  return { studyInstanceUID: value.studyInstanceUID, dataKey: { keyId: value.keyId, key: Buffer.from(value.key) } };
}
