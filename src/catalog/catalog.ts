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
// scope-sql.ts (what a CatalogScope lets a caller see, as SQL).
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
import { TAGS } from '../dicom/attributes.ts';
import { compileMatcher, matchElement, padMoment, type Matcher } from '../dicom/matching.ts';
import type { DicomJsonDataset, DicomJsonElement, Tag } from '../dicom/model.ts';
import { instanceKind } from '../dicom/sop-classes.ts';
import { queryConditions, type ComputedElement } from './columns.ts';
import { SERIES_PICK, STUDY_PICK, firstInteger, firstString, mergePicked, sortedDataset, withoutNulls } from './derived.ts';
import { DEFAULT_LAYOUT_CACHE_BYTES, LayoutCache } from './layout-cache.ts';
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
import { INSERT_KOS_REFERENCES, MIGRATIONS } from './schema.ts';
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

/** An instance row `i` with its series `se` and study `s`, as scope conditions need them. */
const ROWS = { s: 's', se: 'se', i: 'i' } as const;
const SCOPE_JOINS = 'JOIN series se ON se.study_uid = i.study_uid AND se.series_uid = i.series_uid JOIN studies s ON s.study_uid = i.study_uid';
/** A row `c` of instance_counts with its series `se` and study `s`. */
const COUNTED = { s: 's', se: 'se', c: 'c' } as const;
const COUNT_JOINS = 'JOIN series se ON se.study_uid = c.study_uid AND se.series_uid = c.series_uid JOIN studies s ON s.study_uid = c.study_uid';

export class Catalog {
  readonly #db: DatabaseSync;
  readonly #statements: StatementCache;
  readonly #matchers = new Map<string, Matcher>();
  readonly #layouts = new LayoutCache(DEFAULT_LAYOUT_CACHE_BYTES);

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#statements = new StatementCache(db);
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

  commitStudyVersion(input: CommitInput): StudyVersion {
    const study = input.studyInstanceUID;
    for (const inst of input.instances) {
      if (inst.studyInstanceUID !== study) {
        throw new VaultError('INTERNAL', `instance ${inst.sopInstanceUID} belongs to another study than the commit`);
      }
    }
    return this.#transaction(() => {
      const latest = this.latestVersion(study);
      if ((latest?.root ?? null) !== input.prev) {
        throw new VaultError('CONFLICT', `study ${study} changed since it was read (now at version ${latest?.version ?? 0})`, {
          details: { studyInstanceUID: study, latestVersion: latest?.version ?? 0 },
        });
      }
      const expectedVersion = (latest?.version ?? 0) + 1;
      if (input.version !== expectedVersion) {
        throw new VaultError('INTERNAL', `version ${input.version} does not follow version ${expectedVersion - 1} of study ${study}`);
      }

      const studyRow = this.#stmt('SELECT attributes FROM studies WHERE study_uid = ?').get(study) as { attributes: string } | undefined;
      if (studyRow === undefined) {
        this.#stmt("INSERT INTO studies (study_uid, attributes) VALUES (?, '{}')").run(study);
      }
      const studyAttrs: DicomJsonDataset = studyRow === undefined ? {} : (JSON.parse(studyRow.attributes) as DicomJsonDataset);
      // The study's SOP classes so far, as the last commit listed them: this one's are added to
      // them, rather than read again from every current instance of the study (a scan that grew
      // with the study: 0.4 ms of a one-instance commit's CPU at 500 instances, 2.2 ms at 3000,
      // which DIMSE, a version per instance, pays on every C-STORE). Read again, from
      // instance_counts, when an instance is retired, whose class may have been the last of its kind.
      const listed = studyRow === undefined ? [] : studyAttrs[TAGS.SOPClassesInStudy]?.Value;
      let retired = false;

      const touchedSeries = new Map<string, DicomJsonDataset>(); // series UID -> incoming attributes
      const findCurrent = this.#stmt('SELECT id, sha256, series_uid, kind FROM instances WHERE sop_uid = ? AND study_uid = ? AND current = 1');
      const retire = this.#stmt('UPDATE instances SET current = 0, replaced_in = ? WHERE id = ?');
      const refresh = this.#stmt(
        `UPDATE instances SET node_cid = ?, size = ?, sop_class_uid = ?, kind = ?, transfer_syntax_uid = ?, instance_number = ?,
           metadata = ?, layout = ?, version = ? WHERE id = ?`,
      );
      const insert = this.#stmt(
        `INSERT INTO instances (study_uid, series_uid, sop_uid, sop_class_uid, kind, transfer_syntax_uid, instance_number,
           size, sha256, node_cid, metadata, layout, version, current)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
      );
      const forgetReferences = this.#stmt('DELETE FROM key_object_references WHERE study_uid = ? AND kos_sop_uid = ?');
      const recordReferences = this.#stmt(`${INSERT_KOS_REFERENCES} AND i.id = ?`);
      for (const inst of input.instances) {
        const metadata = inst.metadata;
        const existing = findCurrent.get(inst.sopInstanceUID, study) as { id: number; sha256: string; series_uid: string; kind: string } | undefined;
        const instanceNumber = firstInteger(metadata, TAGS.InstanceNumber);
        const metadataText = JSON.stringify(metadata);
        const layoutText = JSON.stringify(inst.layout);
        const kind = instanceKind(inst.sopClassUID);
        let id: number | bigint;
        if (existing !== undefined && existing.sha256 === inst.sha256 && existing.series_uid === inst.seriesInstanceUID) {
          // Same bytes again (e.g. a retried STOW): point at the newest DAG node, no history.
          refresh.run(
            inst.nodeCid,
            inst.size,
            inst.sopClassUID,
            kind,
            inst.transferSyntaxUID,
            instanceNumber,
            metadataText,
            layoutText,
            input.version,
            existing.id,
          );
          id = existing.id;
        } else {
          if (existing !== undefined) {
            retire.run(input.version, existing.id);
            retired = true;
            if (!touchedSeries.has(existing.series_uid)) touchedSeries.set(existing.series_uid, {});
          }
          id = insert.run(
            study,
            inst.seriesInstanceUID,
            inst.sopInstanceUID,
            inst.sopClassUID,
            kind,
            inst.transferSyntaxUID,
            instanceNumber,
            inst.size,
            inst.sha256,
            inst.nodeCid,
            metadataText,
            layoutText,
            input.version,
          ).lastInsertRowid;
        }
        // A key object selection's references are those of its current bytes.
        if (kind === 'key-object' || existing?.kind === 'key-object') forgetReferences.run(study, inst.sopInstanceUID);
        if (kind === 'key-object') recordReferences.run(id);
        mergePicked(studyAttrs, metadata, STUDY_PICK);
        let seriesAttrs = touchedSeries.get(inst.seriesInstanceUID);
        if (seriesAttrs === undefined) {
          seriesAttrs = {};
          touchedSeries.set(inst.seriesInstanceUID, seriesAttrs);
        }
        mergePicked(seriesAttrs, metadata, SERIES_PICK);
      }

      this.#updateSeries(study, touchedSeries);
      const sopClasses =
        retired || listed === undefined ? undefined : [...new Set([...(listed as string[]), ...input.instances.map((i) => i.sopClassUID)])].sort();
      const instanceCount = this.#updateStudy(study, studyAttrs, sopClasses);

      this.#stmt('INSERT INTO study_versions (study_uid, version, root, prev, created_at, instance_count) VALUES (?, ?, ?, ?, ?, ?)').run(
        study,
        input.version,
        input.root,
        input.prev,
        input.createdAt,
        instanceCount,
      );
      this.#stmt('INSERT INTO anchor_queue (root, study_uid, version, enqueued_at) VALUES (?, ?, ?, ?)').run(input.root, study, input.version, input.createdAt);
      return {
        studyInstanceUID: study,
        version: input.version,
        root: input.root,
        prev: input.prev,
        createdAt: input.createdAt,
        instanceCount,
      };
    });
  }

  #updateSeries(study: string, touched: Map<string, DicomJsonDataset>): void {
    const read = this.#stmt('SELECT attributes FROM series WHERE study_uid = ? AND series_uid = ?');
    // From instance_counts, which the triggers have brought up to date with this transaction's
    // writes: a few rows, where counting the series' index entries grew with the series.
    const count = this.#stmt('SELECT coalesce(sum(n), 0) AS n FROM instance_counts WHERE study_uid = ? AND series_uid = ?');
    const upsert = this.#stmt(
      `INSERT INTO series (study_uid, series_uid, modality, series_number, instance_count, attributes)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (study_uid, series_uid) DO UPDATE SET
         modality = excluded.modality, series_number = excluded.series_number,
         instance_count = excluded.instance_count, attributes = excluded.attributes`,
    );
    const remove = this.#stmt('DELETE FROM series WHERE study_uid = ? AND series_uid = ?');
    for (const [seriesUid, incoming] of touched) {
      const n = (count.get(study, seriesUid) as { n: number }).n;
      if (n === 0) {
        // Every instance of the series was re-sent under another series: it is gone.
        remove.run(study, seriesUid);
        continue;
      }
      const row = read.get(study, seriesUid) as { attributes: string } | undefined;
      const attrs: DicomJsonDataset = row === undefined ? {} : (JSON.parse(row.attributes) as DicomJsonDataset);
      mergePicked(attrs, incoming, SERIES_PICK);
      attrs[TAGS.SeriesInstanceUID] = { vr: 'UI', Value: [seriesUid] };
      attrs[TAGS.NumberOfSeriesRelatedInstances] = { vr: 'IS', Value: [n] };
      upsert.run(study, seriesUid, firstString(attrs, TAGS.Modality), firstInteger(attrs, TAGS.SeriesNumber), n, JSON.stringify(sortedDataset(attrs)));
    }
  }

  /**
   * Rewrites the study row with merged and computed attributes; returns its instance count.
   * `knownSopClasses`: the study's SOP classes (sorted), when the caller knows them.
   */
  #updateStudy(study: string, attrs: DicomJsonDataset, knownSopClasses?: string[]): number {
    const totals = this.#stmt('SELECT count(*) AS series, coalesce(sum(instance_count), 0) AS instances FROM series WHERE study_uid = ?').get(study) as {
      series: number;
      instances: number;
    };
    const modalities = (
      this.#stmt('SELECT DISTINCT modality FROM series WHERE study_uid = ? AND modality IS NOT NULL ORDER BY modality').all(study) as unknown as Array<{
        modality: string;
      }>
    ).map((r) => r.modality);
    const sopClasses =
      knownSopClasses ??
      (
        this.#stmt('SELECT DISTINCT sop_class_uid FROM instance_counts WHERE study_uid = ? ORDER BY sop_class_uid').all(study) as unknown as Array<{
          sop_class_uid: string;
        }>
      ).map((r) => r.sop_class_uid);

    attrs[TAGS.StudyInstanceUID] = { vr: 'UI', Value: [study] };
    attrs[TAGS.ModalitiesInStudy] = modalities.length > 0 ? { vr: 'CS', Value: modalities } : { vr: 'CS' };
    attrs[TAGS.SOPClassesInStudy] = { vr: 'UI', Value: sopClasses };
    attrs[TAGS.NumberOfStudyRelatedSeries] = { vr: 'IS', Value: [totals.series] };
    attrs[TAGS.NumberOfStudyRelatedInstances] = { vr: 'IS', Value: [totals.instances] };

    const date = firstString(attrs, TAGS.StudyDate);
    const time = firstString(attrs, TAGS.StudyTime);
    this.#stmt(
      `UPDATE studies SET patient_id = ?, issuer = ?, study_date = ?, study_time = ?, accession_number = ?,
         series_count = ?, instance_count = ?, attributes = ? WHERE study_uid = ?`,
    ).run(
      firstString(attrs, TAGS.PatientID),
      firstString(attrs, TAGS.IssuerOfPatientID),
      date === null ? null : (padMoment('DA', date, false) ?? null),
      time === null ? null : (padMoment('TM', time, false) ?? time),
      firstString(attrs, TAGS.AccessionNumber),
      totals.series,
      totals.instances,
      JSON.stringify(sortedDataset(attrs)),
      study,
    );
    return totals.instances;
  }

  // -- QIDO queries -----------------------------------------------------------------------

  #studyAttributes(cache: Map<string, DicomJsonDataset>, study: string, visible?: ScopeSql): DicomJsonDataset {
    let attrs = cache.get(study);
    if (attrs === undefined) {
      const row = this.#stmt('SELECT attributes FROM studies WHERE study_uid = ?').get(study) as { attributes: string } | undefined;
      attrs = row === undefined ? {} : (JSON.parse(row.attributes) as DicomJsonDataset);
      if (visible !== undefined && !visible.wholeStudies) attrs = this.#visibleStudy(attrs, study, visible);
      cache.set(study, attrs);
    }
    return attrs;
  }

  #seriesAttributes(cache: Map<string, DicomJsonDataset>, study: string, series: string, visible?: ScopeSql): DicomJsonDataset {
    const key = `${study}/${series}`;
    let attrs = cache.get(key);
    if (attrs === undefined) {
      const row = this.#stmt('SELECT attributes FROM series WHERE study_uid = ? AND series_uid = ?').get(study, series) as { attributes: string } | undefined;
      attrs = row === undefined ? {} : (JSON.parse(row.attributes) as DicomJsonDataset);
      if (visible !== undefined && !visible.wholeSeries) attrs = this.#visibleSeries(attrs, study, series, visible);
      cache.set(key, attrs);
    }
    return attrs;
  }

  /** A study's attributes with ModalitiesInStudy, SOPClassesInStudy and its counts over the instances `visible` shows. */
  #visibleStudy(attrs: DicomJsonDataset, study: string, visible: ScopeSql): DicomJsonDataset {
    const sql = visible.countable
      ? `SELECT c.series_uid, se.modality, c.sop_class_uid, sum(c.n) AS n FROM instance_counts c ${COUNT_JOINS}
         WHERE c.study_uid = ? AND (${visible.counted(COUNTED)})
         GROUP BY c.series_uid, c.sop_class_uid`
      : `SELECT i.series_uid, se.modality, i.sop_class_uid, count(*) AS n FROM instances i ${SCOPE_JOINS}
         WHERE i.study_uid = ? AND i.current = 1 AND (${visible.instance(ROWS)})
         GROUP BY i.series_uid, i.sop_class_uid`;
    const rows = this.#stmt(sql).all(visible.params, study) as unknown as Array<{
      series_uid: string;
      modality: string | null;
      sop_class_uid: string;
      n: number;
    }>;
    const modalities = [...new Set(rows.flatMap((r) => (r.modality === null ? [] : [r.modality])))].sort();
    return {
      ...attrs,
      [TAGS.ModalitiesInStudy]: modalities.length > 0 ? { vr: 'CS', Value: modalities } : { vr: 'CS' },
      [TAGS.SOPClassesInStudy]: { vr: 'UI', Value: [...new Set(rows.map((r) => r.sop_class_uid))].sort() },
      [TAGS.NumberOfStudyRelatedSeries]: { vr: 'IS', Value: [new Set(rows.map((r) => r.series_uid)).size] },
      [TAGS.NumberOfStudyRelatedInstances]: { vr: 'IS', Value: [rows.reduce((n, r) => n + r.n, 0)] },
    };
  }

  /** A series' attributes with NumberOfSeriesRelatedInstances over the instances `visible` shows. */
  #visibleSeries(attrs: DicomJsonDataset, study: string, series: string, visible: ScopeSql): DicomJsonDataset {
    const sql = visible.countable
      ? `SELECT coalesce(sum(c.n), 0) AS n FROM instance_counts c ${COUNT_JOINS}
         WHERE c.study_uid = ? AND c.series_uid = ? AND (${visible.counted(COUNTED)})`
      : `SELECT count(*) AS n FROM instances i ${SCOPE_JOINS}
         WHERE i.study_uid = ? AND i.series_uid = ? AND i.current = 1 AND (${visible.instance(ROWS)})`;
    const { n } = this.#stmt(sql).get(visible.params, study, series) as { n: number };
    return { ...attrs, [TAGS.NumberOfSeriesRelatedInstances]: { vr: 'IS', Value: [n] } };
  }

  /** Runs a query statement, with the scope's named parameters first when there is one. */
  #all(sql: string, named: Record<string, SQLInputValue> | undefined, params: SQLInputValue[]): unknown[] {
    const statement = this.#stmt(sql);
    return named === undefined ? statement.all(...params) : statement.all(named, ...params);
  }

  /** Studies matching all filters (and shown by `scope`), most recent StudyDate/StudyTime first. */
  queryStudies(query: CatalogQuery, scope?: CatalogScope): StudyRecord[] {
    const visible = scope === undefined ? undefined : new ScopeSql(scope);
    const params: SQLInputValue[] = [];
    const where = queryConditions('study', query, params, visible && visibleElements(visible));
    const rows = this.#all(
      `SELECT s.study_uid, s.attributes FROM studies s WHERE s.instance_count > 0 ${where}
       ${visible === undefined ? '' : `AND (${visible.study('s')})`}
       ORDER BY s.study_date DESC, s.study_time DESC, s.study_uid LIMIT ? OFFSET ?`,
      visible?.params,
      [...params, query.limit, query.offset],
    ) as Array<{ study_uid: string; attributes: string }>;
    return rows.map((r) => {
      const attributes = JSON.parse(r.attributes) as DicomJsonDataset;
      return {
        studyInstanceUID: r.study_uid,
        attributes: visible === undefined || visible.wholeStudies ? attributes : this.#visibleStudy(attributes, r.study_uid, visible),
      };
    });
  }

  /** Series matching all filters (study keys match the series' study; shown by `scope`), by study, SeriesNumber. */
  querySeries(query: CatalogQuery, scope?: CatalogScope): SeriesRecord[] {
    const visible = scope === undefined ? undefined : new ScopeSql(scope);
    const params: SQLInputValue[] = [];
    const where = queryConditions('series', query, params, visible && visibleElements(visible));
    const rows = this.#all(
      `SELECT se.study_uid, se.series_uid, se.attributes FROM series se JOIN studies s ON s.study_uid = se.study_uid
       WHERE se.instance_count > 0 ${where}
       ${visible === undefined ? '' : `AND (${visible.series(ROWS)})`}
       ORDER BY se.study_uid, se.series_number NULLS LAST, se.series_uid LIMIT ? OFFSET ?`,
      visible?.params,
      [...params, query.limit, query.offset],
    ) as Array<{ study_uid: string; series_uid: string; attributes: string }>;
    const studies = new Map<string, DicomJsonDataset>();
    return rows.map((r) => {
      const attributes = JSON.parse(r.attributes) as DicomJsonDataset;
      return {
        studyInstanceUID: r.study_uid,
        seriesInstanceUID: r.series_uid,
        attributes: visible === undefined || visible.wholeSeries ? attributes : this.#visibleSeries(attributes, r.study_uid, r.series_uid, visible),
        studyAttributes: this.#studyAttributes(studies, r.study_uid, visible),
      };
    });
  }

  /** Current instances matching all filters (and shown by `scope`), in listInstances order. */
  queryInstances(query: CatalogQuery, scope?: CatalogScope): InstanceRecord[] {
    const visible = scope === undefined ? undefined : new ScopeSql(scope);
    const params: SQLInputValue[] = [];
    const where = queryConditions('instance', query, params, visible && visibleElements(visible));
    // Within one study, the per-instance check is skipped when none of its instances is hidden.
    const rowsVisible =
      visible === undefined
        ? undefined
        : query.study === undefined
          ? { sql: `(${visible.instance(ROWS)})`, params: visible.params }
          : visible.instanceWithin(ROWS, { study: query.study, series: query.series });
    const fields = query.instanceFields;
    // json_object(tag, metadata -> path, ...) keeps each element's JSON; absent ones are null.
    const metadataColumn = fields === undefined ? 'i.metadata' : `json_object(${fields.map(() => '?, i.metadata -> ?').join(', ')})`;
    const fieldParams: SQLInputValue[] = fields === undefined ? [] : fields.flatMap((tag) => [tag, `$."${tag}"`]);
    const rows = this.#all(
      `SELECT i.study_uid, i.series_uid, i.sop_uid, i.transfer_syntax_uid, ${metadataColumn} AS metadata FROM instances i
       JOIN series se ON se.study_uid = i.study_uid AND se.series_uid = i.series_uid
       JOIN studies s ON s.study_uid = i.study_uid
       WHERE i.current = 1 ${where}
       ${rowsVisible === undefined ? '' : `AND ${rowsVisible.sql}`}
       ORDER BY i.study_uid, se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST, i.sop_uid
       LIMIT ? OFFSET ?`,
      rowsVisible?.params,
      [...fieldParams, ...params, query.limit, query.offset],
    ) as Array<{
      study_uid: string;
      series_uid: string;
      sop_uid: string;
      transfer_syntax_uid: string;
      metadata: string;
    }>;
    const studies = new Map<string, DicomJsonDataset>();
    const series = new Map<string, DicomJsonDataset>();
    return rows.map((r) => ({
      studyInstanceUID: r.study_uid,
      seriesInstanceUID: r.series_uid,
      sopInstanceUID: r.sop_uid,
      transferSyntaxUID: r.transfer_syntax_uid,
      metadata:
        fields === undefined ? (JSON.parse(r.metadata) as DicomJsonDataset) : withoutNulls(JSON.parse(r.metadata) as Record<Tag, DicomJsonElement | null>),
      seriesAttributes: this.#seriesAttributes(series, r.study_uid, r.series_uid, visible),
      studyAttributes: this.#studyAttributes(studies, r.study_uid, visible),
    }));
  }
}

/**
 * The attributes a scope changes, as SQL over the query's rows (study `s`, series `se`): what
 * QIDO matches ModalitiesInStudy=CT or NumberOfStudyRelatedInstances against when the caller
 * sees part of a study. Matching the stored values would tell a caller that a hidden CT exists.
 * Where the scope shows studies (or series) whole, the stored values are the visible ones.
 */
function visibleElements(visible: ScopeSql): ComputedElement {
  const seriesOfStudy = `FROM series cse WHERE cse.study_uid = s.study_uid AND cse.instance_count > 0 AND (${visible.series({ s: 's', se: 'cse' })})`;
  // The visible instances of the study and of the series: counted from instance_counts when the
  // scope is countable (scope-sql.ts), else from the instances themselves.
  const ofStudy = visible.countable
    ? {
        from: `FROM instance_counts cc JOIN series cse ON cse.study_uid = cc.study_uid AND cse.series_uid = cc.series_uid
          WHERE cc.study_uid = s.study_uid AND (${visible.counted({ s: 's', se: 'cse', c: 'cc' })})`,
        sopClass: 'cc.sop_class_uid',
        count: 'coalesce(sum(cc.n), 0)',
      }
    : {
        from: `FROM instances ci JOIN series cse ON cse.study_uid = ci.study_uid AND cse.series_uid = ci.series_uid
          WHERE ci.study_uid = s.study_uid AND ci.current = 1 AND (${visible.instance({ s: 's', se: 'cse', i: 'ci' })})`,
        sopClass: 'ci.sop_class_uid',
        count: 'count(*)',
      };
  const ofSeries = visible.countable
    ? `SELECT coalesce(sum(cc.n), 0) FROM instance_counts cc
          WHERE cc.study_uid = se.study_uid AND cc.series_uid = se.series_uid AND (${visible.counted({ s: 's', se: 'se', c: 'cc' })})`
    : `SELECT count(*) FROM instances ci
          WHERE ci.study_uid = se.study_uid AND ci.series_uid = se.series_uid AND ci.current = 1 AND (${visible.instance({ s: 's', se: 'se', i: 'ci' })})`;
  return (tag) => {
    if (visible.wholeStudies) return undefined;
    switch (tag) {
      case TAGS.ModalitiesInStudy:
        return `(SELECT json_object('vr', 'CS', 'Value', json_group_array(DISTINCT cse.modality)) ${seriesOfStudy} AND cse.modality IS NOT NULL)`;
      case TAGS.SOPClassesInStudy:
        return `(SELECT json_object('vr', 'UI', 'Value', json_group_array(DISTINCT ${ofStudy.sopClass})) ${ofStudy.from})`;
      case TAGS.NumberOfStudyRelatedSeries:
        return `json_object('vr', 'IS', 'Value', json_array((SELECT count(*) ${seriesOfStudy})))`;
      case TAGS.NumberOfStudyRelatedInstances:
        return `json_object('vr', 'IS', 'Value', json_array((SELECT ${ofStudy.count} ${ofStudy.from})))`;
      case TAGS.NumberOfSeriesRelatedInstances:
        if (visible.wholeSeries) return undefined;
        return `json_object('vr', 'IS', 'Value', json_array((${ofSeries})))`;
      default:
        return undefined;
    }
  };
}
