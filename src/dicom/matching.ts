// Attribute matching of PS3.4 C.2.2.2, as a pure module: a query value is compiled once per its
// VR into a Matcher (single value, value list, `*`/`?` wildcards, UID list, DA/TM/DT range,
// numbers, PN), which then tests stored DICOM JSON elements. No SQL here: the catalog runs these
// matchers inside SQLite (its dv_match function) and pushes the simple cases into indexed
// columns; QIDO-RS validates query values with them before anything runs.
//
// Matching runs on the main thread, inside SQLite's scan, once per row, so it must stay linear in
// the stored value whatever the query: no RegExp is built from a query (a backtracking one built
// from `*a*a*a*a*a*a*a` took 2-4 s per row against a 60-character name, stalling every other
// request meanwhile), and the few fixed ones are unambiguous.

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

/** One value of a value list; `whole`: a PN value with groups, matched on the whole stored name. */
export type StringAlternative = ({ exact: string } | { glob: Glob }) & { whole: boolean };

export type Matcher =
  | { kind: 'universal' }
  | { kind: 'uid'; uids: string[] }
  | { kind: 'string'; alternatives: StringAlternative[]; pn: boolean }
  | { kind: 'range'; vr: 'DA' | 'TM' | 'DT'; lo: string | null; hi: string | null }
  | { kind: 'number'; values: number[] };

const UID_RE = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;
// Unambiguous on purpose: `[0-9]+\.?[0-9]*` let a failing '111…1x' backtrack quadratically.
const NUMBER_RE = /^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$/;
const NUMERIC_VRS = new Set(['IS', 'DS', 'US', 'SS', 'UL', 'SL', 'FL', 'FD', 'SV', 'UV']);
const UNMATCHABLE_VRS = new Set(['SQ', 'OB', 'OW', 'OF', 'OD', 'OL', 'OV', 'UN', 'AT']);

/** The refusal of a query value: INVALID_QUERY naming the parameter. */
export function invalidQuery(key: string, reason: string, details: Record<string, unknown> = {}): VaultError {
  return new VaultError('INVALID_QUERY', `${key}: ${reason}`, { details: { parameter: key, ...details } });
}

/**
 * Bounds a caller may put on query values (QIDO-RS does); without them any value is compiled.
 * Matching is linear either way: the bounds keep one request's work small.
 */
export interface MatchLimits {
  /** Characters of one value (each item of a value list counts on its own). */
  maxValueLength: number;
  /** `*` and `?` characters in one value. */
  maxWildcards: number;
}

// ---------------------------------------------------------------------------------------
// Wildcards: `*` any run of characters, `?` one character (a code point). Written here rather
// than taken from a library because the glob and wildcard packages of npm (minimatch,
// picomatch, matcher, wildcard-match) compile to a backtracking RegExp, the very thing to
// avoid, and an RE2 port (WebAssembly) would cost a copy across the boundary per row for two
// metacharacters.
//
// A pattern is cut at its stars into segments. The first must match at the start, the last at
// the end; each one between is found at its leftmost place after the one before. Leftmost is
// always right for a glob: it leaves the most room to the segments that follow, so no choice is
// ever undone. Segments are searched with Shift-And (Baeza-Yates-Gonnet), a bit per segment
// position, `?` set in every character's mask: each character of the value is read once per
// search and the searches do not overlap, so a match costs O(n * ceil(m / 32)) for a value of
// n characters and a longest segment of m, whatever the number of stars.

const ANY = -1;

interface Segment {
  /** Code points, ANY for `?`. */
  chars: number[];
  /** Shift-And masks, ceil(length / 32) words each: bit j set when position j accepts the character. */
  masks: Map<number, Uint32Array>;
  /** The mask of a character the segment does not name (only its `?` positions accept it). */
  other: Uint32Array;
}

/** A compiled `*`/`?` pattern. */
export interface Glob {
  /** The pattern as given. */
  pattern: string;
  /** Segments between stars; a pattern without a star has exactly one. */
  segments: Segment[];
  /** Characters a value needs at least: the sum of the segment lengths. */
  minLength: number;
}

function codePoints(s: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.codePointAt(i)!;
    out.push(c);
    if (c > 0xffff) i++;
  }
  return out;
}

function compileSegment(text: string): Segment {
  const chars = codePoints(text).map((c) => (c === 0x3f /* ? */ ? ANY : c));
  const words = Math.max(1, Math.ceil(chars.length / 32));
  const other = new Uint32Array(words);
  chars.forEach((c, j) => {
    if (c === ANY) other[j >>> 5]! |= 1 << (j & 31);
  });
  const masks = new Map<number, Uint32Array>();
  chars.forEach((c, j) => {
    if (c === ANY) return;
    let mask = masks.get(c);
    if (mask === undefined) {
      mask = other.slice();
      masks.set(c, mask);
    }
    mask[j >>> 5]! |= 1 << (j & 31);
  });
  return { chars, masks, other };
}

/** Compiles a pattern where `*` and `?` are wildcards and every other character is literal. */
export function compileGlob(pattern: string): Glob {
  const segments = pattern.split('*').map(compileSegment);
  return { pattern, segments, minLength: segments.reduce((n, s) => n + s.chars.length, 0) };
}

/** Whether `seg` matches `text` at `at` exactly (the caller checked the length). */
function segmentAt(seg: Segment, text: number[], at: number): boolean {
  const chars = seg.chars;
  for (let j = 0; j < chars.length; j++) {
    if (chars[j] !== ANY && chars[j] !== text[at + j]) return false;
  }
  return true;
}

/** Where the leftmost occurrence of `seg` in text[from, to) ends, or -1. */
function findSegment(seg: Segment, text: number[], from: number, to: number): number {
  const m = seg.chars.length;
  if (m === 0) return from;
  const words = seg.other.length;
  const state = new Uint32Array(words);
  const lastWord = (m - 1) >>> 5;
  const lastBit = 1 << ((m - 1) & 31);
  for (let i = from; i < to; i++) {
    const mask = seg.masks.get(text[i]!) ?? seg.other;
    // state = ((state << 1) | 1) & mask, over `words` 32-bit words.
    let carry = 1;
    for (let w = 0; w < words; w++) {
      const s = state[w]!;
      state[w] = ((s << 1) | carry) & mask[w]!;
      carry = s >>> 31;
    }
    if ((state[lastWord]! & lastBit) !== 0) return i + 1;
  }
  return -1;
}

/** Whether the whole of `text` matches the pattern. */
export function matchGlob(glob: Glob, text: string): boolean {
  const t = codePoints(text);
  const segs = glob.segments;
  if (segs.length === 1) return t.length === segs[0]!.chars.length && segmentAt(segs[0]!, t, 0);
  if (t.length < glob.minLength) return false;
  const first = segs[0]!;
  const last = segs[segs.length - 1]!;
  const end = t.length - last.chars.length;
  if (!segmentAt(first, t, 0) || !segmentAt(last, t, end)) return false;
  let at = first.chars.length;
  for (let k = 1; k < segs.length - 1; k++) {
    at = findSegment(segs[k]!, t, at, end);
    if (at < 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Person names

/**
 * PN comparisons here are case-insensitive and ignore trailing empty components: trailing
 * spaces and carets go, and carets before a component group's '='. Loops, not regexes: an
 * unanchored `\^+(=|$)` took quadratic time on a stored name of many carets (25 s at 100,000).
 */
export function normalizePn(s: string): string {
  const groups = s.trim().split('=');
  const last = groups.length - 1;
  let end = groups[last]!.length;
  while (end > 0 && (groups[last]![end - 1] === '^' || groups[last]![end - 1] === ' ')) end--;
  groups[last] = groups[last]!.slice(0, end);
  for (let g = 0; g < last; g++) {
    let e = groups[g]!.length;
    while (e > 0 && groups[g]![e - 1] === '^') e--;
    groups[g] = groups[g]!.slice(0, e);
  }
  return groups.join('=').toUpperCase();
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
  return inRange(n(2), 1, 12) && inRange(n(3), 1, 31) && (vr === 'DA' || (inRange(n(4), 0, 23) && inRange(n(5), 0, 59) && inRange(n(6), 0, 60)));
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

/** Refuses a value over a caller's bounds, naming the bound. */
function checkBounds(key: string, values: readonly string[], limits: MatchLimits | undefined, wildcards: boolean): void {
  if (limits === undefined) return;
  for (const v of values) {
    if (v.length > limits.maxValueLength) {
      throw invalidQuery(key, `a value of ${v.length} characters is longer than the ${limits.maxValueLength} allowed (bound maxValueLength)`, {
        bound: 'maxValueLength',
        limit: limits.maxValueLength,
      });
    }
    if (!wildcards) continue;
    let n = 0;
    for (const ch of v) if (ch === '*' || ch === '?') n++;
    if (n > limits.maxWildcards) {
      throw invalidQuery(key, `a value with ${n} wildcards (* and ?) has more than the ${limits.maxWildcards} allowed (bound maxWildcards)`, {
        bound: 'maxWildcards',
        limit: limits.maxWildcards,
      });
    }
  }
}

/**
 * Parses one query value per its VR. Throws INVALID_QUERY naming `key` for values that
 * cannot be matched (bad UID, bad date range, non-numeric number, sequence keys) and for
 * values over `limits` when given.
 */
export function compileMatcher(vr: string, rawValue: string, key: string, limits?: MatchLimits): Matcher {
  const value = rawValue.trim();
  if (value === '' || value === '*') return { kind: 'universal' };
  if (UNMATCHABLE_VRS.has(vr)) throw invalidQuery(key, `attributes of VR ${vr} cannot be matched`);
  if (vr === 'UI') {
    const uids = value.split(/[,\\]/).map((u) => u.trim());
    checkBounds(key, uids, limits, false);
    for (const uid of uids) {
      if (uid.length === 0 || uid.length > 64 || !UID_RE.test(uid)) throw invalidQuery(key, `'${uid}' is not a valid UID`);
    }
    return { kind: 'uid', uids };
  }
  if (vr === 'DA' || vr === 'TM' || vr === 'DT') {
    checkBounds(key, [value], limits, false);
    return compileRange(vr, value, key);
  }
  if (NUMERIC_VRS.has(vr)) {
    const pieces = value.split('\\');
    checkBounds(key, pieces, limits, false);
    const values = pieces.map((v) => {
      if (!NUMBER_RE.test(v.trim())) throw invalidQuery(key, `'${v}' is not a number`);
      return Number(v);
    });
    return { kind: 'number', values };
  }
  const pn = vr === 'PN';
  // A backslash separates values in DICOM, so it cannot be part of one: a value list is
  // matched as "any of". Code strings cannot contain commas either, so `CT,MR` works too.
  const pieces = value.split(vr === 'CS' ? /[,\\]/ : '\\').map((p) => p.trim());
  checkBounds(key, pieces, limits, true);
  const alternatives = pieces.map((p): StringAlternative => {
    const v = pn ? normalizePn(p) : p;
    // A PN query with component groups ('Yamada^Tarou=山田^太郎') is matched on the whole
    // value; otherwise on each group, so ideographic names are found too.
    const whole = pn && v.includes('=');
    return v.includes('*') || v.includes('?') ? { glob: compileGlob(v), whole } : { exact: v, whole };
  });
  return { kind: 'string', alternatives, pn };
}

/** Drops trailing '=' (empty trailing component groups). */
function withoutTrailingEquals(s: string): string {
  let end = s.length;
  while (end > 0 && s[end - 1] === '=') end--;
  return s.slice(0, end);
}

/** The normalized forms a stored PN value is compared in: whole, or each non-empty group. */
function pnCandidates(v: unknown, wholeValue: boolean): string[] {
  if (typeof v === 'string') return [normalizePn(v)];
  if (typeof v !== 'object' || v === null) return [];
  const o = v as { Alphabetic?: unknown; Ideographic?: unknown; Phonetic?: unknown };
  const groups = [o.Alphabetic, o.Ideographic, o.Phonetic].map((g) => (typeof g === 'string' ? g : ''));
  if (wholeValue) return [normalizePn(withoutTrailingEquals(groups.join('=')))];
  return groups.filter((g) => g !== '').map(normalizePn);
}

function matchString(m: Extract<Matcher, { kind: 'string' }>, v: unknown): boolean {
  // The stored value's forms, each computed once for all alternatives.
  let plain: string[] | undefined;
  let byGroup: string[] | undefined;
  let whole: string[] | undefined;
  const candidates = (alt: StringAlternative): string[] => {
    if (!m.pn) {
      plain ??= typeof v === 'string' || typeof v === 'number' ? [String(v).trim()] : [];
      return plain;
    }
    if (alt.whole) {
      whole ??= pnCandidates(v, true);
      return whole;
    }
    byGroup ??= pnCandidates(v, false);
    return byGroup;
  };
  return m.alternatives.some((alt) => candidates(alt).some((c) => ('exact' in alt ? c === alt.exact : matchGlob(alt.glob, c))));
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
      return matchString(m, v);
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

/** Validates a query value, within `limits` when given; throws INVALID_QUERY naming the parameter. */
export function validateFilter(filter: AttributeFilter, limits?: MatchLimits): void {
  compileMatcher(filter.vr, filter.value, filter.key, limits);
}
