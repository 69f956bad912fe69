// The node's keys, built for erasure (crypto-shredding). A master key (32 random bytes in a 0600
// file, created on first start) wraps one key per patient; each patient key wraps the data keys
// of that patient's studies. Wrapped keys live in a small mutable store (`keys.db`, SQLite; the
// KeyRows interface below is what a PostgreSQL backend implements) kept apart from the
// content-addressed DAG, so that destroying a study's row erases the study, and destroying a
// patient's row erases every study of theirs still wrapped under it, even though their blocks and
// on-chain hashes stay.
//
//   master.key ──wraps──> patient key (patient_keys: issuer, patient id)
//                             └──wraps──> study data key + anchor salt (study_keys: study UID)
//                                             └──HKDF──> instance and manifest keys (seal.ts)
//
// Why study keys are random and wrapped, not derived (HKDF(patientKey, studyUID)): a derived key
// cannot be destroyed alone (erasing one study would need the whole patient's key gone), and the
// existing studies' keys are random already (deriving would mean re-encrypting every chunk).
// No series keys: grants are enforced by the node (it decrypts for the grantee, filtered by
// series server-side) and erasure is by study or patient, so neither needs a key per series; a
// series key would change the chunk key derivation (seal.ts) and cost a re-encryption of every
// stored study. The rows name their kind, so series keys can be added where a hand-over of one
// series needs them.
//
// Every wrap is AES-256-GCM whose associated data binds the key to whom and what it belongs to
// (patient key: issuer, patient id, key id; study key: the same plus study UID and anchor salt):
// rows swapped in the store fail to open (KEY_UNWRAP_FAILED) instead of pointing one study's
// reads, or its erasure, at another.
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import type { DatabaseSync } from 'node:sqlite';
import { VaultError } from '../core/errors.ts';
import { StatementCache, openDatabase, scrubWal, transaction } from '../core/sqlite.ts';
import { KEY_BYTES } from './seal.ts';

export const MASTER_KEY_FILE = 'master.key';
export const KEY_DB_FILE = 'keys.db';
/** The wrap of release 0.1 (commit 2fe1005 and before): a study key under the master key, AAD its key id only. */
const LEGACY_WRAP_AAD_PREFIX = 'dicom-vault/v1/wrapped-data-key/';
/** Bytes of a study's anchor salt (anchor/commitment.ts). */
export const ANCHOR_SALT_BYTES = 32;

/**
 * The study column of anchor queue rows that are no study's version: an erasure certificate
 * (src/erasure/certificate.ts), anchored as its bare CID (it names nothing to hide), with no salt.
 */
export const CERTIFICATE_ANCHOR_STUDY = 'dicom-vault/erasure-certificate';
/** The "study" of the audit log's tree heads in anchor.db (src/shell/audit.ts, issue 24). */
export const AUDIT_ANCHOR_STUDY = 'audit-log';
/** Leaves that are the node's own records, not a patient's study: anchored as they are, with no salt. */
export const UNSALTED_ANCHOR_STUDIES: ReadonlySet<string> = new Set([CERTIFICATE_ANCHOR_STUDY, AUDIT_ANCHOR_STUDY]);

export interface DataKey {
  /** Random id; it names the key in manifests without naming the study. */
  keyId: string;
  key: Buffer;
}

/** A patient as the key store names one: Patient ID and Issuer of Patient ID ('' when absent). */
export interface PatientRef {
  patientId: string;
  issuer: string;
}

/** The patient of keys whose patient is not known (a study imported from a CAR; a study without a catalog row at migration). */
export const UNKNOWN_PATIENT: PatientRef = Object.freeze({ patientId: '', issuer: '' });

/** A study's key with what belongs beside it. */
export interface StudyKey extends DataKey {
  studyInstanceUID: string;
  patient: PatientRef;
  /** Salt of the study's anchored commitments (anchor/commitment.ts); destroyed with the key. */
  anchorSalt: Buffer;
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

// -- wrapping --------------------------------------------------------------------------------

/** Associated data as a JSON array: unambiguous whatever the strings hold (a Patient ID may contain anything). */
function aad(parts: readonly string[]): Buffer {
  return Buffer.from(JSON.stringify(parts));
}

function patientAad(p: PatientRef, keyId: string): Buffer {
  return aad(['dicom-vault/patient-key/2', p.issuer, p.patientId, keyId]);
}

function studyAad(p: PatientRef, studyUID: string, keyId: string, salt: Uint8Array): Buffer {
  return aad(['dicom-vault/study-key/2', p.issuer, p.patientId, studyUID, keyId, Buffer.from(salt).toString('hex')]);
}

function wrap(kek: Buffer, ad: Buffer, key: Buffer): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', kek, iv);
  c.setAAD(ad);
  const ct = Buffer.concat([c.update(key), c.final()]);
  return Buffer.concat([iv, ct, c.getAuthTag()]);
}

function unwrap(kek: Buffer, ad: Buffer, wrapped: Uint8Array, what: string): Buffer {
  const buf = Buffer.from(wrapped);
  if (buf.length < 28) throw new VaultError('KEY_UNWRAP_FAILED', `${what} is too short to be a wrapped key`);
  const d = createDecipheriv('aes-256-gcm', kek, buf.subarray(0, 12));
  d.setAAD(ad);
  d.setAuthTag(buf.subarray(buf.length - 16));
  try {
    return Buffer.concat([d.update(buf.subarray(12, buf.length - 16)), d.final()]);
  } catch (cause) {
    throw new VaultError('KEY_UNWRAP_FAILED', `${what} does not open: altered, moved to another row, or wrapped with another master key`, { cause });
  }
}

function legacyUnwrap(master: Buffer, keyId: string, wrapped: Uint8Array): Buffer {
  return unwrap(master, Buffer.from(LEGACY_WRAP_AAD_PREFIX + keyId), wrapped, `data key ${keyId}`);
}

// -- the store interface ---------------------------------------------------------------------

export interface PatientKeyRow {
  patient: PatientRef;
  keyId: string;
  wrapped: Uint8Array;
}

export interface StudyKeyRow {
  studyInstanceUID: string;
  /** Null for a row of release 0.1 not yet migrated (wrap 1). */
  patient: PatientRef | null;
  keyId: string;
  wrapped: Uint8Array;
  anchorSalt: Uint8Array | null;
  /** 1: under the master key, bound to its key id only (release 0.1); 2: under the patient key, bound to patient, study, key id and salt. */
  wrap: 1 | 2;
}

/**
 * Where wrapped keys are kept: rows in, rows out, destruction. SQLite here (SqliteKeyRows); a
 * PostgreSQL backend implements the same. Everything cryptographic stays in KeyStore.
 */
export interface KeyRows {
  patientKey(patient: PatientRef): PatientKeyRow | undefined;
  /** Inserts unless the patient has a key already (a race: both read the winner back). */
  insertPatientKey(row: PatientKeyRow, createdAt: string): void;
  studyKey(studyInstanceUID: string): StudyKeyRow | undefined;
  studyByKeyId(keyId: string): string | undefined;
  insertStudyKey(row: StudyKeyRow, createdAt: string): void;
  studiesOf(patient: PatientRef): string[];
  /** Any one wrapped key, to check the master key against. */
  anyRow(): { patient?: PatientKeyRow; legacy?: StudyKeyRow } | undefined;
  /** Rows of release 0.1 still to migrate. */
  legacyRows(): StudyKeyRow[];
  /** Runs `fn` as one transaction. */
  atomically<T>(fn: () => T): T;
  /** Replaces a study row (migration). */
  replaceStudyKey(row: StudyKeyRow): void;
  /** Deletes the rows (study keys and salts; the patient key with `patient`) and leaves no copy in any file. */
  destroy(what: { studies: readonly string[]; patient?: PatientRef }): { studies: number; patient: boolean };
  close(): void;
}

const KEY_STORE_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS study_keys (
     study_uid  TEXT PRIMARY KEY,
     key_id     TEXT NOT NULL UNIQUE,
     wrapped    BLOB NOT NULL,
     created_at TEXT NOT NULL
   ) STRICT;`,
  // 2: the hierarchy. Rows of schema 1 keep wrap = 1 until KeyStore.migrate rewraps them (it
  // needs the catalog to learn each study's patient).
  `CREATE TABLE patient_keys (
     issuer     TEXT NOT NULL,
     patient_id TEXT NOT NULL,
     key_id     TEXT NOT NULL UNIQUE,
     wrapped    BLOB NOT NULL,
     created_at TEXT NOT NULL,
     PRIMARY KEY (issuer, patient_id)
   ) STRICT;
   ALTER TABLE study_keys ADD COLUMN issuer TEXT;
   ALTER TABLE study_keys ADD COLUMN patient_id TEXT;
   ALTER TABLE study_keys ADD COLUMN anchor_salt BLOB;
   ALTER TABLE study_keys ADD COLUMN wrap INTEGER NOT NULL DEFAULT 1 CHECK (wrap IN (1, 2));
   CREATE INDEX study_keys_patient ON study_keys (issuer, patient_id);`,
];

interface StudyRowRaw {
  study_uid: string;
  key_id: string;
  wrapped: Uint8Array;
  issuer: string | null;
  patient_id: string | null;
  anchor_salt: Uint8Array | null;
  wrap: number;
}

function toStudyRow(r: StudyRowRaw): StudyKeyRow {
  return {
    studyInstanceUID: r.study_uid,
    patient: r.patient_id === null ? null : { patientId: r.patient_id, issuer: r.issuer ?? '' },
    keyId: r.key_id,
    wrapped: r.wrapped,
    anchorSalt: r.anchor_salt,
    wrap: r.wrap === 2 ? 2 : 1,
  };
}

const STUDY_COLUMNS = 'study_uid, key_id, wrapped, issuer, patient_id, anchor_salt, wrap';

/**
 * keys.db. `secure_delete` overwrites deleted rows and freed pages with zeros; after a
 * destruction the WAL is checkpointed into the database and truncated to zero bytes, so the
 * wrapped key is in neither file.
 */
export class SqliteKeyRows implements KeyRows {
  readonly #db: DatabaseSync;
  readonly #stmts: StatementCache;

  constructor(path: string) {
    this.#db = openDatabase({ path, what: 'key store', migrations: KEY_STORE_MIGRATIONS, pragmas: ['secure_delete = ON'] });
    this.#stmts = new StatementCache(this.#db);
  }

  patientKey(p: PatientRef): PatientKeyRow | undefined {
    const r = this.#stmts.get('SELECT key_id, wrapped FROM patient_keys WHERE issuer = ? AND patient_id = ?').get(p.issuer, p.patientId) as
      | { key_id: string; wrapped: Uint8Array }
      | undefined;
    return r === undefined ? undefined : { patient: { patientId: p.patientId, issuer: p.issuer }, keyId: r.key_id, wrapped: r.wrapped };
  }

  insertPatientKey(row: PatientKeyRow, createdAt: string): void {
    this.#stmts
      .get('INSERT OR IGNORE INTO patient_keys (issuer, patient_id, key_id, wrapped, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(row.patient.issuer, row.patient.patientId, row.keyId, row.wrapped, createdAt);
  }

  studyKey(studyUID: string): StudyKeyRow | undefined {
    const r = this.#stmts.get(`SELECT ${STUDY_COLUMNS} FROM study_keys WHERE study_uid = ?`).get(studyUID) as StudyRowRaw | undefined;
    return r === undefined ? undefined : toStudyRow(r);
  }

  studyByKeyId(keyId: string): string | undefined {
    return (this.#stmts.get('SELECT study_uid FROM study_keys WHERE key_id = ?').get(keyId) as { study_uid: string } | undefined)?.study_uid;
  }

  insertStudyKey(row: StudyKeyRow, createdAt: string): void {
    this.#stmts
      .get('INSERT OR IGNORE INTO study_keys (study_uid, key_id, wrapped, created_at, issuer, patient_id, anchor_salt, wrap) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(row.studyInstanceUID, row.keyId, row.wrapped, createdAt, row.patient?.issuer ?? null, row.patient?.patientId ?? null, row.anchorSalt, row.wrap);
  }

  replaceStudyKey(row: StudyKeyRow): void {
    this.#stmts
      .get('UPDATE study_keys SET key_id = ?, wrapped = ?, issuer = ?, patient_id = ?, anchor_salt = ?, wrap = ? WHERE study_uid = ?')
      .run(row.keyId, row.wrapped, row.patient?.issuer ?? null, row.patient?.patientId ?? null, row.anchorSalt, row.wrap, row.studyInstanceUID);
  }

  studiesOf(p: PatientRef): string[] {
    return (
      this.#stmts.get('SELECT study_uid FROM study_keys WHERE issuer = ? AND patient_id = ? ORDER BY study_uid').all(p.issuer, p.patientId) as Array<{
        study_uid: string;
      }>
    ).map((r) => r.study_uid);
  }

  anyRow(): { patient?: PatientKeyRow; legacy?: StudyKeyRow } | undefined {
    const p = this.#stmts.get('SELECT issuer, patient_id, key_id, wrapped FROM patient_keys LIMIT 1').get() as
      | { issuer: string; patient_id: string; key_id: string; wrapped: Uint8Array }
      | undefined;
    if (p !== undefined) return { patient: { patient: { patientId: p.patient_id, issuer: p.issuer }, keyId: p.key_id, wrapped: p.wrapped } };
    const l = this.#stmts.get(`SELECT ${STUDY_COLUMNS} FROM study_keys WHERE wrap = 1 LIMIT 1`).get() as StudyRowRaw | undefined;
    return l === undefined ? undefined : { legacy: toStudyRow(l) };
  }

  legacyRows(): StudyKeyRow[] {
    return (this.#stmts.get(`SELECT ${STUDY_COLUMNS} FROM study_keys WHERE wrap = 1 ORDER BY study_uid`).all() as unknown as StudyRowRaw[]).map(toStudyRow);
  }

  atomically<T>(fn: () => T): T {
    return transaction(this.#db, fn);
  }

  destroy(what: { studies: readonly string[]; patient?: PatientRef }): { studies: number; patient: boolean } {
    const result = transaction(this.#db, () => {
      let studies = 0;
      const del = this.#stmts.get('DELETE FROM study_keys WHERE study_uid = ?');
      for (const s of what.studies) studies += Number(del.run(s).changes);
      let patient = false;
      if (what.patient !== undefined) {
        studies += Number(
          this.#stmts.get('DELETE FROM study_keys WHERE issuer = ? AND patient_id = ?').run(what.patient.issuer, what.patient.patientId).changes,
        );
        patient = this.#stmts.get('DELETE FROM patient_keys WHERE issuer = ? AND patient_id = ?').run(what.patient.issuer, what.patient.patientId).changes > 0;
      }
      return { studies, patient };
    });
    scrubWal(this.#db, 'key store');
    return result;
  }

  close(): void {
    this.#stmts.clear();
    this.#db.close();
  }
}

// -- the key store ---------------------------------------------------------------------------

/**
 * Unwrapped study keys a KeyStore keeps in memory, the least recently used dropped past it. An
 * entry (UIDs, key id, patient, key and salt Buffers, Map entry) costs about 1.5 KB (measured:
 * V8 heap + external after GC over 20,000 new studies, 1.6 KB a study unbounded, 0.1 KB with
 * this bound), so 1,024 is about 1.5 MB; unbounded, the cache grew by one entry per study ever
 * stored or read, for the life of the process (a million studies: 1.6 GB). A key that left is
 * unwrapped again from its row: two AES-GCM opens of 32 bytes, microseconds.
 */
export const DEFAULT_KEY_CACHE_SIZE = 1024;

export interface KeyStoreOptions {
  /** Path of keys.db. */
  path: string;
  masterKey: Buffer;
  /** Unwrapped study keys kept in memory. Default DEFAULT_KEY_CACHE_SIZE. */
  cacheSize?: number;
}

/** What migration learns from the catalog: the patient of each study. */
export type PatientOfStudy = (studyInstanceUID: string) => PatientRef | undefined;

export class KeyStore {
  readonly #rows: KeyRows;
  readonly #master: Buffer;
  /**
   * Unwrapped keys by study (ingest and retrieval ask once per instance), in order of use (a Map
   * keeps insertion order; a hit moves its entry to the end), at most #cacheSize. Only the
   * unwrapping is cached: the row is read on every call, so a key destroyed by another
   * connection (an operator's tool, an erasure) stops reads at once rather than at the next
   * restart. Patient keys are not cached at all: one is unwrapped only when a study key is (a
   * miss here, or a new study), and a cached patient key would outlive its row's erasure by
   * another process and wrap a new study under a destroyed key.
   */
  readonly #cache = new Map<string, StudyKey>();
  readonly #cacheSize: number;

  constructor(rows: KeyRows, master: Buffer, cacheSize = DEFAULT_KEY_CACHE_SIZE) {
    this.#rows = rows;
    this.#master = master;
    this.#cacheSize = Math.max(1, Math.trunc(cacheSize));
  }

  static open(options: KeyStoreOptions): KeyStore {
    return new KeyStore(new SqliteKeyRows(options.path), options.masterKey, options.cacheSize);
  }

  get rows(): KeyRows {
    return this.#rows;
  }

  /** Unwrapped study keys held in memory now (at most the cache size). */
  get cachedKeys(): number {
    return this.#cache.size;
  }

  #patientKey(patient: PatientRef, create: boolean): Buffer | undefined {
    let row = this.#rows.patientKey(patient);
    if (row === undefined) {
      if (!create) return undefined;
      const keyId = randomUUID();
      const key = randomBytes(KEY_BYTES);
      this.#rows.insertPatientKey({ patient, keyId, wrapped: wrap(this.#master, patientAad(patient, keyId), key) }, new Date().toISOString());
      row = this.#rows.patientKey(patient);
      if (row === undefined) throw new VaultError('INTERNAL', 'patient key vanished right after it was created');
    }
    return unwrap(this.#master, patientAad(patient, row.keyId), row.wrapped, `the patient key ${row.keyId}`);
  }

  #newStudyRow(studyInstanceUID: string, patient: PatientRef, dk: DataKey, anchorSalt: Buffer): StudyKeyRow {
    const kek = this.#patientKey(patient, true)!;
    return {
      studyInstanceUID,
      patient,
      keyId: dk.keyId,
      wrapped: wrap(kek, studyAad(patient, studyInstanceUID, dk.keyId, anchorSalt), dk.key),
      anchorSalt,
      wrap: 2,
    };
  }

  /**
   * The study's data key, created (and durably stored, under the patient's key, which is created
   * too when new) on first use. Safe across processes. The patient is the one of the instance
   * that made the study; later instances naming another patient stay under the first.
   */
  getOrCreate(studyInstanceUID: string, patient: PatientRef = UNKNOWN_PATIENT): StudyKey {
    const existing = this.get(studyInstanceUID);
    if (existing) return existing;
    const row = this.#newStudyRow(studyInstanceUID, patient, { keyId: randomUUID(), key: randomBytes(KEY_BYTES) }, randomBytes(ANCHOR_SALT_BYTES));
    // INSERT OR IGNORE: when two ingests race to create the study's key, one row wins and both
    // read that one back.
    this.#rows.insertStudyKey(row, new Date().toISOString());
    const stored = this.get(studyInstanceUID);
    if (!stored) throw new VaultError('INTERNAL', 'data key vanished right after it was created');
    return stored;
  }

  get(studyInstanceUID: string): StudyKey | undefined {
    const row = this.#rows.studyKey(studyInstanceUID);
    if (!row) {
      this.#cache.delete(studyInstanceUID);
      return undefined;
    }
    const cached = this.#cache.get(studyInstanceUID);
    this.#cache.delete(studyInstanceUID); // set again below: most recently used last
    if (cached?.keyId === row.keyId) {
      this.#cache.set(studyInstanceUID, cached);
      return cached;
    }
    const sk = this.#open(row);
    if (this.#cache.size >= this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(studyInstanceUID, sk);
    return sk;
  }

  #open(row: StudyKeyRow): StudyKey {
    if (row.wrap === 1) {
      // Not migrated yet (a CLI of this release opened a directory before the server migrated it).
      return {
        studyInstanceUID: row.studyInstanceUID,
        patient: UNKNOWN_PATIENT,
        keyId: row.keyId,
        key: legacyUnwrap(this.#master, row.keyId, row.wrapped),
        anchorSalt: Buffer.alloc(0),
      };
    }
    const patient = row.patient ?? UNKNOWN_PATIENT;
    const salt = Buffer.from(row.anchorSalt ?? new Uint8Array(0));
    const kek = this.#patientKey(patient, false);
    if (kek === undefined) throw new VaultError('KEY_NOT_FOUND', "no data key for this study: its patient's key has been erased");
    const key = unwrap(kek, studyAad(patient, row.studyInstanceUID, row.keyId, salt), row.wrapped, `data key ${row.keyId}`);
    return { studyInstanceUID: row.studyInstanceUID, patient, keyId: row.keyId, key, anchorSalt: salt };
  }

  /** Like get, but a missing key is an error (the study cannot be read). */
  require(studyInstanceUID: string): StudyKey {
    const dk = this.get(studyInstanceUID);
    if (!dk) throw new VaultError('KEY_NOT_FOUND', 'no data key for this study: it was never stored here or has been erased');
    return dk;
  }

  byKeyId(keyId: string): StudyKey | undefined {
    const study = this.#rows.studyByKeyId(keyId);
    return study === undefined ? undefined : this.get(study);
  }

  /**
   * The study's anchor salt (anchor/commitment.ts), read from its row without unwrapping
   * anything; undefined once erased (and for a row of release 0.1 not yet migrated).
   */
  anchorSalt(studyInstanceUID: string): Uint8Array | undefined {
    return this.#rows.studyKey(studyInstanceUID)?.anchorSalt ?? undefined;
  }

  /** Whether this patient has a key here. */
  hasPatientKey(patient: PatientRef): boolean {
    return this.#rows.patientKey(patient) !== undefined;
  }

  /** Study UIDs whose keys are wrapped under this patient's key. */
  studiesOf(patient: PatientRef): string[] {
    return this.#rows.studiesOf(patient);
  }

  /**
   * Unwraps one stored key (if any) with the master key: MASTER_KEY_MISMATCH when it does not
   * open, which means the master key is not the one these keys were wrapped with.
   */
  checkMasterKey(): void {
    const any = this.#rows.anyRow();
    if (any === undefined) return;
    try {
      if (any.patient) unwrap(this.#master, patientAad(any.patient.patient, any.patient.keyId), any.patient.wrapped, 'a patient key');
      else if (any.legacy) legacyUnwrap(this.#master, any.legacy.keyId, any.legacy.wrapped);
    } catch (cause) {
      throw new VaultError(
        'MASTER_KEY_MISMATCH',
        "keys.db's keys do not open with this master.key: put back the master key they were wrapped with (from your backup)",
        { cause },
      );
    }
  }

  /**
   * Migrates the keys of release 0.1 (one study key under the master key, bound to its key id
   * only) into the hierarchy: each is unwrapped, a salt is drawn, and it is wrapped again under
   * its patient's key (created when new), bound to patient, study, key id and salt. The data key
   * itself does not change, so no block is rewritten. One transaction: a crash leaves every row
   * as it was, and the next start migrates again. Returns how many rows moved.
   */
  migrate(patientOf: PatientOfStudy): number {
    const legacy = this.#rows.legacyRows();
    if (legacy.length === 0) return 0;
    return this.#rows.atomically(() => {
      for (const row of legacy) {
        const key = legacyUnwrap(this.#master, row.keyId, row.wrapped);
        const patient = patientOf(row.studyInstanceUID) ?? UNKNOWN_PATIENT;
        this.#rows.replaceStudyKey(this.#newStudyRow(row.studyInstanceUID, patient, { keyId: row.keyId, key }, randomBytes(ANCHOR_SALT_BYTES)));
      }
      this.#cache.clear();
      return legacy.length;
    });
  }

  /** Imports a key brought from another node (already unwrapped by the caller's transport). */
  importKey(studyInstanceUID: string, dk: DataKey, patient: PatientRef = UNKNOWN_PATIENT): void {
    this.#rows.insertStudyKey(this.#newStudyRow(studyInstanceUID, patient, dk, randomBytes(ANCHOR_SALT_BYTES)), new Date().toISOString());
  }

  /**
   * Destroys the keys and anchor salts of `studies`, and with `patient` the patient's key and
   * every study key under it: no copy is left in keys.db or its WAL (SqliteKeyRows.destroy).
   */
  destroy(what: { studies: readonly string[]; patient?: PatientRef }): { studies: number; patient: boolean } {
    for (const s of what.studies) this.#cache.delete(s);
    const p = what.patient;
    // The patient's keys only: other patients' stay cached (rows are read on each get anyway).
    if (p !== undefined) for (const [uid, k] of this.#cache) if (k.patient.patientId === p.patientId && k.patient.issuer === p.issuer) this.#cache.delete(uid);
    return this.#rows.destroy(what);
  }

  close(): void {
    this.#rows.close();
    this.#cache.clear();
  }
}
