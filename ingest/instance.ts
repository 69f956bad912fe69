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
  /**
   * Block writes outstanding at once, shared by every instance of a request so that writes of
   * one instance overlap the parsing of the next. Default: a window of
   * DEFAULT_MAX_BLOCKS_IN_FLIGHT (8) for this instance alone.
   */
  window?: WriteWindow;
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
  /** The instance node (its CID is what the study manifest links). */
  node: EncodedNode;
  /** Every block this ingest writes, node included: deleted again if the instance is not kept. */
  written: CID[];
  /** Settles when every block write has: resolves once all are durable, rejects if one failed. */
  durable: Promise<void>;
}

/**
 * Bounds the encrypted blocks held in memory while their writes complete. A caller waits for a
 * slot before starting a write (backpressure reaches the socket through the awaiting reader).
 */
export class WriteWindow {
  readonly #max: number;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(max = DEFAULT_MAX_BLOCKS_IN_FLIGHT) {
    this.#max = Math.max(1, max);
  }

  /**
   * Starts `write` once a slot is free. Resolves then (not when the write ends) with the write's
   * promise in a box: a promise resolved with a promise would wait for it.
   */
  async start(write: () => Promise<void>): Promise<{ done: Promise<void> }> {
    while (this.#inFlight.size >= this.#max) await Promise.race(this.#inFlight);
    const done = write();
    const settled: Promise<unknown> = done.then(
      () => this.#inFlight.delete(settled),
      () => this.#inFlight.delete(settled),
    );
    this.#inFlight.add(settled);
    return { done };
  }
}

/** Plaintext chunk buffers are reused across instances: 1 MiB allocations per instance cost GC time. */
const bufferPool = new Map<number, Buffer[]>();
const POOL_MAX = 16;
function takeBuffer(size: number): Buffer {
  return bufferPool.get(size)?.pop() ?? Buffer.allocUnsafe(size);
}
function returnBuffer(buf: Buffer): void {
  const pool = bufferPool.get(buf.length) ?? [];
  if (pool.length < POOL_MAX) pool.push(buf);
  bufferPool.set(buf.length, pool);
}

/**
 * Streams one Part 10 instance into the store. Returns when its bytes have been read and its
 * writes started; `durable` says when they are done. If it throws, nothing is left behind.
 */
export async function ingestInstance(
  source: AsyncIterable<Uint8Array>,
  deps: IngestDeps,
  options: IngestOptions = {},
): Promise<IngestedInstance> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const window = options.window ?? new WriteWindow();
  const signal = options.signal;
  const putOptions = signal ? { signal } : {};
  const scanner = new DicomScanner(options.scanner);
  const hash = createHash('sha256');
  const written: CID[] = [];
  const chunkCids: CID[] = [];
  const writes: Array<Promise<void>> = [];
  let failure: unknown;

  // Until the header names the study, full chunks wait here in plaintext (bounded by the
  // scanner's header limit plus one chunk).
  const waiting: Buffer[] = [];
  let instanceKey: Buffer | undefined;
  let dataKey: DataKey | undefined;
  const salt = newSalt();

  let current = takeBuffer(chunkSize);
  let fill = 0;
  let size = 0;

  const put = async (cid: CID, block: Uint8Array): Promise<void> => {
    written.push(cid);
    const { done: p } = await window.start(() => deps.store.put(cid, block, putOptions));
    p.catch((err: unknown) => {
      failure ??= err;
    });
    writes.push(p);
    if (failure !== undefined) throw failure;
  };

  const write = async (index: number, plaintext: Uint8Array): Promise<void> => {
    // Sealing copies: the plaintext buffer is free again as soon as this returns.
    const block = sealChunk(instanceKey!, index, plaintext);
    const cid = rawCid(block);
    chunkCids[index] = cid;
    await put(cid, block);
  };

  let nextIndex = 0;
  const unlock = async (): Promise<void> => {
    const identity = scanner.identity();
    if (options.expectedStudyInstanceUID !== undefined && identity.studyInstanceUID !== options.expectedStudyInstanceUID) {
      throw new VaultError('STUDY_UID_MISMATCH', 'the instance\'s StudyInstanceUID differs from the study in the URL', {
        details: { sopInstanceUID: identity.sopInstanceUID },
      });
    }
    dataKey = deps.keys.getOrCreate(identity.studyInstanceUID);
    instanceKey = deriveKey(dataKey.key, salt);
    for (const plaintext of waiting.splice(0)) {
      await write(nextIndex++, plaintext);
      returnBuffer(plaintext);
    }
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
          fill = 0;
          if (instanceKey) await write(nextIndex++, current);
          else {
            waiting.push(current);
            current = takeBuffer(chunkSize);
          }
        }
      }
      if (!instanceKey && scanner.identified) await unlock();
    }
    const scanned = scanner.end();
    if (!instanceKey) await unlock();
    if (fill > 0) await write(nextIndex++, current.subarray(0, fill));
    returnBuffer(current);

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
    await put(node.cid, node.bytes);
    const durable = Promise.all(writes).then(() => undefined);
    durable.catch(() => undefined); // the caller awaits it; until then a failure must not be "unhandled"
    return { scanned, sha256, size, keyId: dataKey!.keyId, node, written, durable };
  } catch (err) {
    await Promise.allSettled(writes);
    await discardBlocks(deps.store, written);
    throw err;
  }
}

/**
 * Removes the blocks of instances that are not kept (refused, duplicate, or their request
 * failed), once their writes have settled. The blocks cannot be shared with anything else:
 * every instance has its own salt, hence its own key and ciphertexts.
 */
export async function discardInstances(store: Pick<BlockStore, 'delete'>, instances: readonly IngestedInstance[]): Promise<void> {
  await Promise.allSettled(instances.map((i) => i.durable));
  await discardBlocks(store, instances.flatMap((i) => i.written));
}

export async function discardBlocks(store: Pick<BlockStore, 'delete'>, cids: readonly CID[]): Promise<void> {
  await Promise.allSettled(cids.map((cid) => store.delete(cid)));
}
