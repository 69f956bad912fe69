// Rebuilding the S3 store's pack index from the packs' own headers (S3BlockStore.rebuildIndex,
// `dicom-vault reindex`; gc runs it first). Needs only the bucket's calls and the index, so it
// lives apart from the store's read and write paths.
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { VaultError, isVaultError } from '../../src/core/errors.ts';
import { runCall, type S3Calls } from './client.ts';
import { mapLimit } from './map-limit.ts';
import { DEFAULT_HEADER_RESERVE, PACK_PREAMBLE_BYTES, decodePackHeader, packDataStart } from './pack-format.ts';
import { landedBlocks, type LandedBlock, type PackIndex } from './pack-index.ts';

/** What S3BlockStore.rebuildIndex found under `<prefix>packs/`. */
export interface IndexRebuildReport {
  /** Objects under `<prefix>packs/`. */
  objects: number;
  /** Packs the index had already (left as they were). */
  known: number;
  /** Packs read and indexed now, and the blocks they brought. */
  indexed: number;
  blocks: number;
  /** Packs whose every block the index had in another pack (left in the bucket: garbage). */
  redundant: number;
  /** Listed, but deleted before they were read. */
  gone: number;
  /** Objects that are not readable packs, with the reason. Left in the bucket, not indexed. */
  unreadable: Array<{ key: string; reason: string }>;
}

/** Packs whose heads rebuildIndex reads at once. */
const REBUILD_CONCURRENCY = 8;

/**
 * Adds to the index every pack in the bucket that it lacks, from the pack's own header (one
 * ranged GET of its head, two when the header outgrew the room the writer keeps for it): after
 * the index file was lost, or restored from a backup older than the bucket. Packs indexed
 * already are left as they are, so it can run again, and beside a serving node: a pack it finds
 * between its upload and its writer's landing is counted once by both (PackIndex.land).
 *
 * It brings back what the headers list and the index had dropped: blocks deleted after their
 * pack landed, and orphan packs (uploaded, never indexed). Neither is referenced by a study, so
 * both are garbage that is readable again, not a wrong answer (storage/README.md, "Index
 * rebuild", names the one race left). Nothing is deleted. An object that is not a readable
 * pack is reported and skipped; a store failure stops the rebuild (what was indexed stays:
 * running it again goes on from there).
 */
export async function rebuildIndex(calls: S3Calls, index: PackIndex, signal: AbortSignal | undefined): Promise<IndexRebuildReport> {
  const report: IndexRebuildReport = { objects: 0, known: 0, indexed: 0, blocks: 0, redundant: 0, gone: 0, unreadable: [] };
  const packsPrefix = calls.packKey('');
  let token: string | undefined;
  do {
    const page = await runCall(calls, 'list', {}, signal, (abortSignal) =>
      calls.client.send(new ListObjectsV2Command({ Bucket: calls.bucket, Prefix: packsPrefix, ...(token === undefined ? {} : { ContinuationToken: token }) }), {
        abortSignal,
      }),
    );
    const objects = page.Contents ?? [];
    report.objects += objects.length;
    await mapLimit(objects.length, REBUILD_CONCURRENCY, async (i) => {
      const key = objects[i]!.Key!;
      const id = key.slice(packsPrefix.length);
      if (index.hasPack(id)) {
        report.known++;
        return;
      }
      const size = objects[i]!.Size ?? 0;
      let landed: LandedBlock[];
      try {
        landed = await readPackEntries(calls, id, size, signal);
      } catch (err) {
        if (isVaultError(err, 'BLOCK_NOT_FOUND')) report.gone++;
        else if (isVaultError(err, 'BLOCK_CORRUPT')) report.unreadable.push({ key, reason: err.message });
        else throw err;
        return;
      }
      const live = index.land(id, size, landed, objects[i]!.LastModified?.getTime() ?? Date.now());
      if (live === 0) report.redundant++;
      else {
        report.indexed++;
        report.blocks += live;
      }
    });
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  report.unreadable.sort((a, b) => (a.key < b.key ? -1 : 1));
  return report;
}

/** Where a pack's header says its blocks are. BLOCK_CORRUPT if it is not a pack, BLOCK_NOT_FOUND if it is gone. */
async function readPackEntries(calls: S3Calls, id: string, size: number, signal: AbortSignal | undefined): Promise<LandedBlock[]> {
  const key = calls.packKey(id);
  if (size < PACK_PREAMBLE_BYTES) throw new VaultError('BLOCK_CORRUPT', `${key}: only ${size} bytes, not a pack`);
  let head = await readHead(calls, id, Math.min(size, PACK_PREAMBLE_BYTES + DEFAULT_HEADER_RESERVE), signal);
  const dataStart = packDataStart(head, key);
  if (dataStart > size) throw new VaultError('BLOCK_CORRUPT', `${key}: its header of ${dataStart} bytes runs past its ${size} bytes`);
  if (dataStart > head.byteLength) head = await readHead(calls, id, dataStart, signal);
  const { entries } = decodePackHeader(head.subarray(0, dataStart), size - dataStart, key);
  return landedBlocks(entries, dataStart);
}

/** The first `bytes` bytes of a pack. */
async function readHead(calls: S3Calls, id: string, bytes: number, signal: AbortSignal | undefined): Promise<Uint8Array> {
  return runCall(calls, 'get', { pack: id }, signal, async (abortSignal) => {
    const res = await calls.client.send(new GetObjectCommand({ Bucket: calls.bucket, Key: calls.packKey(id), Range: `bytes=0-${bytes - 1}` }), { abortSignal });
    const body = await res.Body!.transformToByteArray();
    if (body.byteLength !== bytes) throw new VaultError('BLOCK_CORRUPT', `${calls.packKey(id)}: asked for its first ${bytes} bytes, got ${body.byteLength}`);
    return body;
  });
}
