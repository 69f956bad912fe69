// What erasure keeps (erasure.db): retention holds per study, patients' erasure requests and the
// operator's decisions, the journal of erasures under way (so that a crash in the middle is
// finished on the next start, never left half done), and the signed certificates. Behind the
// ErasureStore interface (SQLite now, PostgreSQL later).
//
// The journal names the studies only while their erasure runs; its row is deleted at the end,
// with secure_delete on and the WAL truncated, so the file keeps no UID of an erased study.
// A finished request keeps its account and decision, not the study it named.
import type { DatabaseSync } from 'node:sqlite';
import { VaultError } from '../core/errors.ts';
import { StatementCache, openDatabase, scrubWal, transaction } from '../core/sqlite.ts';

export const ERASURE_DB_FILE = 'erasure.db';

export interface RetentionHold {
  studyInstanceUID: string;
  /** Why the study must be kept (the duty it follows), shown when an erasure is refused. */
  reason: string;
  /** ISO 8601 end of the hold; null: until lifted. */
  until: string | null;
  placedBy: string;
  placedAt: string;
}

export type RequestState = 'pending' | 'refused' | 'approved' | 'done' | 'failed';

export interface ErasureRequest {
  id: string;
  /** The patient account that asked. */
  account: string;
  /** 'patient': every study of the account's Patient IDs; 'study': one of them. */
  scope: 'patient' | 'study';
  /** The study asked for (scope 'study'); null once erased. */
  studyInstanceUID: string | null;
  state: RequestState;
  /** The operator's reason for a refusal (or the failure), shown to the patient. */
  reason: string | null;
  decidedBy: string | null;
  decidedAt: string | null;
  createdAt: string;
  certificateId: string | null;
}

/** An erasure under way: what a restart needs to finish it. */
export interface JournalEntry {
  id: string;
  /** JSON of the erasure's plan (service.ts ErasurePlan). */
  plan: string;
  startedAt: string;
}

export interface ErasureStore {
  placeHold(hold: RetentionHold): void;
  liftHold(studyInstanceUID: string): boolean;
  /** Holds in force at `now` on any of `studies` (all holds when undefined). */
  holds(now: string, studies?: readonly string[]): RetentionHold[];

  addRequest(r: ErasureRequest): void;
  request(id: string): ErasureRequest | undefined;
  requests(filter?: { account?: string; state?: RequestState }): ErasureRequest[];
  /** Moves a request from `from` to the new state; false when it was not in `from` (another operator decided first). */
  decide(id: string, from: RequestState, to: Partial<ErasureRequest> & { state: RequestState }): boolean;

  begin(entry: JournalEntry): void;
  unfinished(): JournalEntry[];
  /** Records what a journaled erasure has learnt so far (its plan, as JSON). */
  progress(journalId: string, plan: string): void;
  /**
   * Ends a journaled erasure in one transaction: the certificate is stored, the request (if any)
   * is done and no longer names its study, the journal row is destroyed; then the WAL is truncated.
   */
  finish(journalId: string, certificate: { id: string; json: string; issuedAt: string }, requestId?: string): void;
  certificate(id: string): string | undefined;
  close(): void;
}

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE holds (
     study_uid TEXT PRIMARY KEY,
     reason    TEXT NOT NULL,
     until     TEXT,
     placed_by TEXT NOT NULL,
     placed_at TEXT NOT NULL
   ) STRICT;
   CREATE TABLE requests (
     id             TEXT PRIMARY KEY,
     account        TEXT NOT NULL,
     scope          TEXT NOT NULL CHECK (scope IN ('patient', 'study')),
     study_uid      TEXT,
     state          TEXT NOT NULL CHECK (state IN ('pending', 'refused', 'approved', 'done', 'failed')),
     reason         TEXT,
     decided_by     TEXT,
     decided_at     TEXT,
     created_at     TEXT NOT NULL,
     certificate_id TEXT
   ) STRICT;
   CREATE INDEX requests_account ON requests (account, created_at);
   CREATE TABLE journal (
     id         TEXT PRIMARY KEY,
     plan       TEXT NOT NULL,
     started_at TEXT NOT NULL
   ) STRICT;
   CREATE TABLE certificates (
     id        TEXT PRIMARY KEY,
     json      TEXT NOT NULL,
     issued_at TEXT NOT NULL
   ) STRICT;`,
];

interface RequestRow {
  id: string;
  account: string;
  scope: 'patient' | 'study';
  study_uid: string | null;
  state: RequestState;
  reason: string | null;
  decided_by: string | null;
  decided_at: string | null;
  created_at: string;
  certificate_id: string | null;
}

function toRequest(r: RequestRow): ErasureRequest {
  return {
    id: r.id,
    account: r.account,
    scope: r.scope,
    studyInstanceUID: r.study_uid,
    state: r.state,
    reason: r.reason,
    decidedBy: r.decided_by,
    decidedAt: r.decided_at,
    createdAt: r.created_at,
    certificateId: r.certificate_id,
  };
}

export class SqliteErasureStore implements ErasureStore {
  readonly #db: DatabaseSync;
  readonly #stmts: StatementCache;

  constructor(path: string) {
    this.#db = openDatabase({ path, what: 'erasure database', migrations: MIGRATIONS, pragmas: ['secure_delete = ON'] });
    this.#stmts = new StatementCache(this.#db);
  }

  placeHold(h: RetentionHold): void {
    this.#stmts
      .get(
        `INSERT INTO holds (study_uid, reason, until, placed_by, placed_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (study_uid) DO UPDATE SET reason = excluded.reason, until = excluded.until, placed_by = excluded.placed_by, placed_at = excluded.placed_at`,
      )
      .run(h.studyInstanceUID, h.reason, h.until, h.placedBy, h.placedAt);
  }

  liftHold(studyInstanceUID: string): boolean {
    return this.#stmts.get('DELETE FROM holds WHERE study_uid = ?').run(studyInstanceUID).changes > 0;
  }

  holds(now: string, studies?: readonly string[]): RetentionHold[] {
    const rows = this.#stmts.get('SELECT * FROM holds WHERE until IS NULL OR until > ? ORDER BY study_uid').all(now) as unknown as Array<{
      study_uid: string;
      reason: string;
      until: string | null;
      placed_by: string;
      placed_at: string;
    }>;
    const wanted = studies === undefined ? undefined : new Set(studies);
    return rows
      .filter((r) => wanted === undefined || wanted.has(r.study_uid))
      .map((r) => ({ studyInstanceUID: r.study_uid, reason: r.reason, until: r.until, placedBy: r.placed_by, placedAt: r.placed_at }));
  }

  addRequest(r: ErasureRequest): void {
    this.#stmts
      .get(
        'INSERT INTO requests (id, account, scope, study_uid, state, reason, decided_by, decided_at, created_at, certificate_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(r.id, r.account, r.scope, r.studyInstanceUID, r.state, r.reason, r.decidedBy, r.decidedAt, r.createdAt, r.certificateId);
  }

  request(id: string): ErasureRequest | undefined {
    const row = this.#stmts.get('SELECT * FROM requests WHERE id = ?').get(id) as RequestRow | undefined;
    return row === undefined ? undefined : toRequest(row);
  }

  requests(filter: { account?: string; state?: RequestState } = {}): ErasureRequest[] {
    const rows = this.#stmts
      .get('SELECT * FROM requests WHERE (?1 IS NULL OR account = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY created_at, id')
      .all(filter.account ?? null, filter.state ?? null) as unknown as RequestRow[];
    return rows.map(toRequest);
  }

  decide(id: string, from: RequestState, to: Partial<ErasureRequest> & { state: RequestState }): boolean {
    const current = this.request(id);
    if (current === undefined) throw new VaultError('NOT_FOUND', `no erasure request ${id}`);
    const next = { ...current, ...to };
    const changed = this.#stmts
      .get('UPDATE requests SET state = ?, reason = ?, decided_by = ?, decided_at = ?, certificate_id = ?, study_uid = ? WHERE id = ? AND state = ?')
      .run(next.state, next.reason, next.decidedBy, next.decidedAt, next.certificateId, next.studyInstanceUID, id, from).changes;
    return changed > 0;
  }

  begin(entry: JournalEntry): void {
    this.#stmts.get('INSERT INTO journal (id, plan, started_at) VALUES (?, ?, ?)').run(entry.id, entry.plan, entry.startedAt);
  }

  progress(journalId: string, plan: string): void {
    this.#stmts.get('UPDATE journal SET plan = ? WHERE id = ?').run(plan, journalId);
  }

  unfinished(): JournalEntry[] {
    return (
      this.#stmts.get('SELECT id, plan, started_at FROM journal ORDER BY started_at, id').all() as unknown as Array<{
        id: string;
        plan: string;
        started_at: string;
      }>
    ).map((r) => ({ id: r.id, plan: r.plan, startedAt: r.started_at }));
  }

  finish(journalId: string, certificate: { id: string; json: string; issuedAt: string }, requestId?: string): void {
    transaction(this.#db, () => {
      this.#stmts.get('INSERT OR IGNORE INTO certificates (id, json, issued_at) VALUES (?, ?, ?)').run(certificate.id, certificate.json, certificate.issuedAt);
      this.#stmts.get('DELETE FROM journal WHERE id = ?').run(journalId);
      if (requestId !== undefined)
        this.#stmts.get("UPDATE requests SET state = 'done', certificate_id = ?, study_uid = NULL WHERE id = ?").run(certificate.id, requestId);
    });
    scrubWal(this.#db, 'erasure database');
  }

  certificate(id: string): string | undefined {
    return (this.#stmts.get('SELECT json FROM certificates WHERE id = ?').get(id) as { json: string } | undefined)?.json;
  }

  close(): void {
    this.#stmts.clear();
    this.#db.close();
  }
}
