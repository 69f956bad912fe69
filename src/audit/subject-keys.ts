// The keys audit entries are sealed with: one per patient (a Patient ID and its issuer), one for
// the node (entries about no patient). Kept apart from the log, in a small mutable store
// (audit-keys.db), each wrapped (AES-256-GCM) by the node's master key: the log is append-only,
// this store is not, so that erasing a patient (the next issue) can destroy the key and leave
// their entries unreadable while the log still verifies.
//
// A subject is a random id: the log names no Patient ID. Patients are found by keyed tags (HMAC
// under a key derived from the master key) of their Patient ID and issuer, so the store holds no
// Patient ID either.
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, type KeyObject, randomBytes } from 'node:crypto';
import type { DatabaseSync } from 'node:sqlite';
import { VaultError } from '../core/errors.ts';
import { openDatabase, StatementCache, transaction } from '../core/sqlite.ts';

export const AUDIT_KEYS_DB_FILE = 'audit-keys.db';
/** The subject of entries about no patient. */
export const NODE_SUBJECT = 'node';
const WRAP_AAD = 'dicom-vault/v1/audit-key/';

/** A Patient ID; issuer null: the ID under any issuer (as grants and accounts name them). */
export interface SubjectRef {
  id: string;
  issuer: string | null;
}

/** Where audit keys live: SQLite now; a PostgreSQL table later, behind the same interface. */
export interface AuditKeyStore {
  /** The subject of this patient, its key created on first use. */
  subjectFor(ref: SubjectRef): string;
  /** The subjects of these refs that have keys (an issuer of null matches every issuer). */
  subjectsOf(refs: readonly SubjectRef[]): string[];
  /** The key of a subject; undefined when it never existed or was destroyed. */
  key(subject: string): Buffer | undefined;
  /** Destroys a subject's key: its entries can no longer be read. False when there was none. */
  destroy(subject: string): boolean;
  close(): void;
}

const MIGRATIONS = [
  `CREATE TABLE subjects (
     subject      TEXT PRIMARY KEY,
     id_tag       TEXT NOT NULL,
     issuer_tag   TEXT NOT NULL,
     wrapped      BLOB,
     created_at   TEXT NOT NULL,
     destroyed_at TEXT,
     UNIQUE (id_tag, issuer_tag)
   ) STRICT;`,
];

export class SqliteAuditKeyStore implements AuditKeyStore {
  readonly #db: DatabaseSync;
  readonly #stmts: StatementCache;
  readonly #master: Buffer;
  /** A KeyObject: createHmac re-imports raw key bytes on every call (42 µs against 4.4 µs). */
  readonly #tagKey: KeyObject;
  readonly #cache = new Map<string, Buffer>();
  /** Subjects by their tags: a subject never changes once made (destroying empties its key, not the row). */
  readonly #subjects = new Map<string, string>();

  private constructor(db: DatabaseSync, master: Buffer) {
    this.#db = db;
    this.#stmts = new StatementCache(db);
    this.#master = master;
    this.#tagKey = createSecretKey(Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), 'dicom-vault/v1/audit-subject-tag', 32)));
  }

  /** Opens (creating) the store; `masterKey` is the node's 32-byte master key. */
  static open(path: string, masterKey: Buffer): SqliteAuditKeyStore {
    // secure_delete: a destroyed key's bytes are overwritten in the file, not left in a free page.
    const db = openDatabase({ path, what: 'audit key store', migrations: MIGRATIONS, pragmas: ['secure_delete = ON'] });
    const store = new SqliteAuditKeyStore(db, masterKey);
    store.#ensureNodeKey();
    return store;
  }

  #tag(value: string | null): string {
    return value === null ? '' : createHmac('sha256', this.#tagKey).update(value).digest('base64url');
  }

  #ensureNodeKey(): void {
    if (this.#row(NODE_SUBJECT) !== undefined) return;
    this.#insert(NODE_SUBJECT, 'node', 'node');
  }

  #row(subject: string): { wrapped: Uint8Array | null } | undefined {
    return this.#stmts.get('SELECT wrapped FROM subjects WHERE subject = ?').get(subject) as { wrapped: Uint8Array | null } | undefined;
  }

  #insert(subject: string, idTag: string, issuerTag: string): void {
    const key = randomBytes(32);
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.#master, iv);
    c.setAAD(Buffer.from(WRAP_AAD + subject));
    const wrapped = Buffer.concat([iv, c.update(key), c.final(), c.getAuthTag()]);
    this.#stmts
      .get('INSERT OR IGNORE INTO subjects (subject, id_tag, issuer_tag, wrapped, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(subject, idTag, issuerTag, wrapped, new Date().toISOString());
  }

  subjectFor(ref: SubjectRef): string {
    const cacheKey = JSON.stringify([ref.id, ref.issuer]);
    const cached = this.#subjects.get(cacheKey);
    if (cached !== undefined) return cached;
    const subject = this.#subjectFor(ref);
    if (this.#subjects.size >= 100_000) this.#subjects.clear();
    this.#subjects.set(cacheKey, subject);
    return subject;
  }

  #subjectFor(ref: SubjectRef): string {
    const idTag = this.#tag(ref.id);
    const issuerTag = this.#tag(ref.issuer);
    const find = () =>
      (this.#stmts.get('SELECT subject FROM subjects WHERE id_tag = ? AND issuer_tag = ?').get(idTag, issuerTag) as { subject: string } | undefined)?.subject;
    const known = find();
    if (known !== undefined) return known;
    // Another process (a CLI next to the server) may create the same subject: the UNIQUE tags keep one.
    return transaction(this.#db, () => {
      const again = find();
      if (again !== undefined) return again;
      const subject = `p-${randomBytes(12).toString('base64url')}`;
      this.#insert(subject, idTag, issuerTag);
      return subject;
    });
  }

  subjectsOf(refs: readonly SubjectRef[]): string[] {
    const out = new Set<string>();
    for (const ref of refs) {
      const rows =
        ref.issuer === null
          ? this.#stmts.get('SELECT subject FROM subjects WHERE id_tag = ?').all(this.#tag(ref.id))
          : this.#stmts.get('SELECT subject FROM subjects WHERE id_tag = ? AND issuer_tag IN (?, ?)').all(this.#tag(ref.id), this.#tag(ref.issuer), '');
      for (const r of rows as Array<{ subject: string }>) out.add(r.subject);
    }
    return [...out];
  }

  key(subject: string): Buffer | undefined {
    const cached = this.#cache.get(subject);
    if (cached !== undefined) return cached;
    const row = this.#row(subject);
    if (row?.wrapped === null || row === undefined) return undefined;
    const w = Buffer.from(row.wrapped);
    const d = createDecipheriv('aes-256-gcm', this.#master, w.subarray(0, 12));
    d.setAAD(Buffer.from(WRAP_AAD + subject));
    d.setAuthTag(w.subarray(w.length - 16));
    let key: Buffer;
    try {
      key = Buffer.concat([d.update(w.subarray(12, w.length - 16)), d.final()]);
    } catch (cause) {
      throw new VaultError('KEY_UNWRAP_FAILED', `audit key ${subject} does not open with this node's master key`, { cause });
    }
    if (this.#cache.size >= 10_000) this.#cache.clear();
    this.#cache.set(subject, key);
    return key;
  }

  destroy(subject: string): boolean {
    this.#cache.delete(subject);
    const r = this.#stmts
      .get('UPDATE subjects SET wrapped = NULL, destroyed_at = ? WHERE subject = ? AND wrapped IS NOT NULL')
      .run(new Date().toISOString(), subject);
    return Number(r.changes) > 0;
  }

  close(): void {
    this.#stmts.clear();
    this.#db.close();
  }
}
