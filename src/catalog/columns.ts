// Where a query key is matched in SQL: a few keys have indexed columns (studies.patient_id,
// series.modality...) that answer them from an index; every other key is matched on the stored
// DICOM JSON by dv_match, the SQL function the catalog registers over src/dicom/matching.ts.

import type { SQLInputValue } from 'node:sqlite';
import type { AttributeLevel } from '../dicom/attributes.ts';
import { TAGS, attributeByTag, isStudyLevel } from '../dicom/attributes.ts';
import { compileMatcher, invalidQuery, type AttributeFilter, type Matcher } from '../dicom/matching.ts';
import type { Tag } from '../dicom/model.ts';
import type { CatalogQuery } from './records.ts';

type ColumnKind = 'uid' | 'string' | 'date' | 'number';
/** Columns that answer common keys from an index instead of the JSON text. */
const COLUMNS: Partial<Record<Tag, { table: 's' | 'se' | 'i'; column: string; kind: ColumnKind }>> = {
  [TAGS.StudyInstanceUID]: { table: 's', column: 'study_uid', kind: 'uid' },
  [TAGS.PatientID]: { table: 's', column: 'patient_id', kind: 'string' },
  [TAGS.AccessionNumber]: { table: 's', column: 'accession_number', kind: 'string' },
  [TAGS.StudyDate]: { table: 's', column: 'study_date', kind: 'date' },
  [TAGS.SeriesInstanceUID]: { table: 'se', column: 'series_uid', kind: 'uid' },
  [TAGS.Modality]: { table: 'se', column: 'modality', kind: 'string' },
  [TAGS.SeriesNumber]: { table: 'se', column: 'series_number', kind: 'number' },
  [TAGS.SOPInstanceUID]: { table: 'i', column: 'sop_uid', kind: 'uid' },
  [TAGS.SOPClassUID]: { table: 'i', column: 'sop_class_uid', kind: 'uid' },
  [TAGS.InstanceNumber]: { table: 'i', column: 'instance_number', kind: 'number' },
  [TAGS.AvailableTransferSyntaxUID]: { table: 'i', column: 'transfer_syntax_uid', kind: 'uid' },
};

/**
 * GLOB is case-sensitive with the same `*` and `?` as DICOM; only `[` must be escaped. SQLite's
 * matcher cannot be driven into exponential time by these patterns: it gives up on a star as
 * soon as the rest of the pattern has run out of text (SQLITE_NOWILDCARDMATCH), so its worst is
 * about (value length) x (segment length) per row. Measured on SQLite 3.53: `*a` x 7 to x 500
 * against 64 'a's, under 0.01 ms per row; the worst within QIDO's bounds, a 1,022-character
 * segment against a stored value of 10,240 'a's, 11 ms per row. The values of these columns
 * (PatientID, AccessionNumber, Modality) are at most 64 characters in valid DICOM: such
 * patterns stay pushed into SQL.
 */
function globPattern(p: string): string {
  return p.replaceAll('[', '[[]');
}

function columnCondition(m: Matcher, kind: ColumnKind, col: string, params: SQLInputValue[]): string | undefined {
  if (m.kind === 'uid' && kind === 'uid') {
    params.push(...m.uids);
    return `${col} IN (${m.uids.map(() => '?').join(', ')})`;
  }
  if (m.kind === 'string' && kind === 'string' && !m.pn) {
    const ors = m.alternatives.map((alt) => {
      if ('exact' in alt) {
        params.push(alt.exact);
        return `${col} = ?`;
      }
      params.push(globPattern(alt.glob.pattern));
      return `${col} GLOB ?`;
    });
    return `(${ors.join(' OR ')})`;
  }
  if (m.kind === 'range' && m.vr === 'DA' && kind === 'date') {
    const conds: string[] = [`${col} IS NOT NULL`];
    if (m.lo !== null) {
      conds.push(`${col} >= ?`);
      params.push(m.lo);
    }
    if (m.hi !== null) {
      conds.push(`${col} <= ?`);
      params.push(m.hi);
    }
    return `(${conds.join(' AND ')})`;
  }
  if (m.kind === 'number' && kind === 'number') {
    params.push(...m.values);
    return `${col} IN (${m.values.map(() => '?').join(', ')})`;
  }
  return undefined;
}

export type QueryLevel = 'study' | 'series' | 'instance';
export const LEVEL_RANK: Record<QueryLevel, number> = { study: 0, series: 1, instance: 2 };

function storageLevel(tag: Tag): QueryLevel {
  const level: AttributeLevel | undefined = attributeByTag(tag)?.level;
  if (level === undefined || level === 'instance') return 'instance';
  return isStudyLevel(level) ? 'study' : 'series';
}

/** Where a key of a query at `level` is matched; throws for keys below the level. */
function attributeColumn(filter: AttributeFilter, level: QueryLevel): string {
  const stored = storageLevel(filter.tag);
  if (LEVEL_RANK[stored] > LEVEL_RANK[level]) {
    throw invalidQuery(filter.key, `not a ${level}-level attribute, so it cannot be matched in a ${level} query`);
  }
  return stored === 'study' ? 's.attributes' : stored === 'series' ? 'se.attributes' : 'i.metadata';
}

/**
 * An SQL expression giving the DICOM JSON element of `tag` for the rows of a query, in place of
 * the stored one; undefined: the stored one. A scoped query matches the counts and
 * ModalitiesInStudy over what its caller may see, not over the whole study.
 */
export type ComputedElement = (tag: Tag) => string | undefined;

/**
 * The WHERE conditions of a query at `level` (after 'AND'), its values appended to `params`.
 * A key with an indexed column at or above the level is matched on the column when the column
 * can answer it exactly; every other key through dv_match on the stored JSON (or on the
 * element `computed` gives for it).
 */
export function queryConditions(level: QueryLevel, query: CatalogQuery, params: SQLInputValue[], computed?: ComputedElement): string {
  const conds: string[] = [];
  if (query.study !== undefined) {
    conds.push(level === 'study' ? 's.study_uid = ?' : level === 'series' ? 'se.study_uid = ?' : 'i.study_uid = ?');
    params.push(query.study);
  }
  if (query.series !== undefined) {
    conds.push(level === 'instance' ? 'i.series_uid = ?' : 'se.series_uid = ?');
    params.push(query.series);
  }
  for (const filter of query.filters) {
    const jsonColumn = attributeColumn(filter, level);
    const m = compileMatcher(filter.vr, filter.value, filter.key);
    if (m.kind === 'universal') continue;
    const col = COLUMNS[filter.tag];
    if (col !== undefined && LEVEL_RANK[col.table === 's' ? 'study' : col.table === 'se' ? 'series' : 'instance'] <= LEVEL_RANK[level]) {
      const cond = columnCondition(m, col.kind, `${col.table}.${col.column}`, params);
      if (cond !== undefined) {
        conds.push(cond);
        continue;
      }
    }
    const element = computed?.(filter.tag);
    if (element !== undefined) {
      conds.push(`dv_match(?, ${element}) = 1`);
      params.push(JSON.stringify([filter.vr, filter.value]));
      continue;
    }
    conds.push(`dv_match(?, json_extract(${jsonColumn}, ?)) = 1`);
    params.push(JSON.stringify([filter.vr, filter.value]), `$."${filter.tag}"`);
  }
  return conds.length === 0 ? '' : `AND ${conds.join(' AND ')}`;
}
