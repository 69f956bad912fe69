// The catalog: the node's index of studies, series, instances and study versions, in an
// embedded SQLite database (node:sqlite). The truth of a study is its content-addressed DAG;
// the catalog records the DAG roots, where each instance's node is, what to answer QIDO-RS
// with, and which roots still wait to be anchored.
//
// Writes happen once per STOW request, in one transaction, with synchronous=FULL: once
// commitStudyVersion returns, the new version survives a power cut.

import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { VaultError } from '../core/errors.ts';
import { DEFAULT_BUSY_TIMEOUT_MS, openDatabase } from '../core/sqlite.ts';
import type { DicomJsonDataset, DicomJsonElement, InstanceLayout, Tag } from '../dicom/model.ts';
import { TAGS, attributeByTag, attributesAt, isStudyLevel } from '../dicom/attributes.ts';
import type { AttributeLevel } from '../dicom/attributes.ts';

export interface CatalogInstance {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  transferSyntaxUID: string;
  /** Bytes of the Part 10 instance as received. */
  size: number;
  /** Hex SHA-256 of the plaintext Part 10 bytes. */
  sha256: string;
  /** CID (string) of the instance's DAG node. */
  nodeCid: string;
  /** DICOM JSON without pixel data (BulkDataURI placeholders 'bulk/<path>'). */
  metadata: DicomJsonDataset;
  layout: InstanceLayout;
}

export interface StudyVersion {
  studyInstanceUID: string;
  version: number;
  root: string;
  prev: string | null;
  /** ISO 8601. */
  createdAt: string;
  /** Current instances of the study once this version was committed. */
  instanceCount: number;
}

/** One stored revision of an instance: the current one or one replaced by other bytes. */
export interface InstanceRevision {
  instance: CatalogInstance;
  /** Study version that stored these bytes. */
  version: number;
  /** Study version whose different bytes replaced these; null while current. */
  replacedIn: number | null;
}

export interface PendingAnchor {
  root: string;
  studyInstanceUID: string;
  version: number;
  /** ISO 8601: the commit time of the version. */
  enqueuedAt: string;
}

/** Default wait for another connection's write lock, in milliseconds. */
export { DEFAULT_BUSY_TIMEOUT_MS };

export interface CatalogOptions {
  /** SQLite file path; ':memory:' for tests. */
  path: string;
  /** Wait for a lock held by another connection, in milliseconds. Default DEFAULT_BUSY_TIMEOUT_MS. */
  busyTimeoutMs?: number;
}

export interface CommitInput {
  studyInstanceUID: string;
  version: number;
  root: string;
  prev: string | null;
  instances: CatalogInstance[];
  createdAt: string;
}

// ---------------------------------------------------------------------------------------
// QIDO queries

/** One query key: the attribute, its VR ('' when unknown) and the raw value from the URL. */
export interface AttributeFilter {
  tag: Tag;
  vr: string;
  value: string;
  /** The query parameter as the client wrote it, to name it in errors. */
  key: string;
}

export interface CatalogQuery {
  filters: AttributeFilter[];
  study?: string;
  series?: string;
  /** Maximum rows returned. */
  limit: number;
  /** Rows skipped first. */
  offset: number;
  /**
   * Instance queries only: the metadata attributes to return, all when absent. Extracting a
   * few attributes inside SQLite is several times cheaper than parsing whole metadata.
   */
  instanceFields?: readonly Tag[];
}

export interface StudyRecord {
  studyInstanceUID: string;
  /** Patient and study attributes, with ModalitiesInStudy, SOPClassesInStudy and the counts. */
  attributes: DicomJsonDataset;
}

export interface SeriesRecord {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  /** Series attributes with NumberOfSeriesRelatedInstances. */
  attributes: DicomJsonDataset;
  studyAttributes: DicomJsonDataset;
}

export interface InstanceRecord {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  transferSyntaxUID: string;
  metadata: DicomJsonDataset;
  seriesAttributes: DicomJsonDataset;
  studyAttributes: DicomJsonDataset;
}

// ---------------------------------------------------------------------------------------
// Schema

/** MIGRATIONS[n] takes the schema from user_version n to n + 1. Append only. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE studies (
    study_uid        TEXT PRIMARY KEY,
    patient_id       TEXT,
    study_date       TEXT,
    study_time       TEXT,
    accession_number TEXT,
    series_count     INTEGER NOT NULL DEFAULT 0,
    instance_count   INTEGER NOT NULL DEFAULT 0,
    attributes       TEXT NOT NULL
  ) STRICT;
  CREATE INDEX studies_patient_id ON studies (patient_id);
  CREATE INDEX studies_study_date ON studies (study_date);
  CREATE INDEX studies_accession_number ON studies (accession_number);

  CREATE TABLE series (
    study_uid      TEXT NOT NULL REFERENCES studies (study_uid),
    series_uid     TEXT NOT NULL,
    modality       TEXT,
    series_number  INTEGER,
    instance_count INTEGER NOT NULL DEFAULT 0,
    attributes     TEXT NOT NULL,
    PRIMARY KEY (study_uid, series_uid)
  ) STRICT;
  CREATE INDEX series_series_uid ON series (series_uid);
  CREATE INDEX series_modality ON series (modality);

  -- Every revision of every instance; current = 0 rows are history (other bytes received
  -- later for the same SOP Instance UID) and are never shown by queries.
  CREATE TABLE instances (
    id                  INTEGER PRIMARY KEY,
    study_uid           TEXT NOT NULL REFERENCES studies (study_uid),
    series_uid          TEXT NOT NULL,
    sop_uid             TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    instance_number     INTEGER,
    size                INTEGER NOT NULL,
    sha256              TEXT NOT NULL,
    node_cid            TEXT NOT NULL,
    metadata            TEXT NOT NULL,
    layout              TEXT NOT NULL,
    version             INTEGER NOT NULL,
    replaced_in         INTEGER,
    current             INTEGER NOT NULL
  ) STRICT;
  CREATE UNIQUE INDEX instances_current_sop ON instances (sop_uid, study_uid) WHERE current = 1;
  CREATE INDEX instances_current_series ON instances (study_uid, series_uid, instance_number) WHERE current = 1;
  CREATE INDEX instances_history ON instances (study_uid, sop_uid, id);

  CREATE TABLE study_versions (
    study_uid      TEXT NOT NULL REFERENCES studies (study_uid),
    version        INTEGER NOT NULL,
    root           TEXT NOT NULL,
    prev           TEXT,
    created_at     TEXT NOT NULL,
    instance_count INTEGER NOT NULL,
    PRIMARY KEY (study_uid, version)
  ) STRICT;

  CREATE TABLE anchor_queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    root        TEXT NOT NULL,
    study_uid   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    enqueued_at TEXT NOT NULL
  ) STRICT;
  `,
];

export const CATALOG_SCHEMA_VERSION = MIGRATIONS.length;

// ---------------------------------------------------------------------------------------
// Derived attributes

/** Attributes computed by the catalog; ignored when an instance carries them. */
const COMPUTED_STUDY_TAGS = new Set<Tag>([
  TAGS.ModalitiesInStudy,
  TAGS.SOPClassesInStudy,
  TAGS.NumberOfStudyRelatedSeries,
  TAGS.NumberOfStudyRelatedInstances,
]);
const COMPUTED_SERIES_TAGS = new Set<Tag>([TAGS.NumberOfSeriesRelatedInstances]);

// Specific Character Set and the timezone offset qualify the other values at every level.
const STUDY_PICK: readonly Tag[] = [
  ...[...attributesAt('patient'), ...attributesAt('study')].map((d) => d.tag).filter((t) => !COMPUTED_STUDY_TAGS.has(t)),
  TAGS.SpecificCharacterSet,
];
const SERIES_PICK: readonly Tag[] = [
  ...attributesAt('series').map((d) => d.tag).filter((t) => !COMPUTED_SERIES_TAGS.has(t)),
  TAGS.SpecificCharacterSet,
  TAGS.TimezoneOffsetFromUTC,
];

function hasValue(el: DicomJsonElement): boolean {
  return (el.Value !== undefined && el.Value.length > 0) || el.BulkDataURI !== undefined || el.InlineBinary !== undefined;
}

/**
 * Latest wins, but an empty element never erases a value an earlier instance gave: type 2
 * attributes are often sent empty by one modality and filled by another.
 */
function mergePicked(target: DicomJsonDataset, source: DicomJsonDataset, pick: readonly Tag[]): void {
  for (const tag of pick) {
    const el = source[tag];
    if (el === undefined) continue;
    if (hasValue(el) || target[tag] === undefined) target[tag] = el;
  }
}

function firstValue(ds: DicomJsonDataset, tag: Tag): unknown {
  return ds[tag]?.Value?.[0];
}

function firstString(ds: DicomJsonDataset, tag: Tag): string | null {
  const v = firstValue(ds, tag);
  if (typeof v === 'string') return v.trim() === '' ? null : v.trim();
  if (typeof v === 'number') return String(v);
  return null;
}

function firstInteger(ds: DicomJsonDataset, tag: Tag): number | null {
  const v = firstValue(ds, tag);
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  return Number.isSafeInteger(n) ? n : null;
}

function withoutNulls(ds: Record<Tag, DicomJsonElement | null>): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const [tag, el] of Object.entries(ds)) if (el !== null) out[tag] = el;
  return out;
}

function sortedDataset(ds: DicomJsonDataset): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const tag of Object.keys(ds).sort()) out[tag] = ds[tag]!;
  return out;
}

// ---------------------------------------------------------------------------------------
// Matching (PS3.4 C.2.2.2): one engine, used both to validate query values and, through the
// dv_match SQL function, to filter rows inside SQLite so LIMIT/OFFSET stay in SQL.

type StringAlternative = { exact: string } | { glob: string; regex: RegExp };

type Matcher =
  | { kind: 'universal' }
  | { kind: 'uid'; uids: string[] }
  | { kind: 'string'; alternatives: StringAlternative[]; pn: boolean }
  | { kind: 'range'; vr: 'DA' | 'TM' | 'DT'; lo: string | null; hi: string | null }
  | { kind: 'number'; values: number[] };

const UID_RE = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;
const NUMBER_RE = /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;
const NUMERIC_VRS = new Set(['IS', 'DS', 'US', 'SS', 'UL', 'SL', 'FL', 'FD', 'SV', 'UV']);
const UNMATCHABLE_VRS = new Set(['SQ', 'OB', 'OW', 'OF', 'OD', 'OL', 'OV', 'UN', 'AT']);

function invalid(key: string, reason: string): VaultError {
  return new VaultError('INVALID_QUERY', `${key}: ${reason}`, { details: { parameter: key } });
}

function wildcardRegex(pattern: string, caseInsensitive: boolean): RegExp {
  let src = '';
  for (const ch of pattern) {
    if (ch === '*') src += '.*';
    else if (ch === '?') src += '.';
    // Syntax characters only: under the 'u' flag an escaped '-' is a SyntaxError (PatientID=AB-* gave 500).
    else src += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${src}$`, caseInsensitive ? 'isu' : 'su');
}

/** PN comparisons here are case-insensitive and ignore trailing empty components. */
function normalizePn(s: string): string {
  return s.trim().replace(/[\^ ]+$/u, '').replace(/\^+(=|$)/gu, '$1').toUpperCase();
}

// Date/time values are compared as fixed-width strings: a partial value stands for the
// interval it covers (lower bound padded with the earliest, upper with the latest moment).
const DA_RE = /^([0-9]{4})([0-9]{2})?([0-9]{2})?$/;
const TM_RE = /^([0-9]{2})([0-9]{2})?([0-9]{2})?(\.[0-9]{1,6})?$/;
const DT_RE = /^([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?(\.[0-9]{1,6})?$/;

function validParts(vr: 'DA' | 'TM' | 'DT', m: RegExpExecArray): boolean {
  const n = (i: number): number | undefined => (m[i] === undefined ? undefined : Number(m[i]));
  const inRange = (v: number | undefined, lo: number, hi: number): boolean => v === undefined || (v >= lo && v <= hi);
  if (vr === 'TM') return inRange(n(1), 0, 23) && inRange(n(2), 0, 59) && inRange(n(3), 0, 60);
  return (
    inRange(n(2), 1, 12) &&
    inRange(n(3), 1, 31) &&
    (vr === 'DA' || (inRange(n(4), 0, 23) && inRange(n(5), 0, 59) && inRange(n(6), 0, 60)))
  );
}

/** Fixed-width form of a (possibly partial) DA/TM/DT value, or undefined if malformed. */
function padMoment(vr: 'DA' | 'TM' | 'DT', raw: string, upper: boolean): string | undefined {
  let s = raw.trim();
  if (vr === 'TM') s = s.replaceAll(':', '');
  if (vr === 'DT') s = s.replace(/[+-][0-9]{4}$/, ''); // offsets are not compared (see weaknesses)
  const re = vr === 'DA' ? DA_RE : vr === 'TM' ? TM_RE : DT_RE;
  const m = re.exec(s);
  if (m === null || !validParts(vr, m)) return undefined;
  if (vr === 'DA') return s + (upper ? '99991231' : '00000101').slice(s.length);
  const dot = s.indexOf('.');
  const digits = dot < 0 ? s : s.slice(0, dot);
  const frac = dot < 0 ? '' : s.slice(dot + 1);
  const template = vr === 'TM' ? (upper ? '235959' : '000000') : upper ? '99991231235959' : '00000101000000';
  return `${digits}${template.slice(digits.length)}.${frac.padEnd(6, upper ? '9' : '0')}`;
}

function compileRange(vr: 'DA' | 'TM' | 'DT', value: string, key: string): Matcher {
  const parts = value.split('-');
  if (parts.length > 2) throw invalid(key, `'${value}' is not a ${vr} value or range`);
  const bound = (s: string, upper: boolean): string | null => {
    if (s.trim() === '') return null;
    const padded = padMoment(vr, s, upper);
    if (padded === undefined) throw invalid(key, `'${s}' is not a valid ${vr} value`);
    return padded;
  };
  if (parts.length === 1) {
    return { kind: 'range', vr, lo: bound(value, false), hi: bound(value, true) };
  }
  const lo = bound(parts[0]!, false);
  const hi = bound(parts[1]!, true);
  if (lo === null && hi === null) throw invalid(key, 'a range needs at least one bound');
  if (lo !== null && hi !== null && lo > hi) throw invalid(key, `range '${value}' ends before it starts`);
  return { kind: 'range', vr, lo, hi };
}

/**
 * Parses one query value per its VR. Throws INVALID_QUERY naming `key` for values that
 * cannot be matched (bad UID, bad date range, non-numeric number, sequence keys).
 */
function compileMatcher(vr: string, rawValue: string, key: string): Matcher {
  const value = rawValue.trim();
  if (value === '' || value === '*') return { kind: 'universal' };
  if (UNMATCHABLE_VRS.has(vr)) throw invalid(key, `attributes of VR ${vr} cannot be matched`);
  if (vr === 'UI') {
    const uids = value.split(/[,\\]/).map((u) => u.trim());
    for (const uid of uids) {
      if (uid.length === 0 || uid.length > 64 || !UID_RE.test(uid)) throw invalid(key, `'${uid}' is not a valid UID`);
    }
    return { kind: 'uid', uids };
  }
  if (vr === 'DA' || vr === 'TM' || vr === 'DT') return compileRange(vr, value, key);
  if (NUMERIC_VRS.has(vr)) {
    const values = value.split('\\').map((v) => {
      if (!NUMBER_RE.test(v.trim())) throw invalid(key, `'${v}' is not a number`);
      return Number(v);
    });
    return { kind: 'number', values };
  }
  const pn = vr === 'PN';
  // A backslash separates values in DICOM, so it cannot be part of one: a value list is
  // matched as "any of". Code strings cannot contain commas either, so `CT,MR` works too.
  const pieces = value.split(vr === 'CS' ? /[,\\]/ : /\\/).map((p) => p.trim());
  const alternatives = pieces.map((p): StringAlternative => {
    const v = pn ? normalizePn(p) : p;
    return /[*?]/.test(v) ? { glob: v, regex: wildcardRegex(v, pn) } : { exact: v };
  });
  return { kind: 'string', alternatives, pn };
}

function pnCandidates(v: unknown, wholeValue: boolean): string[] {
  if (typeof v === 'string') return [normalizePn(v)];
  if (typeof v !== 'object' || v === null) return [];
  const o = v as { Alphabetic?: unknown; Ideographic?: unknown; Phonetic?: unknown };
  const groups = [o.Alphabetic, o.Ideographic, o.Phonetic].map((g) => (typeof g === 'string' ? g : ''));
  if (wholeValue) return [normalizePn(groups.join('=').replace(/=+$/u, ''))];
  return groups.filter((g) => g !== '').map(normalizePn);
}

function matchValue(m: Matcher, v: unknown): boolean {
  switch (m.kind) {
    case 'universal':
      return true;
    case 'uid':
      return typeof v === 'string' && m.uids.includes(v.trim());
    case 'number': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
      return m.values.includes(n);
    }
    case 'range': {
      if (typeof v !== 'string') return false;
      const n = padMoment(m.vr, v, false);
      return n !== undefined && (m.lo === null || n >= m.lo) && (m.hi === null || n <= m.hi);
    }
    case 'string':
      return m.alternatives.some((alt) => {
        const text = 'exact' in alt ? alt.exact : alt.glob;
        // A PN query with component groups ('Yamada^Tarou=山田^太郎') is matched on the whole
        // value; otherwise on each group, so ideographic names are found too.
        const candidates = m.pn
          ? pnCandidates(v, text.includes('='))
          : typeof v === 'string' || typeof v === 'number'
            ? [String(v).trim()]
            : [];
        return candidates.some((c) => ('exact' in alt ? c === alt.exact : alt.regex.test(c)));
      });
  }
}

function matchElement(m: Matcher, el: DicomJsonElement | undefined): boolean {
  if (m.kind === 'universal') return true;
  const values = el?.Value;
  if (values === undefined || values.length === 0) return false;
  // Multi-valued attributes (ModalitiesInStudy, ImageType) match when any value matches.
  return values.some((v) => matchValue(m, v));
}

/** Validates a query value; throws INVALID_QUERY naming the parameter. */
export function validateFilter(filter: AttributeFilter): void {
  compileMatcher(filter.vr, filter.value, filter.key);
}

// Columns that answer common keys from an index instead of the JSON text.
type ColumnKind = 'uid' | 'string' | 'date' | 'number';
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

/** GLOB is case-sensitive with the same `*` and `?` as DICOM; only `[` must be escaped. */
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
      params.push(globPattern(alt.glob));
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

type QueryLevel = 'study' | 'series' | 'instance';
const LEVEL_RANK: Record<QueryLevel, number> = { study: 0, series: 1, instance: 2 };

function storageLevel(tag: Tag): QueryLevel {
  const level: AttributeLevel | undefined = attributeByTag(tag)?.level;
  if (level === undefined || level === 'instance') return 'instance';
  return isStudyLevel(level) ? 'study' : 'series';
}

/** Where a key of a query at `level` is matched; throws for keys below the level. */
function attributeColumn(filter: AttributeFilter, level: QueryLevel): string {
  const stored = storageLevel(filter.tag);
  if (LEVEL_RANK[stored] > LEVEL_RANK[level]) {
    throw invalid(filter.key, `not a ${level}-level attribute, so it cannot be matched in a ${level} query`);
  }
  return stored === 'study' ? 's.attributes' : stored === 'series' ? 'se.attributes' : 'i.metadata';
}

// ---------------------------------------------------------------------------------------

interface InstanceRow {
  study_uid: string;
  series_uid: string;
  sop_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  size: number;
  sha256: string;
  node_cid: string;
  metadata: string;
  layout: string;
}
const INSTANCE_COLUMNS =
  'i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid, i.size, i.sha256, i.node_cid, i.metadata, i.layout';

interface VersionRow {
  study_uid: string;
  version: number;
  root: string;
  prev: string | null;
  created_at: string;
  instance_count: number;
}

function toVersion(r: VersionRow): StudyVersion {
  return {
    studyInstanceUID: r.study_uid,
    version: r.version,
    root: r.root,
    prev: r.prev,
    createdAt: r.created_at,
    instanceCount: r.instance_count,
  };
}

/** The columns of one instance, less its (large) metadata and layout, and its row id. */
const INSTANCE_KEY_COLUMNS =
  'i.id, i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid, i.size, i.sha256, i.node_cid';
/** An instance row without its metadata and layout. */
type KeyRow = Omit<InstanceRow, 'metadata' | 'layout'> & { id: number };

/**
 * Parsed layouts (frame and bulk offsets) of recently read instances, by instance node CID (a
 * layout never changes for a node). A viewer fetches a huge multi-frame instance one frame at a
 * time: its layout (hundreds of KB of JSON for thousands of frames) is then read and parsed once.
 * Bounded by the layouts' JSON size. Default 8 MiB.
 */
export const DEFAULT_LAYOUT_CACHE_BYTES = 8 * 1024 * 1024;

class LayoutCache {
  readonly #max: number;
  readonly #entries = new Map<string, { layout: InstanceLayout; bytes: number }>();
  #bytes = 0;

  constructor(max: number) {
    this.#max = max;
  }

  get(nodeCid: string, load: () => string): InstanceLayout {
    const hit = this.#entries.get(nodeCid);
    if (hit !== undefined) {
      this.#entries.delete(nodeCid); // most recently used last
      this.#entries.set(nodeCid, hit);
      return hit.layout;
    }
    const text = load();
    const layout = JSON.parse(text) as InstanceLayout;
    if (text.length <= this.#max) {
      this.#entries.set(nodeCid, { layout, bytes: text.length });
      this.#bytes += text.length;
      for (const [key, e] of this.#entries) {
        if (this.#bytes <= this.#max) break;
        this.#entries.delete(key);
        this.#bytes -= e.bytes;
      }
    }
    return layout;
  }
}

/** metadata and layout are parsed on first access: listings often need neither. */
function toInstance(r: InstanceRow): CatalogInstance {
  return lazyInstance(r, () => r.metadata, () => JSON.parse(r.layout) as InstanceLayout);
}

function lazyInstance(r: Omit<InstanceRow, 'metadata' | 'layout'>, loadMetadata: () => string, loadLayout: () => InstanceLayout): CatalogInstance {
  let metadata: DicomJsonDataset | undefined;
  let layout: InstanceLayout | undefined;
  return {
    studyInstanceUID: r.study_uid,
    seriesInstanceUID: r.series_uid,
    sopInstanceUID: r.sop_uid,
    sopClassUID: r.sop_class_uid,
    transferSyntaxUID: r.transfer_syntax_uid,
    size: r.size,
    sha256: r.sha256,
    nodeCid: r.node_cid,
    get metadata(): DicomJsonDataset {
      return (metadata ??= JSON.parse(loadMetadata()) as DicomJsonDataset);
    },
    set metadata(v: DicomJsonDataset) {
      metadata = v;
    },
    get layout(): InstanceLayout {
      return (layout ??= loadLayout());
    },
    set layout(v: InstanceLayout) {
      layout = v;
    },
  };
}

const STATEMENT_CACHE_LIMIT = 256;
const MATCHER_CACHE_LIMIT = 256;

export class Catalog {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  readonly #matchers = new Map<string, Matcher>();
  readonly #layouts = new LayoutCache(DEFAULT_LAYOUT_CACHE_BYTES);

  private constructor(db: DatabaseSync) {
    this.#db = db;
  }

  static open(options: CatalogOptions): Catalog {
    const db = openDatabase({
      path: options.path,
      what: 'catalog',
      migrations: MIGRATIONS,
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
    let s = this.#statements.get(sql);
    if (s === undefined) {
      if (this.#statements.size >= STATEMENT_CACHE_LIMIT) this.#statements.clear();
      s = this.#db.prepare(sql);
      this.#statements.set(sql, s);
    }
    return s;
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

  getInstance(sopInstanceUID: string, scope: { study?: string; series?: string } = {}): CatalogInstance | undefined {
    const params: SQLInputValue[] = [sopInstanceUID];
    // Metadata and layout are read only when used (a frame request needs the layout alone, and
    // that from the cache after the first frame).
    let sql = `SELECT ${INSTANCE_KEY_COLUMNS} FROM instances i WHERE i.sop_uid = ? AND i.current = 1`;
    if (scope.study !== undefined) {
      sql += ' AND i.study_uid = ?';
      params.push(scope.study);
    }
    if (scope.series !== undefined) {
      sql += ' AND i.series_uid = ?';
      params.push(scope.series);
    }
    const row = this.#stmt(`${sql} ORDER BY i.id DESC LIMIT 1`).get(...params) as KeyRow | undefined;
    return row === undefined ? undefined : this.#readLater(row);
  }

  /** An instance whose metadata and layout are read from its row when first used. */
  #readLater(row: KeyRow): CatalogInstance {
    const column = (name: 'metadata' | 'layout'): string => {
      const r = this.#stmt(`SELECT ${name} AS v FROM instances WHERE id = ?`).get(row.id) as { v: string } | undefined;
      if (r === undefined) throw new VaultError('INTERNAL', `catalog row of instance ${row.sop_uid} disappeared`);
      return r.v;
    };
    return lazyInstance(row, () => column('metadata'), () => this.#layouts.get(row.node_cid, () => column('layout')));
  }

  /** Every stored revision of an instance, oldest first. */
  instanceHistory(studyInstanceUID: string, sopInstanceUID: string): InstanceRevision[] {
    const rows = this.#stmt(
      `SELECT ${INSTANCE_COLUMNS}, i.version, i.replaced_in FROM instances i
       WHERE i.study_uid = ? AND i.sop_uid = ? ORDER BY i.id`,
    ).all(studyInstanceUID, sopInstanceUID) as unknown as Array<InstanceRow & { version: number; replaced_in: number | null }>;
    return rows.map((r) => ({ instance: toInstance(r), version: r.version, replacedIn: r.replaced_in }));
  }

  latestVersion(studyInstanceUID: string): StudyVersion | undefined {
    const row = this.#stmt(
      'SELECT * FROM study_versions WHERE study_uid = ? ORDER BY version DESC LIMIT 1',
    ).get(studyInstanceUID) as VersionRow | undefined;
    return row === undefined ? undefined : toVersion(row);
  }

  /** All versions, oldest first. */
  versions(studyInstanceUID: string): StudyVersion[] {
    const rows = this.#stmt('SELECT * FROM study_versions WHERE study_uid = ? ORDER BY version').all(
      studyInstanceUID,
    ) as unknown as VersionRow[];
    return rows.map(toVersion);
  }

  /**
   * Current instances, ordered by SeriesNumber, series UID, InstanceNumber, SOP UID. With
   * `metadata: false`, each instance's metadata and layout are read from its row only if used:
   * for callers that send the bytes (a multi-frame instance's metadata can be half a MiB of JSON;
   * reading it for a 16-instance study cost ~80 ms before a WADO response's first byte).
   */
  listInstances(scope: { study: string; series?: string }, options: { metadata?: boolean } = {}): CatalogInstance[] {
    const params: SQLInputValue[] = [scope.study];
    let where = 'i.current = 1 AND i.study_uid = ?';
    if (scope.series !== undefined) {
      where += ' AND i.series_uid = ?';
      params.push(scope.series);
    }
    const eager = options.metadata !== false;
    const rows = this.#stmt(
      `SELECT ${eager ? INSTANCE_COLUMNS : INSTANCE_KEY_COLUMNS} FROM instances i
       LEFT JOIN series se ON se.study_uid = i.study_uid AND se.series_uid = i.series_uid
       WHERE ${where}
       ORDER BY se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST, i.sop_uid`,
    ).all(...params) as unknown[];
    return eager ? (rows as InstanceRow[]).map(toInstance) : (rows as KeyRow[]).map((r) => this.#readLater(r));
  }

  hasStudy(studyInstanceUID: string): boolean {
    return this.#stmt('SELECT 1 FROM studies WHERE study_uid = ? AND instance_count > 0').get(studyInstanceUID) !== undefined;
  }

  hasSeries(studyInstanceUID: string, seriesInstanceUID: string): boolean {
    return (
      this.#stmt('SELECT 1 FROM series WHERE study_uid = ? AND series_uid = ? AND instance_count > 0').get(
        studyInstanceUID,
        seriesInstanceUID,
      ) !== undefined
    );
  }

  // -- anchor queue -----------------------------------------------------------------------

  /** Roots waiting to be anchored, oldest first. */
  pendingAnchors(limit: number): PendingAnchor[] {
    const rows = this.#stmt(
      'SELECT root, study_uid, version, enqueued_at FROM anchor_queue ORDER BY seq LIMIT ?',
    ).all(limit) as unknown as Array<{ root: string; study_uid: string; version: number; enqueued_at: string }>;
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

  // -- commit -----------------------------------------------------------------------------

  #transaction<T>(fn: () => T): T {
    // IMMEDIATE takes the write lock up front, so the version check and the writes see the
    // same state even with another process writing the same file.
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      this.#db.exec('COMMIT');
      return result;
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
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

      const studyRow = this.#stmt('SELECT attributes FROM studies WHERE study_uid = ?').get(study) as
        | { attributes: string }
        | undefined;
      if (studyRow === undefined) {
        this.#stmt("INSERT INTO studies (study_uid, attributes) VALUES (?, '{}')").run(study);
      }
      const studyAttrs: DicomJsonDataset = studyRow === undefined ? {} : (JSON.parse(studyRow.attributes) as DicomJsonDataset);

      const touchedSeries = new Map<string, DicomJsonDataset>(); // series UID -> incoming attributes
      const findCurrent = this.#stmt(
        'SELECT id, sha256, series_uid FROM instances WHERE sop_uid = ? AND study_uid = ? AND current = 1',
      );
      const retire = this.#stmt('UPDATE instances SET current = 0, replaced_in = ? WHERE id = ?');
      const refresh = this.#stmt(
        `UPDATE instances SET node_cid = ?, size = ?, sop_class_uid = ?, transfer_syntax_uid = ?, instance_number = ?,
           metadata = ?, layout = ?, version = ? WHERE id = ?`,
      );
      const insert = this.#stmt(
        `INSERT INTO instances (study_uid, series_uid, sop_uid, sop_class_uid, transfer_syntax_uid, instance_number,
           size, sha256, node_cid, metadata, layout, version, current)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
      );
      for (const inst of input.instances) {
        const metadata = inst.metadata;
        const existing = findCurrent.get(inst.sopInstanceUID, study) as
          | { id: number; sha256: string; series_uid: string }
          | undefined;
        const instanceNumber = firstInteger(metadata, TAGS.InstanceNumber);
        const metadataText = JSON.stringify(metadata);
        const layoutText = JSON.stringify(inst.layout);
        if (existing !== undefined && existing.sha256 === inst.sha256 && existing.series_uid === inst.seriesInstanceUID) {
          // Same bytes again (e.g. a retried STOW): point at the newest DAG node, no history.
          refresh.run(inst.nodeCid, inst.size, inst.sopClassUID, inst.transferSyntaxUID, instanceNumber, metadataText, layoutText, input.version, existing.id);
        } else {
          if (existing !== undefined) {
            retire.run(input.version, existing.id);
            if (!touchedSeries.has(existing.series_uid)) touchedSeries.set(existing.series_uid, {});
          }
          insert.run(
            study, inst.seriesInstanceUID, inst.sopInstanceUID, inst.sopClassUID, inst.transferSyntaxUID, instanceNumber,
            inst.size, inst.sha256, inst.nodeCid, metadataText, layoutText, input.version,
          );
        }
        mergePicked(studyAttrs, metadata, STUDY_PICK);
        let seriesAttrs = touchedSeries.get(inst.seriesInstanceUID);
        if (seriesAttrs === undefined) touchedSeries.set(inst.seriesInstanceUID, (seriesAttrs = {}));
        mergePicked(seriesAttrs, metadata, SERIES_PICK);
      }

      this.#updateSeries(study, touchedSeries);
      const instanceCount = this.#updateStudy(study, studyAttrs);

      this.#stmt(
        'INSERT INTO study_versions (study_uid, version, root, prev, created_at, instance_count) VALUES (?, ?, ?, ?, ?, ?)',
      ).run(study, input.version, input.root, input.prev, input.createdAt, instanceCount);
      this.#stmt('INSERT INTO anchor_queue (root, study_uid, version, enqueued_at) VALUES (?, ?, ?, ?)').run(
        input.root, study, input.version, input.createdAt,
      );
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
    const count = this.#stmt('SELECT count(*) AS n FROM instances WHERE study_uid = ? AND series_uid = ? AND current = 1');
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
      upsert.run(
        study, seriesUid, firstString(attrs, TAGS.Modality), firstInteger(attrs, TAGS.SeriesNumber), n,
        JSON.stringify(sortedDataset(attrs)),
      );
    }
  }

  /** Rewrites the study row with merged and computed attributes; returns its instance count. */
  #updateStudy(study: string, attrs: DicomJsonDataset): number {
    const totals = this.#stmt(
      'SELECT count(*) AS series, coalesce(sum(instance_count), 0) AS instances FROM series WHERE study_uid = ?',
    ).get(study) as { series: number; instances: number };
    const modalities = (
      this.#stmt('SELECT DISTINCT modality FROM series WHERE study_uid = ? AND modality IS NOT NULL ORDER BY modality').all(
        study,
      ) as unknown as Array<{ modality: string }>
    ).map((r) => r.modality);
    const sopClasses = (
      this.#stmt(
        'SELECT DISTINCT sop_class_uid FROM instances WHERE study_uid = ? AND current = 1 ORDER BY sop_class_uid',
      ).all(study) as unknown as Array<{ sop_class_uid: string }>
    ).map((r) => r.sop_class_uid);

    attrs[TAGS.StudyInstanceUID] = { vr: 'UI', Value: [study] };
    attrs[TAGS.ModalitiesInStudy] = modalities.length > 0 ? { vr: 'CS', Value: modalities } : { vr: 'CS' };
    attrs[TAGS.SOPClassesInStudy] = { vr: 'UI', Value: sopClasses };
    attrs[TAGS.NumberOfStudyRelatedSeries] = { vr: 'IS', Value: [totals.series] };
    attrs[TAGS.NumberOfStudyRelatedInstances] = { vr: 'IS', Value: [totals.instances] };

    const date = firstString(attrs, TAGS.StudyDate);
    const time = firstString(attrs, TAGS.StudyTime);
    this.#stmt(
      `UPDATE studies SET patient_id = ?, study_date = ?, study_time = ?, accession_number = ?,
         series_count = ?, instance_count = ?, attributes = ? WHERE study_uid = ?`,
    ).run(
      firstString(attrs, TAGS.PatientID),
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

  #where(level: QueryLevel, query: CatalogQuery, params: SQLInputValue[]): string {
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
      conds.push(`dv_match(?, json_extract(${jsonColumn}, ?)) = 1`);
      params.push(JSON.stringify([filter.vr, filter.value]), `$."${filter.tag}"`);
    }
    return conds.length === 0 ? '' : `AND ${conds.join(' AND ')}`;
  }

  #studyAttributes(cache: Map<string, DicomJsonDataset>, study: string): DicomJsonDataset {
    let attrs = cache.get(study);
    if (attrs === undefined) {
      const row = this.#stmt('SELECT attributes FROM studies WHERE study_uid = ?').get(study) as { attributes: string } | undefined;
      attrs = row === undefined ? {} : (JSON.parse(row.attributes) as DicomJsonDataset);
      cache.set(study, attrs);
    }
    return attrs;
  }

  #seriesAttributes(cache: Map<string, DicomJsonDataset>, study: string, series: string): DicomJsonDataset {
    const key = `${study}/${series}`;
    let attrs = cache.get(key);
    if (attrs === undefined) {
      const row = this.#stmt('SELECT attributes FROM series WHERE study_uid = ? AND series_uid = ?').get(study, series) as
        | { attributes: string }
        | undefined;
      attrs = row === undefined ? {} : (JSON.parse(row.attributes) as DicomJsonDataset);
      cache.set(key, attrs);
    }
    return attrs;
  }

  /** Studies matching all filters, most recent StudyDate/StudyTime first. */
  queryStudies(query: CatalogQuery): StudyRecord[] {
    const params: SQLInputValue[] = [];
    const where = this.#where('study', query, params);
    const rows = this.#stmt(
      `SELECT s.study_uid, s.attributes FROM studies s WHERE s.instance_count > 0 ${where}
       ORDER BY s.study_date DESC, s.study_time DESC, s.study_uid LIMIT ? OFFSET ?`,
    ).all(...params, query.limit, query.offset) as unknown as Array<{ study_uid: string; attributes: string }>;
    return rows.map((r) => ({ studyInstanceUID: r.study_uid, attributes: JSON.parse(r.attributes) as DicomJsonDataset }));
  }

  /** Series matching all filters (study keys match the series' study), by study, SeriesNumber. */
  querySeries(query: CatalogQuery): SeriesRecord[] {
    const params: SQLInputValue[] = [];
    const where = this.#where('series', query, params);
    const rows = this.#stmt(
      `SELECT se.study_uid, se.series_uid, se.attributes FROM series se JOIN studies s ON s.study_uid = se.study_uid
       WHERE se.instance_count > 0 ${where}
       ORDER BY se.study_uid, se.series_number NULLS LAST, se.series_uid LIMIT ? OFFSET ?`,
    ).all(...params, query.limit, query.offset) as unknown as Array<{ study_uid: string; series_uid: string; attributes: string }>;
    const studies = new Map<string, DicomJsonDataset>();
    return rows.map((r) => ({
      studyInstanceUID: r.study_uid,
      seriesInstanceUID: r.series_uid,
      attributes: JSON.parse(r.attributes) as DicomJsonDataset,
      studyAttributes: this.#studyAttributes(studies, r.study_uid),
    }));
  }

  /** Current instances matching all filters, in listInstances order. */
  queryInstances(query: CatalogQuery): InstanceRecord[] {
    const params: SQLInputValue[] = [];
    const where = this.#where('instance', query, params);
    const fields = query.instanceFields;
    // json_object(tag, metadata -> path, ...) keeps each element's JSON; absent ones are null.
    const metadataColumn =
      fields === undefined
        ? 'i.metadata'
        : `json_object(${fields.map(() => '?, i.metadata -> ?').join(', ')})`;
    const fieldParams: SQLInputValue[] = fields === undefined ? [] : fields.flatMap((tag) => [tag, `$."${tag}"`]);
    const rows = this.#stmt(
      `SELECT i.study_uid, i.series_uid, i.sop_uid, i.transfer_syntax_uid, ${metadataColumn} AS metadata FROM instances i
       JOIN series se ON se.study_uid = i.study_uid AND se.series_uid = i.series_uid
       JOIN studies s ON s.study_uid = i.study_uid
       WHERE i.current = 1 ${where}
       ORDER BY i.study_uid, se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST, i.sop_uid
       LIMIT ? OFFSET ?`,
    ).all(...fieldParams, ...params, query.limit, query.offset) as unknown as Array<{
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
      metadata: fields === undefined ? (JSON.parse(r.metadata) as DicomJsonDataset) : withoutNulls(JSON.parse(r.metadata) as Record<Tag, DicomJsonElement | null>),
      seriesAttributes: this.#seriesAttributes(series, r.study_uid, r.series_uid),
      studyAttributes: this.#studyAttributes(studies, r.study_uid),
    }));
  }
}
