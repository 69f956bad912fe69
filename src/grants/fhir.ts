// Grants as FHIR R4 Consent resources (http://hl7.org/fhir/R4/consent.html), one per grant, in a
// Bundle of type collection: what a hospital's consent registry or the patient's own health record
// can read. The signed statement and its proof travel along as the Consent's sourceAttachment, so
// whoever holds the export can check the patient's signature without asking the node.
// Hand-written rather than through a FHIR library: the shape is one resource built from plain data
// (no parsing, no server), and the test validates it against the R4 definitions with FHIR.js.
import type { PatientRef } from '../catalog/scope.ts';
import type { DataType, GrantAction, GrantRecord } from './model.ts';
import type { GrantStatus } from './service.ts';
import { granteeLabel } from './statement.ts';

const CONSENT_SCOPE = 'http://terminology.hl7.org/CodeSystem/consentscope';
const LOINC = 'http://loinc.org';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const CONSENT_ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';
const RESOURCE_TYPES = 'http://hl7.org/fhir/resource-types';
const DICOM_DCM = 'http://dicom.nema.org/resources/ontology/DCM';
/** How FHIR names a DICOM UID (ImagingStudy.identifier): system urn:dicom:uid, value urn:oid:<uid>. */
const DICOM_UID = 'urn:dicom:uid';
/** Our own code systems and identifiers: URNs of this project, not claimed as HL7's. */
export const DATA_TYPE_SYSTEM = 'urn:dicom-vault:fhir:data-type';
export const GRANT_POLICY = 'urn:dicom-vault:policy:patient-grant/1';
export const SERIES_EXTENSION = 'urn:dicom-vault:fhir:series';

type Json = Record<string, unknown>;

/** An Issuer of Patient ID that is an OID becomes the identifier's system; any other issuer is named as its assigner. */
function patientIdentifier(ref: PatientRef): Json {
  if (ref.issuer !== null && /^[0-2](\.(0|[1-9]\d*))+$/.test(ref.issuer)) return { system: `urn:oid:${ref.issuer}`, value: ref.id };
  return { value: ref.id, ...(ref.issuer !== null ? { assigner: { display: ref.issuer } } : {}) };
}

function grantee(record: GrantRecord): Json {
  const g = record.statement.grantee;
  const display = granteeLabel(g);
  switch (g.kind) {
    case 'user':
      return { identifier: { system: 'urn:dicom-vault:user', value: g.id }, display };
    case 'oidc':
      return { identifier: { system: g.issuer, value: g.subject }, display };
    case 'link':
      return { identifier: { system: 'urn:dicom-vault:share-link', value: record.statement.id }, display };
  }
}

/** search and view: the grantee reads (access); download: they take copies away (use). */
function actionCode(a: GrantAction): 'access' | 'use' {
  return a === 'download' ? 'use' : 'access';
}

function dataClass(types: readonly DataType[]): Json[] {
  const classes = new Set<string>();
  for (const t of types) classes.add(t === 'reports' ? 'DiagnosticReport' : 'ImagingStudy');
  return [...classes].map((code) => ({ system: RESOURCE_TYPES, code }));
}

function studyRef(uid: string): Json {
  return { type: 'ImagingStudy', identifier: { system: DICOM_UID, value: `urn:oid:${uid}` } };
}

/** One grant as a Consent. `status`: where it stands now (GrantService.check); active and pending grants are active consents. */
export function grantToConsent(record: GrantRecord, status: GrantStatus): Json {
  const s = record.statement;
  const data: Json[] = [];
  for (const study of s.scope.studies ?? []) data.push({ meaning: 'instance', reference: studyRef(study) });
  for (const x of s.scope.series ?? []) {
    data.push({
      extension: [{ url: SERIES_EXTENSION, valueIdentifier: { system: DICOM_UID, value: `urn:oid:${x.series}` } }],
      meaning: 'instance',
      reference: studyRef(x.study),
    });
  }
  const actions = [...new Set(s.actions.map(actionCode))];
  const provision: Json = {
    type: 'permit',
    period: { start: s.notBefore, ...(s.notAfter !== null ? { end: s.notAfter } : {}) },
    actor: [{ role: { coding: [{ system: PARTICIPATION, code: 'IRCP', display: 'information recipient' }] }, reference: grantee(record) }],
    action: actions.map((code) => ({ coding: [{ system: CONSENT_ACTION, code, display: code === 'access' ? 'Access' : 'Use' }] })),
    class: dataClass(s.dataTypes),
    code: [
      { coding: s.dataTypes.map((t) => ({ system: DATA_TYPE_SYSTEM, code: t })), text: `data: ${s.dataTypes.join(', ')}; actions: ${s.actions.join(', ')}` },
      ...(s.scope.modalities ?? []).map((m) => ({ coding: [{ system: DICOM_DCM, code: m }] })),
    ],
    ...(data.length > 0 ? { data } : {}),
  };
  return {
    resourceType: 'Consent',
    id: s.id,
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:uuid:${s.id}` }],
    // A contained Patient carries every Patient ID of the account (Consent.patient is one reference).
    contained: [{ resourceType: 'Patient', id: 'patient', identifier: s.patientIds.map(patientIdentifier) }],
    status: status === 'active' || status === 'pending' ? 'active' : 'inactive',
    scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy', display: 'Privacy Consent' }] },
    category: [{ coding: [{ system: LOINC, code: '59284-0', display: 'Patient Consent' }] }],
    patient: { reference: '#patient' },
    dateTime: s.issuedAt,
    performer: [{ reference: '#patient' }],
    sourceAttachment: {
      contentType: 'application/json',
      data: Buffer.from(JSON.stringify({ statement: s, proof: record.proof })).toString('base64'),
      title: `dicom-vault grant ${s.id}, signed by the patient (${record.proof.kind === 'ed25519' ? 'key file, Ed25519' : 'passkey, WebAuthn'}; RFC 8785 canonical JSON)`,
    },
    policy: [{ uri: GRANT_POLICY }],
    provision,
  };
}

/** The grants as a FHIR Bundle (type collection) of Consents. */
export function consentBundle(entries: ReadonlyArray<{ record: GrantRecord; status: GrantStatus }>, now: Date): Json {
  return {
    resourceType: 'Bundle',
    type: 'collection',
    timestamp: now.toISOString(),
    entry: entries.map(({ record, status }) => ({ fullUrl: `urn:uuid:${record.statement.id}`, resource: grantToConsent(record, status) })),
  };
}
