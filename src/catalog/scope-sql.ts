// A CatalogScope (scope.ts) as SQL conditions, at each level the catalog reads: an instance row,
// a series row, a study row. Clauses are ORed, the fields of a clause ANDed; a series or a study
// is visible when at least one of its current instances is (an EXISTS per level below it).
//
// Values travel as named parameters ($sc0, $sc1...), lists as one JSON array each
// (`IN (SELECT value FROM json_each($sc0))`): the SQL text depends on the shape of the scope alone,
// never on its values, so prepared statements are reused across callers, and a value is never
// spliced into SQL. The named parameters sit beside the query's own anonymous `?`s: node:sqlite
// binds an object of named values first, then the anonymous values in order.
//
// Matching:
//   patients    the study's Patient ID equals the ref's, and the issuers agree: a ref without an
//               issuer matches any study; a study that recorded no Issuer of Patient ID
//               (0010,0021) matches any ref (most modalities leave it empty, and a patient's own
//               studies must not vanish for that); two issuers given must be equal. The identity
//               store resolves Patient IDs to accounts the same way (src/identity/store.ts).
//   studies, series        the UIDs
//   modalities  the series' Modality, exactly (CS values are upper case by definition)
//   kinds / referencedByKeyObjects   the instance's kind (src/dicom/sop-classes.ts), or a
//               reference to it by a current key object selection of its study; both absent: any
//   An empty list matches nothing (a patient account bound to no Patient ID sees nothing).
//
// Counting: where no clause asks for key object references, every condition reads the study,
// the series and the instance's kind alone, so all current instances of one (study, series,
// kind, SOP Class) are visible or none are. Such a scope is `countable`: the visible instances
// of a study or series are counted from its rows of instance_counts (schema.ts), a few rows
// rather than every instance, and a listing whose study (series) has no hidden group skips the
// per-instance check. A reference names single instances: those scopes read the instances.

import type { SQLInputValue } from 'node:sqlite';
import { VaultError } from '../core/errors.ts';
import type { CatalogScope, ScopeClause } from './scope.ts';

/** Table aliases of the rows a condition is about. */
export interface InstanceAliases {
  s: string;
  se: string;
  i: string;
}
export type SeriesAliases = Omit<InstanceAliases, 'i'>;
/** Table aliases of a row `c` of instance_counts with its series `se` and study `s`. */
export interface CountAliases extends SeriesAliases {
  c: string;
}

interface Clause {
  /** A given list is empty: the clause matches nothing. */
  never: boolean;
  patients?: { param: string; issuers: boolean };
  studies?: string;
  series?: string;
  modalities?: string;
  /** Instance-level condition: kinds (param), key object references, or both (ORed). */
  kinds?: string;
  references: boolean;
  instanceLevel: boolean;
}

const and = (conds: string[]): string => (conds.length === 0 ? '1' : conds.join(' AND '));
const or = (conds: string[]): string => (conds.length === 0 ? '0' : conds.length === 1 ? conds[0]! : conds.map((c) => `(${c})`).join(' OR '));

/** A CatalogScope compiled once per request: its parameters and its conditions at each level. */
export class ScopeSql {
  /** The named parameters every condition below refers to. */
  readonly params: Record<string, SQLInputValue> = {};
  /**
   * No clause looks below the study (patients and studies only: a patient's own studies): a
   * visible study is visible whole, and its stored counts are its visible counts.
   */
  readonly wholeStudies: boolean;
  /** No clause looks below the series (no kinds, no key object references): a visible series is visible whole. */
  readonly wholeSeries: boolean;
  /** No clause asks for key object references: visibility is per row of instance_counts (see the header). */
  readonly countable: boolean;
  readonly #clauses: Clause[];

  constructor(scope: CatalogScope) {
    let n = 0;
    const param = (value: unknown): string => {
      const name = `sc${n++}`;
      this.params[name] = JSON.stringify(value);
      return `$${name}`;
    };
    this.#clauses = scope.clauses.map((c: ScopeClause): Clause => {
      // An empty list matches nothing; so do no kinds without references (also kept out of the
      // SQL: an instance-level condition of a constant 0 leaves SQLite no plan for INDEXED BY).
      const never =
        [c.patients, c.studies, c.series, c.modalities].some((list) => list !== undefined && list.length === 0) ||
        (c.kinds !== undefined && c.kinds.length === 0 && c.referencedByKeyObjects !== true);
      const clause: Clause = { never, references: c.referencedByKeyObjects === true, instanceLevel: false };
      if (never) return clause;
      if (c.patients !== undefined) {
        clause.patients = {
          param: param(c.patients.map((p) => [p.id, p.issuer])),
          issuers: c.patients.some((p) => p.issuer !== null),
        };
      }
      if (c.studies !== undefined) clause.studies = param(c.studies);
      if (c.series !== undefined) clause.series = param(c.series);
      if (c.modalities !== undefined) clause.modalities = param(c.modalities);
      if (c.kinds !== undefined && c.kinds.length > 0) clause.kinds = param(c.kinds);
      clause.instanceLevel = c.kinds !== undefined || clause.references;
      return clause;
    });
    const live = this.#live();
    this.wholeSeries = live.every((c) => !c.instanceLevel);
    this.wholeStudies = this.wholeSeries && live.every((c) => c.series === undefined && c.modalities === undefined);
    this.countable = live.every((c) => !c.references);
  }

  /** Whether a row of instance `a.i`, of series `a.se` and study `a.s` (all joined), is visible. */
  instance(a: InstanceAliases): string {
    return or(this.#live().map((c) => and([...this.#studyConds(c, a.s), ...this.#seriesConds(c, a.se), ...this.#instanceConds(c, a.i, 'row')])));
  }

  /**
   * `instance(a)` for a listing of the current instances of `range` (a study, or one series of
   * it), with the parameters to bind (the scope's and the range's): true for every row at once
   * when none of the range's instances is hidden, which one uncorrelated lookup in
   * instance_counts tells (SQLite runs it once per statement, and skips the per-row condition
   * after it).
   */
  instanceWithin(a: InstanceAliases, range: { study: string; series?: string | undefined }): { sql: string; params: Record<string, SQLInputValue> } {
    if (!this.countable) return { sql: `(${this.instance(a)})`, params: this.params };
    const params: Record<string, SQLInputValue> = { ...this.params, sc_study: range.study };
    let where = 'sc_c.study_uid = $sc_study';
    if (range.series !== undefined) {
      params.sc_series = range.series;
      where += ' AND sc_c.series_uid = $sc_series';
    }
    // IS NOT TRUE: a condition that is NULL (a study without a Patient ID) hides, as in a WHERE.
    const hidden =
      'SELECT 1 FROM instance_counts sc_c JOIN series sc_cse ON sc_cse.study_uid = sc_c.study_uid AND sc_cse.series_uid = sc_c.series_uid' +
      ` JOIN studies sc_cs ON sc_cs.study_uid = sc_c.study_uid WHERE ${where} AND (${this.counted({ s: 'sc_cs', se: 'sc_cse', c: 'sc_c' })}) IS NOT TRUE`;
    return { sql: `(NOT EXISTS (${hidden}) OR (${this.instance(a)}))`, params };
  }

  /**
   * Whether the instances row `a.c` of instance_counts counts (of series `a.se` and study `a.s`,
   * joined) are visible: all of them or none, for a countable scope only.
   */
  counted(a: CountAliases): string {
    if (!this.countable) throw new VaultError('INTERNAL', 'a scope with key object references is not countable');
    return or(this.#live().map((c) => and([...this.#studyConds(c, a.s), ...this.#seriesConds(c, a.se), ...this.#instanceConds(c, a.c, 'index')])));
  }

  /** Whether series row `a.se` (its study row `a.s` joined) has a visible current instance. */
  series(a: SeriesAliases): string {
    return or(this.#live().map((c) => and([...this.#studyConds(c, a.s), ...this.#seriesConds(c, a.se), ...this.#instancesOf(c, a.se)])));
  }

  /** Whether study row `s` has a visible current instance. */
  study(s: string): string {
    return or(
      this.#live().map((c) => {
        const below = [...this.#seriesConds(c, 'sc_se'), ...this.#instancesOf(c, 'sc_se')];
        if (below.length === 0) return and(this.#studyConds(c, s));
        const exists = `EXISTS (SELECT 1 FROM series sc_se WHERE sc_se.study_uid = ${s}.study_uid AND sc_se.instance_count > 0 AND ${and(below)})`;
        return and([...this.#studyConds(c, s), exists]);
      }),
    );
  }

  #live(): Clause[] {
    return this.#clauses.filter((c) => !c.never);
  }

  #studyConds(c: Clause, s: string): string[] {
    const conds: string[] = [];
    if (c.patients !== undefined) {
      const p = c.patients.param;
      // The IN lets SQLite find the studies by their patient_id index; the EXISTS checks issuers.
      conds.push(`${s}.patient_id IN (SELECT value ->> 0 FROM json_each(${p}))`);
      if (c.patients.issuers) {
        conds.push(
          `EXISTS (SELECT 1 FROM json_each(${p}) sc_p WHERE sc_p.value ->> 0 = ${s}.patient_id` +
            ` AND (sc_p.value ->> 1 IS NULL OR ${s}.issuer IS NULL OR ${s}.issuer = sc_p.value ->> 1))`,
        );
      }
    }
    if (c.studies !== undefined) conds.push(`${s}.study_uid IN (SELECT value FROM json_each(${c.studies}))`);
    return conds;
  }

  #seriesConds(c: Clause, se: string): string[] {
    const conds: string[] = [];
    if (c.series !== undefined) conds.push(`${se}.series_uid IN (SELECT value FROM json_each(${c.series}))`);
    if (c.modalities !== undefined) conds.push(`${se}.modality IN (SELECT value FROM json_each(${c.modalities}))`);
    return conds;
  }

  /**
   * The clause's instance-level condition on `i`: a row read from the table ('row'), or one read
   * from the kind index ('index'). A row's kind is checked in the index too: kind is the table's
   * last column, stored after metadata and layout, and reading it from the row would walk the
   * row's overflow pages (+0.2 ms per instance whose metadata is 300 KB, measured).
   */
  #instanceConds(c: Clause, i: string, from: 'row' | 'index'): string[] {
    if (!c.instanceLevel) return [];
    const alternatives: string[] = [];
    if (c.kinds !== undefined) {
      const kinds = `IN (SELECT value FROM json_each(${c.kinds}))`;
      alternatives.push(
        from === 'index'
          ? `${i}.kind ${kinds}`
          : `EXISTS (SELECT 1 FROM instances sc_k INDEXED BY instances_current_kind WHERE sc_k.study_uid = ${i}.study_uid` +
              ` AND sc_k.series_uid = ${i}.series_uid AND sc_k.kind ${kinds} AND sc_k.sop_uid = ${i}.sop_uid AND sc_k.current = 1)`,
      );
    }
    if (c.references) {
      alternatives.push(`EXISTS (SELECT 1 FROM key_object_references sc_r WHERE sc_r.study_uid = ${i}.study_uid AND sc_r.referenced_sop_uid = ${i}.sop_uid)`);
    }
    return [alternatives.length === 1 ? alternatives[0]! : `(${or(alternatives)})`];
  }

  /** A series row's visible instances exist (nothing to check when the clause has no instance-level field). */
  #instancesOf(c: Clause, se: string): string[] {
    if (!c.instanceLevel) return [];
    return [
      `EXISTS (SELECT 1 FROM instances sc_i INDEXED BY instances_current_kind WHERE sc_i.study_uid = ${se}.study_uid AND sc_i.series_uid = ${se}.series_uid` +
        ` AND sc_i.current = 1 AND ${and(this.#instanceConds(c, 'sc_i', 'index'))})`,
    ];
  }
}
