// Accesses as FHIR R4 AuditEvent resources following the IHE Basic Audit Log Patterns (BALP,
// https://profiles.ihe.net/ITI/BALP/): what an auditor's FHIR tooling, a patient's health record
// or an ATNA repository with a FHIR feed reads. The same classification as the PS3.15 messages
// (event-kind.ts):
//   a retrieval, a receipt     Read (PatientRead when the study's patient is known), action R
//   a QIDO search              Query (PatientQuery), action E; the raw request base64 in entity.query
//   a STOW                     Create (PatientCreate), action C
//   a failed authentication    DCM 110114 User Authentication / 110122 Login, action E
// Failures follow FHIR core's "access denied" pattern that BALP points to: the attempted
// operation with outcome 4 (8: the node's own fault) and outcomeDesc; the BALP profiles fix
// outcome 0, so only successes claim them in meta.profile.
// Agents as BALP gives them: the client and the server (DCM 110152/110153, swapped between Read
// and Query/Create as the profiles say), and the user with their roles and, as agent.policy, the
// grants (urn:uuid:<id>, the identifier of the grant's FHIR Consent export) or the staff policy the
// access rested on. Entities: the study (ImagingStudy by its urn:oid identifier), the series and
// instance the request named, the patient.
// Hand-written rather than through a FHIR library: one resource from plain data, no parsing or
// server; the unit test validates every shape against the R4 definitions with FHIR.js.
import type { AuditEvent } from '../access/policy.ts';
import { type AuditPatient, type AuditSource, auditKind, grantIdsOf, OID, outcomeDescription, outcomeOf, pathOf, policiesOf } from './event-kind.ts';

type Json = Record<string, unknown>;

export const BALP_PROFILE = 'https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.';
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const RESTFUL = 'http://hl7.org/fhir/restful-interaction';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const SOURCE_TYPE = 'http://terminology.hl7.org/CodeSystem/security-source-type';
const DICOM_UID = 'urn:dicom:uid';
/** Our own systems: URNs of this project, as in the grants' Consent export (src/grants/fhir.ts). */
export const PRINCIPAL_SYSTEM = 'urn:dicom-vault:principal';
export const ROLE_SYSTEM = 'urn:dicom-vault:role';
export const DATA_TYPE_DETAIL = 'urn:dicom-vault:data-type';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function uidReference(uid: string, display: string, type?: string): Json {
  return { ...(type !== undefined ? { type } : {}), identifier: { system: DICOM_UID, value: `urn:oid:${uid}` }, display };
}

function patientReference(p: AuditPatient): Json {
  const identifier = p.issuer !== null && OID.test(p.issuer) ? { system: `urn:oid:${p.issuer}`, value: p.id } : { value: p.id };
  return {
    type: 'Patient',
    identifier: { ...identifier, ...(p.issuer !== null && !OID.test(p.issuer) ? { assigner: { display: p.issuer } } : {}) },
    ...(p.name !== undefined ? { display: p.name } : {}),
  };
}

/** The grants and policies an access rested on, as agent.policy URIs. */
export function policyUris(event: AuditEvent): string[] {
  const grants = grantIdsOf(event).map((id) => (UUID.test(id) ? `urn:uuid:${id}` : `urn:dicom-vault:grant:${encodeURIComponent(id)}`));
  return [...grants, ...policiesOf(event).map((p) => `urn:dicom-vault:policy:${encodeURIComponent(p)}`)];
}

/** One access as a BALP AuditEvent (R4 JSON). `patient`: the study's patient, when known. */
export function toBalp(event: AuditEvent, source: AuditSource, patient?: AuditPatient): Json {
  const kind = auditKind(event);
  const attempted =
    kind === 'refused' ? (event.resource.action === 'search' ? 'query' : event.resource.action === 'store' ? 'transfer-in' : 'transfer-out') : kind;
  const r = event.resource;
  const outcome = outcomeOf(event);
  const description = outcomeDescription(event);

  let profile: string | undefined;
  let type: Json;
  let subtype: Json;
  let action: string;
  // Read: the client is the destination of the data; Query and Create: the client is the source of the request.
  let clientRole: [string, string];
  let serverRole: [string, string];
  let userType: [string, string, string];
  const dest: [string, string] = ['110152', 'Destination Role ID'];
  const src: [string, string] = ['110153', 'Source Role ID'];
  switch (attempted) {
    case 'authentication-failed':
      type = { system: DCM, code: '110114', display: 'User Authentication' };
      subtype = { system: DCM, code: '110122', display: 'Login' };
      action = 'E';
      [clientRole, serverRole] = [src, dest];
      userType = [PARTICIPATION, 'IRCP', 'information recipient'];
      break;
    case 'query':
      profile = patient !== undefined ? 'PatientQuery' : 'Query';
      type = { system: EVENT_TYPE, code: 'rest', display: 'Restful Operation' };
      subtype = { system: RESTFUL, code: 'search-type', display: 'search-type' };
      action = 'E';
      [clientRole, serverRole] = [src, dest];
      userType = [PARTICIPATION, 'IRCP', 'information recipient'];
      break;
    case 'transfer-in':
      profile = patient !== undefined ? 'PatientCreate' : 'Create';
      type = { system: EVENT_TYPE, code: 'rest', display: 'Restful Operation' };
      subtype = { system: RESTFUL, code: 'create', display: 'create' };
      action = 'C';
      [clientRole, serverRole] = [src, dest];
      userType = [PARTICIPATION, 'INF', 'informant'];
      break;
    default:
      profile = patient !== undefined ? 'PatientRead' : 'Read';
      type = { system: EVENT_TYPE, code: 'rest', display: 'Restful Operation' };
      subtype = { system: RESTFUL, code: 'read', display: 'read' };
      action = 'R';
      [clientRole, serverRole] = [dest, src];
      userType = [PARTICIPATION, 'IRCP', 'information recipient'];
  }

  const p = event.principal;
  const policy = policyUris(event);
  const agent: Json[] = [
    {
      type: { coding: [{ system: DCM, code: clientRole[0], display: clientRole[1] }] },
      who: { display: event.remoteAddress || 'unknown' },
      requestor: false,
      ...(event.remoteAddress !== '' ? { network: { address: event.remoteAddress, type: '2' } } : {}),
    },
    {
      type: { coding: [{ system: DCM, code: serverRole[0], display: serverRole[1] }] },
      who: { identifier: { value: source.sourceId }, display: source.sourceId },
      requestor: false,
      network: { address: source.host, type: '1' },
    },
    {
      type: { coding: [{ system: userType[0], code: userType[1], display: userType[2] }] },
      who: { identifier: { system: PRINCIPAL_SYSTEM, value: p.id }, display: p.name ?? p.id },
      ...(p.name !== undefined ? { name: p.name } : {}),
      requestor: true,
      ...(p.roles.length > 0 ? { role: p.roles.map((role) => ({ coding: [{ system: ROLE_SYSTEM, code: role }] })) } : {}),
      ...(policy.length > 0 ? { policy } : {}),
    },
  ];

  const entity: Json[] = [];
  // The query, also of a refused or unauthenticated search: what was attempted.
  if (r.action === 'search') {
    entity.push({
      type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE, code: '24', display: 'Query' },
      description: pathOf(event.url),
      query: Buffer.from(event.url, 'utf8').toString('base64'),
    });
  }
  const objectEntity = (what: Json, detail?: Json[]): Json => ({
    what,
    type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
    role: { system: OBJECT_ROLE, code: '4', display: 'Domain Resource' },
    ...(detail !== undefined && detail.length > 0 ? { detail } : {}),
  });
  if (r.studyInstanceUID !== undefined) {
    entity.push(
      objectEntity(
        uidReference(r.studyInstanceUID, 'DICOM study', 'ImagingStudy'),
        r.dataType !== undefined ? [{ type: DATA_TYPE_DETAIL, valueString: r.dataType }] : [],
      ),
    );
  }
  if (r.seriesInstanceUID !== undefined) entity.push(objectEntity(uidReference(r.seriesInstanceUID, 'DICOM series')));
  if (r.sopInstanceUID !== undefined) entity.push(objectEntity(uidReference(r.sopInstanceUID, 'DICOM SOP instance')));
  if (patient !== undefined) {
    entity.push({
      what: patientReference(patient),
      type: { system: ENTITY_TYPE, code: '1', display: 'Person' },
      role: { system: OBJECT_ROLE, code: '1', display: 'Patient' },
    });
  }

  return {
    resourceType: 'AuditEvent',
    ...(outcome === '0' && profile !== undefined ? { meta: { profile: [`${BALP_PROFILE}${profile}`] } } : {}),
    type,
    subtype: [subtype],
    action,
    recorded: event.time,
    outcome,
    ...(description !== undefined ? { outcomeDesc: description } : {}),
    agent,
    source: {
      ...(source.enterpriseSiteId !== undefined ? { site: source.enterpriseSiteId } : {}),
      observer: { identifier: { value: source.sourceId }, display: source.sourceId },
      type: [{ system: SOURCE_TYPE, code: '4', display: 'Application Server' }],
    },
    ...(entity.length > 0 ? { entity } : {}),
  };
}

/** AuditEvents in a Bundle of type collection, for a file export; `next`: the URL of the next page (Bundle.link). */
export function balpBundle(resources: readonly Json[], options: { next?: string } = {}): Json {
  return {
    resourceType: 'Bundle',
    type: 'collection',
    timestamp: new Date().toISOString(),
    ...(options.next !== undefined ? { link: [{ relation: 'next', url: options.next }] } : {}),
    entry: resources.map((resource) => ({ fullUrl: `urn:uuid:${crypto.randomUUID()}`, resource })),
  };
}
