// Garbage collection for the block stores without pins (fs, s3): it deletes what a failed or
// crashed ingest left behind. The roots are every study version the catalog knows and every study
// manifest in the store (as the ipfs store pins every manifest it stores: a study imported from a
// CAR without its key is in no catalog, and is kept). A block is garbage when no root reaches it
// and it was last written longer ago than a grace period. An ingest's blocks are reached by no
// root until its manifest is written, at commit, so the grace period (longer than any one ingest:
// one STOW request, one file of a CLI ingest, one CAR import) is what keeps them; a put of a
// block already stored gives it a new time (s3: PackIndex.touch, unless it had one in the last
// minute), so the blocks of a failed ingest written again by its retry count as new (git's rule
// for its loose objects). Residual race, as in git: a block older than the grace period written
// again in the instant between gc's check of it and its deletion is lost to that writer.
//
// The ipfs store collects by its pins instead (IpfsBlockStore.gc), whose walk at commit would
// also notice a block taken from an ingest in flight. Here nothing does, which is why the grace
// period has a floor (MIN_GRACE_S).
import type { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as dagCbor from '@ipld/dag-cbor';
import { VaultError, isVaultError } from '../core/errors.ts';
import { throwIfAborted } from '../core/abort.ts';
import { childLinks, isStudyManifest } from '../format/dag.ts';
import type { AbortOptions, BlockStore } from '../../storage/block-store.ts';
import type { CompactReport, IndexRebuildReport, S3BlockStore } from '../../storage/s3/store.ts';
import { CidSet } from '../../storage/cid-set.ts';
import { getVerified } from '../../storage/verified.ts';

/**
 * Default grace period of gc (here and IpfsBlockStore.gc), seconds (24 hours). It must exceed the
 * longest ingest: a 1 TB STOW at 100 MB/s takes about 3 hours.
 */
export const DEFAULT_GRACE_S = 24 * 3600;
/**
 * The shortest grace period accepted, seconds (1 hour). A shorter one could take blocks of an
 * ingest still in flight, whose version would then commit without them: the fs store has no pin
 * to walk at commit that would notice (verify would, later).
 */
export const MIN_GRACE_S = 3600;

/** What gc needs of a store: its blocks, their ages, and deletion. */
export interface CollectableStore extends Pick<BlockStore, 'get' | 'delete'> {
  list(options?: AbortOptions): AsyncIterable<CID>;
  /** Size and last write time (ms since the epoch) of a stored block; undefined once it is gone. */
  blockInfo(cid: CID, options?: AbortOptions): Promise<{ size: number; writtenMs: number } | undefined>;
  /** Removes files of unfinished puts last written before `cutoffMs`; returns how many. */
  removeStaleTemps?(cutoffMs: number, options?: AbortOptions): Promise<number>;
}

export interface CollectOptions extends AbortOptions {
  /** Default DEFAULT_GRACE_S; at least MIN_GRACE_S. */
  graceS?: number;
  /** The current time, ms since the epoch. Default Date.now(). */
  now?: number;
}

export interface CollectReport {
  /** Blocks looked at. */
  blocks: number;
  /** Kept: reached from a study version (of the catalog, or a manifest in the store). */
  reachable: number;
  /** Kept although reached from no version: younger than the grace period (an ingest may still be writing its study). */
  young: number;
  /** Deleted, and their bytes. */
  deleted: number;
  deletedBytes: number;
  /** Files of puts that never finished, deleted. */
  temps: number;
  /** Study manifests in the store that the catalog does not know (kept, with what they reach: e.g. imported without their key). */
  otherRoots: number;
}

/**
 * Deletes the blocks that no root reaches (`roots`: every study version the catalog knows; and
 * every study manifest in the store), once older than the grace period. Every node under every
 * root is read and re-hashed first; one that is missing or altered stops gc before it deletes
 * anything (BLOCK_NOT_FOUND / BLOCK_CORRUPT / STORE_UNAVAILABLE, naming the block), since the
 * blocks under it could not be told from garbage. So does a dag-cbor block that fails its hash
 * (it may be a manifest). Chunks (raw leaves) are never read. Holds about 25 bytes per reachable
 * block (CidSet), and the nodes walked exactly (about 80 bytes each: one per instance and version).
 */
export async function collectGarbage(store: CollectableStore, roots: Iterable<CID> | AsyncIterable<CID>, options: CollectOptions = {}): Promise<CollectReport> {
  const { signal } = options;
  const graceS = checkGrace(options);
  const cutoffMs = (options.now ?? Date.now()) - graceS * 1000;
  const abort: AbortOptions = signal === undefined ? {} : { signal };
  const report: CollectReport = { blocks: 0, reachable: 0, young: 0, deleted: 0, deletedBytes: 0, temps: 0, otherRoots: 0 };

  const reachable = new CidSet();
  const walked = new Set<string>();
  for await (const root of roots) await walk(store, root, reachable, walked, abort);
  for (const manifest of await storedManifests(store, abort)) {
    if (walked.has(nodeKey(manifest))) continue;
    report.otherRoots++;
    await walk(store, manifest, reachable, walked, abort);
  }

  for await (const cid of store.list(abort)) {
    throwIfAborted(signal);
    report.blocks++;
    if (reachable.has(cid)) {
      report.reachable++;
      continue;
    }
    const info = await store.blockInfo(cid, abort);
    if (info === undefined) continue; // gone since it was listed (a failed ingest cleaning up)
    if (info.writtenMs >= cutoffMs) {
      report.young++;
      continue;
    }
    await store.delete(cid, abort);
    report.deleted++;
    report.deletedBytes += info.size;
  }
  if (store.removeStaleTemps !== undefined) report.temps = await store.removeStaleTemps(cutoffMs, abort);
  return report;
}

/** The grace period of `options` (seconds), or CONFIG_INVALID when it is under MIN_GRACE_S. */
export function checkGrace(options: Pick<CollectOptions, 'graceS'>): number {
  const graceS = options.graceS ?? DEFAULT_GRACE_S;
  if (!Number.isFinite(graceS) || graceS < MIN_GRACE_S) {
    throw new VaultError(
      'CONFIG_INVALID',
      `gc grace must be at least ${MIN_GRACE_S} seconds on this store (got ${graceS}): a shorter one could take the blocks of an ingest in flight`,
    );
  }
  return graceS;
}

/** Every study manifest in the store (dag-cbor blocks are read; chunks are not). */
async function storedManifests(store: CollectableStore, abort: AbortOptions): Promise<CID[]> {
  const manifests: CID[] = [];
  for await (const cid of store.list(abort)) {
    if (cid.code !== dagCbor.code) continue;
    let value: unknown;
    try {
      value = await readNode(store, cid, abort);
    } catch (err) {
      if (isVaultError(err, 'BLOCK_NOT_FOUND')) continue; // gone since it was listed
      throw err;
    }
    if (isStudyManifest(value)) manifests.push(cid);
  }
  return manifests;
}

/**
 * Adds to `reached` every block `root` reaches: its manifest, instance nodes, chunks. The nodes
 * read are remembered in `walked` exactly: a node taken for another by its digest prefix (CidSet)
 * would leave the blocks under it unmarked, and gc would delete them.
 */
async function walk(store: Pick<BlockStore, 'get'>, root: CID, reached: CidSet, walked: Set<string>, abort: AbortOptions): Promise<void> {
  const stack: CID[] = [root];
  while (stack.length > 0) {
    const cid = stack.pop()!;
    reached.add(cid);
    if (cid.code === raw.code) continue; // a chunk: no links
    const key = nodeKey(cid);
    if (walked.has(key)) continue;
    walked.add(key);
    throwIfAborted(abort.signal);
    let value: unknown;
    try {
      value = await readNode(store, cid, abort);
    } catch (err) {
      throwIfAborted(abort.signal);
      throw new VaultError(
        isVaultError(err) ? err.code : 'STORE_UNAVAILABLE',
        `gc stopped before deleting anything: block ${cid} of study version ${root} ${
          isVaultError(err, 'BLOCK_NOT_FOUND') ? 'is missing' : isVaultError(err, 'BLOCK_CORRUPT') ? 'is corrupt' : 'cannot be read'
        } (run verify on its study)`,
        { cause: err, details: { cid: cid.toString() } },
      );
    }
    stack.push(...childLinks(value));
  }
}

/** An exact key for a node: its CID's bytes as a flat one-byte string (a CID's toString() is a tree of pieces, 20 times larger). */
function nodeKey(cid: CID): string {
  return Buffer.from(cid.bytes.buffer, cid.bytes.byteOffset, cid.bytes.byteLength).toString('latin1');
}

/**
 * A node's value, its bytes re-hashed first (a node whose links were altered on disk would hide
 * the blocks it names): BLOCK_NOT_FOUND, BLOCK_CORRUPT (also for bytes that are not dag-cbor),
 * or the store's error. Undefined for a block of another codec.
 */
async function readNode(store: Pick<BlockStore, 'get'>, cid: CID, abort: AbortOptions): Promise<unknown> {
  const bytes = await getVerified(store, cid, abort);
  if (cid.code !== dagCbor.code) return undefined;
  try {
    return dagCbor.decode(bytes);
  } catch (cause) {
    throw new VaultError('BLOCK_CORRUPT', `block ${cid} is not valid dag-cbor`, { cause, details: { cid: cid.toString() } });
  }
}

/** What gc did on S3: the collection's report, the index rebuild run first, the compaction run last, and the bucket's packs before and after. */
export interface S3GcReport extends CollectReport {
  reindexed: IndexRebuildReport;
  compacted: CompactReport;
  /** Pack objects the index knows, and their bytes. */
  packsBefore: { packs: number; bytes: number };
  packsAfter: { packs: number; bytes: number };
}

/**
 * Garbage collection on S3 (`dicom-vault gc --store s3`). First the index rebuild: packs the index
 * lacks (orphans of a crash between an upload and its landing, or the packs of an index restored
 * from an older copy) become visible, so their study manifests are kept as roots and their other
 * blocks can be collected. Then collectGarbage over the store: every node under every root is
 * read and checked, and the blocks no root reaches are deleted once older than the grace period
 * (a pack's landing, or the last put that found the block stored). A pack object is deleted with
 * its last live block. Last, the packs left at most half live are compacted.
 */
export async function collectS3(store: S3BlockStore, roots: Iterable<CID> | AsyncIterable<CID>, options: CollectOptions = {}): Promise<S3GcReport> {
  checkGrace(options); // before anything is read
  const reindexed = await store.rebuildIndex(options);
  const packsBefore = store.packTotals();
  const report = await collectGarbage(store, roots, options);
  const compacted = await store.compact(options);
  return { ...report, reindexed, compacted, packsBefore, packsAfter: store.packTotals() };
}
