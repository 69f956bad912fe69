// The tamper-evident audit log: entries are sealed (entry.ts), appended in batches as leaves of an
// RFC 9162 Merkle tree (tree.ts) in one durable transaction per batch, and a signed head
// (head.ts) is made at least every `headIntervalMs` while entries arrive, each linked to the one
// before by a consistency proof.
//
// Batching: everything recorded during one turn of the event loop goes into the next batch (a
// setImmediate), so under load many requests share one transaction and one fsync, and an idle
// node writes each entry at once. `append` resolves once its entry is on disk: the access seam
// awaits it before serving (an access is never served unrecorded; a log that cannot be written
// refuses service). `note` records without waiting (how a request ended, refusals).
import { EventEmitter } from 'node:events';
import { VaultError } from '../core/errors.ts';
import { type AuditRecord, sealLeaf } from './entry.ts';
import { type HeadSigner, headCid, headHash } from './head.ts';
import type { AppendBatch, AuditLogStore, StoredEntry, StoredHead } from './store.ts';
import { NODE_SUBJECT, type AuditKeyStore } from './subject-keys.ts';
import { consistencyProof, Frontier, inclusionProof, leafHash, type NodeReader, type TreeNode } from './tree.ts';

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

  /** Records an entry without waiting. A refusal that finds the queue full is counted in a summary entry instead. */
  note(record: AuditRecord, subject: string = NODE_SUBJECT): void {
    if (this.#closed) return;
    if (record.kind === 'refused' && this.#queue.length >= this.#maxQueued) {
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
    this.flush();
  }

  /** Writes what waits now, in batches; returns how many entries were written. */
  flush(): number {
    let written = 0;
    while (this.#queue.length > 0 || this.#refusals.size > 0) {
      const items = this.#queue.splice(0, this.#maxBatch);
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
      try {
        this.#write(items);
        this.#lastFailure = undefined;
      } catch (err) {
        const error =
          err instanceof VaultError && err.code === 'AUDIT_UNAVAILABLE'
            ? err
            : new VaultError('AUDIT_UNAVAILABLE', `the audit log cannot be written: ${(err as Error).message}`, { cause: err });
        this.#lastFailure = error;
        for (const p of items) p.reject?.(error);
        this.emit('failed', error);
        break;
      }
      written += items.length;
    }
    if (written > 0 && this.#headIntervalMs === 0) this.#signQuietly();
    return written;
  }

  #write(items: Pending[]): void {
    let after: Frontier | undefined;
    const batch = this.#deps.store.append((size) => {
      // Another process (a CLI next to the server) may have appended: then start from the store.
      const f = this.#frontier?.size === size ? this.#frontier.clone() : Frontier.of(this.#read, size);
      let prev = size === 0 ? undefined : this.#read(0, size - 1);
      const entries: StoredEntry[] = [];
      const nodes: TreeNode[] = [];
      for (const [i, p] of items.entries()) {
        const index = size + i;
        let subject = p.subject;
        let key = this.#deps.keys.key(subject);
        if (key === undefined) {
          // The patient's key was destroyed (erased): what still concerns them is the node's to record.
          subject = NODE_SUBJECT;
          key = this.#deps.keys.key(NODE_SUBJECT)!;
        }
        const leaf = sealLeaf(p.record, index, p.time, subject, prev, key);
        const hash = leafHash(leaf);
        for (const n of f.push(hash)) nodes.push(n);
        entries.push({ index, time: p.time, subject, leaf });
        prev = hash;
      }
      after = f;
      return { entries, nodes } satisfies AppendBatch;
    });
    this.#frontier = after;
    for (const [i, p] of items.entries()) p.resolve?.(batch.entries[i]!.index);
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
