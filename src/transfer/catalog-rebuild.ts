// Rebuilding a lost or damaged catalog from what the node stores (`dicom-vault catalog rebuild`).
//
// The source of truth is the block store itself: every version of every study is a manifest block
// there, whatever else was lost, and it is content-addressed, so what is found is what was written.
// Other records name roots too, and each misses some: anchor.db has only the versions already
// handed over from the catalog's queue (none, on a node without anchoring), keys.db names studies
// but no versions, the S3 pack index is only a map of where blocks lie. So the store is scanned
// (every dag-cbor block read and re-hashed; chunks are not read), its study manifests are grouped
// by the data key they name (readable without keys), and each study's chain is chosen with
// anchor.db as a cross-check:
//
// - A manifest another manifest names as `prev` was committed: the writer builds each version on
//   the catalog's latest (ingest/study.ts). So was every root anchor.db holds (the catalog hands
//   over only committed versions). The newest of these, K, is committed; the catalog's latest was
//   K or a child of K.
// - A child of K that no one names as prev and anchor.db does not hold is the one version the store
//   alone cannot vouch for: committed but not yet handed to anchor.db, or written by an ingest that
//   crashed between writing its manifest and committing (its client got no success; a CONFLICT
//   deletes its manifest, so only a crash leaves one). It is included when its whole DAG is present
//   (checkComplete), and reported as such: a complete crashed version holds only instances that
//   were received whole and durable, and leaving out a committed one would lose what a client was
//   told was stored, on every node that runs without anchoring. Incomplete ones are left out and
//   named (gc's business). When several children of K qualify, the newest by its sealed time is
//   taken: a crash's leftover is older than the version committed after the restart.
// - A study whose key keys.db no longer holds (erased, or imported from a CAR without its key)
//   cannot be opened, and is skipped and reported: an erased study does not come back.
//
// Each chosen chain is committed through rebuildCatalog (car.ts), which re-reads and checks every
// instance to rebuild its metadata. Versions anchor.db already holds are then taken off the
// catalog's anchor queue, so nothing is anchored twice; the others stay queued, as they were.
import * as dagCbor from '@ipld/dag-cbor';
import type { CID } from 'multiformats/cid';
import type { Catalog } from '../catalog/catalog.ts';
import { throwIfAborted } from '../core/abort.ts';
import { VaultError, isVaultError } from '../core/errors.ts';
import { decodeStudyManifest, isStudyManifest, openStudyEnvelope, type StudyManifest } from '../format/dag.ts';
import type { StudyKey } from '../format/keys.ts';
import type { BlockStore } from '../../storage/block-store.ts';
import { getVerified } from '../../storage/verified.ts';
import { checkComplete, rebuildCatalog } from './car.ts';

export interface CatalogRebuildDeps {
  store: Pick<BlockStore, 'get' | 'has'> & { list(options?: { signal?: AbortSignal }): AsyncIterable<CID> };
  /** The new, empty catalog being filled. */
  catalog: Pick<Catalog, 'latestVersion' | 'versions' | 'commitStudyVersion' | 'markAnchored' | 'purgeStudy'>;
  keys: { byKeyId(keyId: string): StudyKey | undefined };
  /** anchor.db, when the node has one: which roots were handed over, and a study's roots there. */
  anchor?: { has(root: string): boolean; rootsOf(studyInstanceUID: string): string[] };
  /** Every study keys.db holds a key for (cross-check: a key without a manifest is reported). */
  keyedStudies?: readonly string[];
  signal?: AbortSignal;
  /** Called as each study is rebuilt (progress). */
  onStudy?: (study: RebuiltStudy) => void;
}

export interface RebuiltStudy {
  studyInstanceUID: string;
  root: string;
  versions: number;
  instances: number;
  /** Versions anchor.db already holds: marked anchored, not queued again. */
  anchored: number;
  /** Versions left in the anchor queue (not yet handed to anchor.db). */
  queued: number;
  /**
   * The newest version, when neither a later manifest nor anchor.db vouches that it was committed
   * (committed, or left complete by a crash before its commit: indistinguishable without the catalog).
   */
  unconfirmedHead?: string;
}

export interface CatalogRebuildReport {
  /** Blocks listed, dag-cbor blocks read, study manifests among them. */
  blocks: number;
  nodes: number;
  manifests: number;
  studies: RebuiltStudy[];
  /** Manifests of a key keys.db does not hold (erased, or imported without its key): not restored. */
  unreadable: Array<{ keyId: string; manifests: number; reason: string }>;
  /** Manifests left out: written by an ingest that did not commit (incomplete, or beside the one taken). */
  leftOut: Array<{ studyInstanceUID: string; root: string; reason: string }>;
  /** Studies that could not be rebuilt (a block missing or damaged, a key that does not open): not in the catalog. */
  failed: Array<{ studyInstanceUID?: string; keyId: string; code: string; reason: string }>;
  /** Roots anchor.db holds that no rebuilt chain contains (their manifests are not in the store). */
  anchoredMissing: Array<{ studyInstanceUID: string; root: string }>;
  /** Studies keys.db holds a key for, of which the store has no manifest. */
  keysWithoutManifest: string[];
  /** dag-cbor blocks that fail their hash: any of them may have been a manifest. */
  damaged: Array<{ cid: string; reason: string }>;
}

interface Found {
  cid: CID;
  version: number;
  prev: string | null;
}

/** Rebuilds the catalog rows of every readable study in the store into `deps.catalog` (empty). */
export async function rebuildCatalogFromStore(deps: CatalogRebuildDeps): Promise<CatalogRebuildReport> {
  const { signal } = deps;
  const opts = signal === undefined ? {} : { signal };
  const report: CatalogRebuildReport = {
    blocks: 0,
    nodes: 0,
    manifests: 0,
    studies: [],
    unreadable: [],
    leftOut: [],
    failed: [],
    anchoredMissing: [],
    keysWithoutManifest: [],
    damaged: [],
  };

  // 1. Every study manifest, by the key it names. Only what the chain choice needs is kept
  //    (about 100 bytes a version), not the manifests' lists of instances.
  const byKey = new Map<string, Found[]>();
  for await (const cid of deps.store.list(opts)) {
    throwIfAborted(signal);
    report.blocks++;
    if (cid.code !== dagCbor.code) continue;
    let bytes: Uint8Array;
    try {
      bytes = await getVerified(deps.store, cid, opts);
    } catch (err) {
      if (isVaultError(err, 'BLOCK_NOT_FOUND')) continue; // gone since it was listed
      if (!isVaultError(err, 'BLOCK_CORRUPT')) throw err; // the store failing: no rebuild from half of it
      // It may have been a manifest: named, so that a study a version short does not pass unseen
      // (a study whose chain needs it fails below, named too).
      report.damaged.push({ cid: cid.toString(), reason: err.message });
      continue;
    }
    report.nodes++;
    let value: unknown;
    try {
      value = dagCbor.decode(bytes);
    } catch {
      continue; // re-hashed above: bytes as written, just not ours
    }
    if (!isStudyManifest(value)) continue;
    const manifest = decodeStudyManifest(bytes, cid);
    report.manifests++;
    const list = byKey.get(manifest.keyId) ?? [];
    list.push({ cid, version: manifest.version, prev: manifest.prev?.toString() ?? null });
    byKey.set(manifest.keyId, list);
  }

  // 2. Each study (in key id order: a stable report).
  const rebuilt = new Set<string>();
  for (const [keyId, found] of [...byKey].sort(([a], [b]) => (a < b ? -1 : 1))) {
    throwIfAborted(signal);
    let key: StudyKey | undefined;
    try {
      key = deps.keys.byKeyId(keyId);
    } catch (err) {
      // KEY_NOT_FOUND: the study's row is there but its patient's key was erased.
      if (!isVaultError(err, 'KEY_NOT_FOUND')) {
        report.failed.push({ keyId, code: isVaultError(err) ? err.code : 'INTERNAL', reason: (err as Error).message });
        continue;
      }
    }
    if (key === undefined) {
      report.unreadable.push({
        keyId,
        manifests: found.length,
        reason: 'keys.db holds no key for these manifests (the study was erased, or imported without its key): not restored',
      });
      continue;
    }
    try {
      const study = await rebuildStudy(deps, key, found, report);
      rebuilt.add(study.studyInstanceUID);
      report.studies.push(study);
      deps.onStudy?.(study);
    } catch (err) {
      throwIfAborted(signal);
      // The versions committed before the failure go too: a study served a version short, with
      // nothing to say so, is worse than one named as failed.
      deps.catalog.purgeStudy(key.studyInstanceUID);
      report.failed.push({
        studyInstanceUID: key.studyInstanceUID,
        keyId,
        code: isVaultError(err) ? err.code : 'INTERNAL',
        reason: (err as Error).message,
      });
    }
  }

  // 3. Cross-checks: what other records name and the store did not give back.
  for (const study of deps.keyedStudies ?? [])
    if (!rebuilt.has(study) && !report.failed.some((f) => f.studyInstanceUID === study)) report.keysWithoutManifest.push(study);
  if (deps.anchor !== undefined) {
    for (const study of [...rebuilt, ...(deps.keyedStudies ?? []).filter((s) => !rebuilt.has(s))]) {
      const known = new Set(deps.catalog.versions(study).map((v) => v.root));
      for (const root of deps.anchor.rootsOf(study)) if (!known.has(root)) report.anchoredMissing.push({ studyInstanceUID: study, root });
    }
  }
  return report;
}

async function rebuildStudy(deps: CatalogRebuildDeps, key: StudyKey, found: Found[], report: CatalogRebuildReport): Promise<RebuiltStudy> {
  const { signal } = deps;
  const opts = signal === undefined ? {} : { signal };
  const study = key.studyInstanceUID;
  const read = async (cid: CID): Promise<StudyManifest> => decodeStudyManifest(await getVerified(deps.store, cid, opts), cid);
  const named = new Set(found.map((f) => f.prev).filter((p): p is string => p !== null));
  const anchored = (f: Found): boolean => deps.anchor?.has(f.cid.toString()) === true;
  // K: the newest version known to have been committed (named as prev, or in anchor.db).
  let committed: Found | undefined;
  for (const f of found) if ((named.has(f.cid.toString()) || anchored(f)) && (committed === undefined || f.version > committed.version)) committed = f;
  const base = committed?.cid.toString() ?? null;
  // K's children that no one vouches for, newest sealed time first; the first complete one is taken.
  const candidates: Array<Found & { createdAt: string }> = [];
  for (const f of found) {
    if (f.prev !== base || named.has(f.cid.toString()) || anchored(f)) continue;
    const env = openStudyEnvelope(key.key, await read(f.cid));
    if (env.studyInstanceUID !== study) throw new VaultError('KEY_UNWRAP_FAILED', `manifest ${f.cid} names study ${env.studyInstanceUID}, not that of its key`);
    candidates.push({ ...f, createdAt: env.createdAt });
  }
  candidates.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
  let head: CID | undefined;
  let unconfirmedHead: string | undefined;
  let chain: Array<StudyManifest & { cid: CID }> | undefined;
  for (const c of candidates) {
    if (head !== undefined) {
      report.leftOut.push({
        studyInstanceUID: study,
        root: c.cid.toString(),
        reason: `an uncommitted version beside ${unconfirmedHead}, which was written later`,
      });
      continue;
    }
    try {
      chain = await complete(deps, c.cid);
      head = c.cid;
      unconfirmedHead = c.cid.toString();
    } catch (err) {
      if (!isVaultError(err, 'BLOCK_NOT_FOUND') && !isVaultError(err, 'BLOCK_CORRUPT')) throw err;
      // Blocks missing under it: an ingest that crashed before its commit (or the store lost some).
      report.leftOut.push({ studyInstanceUID: study, root: c.cid.toString(), reason: `incomplete: ${err.message}` });
    }
  }
  if (head === undefined) {
    if (committed === undefined)
      throw new VaultError('BLOCK_NOT_FOUND', `no complete version of the study is in the store (${found.length} manifests, none whole)`);
    head = committed.cid;
    chain = await complete(deps, head);
  }
  const oldestFirst = chain!.slice().reverse();
  const opened = openStudyEnvelope(key.key, oldestFirst[oldestFirst.length - 1]!);
  if (opened.studyInstanceUID !== study)
    throw new VaultError('KEY_UNWRAP_FAILED', `manifest ${head} names study ${opened.studyInstanceUID}, not that of its key`);
  await rebuildCatalog(deps, study, key, head, oldestFirst, signal);
  // Versions anchor.db holds leave the queue commitStudyVersion put them in.
  const handedOver = oldestFirst.map((m) => m.cid.toString()).filter((r) => deps.anchor?.has(r) === true);
  deps.catalog.markAnchored(handedOver);
  const latest = deps.catalog.latestVersion(study)!;
  return {
    studyInstanceUID: study,
    root: latest.root,
    versions: latest.version,
    instances: latest.instanceCount,
    anchored: handedOver.length,
    queued: oldestFirst.length - handedOver.length,
    ...(unconfirmedHead !== undefined ? { unconfirmedHead } : {}),
  };
}

/** checkComplete (car.ts), its CAR_INVALID said as what it is here: a block the store lacks. */
async function complete(deps: CatalogRebuildDeps, root: CID): Promise<Array<StudyManifest & { cid: CID }>> {
  try {
    return await checkComplete(deps.store, root, deps.signal);
  } catch (err) {
    if (!isVaultError(err, 'CAR_INVALID')) throw err;
    throw new VaultError('BLOCK_NOT_FOUND', err.message.replace(/^the CAR lacks/, 'the store lacks'), {
      cause: err,
      ...(err.details ? { details: err.details } : {}),
    });
  }
}
