// Compaction of the S3 store's packs (S3BlockStore.compact, run by gc): a pack left mostly dead by
// deletions is rewritten with only its live blocks. It works through what the store hands it
// (CompactionHost), because the uploads, deletions and the verified reads are the store's own.
import { CID } from 'multiformats/cid';
import { isVaultError } from '../../src/core/errors.ts';
import { throwIfAborted } from '../../src/core/abort.ts';
import type { AbortOptions, BlockStore } from '../block-store.ts';
import { getVerified } from '../verified.ts';
import { newPackId } from './options.ts';
import { buildPack } from './pack-format.ts';
import { landedBlocks, type PackIndex } from './pack-index.ts';

/** What S3BlockStore.compact did. */
export interface CompactReport {
  /** Packs rewritten, the live blocks moved out of them, and the packs' bytes before and after. */
  packs: number;
  blocks: number;
  bytesBefore: number;
  bytesAfter: number;
  /** Packs left as they were because a live block could not be read intact (verify names it). */
  skipped: Array<{ key: string; reason: string }>;
}

/** Compaction rewrites a pack once its live blocks fill at most this fraction of it. */
export const DEFAULT_COMPACT_MAX_LIVE = 0.5;

export interface CompactOptions extends AbortOptions {
  /** Rewrite packs whose live blocks fill at most this fraction (default half): gc's rule. */
  maxLiveFraction?: number;
  /**
   * Rewrite every pack that lost a block, however full it still is: an erasure's rule, so that no
   * erased block's ciphertext stays in an object until gc (each dead byte is rewritten away once;
   * the cost is the live bytes of those packs).
   */
  holed?: boolean;
}

/** What compaction needs of the store. */
export interface CompactionHost {
  readonly index: PackIndex;
  /** Where the live blocks are read from (verified): the store itself, so pending and cached blocks count. */
  readonly store: BlockStore;
  /** Aborted when the store closes: an upload started without the caller's signal stops then. */
  readonly closing: AbortSignal;
  packKey(id: string): string;
  uploadPack(id: string, body: Uint8Array, signal: AbortSignal): Promise<void>;
  deleteObject(key: string, signal?: AbortSignal): Promise<void>;
  /** Deletes a pack with no live block, then its index row (kept for a retry if the delete fails). */
  deleteDeadPack(pack: string, signal?: AbortSignal): Promise<void>;
}

/**
 * Rewrites every pack whose live blocks fill at most `maxLiveFraction` of it (default half), or
 * with `holed` every pack that lost a block:
 * its live blocks are read and re-hashed, uploaded as a new pack, the index points them there
 * (one transaction; a block deleted meanwhile stays deleted), and the old pack object is
 * deleted. A reader that looked a block up before the move and finds the old pack gone looks
 * again (get, has). The new pack keeps the old one's landing time, so gc's grace is unchanged
 * for what it holds. A pack with a block that cannot be read intact is left for verify to name.
 */
export async function compactPacks(host: CompactionHost, options: CompactOptions): Promise<CompactReport> {
  const { signal } = options;
  const { index } = host;
  const report: CompactReport = { packs: 0, blocks: 0, bytesBefore: 0, bytesAfter: 0, skipped: [] };
  const candidates = options.holed === true ? index.holedPacks() : index.sparsePacks(options.maxLiveFraction ?? DEFAULT_COMPACT_MAX_LIVE);
  for (const sparse of candidates) {
    throwIfAborted(signal);
    const rows = index.following(sparse.id, 0, Number.MAX_SAFE_INTEGER);
    let blocks: Array<{ cid: CID; bytes: Uint8Array }>;
    try {
      blocks = [];
      for (const row of rows) {
        const cid = CID.decode(row.cid);
        blocks.push({ cid, bytes: await getVerified(host.store, cid, options) });
      }
    } catch (err) {
      if (!isVaultError(err, 'BLOCK_CORRUPT') && !isVaultError(err, 'BLOCK_NOT_FOUND')) throw err;
      report.skipped.push({ key: host.packKey(sparse.id), reason: err.message });
      continue;
    }
    const { body, entries, dataStart } = buildPack(blocks);
    const id = newPackId();
    await host.uploadPack(id, body, signal ?? host.closing);
    const landed = landedBlocks(entries, dataStart);
    const { moved, fromLive } = index.repoint(sparse.id, id, body.byteLength, sparse.created, landed);
    if (moved === 0) await host.deleteObject(host.packKey(id), signal).catch(() => undefined); // all deleted meanwhile: garbage
    if (fromLive === 0) await host.deleteDeadPack(sparse.id, signal);
    report.packs++;
    report.blocks += moved;
    report.bytesBefore += sparse.bytes;
    report.bytesAfter += (moved > 0 ? body.byteLength : 0) + (fromLive > 0 ? sparse.bytes : 0);
  }
  report.skipped.sort((a, b) => (a.key < b.key ? -1 : 1));
  return report;
}
