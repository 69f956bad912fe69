// Where one instance is cut, encrypted and stored. The Part 10 bytes stream through once:
//   scanner (header up to Pixel Data, frame offsets)   ─┐ per incoming piece (main thread)
//   cut into chunks of `chunkSize` plaintext bytes      ─┘ (into reused slots, crypto-pool.ts)
//   → SHA-256 of the plaintext (in order), AES-256-GCM (study key → per-instance derived key),
//     CIDv1(raw, sha2-256) of the ciphertext                               (on a worker thread)
//   → block store, written from the slot, which is then reused
// Only the header is held until the study UID (and so the study's key) is known; after that at
// most the window's chunks are being sealed or written while the next ones are read. The chunk
// CIDs go into a tree of link nodes as their seals finish (src/format/tree.ts): link nodes are
// written as they fill, so no list of links grows with the instance (1,024 per level at most);
// what does is the 36-byte record of each block put, kept to delete them if the ingest fails
// (written.ts: 37 KiB per GiB).
// A chunk is sealed once the byte after it arrives or the stream ends, so that the last one is
// known to be last (its associated data says so and binds the instance's size).
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { VaultError } from '../src/core/errors.ts';
import { abortError } from '../src/core/abort.ts';
import type { ScannedInstance } from '../src/dicom/model.ts';
import type { DataKey, PatientRef } from '../src/format/keys.ts';
import { copyInto } from '../src/core/aligned-memory.ts';
import type { BlockStore } from '../storage/block-store.ts';
import { DicomScanner, type DicomScannerOptions } from '../src/dicom/scanner.ts';
import { buildInstanceNode, checkFanout, DEFAULT_CHUNK_SIZE, DEFAULT_FANOUT, newInstanceKey, type EncodedNode } from '../src/format/dag.ts';
import { sharedCryptoPool, TAG_BYTES, type CryptoPool, type Slot } from '../src/format/crypto-pool.ts';
import { chunkAad } from '../src/format/seal.ts';
import { LinkTreeBuilder } from '../src/format/tree.ts';
import { deleteWritten, WrittenBlocks } from './written.ts';

const SHA2_256 = 0x12;

/**
 * Block writes (each a seal on a worker, then a put) a request keeps in flight. 1,000 small
 * instances, alternating fresh nodes on a fresh filesystem: 216/281/255 inst/s with 8 (the main
 * thread waited for the window a third of the time), 292/294/277 with 16, 292/298/257 with 32.
 * Each holds a slot (1 MiB at the default chunk size) until its write is done.
 */
export const DEFAULT_MAX_BLOCKS_IN_FLIGHT = 16;
/**
 * Chunk blocks written between two background flushes, for a store that can batch its syncs
 * (`durable: false` puts, then `flush()`). Measured against durable puts (an fdatasync and a
 * directory fsync inside every put), medians of 5: 1 GiB STOW 215 -> 263 MB/s and 7.0 -> 5.2
 * node CPU-s; 1000 small instances 183 -> 219 inst/s. 8 to 64 measured alike.
 */
export const DEFAULT_SYNC_EVERY = 16;

export interface IngestOptions {
  /** Plaintext bytes per chunk. Default DEFAULT_CHUNK_SIZE (1 MiB: IPFS-sized blocks). */
  chunkSize?: number;
  /** Links per node of the chunk tree. Default DEFAULT_FANOUT (1024); tests use small ones to make deep trees. */
  fanout?: number;
  /**
   * Block writes outstanding at once, shared by every instance of a request so that writes of
   * one instance overlap the parsing of the next. Default: a window of
   * DEFAULT_MAX_BLOCKS_IN_FLIGHT (16) for this instance alone.
   */
  window?: WriteWindow;
  /** When set, an instance of another study is refused (STOW to /studies/{study}). */
  expectedStudyInstanceUID?: string;
  /**
   * With a store that has `flush()`: blocks are put with `durable: false`, a flush starts after
   * every `syncEvery` chunk blocks (one at a time: ingest waits for the previous one), and
   * `durable` resolves after a last flush once every write is done. 0: every put is durable.
   * Default DEFAULT_SYNC_EVERY.
   */
  syncEvery?: number;
  scanner?: DicomScannerOptions;
  signal?: AbortSignal;
}

export interface IngestDeps {
  /**
   * Chunks are put from reused buffers: `put` must not keep a reference to `bytes` once its
   * promise has settled (FsBlockStore writes them and lets go).
   */
  store: Pick<BlockStore, 'put' | 'delete'> & Partial<Pick<BlockStore, 'flush'>>;
  /** `patient`: the instance's Patient ID and issuer, under whose key a new study's key is filed. */
  keys: { getOrCreate(studyInstanceUID: string, patient?: PatientRef): DataKey };
  /** Where chunks are sealed. Default: the process's shared pool (sharedCryptoPool). */
  crypto?: CryptoPool;
}

/**
 * The key store as one request (or one CLI run) sees it: each study's data key asked for once,
 * not once per instance (a SQLite read each: 1,000 small instances of one study read it 1,000
 * times). A key destroyed meanwhile still stops the request: the commit asks the store again
 * (StudyWriter).
 */
export function keysOncePerStudy(keys: IngestDeps['keys']): IngestDeps['keys'] {
  const seen = new Map<string, DataKey>();
  return {
    getOrCreate(studyInstanceUID: string, patient?: PatientRef): DataKey {
      let key = seen.get(studyInstanceUID);
      if (key === undefined) {
        key = keys.getOrCreate(studyInstanceUID, patient);
        seen.set(studyInstanceUID, key);
      }
      return key;
    },
  };
}

export interface IngestedInstance {
  scanned: ScannedInstance;
  /** SHA-256 (hex) of the plaintext Part 10 bytes. */
  sha256: string;
  size: number;
  keyId: string;
  /** The instance node (its CID is what the study manifest links). */
  node: EncodedNode;
  /** Levels of link nodes under the instance node. */
  depth: number;
  /** Every block this ingest put (chunks, link nodes, the node): what discardInstances deletes. */
  written: WrittenBlocks;
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

/**
 * Streams one Part 10 instance into the store. Returns when its bytes have been read and its
 * writes started; `durable` says when they are done. If it throws, nothing is left behind.
 */
export async function ingestInstance(source: AsyncIterable<Uint8Array>, deps: IngestDeps, options: IngestOptions = {}): Promise<IngestedInstance> {
  return (await readInstance(source, deps, options)).completed;
}

/** An instance whose bytes have all been read; its last seals and its node are still to come. */
export interface ReadInstance {
  scanned: ScannedInstance;
  size: number;
  /**
   * Resolves once every chunk is sealed and the instance node's write has started (as
   * ingestInstance does). If it rejects (a store or crypto failure), nothing is left behind.
   */
  completed: Promise<IngestedInstance>;
}

/**
 * Reads one Part 10 instance from `source` to its end, sealing and writing its chunks as they
 * fill. Resolves as soon as the source is consumed, so that a caller reading several instances
 * from one stream (STOW) parses the next one while this one's last seal (a round trip to a
 * crypto worker) and its node finish: with small instances, waiting for that tail before reading
 * on left the main thread idle a quarter of the time. Throws (leaving nothing behind) on bad
 * input, which is always detected while reading.
 */
export async function readInstance(source: AsyncIterable<Uint8Array>, deps: IngestDeps, options: IngestOptions = {}): Promise<ReadInstance> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const window = options.window ?? new WriteWindow();
  const pool = deps.crypto ?? sharedCryptoPool();
  const signal = options.signal;
  const syncEvery = options.syncEvery ?? DEFAULT_SYNC_EVERY;
  const store = deps.store;
  const batched = syncEvery > 0 && typeof store.flush === 'function';
  const flush = (): Promise<void> => store.flush!(signal ? { signal } : {});
  const putOptions = { ...(signal ? { signal } : {}), durable: !batched };
  const scanner = new DicomScanner(options.scanner);
  const plaintextHash = pool.startHash();
  const tree = new LinkTreeBuilder(checkFanout(options.fanout ?? DEFAULT_FANOUT));
  // Chunks sealed out of order wait here for those before them (at most the window's).
  const sealedAhead = new Map<number, CID>();
  let linked = 0;
  // Seals and writes not yet settled: sets, not lists, so that they do not grow with the instance.
  const seals = new Set<Promise<CID>>();
  const writes = new Set<Promise<void>>();
  // Every block put, recorded before its put starts: a failure deletes them without reading
  // anything back (the store may be what failed).
  const written = new WrittenBlocks();
  let failure: unknown;

  const track = <T>(set: Set<Promise<T>>, p: Promise<T>): Promise<T> => {
    set.add(p);
    const drop = (): void => void set.delete(p);
    p.then(drop, drop);
    return p;
  };
  // Link nodes are small and one per `fanout` chunks: written at once, outside the window.
  const writeNodes = (nodes: EncodedNode[]): void => {
    for (const node of nodes) {
      written.add(node.cid);
      const p = track(writes, deps.store.put(node.cid, node.bytes, putOptions));
      p.catch((err: unknown) => {
        failure ??= err;
      });
    }
  };
  const linkSealed = (index: number, cid: CID): void => {
    sealedAhead.set(index, cid);
    for (let next = sealedAhead.get(linked); next !== undefined; next = sealedAhead.get(linked)) {
      sealedAhead.delete(linked++);
      writeNodes(tree.push(next));
    }
  };

  // Until the header names the study, full chunks wait here in plaintext (bounded by the
  // scanner's maxBytesBeforeIdentity, 16 MiB by default, plus one chunk).
  const waiting: Slot[] = [];
  let instanceKey: Buffer | undefined;
  let dataKey: DataKey | undefined;
  let salt: Uint8Array | undefined;

  // The slot being filled; undefined once handed on (a started write owns its slot).
  let current: Slot | undefined = pool.takeSlot(chunkSize);
  let fill = 0;
  let size = 0;

  // Seal on a worker, then write from the slot; the slot is free again once the write settled.
  const sealAndPut = (index: number, slot: Slot, length: number, last: boolean): Promise<void> => {
    const aad = chunkAad(index, last, chunkSize, size);
    const sealed: Promise<CID> = track<CID>(
      seals,
      pool.seal(instanceKey!, index, slot, length, plaintextHash, { last, aad }).then((digest) => {
        const cid = CID.createV1(raw.code, Digest.create(SHA2_256, digest));
        linkSealed(index, cid);
        return cid;
      }),
    );
    sealed.catch(() => undefined); // reported through the write below and awaited at the end
    return sealed
      .then((cid) => {
        written.add(cid);
        return deps.store.put(cid, slot.bytes.subarray(0, length + TAG_BYTES), putOptions);
      })
      .finally(() => pool.giveSlot(slot));
  };

  // Waits for room in the window; the chunk's seal and write then run while the next is read.
  const dispatch = async (index: number, slot: Slot, length: number, last = false): Promise<void> => {
    const { done: p } = await window.start(() => sealAndPut(index, slot, length, last));
    track(writes, p).catch((err: unknown) => {
      failure ??= err;
    });
    if (batched && ++unsynced >= syncEvery) {
      // At most one background flush at a time: it paces ingest to what the disk syncs (no
      // unbounded backlog of unsynced data), and keeps the instance's final flush small.
      await syncing;
      unsynced = 0;
      syncing = flush().catch((err: unknown) => {
        failure ??= err;
      });
    }
    if (failure !== undefined) throw failure;
  };
  let unsynced = 0;
  let syncing: Promise<void> = Promise.resolve();

  let nextIndex = 0;
  const unlock = async (): Promise<void> => {
    const identity = scanner.identity();
    if (options.expectedStudyInstanceUID !== undefined && identity.studyInstanceUID !== options.expectedStudyInstanceUID) {
      throw new VaultError('STUDY_UID_MISMATCH', "the instance's StudyInstanceUID differs from the study in the URL", {
        details: { sopInstanceUID: identity.sopInstanceUID },
      });
    }
    dataKey = deps.keys.getOrCreate(identity.studyInstanceUID, scanner.patient());
    ({ salt, key: instanceKey } = newInstanceKey(dataKey.key));
    while (waiting.length > 0) await dispatch(nextIndex++, waiting.shift()!, chunkSize);
  };

  try {
    for await (const piece of source) {
      if (signal?.aborted) throw abortError(signal);
      scanner.push(piece);
      let offset = 0;
      while (offset < piece.length) {
        if (fill === chunkSize) {
          // A full chunk goes once a byte follows it: only then is it known not to be the last.
          const full = current!;
          current = pool.takeSlot(chunkSize);
          fill = 0;
          if (instanceKey) await dispatch(nextIndex++, full, chunkSize);
          else waiting.push(full);
        }
        const n = Math.min(chunkSize - fill, piece.length - offset);
        // Not set(): into a slot's shared memory it copies byte by byte (0.25 ms of this thread
        // per 512 KiB instance).
        copyInto(current!.bytes, piece.subarray(offset, offset + n), fill);
        fill += n;
        offset += n;
        size += n;
      }
      if (!instanceKey && scanner.identified) await unlock();
    }
    const scanned = scanner.end();
    if (!instanceKey) await unlock();
    const last = current!;
    current = undefined;
    if (fill > 0) await dispatch(nextIndex++, last, fill, true);
    else pool.giveSlot(last);
    const completed = finish(scanned);
    completed.catch(() => undefined); // the caller awaits it; until then a failure must not be "unhandled"
    return { scanned, size, completed };
  } catch (err) {
    await cleanUp();
    throw err;
  }

  async function finish(scanned: ScannedInstance): Promise<IngestedInstance> {
    try {
      // The node holds the tree's top links, known once every seal is done (writes may still run).
      while (seals.size > 0) await Promise.all(seals);
      if (failure !== undefined) throw failure;
      const sha256 = await pool.digest(plaintextHash);
      const top = tree.finish();
      writeNodes(top.nodes);
      const node = buildInstanceNode(
        instanceKey!,
        salt!,
        { chunkSize, size, fanout: tree.fanout, tree: top },
        {
          studyInstanceUID: scanned.studyInstanceUID,
          seriesInstanceUID: scanned.seriesInstanceUID,
          sopInstanceUID: scanned.sopInstanceUID,
          sopClassUID: scanned.sopClassUID,
          transferSyntaxUID: scanned.transferSyntaxUID,
          sha256,
        },
      );
      written.add(node.cid);
      const { done: nodeWrite } = await window.start(() => deps.store.put(node.cid, node.bytes, putOptions));
      track(writes, nodeWrite).catch((err: unknown) => {
        failure ??= err;
      });
      // Durable once every write has settled and, for batched syncs, a flush started after that.
      const durable = (async () => {
        while (writes.size > 0) await Promise.allSettled(writes);
        await syncing;
        if (failure !== undefined) throw failure;
        if (batched) await flush();
      })();
      durable.catch(() => undefined); // the caller awaits it; until then a failure must not be "unhandled"
      return { scanned, sha256, size, keyId: dataKey!.keyId, node, depth: top.depth, written, durable };
    } catch (err) {
      await cleanUp();
      throw err;
    }
  }

  async function cleanUp(): Promise<void> {
    pool.dropHash(plaintextHash);
    await syncing;
    if (current !== undefined) pool.giveSlot(current);
    for (const slot of waiting.splice(0)) pool.giveSlot(slot);
    while (seals.size + writes.size > 0) await Promise.allSettled([...seals, ...writes]);
    await deleteWritten(deps.store, [written]);
  }
}

/**
 * Removes the blocks of instances that are not kept (refused, duplicate, or their request
 * failed), once their writes have settled: every block each ingest recorded as it put it, so
 * nothing is read back (a store that is down, the reason a request failed, would leave them all).
 * The blocks cannot be shared with anything else: every instance has its own salt, hence its own
 * key and ciphertexts, and link nodes list those.
 */
export async function discardInstances(store: Pick<BlockStore, 'delete'>, instances: readonly IngestedInstance[]): Promise<void> {
  await Promise.allSettled(instances.map((i) => i.durable));
  await deleteWritten(
    store,
    instances.map((i) => i.written),
  );
}
