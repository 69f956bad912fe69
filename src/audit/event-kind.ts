// What kind of audited event an access is, in the terms both audit standards share (DICOM PS3.15
// A.5.3 and IHE BALP, which follows it): a failed authentication, a refusal, a query, a transfer
// of instances out of the node or into it, or another read of a study. One classification, so the
// syslog messages and the FHIR export of the same access always agree.
import type { AuditEvent } from '../access/policy.ts';
import type { PatientRef } from '../catalog/scope.ts';

export type AuditKind = 'authentication-failed' | 'refused' | 'query' | 'transfer-out' | 'transfer-in' | 'read';

export function auditKind(event: AuditEvent): AuditKind {
  if (event.status === 401) return 'authentication-failed';
  if (event.status === 403) return 'refused';
  const r = event.resource;
  if (r.action === 'search') return 'query';
  if (r.action === 'store') return 'transfer-in';
  // A receipt tells about a study (its anchoring), it sends none of its instances.
  return r.dataType === 'receipt' ? 'read' : 'transfer-out';
}

/** PS3.15 EventOutcomeIndicator / FHIR R4 AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure. */
export type AuditOutcome = '0' | '4' | '8';

/** A served and complete response is a success; a refusal, an unknown object or a broken-off response a minor failure; the node's own fault (5xx) a serious one. */
export function outcomeOf(event: AuditEvent): AuditOutcome {
  if (event.status >= 500) return '8';
  if (event.status >= 400 || !event.complete) return '4';
  return '0';
}

/** Why it failed, for EventOutcomeDescription / outcomeDesc; absent on success. */
export function outcomeDescription(event: AuditEvent): string | undefined {
  if (outcomeOf(event) === '0') return undefined;
  const status = `HTTP ${event.status}`;
  const why = event.status === 401 ? 'caller not identified' : event.status === 403 ? 'access not granted' : undefined;
  const parts = [status, why, event.status < 400 && !event.complete ? 'response broken off before its end' : undefined, event.basis];
  return parts.filter((p) => p !== undefined).join(': ');
}

/**
 * The grants an access rested on. The access seam names them in `basis` as `grant <id>` (beside
 * 'staff policy', 'own studies', 'open mode'; src/access/patient-control.ts).
 */
export function grantIdsOf(event: AuditEvent): string[] {
  return [...(event.basis ?? '').matchAll(/\bgrant (\S+?)(?=,|$)/g)].map((m) => m[1]!);
}

/** The policies other than grants that allowed an access ('staff policy', 'own studies', 'role ingest', 'open mode'). */
export function policiesOf(event: AuditEvent): string[] {
  return (event.basis ?? '')
    .split(', ')
    .filter((b) => b !== '' && !b.startsWith('grant ') && b !== 'no grant in force')
    .map((b) => b.replace(/\s+/g, '-'));
}

/** The path of the request URL (the query string holds patient names, IDs, dates; it goes only where a standard asks for it). */
export function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/** A patient as an HL7 v2 CX identifier (`ID^^^&issuer&ISO` for an OID issuer, `ID^^^issuer` otherwise), as IHE ATNA names patients. */
export function patientCx(patient: PatientRef): string {
  if (patient.issuer === null) return patient.id;
  return OID.test(patient.issuer) ? `${patient.id}^^^&${patient.issuer}&ISO` : `${patient.id}^^^${patient.issuer}`;
}

export const OID = /^[0-2](\.(0|[1-9]\d*))+$/;

/** The patient whose study an access touched, as the catalog knows them. */
export interface AuditPatient extends PatientRef {
  /** Patient's Name as stored (DICOM PN, e.g. `Doe^Jane`). */
  name?: string;
}

/** Who produced the record: the node. */
export interface AuditSource {
  /** AuditSourceID / AuditEvent.source.observer: the node's name (default its host name). */
  sourceId: string;
  /** AuditEnterpriseSiteID / AuditEvent.source.site: the hospital or department, when configured. */
  enterpriseSiteId?: string;
  /** The node's host name or address, as its network access point. */
  host: string;
}
