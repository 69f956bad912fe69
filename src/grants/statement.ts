// Grant statements: built from what a patient asks for (the CLI's flags, the web page's form),
// and checked field by field before anything is signed or stored. A statement is strict JSON of a
// known shape: an unknown field, an empty list or a date that is not to the second is refused,
// because the signature covers every byte and the enforcement must read exactly what was signed
// (an empty `studies: []` must not read as "no restriction").
import { randomUUID } from 'node:crypto';
import type { PatientRef } from '../catalog/scope.ts';
import { VaultError } from '../core/errors.ts';
import { isValidUid } from '../dicom/uid.ts';
import { DATA_TYPES, type DataType, GRANT_ACTIONS, GRANT_VERSION, type GrantAction, type Grantee, type GrantStatement } from './model.ts';
import { secureUrl } from '../identity/oidc.ts';

/** A grant whose end the patient did not name lasts this long. Default 30 days. */
export const DEFAULT_GRANT_DAYS = 30;
export const DEFAULT_DATA_TYPES: readonly DataType[] = ['images'];
export const DEFAULT_ACTIONS: readonly GrantAction[] = ['search', 'view'];

const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
/** Modality (0008,0060): CS, up to 16 characters of upper-case letters, digits, space and underscore. */
const MODALITY = /^[A-Z0-9_ ]{1,16}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** ISO 8601 UTC to the second: the one form a statement's times take, so that the signed text has one spelling per instant. */
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

function invalid(reason: string): VaultError {
  return new VaultError('GRANT_INVALID', reason);
}

/** `--to`: `link`, `user:NAME` (or a bare NAME), `oidc:ISSUER#SUBJECT`. */
export function parseGrantee(to: string): Grantee {
  if (to === 'link') return { kind: 'link' };
  if (to.startsWith('oidc:')) {
    const rest = to.slice(5);
    const hash = rest.lastIndexOf('#');
    if (hash <= 0 || hash === rest.length - 1) throw invalid(`"${to}" is not an OpenID subject: write oidc:ISSUER#SUBJECT (the issuer URL, then the subject)`);
    return checkGrantee({ kind: 'oidc', issuer: rest.slice(0, hash), subject: rest.slice(hash + 1) });
  }
  const name = to.startsWith('user:') ? to.slice(5) : to;
  return checkGrantee({ kind: 'user', id: name });
}

/** The principal id a grantee is known by (src/identity/principal.ts); a link grant's holders are `link:<grant id>`. */
export function granteePrincipal(grantee: Grantee, grantId: string): string {
  switch (grantee.kind) {
    case 'user':
      return `user:${grantee.id}`;
    case 'oidc':
      return `oidc:${grantee.issuer}#${grantee.subject}`;
    case 'link':
      return `link:${grantId}`;
  }
}

/** Human words for a grantee (lists, the FHIR export's display). */
export function granteeLabel(grantee: Grantee): string {
  switch (grantee.kind) {
    case 'user':
      return `user ${grantee.id}`;
    case 'oidc':
      return `${grantee.subject} at ${grantee.issuer}`;
    case 'link':
      return 'whoever holds its share link';
  }
}

/** An instant as a statement spells it: UTC, to the second. */
export function instant(d: Date): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}

const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** `--until`: an ISO 8601 date or date-time, or `+N` followed by m, h, d or w (from `now`). */
export function parseUntil(raw: string, now: Date): Date {
  const rel = /^\+(\d{1,6})([mhdw])$/.exec(raw);
  if (rel !== null) return new Date(now.getTime() + Number(rel[1]) * UNIT_MS[rel[2]!]!);
  // A date alone: the grant runs to the end of that day, UTC.
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(raw);
  const t = Date.parse(dateOnly ? `${raw}T00:00:00Z` : raw);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}/.test(raw))
    throw invalid(`"${raw}" is neither a time (ISO 8601, e.g. 2027-03-01 or 2027-03-01T12:00:00Z) nor a duration (+30m, +12h, +7d, +2w)`);
  return new Date(dateOnly ? t + UNIT_MS.d! : t);
}

export interface GrantRequest {
  grantee: Grantee;
  studies?: readonly string[];
  series?: ReadonlyArray<{ study: string; series: string }>;
  modalities?: readonly string[];
  dataTypes?: readonly DataType[];
  actions?: readonly GrantAction[];
  notBefore?: Date;
  /** undefined: DEFAULT_GRANT_DAYS from notBefore; null: until revoked (the patient said so). */
  notAfter?: Date | null;
}

/** The statement a patient is asked to sign for `request`. */
export function draftStatement(
  context: { nodeId: string; account: string; patientIds: readonly PatientRef[]; now: Date },
  request: GrantRequest,
): GrantStatement {
  const notBefore = request.notBefore ?? context.now;
  const notAfter = request.notAfter === undefined ? new Date(notBefore.getTime() + DEFAULT_GRANT_DAYS * UNIT_MS.d!) : request.notAfter;
  const scope: GrantStatement['scope'] = {};
  if (request.studies !== undefined && request.studies.length > 0) scope.studies = [...new Set(request.studies)];
  if (request.series !== undefined && request.series.length > 0) scope.series = request.series.map((s) => ({ study: s.study, series: s.series }));
  if (request.modalities !== undefined && request.modalities.length > 0) scope.modalities = [...new Set(request.modalities.map((m) => m.toUpperCase()))];
  return checkStatement({
    v: GRANT_VERSION,
    id: randomUUID(),
    node: context.nodeId,
    patient: context.account,
    patientIds: context.patientIds.map((p) => ({ id: p.id, issuer: p.issuer })),
    grantee: request.grantee,
    scope,
    dataTypes: [...new Set(request.dataTypes ?? DEFAULT_DATA_TYPES)],
    actions: [...new Set(request.actions ?? DEFAULT_ACTIONS)],
    notBefore: instant(notBefore),
    notAfter: notAfter === null ? null : instant(notAfter),
    issuedAt: instant(context.now),
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyKeys(v: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(v)) if (!allowed.includes(k)) throw invalid(`${what} has an unknown field "${k}"`);
}

function nonEmptyList(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v) || v.length === 0) throw invalid(`${what} must be a non-empty list (leave it out for no restriction)`);
  if (v.length > 1000) throw invalid(`${what} names more than 1000 entries`);
  return v;
}

function uid(v: unknown, what: string): string {
  if (typeof v !== 'string' || !isValidUid(v)) throw invalid(`${what} is not a valid DICOM UID`);
  return v;
}

function checkGrantee(g: unknown): Grantee {
  if (!isObject(g)) throw invalid('grantee must be an object');
  switch (g.kind) {
    case 'user':
      onlyKeys(g, ['kind', 'id'], 'grantee');
      if (typeof g.id !== 'string' || !USER_NAME.test(g.id)) throw invalid(`"${String(g.id)}" is not a user name (1-64 letters, digits, . _ @ -)`);
      return { kind: 'user', id: g.id };
    case 'oidc': {
      onlyKeys(g, ['kind', 'issuer', 'subject'], 'grantee');
      let url: URL | undefined;
      try {
        url = typeof g.issuer === 'string' ? new URL(g.issuer) : undefined;
      } catch {}
      // As the node's --oidc-issuer: plain http only for a provider on loopback.
      if (url === undefined || !secureUrl(url) || url.search !== '' || url.hash !== '')
        throw invalid('an OpenID issuer is an https URL without query or fragment (http only on loopback)');
      if (typeof g.subject !== 'string' || g.subject.length === 0 || g.subject.length > 255) throw invalid('an OpenID subject is 1-255 characters');
      return { kind: 'oidc', issuer: g.issuer as string, subject: g.subject };
    }
    case 'link':
      onlyKeys(g, ['kind'], 'grantee');
      return { kind: 'link' };
    default:
      throw invalid('grantee.kind must be user, oidc or link');
  }
}

function checkInstant(v: unknown, what: string): string {
  if (typeof v !== 'string' || !INSTANT.test(v) || Number.isNaN(Date.parse(v)) || instant(new Date(v)) !== v) {
    throw invalid(`${what} must be a UTC time to the second, e.g. 2027-03-01T12:00:00Z`);
  }
  return v;
}

/** `v` as a GrantStatement, or GRANT_INVALID naming the first field that is wrong. */
export function checkStatement(v: unknown): GrantStatement {
  if (!isObject(v)) throw invalid('a grant statement is a JSON object');
  onlyKeys(v, ['v', 'id', 'node', 'patient', 'patientIds', 'grantee', 'scope', 'dataTypes', 'actions', 'notBefore', 'notAfter', 'issuedAt'], 'the statement');
  if (v.v !== GRANT_VERSION) throw invalid(`the statement's version is not ${GRANT_VERSION}`);
  if (typeof v.id !== 'string' || !UUID.test(v.id)) throw invalid('the statement id must be a lower-case UUID');
  if (typeof v.node !== 'string' || v.node === '') throw invalid('the statement names no node');
  if (typeof v.patient !== 'string' || v.patient === '') throw invalid('the statement names no patient account');
  const patientIds = nonEmptyList(v.patientIds, 'patientIds').map((p) => {
    if (!isObject(p)) throw invalid('a Patient ID is an object { id, issuer }');
    onlyKeys(p, ['id', 'issuer'], 'a Patient ID');
    if (typeof p.id !== 'string' || p.id === '' || p.id.length > 64) throw invalid('a Patient ID is 1-64 characters');
    if (p.issuer !== null && (typeof p.issuer !== 'string' || p.issuer === '' || p.issuer.length > 64))
      throw invalid('an Issuer of Patient ID is 1-64 characters, or null');
    return { id: p.id, issuer: p.issuer as string | null };
  });
  const grantee = checkGrantee(v.grantee);
  if (!isObject(v.scope)) throw invalid("scope must be an object ({} for all of the patient's studies)");
  onlyKeys(v.scope, ['studies', 'series', 'modalities'], 'scope');
  const scope: GrantStatement['scope'] = {};
  if (v.scope.studies !== undefined) scope.studies = nonEmptyList(v.scope.studies, 'scope.studies').map((s) => uid(s, 'a study in scope.studies'));
  if (v.scope.series !== undefined) {
    scope.series = nonEmptyList(v.scope.series, 'scope.series').map((s) => {
      if (!isObject(s)) throw invalid('a series in scope.series is { study, series }');
      onlyKeys(s, ['study', 'series'], 'a series in scope.series');
      return { study: uid(s.study, 'the study of a series in scope.series'), series: uid(s.series, 'a series in scope.series') };
    });
  }
  if (v.scope.modalities !== undefined) {
    scope.modalities = nonEmptyList(v.scope.modalities, 'scope.modalities').map((m) => {
      if (typeof m !== 'string' || !MODALITY.test(m)) throw invalid(`"${String(m)}" is not a modality (e.g. CT, MR, SR)`);
      return m;
    });
  }
  const dataTypes = nonEmptyList(v.dataTypes, 'dataTypes').map((d) => {
    if (!(DATA_TYPES as readonly unknown[]).includes(d)) throw invalid(`"${String(d)}" is not a data type (${DATA_TYPES.join(', ')})`);
    return d as DataType;
  });
  const actions = nonEmptyList(v.actions, 'actions').map((a) => {
    if (!(GRANT_ACTIONS as readonly unknown[]).includes(a)) throw invalid(`"${String(a)}" is not an action (${GRANT_ACTIONS.join(', ')})`);
    return a as GrantAction;
  });
  if (new Set(dataTypes).size !== dataTypes.length || new Set(actions).size !== actions.length) throw invalid('dataTypes and actions name each entry once');
  const notBefore = checkInstant(v.notBefore, 'notBefore');
  const notAfter = v.notAfter === null ? null : checkInstant(v.notAfter, 'notAfter');
  if (notAfter !== null && Date.parse(notAfter) <= Date.parse(notBefore)) throw invalid('notAfter must come after notBefore');
  const issuedAt = checkInstant(v.issuedAt, 'issuedAt');
  return { v: GRANT_VERSION, id: v.id, node: v.node, patient: v.patient, patientIds, grantee, scope, dataTypes, actions, notBefore, notAfter, issuedAt };
}
