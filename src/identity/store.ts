// Who may call the node, kept in `<data-dir>/identity.db`: local accounts, bearer tokens (stored as
// SHA-256 hashes only: each token is 256 random bits, so a fast hash is as good as a slow one and
// keeps a lookup per request cheap), patient accounts with the Patient IDs they are bound to, their
// registered keys (key files, passkeys), and one-time enrollment codes. One small interface,
// `IdentityStore`, so that a PostgreSQL backend can stand beside this SQLite one.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { DatabaseSync } from 'node:sqlite';
import type { PatientRef } from '../catalog/scope.ts';
import { VaultError } from '../core/errors.ts';
import { openDatabase, scrubWal, StatementCache, transaction } from '../core/sqlite.ts';
import type { Role } from './principal.ts';

export const IDENTITY_DB_FILE = 'identity.db';

/** What a bearer token stands for: a local account, a patient's session, or a share link bound to one grant. */
export type TokenKind = 'user' | 'patient' | 'link';
const TOKEN_PREFIX: Record<TokenKind, string> = { user: 'dvu_', patient: 'dvp_', link: 'dvl_' };

export interface UserRecord {
  name: string;
  roles: Role[];
  createdAt: string;
  revokedAt: string | null;
}

export interface TokenRecord {
  kind: TokenKind;
  /** user: the account name; patient: the patient account; link: the grant id. */
  subject: string;
  expiresAt: string | null;
  revokedAt: string | null;
}

/** A key a patient registered: an Ed25519 public key (a key file), or a WebAuthn credential (a passkey). */
export interface PatientKey {
  keyId: string;
  kind: 'ed25519' | 'webauthn';
  /** ed25519: SPKI PEM; webauthn: the COSE public key, base64url. */
  publicKey: string;
  /** webauthn: the credential id (base64url) and its signature counter. */
  credentialId?: string;
  counter?: number;
  createdAt: string;
}

export interface IdentityStore {
  addUser(name: string, roles: readonly Role[]): { token: string };
  users(): UserRecord[];
  user(name: string): UserRecord | undefined;
  /** Revokes the account and every token of it. */
  revokeUser(name: string): boolean;

  /** A new bearer token (returned once; only its hash is kept). */
  issueToken(kind: TokenKind, subject: string, expiresAt?: Date | null): string;
  /** The token's record, or undefined for one never issued. Whether it is still good is the caller's to check (revokedAt, expiresAt). */
  lookupToken(token: string): TokenRecord | undefined;
  /** Revokes every token of that kind for that subject (a share link's tokens, with its grant). */
  revokeTokens(kind: TokenKind, subject: string): number;

  createPatient(patientIds: readonly PatientRef[]): string;
  patientIds(account: string): PatientRef[];
  /** Accounts bound to a Patient ID (and issuer, when known). */
  accountsFor(ref: PatientRef): string[];

  /** A one-time code (returned once) that binds whoever presents it to `account`, until `expiresAt`. */
  createEnrollment(account: string, expiresAt: Date): string;
  /** The account a code enrolls into, used up at once; undefined for an unknown, used or expired code. */
  consumeEnrollment(code: string, now: Date): string | undefined;

  addPatientKey(account: string, key: Omit<PatientKey, 'createdAt'>): void;
  patientKeys(account: string): PatientKey[];
  /** WebAuthn: the signature counter after a verified assertion. */
  updateKeyCounter(keyId: string, counter: number): void;

  /**
   * A patient erased (GDPR Art. 17): unbinds this Patient ID (issuer null: under any issuer; else
   * that issuer's binding only) from every account, and deletes each account left with no
   * Patient ID whole: its keys and passkeys, enrollment codes, sessions (patient tokens), the
   * account row. secure_delete zeroes the rows, the WAL is truncated. Idempotent. Returns the
   * accounts deleted and those only unbound (still bound to another Patient ID).
   */
  forgetPatient(ref: PatientRef): { deleted: string[]; unbound: string[] };

  close(): void;
}

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    roles      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
  ) STRICT;
  CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
  ) STRICT;
  CREATE INDEX tokens_subject ON tokens (kind, subject);
  CREATE TABLE patients (
    account    TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
  ) STRICT;
  CREATE TABLE patient_ids (
    account    TEXT NOT NULL REFERENCES patients (account),
    patient_id TEXT NOT NULL,
    issuer     TEXT,
    PRIMARY KEY (account, patient_id, issuer)
  ) STRICT;
  CREATE INDEX patient_ids_by_id ON patient_ids (patient_id);
  CREATE TABLE patient_keys (
    key_id        TEXT PRIMARY KEY,
    account       TEXT NOT NULL REFERENCES patients (account),
    kind          TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    credential_id TEXT UNIQUE,
    counter       INTEGER,
    created_at    TEXT NOT NULL
  ) STRICT;
  CREATE TABLE enrollments (
    hash       TEXT PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES patients (account),
    expires_at TEXT NOT NULL,
    used_at    TEXT
  ) STRICT;
  `,
  // A STRICT table's PRIMARY KEY columns are NOT NULL, so a Patient ID without an issuer (null:
  // any issuer) was dropped silently by createPatient's INSERT OR IGNORE. Uniqueness moves to an
  // index that treats a null issuer as one value.
  `
  CREATE TABLE patient_ids_v2 (
    account    TEXT NOT NULL REFERENCES patients (account),
    patient_id TEXT NOT NULL,
    issuer     TEXT
  ) STRICT;
  INSERT INTO patient_ids_v2 (account, patient_id, issuer) SELECT account, patient_id, issuer FROM patient_ids;
  DROP TABLE patient_ids;
  ALTER TABLE patient_ids_v2 RENAME TO patient_ids;
  CREATE UNIQUE INDEX patient_ids_unique ON patient_ids (account, patient_id, ifnull(issuer, ''));
  CREATE INDEX patient_ids_by_id ON patient_ids (patient_id);
  `,
];

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** 256 random bits, base64url, behind a prefix that says what it is (and lets secret scanners find it). */
export function newSecret(prefix: string): string {
  return prefix + randomBytes(32).toString('base64url');
}

export class SqliteIdentityStore implements IdentityStore {
  readonly #db: DatabaseSync;
  readonly #stmts: StatementCache;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#stmts = new StatementCache(db);
  }

  static open(path: string): SqliteIdentityStore {
    return new SqliteIdentityStore(openDatabase({ path, what: 'identity store', migrations: MIGRATIONS, pragmas: ['secure_delete = ON'] }));
  }

  addUser(name: string, roles: readonly Role[]): { token: string } {
    if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(name)) {
      throw new VaultError('BAD_REQUEST', `"${name}" is not a user name (1-64 letters, digits, . _ @ -, starting with a letter or digit)`);
    }
    if (roles.length === 0) throw new VaultError('BAD_REQUEST', 'a user needs at least one role');
    return transaction(this.#db, () => {
      const existing = this.user(name);
      if (existing !== undefined && existing.revokedAt === null) throw new VaultError('CONFLICT', `user ${name} exists`);
      this.#stmts
        .get(
          'INSERT INTO users (name, roles, created_at, revoked_at) VALUES (?, ?, ?, NULL) ON CONFLICT (name) DO UPDATE SET roles = excluded.roles, created_at = excluded.created_at, revoked_at = NULL',
        )
        .run(name, JSON.stringify([...new Set(roles)]), new Date().toISOString());
      return { token: this.issueToken('user', name) };
    });
  }

  users(): UserRecord[] {
    return (this.#stmts.get('SELECT name, roles, created_at, revoked_at FROM users ORDER BY name').all() as unknown as UserRow[]).map(toUser);
  }

  user(name: string): UserRecord | undefined {
    const row = this.#stmts.get('SELECT name, roles, created_at, revoked_at FROM users WHERE name = ?').get(name) as UserRow | undefined;
    return row === undefined ? undefined : toUser(row);
  }

  revokeUser(name: string): boolean {
    return transaction(this.#db, () => {
      const now = new Date().toISOString();
      const changed = this.#stmts.get('UPDATE users SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL').run(now, name).changes;
      this.#stmts.get("UPDATE tokens SET revoked_at = ? WHERE kind = 'user' AND subject = ? AND revoked_at IS NULL").run(now, name);
      return Number(changed) > 0;
    });
  }

  issueToken(kind: TokenKind, subject: string, expiresAt: Date | null = null): string {
    const token = newSecret(TOKEN_PREFIX[kind]);
    this.#stmts
      .get('INSERT INTO tokens (hash, kind, subject, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL)')
      .run(hashSecret(token), kind, subject, new Date().toISOString(), expiresAt?.toISOString() ?? null);
    return token;
  }

  lookupToken(token: string): TokenRecord | undefined {
    const row = this.#stmts.get('SELECT kind, subject, expires_at, revoked_at FROM tokens WHERE hash = ?').get(hashSecret(token)) as
      | { kind: TokenKind; subject: string; expires_at: string | null; revoked_at: string | null }
      | undefined;
    return row === undefined ? undefined : { kind: row.kind, subject: row.subject, expiresAt: row.expires_at, revokedAt: row.revoked_at };
  }

  revokeTokens(kind: TokenKind, subject: string): number {
    return Number(
      this.#stmts.get('UPDATE tokens SET revoked_at = ? WHERE kind = ? AND subject = ? AND revoked_at IS NULL').run(new Date().toISOString(), kind, subject)
        .changes,
    );
  }

  createPatient(patientIds: readonly PatientRef[]): string {
    if (patientIds.length === 0) throw new VaultError('BAD_REQUEST', 'a patient account needs at least one Patient ID');
    const account = randomUUID();
    transaction(this.#db, () => {
      this.#stmts.get('INSERT INTO patients (account, created_at) VALUES (?, ?)').run(account, new Date().toISOString());
      for (const ref of patientIds)
        this.#stmts.get('INSERT OR IGNORE INTO patient_ids (account, patient_id, issuer) VALUES (?, ?, ?)').run(account, ref.id, ref.issuer);
    });
    return account;
  }

  patientIds(account: string): PatientRef[] {
    return (
      this.#stmts.get('SELECT patient_id, issuer FROM patient_ids WHERE account = ? ORDER BY patient_id, issuer').all(account) as unknown as Array<{
        patient_id: string;
        issuer: string | null;
      }>
    ).map((r) => ({ id: r.patient_id, issuer: r.issuer }));
  }

  accountsFor(ref: PatientRef): string[] {
    const rows = this.#stmts
      .get('SELECT DISTINCT account FROM patient_ids WHERE patient_id = ? AND (? IS NULL OR issuer IS NULL OR issuer = ?)')
      .all(ref.id, ref.issuer, ref.issuer) as unknown as Array<{
      account: string;
    }>;
    return rows.map((r) => r.account);
  }

  createEnrollment(account: string, expiresAt: Date): string {
    const code = newSecret('dve_');
    this.#stmts
      .get('INSERT INTO enrollments (hash, account, expires_at, used_at) VALUES (?, ?, ?, NULL)')
      .run(hashSecret(code), account, expiresAt.toISOString());
    return code;
  }

  consumeEnrollment(code: string, now: Date): string | undefined {
    return transaction(this.#db, () => {
      const row = this.#stmts.get('SELECT account, expires_at, used_at FROM enrollments WHERE hash = ?').get(hashSecret(code)) as
        | { account: string; expires_at: string; used_at: string | null }
        | undefined;
      if (row === undefined || row.used_at !== null || Date.parse(row.expires_at) <= now.getTime()) return undefined;
      this.#stmts.get('UPDATE enrollments SET used_at = ? WHERE hash = ?').run(now.toISOString(), hashSecret(code));
      return row.account;
    });
  }

  addPatientKey(account: string, key: Omit<PatientKey, 'createdAt'>): void {
    this.#stmts
      .get('INSERT INTO patient_keys (key_id, account, kind, public_key, credential_id, counter, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(key.keyId, account, key.kind, key.publicKey, key.credentialId ?? null, key.counter ?? null, new Date().toISOString());
  }

  patientKeys(account: string): PatientKey[] {
    const rows = this.#stmts
      .get('SELECT key_id, kind, public_key, credential_id, counter, created_at FROM patient_keys WHERE account = ? ORDER BY created_at')
      .all(account) as unknown as Array<{
      key_id: string;
      kind: 'ed25519' | 'webauthn';
      public_key: string;
      credential_id: string | null;
      counter: number | null;
      created_at: string;
    }>;
    return rows.map((r) => ({
      keyId: r.key_id,
      kind: r.kind,
      publicKey: r.public_key,
      ...(r.credential_id === null ? {} : { credentialId: r.credential_id }),
      ...(r.counter === null ? {} : { counter: r.counter }),
      createdAt: r.created_at,
    }));
  }

  updateKeyCounter(keyId: string, counter: number): void {
    this.#stmts.get('UPDATE patient_keys SET counter = ? WHERE key_id = ?').run(counter, keyId);
  }

  forgetPatient(ref: PatientRef): { deleted: string[]; unbound: string[] } {
    const result = transaction(this.#db, () => {
      const accounts = (
        this.#stmts
          .get('SELECT DISTINCT account FROM patient_ids WHERE patient_id = ? AND (? IS NULL OR issuer = ?)')
          .all(ref.id, ref.issuer, ref.issuer) as unknown as Array<{
          account: string;
        }>
      ).map((r) => r.account);
      const deleted: string[] = [];
      const unbound: string[] = [];
      for (const account of accounts) {
        this.#stmts
          .get('DELETE FROM patient_ids WHERE account = ? AND patient_id = ? AND (? IS NULL OR issuer = ?)')
          .run(account, ref.id, ref.issuer, ref.issuer);
        if (this.patientIds(account).length > 0) {
          unbound.push(account);
          continue;
        }
        // Nothing of the account stays: no tombstone is needed, since the audit log names the
        // account only by its random id and the erasure certificate names none.
        this.#stmts.get("DELETE FROM tokens WHERE kind = 'patient' AND subject = ?").run(account);
        this.#stmts.get('DELETE FROM patient_keys WHERE account = ?').run(account);
        this.#stmts.get('DELETE FROM enrollments WHERE account = ?').run(account);
        this.#stmts.get('DELETE FROM patients WHERE account = ?').run(account);
        deleted.push(account);
      }
      return { deleted, unbound };
    });
    scrubWal(this.#db, 'identity store');
    return result;
  }

  close(): void {
    this.#db.close();
  }
}

interface UserRow {
  name: string;
  roles: string;
  created_at: string;
  revoked_at: string | null;
}

function toUser(r: UserRow): UserRecord {
  return { name: r.name, roles: JSON.parse(r.roles) as Role[], createdAt: r.created_at, revokedAt: r.revoked_at };
}
