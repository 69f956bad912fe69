// The local index of the S3 store's packs: which pack holds a block, and where in it. SQLite
// (src/core/sqlite.ts: WAL, synchronous=FULL), so a second process (a `verify` or `export` CLI next to
// the server) reads what the server committed, and every answer is on disk before a flush resolves.
//
// Rows are added only once a pack's upload has succeeded, one transaction per pack: a crash
// between the upload and the commit leaves an orphan pack object (garbage, never a dangling row).
// A pack's row counts its live blocks; when the last one is deleted the row stays with live = 0
// until its object is deleted (`deadPacks`, `dropPack`), so a failed DeleteObject is retried later.
// A lost index is rebuilt from the packs' own headers (S3BlockStore.rebuildIndex), which lands
// them here as the writer does.
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { CID } from 'multiformats/cid';
import { VaultError } from '../../src/core/errors.ts';
import { openDatabase } from '../../src/core/sqlite.ts';
import type { PackEntry } from './pack-format.ts';

const MIGRATIONS = [
  `CREATE TABLE packs (
     id TEXT PRIMARY KEY,
     bytes INTEGER NOT NULL,    -- object size
     blocks INTEGER NOT NULL,   -- blocks indexed when it landed
     live INTEGER NOT NULL,     -- of those, not deleted since; 0: the object is to be deleted
     created INTEGER NOT NULL   -- ms since the epoch
   ) STRICT;
   CREATE TABLE blocks (
     cid BLOB PRIMARY KEY,
     pack TEXT NOT NULL REFERENCES packs (id),
     start INTEGER NOT NULL,    -- byte offset in the pack object (not in its data section)
     size INTEGER NOT NULL
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX blocks_by_pack ON blocks (pack, start);
   CREATE INDEX dead_packs ON packs (live) WHERE live = 0;`,
  // When a put found the block indexed already and gave it a new time (touch), for gc's grace.
  `ALTER TABLE blocks ADD COLUMN touched INTEGER;`,
];

/**
 * A put of a block indexed longer ago than this (ms) gives it a new time (touch); a more recent
 * one costs no write. gc's grace period is at least an hour (gc.ts MIN_GRACE_S).
 */
export const TOUCH_AFTER_MS = 60_000;

/** Where a block is: bytes [start, start + size) of pack `pack`. */
export interface PackedBlock {
  cid: Uint8Array;
  pack: string;
  start: number;
  size: number;
}

export interface LandedBlock {
  cid: CID;
  /** Byte offset in the pack object. */
  start: number;
  size: number;
}

/** A pack's header entries (offsets in its data section, which starts at `dataStart`) as the index's rows. */
export function landedBlocks(entries: readonly PackEntry[], dataStart: number): LandedBlock[] {
  return entries.map((e) => ({ cid: e.cid, start: dataStart + e.offset, size: e.length }));
}

export class PackIndex {
  readonly path: string;
  readonly #db: DatabaseSync;
  readonly #lookup: StatementSync;
  readonly #following: StatementSync;
  readonly #insertPack: StatementSync;
  readonly #hasPack: StatementSync;
  readonly #countBlocks: StatementSync;
  readonly #written: StatementSync;
  readonly #touch: StatementSync;
  readonly #totals: StatementSync;
  readonly #sparse: StatementSync;
  readonly #holed: StatementSync;
  readonly #move: StatementSync;
  readonly #recount: StatementSync;
  readonly #insertBlock: StatementSync;
  readonly #setLive: StatementSync;
  readonly #deleteBlock: StatementSync;
  readonly #decrement: StatementSync;
  readonly #dead: StatementSync;
  readonly #dropPack: StatementSync;
  readonly #page: StatementSync;
  readonly #nextPack: StatementSync;
  readonly #previousPack: StatementSync;

  private constructor(path: string, db: DatabaseSync) {
    this.path = path;
    this.#db = db;
    this.#lookup = db.prepare('SELECT cid, pack, start, size FROM blocks WHERE cid = ?');
    this.#following = db.prepare('SELECT cid, pack, start, size FROM blocks WHERE pack = ? AND start >= ? ORDER BY start LIMIT ?');
    this.#insertPack = db.prepare('INSERT OR IGNORE INTO packs (id, bytes, blocks, live, created) VALUES (?, ?, 0, 0, ?)');
    this.#hasPack = db.prepare('SELECT 1 FROM packs WHERE id = ?');
    this.#countBlocks = db.prepare('SELECT count(*) AS n FROM blocks WHERE pack = ?');
    this.#written = db.prepare(
      'SELECT b.size AS size, max(p.created, coalesce(b.touched, 0)) AS writtenMs FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.cid = ?',
    );
    this.#touch = db.prepare('UPDATE blocks SET touched = ? WHERE cid = ?');
    this.#totals = db.prepare('SELECT count(*) AS packs, coalesce(sum(bytes), 0) AS bytes FROM packs');
    this.#sparse = db.prepare(
      `SELECT p.id AS id, p.bytes AS bytes, p.created AS created, sum(b.size) AS liveBytes
         FROM packs p JOIN blocks b ON b.pack = p.id WHERE p.live > 0
         GROUP BY p.id HAVING sum(b.size) <= p.bytes * ? ORDER BY p.id`,
    );
    this.#holed = db.prepare(
      `SELECT p.id AS id, p.bytes AS bytes, p.created AS created, sum(b.size) AS liveBytes
         FROM packs p JOIN blocks b ON b.pack = p.id WHERE p.live > 0 AND p.live < p.blocks
         GROUP BY p.id ORDER BY p.id`,
    );
    this.#move = db.prepare('UPDATE blocks SET pack = ?, start = ? WHERE cid = ? AND pack = ?');
    this.#recount = db.prepare('UPDATE packs SET live = (SELECT count(*) FROM blocks WHERE pack = ?1) WHERE id = ?1 RETURNING live');
    this.#insertBlock = db.prepare('INSERT OR IGNORE INTO blocks (cid, pack, start, size) VALUES (?, ?, ?, ?)');
    this.#setLive = db.prepare('UPDATE packs SET blocks = ?, live = ? WHERE id = ?');
    this.#deleteBlock = db.prepare('DELETE FROM blocks WHERE cid = ? RETURNING pack');
    this.#decrement = db.prepare('UPDATE packs SET live = live - 1 WHERE id = ? RETURNING live');
    this.#dead = db.prepare('SELECT id FROM packs WHERE live = 0');
    this.#dropPack = db.prepare('DELETE FROM packs WHERE id = ? AND live = 0');
    this.#page = db.prepare('SELECT cid FROM blocks WHERE cid > ? ORDER BY cid LIMIT ?');
    this.#nextPack = db.prepare('SELECT id FROM packs WHERE id > ? AND live > 0 ORDER BY id LIMIT 1');
    this.#previousPack = db.prepare('SELECT id FROM packs WHERE id < ? AND live > 0 ORDER BY id DESC LIMIT 1');
  }

  /** Opens (creating if needed) the index at `path`. CONFIG_INVALID if it cannot. */
  static open(path: string): PackIndex {
    return new PackIndex(path, openDatabase({ path, what: 'S3 pack index', migrations: MIGRATIONS }));
  }

  lookup(cid: CID): PackedBlock | undefined {
    return this.#read(() => this.#lookup.get(cid.bytes) as PackedBlock | undefined);
  }

  /** Up to `limit` blocks of `pack` starting at or after byte `start`, in order. */
  following(pack: string, start: number, limit: number): PackedBlock[] {
    return this.#read(() => this.#following.all(pack, start, limit) as unknown as PackedBlock[]);
  }

  /** The pack with live blocks whose id comes just after (1) or before (-1) `pack`'s: ids sort by creation time. */
  adjacentPack(pack: string, direction: 1 | -1): string | undefined {
    const statement = direction === 1 ? this.#nextPack : this.#previousPack;
    return this.#read(() => (statement.get(pack) as { id: string } | undefined)?.id);
  }

  /**
   * Records a pack that has been uploaded, in one transaction. Blocks already indexed (in another
   * pack, put by another process meanwhile) keep their place. Returns how many blocks now point
   * into this pack; at 0 no row is kept and the caller should delete the object. A pack that is
   * indexed already (a rebuild found it in the bucket between its upload and this call) is
   * counted again, never refused: its writer must not take it for garbage. `createdMs`: when the
   * pack was written (default now; a rebuild gives the object's LastModified).
   */
  land(id: string, bytes: number, blocks: readonly LandedBlock[], createdMs = Date.now()): number {
    return this.#write(() => {
      this.#insertPack.run(id, bytes, createdMs);
      for (const b of blocks) this.#insertBlock.run(b.cid.bytes, id, b.start, b.size);
      const live = (this.#countBlocks.get(id) as { n: number }).n;
      if (live === 0) this.#dropPack.run(id);
      else this.#setLive.run(live, live, id);
      return live;
    });
  }

  /**
   * Removes a block. Returns its pack and how many live blocks that pack has left (0: delete the
   * object, then `dropPack`), or undefined when the block was not indexed.
   */
  remove(cid: CID): { pack: string; live: number } | undefined {
    return this.#write(() => {
      const row = this.#deleteBlock.get(cid.bytes) as { pack: string } | undefined;
      if (row === undefined) return undefined;
      const left = this.#decrement.get(row.pack) as { live: number } | undefined;
      return { pack: row.pack, live: left?.live ?? 0 };
    });
  }

  /** An indexed block's size and last write (its pack's landing, or its last touch), ms since the epoch. */
  written(cid: CID): { size: number; writtenMs: number } | undefined {
    return this.#read(() => this.#written.get(cid.bytes) as { size: number; writtenMs: number } | undefined);
  }

  /**
   * For a put of `cid`: false when it is not indexed (store it); true when it is, after giving
   * it the time `nowMs` if its own is older than TOUCH_AFTER_MS (as the fs store touches a file
   * it finds stored), so that gc counts a block written again by a retry as new.
   */
  touch(cid: CID, nowMs = Date.now()): boolean {
    const found = this.written(cid);
    if (found === undefined) return false;
    if (found.writtenMs < nowMs - TOUCH_AFTER_MS) this.#write(() => this.#touch.run(nowMs, cid.bytes));
    return true;
  }

  /** Pack objects the index knows (dead ones not yet deleted included), and their bytes. */
  totals(): { packs: number; bytes: number } {
    return this.#read(() => this.#totals.get() as { packs: number; bytes: number });
  }

  /** Packs with live blocks whose live bytes are at most `maxLiveFraction` of the object (compaction's candidates), oldest first. */
  sparsePacks(maxLiveFraction: number): Array<{ id: string; bytes: number; created: number; liveBytes: number }> {
    return this.#read(() => this.#sparse.all(maxLiveFraction) as Array<{ id: string; bytes: number; created: number; liveBytes: number }>);
  }

  /** Packs with live blocks that lost some (deleted since the pack landed): what an erasure compacts at once, oldest first. */
  holedPacks(): Array<{ id: string; bytes: number; created: number; liveBytes: number }> {
    return this.#read(() => this.#holed.all() as Array<{ id: string; bytes: number; created: number; liveBytes: number }>);
  }

  /**
   * Compaction's commit, one transaction: the blocks of `moved` that still point into pack `from`
   * now point into the uploaded pack `to` (a block deleted meanwhile is not brought back). `to`
   * gets a row (landed at `createdMs`) unless nothing moved; `from` keeps as live the blocks
   * still in it (0: dead, its object to delete, then `dropPack`).
   */
  repoint(from: string, to: string, toBytes: number, createdMs: number, moved: readonly LandedBlock[]): { moved: number; fromLive: number } {
    return this.#write(() => {
      this.#insertPack.run(to, toBytes, createdMs);
      let n = 0;
      for (const b of moved) n += Number(this.#move.run(to, b.start, b.cid.bytes, from).changes);
      if (n === 0) this.#dropPack.run(to);
      else this.#setLive.run(n, n, to);
      const fromLive = (this.#recount.get(from) as { live: number } | undefined)?.live ?? 0;
      return { moved: n, fromLive };
    });
  }

  /** Whether the index has a row for this pack (live or awaiting deletion). */
  hasPack(id: string): boolean {
    return this.#read(() => this.#hasPack.get(id) !== undefined);
  }

  /** Packs whose every block was deleted, their objects not yet (known to be) deleted. */
  deadPacks(): string[] {
    return this.#read(() => (this.#dead.all() as Array<{ id: string }>).map((r) => r.id));
  }

  /** Forgets a dead pack once its object is deleted. A pack with live blocks is kept. */
  dropPack(id: string): void {
    this.#write(() => {
      this.#dropPack.run(id);
    });
  }

  /**
   * Every indexed CID, read a page at a time (no statement stays open while the caller awaits,
   * so writes go on meanwhile; a block added during the walk may or may not be listed).
   */
  *cids(pageSize = 1000): Generator<CID> {
    let after: Uint8Array = new Uint8Array(0);
    for (;;) {
      const rows = this.#read(() => this.#page.all(after, pageSize) as Array<{ cid: Uint8Array }>);
      for (const row of rows) yield CID.decode(row.cid);
      if (rows.length < pageSize) return;
      after = rows[rows.length - 1]!.cid;
    }
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  #read<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw this.#failure(err, 'read');
    }
  }

  /** BEGIN IMMEDIATE: takes the write lock first, so two processes never deadlock on upgrade. */
  #write<T>(fn: () => T): T {
    try {
      this.#db.exec('BEGIN IMMEDIATE');
    } catch (err) {
      throw this.#failure(err, 'lock');
    }
    try {
      const result = fn();
      this.#db.exec('COMMIT');
      return result;
    } catch (err) {
      try {
        this.#db.exec('ROLLBACK');
      } catch {
        // The transaction is already gone (COMMIT failed and SQLite rolled back).
      }
      throw this.#failure(err, 'write');
    }
  }

  #failure(err: unknown, what: string): VaultError {
    if (err instanceof VaultError) return err;
    const reason = err instanceof Error ? err.message : 'unknown error';
    return new VaultError('STORE_UNAVAILABLE', `S3 pack index at ${this.path}: cannot ${what}: ${reason}`, { cause: err, details: { index: this.path } });
  }
}
