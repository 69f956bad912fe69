// The tamper-evident audit log: entries are sealed (entry.ts), appended in batches as leaves of an
// RFC 9162 Merkle tree (tree.ts) in one durable transaction per batch, and a signed head
// (head.ts) is made at least every `headIntervalMs` while entries arrive, each linked to the one
// before by a consistency proof.
//
// Batching: everything recorded during one turn of the event loop goes into the next batch (a
// setImmediate), so under load many requests share one transaction and one fsync, and an idle
// node writes each entry at once. `append` resolves once its entry is on disk: the access seam
// awaits it before a response starts (an access is never served unrecorded; a log that cannot be
// written refuses service). `note` records without waiting (how a request ended, refusals).
//
// Where batches are written: on this thread (no `writer`: CLIs, tests), or by a writer thread
// (writer.ts, the node), which seals and commits while this thread goes on serving; its commits
// group whatever batches arrived while the previous one was being written.
import { EventEmitter } from 'node:events';
import { VaultError } from '../core/errors.ts';
import { appendSealed, type SealItem } from './batch.ts';
import type { AuditRecord } from './entry.ts';
import { type HeadSigner, headCid, headHash } from './head.ts';
import type { AuditLogStore, StoredHead } from './store.ts';
import { NODE_SUBJECT, type AuditKeyStore } from './subject-keys.ts';
import { consistencyProof, Frontier, inclusionProof, type NodeReader } from './tree.ts';
import type { AuditWriter } from './writer.ts';

/** A head is signed at least this often while entries arrive. 2 s. */
export const DEFAULT_HEAD_INTERVAL_MS = 2_000;
/** Entries per transaction at most. */
export const DEFAULT_MAX_BATCH = 10_000;
/** Entries recorded without waiting (`note`) are written within this many ms, or with the next `append` if sooner. 25 ms. */
export const DEFAULT_NOTE_DELAY_MS = 25;
/** Entries waiting beyond this: refusals are counted into one summary entry instead of one entry each. */
export const DEFAULT_MAX_QUEUED = 50_000;

export interface AuditLogDeps {
  store: AuditLogStore;
  keys: AuditKeyStore;
  signer: HeadSigner;
  /** Names the log in its heads: the node's id. */
  origin: string;
  now?: () => number;
  /** Writes the batches off this thread (the node's writer thread); without it, they are written here. */
  writer?: AuditWriter;
}

export interface AuditLogOptions {
  /** ms between heads while entries arrive; 0: a head after every batch (tests). Default DEFAULT_HEAD_INTERVAL_MS. */
  headIntervalMs?: number;
  maxBatch?: number;
  maxQueued?: number;
  /** Default DEFAULT_NOTE_DELAY_MS. */
  noteDelayMs?: number;
}

export interface AuditLogEvents {
  head: [StoredHead];
  /** A batch could not be written: its entries' appends were rejected. */
  failed: [VaultError];
}

interface Pending {
  record: AuditRecord;
  subject: string;
  time: number;
  resolve?: (index: number) => void;
  reject?: (err: VaultError) => void;
  /** Taken from the queue to be sealed: the record can no longer change. */
  taken?: boolean;
}

/** An entry appended and, until its batch is taken to be written, still open to change. */
export interface OpenAppend {
  /** Resolves with the entry's index once it is on disk (as `append`). */
  written: Promise<number>;
  /** Changes the record if it is not sealed yet; false (and nothing changed) once it is. */
  amend(change: (record: AuditRecord) => void): boolean;
}

export class AuditLog extends EventEmitter<AuditLogEvents> {
  readonly #deps: AuditLogDeps;
  readonly #now: () => number;
  readonly #headIntervalMs: number;
  readonly #maxBatch: number;
  readonly #maxQueued: number;
  readonly #read: NodeReader;
  #frontier: Frontier | undefined;
  #queue: Pending[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  #noteTimer: NodeJS.Timeout | undefined;
  readonly #noteDelayMs: number;
  /** Refusals counted while the queue was full, by reason. */
  #refusals = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #lastFailure: VaultError | undefined;
  #closed = false;
  /** Entries handed to the writer thread and not yet answered: with the queue, how far behind the log is. */
  #posted = 0;

  constructor(deps: AuditLogDeps, options: AuditLogOptions = {}) {
    super();
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#headIntervalMs = options.headIntervalMs ?? DEFAULT_HEAD_INTERVAL_MS;
    this.#maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH;
    this.#maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.#noteDelayMs = options.noteDelayMs ?? DEFAULT_NOTE_DELAY_MS;
    this.#read = (level, index) => deps.store.node(level, index);
    if (this.#headIntervalMs > 0) {
      this.#timer = setInterval(() => this.#signQuietly(), this.#headIntervalMs);
      this.#timer.unref();
    }
  }

  get store(): AuditLogStore {
    return this.#deps.store;
  }

  get publicKey() {
    return this.#deps.signer.publicKey;
  }

  /** The last write failure, until a batch is written again. */
  get failure(): VaultError | undefined {
    return this.#lastFailure;
  }

  /** Records an entry; resolves with its index once it is on disk, rejects (AUDIT_UNAVAILABLE) when the log cannot be written. */
  append(record: AuditRecord, subject: string = NODE_SUBJECT): Promise<number> {
    if (this.#closed) return Promise.reject(new VaultError('AUDIT_UNAVAILABLE', 'the audit log is closed'));
    return new Promise((resolve, reject) => {
      this.#queue.push({ record, subject, time: this.#now(), resolve, reject });
      this.#schedule();
    });
  }

  /**
   * `append`, with the record left open to change until the batch it waits in is taken to be
   * written (the next turn of the event loop at the earliest). The access seam folds a response
   * produced meanwhile into its access entry: one entry instead of an access and an outcome.
   */
  appendOpen(record: AuditRecord, subject: string = NODE_SUBJECT): OpenAppend {
    if (this.#closed) return { written: Promise.reject(new VaultError('AUDIT_UNAVAILABLE', 'the audit log is closed')), amend: () => false };
    const pending: Pending = { record: { ...record, what: { ...record.what } }, subject, time: this.#now() };
    const written = new Promise<number>((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
    });
    this.#queue.push(pending);
    this.#schedule();
    return {
      written,
      amend: (change) => {
        if (pending.taken === true) return false;
        change(pending.record);
        return true;
      },
    };
  }

  /** Records an entry without waiting. A refusal that finds the queue full is counted in a summary entry instead. */
  note(record: AuditRecord, subject: string = NODE_SUBJECT): void {
    if (this.#closed) return;
    if (record.kind === 'refused' && this.#queue.length + this.#posted >= this.#maxQueued) {
      const why = record.why ?? 'refused';
      this.#refusals.set(why, (this.#refusals.get(why) ?? 0) + 1);
      this.#scheduleNote();
      return;
    }
    this.#queue.push({ record, subject, time: this.#now() });
    this.#scheduleNote();
  }

  // A note need not be on disk before anything: it waits a little for the next append (a request
  // about to be served) to share its transaction, so that a request costs one commit, not two.
  #scheduleNote(): void {
    if (this.#noteDelayMs === 0 || this.#queue.length >= this.#maxBatch) {
      this.#schedule();
      return;
    }
    if (this.#noteTimer === undefined && this.#scheduled === undefined) {
      this.#noteTimer = setTimeout(() => this.#drain(), this.#noteDelayMs);
      this.#noteTimer.unref();
    }
  }

  #schedule(): void {
    if (this.#scheduled === undefined) this.#scheduled = setImmediate(() => this.#drain());
  }

  #drain(): void {
    this.#scheduled = undefined;
    clearTimeout(this.#noteTimer);
    this.#noteTimer = undefined;
    this.#flush();
  }

  /** Writes what waits now, in batches, and waits for it (a writer thread's too); returns how many entries were handed on. */
  flush(): number {
    const n = this.#flush();
    this.#deps.writer?.settleSync();
    return n;
  }

  #flush(): number {
    let written = 0;
    while (this.#queue.length > 0 || this.#refusals.size > 0) {
      const items = this.#queue.splice(0, this.#maxBatch);
      for (const p of items) p.taken = true;
      if (this.#refusals.size > 0 && items.length < this.#maxBatch) {
        const counts = Object.fromEntries(this.#refusals);
        this.#refusals = new Map();
        items.push({
          record: {
            kind: 'summary',
            who: { id: 'node' },
            what: { action: 'refusals', counts },
            why: 'refused requests counted, not recorded one by one: the audit log was behind',
          },
          subject: NODE_SUBJECT,
          time: this.#now(),
        });
      }
      const writer = this.#deps.writer;
      if (writer !== undefined) {
        this.#post(writer, items);
        written += items.length;
        continue;
      }
      try {
        this.#write(items);
        this.#lastFailure = undefined;
      } catch (err) {
        this.#failed(items, err);
        break;
      }
      written += items.length;
    }
    if (written > 0 && this.#headIntervalMs === 0 && this.#deps.writer === undefined) this.#signQuietly();
    return written;
  }

  #sealItems(items: Pending[]): SealItem[] {
    return items.map((p) => {
      const key = this.#deps.keys.key(p.subject);
      // The patient's key was destroyed (erased): what still concerns them is the node's to record.
      if (key === undefined) return { record: p.record, subject: NODE_SUBJECT, time: p.time, key: this.#deps.keys.key(NODE_SUBJECT)! };
      return { record: p.record, subject: p.subject, time: p.time, key };
    });
  }

  #write(items: Pending[]): void {
    const { batch, frontier } = appendSealed(this.#deps.store, this.#frontier, this.#sealItems(items));
    this.#frontier = frontier;
    for (const [i, p] of items.entries()) p.resolve?.(batch.entries[i]!.index);
  }

  #failed(items: Pending[], err: unknown): void {
    const error =
      err instanceof VaultError && err.code === 'AUDIT_UNAVAILABLE'
        ? err
        : new VaultError('AUDIT_UNAVAILABLE', `the audit log cannot be written: ${(err as Error).message}`, { cause: err });
    this.#lastFailure = error;
    for (const p of items) p.reject?.(error);
    this.emit('failed', error);
  }

  // To the writer thread: answered later, in order; this thread does not wait.
  #post(writer: AuditWriter, items: Pending[]): void {
    let sealed: SealItem[];
    try {
      sealed = this.#sealItems(items);
    } catch (err) {
      this.#failed(items, err);
      return;
    }
    this.#posted += items.length;
    writer.write(sealed).then(
      (first) => {
        this.#posted -= items.length;
        this.#lastFailure = undefined;
        for (const [i, p] of items.entries()) p.resolve?.(first + i);
        if (this.#headIntervalMs === 0) this.#signQuietly();
      },
      (err: unknown) => {
        this.#posted -= items.length;
        this.#failed(items, err);
      },
    );
  }

  /** Entries in the log (written). */
  get size(): number {
    return this.#frontier?.size ?? this.#deps.store.size();
  }

  /**
   * Signs a head over the log as it stands, linked to the latest head by a consistency proof;
   * undefined when nothing was appended since.
   */
  signHead(): StoredHead | undefined {
    const { store, signer, origin } = this.#deps;
    const head = store.addHead((last, size) => {
      if (size === 0 || (last !== undefined && last.size >= size)) return undefined;
      const f = this.#frontier?.size === size ? this.#frontier : Frontier.of(this.#read, size);
      const signed = signer.sign({
        origin,
        size,
        root: f.root(),
        time: new Date(this.#now()).toISOString(),
        prevSize: last?.size ?? 0,
        prevHash: last === undefined ? undefined : headHash(last.body),
      });
      return { ...signed, cid: headCid(signed.body).toString(), proof: last === undefined ? [] : consistencyProof(this.#read, last.size, size) };
    });
    if (head !== undefined) this.emit('head', head);
    return head;
  }

  #signQuietly(): void {
    try {
      this.signHead();
    } catch (err) {
      const error = new VaultError('AUDIT_UNAVAILABLE', `an audit head could not be signed: ${(err as Error).message}`, { cause: err });
      this.#lastFailure = error;
      this.emit('failed', error);
    }
  }

  /** Inclusion path of entry `index` in the tree of `size` entries. */
  inclusion(index: number, size: number): Uint8Array[] {
    return inclusionProof(this.#read, index, size);
  }

  /** Consistency proof from the tree of `first` entries to the tree of `second`. */
  consistency(first: number, second: number): Uint8Array[] {
    if (second > this.#deps.store.size()) throw new VaultError('NOT_FOUND', `the audit log has fewer than ${second} entries`);
    return consistencyProof(this.#read, first, second);
  }

  /** Writes what waits, signs a last head, stops the head timer. The stores stay open (their owner closes them). */
  close(): void {
    if (this.#closed) return;
    clearInterval(this.#timer);
    if (this.#scheduled !== undefined) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    clearTimeout(this.#noteTimer);
    this.#noteTimer = undefined;
    this.flush();
    this.#signQuietly();
    this.#closed = true;
  }
}
