// The BALP export: every kind of access becomes a FHIR R4 AuditEvent that FHIR.js validates
// against the R4 structure definitions and value sets (cardinalities, types, required bindings,
// unexpected properties), and that follows the IHE BALP profile it claims: the fixed codes, the
// agents' roles (swapped between Read and Query/Create), the user as requestor with the grant as
// policy, the patient and DICOM entities.
import fhirPackage from 'fhir';
import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../../src/access/policy.ts';
import { BALP_PROFILE, balpBundle, PRINCIPAL_SYSTEM, toBalp } from '../../../src/audit/balp.ts';
import type { AuditPatient, AuditSource } from '../../../src/audit/event-kind.ts';

const { Fhir } = fhirPackage as unknown as {
  Fhir: new () => { validate(o: unknown, opts: object): { valid: boolean; messages: Array<{ location: string; severity: string; message: string }> } };
};
const fhir = new Fhir();

const SOURCE: AuditSource = { sourceId: 'vault-1', host: 'vault-1.example.org', enterpriseSiteId: 'St Elsewhere Radiology' };
const PATIENT: AuditPatient = { id: 'PID-9', issuer: '1.2.840.113619.6.1', name: 'Doe^Jane' };
const GRANT = '0b6f6a7e-1111-4222-8333-944445555666';
const STUDY = '1.2.826.0.1.3680043.8.498.1';
const SERIES = `${STUDY}.2`;
const SOP = `${STUDY}.2.3`;

function event(over: { [K in keyof AuditEvent]?: AuditEvent[K] | undefined }): AuditEvent {
  return {
    time: '2027-05-01T09:30:00.123Z',
    principal: { id: 'oidc:https://idp.example.org#abc', roles: ['grantee'], method: 'oidc', name: 'Dr. Gregory House' },
    resource: { action: 'retrieve', level: 'instance', studyInstanceUID: STUDY, seriesInstanceUID: SERIES, sopInstanceUID: SOP, dataType: 'frames' },
    method: 'GET',
    url: `/dicom-web/studies/${STUDY}/series/${SERIES}/instances/${SOP}/frames/1`,
    status: 200,
    complete: true,
    remoteAddress: '10.1.2.3',
    basis: `grant ${GRANT}`,
    ...over,
  } as AuditEvent;
}

const read = event({});
const search = event({
  resource: { action: 'search', level: 'study', studyInstanceUID: STUDY },
  url: `/dicom-web/studies/${STUDY}/series?Modality=CT&PatientName=Doe*`,
  basis: 'staff policy',
  principal: { id: 'user:radiologist', roles: ['staff'], method: 'token', name: 'radiologist' },
});
const searchAll = event({ resource: { action: 'search', level: 'studies' }, url: '/dicom-web/studies?PatientID=PID-9', basis: 'staff policy' });
const store = event({
  resource: { action: 'store', level: 'study', studyInstanceUID: STUDY },
  method: 'POST',
  url: `/dicom-web/studies/${STUDY}`,
  basis: 'role ingest',
  principal: { id: 'user:pacs', roles: ['ingest'], method: 'token', name: 'pacs' },
});
const refused = event({ status: 403, basis: undefined, principal: { id: 'user:clerk', roles: ['admin'], method: 'token', name: 'clerk' } });
const unauthenticated = event({ status: 401, basis: undefined, principal: { id: 'unidentified', roles: [], method: 'none' } });
const unauthenticatedSearch = event({
  status: 401,
  basis: undefined,
  principal: { id: 'unidentified', roles: [], method: 'none' },
  resource: { action: 'search', level: 'studies' },
  url: '/dicom-web/studies?PatientID=PID-9',
});
const brokenOff = event({ complete: false });
const corrupt = event({ status: 500, complete: false });

const cases: Array<[string, AuditEvent, AuditPatient | undefined]> = [
  ['a frame read by a grantee, patient known', read, PATIENT],
  ['a read of a study the catalog has no patient for', read, undefined],
  ['a QIDO search within a study', search, PATIENT],
  ['a QIDO search over all studies', searchAll, undefined],
  ['a STOW', store, PATIENT],
  ['a refusal', refused, PATIENT],
  ['a failed authentication', unauthenticated, undefined],
  ['a failed authentication of a search', unauthenticatedSearch, undefined],
  ['a read broken off', brokenOff, PATIENT],
  ['a read that failed on a corrupt block', corrupt, PATIENT],
];

function errors(resource: unknown): Array<{ location: string; message: string }> {
  const { messages } = fhir.validate(JSON.parse(JSON.stringify(resource)), { errorOnUnexpected: true });
  // Beyond errors FHIR.js only warns that our role codes are not in SecurityRoleType, an example binding.
  for (const m of messages) if (m.severity !== 'error') expect(m.location, JSON.stringify(m)).toMatch(/^AuditEvent\.agent\[\d+\]\.role\[\d+\]$/);
  return messages.filter((m) => m.severity === 'error');
}

const agentOf = (r: any, code: string) => r.agent.filter((a: any) => a.type.coding[0].code === code);

describe('BALP export (FHIR R4 AuditEvent)', () => {
  it('the validator is awake: it flags a bad outcome, a bad action and an unknown field', () => {
    const broken = { ...toBalp(read, SOURCE, PATIENT), outcome: '5', action: 'X', grant: GRANT };
    expect(errors(broken).map((m) => m.location)).toEqual(expect.arrayContaining(['AuditEvent.outcome', 'AuditEvent.action', 'AuditEvent.grant']));
  });

  for (const [what, e, patient] of cases) {
    it(`is a valid R4 AuditEvent: ${what}`, () => {
      const r = toBalp(e, SOURCE, patient) as any;
      expect(errors(r)).toEqual([]);
      expect(r.recorded).toBe(e.time);
      expect(r.source.observer.identifier.value).toBe('vault-1');
      expect(r.source.site).toBe('St Elsewhere Radiology');
      // One requestor: the user, named by the principal id the node's own audit log uses.
      const requestors = r.agent.filter((a: any) => a.requestor);
      expect(requestors).toHaveLength(1);
      expect(requestors[0].who.identifier).toEqual({ system: PRINCIPAL_SYSTEM, value: e.principal.id });
    });
  }

  it('a grantee reading frames: PatientRead, the grant as the user agent policy, study, series, instance and patient entities', () => {
    const r = toBalp(read, SOURCE, PATIENT) as any;
    expect(r.meta.profile).toEqual([`${BALP_PROFILE}PatientRead`]);
    expect(r.type).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' });
    expect(r.subtype).toEqual([{ system: 'http://hl7.org/fhir/restful-interaction', code: 'read', display: 'read' }]);
    expect([r.action, r.outcome, r.outcomeDesc]).toEqual(['R', '0', undefined]);
    // Read: the client is the Destination Role ID (110152), the server the Source Role ID (110153).
    expect(agentOf(r, '110152')[0]).toMatchObject({ requestor: false, network: { address: '10.1.2.3', type: '2' } });
    expect(agentOf(r, '110153')[0]).toMatchObject({ who: { identifier: { value: 'vault-1' } }, network: { address: 'vault-1.example.org', type: '1' } });
    const user = agentOf(r, 'IRCP')[0];
    expect(user).toMatchObject({ requestor: true, name: 'Dr. Gregory House', policy: [`urn:uuid:${GRANT}`] });
    expect(user.network).toBeUndefined();
    expect(r.entity.map((x: any) => x.what.identifier?.value)).toEqual([`urn:oid:${STUDY}`, `urn:oid:${SERIES}`, `urn:oid:${SOP}`, 'PID-9']);
    expect(r.entity[0]).toMatchObject({
      what: { type: 'ImagingStudy', identifier: { system: 'urn:dicom:uid' } },
      type: { code: '2' },
      role: { code: '4' },
      detail: [{ valueString: 'frames' }],
    });
    expect(r.entity[3]).toEqual({
      what: { type: 'Patient', identifier: { system: 'urn:oid:1.2.840.113619.6.1', value: 'PID-9' }, display: 'Doe^Jane' },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
    });
    // Without a known patient the profile is plain Read and no patient entity is invented.
    const noPatient = toBalp(read, SOURCE) as any;
    expect(noPatient.meta.profile).toEqual([`${BALP_PROFILE}Read`]);
    expect(noPatient.entity.filter((x: any) => x.role.code === '1')).toEqual([]);
  });

  it('a search: PatientQuery (Query without a patient), client as Source Role ID, the raw request base64 in entity.query', () => {
    const r = toBalp(search, SOURCE, PATIENT) as any;
    expect(r.meta.profile).toEqual([`${BALP_PROFILE}PatientQuery`]);
    expect([r.action, r.subtype[0].code]).toEqual(['E', 'search-type']);
    expect(agentOf(r, '110153')[0].network.address).toBe('10.1.2.3');
    expect(agentOf(r, '110152')[0].who.identifier.value).toBe('vault-1');
    expect(agentOf(r, 'IRCP')[0].policy).toEqual(['urn:dicom-vault:policy:staff-policy']);
    const q = r.entity.find((x: any) => x.role.code === '24');
    expect(Buffer.from(q.query, 'base64').toString()).toBe(search.url);
    expect(q.description).toBe(`/dicom-web/studies/${STUDY}/series`);
    expect(q.what).toBeUndefined();
    expect((toBalp(searchAll, SOURCE) as any).meta.profile).toEqual([`${BALP_PROFILE}Query`]);
  });

  it('a STOW: PatientCreate, action C, the PACS as Source Role ID and informant', () => {
    const r = toBalp(store, SOURCE, PATIENT) as any;
    expect(r.meta.profile).toEqual([`${BALP_PROFILE}PatientCreate`]);
    expect([r.action, r.subtype[0].code]).toEqual(['C', 'create']);
    expect(agentOf(r, '110153')[0].network.address).toBe('10.1.2.3');
    expect(agentOf(r, 'INF')[0]).toMatchObject({
      requestor: true,
      who: { identifier: { value: 'user:pacs' } },
      policy: ['urn:dicom-vault:policy:role-ingest'],
    });
  });

  it('failures: the attempted operation with outcome 4 or 8 and why, and no BALP profile claimed (they fix outcome 0)', () => {
    const r = toBalp(refused, SOURCE, PATIENT) as any;
    expect([r.meta, r.action, r.outcome, r.outcomeDesc]).toEqual([undefined, 'R', '4', 'HTTP 403: access not granted']);
    expect(agentOf(r, 'IRCP')[0].who.identifier.value).toBe('user:clerk');
    expect(r.entity[0].what.identifier.value).toBe(`urn:oid:${STUDY}`);
    const auth = toBalp(unauthenticated, SOURCE) as any;
    expect([auth.type.code, auth.subtype[0].code, auth.action, auth.outcome, auth.outcomeDesc]).toEqual([
      '110114',
      '110122',
      'E',
      '4',
      'HTTP 401: caller not identified',
    ]);
    expect(auth.entity[0].what.identifier.value).toBe(`urn:oid:${STUDY}`);
    // What an unauthenticated search tried, as a query entity like a search's.
    const authSearch = toBalp(unauthenticatedSearch, SOURCE) as any;
    expect(Buffer.from(authSearch.entity.find((x: any) => x.role.code === '24').query, 'base64').toString()).toBe('/dicom-web/studies?PatientID=PID-9');
    const cut = toBalp(brokenOff, SOURCE, PATIENT) as any;
    expect([cut.meta, cut.outcome]).toEqual([undefined, '4']);
    expect(cut.outcomeDesc).toMatch(/^HTTP 200: response broken off before its end/);
    expect((toBalp(corrupt, SOURCE, PATIENT) as any).outcome).toBe('8');
  });

  it('several grants and own studies all appear as policies; a share link grant id that is not a UUID stays a URN', () => {
    const r = toBalp(event({ basis: `own studies, grant ${GRANT}, grant link-7` }), SOURCE, PATIENT) as any;
    expect(agentOf(r, 'IRCP')[0].policy).toEqual([`urn:uuid:${GRANT}`, 'urn:dicom-vault:grant:link-7', 'urn:dicom-vault:policy:own-studies']);
  });

  it('a bundle of them is a valid R4 collection', () => {
    const bundle = balpBundle(cases.map(([, e, p]) => toBalp(e, SOURCE, p)));
    expect(errors(bundle)).toEqual([]);
    expect((bundle as any).entry).toHaveLength(cases.length);
  });
});
