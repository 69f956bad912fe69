// Where one instance is cut, encrypted and stored. The Part 10 bytes stream through once:
//   scanner (header up to Pixel Data, frame offsets)   ─┐
//   SHA-256 of the plaintext                            ├─ per incoming piece
//   cut into chunks of `chunkSize` plaintext bytes      ─┘
//   → AES-256-GCM (study key → per-instance derived key) → CIDv1(raw, sha2-256) → block store
// Only the header is held until the study UID (and so the study's key) is known; after that at
// most `maxBlocksInFlight` encrypted chunks are in memory while their writes complete.
import { createHash } from 'node:crypto';
import type { CID } from 'multiformats/cid';
import { abortError, VaultError } from '../src/errors.ts';
import type { ScannedInstance } from '../src/dicom/model.ts';
import type { DataKey } from '../src/keys.ts';
import type { BlockStore } from '../storage/block-store.ts';
import { rawCid } from '../storage/cid.ts';
import { DicomScanner, type DicomScannerOptions } from './dicom-scanner.ts';
import { buildInstanceNode, type EncodedNode } from './dag.ts';
import { deriveKey, newSalt, sealChunk } from './seal.ts';

export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
export const DEFAULT_MAX_BLOCKS_IN_FLIGHT = 8;

export interface IngestOptions {
  /** Plaintext bytes per chunk. Default DEFAULT_CHUNK_SIZE (1 MiB: IPFS-sized blocks). */
  chunkSize?: number;
  /** Block writes outstanding at once. Default DEFAULT_MAX_BLOCKS_IN_FLIGHT (8). */
  maxBlocksInFlight?: number;
  /** When set, an instance of another study is refused (STOW to /studies/{study}). */
  expectedStudyInstanceUID?: string;
  scanner?: DicomScannerOptions;
  signal?: AbortSignal;
}

export interface IngestDeps {
  store: Pick<BlockStore, 'put' | 'delete'>;
  keys: { getOrCreate(studyInstanceUID: string): DataKey };
}

export interface IngestedInstance {
  scanned: ScannedInstance;
  /** SHA-256 (hex) of the plaintext Part 10 bytes. */
  sha256: string;
  size: number;
  keyId: string;
  /** The stored instance node (its CID is what the study manifest links). */
  node: EncodedNode;
  /** Every block this ingest wrote, node included: deleted again if the instance is not kept. */
  written: CID[];
}

/** Streams one Part 10 instance into the store. Nothing is left behind if it throws. */
export async function ingestInstance(
  source: AsyncIterable<Uint8Array>,
  deps: IngestDeps,
  options: IngestOptions = {},
): Promise<IngestedInstance> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const maxInFlight = options.maxBlocksInFlight ?? DEFAULT_MAX_BLOCKS_IN_FLIGHT;
  const signal = options.signal;
  const scanner = new DicomScanner(options.scanner);
  const hash = createHash('sha256');
  const written: CID[] = [];
  const chunkCids: CID[] = [];
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;

  // Until the header names the study, full chunks wait here in plaintext (bounded by the
  // scanner's header limit plus one chunk).
  const waiting: Buffer[] = [];
  let instanceKey: Buffer | undefined;
  let dataKey: DataKey | undefined;
  const salt = newSalt();

  let current = Buffer.allocUnsafe(chunkSize);
  let fill = 0;
  let size = 0;

  const write = async (index: number, plaintext: Uint8Array): Promise<void> => {
    const block = sealChunk(instanceKey!, index, plaintext);
    const cid = rawCid(block);
    chunkCids[index] = cid;
    written.push(cid);
    const p = deps.store.put(cid, block, signal ? { signal } : {}).then(
      () => {
        inFlight.delete(p);
      },
      (err: unknown) => {
        inFlight.delete(p);
        failure ??= err;
      },
    );
    inFlight.add(p);
    while (inFlight.size >= maxInFlight) await Promise.race(inFlight);
    if (failure !== undefined) throw failure;
  };

  let nextIndex = 0;
  const emit = async (plaintext: Buffer): Promise<void> => {
    if (!instanceKey) {
      waiting.push(plaintext);
      return;
    }
    await write(nextIndex++, plaintext);
  };

  const unlock = async (): Promise<void> => {
    const identity = scanner.identity();
    if (options.expectedStudyInstanceUID !== undefined && identity.studyInstanceUID !== options.expectedStudyInstanceUID) {
      throw new VaultError('STUDY_UID_MISMATCH', 'the instance\'s StudyInstanceUID differs from the study in the URL', {
        details: { sopInstanceUID: identity.sopInstanceUID },
      });
    }
    dataKey = deps.keys.getOrCreate(identity.studyInstanceUID);
    instanceKey = deriveKey(dataKey.key, salt);
    for (const plaintext of waiting.splice(0)) await write(nextIndex++, plaintext);
  };

  try {
    for await (const piece of source) {
      if (signal?.aborted) throw abortError(signal);
      scanner.push(piece);
      hash.update(piece);
      size += piece.length;
      let offset = 0;
      while (offset < piece.length) {
        const n = Math.min(chunkSize - fill, piece.length - offset);
        current.set(piece.subarray(offset, offset + n), fill);
        fill += n;
        offset += n;
        if (fill === chunkSize) {
          // Sealing copies the plaintext, so the buffer can be reused once the key is known;
          // while waiting for the header, the chunk itself is kept.
          const full = current;
          current = instanceKey ? current : Buffer.allocUnsafe(chunkSize);
          fill = 0;
          await emit(full);
        }
      }
      if (!instanceKey && scanner.identified) await unlock();
    }
    const scanned = scanner.end();
    if (!instanceKey) await unlock();
    if (fill > 0) await write(nextIndex++, current.subarray(0, fill));
    await Promise.all(inFlight);
    if (failure !== undefined) throw failure;

    const sha256 = hash.digest('hex');
    const node = buildInstanceNode(
      dataKey!.key,
      salt,
      { chunkSize, size, chunks: chunkCids },
      {
        studyInstanceUID: scanned.studyInstanceUID,
        seriesInstanceUID: scanned.seriesInstanceUID,
        sopInstanceUID: scanned.sopInstanceUID,
        sopClassUID: scanned.sopClassUID,
        transferSyntaxUID: scanned.transferSyntaxUID,
        sha256,
      },
    );
    await deps.store.put(node.cid, node.bytes, signal ? { signal } : {});
    written.push(node.cid);
    return { scanned, sha256, size, keyId: dataKey!.keyId, node, written };
  } catch (err) {
    await Promise.allSettled(inFlight);
    await discardBlocks(deps.store, written);
    throw err;
  }
}

/**
 * Removes blocks an ingest wrote for an instance that is not kept (failed, duplicate, or its
 * request failed). They cannot be shared with anything else: every instance has its own salt,
 * hence its own key and ciphertexts.
 */
export async function discardBlocks(store: Pick<BlockStore, 'delete'>, cids: readonly CID[]): Promise<void> {
  await Promise.allSettled(cids.map((cid) => store.delete(cid)));
}
