// The node's keys. A master key (32 random bytes in a 0600 file, created on first start) wraps a
// data key per study; wrapped keys live in a small mutable SQLite store (`keys.db`) kept apart from
// the content-addressed DAG, so that destroying a study's row later erases the study
// (crypto-shredding) even though its blocks and on-chain hashes stay.
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, openSync, readFileSync, writeSync, closeSync, fsyncSync } from 'node:fs';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { openDatabase } from '../core/sqlite.ts';
import { VaultError } from '../core/errors.ts';
import { KEY_BYTES } from './seal.ts';

export const MASTER_KEY_FILE = 'master.key';
export const KEY_DB_FILE = 'keys.db';
const WRAP_AAD_PREFIX = 'dicom-vault/v1/wrapped-data-key/';

export interface DataKey {
  /** Random id; it names the key in manifests without naming the study. */
  keyId: string;
  key: Buffer;
}

/**
 * Creates a secret file (mode 0600, fsynced) unless it exists. When two processes race, one
 * creates it and the other keeps what the first wrote.
 */
export function createSecretFileOnce(path: string, contents: Uint8Array | string): void {
  if (existsSync(path)) return;
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw cause;
  }
  try {
    if (typeof contents === 'string') writeSync(fd, contents);
    else writeSync(fd, contents);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads the master key, creating it (mode 0600, fsynced) when `create` (a new data directory).
 * Whether a missing or different key may be made or used is decided before (shell/data-dir.ts).
 */
export function loadOrCreateMasterKey(path: string, create = true): Buffer {
  if (create) createSecretFileOnce(path, randomBytes(KEY_BYTES));
  const key = readFileSync(path);
  if (key.length !== KEY_BYTES) {
    throw new VaultError('CONFIG_INVALID', `master key ${path} must be exactly ${KEY_BYTES} bytes (found ${key.length})`);
  }
  return key;
}

function wrap(master: Buffer, keyId: string, key: Buffer): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', master, iv);
  c.setAAD(Buffer.from(WRAP_AAD_PREFIX + keyId));
  const ct = Buffer.concat([c.update(key), c.final()]);
  return Buffer.concat([iv, ct, c.getAuthTag()]);
}

function unwrap(master: Buffer, keyId: string, wrapped: Uint8Array): Buffer {
  const buf = Buffer.from(wrapped);
  const d = createDecipheriv('aes-256-gcm', master, buf.subarray(0, 12));
  d.setAAD(Buffer.from(WRAP_AAD_PREFIX + keyId));
  d.setAuthTag(buf.subarray(buf.length - 16));
  try {
    return Buffer.concat([d.update(buf.subarray(12, buf.length - 16)), d.final()]);
  } catch (cause) {
    throw new VaultError('KEY_UNWRAP_FAILED', `data key ${keyId} does not open with this node's master key`, { cause });
  }
}

const KEY_STORE_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS study_keys (
     study_uid  TEXT PRIMARY KEY,
     key_id     TEXT NOT NULL UNIQUE,
     wrapped    BLOB NOT NULL,
     created_at TEXT NOT NULL
   ) STRICT;`,
];

export interface KeyStoreOptions {
  /** Path of keys.db. */
  path: string;
  masterKey: Buffer;
}

export class KeyStore {
  readonly #db: DatabaseSync;
  readonly #master: Buffer;
  /**
   * Unwrapped keys by study (ingest and retrieval ask once per instance). Only the unwrapping is
   * cached: the row is read on every call, so a key destroyed by another connection (an
   * operator's tool, crypto-shredding) stops reads at once rather than at the next restart.
   */
  readonly #cache = new Map<string, DataKey>();
  readonly #selectRow: StatementSync;

  private constructor(db: DatabaseSync, master: Buffer) {
    this.#db = db;
    this.#master = master;
    this.#selectRow = db.prepare('SELECT key_id, wrapped FROM study_keys WHERE study_uid = ?');
  }

  static open(options: KeyStoreOptions): KeyStore {
    const db = openDatabase({ path: options.path, what: 'key store', migrations: KEY_STORE_MIGRATIONS, pragmas: ['secure_delete = ON'] });
    return new KeyStore(db, options.masterKey);
  }

  /** The study's data key, created (and durably stored) on first use. Safe across processes. */
  getOrCreate(studyInstanceUID: string): DataKey {
    const existing = this.get(studyInstanceUID);
    if (existing) return existing;
    const keyId = randomUUID();
    const key = randomBytes(KEY_BYTES);
    // INSERT OR IGNORE: when two ingests race to create the study's key, one row wins and both
    // read that one back.
    this.#db
      .prepare('INSERT OR IGNORE INTO study_keys (study_uid, key_id, wrapped, created_at) VALUES (?, ?, ?, ?)')
      .run(studyInstanceUID, keyId, wrap(this.#master, keyId, key), new Date().toISOString());
    const stored = this.get(studyInstanceUID);
    if (!stored) throw new VaultError('INTERNAL', 'data key vanished right after it was created');
    return stored;
  }

  get(studyInstanceUID: string): DataKey | undefined {
    const row = this.#selectRow.get(studyInstanceUID) as { key_id: string; wrapped: Uint8Array } | undefined;
    if (!row) {
      this.#cache.delete(studyInstanceUID);
      return undefined;
    }
    const cached = this.#cache.get(studyInstanceUID);
    if (cached?.keyId === row.key_id) return cached;
    const dk = { keyId: row.key_id, key: unwrap(this.#master, row.key_id, row.wrapped) };
    this.#cache.set(studyInstanceUID, dk);
    return dk;
  }

  /** Like get, but a missing key is an error (the study cannot be read). */
  require(studyInstanceUID: string): DataKey {
    const dk = this.get(studyInstanceUID);
    if (!dk) throw new VaultError('KEY_NOT_FOUND', 'no data key for this study: it was never stored here or has been erased');
    return dk;
  }

  byKeyId(keyId: string): DataKey | undefined {
    const row = this.#db.prepare('SELECT study_uid FROM study_keys WHERE key_id = ?').get(keyId) as { study_uid: string } | undefined;
    return row ? this.get(row.study_uid) : undefined;
  }

  /**
   * Unwraps one stored data key (if any) with the master key: MASTER_KEY_MISMATCH when it does not
   * open, which means the master key is not the one these keys were wrapped with.
   */
  checkMasterKey(): void {
    const row = this.#db.prepare('SELECT key_id, wrapped FROM study_keys LIMIT 1').get() as { key_id: string; wrapped: Uint8Array } | undefined;
    if (row === undefined) return;
    try {
      unwrap(this.#master, row.key_id, row.wrapped);
    } catch (cause) {
      throw new VaultError(
        'MASTER_KEY_MISMATCH',
        "keys.db's data keys do not open with this master.key: put back the master key they were wrapped with (from your backup)",
        { cause },
      );
    }
  }

  /** Imports a key brought from another node (already unwrapped by the caller's transport). */
  importKey(studyInstanceUID: string, dk: DataKey): void {
    this.#db
      .prepare('INSERT OR IGNORE INTO study_keys (study_uid, key_id, wrapped, created_at) VALUES (?, ?, ?, ?)')
      .run(studyInstanceUID, dk.keyId, wrap(this.#master, dk.keyId, dk.key), new Date().toISOString());
  }

  close(): void {
    this.#db.close();
    this.#cache.clear();
  }
}
