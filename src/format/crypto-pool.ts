// AES-256-GCM and SHA-256 on worker threads (src/format/crypto-worker.js). The main thread keeps HTTP,
// multipart parsing and the DICOM scanner; sealing a chunk (the instance's running plaintext
// SHA-256, GCM, and the SHA-256 of the ciphertext for its CID) and verifying + opening a block
// read back run on workers, several chunks at once.
//
// Why workers, and why reused buffers: a 1 MiB chunk costs ~1 ms of crypto, which on the main
// thread serialises with parsing. Worse, every fresh 1 MiB ArrayBuffer the main isolate keeps
// counts as external memory, and V8 starts a full mark-compact of the (tens of MiB) main heap every
// few tens of MiB of it: in-thread sealing allocated two per chunk, which cost more CPU than the
// crypto. Chunks are therefore assembled in pooled slots, moved (transferred, not copied) to a
// worker that seals them in place, moved back, written to the store from the slot and reused: no
// main-thread allocation per chunk, and a moved-out-and-back buffer does not grow V8's external
// memory count. Reads of a WADO response do the same (openInSlot): the block is read into a slot
// and comes back as plaintext; other reads (open) move the block out and get the plaintext moved
// back in a buffer of its own.
// The pooled slots lie in aligned shared memory (src/core/aligned-memory.ts): the file store writes
// them with O_DIRECT, which saves a copy into the page cache that cost more than the crypto, and
// being shared they need no moving at all. Copying into shared memory is slower than into an
// ArrayBuffer (23 against 44 GB/s here: ~45 ms per GiB received), far less than what it saves.
// Slots beyond the pool are ordinary ArrayBuffers, moved to the worker and back.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { VaultError } from '../core/errors.ts';
import { allocateAligned } from '../core/aligned-memory.ts';

/** Worker threads. Default: one per core, at most 4 (each costs ~8 MiB of RSS). */
export const DEFAULT_CRYPTO_WORKERS = Math.max(1, Math.min(4, availableParallelism()));
/**
 * Slots in aligned shared memory per slot size, and ordinary idle slots kept for reuse at most.
 * Default 64 (64 MiB of address space at the default chunk size; RSS only for those used): four
 * STOW requests at once, each with its window of 16 writes, still write from aligned memory.
 */
export const DEFAULT_POOLED_SLOTS = 64;
export const TAG_BYTES = 16;

const EMPTY = Buffer.alloc(0);

export interface CryptoPoolOptions {
  /** Worker threads, started on first use. Default DEFAULT_CRYPTO_WORKERS. */
  workers?: number;
  /**
   * Slots per size in aligned shared memory (allocated with the first slot of that size), and
   * idle ordinary slots kept for reuse; more are allocated when needed and left to GC. Default
   * DEFAULT_POOLED_SLOTS.
   */
  pooledSlots?: number;
}

/** Hash functions a block's CID can use that the workers check; others are checked in-thread. */
export type BlockHash = 'sha256' | 'sha512';

export type OpenResult = { plaintext: Buffer; sha256?: string } | { failure: 'hash' | 'short' | 'tag' };

/**
 * A SHA-256 over the plaintext of consecutive seals (one instance's chunks, in order). It lives
 * on one worker, which hashes each chunk's plaintext just before sealing it in place: the main
 * thread, which reads every byte off the socket, is the ingest's sequential bottleneck, and this
 * hash was the largest part of its work. A worker handles its messages in order, so the chunks of
 * one stream (and its digest) are hashed in the order they were sent.
 */
export interface PlaintextHash {
  readonly id: number;
}

/**
 * A chunk's buffer: `capacity` plaintext bytes plus room for the tag. Owned by one user from
 * `takeSlot` until `giveSlot`; never given back while a seal or a block write still reads it.
 * While a seal runs its memory is with the worker and `bytes` is empty; read `bytes` afresh
 * after the seal (it is a new view of the same memory).
 */
export class Slot {
  readonly capacity: number;
  /** All of the slot (capacity + TAG_BYTES). */
  bytes: Buffer;
  /** A slot of aligned shared memory: its view, for good (workers use it in place). */
  readonly shared: Buffer | undefined;

  /** An ordinary slot, or one over `shared` (capacity + TAG_BYTES bytes of aligned shared memory). */
  constructor(capacity: number, shared?: Buffer) {
    if (shared !== undefined && shared.byteLength !== capacity + TAG_BYTES) throw new RangeError('a shared slot must hold capacity + TAG_BYTES bytes');
    this.capacity = capacity;
    this.shared = shared;
    this.bytes = shared ?? Buffer.from(new ArrayBuffer(capacity + TAG_BYTES));
  }

  /** False once its memory was lost with a failed seal (never, for a shared slot). */
  get usable(): boolean {
    return this.bytes.byteLength === this.capacity + TAG_BYTES;
  }

  /**
   * Hands the slot's memory to a worker: what to post, and what to transfer (nothing, for a
   * shared slot). `bytes` is empty until `back`, so that a use while the worker has it fails.
   */
  lend(): { buffer: ArrayBuffer | SharedArrayBuffer; offset: number; transfer: ArrayBuffer[] } {
    const { buffer, byteOffset } = this.bytes;
    this.bytes = EMPTY;
    return { buffer, offset: byteOffset, transfer: this.shared === undefined ? [buffer as ArrayBuffer] : [] };
  }

  /** The memory is back from the worker: `buffer` as it was moved back (ordinary slots). */
  back(buffer: ArrayBuffer | undefined): void {
    if (this.shared !== undefined) this.bytes = this.shared;
    else if (buffer !== undefined) this.bytes = Buffer.from(buffer);
  }
}

type Reply = { id: number; digest?: Uint8Array; hex?: string; buffer?: ArrayBuffer; plain?: ArrayBuffer; failure?: 'hash' | 'short' | 'tag'; error?: string };

interface Task {
  resolve(reply: Reply): void;
  reject(err: Error): void;
}

interface PoolWorker {
  worker: Worker;
  tasks: Map<number, Task>;
  /** Plaintext hash streams that live on this worker. */
  streams: number;
}

interface Stream extends PlaintextHash {
  w: PoolWorker;
  open: boolean;
  /** Set by a `last` seal until `digest` takes it. */
  final?: Promise<string>;
}

export class CryptoPool {
  readonly #size: number;
  readonly #pooledSlots: number;
  readonly #workers: PoolWorker[] = [];
  /** Idle slots by capacity: the shared ones (all of them, always taken back) and ordinary ones. */
  readonly #slots = new Map<number, { shared: Slot[]; plain: Slot[] }>();
  #nextId = 1;
  #closed = false;

  constructor(options: CryptoPoolOptions = {}) {
    const size = options.workers ?? DEFAULT_CRYPTO_WORKERS;
    const pooled = options.pooledSlots ?? DEFAULT_POOLED_SLOTS;
    if (!Number.isInteger(size) || size < 1 || size > 64) throw new VaultError('CONFIG_INVALID', 'CryptoPool: workers must be an integer from 1 to 64');
    if (!Number.isInteger(pooled) || pooled < 0) throw new VaultError('CONFIG_INVALID', 'CryptoPool: pooledSlots must be a non-negative integer');
    this.#size = size;
    this.#pooledSlots = pooled;
  }

  /** Workers running now (they start on demand). */
  get workers(): number {
    return this.#workers.length;
  }

  /**
   * Starts every worker now rather than on first use. A worker takes ~50 ms to start here, which
   * the first request after a start would otherwise wait for (a cold WADO's first byte: ~80 ms
   * instead of ~15 ms). Idle workers do not keep the process alive.
   */
  warm(): void {
    if (this.#closed) return;
    while (this.#workers.length < this.#size) this.#spawn();
  }

  /**
   * A slot for a chunk of up to `capacity` plaintext bytes: a shared one if one is free, else a
   * pooled ordinary one, else a new one. Never waits.
   */
  takeSlot(capacity: number): Slot {
    const free = this.#idle(capacity);
    return free.shared.pop() ?? free.plain.pop() ?? new Slot(capacity);
  }

  /** Returns a slot for reuse; the caller must no longer read or write it. */
  giveSlot(slot: Slot): void {
    if (!slot.usable) return;
    const free = this.#idle(slot.capacity);
    if (slot.shared !== undefined) {
      if (!free.shared.includes(slot)) free.shared.push(slot);
    } else if (free.shared.length + free.plain.length < this.#pooledSlots && !free.plain.includes(slot)) {
      free.plain.push(slot);
    }
  }

  /** The idle slots of a capacity; the shared ones are made on first use. */
  #idle(capacity: number): { shared: Slot[]; plain: Slot[] } {
    let free = this.#slots.get(capacity);
    if (free === undefined) {
      let shared: Slot[] = [];
      if (this.#pooledSlots > 0) {
        try {
          // Reversed: pop() hands out the lowest addresses first, so a few slots in use touch few pages.
          shared = allocateAligned(this.#pooledSlots, capacity + TAG_BYTES)
            .map((bytes) => new Slot(capacity, bytes))
            .reverse();
        } catch {
          // V8 could not map it (address space, a platform without shared WebAssembly memory): ordinary slots only.
        }
      }
      free = { shared, plain: [] };
      this.#slots.set(capacity, free);
    }
    return free;
  }

  /**
   * Seals chunk `index` in place: the slot's first `length` bytes (plaintext) become
   * ciphertext || tag (`length` + 16 bytes), as `sealChunk` (seal.ts) would return them. Resolves
   * with the SHA-256 of those bytes (the block's multihash digest). If it rejects, the slot's
   * memory may be lost (`usable` tells). With `last`, this is the final seal of `plaintextHash`:
   * the worker ends the hash with it, and `digest` then needs no round trip of its own (for an
   * instance of one chunk, that halves the hand-offs between threads).
   */
  async seal(
    key: Uint8Array,
    index: number,
    slot: Slot,
    length: number,
    plaintextHash?: PlaintextHash,
    options: { last?: boolean; aad?: Uint8Array } = {},
  ): Promise<Uint8Array> {
    if (length > slot.capacity || !slot.usable)
      throw new VaultError('INTERNAL', `seal of ${length} bytes in a slot of ${slot.capacity} (usable: ${slot.usable})`);
    const stream = plaintextHash === undefined ? undefined : this.#stream(plaintextHash);
    const last = stream !== undefined && options.last === true;
    const message = {
      op: 'seal',
      key,
      index,
      length,
      ...(options.aad === undefined ? {} : { aad: options.aad }),
      ...(stream ? { hash: stream.id } : {}),
      ...(last ? { end: true } : {}),
    };
    const run = this.#runInSlot(slot, message, stream?.w);
    if (last) {
      this.#end(stream);
      stream.final = run.then((r) => r.hex!);
      stream.final.catch(() => undefined); // reported by digest(), or by this seal
    }
    return (await run).digest!;
  }

  /** Starts a plaintext hash; feed it through `seal`, end it with `digest` or `dropHash`. */
  startHash(): PlaintextHash {
    if (this.#closed) throw new VaultError('INTERNAL', 'the crypto pool is closed');
    const w = this.#pick((x) => x.streams);
    w.streams++;
    const stream: Stream = { id: this.#nextId++, w, open: true };
    return stream;
  }

  /** The SHA-256 (hex) of every plaintext sealed with `hash`, once those seals are done. Ends it. */
  async digest(hash: PlaintextHash): Promise<string> {
    const ended = hash as Stream;
    if (ended.final !== undefined) {
      const final = ended.final;
      delete ended.final;
      return final;
    }
    const stream = this.#stream(hash);
    this.#end(stream);
    const reply = await this.#run({ op: 'digest', hash: stream.id }, [], stream.w);
    return reply.hex!;
  }

  /** Ends a plaintext hash without its digest (an ingest that failed). */
  dropHash(hash: PlaintextHash): void {
    const stream = hash as Stream;
    if (!stream.open) return;
    this.#end(stream);
    if (this.#workers.includes(stream.w)) stream.w.worker.postMessage({ op: 'drop', hash: stream.id });
  }

  #stream(hash: PlaintextHash): Stream {
    const stream = hash as Stream;
    if (!stream.open) throw new VaultError('INTERNAL', 'this plaintext hash has ended');
    if (!this.#workers.includes(stream.w)) throw new VaultError('INTERNAL', 'the crypto worker holding this plaintext hash is gone');
    return stream;
  }

  #end(stream: Stream): void {
    stream.open = false;
    stream.w.streams--;
  }

  /**
   * Checks `block` against `digest` (the CID's multihash digest, by `hash`), then its GCM tag as
   * chunk `index` under `key`, and decrypts it; with `plaintextSha256`, also hashes the plaintext
   * there (an instance of one chunk: its whole SHA-256, off the main thread). Takes ownership of
   * `block`: a block that is the whole of its (non-shared) ArrayBuffer is moved to the worker and
   * unusable afterwards.
   */
  async open(
    key: Uint8Array,
    index: number,
    block: Uint8Array,
    hash: BlockHash,
    digest: Uint8Array,
    options: { plaintextSha256?: boolean; aad?: Uint8Array } = {},
  ): Promise<OpenResult> {
    // A view into a larger buffer (Buffer's shared slab, a store's own cache) is copied: moving
    // it would detach memory that is not ours.
    const whole = block.buffer instanceof ArrayBuffer && block.byteOffset === 0 && block.byteLength === block.buffer.byteLength;
    const buffer = whole ? (block.buffer as ArrayBuffer) : (block.buffer.slice(block.byteOffset, block.byteOffset + block.byteLength) as ArrayBuffer);
    const reply = await this.#run(
      {
        op: 'open',
        key,
        index,
        block: buffer,
        algorithm: hash,
        digest,
        ...(options.aad === undefined ? {} : { aad: options.aad }),
        ...(options.plaintextSha256 === true ? { plainDigest: true } : {}),
      },
      [buffer],
      undefined,
    );
    if (reply.failure !== undefined) return { failure: reply.failure };
    return { plaintext: Buffer.from(reply.plain!), ...(reply.hex === undefined ? {} : { sha256: reply.hex }) };
  }

  /**
   * As `open`, for a block read into a slot (its first `length` bytes): the slot moves to a
   * worker and back with the plaintext at its start (`length` - 16 bytes), so that reading a
   * block allocates nothing on this thread. The slot comes back on failure too; if the call
   * rejects, its memory may be lost (`usable` tells).
   */
  async openInSlot(
    key: Uint8Array,
    index: number,
    slot: Slot,
    length: number,
    hash: BlockHash,
    digest: Uint8Array,
    options: { plaintextSha256?: boolean; aad?: Uint8Array } = {},
  ): Promise<{ plaintextLength: number; sha256?: string } | { failure: 'hash' | 'short' | 'tag' }> {
    if (length > slot.bytes.byteLength || !slot.usable)
      throw new VaultError('INTERNAL', `open of ${length} bytes in a slot of ${slot.capacity} (usable: ${slot.usable})`);
    const message = {
      op: 'openInPlace',
      key,
      index,
      length,
      algorithm: hash,
      digest,
      ...(options.aad === undefined ? {} : { aad: options.aad }),
      ...(options.plaintextSha256 === true ? { plainDigest: true } : {}),
    };
    const reply = await this.#runInSlot(slot, message, undefined);
    if (reply.failure !== undefined) return { failure: reply.failure };
    return { plaintextLength: length - TAG_BYTES, ...(reply.hex === undefined ? {} : { sha256: reply.hex }) };
  }

  /** Stops the workers; tasks still running reject. Later calls throw. */
  async close(): Promise<void> {
    this.#closed = true;
    const workers = this.#workers.splice(0);
    await Promise.all(
      workers.map(async (w) => {
        this.#fail(w, new VaultError('INTERNAL', 'the crypto pool was closed'));
        await w.worker.terminate();
      }),
    );
    this.#slots.clear();
  }

  /**
   * Runs a task on a slot's memory (lent to the worker with the message, back with the reply). A
   * shared slot is back even if the task never ran; an ordinary one's memory is then lost.
   */
  #runInSlot(slot: Slot, message: Record<string, unknown>, on: PoolWorker | undefined): Promise<Reply> {
    const { transfer, ...memory } = slot.lend();
    const run = this.#run({ ...message, ...memory }, transfer, on, (r) => slot.back(r.buffer));
    if (slot.shared !== undefined) run.catch(() => slot.back(undefined));
    return run;
  }

  /**
   * Runs a task on `on` (a plaintext hash's worker) or the least busy one. `onReply` sees every
   * reply, failed ones too (they may hand memory back).
   */
  async #run(message: Record<string, unknown>, transfer: ArrayBuffer[], on: PoolWorker | undefined, onReply?: (reply: Reply) => void): Promise<Reply> {
    if (this.#closed) throw new VaultError('INTERNAL', 'the crypto pool is closed');
    const w = on ?? this.#pick((x) => x.tasks.size);
    const id = this.#nextId++;
    const reply = await new Promise<Reply>((resolve, reject) => {
      if (w.tasks.size === 0) w.worker.ref(); // pending work keeps the process alive; idle workers do not
      w.tasks.set(id, { resolve, reject });
      try {
        w.worker.postMessage({ id, ...message }, transfer);
      } catch (err) {
        this.#settle(w, id);
        reject(new VaultError('INTERNAL', 'cannot send a task to a crypto worker', { cause: err }));
      }
    });
    onReply?.(reply);
    if (reply.error !== undefined) throw new VaultError('INTERNAL', `crypto worker: ${reply.error}`);
    return reply;
  }

  /** The least loaded worker; a new one while fewer than the maximum run and all are loaded. */
  #pick(load: (w: PoolWorker) => number): PoolWorker {
    let best: PoolWorker | undefined;
    for (const w of this.#workers) if (best === undefined || load(w) < load(best)) best = w;
    if (best !== undefined && (load(best) === 0 || this.#workers.length >= this.#size)) return best;
    return this.#spawn();
  }

  #spawn(): PoolWorker {
    const worker = new Worker(new URL('./crypto-worker.js', import.meta.url), {
      // Not the process's flags: some make no sense in a worker (--input-type fails it).
      execArgv: [],
      // The worker holds a few MiB of JS objects at most; its 1 MiB buffers are external memory.
      resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 },
    });
    const w: PoolWorker = { worker, tasks: new Map(), streams: 0 };
    worker.on('message', (reply: Reply) => {
      const task = this.#settle(w, reply.id);
      task?.resolve(reply);
    });
    const gone = (err: Error): void => {
      const i = this.#workers.indexOf(w);
      if (i >= 0) this.#workers.splice(i, 1);
      this.#fail(w, err);
    };
    worker.on('error', (err) => gone(new VaultError('INTERNAL', 'a crypto worker failed', { cause: err })));
    worker.on('exit', (code) => gone(new VaultError('INTERNAL', `a crypto worker exited (code ${code})`)));
    // After the listeners: adding a 'message' listener refs the worker again.
    worker.unref();
    this.#workers.push(w);
    return w;
  }

  #settle(w: PoolWorker, id: number): Task | undefined {
    const task = w.tasks.get(id);
    w.tasks.delete(id);
    if (task !== undefined && w.tasks.size === 0) w.worker.unref();
    return task;
  }

  #fail(w: PoolWorker, err: Error): void {
    const tasks = [...w.tasks.values()];
    w.tasks.clear();
    w.worker.unref();
    for (const t of tasks) t.reject(err);
  }
}

let shared: CryptoPool | undefined;

/**
 * The process's pool, created on first use, for callers that are not handed one. Its workers
 * keep the process alive only while they have work, so nothing needs to close it.
 */
export function sharedCryptoPool(): CryptoPool {
  shared ??= new CryptoPool();
  return shared;
}
