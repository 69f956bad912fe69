// The anchoring state of a node, in its own SQLite file (anchor.db in the data directory): every
// study version root the catalog handed over, the batch it went into, and each batch's way to the
// chain. Roots move here from the catalog's anchor queue, so the queue survives restarts on both
// sides of the hand-over; every write is one transaction with synchronous=FULL.
//
//   leaf:  pending (no batch yet, or its batch not yet sent) -> submitted -> confirmed
//   batch: pending (closed, root known) -> submitted (tx signed and sent; block set once mined)
//          -> confirmed (enough confirmations; final)
//   A submitted batch goes back to pending when its nonce was taken by another transaction, and
//   loses its block when that block is reorganised away; either way it is anchored again.
import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { CID } from 'multiformats/cid';
import { bytesToHex, type Address, type Hex } from 'viem';
import { VaultError } from '../src/core/errors.ts';
import { DEFAULT_BUSY_TIMEOUT_MS, StatementCache, openDatabase, scrubWal, transaction } from '../src/core/sqlite.ts';
import { anchorCommitment, type SaltLookup } from './commitment.ts';
import { UNSALTED_ANCHOR_STUDIES } from '../src/format/keys.ts';
import { MerkleTree } from './merkle.ts';
import { encodeReceipt, type ReceiptJson } from './receipt.ts';

export const ANCHOR_DB_FILE = 'anchor.db';
/** Default wait for another connection's write lock, in milliseconds. */
export { DEFAULT_BUSY_TIMEOUT_MS };

export type BatchState = 'pending' | 'submitted' | 'confirmed';
export type LeafState = BatchState;

export interface AnchorStateOptions {
  /** SQLite file path; ':memory:' for tests. */
  path: string;
  /** Wait for a lock held by another connection (a CLI next to a running node), ms. Default DEFAULT_BUSY_TIMEOUT_MS. */
  busyTimeoutMs?: number;
  /**
   * The studies' anchor salts (the key store's): with it, each root handed over is anchored as
   * its salted commitment (commitment.ts) and its receipt is of version 3; a root whose study has
   * no salt any more (erased since its commit) is not anchored at all. Without it (tools, older
   * tests), roots are anchored bare (version 2).
   */
  saltOf?: SaltLookup;
  /** Called by close(), after the database is closed (whatever `saltOf` reads from). */
  onClose?: () => void;
}

/** A study version root waiting to be anchored, as the catalog hands it over. */
export interface QueuedRoot {
  root: string;
  studyInstanceUID: string;
  version: number;
  /** ISO 8601 commit time of the version. */
  enqueuedAt: string;
}

export interface BatchRecord {
  id: number;
  /** Tree head (merkle.ts treeHead: size and Merkle root), 0x hex: the bytes32 sent to the contract. */
  root: Hex;
  size: number;
  state: BatchState;
  /** ISO 8601. */
  closedAt: string;
  /** Transactions signed for this batch so far (first send, fee bumps, resends). */
  attempts: number;
  nonce: number | null;
  /** The latest transaction signed, or the one that was mined. */
  txHash: Hex | null;
  /** ISO 8601 time the latest transaction was sent. */
  submittedAt: string | null;
  /** Chain head when the batch was first sent: where to start looking for its event. */
  submittedBlock: number | null;
  maxFeePerGas: bigint | null;
  maxPriorityFeePerGas: bigint | null;
  chainId: number | null;
  contract: Address | null;
  blockNumber: number | null;
  blockHash: Hex | null;
  /** Block timestamp, seconds since the epoch. */
  blockTime: number | null;
  confirmations: number;
  /** ISO 8601. */
  confirmedAt: string | null;
  /** The last error met while anchoring this batch; cleared when it is confirmed. */
  lastError: string | null;
}

export interface LeafRecord extends QueuedRoot {
  /** The salted commitment anchored for this root; null when the bare root CID was (version 2). */
  leafData: Uint8Array | null;
  state: LeafState;
  batchId: number | null;
  index: number | null;
}

export interface QueueStats {
  /** Roots not yet in any batch. */
  queued: number;
  /** ISO 8601 commit time of the oldest of them. */
  oldestEnqueuedAt: string | null;
  batches: Record<BatchState, number>;
  /** Roots per leaf state. */
  leaves: Record<LeafState, number>;
}

export interface SignedTx {
  txHash: Hex;
  nonce: number;
  maxFeePerGas: bigint;
  /** Null for a legacy (gasPrice) transaction. */
  maxPriorityFeePerGas: bigint | null;
  chainId: number;
  contract: Address;
  /** Chain head when sent. */
  headBlock: number;
  /** ISO 8601. */
  sentAt: string;
}

export interface Inclusion {
  txHash: Hex;
  blockNumber: number;
  blockHash: Hex;
  blockTime: number;
  confirmations: number;
}

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE batches (
    id              INTEGER PRIMARY KEY,
    root            TEXT NOT NULL UNIQUE,
    size            INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'submitted', 'confirmed')),
    closed_at       TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    nonce           INTEGER,
    tx_hash         TEXT,
    submitted_at    TEXT,
    submitted_block INTEGER,
    max_fee         TEXT,
    priority_fee    TEXT,
    chain_id        INTEGER,
    contract        TEXT,
    block_number    INTEGER,
    block_hash      TEXT,
    block_time      INTEGER,
    confirmations   INTEGER NOT NULL DEFAULT 0,
    confirmed_at    TEXT,
    last_error      TEXT
  ) STRICT;
  CREATE INDEX batches_state ON batches (state, id);

  CREATE TABLE leaves (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    root        TEXT NOT NULL UNIQUE,
    study_uid   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    enqueued_at TEXT NOT NULL,
    batch_id    INTEGER REFERENCES batches (id),
    leaf_index  INTEGER
  ) STRICT;
  CREATE INDEX leaves_unbatched ON leaves (seq) WHERE batch_id IS NULL;
  CREATE INDEX leaves_batch ON leaves (batch_id, leaf_index);
  CREATE INDEX leaves_study ON leaves (study_uid, version);

  -- Every transaction signed for a batch: after fee bumps and resends any one of them may be
  -- the one that gets mined.
  CREATE TABLE batch_txs (
    tx_hash  TEXT PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches (id),
    nonce    INTEGER NOT NULL,
    sent_at  TEXT NOT NULL
  ) STRICT;
  CREATE INDEX batch_txs_batch ON batch_txs (batch_id);
  `,
  // 2: salted anchors and erasure. leaf_data is what the Merkle tree hashes for the leaf: the
  // salted commitment (NULL: the root CID's bytes, as before). An erased study's leaves keep only
  // leaf_data (the batch's tree must still be rebuilt for the other leaves' receipts): root,
  // study and version become NULL, which their old NOT NULL did not allow, hence the new table.
  `
  CREATE TABLE leaves_v2 (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    root        TEXT UNIQUE,
    study_uid   TEXT,
    version     INTEGER,
    enqueued_at TEXT NOT NULL,
    batch_id    INTEGER REFERENCES batches (id),
    leaf_index  INTEGER,
    leaf_data   BLOB,
    erased_at   TEXT
  ) STRICT;
  INSERT INTO leaves_v2 (seq, root, study_uid, version, enqueued_at, batch_id, leaf_index)
    SELECT seq, root, study_uid, version, enqueued_at, batch_id, leaf_index FROM leaves;
  DROP TABLE leaves;
  ALTER TABLE leaves_v2 RENAME TO leaves;
  CREATE INDEX leaves_unbatched ON leaves (seq) WHERE batch_id IS NULL;
  CREATE INDEX leaves_batch ON leaves (batch_id, leaf_index);
  CREATE INDEX leaves_study ON leaves (study_uid, version);
  `,
];

interface BatchRow {
  id: number;
  root: string;
  size: number;
  state: BatchState;
  closed_at: string;
  attempts: number;
  nonce: number | null;
  tx_hash: string | null;
  submitted_at: string | null;
  submitted_block: number | null;
  max_fee: string | null;
  priority_fee: string | null;
  chain_id: number | null;
  contract: string | null;
  block_number: number | null;
  block_hash: string | null;
  block_time: number | null;
  confirmations: number;
  confirmed_at: string | null;
  last_error: string | null;
}

interface LeafRow {
  root: string;
  leaf_data: Uint8Array | null;
  study_uid: string;
  version: number;
  enqueued_at: string;
  batch_id: number | null;
  leaf_index: number | null;
  state: BatchState | null;
}

function toBatch(r: BatchRow): BatchRecord {
  return {
    id: r.id,
    root: r.root as Hex,
    size: r.size,
    state: r.state,
    closedAt: r.closed_at,
    attempts: r.attempts,
    nonce: r.nonce,
    txHash: r.tx_hash as Hex | null,
    submittedAt: r.submitted_at,
    submittedBlock: r.submitted_block,
    maxFeePerGas: r.max_fee === null ? null : BigInt(r.max_fee),
    maxPriorityFeePerGas: r.priority_fee === null ? null : BigInt(r.priority_fee),
    chainId: r.chain_id,
    contract: r.contract as Address | null,
    blockNumber: r.block_number,
    blockHash: r.block_hash as Hex | null,
    blockTime: r.block_time,
    confirmations: r.confirmations,
    confirmedAt: r.confirmed_at,
    lastError: r.last_error,
  };
}

function toLeaf(r: LeafRow): LeafRecord {
  return {
    root: r.root,
    leafData: r.leaf_data,
    studyInstanceUID: r.study_uid,
    version: r.version,
    enqueuedAt: r.enqueued_at,
    state: r.state ?? 'pending',
    batchId: r.batch_id,
    index: r.leaf_index,
  };
}

interface LeafDataRow {
  seq: number;
  root: string | null;
  leaf_data: Uint8Array | null;
}

function leafDataOf(r: LeafDataRow): Uint8Array {
  if (r.leaf_data !== null) return r.leaf_data;
  if (r.root === null) throw new VaultError('INTERNAL', `anchor leaf ${r.seq} has neither root nor leaf data`);
  return CID.parse(r.root).bytes;
}

const LEAF_SELECT = `SELECT l.root, l.leaf_data, l.study_uid, l.version, l.enqueued_at, l.batch_id, l.leaf_index, b.state
  FROM leaves l LEFT JOIN batches b ON b.id = l.batch_id`;

export class AnchorState {
  readonly #db: DatabaseSync;
  readonly #statements: StatementCache;
  readonly #saltOf: SaltLookup | undefined;
  readonly #onClose: (() => void) | undefined;
  /** The last batch tree built for receipts: a study's receipts are often asked for in a row. */
  #tree: { batchId: number; tree: MerkleTree } | undefined;

  private constructor(db: DatabaseSync, saltOf: SaltLookup | undefined, onClose: (() => void) | undefined) {
    this.#db = db;
    this.#statements = new StatementCache(db);
    this.#saltOf = saltOf;
    this.#onClose = onClose;
  }

  static open(options: AnchorStateOptions): AnchorState {
    const db = openDatabase({
      path: options.path,
      what: 'anchor database',
      migrations: MIGRATIONS,
      // An erased study's leaves are overwritten, not merely unlinked (eraseStudy).
      pragmas: ['secure_delete = ON'],
      ...(options.busyTimeoutMs !== undefined ? { busyTimeoutMs: options.busyTimeoutMs } : {}),
    });
    return new AnchorState(db, options.saltOf, options.onClose);
  }

  close(): void {
    this.#statements.clear();
    this.#db.close();
    this.#onClose?.();
  }

  #stmt(sql: string): StatementSync {
    return this.#statements.get(sql);
  }

  #transaction<T>(fn: () => T): T {
    return transaction(this.#db, fn);
  }

  // -- queue ------------------------------------------------------------------------------

  /** Adds roots to the queue; roots already known are ignored (a hand-over may be repeated). Returns how many were new. */
  enqueue(roots: readonly QueuedRoot[]): number {
    if (roots.length === 0) return 0;
    return this.#transaction(() => {
      const insert = this.#stmt('INSERT OR IGNORE INTO leaves (root, study_uid, version, enqueued_at, leaf_data) VALUES (?, ?, ?, ?, ?)');
      let added = 0;
      for (const r of roots) {
        let leafData: Uint8Array | null = null;
        if (this.#saltOf !== undefined && !UNSALTED_ANCHOR_STUDIES.has(r.studyInstanceUID)) {
          const salt = this.#saltOf(r.studyInstanceUID);
          if (salt === undefined || salt.length === 0) continue; // erased since its commit (or not migrated): nothing to anchor
          leafData = anchorCommitment(salt, CID.parse(r.root));
        }
        added += Number(insert.run(r.root, r.studyInstanceUID, r.version, r.enqueuedAt, leafData).changes);
      }
      return added;
    });
  }

  /** Roots waiting for a batch, and the oldest one's commit time. */
  queued(): { count: number; oldestEnqueuedAt: string | null } {
    const row = this.#stmt('SELECT count(*) AS n, min(enqueued_at) AS oldest FROM leaves WHERE batch_id IS NULL').get() as {
      n: number;
      oldest: string | null;
    };
    return { count: row.n, oldestEnqueuedAt: row.oldest };
  }

  stats(): QueueStats {
    const q = this.queued();
    const batches: Record<BatchState, number> = { pending: 0, submitted: 0, confirmed: 0 };
    for (const r of this.#stmt('SELECT state, count(*) AS n FROM batches GROUP BY state').all() as unknown as Array<{ state: BatchState; n: number }>) {
      batches[r.state] = r.n;
    }
    const leaves: Record<LeafState, number> = { pending: q.count, submitted: 0, confirmed: 0 };
    for (const r of this.#stmt('SELECT b.state, sum(b.size) AS n FROM batches b GROUP BY b.state').all() as unknown as Array<{
      state: BatchState;
      n: number;
    }>) {
      leaves[r.state] += r.n;
    }
    return { queued: q.count, oldestEnqueuedAt: q.oldestEnqueuedAt, batches, leaves };
  }

  /**
   * Makes a batch of the oldest queued roots, at most `maxLeaves`, in queue order; computes its
   * Merkle root. Undefined when nothing is queued.
   */
  closeBatch(maxLeaves: number, closedAt: string, alsoRoot?: string): BatchRecord | undefined {
    return this.#transaction(() => {
      // `alsoRoot` (the audit log's head, queued last) joins beyond `maxLeaves`: it never takes a
      // root's place, nor waits behind a full queue.
      const rows = this.#stmt('SELECT seq, root, leaf_data FROM leaves WHERE batch_id IS NULL AND root IS NOT ? ORDER BY seq LIMIT ?').all(
        alsoRoot ?? null,
        maxLeaves,
      ) as unknown as LeafDataRow[];
      if (alsoRoot !== undefined && rows.length > 0) {
        const extra = this.#stmt('SELECT seq, root, leaf_data FROM leaves WHERE batch_id IS NULL AND root = ?').get(alsoRoot) as unknown as
          | LeafDataRow
          | undefined;
        if (extra !== undefined) rows.push(extra);
      }
      if (rows.length === 0) return undefined;
      const tree = MerkleTree.fromLeaves(rows.map(leafDataOf));
      const root = bytesToHex(tree.head);
      const info = this.#stmt("INSERT INTO batches (root, size, state, closed_at) VALUES (?, ?, 'pending', ?)").run(root, rows.length, closedAt);
      const id = Number(info.lastInsertRowid);
      const assign = this.#stmt('UPDATE leaves SET batch_id = ?, leaf_index = ? WHERE seq = ?');
      for (const [i, r] of rows.entries()) assign.run(id, i, r.seq);
      this.#tree = { batchId: id, tree };
      return this.batch(id)!;
    });
  }

  // -- batches ----------------------------------------------------------------------------

  batch(id: number): BatchRecord | undefined {
    const row = this.#stmt('SELECT * FROM batches WHERE id = ?').get(id) as BatchRow | undefined;
    return row === undefined ? undefined : toBatch(row);
  }

  /** Batches in the given states (all when none given), oldest first; `limit` newest when asked. */
  batches(filter: { states?: readonly BatchState[]; limit?: number } = {}): BatchRecord[] {
    const params: SQLInputValue[] = [];
    let where = '';
    if (filter.states && filter.states.length > 0) {
      where = `WHERE state IN (${filter.states.map(() => '?').join(', ')})`;
      params.push(...filter.states);
    }
    const sql =
      filter.limit === undefined
        ? `SELECT * FROM batches ${where} ORDER BY id`
        : `SELECT * FROM (SELECT * FROM batches ${where} ORDER BY id DESC LIMIT ?) ORDER BY id`;
    if (filter.limit !== undefined) params.push(filter.limit);
    return (this.#stmt(sql).all(...params) as unknown as BatchRow[]).map(toBatch);
  }

  /** Root CIDs of a batch's leaves, by leaf index ('' for a leaf of an erased study). */
  batchLeaves(id: number): string[] {
    return (this.#stmt('SELECT root FROM leaves WHERE batch_id = ? ORDER BY leaf_index').all(id) as unknown as Array<{ root: string | null }>).map(
      (r) => r.root ?? '',
    );
  }

  /** What the batch's tree hashes for each leaf, by leaf index. */
  #batchLeafData(id: number): Uint8Array[] {
    return (this.#stmt('SELECT seq, root, leaf_data FROM leaves WHERE batch_id = ? ORDER BY leaf_index').all(id) as unknown as LeafDataRow[]).map(leafDataOf);
  }

  // -- erasure ----------------------------------------------------------------------------

  /**
   * Forgets which leaves were the study's: leaves not yet in a batch are deleted (an erased study
   * is not anchored); batched ones keep only the data the tree hashes (the salted commitment,
   * unlinkable once the salt is gone; for a bare-root leaf of version 2, the CID's bytes, which
   * stay linkable by whoever holds that CID), so the batch's other receipts still verify. The
   * WAL is then checkpointed and truncated. Returns the commitments (hex) of the study's
   * anchored leaves, for the erasure certificate.
   */
  eraseStudy(studyInstanceUID: string, at: string): { anchored: string[]; dropped: number } {
    const result = this.#transaction(() => {
      const dropped = Number(this.#stmt('DELETE FROM leaves WHERE study_uid = ? AND batch_id IS NULL').run(studyInstanceUID).changes);
      const rows = this.#stmt('SELECT seq, root, leaf_data FROM leaves WHERE study_uid = ? ORDER BY seq').all(studyInstanceUID) as unknown as LeafDataRow[];
      const keep = this.#stmt('UPDATE leaves SET leaf_data = ?, root = NULL, study_uid = NULL, version = NULL, erased_at = ? WHERE seq = ?');
      for (const r of rows) keep.run(leafDataOf(r), at, r.seq);
      return { anchored: rows.filter((r) => r.leaf_data !== null).map((r) => Buffer.from(r.leaf_data!).toString('hex')), dropped };
    });
    this.#tree = undefined;
    scrubWal(this.#db, 'anchor database');
    return result;
  }

  /** Every transaction signed for a batch, oldest first. */
  batchTxs(id: number): Array<{ txHash: Hex; nonce: number }> {
    return (
      this.#stmt('SELECT tx_hash, nonce FROM batch_txs WHERE batch_id = ? ORDER BY sent_at, rowid').all(id) as unknown as Array<{
        tx_hash: string;
        nonce: number;
      }>
    ).map((r) => ({ txHash: r.tx_hash as Hex, nonce: r.nonce }));
  }

  /** A transaction was signed for the batch; recorded before it is sent, so a crash cannot lose it. */
  recordSigned(id: number, tx: SignedTx): void {
    this.#transaction(() => {
      this.#stmt('INSERT OR IGNORE INTO batch_txs (tx_hash, batch_id, nonce, sent_at) VALUES (?, ?, ?, ?)').run(tx.txHash, id, tx.nonce, tx.sentAt);
      this.#stmt(
        `UPDATE batches SET state = 'submitted', attempts = attempts + 1, nonce = ?, tx_hash = ?, submitted_at = ?,
           submitted_block = coalesce(submitted_block, ?), max_fee = ?, priority_fee = ?, chain_id = ?, contract = ?,
           block_number = NULL, block_hash = NULL, block_time = NULL, confirmations = 0
         WHERE id = ? AND state != 'confirmed'`,
      ).run(tx.nonce, tx.txHash, tx.sentAt, tx.headBlock, tx.maxFeePerGas.toString(), tx.maxPriorityFeePerGas?.toString() ?? null, tx.chainId, tx.contract, id);
    });
  }

  /** The batch's root is in a block on `chain` (possibly through another transaction than ours). */
  recordIncluded(id: number, inc: Inclusion, chain: { chainId: number; contract: Address }): void {
    this.#stmt(
      `UPDATE batches SET state = 'submitted', tx_hash = ?, block_number = ?, block_hash = ?, block_time = ?, confirmations = ?,
         chain_id = ?, contract = ?, last_error = NULL
       WHERE id = ? AND state != 'confirmed'`,
    ).run(inc.txHash, inc.blockNumber, inc.blockHash, inc.blockTime, inc.confirmations, chain.chainId, chain.contract, id);
  }

  recordConfirmed(id: number, confirmations: number, at: string): void {
    this.#stmt(
      `UPDATE batches SET state = 'confirmed', confirmations = ?, confirmed_at = ?, last_error = NULL
       WHERE id = ? AND state = 'submitted' AND block_number IS NOT NULL`,
    ).run(confirmations, at, id);
  }

  /** The batch's block was reorganised away before its confirmations: wait for or redo its inclusion. */
  recordReorged(id: number, reason: string): void {
    this.#stmt(
      `UPDATE batches SET block_number = NULL, block_hash = NULL, block_time = NULL, confirmations = 0, last_error = ?
       WHERE id = ? AND state = 'submitted'`,
    ).run(reason, id);
  }

  /** The batch's nonce went to another transaction and its root is not on chain: send it afresh. */
  recordReset(id: number, reason: string): void {
    this.#stmt(
      `UPDATE batches SET state = 'pending', nonce = NULL, block_number = NULL, block_hash = NULL, block_time = NULL,
         confirmations = 0, last_error = ? WHERE id = ? AND state = 'submitted'`,
    ).run(reason, id);
  }

  recordError(id: number, message: string): void {
    this.#stmt("UPDATE batches SET last_error = ? WHERE id = ? AND state != 'confirmed'").run(message.slice(0, 500), id);
  }

  // -- leaves and receipts ----------------------------------------------------------------

  leaf(root: string): LeafRecord | undefined {
    const row = this.#stmt(`${LEAF_SELECT} WHERE l.root = ?`).get(root) as LeafRow | undefined;
    return row === undefined ? undefined : toLeaf(row);
  }

  /** Every version of a study known here, oldest first. */
  studyLeaves(studyInstanceUID: string): LeafRecord[] {
    return (this.#stmt(`${LEAF_SELECT} WHERE l.study_uid = ? ORDER BY l.version`).all(studyInstanceUID) as unknown as LeafRow[]).map(toLeaf);
  }

  /**
   * The receipt of a root once its batch is confirmed; undefined before, and for a salted leaf
   * whose study's salt is gone (erased).
   */
  receipt(root: string): ReceiptJson | undefined {
    const leaf = this.leaf(root);
    if (!leaf || leaf.batchId === null || leaf.index === null || leaf.state !== 'confirmed') return undefined;
    const batch = this.batch(leaf.batchId)!;
    if (
      batch.txHash === null ||
      batch.blockNumber === null ||
      batch.blockHash === null ||
      batch.blockTime === null ||
      batch.chainId === null ||
      batch.contract === null
    ) {
      throw new VaultError('INTERNAL', `confirmed batch ${batch.id} lacks its anchor fields`);
    }
    let cached = this.#tree;
    if (cached?.batchId !== batch.id) {
      cached = { batchId: batch.id, tree: MerkleTree.fromLeaves(this.#batchLeafData(batch.id)) };
      this.#tree = cached;
    }
    if (bytesToHex(cached.tree.head) !== batch.root) throw new VaultError('INTERNAL', `batch ${batch.id}'s leaves no longer hash to its root`);
    const cid = CID.parse(root);
    let salt: Uint8Array | undefined;
    if (leaf.leafData !== null) {
      salt = this.#saltOf?.(leaf.studyInstanceUID);
      if (salt === undefined || salt.length === 0) return undefined;
      if (!Buffer.from(anchorCommitment(salt, cid)).equals(leaf.leafData))
        throw new VaultError('INTERNAL', `the anchor salt of study version ${root} does not give its anchored commitment`);
    }
    return encodeReceipt({
      cid,
      ...(salt === undefined ? {} : { salt }),
      index: leaf.index,
      size: batch.size,
      path: cached.tree.inclusionPath(leaf.index),
      root: batch.root,
      chainId: batch.chainId,
      contract: batch.contract,
      txHash: batch.txHash,
      blockNumber: batch.blockNumber,
      blockHash: batch.blockHash,
      time: batch.blockTime,
    });
  }
}
