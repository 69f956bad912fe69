// Grants as the node keeps them, in `<data-dir>/grants.db`: each with the statement exactly as
// signed and the patient's proof, so that every use re-checks the signature (the row alone is
// never trusted: src/grants/service.ts), and an export carries what a third party can verify.
// Revocation is recorded (who, when), never a deletion. Share codes are kept as SHA-256 hashes
// only (256 random bits each), used once, and live at most SHARE_CODE_MAX_TTL_MS.
// One small interface, `GrantStore`, so that a PostgreSQL backend can stand beside this one.
import type { DatabaseSync } from 'node:sqlite';
import { VaultError } from '../core/errors.ts';
import { openDatabase, StatementCache, transaction } from '../core/sqlite.ts';
import { hashSecret, newSecret } from '../identity/store.ts';
import type { GrantProof, GrantRecord, GrantStatement, SignedGrant } from './model.ts';
import { granteePrincipal } from './statement.ts';

export const GRANTS_DB_FILE = 'grants.db';
/** A share code is exchanged within this long, or never. 10 minutes. */
export const SHARE_CODE_MAX_TTL_MS = 10 * 60_000;

/** A grant whose proof verified when it was added: only verifyForStore (service.ts) makes one. */
export interface VerifiedGrant extends SignedGrant {
  readonly verified: true;
}

const verified = new WeakSet<object>();

/** Marks a grant as verified; the service calls it right after the proof checked out. */
export function markVerified(grant: SignedGrant): VerifiedGrant {
  const v: VerifiedGrant = { statement: grant.statement, proof: grant.proof, verified: true };
  verified.add(v);
  return v;
}

/**
 * What trying a share code gave: its grant, or why not. The holder of a link is told which (the code is
 * 256 random bits, so telling nothing to a guesser), because "used already" means someone else opened
 * the link first and the patient should know.
 */
export type ShareCodeUse = { grantId: string } | { refused: 'unknown' } | { refused: 'used' | 'expired'; grantId: string };

export interface GrantStore {
  /** Stores a verified grant (CONFLICT when its id is taken). */
  add(grant: VerifiedGrant, now?: Date): GrantRecord;
  get(id: string): GrantRecord | undefined;
  /** The patient account's grants, newest first. */
  forPatient(account: string): GrantRecord[];
  /** Grants naming this principal id (user:..., oidc:...#..., link:<grant id>) as grantee, newest first. */
  forGrantee(principalId: string): GrantRecord[];
  /** Records the revocation; false when the grant is unknown or already revoked. Its unused share codes die with it. */
  revoke(id: string, by: string, now?: Date): boolean;
  /** A new single-use share code for a grant (returned once; its hash is kept), valid for `ttlMs` (at most SHARE_CODE_MAX_TTL_MS). */
  createShareCode(grantId: string, ttlMs: number, now?: Date): { code: string; expiresAt: Date };
  /** The grant a share code is for, used up at once; or why not: unknown, used already, or expired. */
  consumeShareCode(code: string, now?: Date): ShareCodeUse;
  close(): void;
}

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE grants (
    id          TEXT PRIMARY KEY,
    patient     TEXT NOT NULL,
    grantee     TEXT NOT NULL,
    statement   TEXT NOT NULL,
    proof       TEXT NOT NULL,
    not_before  TEXT NOT NULL,
    not_after   TEXT,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT,
    revoked_by  TEXT
  ) STRICT;
  CREATE INDEX grants_patient ON grants (patient, created_at);
  CREATE INDEX grants_grantee ON grants (grantee, created_at);
  CREATE TABLE share_codes (
    hash        TEXT PRIMARY KEY,
    grant_id    TEXT NOT NULL REFERENCES grants (id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
  ) STRICT;
  CREATE INDEX share_codes_grant ON share_codes (grant_id);
  `,
];

interface GrantRow {
  statement: string;
  proof: string;
  revoked_at: string | null;
  revoked_by: string | null;
}

const COLUMNS = 'statement, proof, revoked_at, revoked_by';

function toRecord(row: GrantRow): GrantRecord {
  return {
    statement: JSON.parse(row.statement) as GrantStatement,
    proof: JSON.parse(row.proof) as GrantProof,
    revokedAt: row.revoked_at,
    revokedBy: row.revoked_by,
  };
}

export class SqliteGrantStore implements GrantStore {
  readonly #db: DatabaseSync;
  readonly #stmts: StatementCache;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#stmts = new StatementCache(db);
  }

  /** Opens (creating) the grants database; secure_delete, so that what is overwritten is gone from the file too. */
  static open(path: string): SqliteGrantStore {
    return new SqliteGrantStore(openDatabase({ path, what: 'grant store', migrations: MIGRATIONS, pragmas: ['secure_delete = ON'] }));
  }

  add(grant: VerifiedGrant, now = new Date()): GrantRecord {
    if (!verified.has(grant)) throw new VaultError('INTERNAL', 'a grant reached the store without its proof having been verified');
    const s = grant.statement;
    return transaction(this.#db, () => {
      if (this.#stmts.get('SELECT 1 FROM grants WHERE id = ?').get(s.id) !== undefined) throw new VaultError('CONFLICT', `grant ${s.id} exists`);
      this.#stmts
        .get(
          'INSERT INTO grants (id, patient, grantee, statement, proof, not_before, not_after, created_at, revoked_at, revoked_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)',
        )
        .run(s.id, s.patient, granteePrincipal(s.grantee, s.id), JSON.stringify(s), JSON.stringify(grant.proof), s.notBefore, s.notAfter, now.toISOString());
      return { statement: s, proof: grant.proof, revokedAt: null, revokedBy: null };
    });
  }

  get(id: string): GrantRecord | undefined {
    const row = this.#stmts.get(`SELECT ${COLUMNS} FROM grants WHERE id = ?`).get(id) as GrantRow | undefined;
    return row === undefined ? undefined : toRecord(row);
  }

  forPatient(account: string): GrantRecord[] {
    return (this.#stmts.get(`SELECT ${COLUMNS} FROM grants WHERE patient = ? ORDER BY created_at DESC, id`).all(account) as unknown as GrantRow[]).map(
      toRecord,
    );
  }

  forGrantee(principalId: string): GrantRecord[] {
    return (this.#stmts.get(`SELECT ${COLUMNS} FROM grants WHERE grantee = ? ORDER BY created_at DESC, id`).all(principalId) as unknown as GrantRow[]).map(
      toRecord,
    );
  }

  revoke(id: string, by: string, now = new Date()): boolean {
    return transaction(this.#db, () => {
      const changed = Number(
        this.#stmts.get('UPDATE grants SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL').run(now.toISOString(), by, id).changes,
      );
      if (changed > 0) this.#stmts.get('UPDATE share_codes SET used_at = ? WHERE grant_id = ? AND used_at IS NULL').run(now.toISOString(), id);
      return changed > 0;
    });
  }

  createShareCode(grantId: string, ttlMs: number, now = new Date()): { code: string; expiresAt: Date } {
    if (!(ttlMs > 0 && ttlMs <= SHARE_CODE_MAX_TTL_MS))
      throw new VaultError('BAD_REQUEST', `a share code lives at most ${SHARE_CODE_MAX_TTL_MS / 60_000} minutes`);
    const code = newSecret('dvs_');
    const expiresAt = new Date(now.getTime() + ttlMs);
    transaction(this.#db, () => {
      if (this.#stmts.get('SELECT 1 FROM grants WHERE id = ?').get(grantId) === undefined) throw new VaultError('NOT_FOUND', `no grant ${grantId}`);
      // Spent codes are of no use to anyone: kept only until they would have expired anyway.
      this.#stmts.get('DELETE FROM share_codes WHERE expires_at <= ?').run(now.toISOString());
      this.#stmts
        .get('INSERT INTO share_codes (hash, grant_id, created_at, expires_at, used_at) VALUES (?, ?, ?, ?, NULL)')
        .run(hashSecret(code), grantId, now.toISOString(), expiresAt.toISOString());
    });
    return { code, expiresAt };
  }

  consumeShareCode(code: string, now = new Date()): ShareCodeUse {
    const hash = hashSecret(code);
    return transaction(this.#db, () => {
      const row = this.#stmts.get('SELECT grant_id, expires_at, used_at FROM share_codes WHERE hash = ?').get(hash) as
        | { grant_id: string; expires_at: string; used_at: string | null }
        | undefined;
      if (row === undefined) return { refused: 'unknown' };
      // Used up even when expired: a code is tried once.
      if (row.used_at === null) this.#stmts.get('UPDATE share_codes SET used_at = ? WHERE hash = ?').run(now.toISOString(), hash);
      if (Date.parse(row.expires_at) <= now.getTime()) return { refused: 'expired', grantId: row.grant_id };
      return row.used_at !== null ? { refused: 'used', grantId: row.grant_id } : { grantId: row.grant_id };
    });
  }

  close(): void {
    this.#db.close();
  }
}
