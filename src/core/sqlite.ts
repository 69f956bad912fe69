// Every embedded database of the node (catalog, key store, anchor state) opens the same way:
// WAL, synchronous=FULL (an answer means durable), foreign keys, a busy timeout for a second
// process (a CLI next to the server), and schema migrations applied in order.
import { DatabaseSync } from 'node:sqlite';
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
}

export function openDatabase(options: OpenDatabaseOptions): DatabaseSync {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(options.path, { enableForeignKeyConstraints: true });
  } catch (err) {
    throw new VaultError('CONFIG_INVALID', `cannot open the ${options.what} at ${options.path}`, { cause: err });
  }
  try {
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA synchronous = FULL');
    db.exec(`PRAGMA busy_timeout = ${Math.trunc(options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS)}`);
    for (const p of options.pragmas ?? []) db.exec(`PRAGMA ${p}`);
    migrate(db, options.what, options.migrations);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

function migrate(db: DatabaseSync, what: string, migrations: readonly string[]): void {
  const row = db.prepare('PRAGMA user_version').get() as { user_version: number } | undefined;
  const current = row?.user_version ?? 0;
  if (current > migrations.length) {
    throw new VaultError('CONFIG_INVALID', `${what} schema version ${current} is newer than this node supports (${migrations.length})`);
  }
  for (let v = current; v < migrations.length; v++) {
    db.exec('BEGIN IMMEDIATE');
    try {
      db.exec(migrations[v]!);
      db.exec(`PRAGMA user_version = ${v + 1}`);
      db.exec('COMMIT');
    } catch (err) {
      db.exec('ROLLBACK');
      throw new VaultError('INTERNAL', `${what} migration to schema ${v + 1} failed`, { cause: err });
    }
  }
}
