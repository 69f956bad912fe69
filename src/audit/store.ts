// Where the audit log lives: its leaves, the hashes of its complete subtrees (for proofs), and its
// signed heads. An interface, with SQLite now (audit.db, WAL, synchronous=FULL: an append that
// returned is on disk) and PostgreSQL later. Nothing here is trusted by `audit verify`: it
// recomputes every hash from the leaves and checks them against the signed and anchored heads.
import type { DatabaseSync } from 'node:sqlite';
import { VaultError } from '../core/errors.ts';
import { openDatabase, StatementCache, transaction } from '../core/sqlite.ts';
import { parseHeadBody, type SignedHead } from './head.ts';
import { HASH_SIZE, type TreeNode } from './tree.ts';

export const AUDIT_DB_FILE = 'audit.db';

export interface StoredEntry {
  index: number;
  /** ms since the epoch (also in the leaf). */
  time: number;
  subject: string;
  leaf: Uint8Array;
}

export interface AppendBatch {
  entries: StoredEntry[];
  /** Every perfect subtree the entries complete, leaf hashes included. */
  nodes: TreeNode[];
}

export interface StoredHead extends SignedHead {
  cid: string;
  /** Consistency proof from the previous head (empty for the first). */
  proof: Uint8Array[];
}

export interface EntryQuery {
  subjects?: readonly string[];
  /** ms since the epoch, inclusive. */
  since?: number;
  until?: number;
  /** Entries with index below this (paging, newest first). */
  before?: number;
  limit: number;
}

export interface AuditLogStore {
  /** Entries in the log. */
  size(): number;
  /**
   * Appends one batch durably and all at once. `build` runs under the store's write lock with the
   * size at that moment (another process may have appended since this one last looked) and
   * returns what to append from there.
   */
  append(build: (size: number) => AppendBatch): AppendBatch;
  /** Entries [from, to) in order of position (what verify reads). */
  scan(from: number, to: number): StoredEntry[];
  entry(index: number): StoredEntry | undefined;
  /** Newest first. */
  query(q: EntryQuery): StoredEntry[];
  /** A complete subtree's hash; throws when the log does not have it (a proof asked beyond the log). */
  node(level: number, index: number): Uint8Array;
  /**
   * Adds a signed head and queues it to be anchored. `build` runs under the write lock with the
   * latest head and the log's size at that moment (two processes never sign two heads after the
   * same one); it returns the head, or undefined when there is nothing new to sign.
   */
  addHead(build: (latest: StoredHead | undefined, size: number) => StoredHead | undefined): StoredHead | undefined;
  /** The latest head not yet handed to the anchor service. */
  latestPendingHeadAnchor(): { cid: string; size: number; enqueuedAt: string } | undefined;
  /** The anchor service took the head of `size`: it and every earlier head leave the queue (the later head's consistency proofs cover them). */
  markHeadsHandedOverThrough(size: number): number;
  /** All heads, oldest first. */
  heads(): StoredHead[];
  latestHead(): StoredHead | undefined;
  /** The latest heads, newest first. */
  recentHeads(limit: number): StoredHead[];
  /** The first head covering entry `index` (size > index). */
  headCovering(index: number): StoredHead | undefined;
  head(size: number): StoredHead | undefined;
  close(): void;
}

const MIGRATIONS = [
  `CREATE TABLE entries (
     idx     INTEGER PRIMARY KEY,
     subject TEXT NOT NULL,
     time    INTEGER NOT NULL,
     leaf    BLOB NOT NULL
   ) STRICT;
   CREATE INDEX entries_subject ON entries (subject, idx);
   CREATE TABLE nodes (
     level INTEGER NOT NULL,
     idx   INTEGER NOT NULL,
     hash  BLOB NOT NULL,
     PRIMARY KEY (level, idx)
   ) STRICT, WITHOUT ROWID;
   CREATE TABLE heads (
     size      INTEGER PRIMARY KEY,
     body      TEXT NOT NULL,
     signature BLOB NOT NULL,
     cid       TEXT NOT NULL UNIQUE,
     proof     BLOB NOT NULL
   ) STRICT;
   CREATE TABLE head_anchor_queue (
     cid         TEXT PRIMARY KEY,
     size        INTEGER NOT NULL,
     enqueued_at TEXT NOT NULL
   ) STRICT;`,
  // The subtree hashes an entry completes (its own leaf hash first, then one per level it closes)
  // kept in its row: an append then writes the entries table and its index, not a third b-tree
  // whose level-major keys put each append on two or three more pages (WAL frames) per commit.
  // Rows written before keep theirs in `nodes`.
  `ALTER TABLE entries ADD COLUMN hashes BLOB;`,
];

type HeadRow = { size: number; body: string; signature: Uint8Array; cid: string; proof: Uint8Array };

function toHead(r: HeadRow): StoredHead {
  const f = parseHeadBody(r.body);
  if (f === undefined) throw new VaultError('DATABASE_CORRUPT', `the audit head of size ${r.size} is not a head`);
  const proof: Uint8Array[] = [];
  for (let i = 0; i + HASH_SIZE <= r.proof.length; i += HASH_SIZE) proof.push(r.proof.subarray(i, i + HASH_SIZE));
  return { ...f, body: r.body, signature: r.signature, cid: r.cid, proof };
}

export class SqliteAuditLogStore implements AuditLogStore {
  readonly #db: DatabaseSync;
  readonly #stmts: StatementCache;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#stmts = new StatementCache(db);
  }

  /** `pragmas`: extra PRAGMAs (tests bound the file with max_page_count to meet a full disk). */
  static open(path: string, options: { pragmas?: readonly string[] } = {}): SqliteAuditLogStore {
    return new SqliteAuditLogStore(openDatabase({ path, what: 'audit log', migrations: MIGRATIONS, ...(options.pragmas ? { pragmas: options.pragmas } : {}) }));
  }

  size(): number {
    const r = this.#stmts.get('SELECT max(idx) AS m FROM entries').get() as { m: number | null };
    return r.m === null ? 0 : r.m + 1;
  }

  append(build: (size: number) => AppendBatch): AppendBatch {
    return transaction(this.#db, () => {
      const batch = build(this.size());
      // Each subtree is completed by its last leaf: (index + 1) * 2^level - 1; levels in order from 0.
      const completed = new Map<number, Uint8Array[]>();
      for (const x of batch.nodes) {
        const by = (x.index + 1) * 2 ** x.level - 1;
        const hashes = completed.get(by) ?? [];
        if (hashes.length !== x.level) throw new VaultError('INTERNAL', `audit subtree ${x.level}/${x.index} out of order`);
        hashes.push(x.hash);
        completed.set(by, hashes);
      }
      const e = this.#stmts.get('INSERT INTO entries (idx, subject, time, leaf, hashes) VALUES (?, ?, ?, ?, ?)');
      for (const x of batch.entries) {
        const hashes = completed.get(x.index);
        e.run(x.index, x.subject, x.time, x.leaf, hashes === undefined ? null : Buffer.concat(hashes));
        completed.delete(x.index);
      }
      if (completed.size > 0) throw new VaultError('INTERNAL', 'an audit subtree completed by no entry of its batch');
      return batch;
    });
  }

  scan(from: number, to: number): StoredEntry[] {
    // By position: a row deleted or moved on disk shows as such to verify.
    return (this.#stmts.get('SELECT idx, subject, time, leaf FROM entries ORDER BY idx LIMIT ? OFFSET ?').all(to - from, from) as EntryRow[]).map(toEntry);
  }

  entry(index: number): StoredEntry | undefined {
    const r = this.#stmts.get('SELECT idx, subject, time, leaf FROM entries WHERE idx = ?').get(index) as EntryRow | undefined;
    return r === undefined ? undefined : toEntry(r);
  }

  query(q: EntryQuery): StoredEntry[] {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (q.subjects !== undefined) {
      if (q.subjects.length === 0) return [];
      where.push(`subject IN (${q.subjects.map(() => '?').join(', ')})`);
      args.push(...q.subjects);
    }
    for (const [sql, v] of [
      ['time >= ?', q.since],
      ['time <= ?', q.until],
      ['idx < ?', q.before],
    ] as const) {
      if (v === undefined) continue;
      where.push(sql);
      args.push(v);
    }
    const sql = `SELECT idx, subject, time, leaf FROM entries ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY idx DESC LIMIT ?`;
    return (this.#stmts.get(sql).all(...args, q.limit) as EntryRow[]).map(toEntry);
  }

  node(level: number, index: number): Uint8Array {
    const at = (index + 1) * 2 ** level - 1;
    const row = this.#stmts.get('SELECT hashes FROM entries WHERE idx = ?').get(at) as { hashes: Uint8Array | null } | undefined;
    if (row?.hashes != null && row.hashes.length >= (level + 1) * HASH_SIZE) return row.hashes.subarray(level * HASH_SIZE, (level + 1) * HASH_SIZE);
    // An entry appended before the hashes moved into its row.
    const r = this.#stmts.get('SELECT hash FROM nodes WHERE level = ? AND idx = ?').get(level, index) as { hash: Uint8Array } | undefined;
    if (r === undefined) throw new VaultError('INTERNAL', `the audit log has no subtree ${level}/${index}`);
    return r.hash;
  }

  addHead(build: (latest: StoredHead | undefined, size: number) => StoredHead | undefined): StoredHead | undefined {
    return transaction(this.#db, () => {
      const head = build(this.latestHead(), this.size());
      if (head === undefined) return undefined;
      this.#stmts
        .get('INSERT INTO heads (size, body, signature, cid, proof) VALUES (?, ?, ?, ?, ?)')
        .run(head.size, head.body, head.signature, head.cid, Buffer.concat(head.proof));
      this.#stmts.get('INSERT OR IGNORE INTO head_anchor_queue (cid, size, enqueued_at) VALUES (?, ?, ?)').run(head.cid, head.size, head.time);
      return head;
    });
  }

  latestPendingHeadAnchor(): { cid: string; size: number; enqueuedAt: string } | undefined {
    const r = this.#stmts.get('SELECT cid, size, enqueued_at FROM head_anchor_queue ORDER BY size DESC LIMIT 1').get() as
      | { cid: string; size: number; enqueued_at: string }
      | undefined;
    return r === undefined ? undefined : { cid: r.cid, size: r.size, enqueuedAt: r.enqueued_at };
  }

  markHeadsHandedOverThrough(size: number): number {
    return Number(this.#stmts.get('DELETE FROM head_anchor_queue WHERE size <= ?').run(size).changes);
  }

  heads(): StoredHead[] {
    return (this.#stmts.get('SELECT size, body, signature, cid, proof FROM heads ORDER BY size').all() as HeadRow[]).map(toHead);
  }

  latestHead(): StoredHead | undefined {
    const r = this.#stmts.get('SELECT size, body, signature, cid, proof FROM heads ORDER BY size DESC LIMIT 1').get() as HeadRow | undefined;
    return r === undefined ? undefined : toHead(r);
  }

  recentHeads(limit: number): StoredHead[] {
    return (this.#stmts.get('SELECT size, body, signature, cid, proof FROM heads ORDER BY size DESC LIMIT ?').all(limit) as HeadRow[]).map(toHead);
  }

  headCovering(index: number): StoredHead | undefined {
    const r = this.#stmts.get('SELECT size, body, signature, cid, proof FROM heads WHERE size > ? ORDER BY size LIMIT 1').get(index) as HeadRow | undefined;
    return r === undefined ? undefined : toHead(r);
  }

  head(size: number): StoredHead | undefined {
    const r = this.#stmts.get('SELECT size, body, signature, cid, proof FROM heads WHERE size = ?').get(size) as HeadRow | undefined;
    return r === undefined ? undefined : toHead(r);
  }

  close(): void {
    this.#stmts.clear();
    this.#db.close();
  }
}

type EntryRow = { idx: number; subject: string; time: number; leaf: Uint8Array };

function toEntry(r: EntryRow): StoredEntry {
  return { index: r.idx, subject: r.subject, time: r.time, leaf: r.leaf };
}
