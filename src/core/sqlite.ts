// Every embedded database of the node (catalog, key store, anchor state) opens the same way:
// WAL, synchronous=FULL (an answer means durable), foreign keys, a busy timeout for a second
// process (a CLI next to the server), and schema migrations applied in order. Each keeps its
// prepared statements in a StatementCache and writes through transaction().
import { DatabaseSync, type SQLOutputValue, type StatementSync } from 'node:sqlite';
import { VaultError } from './errors.ts';

/** How long a writer waits for another process's lock. Default 5,000 ms. */
export const DEFAULT_BUSY_TIMEOUT_MS = 5_000;

export interface OpenDatabaseOptions {
  path: string;
  /** Names the database in errors: 'catalog', 'anchor database'... */
  what: string;
  /** migrations[n] takes the schema from user_version n to n + 1. Append only. */
  migrations: readonly string[];
  busyTimeoutMs?: number;
  /** Extra PRAGMAs, e.g. 'secure_delete = ON'. */
  pragmas?: readonly string[];
  /** Deterministic SQL functions, registered before the migrations run (a migration may fill a column with one). */
  functions?: Readonly<Record<string, (...args: never[]) => SQLOutputValue>>;
}

export function openDatabase(options: OpenDatabaseOptions): DatabaseSync {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(options.path, { enableForeignKeyConstraints: true });
  } catch (err) {
    throw new VaultError('CONFIG_INVALID', `cannot open the ${options.what} at ${options.path}`, { cause: err });
  }
  try {
    // The first statement reads the file's header: a file that is not a database fails here.
    db.exec(`PRAGMA busy_timeout = ${Math.trunc(options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS)}`);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA synchronous = FULL');
    for (const p of options.pragmas ?? []) db.exec(`PRAGMA ${p}`);
    for (const [name, fn] of Object.entries(options.functions ?? {}))
      db.function(name, { deterministic: true }, fn as (...args: SQLOutputValue[]) => SQLOutputValue);
    migrate(db, options.what, options.migrations);
  } catch (err) {
    db.close();
    if (isCorruption(err)) {
      throw new VaultError(
        'DATABASE_CORRUPT',
        `the ${options.what} at ${options.path} is not a database or is damaged: restore it from a backup (dicom-vault doctor checks every database)`,
        {
          cause: err,
          details: { path: options.path },
        },
      );
    }
    throw err;
  }
  return db;
}

/** SQLite's "not a database" (26) and "malformed" (11), by its own result codes. */
export function isCorruption(err: unknown): boolean {
  const errcode = (err as { errcode?: unknown }).errcode;
  return errcode === 26 || errcode === 11 || (typeof errcode === 'number' && (errcode & 0xff) === 11);
}

function migrate(db: DatabaseSync, what: string, migrations: readonly string[]): void {
  const row = db.prepare('PRAGMA user_version').get() as { user_version: number } | undefined;
  const current = row?.user_version ?? 0;
  if (current > migrations.length) {
    throw new VaultError('CONFIG_INVALID', `${what} schema version ${current} is newer than this node supports (${migrations.length})`);
  }
  for (let v = current; v < migrations.length; v++) {
    try {
      transaction(db, () => {
        db.exec(migrations[v]!);
        db.exec(`PRAGMA user_version = ${v + 1}`);
      });
    } catch (err) {
      throw new VaultError('INTERNAL', `${what} migration to schema ${v + 1} failed`, { cause: err });
    }
  }
}

/**
 * Runs `fn` in one write transaction. IMMEDIATE takes the write lock up front, so what `fn`
 * reads and what it writes see the same state even with another process writing the same
 * file. Nesting is refused: an inner COMMIT would publish half of the outer work, and every
 * caller here wants all-or-nothing, so a nested call is a bug to be told of.
 */
export function transaction<T>(db: DatabaseSync, fn: () => T): T {
  if (db.isTransaction) throw new VaultError('INTERNAL', 'a database transaction was begun inside another');
  db.exec('BEGIN IMMEDIATE');
  try {
    const result = fn();
    db.exec('COMMIT');
    return result;
  } catch (err) {
    // SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR); a second ROLLBACK
    // would then throw and hide the error that matters.
    if (db.isTransaction) db.exec('ROLLBACK');
    throw err;
  }
}

/** Prepared statements kept per database. Default bound 256 statements. */
export const DEFAULT_STATEMENT_CACHE_SIZE = 256;

/**
 * Prepared statements by SQL text, least recently used dropped past the bound: queries built
 * from a request (QIDO's filters) must not grow the cache without end. Preparing is what costs
 * (parsing and planning); a hit is one Map lookup.
 */
export class StatementCache {
  readonly #db: DatabaseSync;
  readonly #max: number;
  readonly #statements = new Map<string, StatementSync>();

  constructor(db: DatabaseSync, max = DEFAULT_STATEMENT_CACHE_SIZE) {
    this.#db = db;
    this.#max = Math.max(1, Math.trunc(max));
  }

  get(sql: string): StatementSync {
    let s = this.#statements.get(sql);
    if (s !== undefined) {
      this.#statements.delete(sql); // most recently used last
    } else {
      s = this.#db.prepare(sql);
      if (this.#statements.size >= this.#max) this.#statements.delete(this.#statements.keys().next().value!);
    }
    this.#statements.set(sql, s);
    return s;
  }

  get size(): number {
    return this.#statements.size;
  }

  clear(): void {
    this.#statements.clear();
  }
}

/**
 * Moves every page of the WAL into the database and truncates the WAL to zero bytes, so that a
 * row deleted under secure_delete (zeroed in its page) leaves no older copy of that page in the
 * WAL. Another connection reading at that moment holds the WAL: retried for up to 5 s, then
 * INTERNAL (an erasure is journaled and finished on the next start).
 */
export function scrubWal(db: DatabaseSync, what: string): void {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const r = db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get() as { busy: number; log: number; checkpointed: number };
    if (r.busy === 0 && (r.log === 0 || r.log === r.checkpointed)) return;
    if (Date.now() > deadline) throw new VaultError('INTERNAL', `the ${what}'s WAL could not be truncated: another process keeps reading it`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}
