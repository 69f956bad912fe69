// QIDO-RS (PS3.18 10.6, matching per PS3.4 C.2.2.2): searches the catalog for studies, series
// and instances and answers DICOM JSON. Query parsing and the response formatter live here;
// matching runs inside the catalog's SQL. Errors are thrown as VaultErrors for the app's one
// error handler.
//
// Choices where the standard leaves room or clients differ:
// - No match → 204 with an empty body (PS3.18 8.3.4.4.1; CP-2473 proposes 200 [], which OHIF
//   and Orthanc clients also accept).
// - A study or series named in the path that does not exist at all → 404; one that exists but
//   matches none of the keys → 204.
// - PN matching is case-insensitive (on each component group); every other VR is case-sensitive.
// - fuzzymatching is accepted and ignored (PS3.18 allows that).
// - A key more than once is refused, except UI keys whose values are joined into a UID list.
// - Keys below the query level (e.g. Modality in /studies) are refused with 400; includefields
//   below the level are silently not returned (PS3.18 10.6.3.3).
// - Queries are bounded (length of the whole query string, of each value, wildcards per value):
//   past a bound, 400 INVALID_QUERY naming it. Matching is linear in any case
//   (src/dicom/matching.ts); the bounds keep one request's share of the main thread small.

import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { AccessRouteConfig } from '../../access/policy.ts';
import type { Catalog } from '../../catalog/catalog.ts';
import type { CatalogQuery, InstanceRecord, SeriesRecord, StudyRecord } from '../../catalog/records.ts';
import { VaultError } from '../../core/errors.ts';
import { TAGS, attributeByTag, isStudyLevel, resolveAttributeKey } from '../../dicom/attributes.ts';
import { validateFilter, type AttributeFilter, type MatchLimits } from '../../dicom/matching.ts';
import type { DicomJsonDataset, DicomJsonElement, Tag } from '../../dicom/model.ts';
import { assertUid } from '../../dicom/uid.ts';
import { dicomJson } from './http.ts';

export interface QidoDeps {
  catalog: Pick<Catalog, 'queryStudies' | 'querySeries' | 'queryInstances' | 'hasStudy' | 'hasSeries'>;
}

/** Most results one response carries (a Warning header says when more exist). */
export const DEFAULT_QIDO_MAX_RESULTS = 10_000;

/** Longest query string (after '?', as sent, percent-encoded), in characters. */
export const DEFAULT_QIDO_MAX_QUERY_LENGTH = 8_192;
/** Longest value of a matching key, in characters (each value of a value list on its own). */
export const DEFAULT_QIDO_MAX_VALUE_LENGTH = 1_024;
/** Most wildcards (`*` and `?` characters) in one value of a matching key. */
export const DEFAULT_QIDO_MAX_WILDCARDS = 64;

export interface QidoOptions {
  /** Most results per response, whatever `limit` asks. Default DEFAULT_QIDO_MAX_RESULTS. */
  maxResults?: number;
  /** Characters. Default DEFAULT_QIDO_MAX_QUERY_LENGTH. */
  maxQueryLength?: number;
  /** Characters. Default DEFAULT_QIDO_MAX_VALUE_LENGTH. */
  maxValueLength?: number;
  /** Default DEFAULT_QIDO_MAX_WILDCARDS. */
  maxWildcards?: number;
}

const DICOM_JSON = 'application/dicom+json';

type Level = 'study' | 'series' | 'instance';

/** An attribute every result of a level carries; `always` ones are sent empty when unknown. */
interface ResultAttribute {
  tag: Tag;
  vr: string;
  always: boolean;
}
const attr = (tag: Tag, vr: string, always = true): ResultAttribute => ({ tag, vr, always });

// PS3.18 Table 10.6.3-3 (study), -4 (series), -5 (instance). RetrieveURL and
// InstanceAvailability are added by the formatter.
const STUDY_RESULT: readonly ResultAttribute[] = [
  attr(TAGS.SpecificCharacterSet, 'CS', false),
  attr(TAGS.StudyDate, 'DA'),
  attr(TAGS.StudyTime, 'TM'),
  attr(TAGS.AccessionNumber, 'SH'),
  attr(TAGS.ModalitiesInStudy, 'CS'),
  attr(TAGS.ReferringPhysicianName, 'PN'),
  attr(TAGS.TimezoneOffsetFromUTC, 'SH', false),
  attr(TAGS.StudyDescription, 'LO', false),
  attr(TAGS.PatientName, 'PN'),
  attr(TAGS.PatientID, 'LO'),
  attr(TAGS.IssuerOfPatientID, 'LO', false),
  attr(TAGS.PatientBirthDate, 'DA'),
  attr(TAGS.PatientSex, 'CS'),
  attr(TAGS.StudyInstanceUID, 'UI'),
  attr(TAGS.StudyID, 'SH'),
  attr(TAGS.NumberOfStudyRelatedSeries, 'IS'),
  attr(TAGS.NumberOfStudyRelatedInstances, 'IS'),
];
const SERIES_RESULT: readonly ResultAttribute[] = [
  attr(TAGS.SpecificCharacterSet, 'CS', false),
  attr(TAGS.Modality, 'CS'),
  attr(TAGS.TimezoneOffsetFromUTC, 'SH', false),
  attr(TAGS.SeriesDescription, 'LO'),
  attr(TAGS.BodyPartExamined, 'CS', false),
  attr(TAGS.StudyInstanceUID, 'UI'),
  attr(TAGS.SeriesInstanceUID, 'UI'),
  attr(TAGS.SeriesNumber, 'IS'),
  attr(TAGS.NumberOfSeriesRelatedInstances, 'IS'),
  attr(TAGS.PerformedProcedureStepStartDate, 'DA'),
  attr(TAGS.PerformedProcedureStepStartTime, 'TM'),
  attr(TAGS.RequestAttributesSequence, 'SQ', false),
];
const INSTANCE_RESULT: readonly ResultAttribute[] = [
  attr(TAGS.SpecificCharacterSet, 'CS', false),
  attr(TAGS.SOPClassUID, 'UI'),
  attr(TAGS.SOPInstanceUID, 'UI'),
  attr(TAGS.TimezoneOffsetFromUTC, 'SH', false),
  attr(TAGS.StudyInstanceUID, 'UI'),
  attr(TAGS.SeriesInstanceUID, 'UI'),
  attr(TAGS.InstanceNumber, 'IS'),
  attr(TAGS.NumberOfFrames, 'IS', false),
  attr(TAGS.Rows, 'US', false),
  attr(TAGS.Columns, 'US', false),
  attr(TAGS.BitsAllocated, 'US', false),
];

interface ParsedQuery {
  filters: AttributeFilter[];
  /** Tags asked for by includefield (level permitting). */
  include: Set<Tag>;
  includeAll: boolean;
  limit: number | undefined;
  offset: number;
}

function invalid(parameter: string, reason: string): VaultError {
  return new VaultError('INVALID_QUERY', `${parameter}: ${reason}`, { details: { parameter } });
}

function single(key: string, raw: string | string[]): string {
  if (Array.isArray(raw)) {
    if (raw.length !== 1) throw invalid(key, 'given more than once');
    return raw[0]!;
  }
  return raw;
}

function nonNegativeInteger(key: string, raw: string | string[]): number {
  const s = single(key, raw).trim();
  if (!/^[0-9]{1,15}$/.test(s)) throw invalid(key, `'${s}' is not a non-negative integer`);
  return Number(s);
}

/** Parses and validates the query keys; values are checked against `limits` when given. */
export function parseQidoQuery(query: Record<string, string | string[] | undefined>, limits?: MatchLimits): ParsedQuery {
  const parsed: ParsedQuery = { filters: [], include: new Set(), includeAll: false, limit: undefined, offset: 0 };
  const seen = new Map<Tag, AttributeFilter>();
  for (const [key, raw] of Object.entries(query)) {
    if (raw === undefined) continue;
    switch (key) {
      case 'limit': {
        const n = nonNegativeInteger(key, raw);
        if (n === 0) throw invalid(key, 'must be at least 1');
        parsed.limit = n;
        continue;
      }
      case 'offset':
        parsed.offset = nonNegativeInteger(key, raw);
        continue;
      case 'fuzzymatching': {
        const v = single(key, raw);
        if (v !== 'true' && v !== 'false') throw invalid(key, `'${v}' is neither true nor false`);
        continue;
      }
      case 'includefield':
        for (const item of (Array.isArray(raw) ? raw : [raw]).flatMap((v) => v.split(','))) {
          const name = item.trim();
          if (name === '') continue;
          if (name === 'all') {
            parsed.includeAll = true;
            continue;
          }
          // A sequence path ('00400275.00401001') returns its top-level sequence.
          const resolved = resolveAttributeKey(name.split('.')[0]!);
          if (resolved === undefined) throw invalid('includefield', `unknown attribute '${name}'`);
          parsed.include.add(resolved.tag);
        }
        continue;
    }
    if (key.includes('.')) throw invalid(key, 'matching inside sequences is not supported');
    const resolved = resolveAttributeKey(key);
    if (resolved === undefined) throw invalid(key, 'unknown query key (neither a known keyword nor a tag)');
    const vr = resolved.definition?.vr ?? '';
    const values = Array.isArray(raw) ? raw : [raw];
    const previous = seen.get(resolved.tag);
    if ((values.length > 1 || previous !== undefined) && vr !== 'UI') throw invalid(key, 'given more than once');
    const value = [...(previous === undefined ? [] : [previous.value]), ...values].join(',');
    const filter: AttributeFilter = { tag: resolved.tag, vr, value, key };
    if (previous !== undefined) parsed.filters[parsed.filters.indexOf(previous)] = filter;
    else parsed.filters.push(filter);
    seen.set(resolved.tag, filter);
  }
  // Refused here, before the catalog runs anything (UI values are complete only now).
  for (const filter of parsed.filters) validateFilter(filter, limits);
  return parsed;
}

/**
 * Picks the response type from Accept (highest q first). Kept here rather than using
 * http.ts's parseAccept because that module pulls in the node's config (and through it the
 * ingest pipeline) for one constant; QIDO only needs type and q.
 */
function negotiate(accept: string | undefined): string {
  if (accept === undefined || accept.trim() === '') return DICOM_JSON;
  const ranges = accept
    .split(',')
    .map((range) => {
      const [type = '', ...params] = range.split(';').map((p) => p.trim().toLowerCase());
      const q = params.find((p) => p.startsWith('q='));
      return { type, q: q === undefined ? 1 : Number(q.slice(2)) };
    })
    .filter((r) => r.q > 0)
    .sort((x, y) => y.q - x.q);
  for (const { type } of ranges) {
    if (type === DICOM_JSON || type === 'application/*' || type === '*/*') return DICOM_JSON;
    if (type === 'application/json') return 'application/json';
  }
  throw new VaultError('NOT_ACCEPTABLE', 'QIDO-RS answers application/dicom+json (or application/json) only');
}

// -- formatter --------------------------------------------------------------------------

/** The datasets a result can draw on, by where attributes are stored. */
interface Sources {
  study: DicomJsonDataset;
  series?: DicomJsonDataset;
  instance?: DicomJsonDataset;
  /** Absolute URL of the instance, to resolve its relative BulkDataURIs. */
  instanceUrl?: string;
}

function storedAt(tag: Tag): Level {
  const level = attributeByTag(tag)?.level;
  if (level === undefined || level === 'instance') return 'instance';
  return isStudyLevel(level) ? 'study' : 'series';
}

/**
 * An attribute of a result: from the level that owns it (so instance results show the study's
 * current PatientName, as the study result does), else from the result's own level (Specific
 * Character Set and the timezone offset are copied to every level). Never from a level below.
 */
function lookup(tag: Tag, own: Level, src: Sources): DicomJsonElement | undefined {
  const owner = storedAt(tag);
  const byOwner = owner === 'study' ? src.study : owner === 'series' ? src.series : src.instance;
  const byOwn = own === 'study' ? src.study : own === 'series' ? src.series : src.instance;
  return byOwner?.[tag] ?? byOwn?.[tag];
}

/** Stored BulkDataURIs are relative to the instance ('bulk/7FE00010'); results carry URLs. */
function absolutize(el: DicomJsonElement, instanceUrl: string | undefined): DicomJsonElement {
  if (instanceUrl === undefined) return el;
  if (el.BulkDataURI !== undefined && !/^[a-z][a-z0-9+.-]*:/i.test(el.BulkDataURI)) {
    return { ...el, BulkDataURI: `${instanceUrl}/${el.BulkDataURI}` };
  }
  if (el.vr === 'SQ' && el.Value !== undefined) {
    return {
      ...el,
      Value: el.Value.map((item) => {
        if (typeof item !== 'object' || item === null) return item;
        const out: DicomJsonDataset = {};
        for (const [tag, child] of Object.entries(item as DicomJsonDataset)) out[tag] = absolutize(child, instanceUrl);
        return out;
      }),
    };
  }
  return el;
}

interface FormatContext {
  level: Level;
  query: ParsedQuery;
  /** Study-level result attributes too (All Series, Study's/All Instances). */
  withStudy: boolean;
  /** Series-level result attributes too (Study's/All Instances). */
  withSeries: boolean;
}

function requiredAttributes(ctx: FormatContext): ResultAttribute[] {
  return [
    ...(ctx.level === 'study' || ctx.withStudy ? STUDY_RESULT : []),
    ...(ctx.level === 'series' || ctx.withSeries ? SERIES_RESULT : []),
    ...(ctx.level === 'instance' ? INSTANCE_RESULT : []),
  ];
}

/** Every tag formatResult may look up (without includefield=all). */
function neededTags(ctx: FormatContext): Tag[] {
  return [...new Set([...requiredAttributes(ctx).map((r) => r.tag), ...ctx.query.filters.map((f) => f.tag), ...ctx.query.include])];
}

function formatResult(ctx: FormatContext, src: Sources, retrieveUrl: string, extra: DicomJsonDataset): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  const put = (tag: Tag, fallbackVr: string | undefined): void => {
    if (out[tag] !== undefined) return;
    const el = lookup(tag, ctx.level, src);
    if (el !== undefined) out[tag] = absolutize(el, src.instanceUrl);
    else if (fallbackVr !== undefined) out[tag] = { vr: fallbackVr };
  };
  for (const r of requiredAttributes(ctx)) put(r.tag, r.always ? r.vr : undefined);
  // Matched keys are returned, empty when the result has no value (e.g. universal matching).
  for (const f of ctx.query.filters) put(f.tag, f.vr === '' ? 'UN' : f.vr);
  for (const tag of ctx.query.include) put(tag, undefined);
  if (ctx.query.includeAll) {
    const own = ctx.level === 'study' ? src.study : ctx.level === 'series' ? src.series : src.instance;
    for (const tag of Object.keys(own ?? {})) put(tag, undefined);
  }
  Object.assign(out, extra);
  out[TAGS.RetrieveURL] = { vr: 'UR', Value: [retrieveUrl] };
  out[TAGS.InstanceAvailability] = { vr: 'CS', Value: ['ONLINE'] };
  const sorted: DicomJsonDataset = {};
  for (const tag of Object.keys(out).sort()) sorted[tag] = out[tag]!;
  return sorted;
}

// -- service ----------------------------------------------------------------------------

interface Params {
  study?: string;
  series?: string;
}

export function qidoService(deps: QidoDeps, options: QidoOptions = {}): FastifyPluginAsync {
  const maxResults = options.maxResults ?? DEFAULT_QIDO_MAX_RESULTS;
  const maxQueryLength = options.maxQueryLength ?? DEFAULT_QIDO_MAX_QUERY_LENGTH;
  const limits: MatchLimits = {
    maxValueLength: options.maxValueLength ?? DEFAULT_QIDO_MAX_VALUE_LENGTH,
    maxWildcards: options.maxWildcards ?? DEFAULT_QIDO_MAX_WILDCARDS,
  };
  const config: AccessRouteConfig = { access: { action: 'search' } };

  return async (app) => {
    const base = (request: FastifyRequest): string => `${request.protocol}://${request.host}${app.prefix}`;

    const search = (level: Level) => async (request: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
      const mediaType = negotiate(request.headers.accept);
      const study = request.params.study === undefined ? undefined : assertUid(request.params.study, 'Study Instance UID');
      const series = request.params.series === undefined ? undefined : assertUid(request.params.series, 'Series Instance UID');
      const mark = request.url.indexOf('?');
      const queryLength = mark < 0 ? 0 : request.url.length - mark - 1;
      if (queryLength > maxQueryLength) {
        throw new VaultError('INVALID_QUERY', `query string: ${queryLength} characters, more than the ${maxQueryLength} allowed (bound maxQueryLength)`, {
          details: { bound: 'maxQueryLength', limit: maxQueryLength },
        });
      }
      const query = parseQidoQuery(request.query as Record<string, string | string[] | undefined>, limits);

      const pageSize = Math.min(query.limit ?? maxResults, maxResults);
      // One row more than the page tells whether the server cut the results.
      const catalogQuery: CatalogQuery = { filters: query.filters, limit: pageSize + 1, offset: query.offset };
      if (study !== undefined) catalogQuery.study = study;
      if (series !== undefined) catalogQuery.series = series;

      // What the access seam lets this request see (absent: everything); the catalog applies it.
      const scope = request.access?.scope;
      const root = base(request);
      const studyUrl = (s: string): string => `${root}/studies/${s}`;
      const seriesUrl = (s: string, se: string): string => `${studyUrl(s)}/series/${se}`;
      let results: DicomJsonDataset[];
      if (level === 'study') {
        const ctx: FormatContext = { level, query, withStudy: false, withSeries: false };
        results = deps.catalog
          .queryStudies(catalogQuery, scope)
          .map((r: StudyRecord) => formatResult(ctx, { study: r.attributes }, studyUrl(r.studyInstanceUID), {}));
      } else if (level === 'series') {
        const ctx: FormatContext = { level, query, withStudy: study === undefined, withSeries: false };
        results = deps.catalog
          .querySeries(catalogQuery, scope)
          .map((r: SeriesRecord) =>
            formatResult(ctx, { study: r.studyAttributes, series: r.attributes }, seriesUrl(r.studyInstanceUID, r.seriesInstanceUID), {}),
          );
      } else {
        const ctx: FormatContext = { level, query, withStudy: study === undefined, withSeries: series === undefined };
        if (!query.includeAll) catalogQuery.instanceFields = neededTags(ctx);
        results = deps.catalog.queryInstances(catalogQuery, scope).map((r: InstanceRecord) => {
          const url = `${seriesUrl(r.studyInstanceUID, r.seriesInstanceUID)}/instances/${r.sopInstanceUID}`;
          return formatResult(ctx, { study: r.studyAttributes, series: r.seriesAttributes, instance: r.metadata, instanceUrl: url }, url, {
            [TAGS.AvailableTransferSyntaxUID]: { vr: 'UI', Value: [r.transferSyntaxUID] },
          });
        });
      }

      if (results.length === 0) {
        // Out of the caller's scope reads as unknown: 404, as for a study never stored.
        if (study !== undefined && !deps.catalog.hasStudy(study, scope)) throw new VaultError('STUDY_NOT_FOUND', 'no such study');
        if (study !== undefined && series !== undefined && !deps.catalog.hasSeries(study, series, scope)) {
          throw new VaultError('SERIES_NOT_FOUND', 'no such series in this study');
        }
        return reply.code(204).send();
      }
      if (results.length > pageSize) {
        results = results.slice(0, pageSize);
        if (query.limit === undefined || query.limit > maxResults) {
          void reply.header('warning', `299 ${root}: "There are additional results that can be requested"`);
        }
      }
      return reply.type(mediaType).send(dicomJson(JSON.stringify(results)));
    };

    app.get('/studies', { config }, search('study'));
    app.get('/studies/:study/series', { config }, search('series'));
    app.get('/series', { config }, search('series'));
    app.get('/studies/:study/series/:series/instances', { config }, search('instance'));
    app.get('/studies/:study/instances', { config }, search('instance'));
    app.get('/instances', { config }, search('instance'));
  };
}
