// Attribute matching of PS3.4 C.2.2.2, as a pure module: a query value is compiled once per its
// VR into a Matcher (single value, value list, `*`/`?` wildcards, UID list, DA/TM/DT range,
// numbers, PN), which then tests stored DICOM JSON elements. No SQL here: the catalog runs these
// matchers inside SQLite (its dv_match function) and pushes the simple cases into indexed
// columns; QIDO-RS validates query values with them before anything runs.

import { VaultError } from '../core/errors.ts';
import type { DicomJsonElement, Tag } from './model.ts';

/** One query key: the attribute, its VR ('' when unknown) and the raw value from the URL. */
export interface AttributeFilter {
  tag: Tag;
  vr: string;
  value: string;
  /** The query parameter as the client wrote it, to name it in errors. */
  key: string;
}

export type StringAlternative = { exact: string } | { glob: string; regex: RegExp };

export type Matcher =
  | { kind: 'universal' }
  | { kind: 'uid'; uids: string[] }
  | { kind: 'string'; alternatives: StringAlternative[]; pn: boolean }
  | { kind: 'range'; vr: 'DA' | 'TM' | 'DT'; lo: string | null; hi: string | null }
  | { kind: 'number'; values: number[] };

const UID_RE = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;
const NUMBER_RE = /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;
const NUMERIC_VRS = new Set(['IS', 'DS', 'US', 'SS', 'UL', 'SL', 'FL', 'FD', 'SV', 'UV']);
const UNMATCHABLE_VRS = new Set(['SQ', 'OB', 'OW', 'OF', 'OD', 'OL', 'OV', 'UN', 'AT']);

/** The refusal of a query value: INVALID_QUERY naming the parameter. */
export function invalidQuery(key: string, reason: string): VaultError {
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
export function normalizePn(s: string): string {
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
export function padMoment(vr: 'DA' | 'TM' | 'DT', raw: string, upper: boolean): string | undefined {
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
  if (parts.length > 2) throw invalidQuery(key, `'${value}' is not a ${vr} value or range`);
  const bound = (s: string, upper: boolean): string | null => {
    if (s.trim() === '') return null;
    const padded = padMoment(vr, s, upper);
    if (padded === undefined) throw invalidQuery(key, `'${s}' is not a valid ${vr} value`);
    return padded;
  };
  if (parts.length === 1) {
    return { kind: 'range', vr, lo: bound(value, false), hi: bound(value, true) };
  }
  const lo = bound(parts[0]!, false);
  const hi = bound(parts[1]!, true);
  if (lo === null && hi === null) throw invalidQuery(key, 'a range needs at least one bound');
  if (lo !== null && hi !== null && lo > hi) throw invalidQuery(key, `range '${value}' ends before it starts`);
  return { kind: 'range', vr, lo, hi };
}

/**
 * Parses one query value per its VR. Throws INVALID_QUERY naming `key` for values that
 * cannot be matched (bad UID, bad date range, non-numeric number, sequence keys).
 */
export function compileMatcher(vr: string, rawValue: string, key: string): Matcher {
  const value = rawValue.trim();
  if (value === '' || value === '*') return { kind: 'universal' };
  if (UNMATCHABLE_VRS.has(vr)) throw invalidQuery(key, `attributes of VR ${vr} cannot be matched`);
  if (vr === 'UI') {
    const uids = value.split(/[,\\]/).map((u) => u.trim());
    for (const uid of uids) {
      if (uid.length === 0 || uid.length > 64 || !UID_RE.test(uid)) throw invalidQuery(key, `'${uid}' is not a valid UID`);
    }
    return { kind: 'uid', uids };
  }
  if (vr === 'DA' || vr === 'TM' || vr === 'DT') return compileRange(vr, value, key);
  if (NUMERIC_VRS.has(vr)) {
    const values = value.split('\\').map((v) => {
      if (!NUMBER_RE.test(v.trim())) throw invalidQuery(key, `'${v}' is not a number`);
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

export function matchValue(m: Matcher, v: unknown): boolean {
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

/** Whether a stored DICOM JSON element matches the compiled query value. */
export function matchElement(m: Matcher, el: DicomJsonElement | undefined): boolean {
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

