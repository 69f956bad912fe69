// Where an instance leaves the store: its node and chunks are fetched, every block re-hashed
// against its CID and its GCM tag checked before any byte of it is returned, and a whole-instance
// read also checks the plaintext SHA-256 recorded at ingest. Ranges (frames, bulk data) read only
// the chunks that hold them, found through the instance's tree of link nodes branch by branch (a
// frame read fetches only the link nodes on its path; no list of every chunk is ever held). Chunks
// are verified and decrypted on the crypto pool's workers
// (src/format/crypto-pool.ts), several at once (read-ahead); the plaintext hash stays here, in order.
import { createHash } from 'node:crypto';
import { CID } from 'multiformats/cid';
import { isVaultError, VaultError } from '../core/errors.ts';
import { abortError } from '../core/abort.ts';
import type { ByteRange } from '../dicom/model.ts';
import type { DataKey } from '../format/keys.ts';
import type { AbortOptions, BlockStore } from '../../storage/block-store.ts';
import { getVerified } from '../../storage/verified.ts';
import { publishBlockRejected, publishBlockVerified } from '../core/events.ts';
import {
  chunkAadOf,
  chunkTree,
  decodeInstanceNode,
  DEFAULT_CHUNK_SIZE,
  instanceKeyOf,
  openInstanceEnvelopeWithKey,
  type InstanceEnvelope,
  type InstanceNode,
} from '../format/dag.ts';
import type { LinkTree } from '../format/tree.ts';
import { sharedCryptoPool, type BlockHash, type CryptoPool } from '../format/crypto-pool.ts';
import { openChunk } from '../format/seal.ts';

/**
 * Chunks fetched, verified and decrypted ahead of the one being sent, in parallel on the crypto
 * workers. Default 4 (4 MiB with the default chunk size); 1 GiB WADO measured 386 / 448 / 429
 * MB/s with 2 / 4 / 8.
 */
export const DEFAULT_READ_AHEAD = 4;

/** Multihash codes the workers check; any other (identity) is checked in-thread by getVerified. */
const WORKER_HASHES: ReadonlyMap<number, BlockHash> = new Map([
  [0x12, 'sha256'],
  [0x13, 'sha512'],
]);

export interface ReaderDeps {
  /**
   * The reader takes ownership of the bytes `get` returns (they are moved to a worker thread):
   * a store must return a buffer it does not use again, not one it caches. With `getInto`, reads
   * that lend their pieces (ReadOptions.loans) go into pooled buffers instead.
   */
  store: Pick<BlockStore, 'get'> & Partial<Pick<BlockStore, 'getInto'>>;
  keys: { require(studyInstanceUID: string): DataKey };
  /** Where chunks are verified and decrypted. Default: the process's shared pool (sharedCryptoPool). */
  crypto?: CryptoPool;
}

export interface InstanceRef {
  studyInstanceUID: string;
  /** When given (a catalog row), compared with the node's sealed envelope on open. */
  seriesInstanceUID?: string;
  sopInstanceUID?: string;
  nodeCid: string;
  sha256: string;
  size: number;
}

export interface ReadOptions {
  signal?: AbortSignal;
  readAhead?: number;
  /**
   * Read chunks into pooled buffers and lend the pieces through these loans: the consumer gives
   * each one back once it no longer needs its bytes. Only for consumers that pass pieces on
   * whole and let go of them (a response writer); one that may keep a piece (a transcoder) must
   * read without. Used only with a store that has `getInto`.
   */
  loans?: PieceLoans;
}

/**
 * Pieces lent by the readers of one consumer (a WADO response). Retrieving a GiB through fresh
 * buffers makes the main thread allocate two GiB of external memory (block read, plaintext),
 * which V8 answers, on some runs and not others, with full mark-compacts of the whole heap:
 * one 4 GiB WADO took 23 node CPU-s, 7.8 of them in GC helper threads (~170 mark-compacts),
 * the next one 12.7. Read into pooled buffers: 9.7, every run, and 380-450 -> 520-560 MB/s.
 * A lent piece's buffer goes back to the crypto pool when the consumer gives it back, to hold
 * a later chunk; a piece never given back is left to the GC, as an unpooled one is, so
 * forgetting costs speed, never correctness. Giving a piece back while its bytes are still to
 * be read is the one misuse: they would be overwritten.
 */
export class PieceLoans {
  readonly #returns = new WeakMap<Uint8Array, () => void>();

  lend(piece: Uint8Array, giveBack: () => void): void {
    this.#returns.set(piece, giveBack);
  }

  /** Ends the loan of `piece` (exactly as it was yielded); anything not lent is ignored. */
  giveBack(piece: Uint8Array): void {
    const giveBack = this.#returns.get(piece);
    if (giveBack === undefined) return;
    this.#returns.delete(piece);
    giveBack();
  }
}

/** A chunk read back: its plaintext, and how to give its buffer back when it was pooled. */
interface OpenedChunk {
  plaintext: Buffer;
  sha256?: string;
  giveBack?: () => void;
}

export class OpenedInstance {
  readonly node: InstanceNode;
  readonly envelope: InstanceEnvelope;
  readonly #store: ReaderDeps['store'];
  readonly #key: Buffer;
  readonly #cid: CID;
  readonly #crypto: CryptoPool;
  readonly #tree: LinkTree;

  constructor(
    store: ReaderDeps['store'],
    cid: CID,
    node: InstanceNode,
    envelope: InstanceEnvelope,
    key: Buffer,
    crypto: CryptoPool = sharedCryptoPool(),
    signal?: AbortSignal,
  ) {
    this.#store = store;
    this.#cid = cid;
    this.node = node;
    this.envelope = envelope;
    this.#key = key;
    this.#crypto = crypto;
    this.#tree = chunkTree(node, cid, (c) => getVerified(store, c, signal ? { signal } : {}));
  }

  /** Link nodes read so far (each once while its branch is read). */
  get linkNodeReads(): number {
    return this.#tree.nodeReads;
  }

  /** The instance node's CID. */
  get cid(): CID {
    return this.#cid;
  }

  get size(): number {
    return this.node.size;
  }

  /** Chunk `index`, verified (CID and GCM tag) and decrypted. */
  async chunk(index: number, options: ReadOptions = {}): Promise<Buffer> {
    return (await this.openChunk(index, options, false)).plaintext;
  }

  /**
   * Chunk `index` as chunk() reads it; with `sha256`, the SHA-256 of its plaintext too, computed
   * by the worker that opened it (for an instance of one chunk, its whole hash).
   */
  async openChunk(index: number, options: ReadOptions, sha256: boolean): Promise<OpenedChunk> {
    const cid = await this.#tree.leaf(index);
    const aad = chunkAadOf(this.node, index);
    const getOptions = options.signal ? { signal: options.signal } : {};
    const hash = WORKER_HASHES.get(cid.multihash.code);
    if (hash === undefined) {
      const block = await getVerified(this.#store, cid, getOptions);
      try {
        return { plaintext: openChunk(this.#key, index, block, aad) };
      } catch (cause) {
        throw this.#undecryptable(cid, index, cause);
      }
    }
    if (options.loans !== undefined && this.#store.getInto !== undefined) {
      const pooled = await this.#openPooled(cid, index, hash, getOptions, sha256, aad);
      if (pooled !== undefined) return pooled;
    }
    const block = await getBlock(() => this.#store.get(cid, getOptions), cid);
    const size = block.byteLength; // the block is moved to the worker below
    const result = await this.#crypto.open(this.#key, index, block, hash, cid.multihash.digest, { plaintextSha256: sha256, ...(aad ? { aad } : {}) });
    if ('plaintext' in result) {
      publishBlockVerified(size);
      return result;
    }
    throw this.#failed(cid, index, result.failure, size);
  }

  /** openChunk through a pooled slot; undefined when the block does not fit one (read it the usual way). */
  async #openPooled(
    cid: CID,
    index: number,
    hash: BlockHash,
    options: AbortOptions,
    sha256: boolean,
    aad: Uint8Array | undefined,
  ): Promise<OpenedChunk | undefined> {
    const slot = this.#crypto.takeSlot(this.node.chunkSize);
    const giveBack = (): void => this.#crypto.giveSlot(slot);
    try {
      const size = await getBlock(() => this.#store.getInto!(cid, slot.bytes, options), cid);
      if (size === undefined) {
        giveBack();
        return undefined;
      }
      const result = await this.#crypto.openInSlot(this.#key, index, slot, size, hash, cid.multihash.digest, {
        plaintextSha256: sha256,
        ...(aad ? { aad } : {}),
      });
      if ('failure' in result) throw this.#failed(cid, index, result.failure, size);
      publishBlockVerified(size);
      return { plaintext: slot.bytes.subarray(0, result.plaintextLength), ...(result.sha256 === undefined ? {} : { sha256: result.sha256 }), giveBack };
    } catch (err) {
      giveBack(); // a slot whose memory was lost with a failed worker call is not taken back
      throw err;
    }
  }

  #failed(cid: CID, index: number, failure: 'hash' | 'short' | 'tag', size: number): VaultError {
    publishBlockRejected(cid, 'corrupt');
    // As getVerified reports it.
    if (failure === 'hash') return new VaultError('BLOCK_CORRUPT', `block ${cid} failed verification`, { details: { cid: cid.toString(), size } });
    return this.#undecryptable(cid, index, undefined);
  }

  #undecryptable(cid: CID, index: number, cause: unknown): VaultError {
    publishBlockRejected(cid, 'corrupt');
    return new VaultError('BLOCK_CORRUPT', `block ${cid} (chunk ${index} of instance ${this.#cid}) failed decryption`, {
      ...(cause === undefined ? {} : { cause }),
      details: { cid: cid.toString() },
    });
  }

  /**
   * The plaintext bytes of `range` (default: the whole instance) as verified pieces. For a whole
   * instance the SHA-256 is checked at the end; a mismatch throws after the last piece, so a
   * response already under way is broken off rather than completed.
   */
  read(range?: ByteRange, options: ReadOptions = {}): AsyncGenerator<Buffer> {
    return this.prefetch(range, options).pieces();
  }

  /**
   * Starts reading `range` now: its first `readAhead` chunks are fetched and opened at once,
   * before anyone iterates (read() is this, iterated). Lets a caller sending several instances
   * one after the other overlap the next one's first blocks with the current one's last.
   * A prefetch that is never iterated must be `cancel`led, so that its reads settle quietly.
   */
  prefetch(range?: ByteRange, options: ReadOptions = {}): ChunkStream {
    const start = range?.offset ?? 0;
    const end = range ? range.offset + range.length : this.node.size;
    if (start < 0 || end > this.node.size || start > end) {
      throw new VaultError('INSTANCE_CORRUPT', `range ${start}-${end} lies outside instance ${this.#cid} (${this.node.size} bytes)`);
    }
    return new ChunkStream(this, start, end, range === undefined, options);
  }
}

/** The chunks of one range of an opened instance, read ahead in order (OpenedInstance.prefetch). */
export class ChunkStream {
  readonly #instance: OpenedInstance;
  readonly #start: number;
  readonly #end: number;
  readonly #whole: boolean;
  readonly #options: ReadOptions;
  readonly #ahead: number;
  readonly #last: number;
  readonly #pending: Array<Promise<OpenedChunk>> = [];
  /** A whole instance of one chunk: its worker hashes it, not the main thread. */
  readonly #hashOnWorker: boolean;
  #next: number;

  constructor(instance: OpenedInstance, start: number, end: number, whole: boolean, options: ReadOptions) {
    this.#instance = instance;
    this.#start = start;
    this.#end = end;
    this.#whole = whole;
    this.#options = options;
    this.#ahead = Math.max(1, options.readAhead ?? DEFAULT_READ_AHEAD);
    const cs = instance.node.chunkSize;
    this.#next = Math.floor(start / cs);
    this.#last = start === end ? this.#next - 1 : Math.floor((end - 1) / cs);
    this.#hashOnWorker = whole && this.#next === this.#last;
    this.#fill();
  }

  #fill(): void {
    while (this.#pending.length < this.#ahead && this.#next <= this.#last) {
      const p = this.#instance.openChunk(this.#next++, this.#options, this.#hashOnWorker);
      p.catch(() => undefined); // awaited in order by pieces(); avoid an unhandled rejection meanwhile
      this.#pending.push(p);
    }
  }

  /** Lets the reads already started settle, unread (their pooled buffers go back). */
  async cancel(): Promise<void> {
    this.#next = this.#last + 1;
    for (const read of await Promise.allSettled(this.#pending.splice(0))) {
      if (read.status === 'fulfilled') read.value.giveBack?.();
    }
  }

  async *pieces(): AsyncGenerator<Buffer> {
    const { node, envelope } = this.#instance;
    const cs = node.chunkSize;
    const first = Math.floor(this.#start / cs);
    const last = this.#last;
    const hash = this.#whole && !this.#hashOnWorker ? createHash('sha256') : undefined;
    let digest: string | undefined;
    const signal = this.#options.signal;
    try {
      for (let i = first; i <= last; i++) {
        if (signal?.aborted) throw abortError(signal);
        this.#fill();
        const opened = await this.#pending.shift()!;
        const plain = opened.plaintext;
        // (A block whose hash the workers do not check was opened here, unhashed: hash it here.)
        if (this.#hashOnWorker) digest = opened.sha256 ?? createHash('sha256').update(plain).digest('hex');
        const expected = i === Math.floor((node.size - 1) / cs) ? node.size - i * cs : cs;
        if (plain.length !== expected) {
          opened.giveBack?.();
          throw new VaultError('INSTANCE_CORRUPT', `chunk ${i} of instance ${this.#instance.cid} has ${plain.length} bytes, expected ${expected}`);
        }
        const from = i === first ? this.#start - i * cs : 0;
        const to = i === last ? this.#end - i * cs : plain.length;
        const piece = from === 0 && to === plain.length ? plain : plain.subarray(from, to);
        hash?.update(piece);
        if (opened.giveBack !== undefined) this.#options.loans!.lend(piece, opened.giveBack);
        yield piece;
      }
    } finally {
      // Stop early (client gone, error): let outstanding reads settle quietly.
      await this.cancel();
    }
    if (this.#whole && (hash === undefined ? digest : hash.digest('hex')) !== envelope.sha256) {
      throw new VaultError('INSTANCE_CORRUPT', `instance ${this.#instance.cid} does not match the SHA-256 recorded at ingest`, {
        details: { cid: this.#instance.cid.toString() },
      });
    }
  }
}

/** Chunks read ahead across instances by readInstances. Default 8 (8 MiB at the default chunk size). */
export const DEFAULT_INSTANCES_READ_AHEAD = 8;
/**
 * Instances of at most this many bytes get their chunks fetched ahead by readInstances; larger
 * ones are only opened ahead. Default 2 MiB. Measured on 1 GiB studies: prefetching the first
 * chunks of the next 256 MiB instances as well kept those buffers alive across many young-
 * generation collections, so they were promoted and freed only by full collections (26 during
 * one retrieval instead of none): 350 -> 270 MB/s. Small instances are consumed within
 * milliseconds and gain 20% (350 -> 430 instances/s).
 */
export const DEFAULT_PREFETCH_MAX_BYTES = 2 * 1024 * 1024;

/**
 * Whole instances one after the other (a WADO study or series), each verified as read() does,
 * with the next instances opened, and the first chunks of small ones fetched, while the current
 * one is sent: small instances (one chunk each) otherwise cost a store round trip and a crypto
 * round trip apiece with nothing else in flight. At most `readAhead` chunks (default
 * DEFAULT_INSTANCES_READ_AHEAD) are in flight across the instances prepared ahead, besides the
 * current instance's own read-ahead. Errors surface in order, when their instance's turn comes.
 */
export async function* readInstances<R extends InstanceRef>(
  deps: ReaderDeps,
  refs: readonly R[],
  options: ReadOptions = {},
): AsyncGenerator<{ ref: R; opened: OpenedInstance; pieces: AsyncIterable<Buffer> }> {
  const budget = Math.max(1, options.readAhead ?? DEFAULT_INSTANCES_READ_AHEAD);
  const perInstance = Math.min(budget, DEFAULT_READ_AHEAD);
  const readOptions = { ...options, readAhead: perInstance };
  type Prepared = Promise<{ opened: OpenedInstance; stream: ChunkStream | undefined }>;
  const ahead: Array<{ chunks: number; prepared: Prepared }> = [];
  let next = 0;
  let inFlight = 0;
  // Until the first instance is on its way, it alone is opened: opening the others (decoding
  // nodes of a thousand links each, on a cold path) held up a study's first byte by tens of ms.
  let first = true;
  const prepare = (): void => {
    while (next < refs.length && (ahead.length === 0 || (!first && inFlight < budget))) {
      const ref = refs[next++]!;
      const small = ref.size <= DEFAULT_PREFETCH_MAX_BYTES;
      // Its chunk size is known once its node is read; the default is a fair guess for the budget.
      const chunks = small ? Math.min(perInstance, Math.max(1, Math.ceil(ref.size / DEFAULT_CHUNK_SIZE))) : 1;
      inFlight += chunks;
      const prepared: Prepared = openInstance(deps, ref, options).then((opened) => ({
        opened,
        stream: small ? opened.prefetch(undefined, readOptions) : undefined,
      }));
      prepared.catch(() => undefined); // reported when its turn comes
      ahead.push({ chunks, prepared });
    }
  };
  try {
    for (const ref of refs) {
      prepare();
      const item = ahead.shift()!;
      inFlight -= item.chunks;
      const { opened, stream } = await item.prepared;
      const pieces = (stream ?? opened.prefetch(undefined, readOptions)).pieces();
      if (first) {
        yield {
          ref,
          opened,
          pieces: afterFirst(pieces, () => {
            first = false;
            prepare();
          }),
        };
      } else {
        prepare();
        yield { ref, opened, pieces };
      }
    }
  } finally {
    await Promise.allSettled(ahead.splice(0).map(async (a) => (await a.prepared).stream?.cancel()));
  }
}

/**
 * `pieces`, calling `then` once the first has been taken. A consumer that stops before that
 * needs nothing more opened; the loop in readInstances opens the next instance regardless.
 */
async function* afterFirst(pieces: AsyncGenerator<Buffer>, then: () => void): AsyncGenerator<Buffer> {
  let called = false;
  for await (const piece of pieces) {
    yield piece;
    if (!called) {
      called = true;
      then();
    }
  }
}

/** Fetches, verifies and decodes an instance's node; checks it is the instance the catalog names. */
export async function openInstance(deps: ReaderDeps, ref: InstanceRef, options: ReadOptions = {}): Promise<OpenedInstance> {
  const cid = CID.parse(ref.nodeCid);
  const bytes = await getVerified(deps.store, cid, options.signal ? { signal: options.signal } : {});
  const node = decodeInstanceNode(bytes, cid);
  const dataKey = deps.keys.require(ref.studyInstanceUID);
  const key = instanceKeyOf(dataKey.key, node);
  // Format 2: the envelope's associated data is the node's other fields, so a node edited in any
  // of them (its size, its links) is refused here, before any chunk is read.
  let envelope: InstanceEnvelope;
  try {
    envelope = openInstanceEnvelopeWithKey(key, node);
  } catch (cause) {
    publishBlockRejected(cid, 'corrupt');
    throw new VaultError('BLOCK_CORRUPT', `instance node ${cid}: its sealed envelope does not open (a field edited, or not this study's node)`, {
      cause,
      details: { cid: cid.toString() },
    });
  }
  // The catalog says what is served (metadata, search, frame offsets): a row edited on disk to
  // name another instance's node, or this node under other UIDs, is refused here.
  const mismatch = [
    envelope.sha256 !== ref.sha256 && 'sha256',
    node.size !== ref.size && 'size',
    envelope.studyInstanceUID !== ref.studyInstanceUID && 'studyInstanceUID',
    ref.seriesInstanceUID !== undefined && envelope.seriesInstanceUID !== ref.seriesInstanceUID && 'seriesInstanceUID',
    ref.sopInstanceUID !== undefined && envelope.sopInstanceUID !== ref.sopInstanceUID && 'sopInstanceUID',
  ].filter((f): f is string => f !== false);
  if (mismatch.length > 0) {
    throw new VaultError('INSTANCE_CORRUPT', `instance node ${cid} does not match its catalog entry (${mismatch.join(', ')})`, {
      details: { cid: ref.nodeCid, fields: mismatch },
    });
  }
  return new OpenedInstance(deps.store, cid, node, envelope, key, deps.crypto ?? sharedCryptoPool(), options.signal);
}

/** A store read of `cid` (get or getInto), with a missing block named the way getVerified names it. */
async function getBlock<T>(read: () => Promise<T>, cid: CID): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (isVaultError(err, 'BLOCK_NOT_FOUND')) publishBlockRejected(cid, 'missing');
    // Stores name the block already; a store that does not is given the CID here.
    if (isVaultError(err, 'BLOCK_NOT_FOUND') && err.details?.cid !== cid.toString()) {
      throw new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found`, { cause: err, details: { cid: cid.toString() } });
    }
    throw err;
  }
}
