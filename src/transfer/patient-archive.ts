// A patient's data for another provider (GDPR Art. 20): one CAR file, the study CAR of car.ts
// widened to every study of the patient. The CAR's single root is an archive block written first:
//
//   { type: 'dicom-vault/patient-archive@1', studies: [root CID, ...], recipient: SHA-256(SPKI),
//     enc, sealed }
//
// `sealed` is HPKE (RFC 9180, the suite of car.ts's key envelope) to the receiving node's X25519
// key, with the archive's type and study roots as associated data; inside, dag-cbor: the patient,
// the source node, and per study its UID, data key and the anchor receipts of its versions; the
// patient's grants as a FHIR R4 Consent Bundle; the patient's audit entries with their inclusion
// proofs, the signed head they lead to and the keys that open them (src/audit/portable.ts). Everything that names the patient is in there: whoever
// else holds the file sees ciphertext and hashes. Then every block of every study's DAG, each
// version (through `prev`) to the first: all versions, not the latest only, because a version's
// manifest links its predecessor, so the latest root already names them all; a latest-only export
// would need a new root that no anchor receipt names, and the receiver could not check the anchors.
//
// Import is all or nothing: a first pass reads the whole file, checks that every block hashes to
// its CID, that every study's DAG is complete, that the sealed part opens (for this node, untouched)
// and that each data key opens its study and each receipt names one of its versions; then the
// caller's evidence check (the receipts on a chain, the audit entries' proofs into the signed head
// under the sender's audit key: src/shell/patient-import.ts); only then does a second pass store
// the blocks and the catalog get the studies. A tampered file, or evidence that does not verify,
// is refused with CAR_INVALID before anything is stored.
import { createHash, type KeyObject } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CarBlockIterator, CarWriter } from '@ipld/car';
import * as dagCbor from '@ipld/dag-cbor';
import { base64url } from 'multiformats/bases/base64';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { VaultError, isVaultError } from '../core/errors.ts';
import type { Catalog } from '../catalog/catalog.ts';
import {
  addedTree,
  chunkTree,
  decodeInstanceNode,
  decodeStudyManifest,
  encodeNode,
  isStudyManifest,
  openStudyEnvelope,
  type StudyManifest,
} from '../format/dag.ts';
import type { DataKey } from '../format/keys.ts';
import type { BlockStore } from '../../storage/block-store.ts';
import { cidMatches } from '../../storage/cid.ts';
import { getVerified } from '../../storage/verified.ts';
import { checkComplete, DEFAULT_IMPORT_CONCURRENCY, HPKE, type ImportDeps, putStudyBlocks, rawX25519, rebuildCatalog, spki, type TransportKey } from './car.ts';

export const PATIENT_ARCHIVE_TYPE = 'dicom-vault/patient-archive@1';
const HPKE_INFO = new TextEncoder().encode('dicom-vault/patient-archive/1');

/** What the shell gathers for an export besides the blocks (grants, audit, receipts: parts above this one). */
export interface PatientArchiveContents {
  patient: { id: string; issuer: string | null };
  /** The exporting node's id. */
  source: string;
  studies: string[];
  /** The anchor receipt (JSON) of a version root, when it has one. */
  receiptOf(root: string): object | undefined;
  /** The patient's grants, a FHIR R4 Bundle of Consent resources. */
  consents: object;
  /** The patient's audit entries with their inclusion proofs, the head they lead to, the node's audit key. */
  audit: object;
}

interface SealedStudy {
  study: string;
  root: CID;
  keyId: string;
  key: Uint8Array;
  /** Receipts as JSON text, one per anchored version (dag-cbor keeps no JSON numbers' form otherwise). */
  receipts: string[];
}

interface SealedPayload {
  patient: { id: string; issuer: string | null };
  source: string;
  createdAt: string;
  studies: SealedStudy[];
  consents: string;
  audit: string;
}

interface ArchiveBlock {
  type: typeof PATIENT_ARCHIVE_TYPE;
  studies: CID[];
  recipient: Uint8Array;
  enc: Uint8Array;
  sealed: Uint8Array;
}

export interface PatientExportReport {
  file: string;
  studies: number;
  versions: number;
  instances: number;
  blocks: number;
  bytes: number;
  receipts: number;
}

export interface PatientExportDeps {
  store: Pick<BlockStore, 'get'>;
  catalog: Pick<Catalog, 'latestVersion'>;
  keys: { require(studyInstanceUID: string): DataKey };
}

function associatedData(studies: readonly CID[]): Uint8Array {
  return dagCbor.encode({ type: PATIENT_ARCHIVE_TYPE, studies });
}

/** Writes the archive at `path` (beside it, then renamed: a failed export leaves no file that looks whole). */
export async function exportPatientArchive(
  deps: PatientExportDeps,
  contents: PatientArchiveContents,
  recipient: KeyObject,
  path: string,
  options: { signal?: AbortSignal; now?: Date } = {},
): Promise<PatientExportReport> {
  if (contents.studies.length === 0) throw new VaultError('NOT_FOUND', 'no study of this patient on this node');
  const studies: SealedStudy[] = [];
  let receipts = 0;
  for (const study of contents.studies) {
    const latest = deps.catalog.latestVersion(study);
    if (latest === undefined) throw new VaultError('STUDY_NOT_FOUND', 'a study of the patient vanished during the export', { details: { study } });
    const key = deps.keys.require(study);
    const root = CID.parse(latest.root);
    studies.push({ study, root, keyId: key.keyId, key: new Uint8Array(key.key), receipts: [] });
  }
  const report: PatientExportReport = { file: path, studies: studies.length, versions: 0, instances: 0, blocks: 0, bytes: 0, receipts: 0 };
  const get = (cid: CID): Promise<Uint8Array> => getVerified(deps.store, cid, options.signal ? { signal: options.signal } : {});
  // The receipts are gathered while the DAG is walked (every version's root), so they go in the
  // sealed block, which is written first: the walk runs twice, once for roots, once for blocks.
  for (const s of studies) {
    for (let cursor: CID | null = s.root; cursor !== null; ) {
      const manifest = decodeStudyManifest(await get(cursor), cursor);
      const receipt = contents.receiptOf(cursor.toString());
      if (receipt !== undefined) {
        s.receipts.push(JSON.stringify(receipt));
        receipts++;
      }
      cursor = manifest.prev;
    }
  }
  report.receipts = receipts;
  const payload: SealedPayload = {
    patient: contents.patient,
    source: contents.source,
    createdAt: (options.now ?? new Date()).toISOString(),
    studies,
    consents: JSON.stringify(contents.consents),
    audit: JSON.stringify(contents.audit),
  };
  const roots = studies.map((s) => s.root);
  const recipientKey = await HPKE.kem.deserializePublicKey(rawX25519(recipient));
  const { enc, ct } = await HPKE.seal({ recipientPublicKey: recipientKey, info: HPKE_INFO }, dagCbor.encode(payload), associatedData(roots));
  const archive = encodeNode({
    type: PATIENT_ARCHIVE_TYPE,
    studies: roots,
    recipient: createHash('sha256').update(spki(recipient)).digest(),
    enc: new Uint8Array(enc),
    sealed: new Uint8Array(ct),
  } satisfies ArchiveBlock);

  const { writer, out } = CarWriter.create([archive.cid]);
  const partial = `${path}.partial`;
  const writing = pipeline(Readable.from(out), createWriteStream(partial));
  const put = async (cid: CID, bytes: Uint8Array): Promise<void> => {
    await writer.put({ cid, bytes });
    report.blocks++;
    report.bytes += bytes.byteLength;
  };
  try {
    const walk = (async () => {
      await writer.put(archive);
      for (const s of studies) await putStudyBlocks(s.root, get, put, report);
    })();
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

/** Whether the CAR at `path` is a patient archive (its first block is its root, of this type). */
export async function isPatientArchive(path: string): Promise<boolean> {
  try {
    const reader = await CarBlockIterator.fromIterable(createReadStream(path));
    const [root] = await reader.getRoots();
    for await (const { cid, bytes } of reader) {
      if (root === undefined || !cid.equals(root) || cid.code !== dagCbor.code) return false;
      return (dagCbor.decode(bytes) as { type?: unknown }).type === PATIENT_ARCHIVE_TYPE;
    }
  } catch {
    // Not a CAR, or not one of ours: the study import says what is wrong with it.
  }
  return false;
}

export interface ImportedStudy {
  study: string;
  root: string;
  versions: number;
  instances: number;
}

export interface PatientImportReport {
  patient: { id: string; issuer: string | null };
  source: string;
  createdAt: string;
  blocks: number;
  bytes: number;
  studies: ImportedStudy[];
  /** The anchor receipts, as the sending node issued them (check them with verify-receipt and a trust file of that node's chain). */
  receipts: Array<{ study: string; receipt: object }>;
  /** The patient's grants at the sending node, a FHIR R4 Bundle of Consent resources. */
  consents: object;
  /** The patient's audit entries at the sending node, with their proofs. */
  audit: object;
  /** What the evidence check found (receipts on the chain, audit proofs, the signed head). */
  verified: EvidenceReport;
}

/** The sender's evidence, handed to the check the caller wires (a chain, the audit key) once the blocks and keys passed. */
export interface ArchiveEvidence {
  source: string;
  /** Every receipt with the version root it was found to name. */
  receipts: Array<{ study: string; root: string; receipt: object }>;
  /** The audit part as sealed (src/audit/portable.ts reads it). */
  audit: unknown;
}

/** What the evidence check reports; it throws (CAR_INVALID, with the reason) to refuse the import. */
export type EvidenceReport = Record<string, unknown>;

/**
 * Checks the sender's receipts and audit proofs; throws to refuse. Required: an import that
 * skipped it would store evidence nobody checked (src/shell/patient-import.ts is the node's).
 */
export type EvidenceCheck = (evidence: ArchiveEvidence, signal?: AbortSignal) => Promise<EvidenceReport>;

const invalid = (reason: string, cause?: unknown): VaultError => new VaultError('CAR_INVALID', reason, cause === undefined ? {} : { cause });

/** Imports a patient archive: everything or nothing (see the header). */
export async function importPatientArchive(
  deps: Pick<ImportDeps, 'store' | 'catalog' | 'keys'> & { transportKey: TransportKey; checkEvidence: EvidenceCheck },
  path: string,
  options: { signal?: AbortSignal } = {},
): Promise<PatientImportReport> {
  const signal = options.signal;
  // Pass 1: read and check everything; store nothing.
  let reader: CarBlockIterator;
  try {
    reader = await CarBlockIterator.fromIterable(createReadStream(path));
  } catch (cause) {
    throw invalid(`${path} is not a CAR file`, cause);
  }
  const [archiveCid] = await reader.getRoots();
  if (archiveCid === undefined || archiveCid.code !== dagCbor.code) throw invalid('the CAR names no patient archive root');
  let archiveBytes: Uint8Array | undefined;
  const present = new Set<string>();
  const manifests = new Map<string, Uint8Array>();
  // Instance nodes and link nodes (format 2's trees), small beside the chunks they list: the
  // completeness walk below reads them from here.
  const nodes = new Map<string, Uint8Array>();
  let blocks = 0;
  let bytes = 0;
  try {
    for await (const { cid, bytes: b } of reader) {
      signal?.throwIfAborted();
      if (!cidMatches(cid, b)) throw invalid(`block ${cid} in the archive does not hash to its CID: the file was altered`);
      if (cid.equals(archiveCid)) {
        archiveBytes = b;
        continue;
      }
      present.add(cid.toString());
      blocks++;
      bytes += b.byteLength;
      if (cid.code === dagCbor.code) {
        if (isStudyManifest(dagCbor.decode(b))) manifests.set(cid.toString(), b);
        else nodes.set(cid.toString(), b);
      } else if (cid.code !== raw.code) throw invalid(`block ${cid} is neither a DAG node nor a chunk`);
    }
  } catch (err) {
    if (isVaultError(err)) throw err;
    throw invalid(`cannot read the archive: ${err instanceof Error ? err.message : 'unknown error'}`, err);
  }
  if (archiveBytes === undefined) throw invalid('the archive lacks its root block');

  const archive = dagCbor.decode(archiveBytes) as Partial<ArchiveBlock>;
  if (
    archive.type !== PATIENT_ARCHIVE_TYPE ||
    !Array.isArray(archive.studies) ||
    !(archive.recipient instanceof Uint8Array) ||
    !(archive.enc instanceof Uint8Array) ||
    !(archive.sealed instanceof Uint8Array)
  )
    throw invalid('the root block is not a dicom-vault patient archive');
  const roots = archive.studies.map((c) => {
    const cid = CID.asCID(c);
    if (cid === null) throw invalid('the archive lists a study root that is not a CID');
    return cid;
  });
  if (!Buffer.from(archive.recipient).equals(createHash('sha256').update(spki(deps.transportKey.publicKey)).digest()))
    throw invalid('the archive is sealed to another node: export it again for this node (dicom-vault public-key)');
  let payload: SealedPayload;
  try {
    const recipientKey = await HPKE.kem.importKey('jwk', deps.transportKey.privateKey.export({ format: 'jwk' }), false);
    const plain = await HPKE.open({ recipientKey, enc: archive.enc, info: HPKE_INFO }, archive.sealed, associatedData(roots));
    payload = dagCbor.decode(new Uint8Array(plain)) as SealedPayload;
  } catch (cause) {
    throw invalid('the archive fails authentication: it was altered, or not sealed to this node', cause);
  }

  // Every study: its DAG complete, its key opening it, its receipts leading from its versions.
  const plans: Array<{ s: SealedStudy; dataKey: DataKey; versionRoots: string[] }> = [];
  const receipts: ArchiveEvidence['receipts'] = [];
  for (const [i, s] of payload.studies.entries()) {
    const root = CID.asCID(s.root);
    if (root === null || !root.equals(roots[i]!)) throw invalid('the sealed part does not match the archive roots');
    const versionRoots: string[] = [];
    for (let cursor: CID | null = root; cursor !== null; ) {
      const mb = manifests.get(cursor.toString());
      if (mb === undefined) throw invalid(`the archive lacks manifest ${cursor} of study ${i + 1}`);
      const manifest: StudyManifest = decodeStudyManifest(mb, cursor);
      versionRoots.push(cursor.toString());
      const read = async (cid: CID): Promise<Uint8Array> => {
        const b = nodes.get(cid.toString());
        if (b === undefined) throw invalid(`the archive lacks node ${cid}`);
        return b;
      };
      try {
        for await (const { cid: nodeCid } of addedTree(manifest, cursor, read).leaves()) {
          const node = decodeInstanceNode(await read(nodeCid), nodeCid);
          for await (const { cid: c } of chunkTree(node, nodeCid, read).leaves()) if (!present.has(c.toString())) throw invalid(`the archive lacks chunk ${c}`);
        }
      } catch (err) {
        if (isVaultError(err)) throw err;
        throw invalid(`study ${i + 1}'s DAG does not decode: ${err instanceof Error ? err.message : 'unknown error'}`, err);
      }
      cursor = manifest.prev;
    }
    const dataKey: DataKey = { keyId: s.keyId, key: Buffer.from(s.key) };
    const newest = decodeStudyManifest(manifests.get(root.toString())!, root);
    let opened: string;
    try {
      opened = newest.keyId === dataKey.keyId ? openStudyEnvelope(dataKey.key, newest).studyInstanceUID : '';
    } catch (cause) {
      throw invalid(`the data key of study ${i + 1} does not open its manifest`, cause);
    }
    if (opened !== s.study) throw invalid(`the data key of study ${i + 1} does not open its manifest`);
    const existing = deps.keys.get(s.study);
    if (existing !== undefined && existing.keyId !== dataKey.keyId)
      throw new VaultError('CONFLICT', `this node holds study ${s.study} under another data key already: nothing was imported`);
    for (const text of s.receipts) {
      const receipt = JSON.parse(text) as { cid?: unknown };
      const cid = receipt.cid;
      const named = typeof cid === 'string' ? versionRoots.find((v) => cidEquals(v, cid)) : undefined;
      if (named === undefined) throw invalid(`a receipt of study ${i + 1} names no version of it`);
      receipts.push({ study: s.study, root: named, receipt });
    }
    plans.push({ s, dataKey, versionRoots });
  }
  // The receipts on the chain, the audit proofs into the signed head: a failure refuses the
  // import here, before anything is stored.
  const verified = await deps.checkEvidence({ source: payload.source, receipts, audit: JSON.parse(payload.audit) as unknown }, signal);

  // Pass 2: store the blocks (content-addressed; checked again as they go), then the keys and the catalog.
  // Puts overlap (as the study import's): one flush below makes them all durable.
  const second = await CarBlockIterator.fromIterable(createReadStream(path));
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  try {
    for await (const { cid, bytes: b } of second) {
      if (cid.equals(archiveCid)) continue;
      if (!cidMatches(cid, b)) throw invalid(`block ${cid} changed while the archive was imported`);
      const p = deps.store.put(cid, b, { durable: false, ...(signal ? { signal } : {}) }).then(
        () => void inFlight.delete(p),
        (err: unknown) => {
          inFlight.delete(p);
          failure ??= err;
        },
      );
      inFlight.add(p);
      while (inFlight.size >= DEFAULT_IMPORT_CONCURRENCY) await Promise.race(inFlight);
      if (failure !== undefined) throw failure;
    }
  } finally {
    await Promise.allSettled(inFlight);
  }
  if (failure !== undefined) throw failure;
  await deps.store.flush?.(signal ? { signal } : {});
  const studies: ImportedStudy[] = [];
  for (const { s, dataKey } of plans) {
    // Held already under this key (an import repeated after a crash in this pass): kept.
    if (deps.keys.get(s.study) === undefined) deps.keys.importKey(s.study, dataKey);
    const root = CID.asCID(s.root)!;
    const chain = await checkComplete(deps.store, root, signal);
    const versions = await rebuildCatalog(deps, s.study, dataKey, root, chain.slice().reverse(), signal);
    studies.push({ study: s.study, root: root.toString(), versions, instances: deps.catalog.latestVersion(s.study)?.instanceCount ?? 0 });
  }
  return {
    patient: payload.patient,
    source: payload.source,
    createdAt: payload.createdAt,
    blocks,
    bytes,
    studies,
    receipts: receipts.map(({ study, receipt }) => ({ study, receipt })),
    consents: JSON.parse(payload.consents) as object,
    audit: JSON.parse(payload.audit) as object,
    verified,
  };
}

/** A receipt's CID text (base32 or, format 4, base64url) against a version root's. */
function cidEquals(root: string, text: string): boolean {
  try {
    return text.startsWith('u') ? CID.parse(text, base64url).toString() === root : CID.parse(text).toString() === root;
  } catch {
    return false;
  }
}
