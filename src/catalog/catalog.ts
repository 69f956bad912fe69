// The catalog: the node's index of studies, series, instances and study versions, in an
// embedded SQLite database (node:sqlite). The truth of a study is its content-addressed DAG;
// the catalog records the DAG roots, where each instance's node is, what to answer QIDO-RS
// with, and which roots still wait to be anchored.
//
// Writes happen once per STOW request, in one transaction, with synchronous=FULL: once
// commitStudyVersion returns, the new version survives a power cut.
//
// The parts: schema.ts (migrations), records.ts (what goes in and out), derived.ts (study and
// series attributes), columns.ts (keys to SQL), src/dicom/matching.ts (PS3.4 matching),
// scope-sql.ts (what a CatalogScope lets a caller see, as SQL), commit.ts (the commit path) and
// query.ts (the QIDO queries), to which the class's methods of those names delegate.
//
// Every read a request makes takes an optional CatalogScope (scope.ts): given, what it does not
// cover reads exactly as what does not exist (undefined, [] or false), and the counts and
// derived attributes of studies and series (NumberOf*Related*, ModalitiesInStudy,
// SOPClassesInStudy) are those of the visible instances, in results and in matching alike:
// summed from instance_counts where the scope allows it (scope-sql.ts, "Counting"), else counted
// over the instances. Without one, the stored values are used and the SQL is that of an
// unscoped node.

import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { VaultError } from '../core/errors.ts';
import { DEFAULT_BUSY_TIMEOUT_MS, StatementCache, openDatabase, scrubWal, transaction } from '../core/sqlite.ts';
import { compileMatcher, matchElement, type Matcher } from '../dicom/matching.ts';
import type { DicomJsonElement } from '../dicom/model.ts';
import { instanceKind } from '../dicom/sop-classes.ts';
import { type CommitDeps, commitStudyVersion } from './commit.ts';
import { DEFAULT_LAYOUT_CACHE_BYTES, LayoutCache } from './layout-cache.ts';
import { ROWS, SCOPE_JOINS, queryInstances, querySeries, queryStudies } from './query.ts';
import {
  INSTANCE_COLUMNS,
  INSTANCE_KEY_COLUMNS,
  lazyInstance,
  toInstance,
  toVersion,
  type CatalogInstance,
  type CatalogQuery,
  type CommitInput,
  type InstanceRecord,
  type InstanceRevision,
  type InstanceRow,
  type KeyRow,
  type PendingAnchor,
  type SeriesRecord,
  type StudyRecord,
  type StudyVersion,
  type VersionRow,
} from './records.ts';
import { MIGRATIONS } from './schema.ts';
import type { CatalogScope } from './scope.ts';
import { ScopeSql } from './scope-sql.ts';

/** Default wait for another connection's write lock, in milliseconds. */
export { DEFAULT_BUSY_TIMEOUT_MS };

export interface CatalogOptions {
  /** SQLite file path; ':memory:' for tests. */
  path: string;
  /** Wait for a lock held by another connection, in milliseconds. Default DEFAULT_BUSY_TIMEOUT_MS. */
  busyTimeoutMs?: number;
}

/** Compiled dv_match specs kept; the map is emptied when full. */
const MATCHER_CACHE_LIMIT = 256;

export class Catalog {
  readonly #db: DatabaseSync;
  readonly #statements: StatementCache;
  readonly #matchers = new Map<string, Matcher>();
  readonly #layouts = new LayoutCache(DEFAULT_LAYOUT_CACHE_BYTES);
  /** What commit.ts uses of this catalog. */
  readonly #commit: CommitDeps;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#statements = new StatementCache(db);
    this.#commit = { db, statements: this.#statements, latestVersion: (study) => this.latestVersion(study) };
  }

  static open(options: CatalogOptions): Catalog {
    const db = openDatabase({
      path: options.path,
      what: 'catalog',
      migrations: MIGRATIONS,
      functions: { dv_instance_kind: (uid: unknown) => instanceKind(String(uid)) },
      // An erased study's rows (names, IDs, UIDs) are overwritten, not merely unlinked (purgeStudy).
      pragmas: ['secure_delete = ON'],
      ...(options.busyTimeoutMs !== undefined ? { busyTimeoutMs: options.busyTimeoutMs } : {}),
    });
    const catalog = new Catalog(db);
    db.function('dv_match', { deterministic: true }, (spec, element) => catalog.#sqlMatch(spec, element));
    return catalog;
  }

  close(): void {
    this.#statements.clear();
    this.#db.close();
  }

  #stmt(sql: string): StatementSync {
    return this.#statements.get(sql);
  }

  // dv_match(spec, elementJson): spec is JSON [vr, value], validated before the query runs.
  #sqlMatch(spec: unknown, element: unknown): number {
    if (typeof spec !== 'string') return 0;
    let m = this.#matchers.get(spec);
    if (m === undefined) {
      const [vr, value] = JSON.parse(spec) as [string, string];
      m = compileMatcher(vr, value, 'query');
      if (this.#matchers.size >= MATCHER_CACHE_LIMIT) this.#matchers.clear();
      this.#matchers.set(spec, m);
    }
    const el = typeof element === 'string' ? (JSON.parse(element) as DicomJsonElement) : undefined;
    return matchElement(m, el) ? 1 : 0;
  }

  // -- reads ------------------------------------------------------------------------------

  getInstance(sopInstanceUID: string, where: { study?: string; series?: string } = {}, scope?: CatalogScope): CatalogInstance | undefined {
    const params: SQLInputValue[] = [sopInstanceUID];
    const visible = scope === undefined ? undefined : new ScopeSql(scope);
    // Metadata and layout are read only when used (a frame request needs the layout alone, and
    // that from the cache after the first frame).
    let sql =
      visible === undefined
        ? `SELECT ${INSTANCE_KEY_COLUMNS} FROM instances i WHERE i.sop_uid = ? AND i.current = 1`
        : `SELECT ${INSTANCE_KEY_COLUMNS} FROM instances i ${SCOPE_JOINS} WHERE i.sop_uid = ? AND i.current = 1 AND (${visible.instance(ROWS)})`;
    if (where.study !== undefined) {
      sql += ' AND i.study_uid = ?';
      params.push(where.study);
    }
    if (where.series !== undefined) {
      sql += ' AND i.series_uid = ?';
      params.push(where.series);
    }
    const statement = this.#stmt(`${sql} ORDER BY i.id DESC LIMIT 1`);
    const row = (visible === undefined ? statement.get(...params) : statement.get(visible.params, ...params)) as KeyRow | undefined;
    return row === undefined ? undefined : this.#readLater(row);
  }

  /**
   * The SOP Instance UIDs of the current instances `where` names that `scope` covers: for a
   * response that sends some instances' bulk data and others' attributes only.
   */
  visibleInstances(where: { study: string; series?: string; instance?: string }, scope: CatalogScope): Set<string> {
    const visible = new ScopeSql(scope).instanceWithin(ROWS, where);
    const params: SQLInputValue[] = [where.study];
    let sql = `SELECT i.sop_uid FROM instances i ${SCOPE_JOINS} WHERE i.current = 1 AND i.study_uid = ? AND ${visible.sql}`;
    if (where.series !== undefined) {
      sql += ' AND i.series_uid = ?';
      params.push(where.series);
    }
    if (where.instance !== undefined) {
      sql += ' AND i.sop_uid = ?';
      params.push(where.instance);
    }
    const rows = this.#stmt(sql).all(visible.params, ...params) as unknown as Array<{ sop_uid: string }>;
    return new Set(rows.map((r) => r.sop_uid));
  }

  /** An instance whose metadata and layout are read from its row when first used. */
  #readLater(row: KeyRow): CatalogInstance {
    const column = (name: 'metadata' | 'layout'): string => {
      const r = this.#stmt(`SELECT ${name} AS v FROM instances WHERE id = ?`).get(row.id) as { v: string } | undefined;
      if (r === undefined) throw new VaultError('INTERNAL', `catalog row of instance ${row.sop_uid} disappeared`);
      return r.v;
    };
    return lazyInstance(
      row,
      () => column('metadata'),
      () => this.#layouts.get(row.node_cid, () => column('layout')),
    );
  }

  /** Every stored revision of an instance, oldest first. */
  instanceHistory(studyInstanceUID: string, sopInstanceUID: string): InstanceRevision[] {
    const rows = this.#stmt(
      `SELECT ${INSTANCE_COLUMNS}, i.version, i.replaced_in FROM instances i
       WHERE i.study_uid = ? AND i.sop_uid = ? ORDER BY i.id`,
    ).all(studyInstanceUID, sopInstanceUID) as unknown as Array<InstanceRow & { version: number; replaced_in: number | null }>;
    return rows.map((r) => ({ instance: toInstance(r), version: r.version, replacedIn: r.replaced_in }));
  }

  /** The study's newest version; a study `scope` does not show has none. */
  latestVersion(studyInstanceUID: string, scope?: CatalogScope): StudyVersion | undefined {
    if (scope !== undefined && !this.hasStudy(studyInstanceUID, scope)) return undefined;
    const row = this.#stmt('SELECT * FROM study_versions WHERE study_uid = ? ORDER BY version DESC LIMIT 1').get(studyInstanceUID) as VersionRow | undefined;
    return row === undefined ? undefined : toVersion(row);
  }

  /** All versions, oldest first; a study `scope` does not show has none. */
  versions(studyInstanceUID: string, scope?: CatalogScope): StudyVersion[] {
    if (scope !== undefined && !this.hasStudy(studyInstanceUID, scope)) return [];
    const rows = this.#stmt('SELECT * FROM study_versions WHERE study_uid = ? ORDER BY version').all(studyInstanceUID) as unknown as VersionRow[];
    return rows.map(toVersion);
  }

  /**
   * Current instances, ordered by SeriesNumber, series UID, InstanceNumber, SOP UID. With
   * `metadata: false`, each instance's metadata and layout are read from its row only if used:
   * for callers that send the bytes (a multi-frame instance's metadata can be half a MiB of JSON;
   * reading it for a 16-instance study cost ~80 ms before a WADO response's first byte).
   */
  listInstances(where: { study: string; series?: string }, options: { metadata?: boolean } = {}, scope?: CatalogScope): CatalogInstance[] {
    const params: SQLInputValue[] = [where.study];
    const visible = scope === undefined ? undefined : new ScopeSql(scope).instanceWithin(ROWS, where);
    let conds = 'i.current = 1 AND i.study_uid = ?';
    if (where.series !== undefined) {
      conds += ' AND i.series_uid = ?';
      params.push(where.series);
    }
    if (visible !== undefined) conds += ` AND ${visible.sql}`;
    const eager = options.metadata !== false;
    const statement = this.#stmt(
      `SELECT ${eager ? INSTANCE_COLUMNS : INSTANCE_KEY_COLUMNS} FROM instances i
       LEFT JOIN series se ON se.study_uid = i.study_uid AND se.series_uid = i.series_uid
       ${visible === undefined ? '' : 'JOIN studies s ON s.study_uid = i.study_uid'}
       WHERE ${conds}
       ORDER BY se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST, i.sop_uid`,
    );
    const rows = (visible === undefined ? statement.all(...params) : statement.all(visible.params, ...params)) as unknown[];
    return eager ? (rows as InstanceRow[]).map(toInstance) : (rows as KeyRow[]).map((r) => this.#readLater(r));
  }

  /** Whether the study has current instances (that `scope` shows). */
  hasStudy(studyInstanceUID: string, scope?: CatalogScope): boolean {
    if (scope === undefined) return this.#stmt('SELECT 1 FROM studies WHERE study_uid = ? AND instance_count > 0').get(studyInstanceUID) !== undefined;
    const visible = new ScopeSql(scope);
    return (
      this.#stmt(`SELECT 1 FROM studies s WHERE s.study_uid = ? AND s.instance_count > 0 AND (${visible.study('s')})`).get(visible.params, studyInstanceUID) !==
      undefined
    );
  }

  /** Whether the series has current instances (that `scope` shows). */
  hasSeries(studyInstanceUID: string, seriesInstanceUID: string, scope?: CatalogScope): boolean {
    if (scope === undefined) {
      return (
        this.#stmt('SELECT 1 FROM series WHERE study_uid = ? AND series_uid = ? AND instance_count > 0').get(studyInstanceUID, seriesInstanceUID) !== undefined
      );
    }
    const visible = new ScopeSql(scope);
    return (
      this.#stmt(
        `SELECT 1 FROM series se JOIN studies s ON s.study_uid = se.study_uid
         WHERE se.study_uid = ? AND se.series_uid = ? AND se.instance_count > 0 AND (${visible.series(ROWS)})`,
      ).get(visible.params, studyInstanceUID, seriesInstanceUID) !== undefined
    );
  }

  // -- anchor queue -----------------------------------------------------------------------

  /** Roots waiting to be anchored, oldest first. */
  pendingAnchors(limit: number): PendingAnchor[] {
    const rows = this.#stmt('SELECT root, study_uid, version, enqueued_at FROM anchor_queue ORDER BY seq LIMIT ?').all(limit) as unknown as Array<{
      root: string;
      study_uid: string;
      version: number;
      enqueued_at: string;
    }>;
    return rows.map((r) => ({ root: r.root, studyInstanceUID: r.study_uid, version: r.version, enqueuedAt: r.enqueued_at }));
  }

  /** Removes anchored roots from the queue; returns how many were removed. */
  markAnchored(roots: readonly string[]): number {
    let removed = 0;
    this.#transaction(() => {
      const del = this.#stmt('DELETE FROM anchor_queue WHERE root = ?');
      for (const root of roots) removed += Number(del.run(root).changes);
    });
    return removed;
  }

  // -- erasure ----------------------------------------------------------------------------

  /** Queues a root that is no study's version for anchoring (an erasure certificate: `study` names its kind). */
  queueAnchor(root: string, study: string, at: string): void {
    this.#stmt('INSERT INTO anchor_queue (root, study_uid, version, enqueued_at) VALUES (?, ?, 0, ?)').run(root, study, at);
  }

  /** The study's Patient ID and Issuer of Patient ID ('' when absent); undefined for a study not here. */
  patientOf(studyInstanceUID: string): { patientId: string; issuer: string } | undefined {
    const row = this.#stmt('SELECT patient_id, issuer FROM studies WHERE study_uid = ?').get(studyInstanceUID) as
      | { patient_id: string | null; issuer: string | null }
      | undefined;
    return row === undefined ? undefined : { patientId: row.patient_id ?? '', issuer: row.issuer ?? '' };
  }

  /** The studies of a patient (by Patient ID; and issuer when given), in UID order. */
  studiesOfPatient(patientId: string, issuer?: string): string[] {
    const rows = (issuer === undefined
      ? this.#stmt('SELECT study_uid FROM studies WHERE patient_id = ? ORDER BY study_uid').all(patientId)
      : this.#stmt("SELECT study_uid FROM studies WHERE patient_id = ? AND coalesce(issuer, '') = ? ORDER BY study_uid").all(
          patientId,
          issuer,
        )) as unknown as Array<{ study_uid: string }>;
    return rows.map((r) => r.study_uid);
  }

  /**
   * Removes every row of the study (instances and their history, series, versions, queued
   * anchors, key object references) in one transaction, then checkpoints and truncates the WAL:
   * with secure_delete on, no copy of the rows is left in catalog.db or its WAL. Returns whether
   * the study was here.
   */
  purgeStudy(studyInstanceUID: string): boolean {
    const found = this.#transaction(() => {
      for (const table of ['key_object_references', 'anchor_queue', 'instances', 'study_versions', 'series'])
        this.#stmt(`DELETE FROM ${table} WHERE study_uid = ?`).run(studyInstanceUID);
      return this.#stmt('DELETE FROM studies WHERE study_uid = ?').run(studyInstanceUID).changes > 0;
    });
    scrubWal(this.#db, 'catalog');
    return found;
  }

  // -- commit -----------------------------------------------------------------------------

  #transaction<T>(fn: () => T): T {
    return transaction(this.#db, fn);
  }

  /** Records a study's next version in one transaction (commit.ts). */
  commitStudyVersion(input: CommitInput): StudyVersion {
    return commitStudyVersion(this.#commit, input);
  }

  // -- QIDO queries (query.ts) ------------------------------------------------------------

  /** Studies matching all filters (and shown by `scope`), most recent StudyDate/StudyTime first. */
  queryStudies(query: CatalogQuery, scope?: CatalogScope): StudyRecord[] {
    return queryStudies(this.#statements, query, scope);
  }

  /** Series matching all filters (study keys match the series' study; shown by `scope`), by study, SeriesNumber. */
  querySeries(query: CatalogQuery, scope?: CatalogScope): SeriesRecord[] {
    return querySeries(this.#statements, query, scope);
  }

  /** Current instances matching all filters (and shown by `scope`), in listInstances order. */
  queryInstances(query: CatalogQuery, scope?: CatalogScope): InstanceRecord[] {
    return queryInstances(this.#statements, query, scope);
  }
}
