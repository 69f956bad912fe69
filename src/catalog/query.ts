// The catalog's QIDO-RS queries: studies, series and instances matching a query's keys, with the
// study and series attributes that go with each result, as a CatalogScope shows them (catalog.ts
// says how a scope changes counts and derived attributes). Apart from catalog.ts because the query
// path is a body of SQL of its own that shares nothing with the commit path but the statement
// cache: the Catalog's queryStudies, querySeries and queryInstances delegate here with theirs.

import type { SQLInputValue } from 'node:sqlite';
import type { StatementCache } from '../core/sqlite.ts';
import { TAGS } from '../dicom/attributes.ts';
import type { DicomJsonDataset, DicomJsonElement, Tag } from '../dicom/model.ts';
import { queryConditions, type ComputedElement } from './columns.ts';
import { withoutNulls } from './derived.ts';
import type { CatalogQuery, InstanceRecord, SeriesRecord, StudyRecord } from './records.ts';
import type { CatalogScope } from './scope.ts';
import { ScopeSql } from './scope-sql.ts';

/** An instance row `i` with its series `se` and study `s`, as scope conditions need them. */
export const ROWS = { s: 's', se: 'se', i: 'i' } as const;
export const SCOPE_JOINS = 'JOIN series se ON se.study_uid = i.study_uid AND se.series_uid = i.series_uid JOIN studies s ON s.study_uid = i.study_uid';
/** A row `c` of instance_counts with its series `se` and study `s`. */
const COUNTED = { s: 's', se: 'se', c: 'c' } as const;
const COUNT_JOINS = 'JOIN series se ON se.study_uid = c.study_uid AND se.series_uid = c.series_uid JOIN studies s ON s.study_uid = c.study_uid';

function studyAttributes(statements: StatementCache, cache: Map<string, DicomJsonDataset>, study: string, visible?: ScopeSql): DicomJsonDataset {
  let attrs = cache.get(study);
  if (attrs === undefined) {
    const row = statements.get('SELECT attributes FROM studies WHERE study_uid = ?').get(study) as { attributes: string } | undefined;
    attrs = row === undefined ? {} : (JSON.parse(row.attributes) as DicomJsonDataset);
    if (visible !== undefined && !visible.wholeStudies) attrs = visibleStudy(statements, attrs, study, visible);
    cache.set(study, attrs);
  }
  return attrs;
}

function seriesAttributes(
  statements: StatementCache,
  cache: Map<string, DicomJsonDataset>,
  study: string,
  series: string,
  visible?: ScopeSql,
): DicomJsonDataset {
  const key = `${study}/${series}`;
  let attrs = cache.get(key);
  if (attrs === undefined) {
    const row = statements.get('SELECT attributes FROM series WHERE study_uid = ? AND series_uid = ?').get(study, series) as { attributes: string } | undefined;
    attrs = row === undefined ? {} : (JSON.parse(row.attributes) as DicomJsonDataset);
    if (visible !== undefined && !visible.wholeSeries) attrs = visibleSeries(statements, attrs, study, series, visible);
    cache.set(key, attrs);
  }
  return attrs;
}

/** A study's attributes with ModalitiesInStudy, SOPClassesInStudy and its counts over the instances `visible` shows. */
function visibleStudy(statements: StatementCache, attrs: DicomJsonDataset, study: string, visible: ScopeSql): DicomJsonDataset {
  const sql = visible.countable
    ? `SELECT c.series_uid, se.modality, c.sop_class_uid, sum(c.n) AS n FROM instance_counts c ${COUNT_JOINS}
       WHERE c.study_uid = ? AND (${visible.counted(COUNTED)})
       GROUP BY c.series_uid, c.sop_class_uid`
    : `SELECT i.series_uid, se.modality, i.sop_class_uid, count(*) AS n FROM instances i ${SCOPE_JOINS}
       WHERE i.study_uid = ? AND i.current = 1 AND (${visible.instance(ROWS)})
       GROUP BY i.series_uid, i.sop_class_uid`;
  const rows = statements.get(sql).all(visible.params, study) as unknown as Array<{
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
function visibleSeries(statements: StatementCache, attrs: DicomJsonDataset, study: string, series: string, visible: ScopeSql): DicomJsonDataset {
  const sql = visible.countable
    ? `SELECT coalesce(sum(c.n), 0) AS n FROM instance_counts c ${COUNT_JOINS}
       WHERE c.study_uid = ? AND c.series_uid = ? AND (${visible.counted(COUNTED)})`
    : `SELECT count(*) AS n FROM instances i ${SCOPE_JOINS}
       WHERE i.study_uid = ? AND i.series_uid = ? AND i.current = 1 AND (${visible.instance(ROWS)})`;
  const { n } = statements.get(sql).get(visible.params, study, series) as { n: number };
  return { ...attrs, [TAGS.NumberOfSeriesRelatedInstances]: { vr: 'IS', Value: [n] } };
}

/** Runs a query statement, with the scope's named parameters first when there is one. */
function all(statements: StatementCache, sql: string, named: Record<string, SQLInputValue> | undefined, params: SQLInputValue[]): unknown[] {
  const statement = statements.get(sql);
  return named === undefined ? statement.all(...params) : statement.all(named, ...params);
}

/** Studies matching all filters (and shown by `scope`), most recent StudyDate/StudyTime first. */
export function queryStudies(statements: StatementCache, query: CatalogQuery, scope?: CatalogScope): StudyRecord[] {
  const visible = scope === undefined ? undefined : new ScopeSql(scope);
  const params: SQLInputValue[] = [];
  const where = queryConditions('study', query, params, visible && visibleElements(visible));
  const rows = all(
    statements,
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
      attributes: visible === undefined || visible.wholeStudies ? attributes : visibleStudy(statements, attributes, r.study_uid, visible),
    };
  });
}

/** Series matching all filters (study keys match the series' study; shown by `scope`), by study, SeriesNumber. */
export function querySeries(statements: StatementCache, query: CatalogQuery, scope?: CatalogScope): SeriesRecord[] {
  const visible = scope === undefined ? undefined : new ScopeSql(scope);
  const params: SQLInputValue[] = [];
  const where = queryConditions('series', query, params, visible && visibleElements(visible));
  const rows = all(
    statements,
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
      attributes: visible === undefined || visible.wholeSeries ? attributes : visibleSeries(statements, attributes, r.study_uid, r.series_uid, visible),
      studyAttributes: studyAttributes(statements, studies, r.study_uid, visible),
    };
  });
}

/** Current instances matching all filters (and shown by `scope`), in listInstances order. */
export function queryInstances(statements: StatementCache, query: CatalogQuery, scope?: CatalogScope): InstanceRecord[] {
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
  const rows = all(
    statements,
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
    seriesAttributes: seriesAttributes(statements, series, r.study_uid, r.series_uid, visible),
    studyAttributes: studyAttributes(statements, studies, r.study_uid, visible),
  }));
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
