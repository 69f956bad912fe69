// The FHIR R4 Consent export, validated against the R4 structure definitions and value sets that
// FHIR.js carries (cardinalities, types, required bindings, unexpected properties), plus the
// Consent invariants FHIR.js does not evaluate (ppc-1, ppc-2, dom-3). And what a third party does
// with an export: decode the attached statement and check the patient's signature.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fhirPackage from 'fhir';
import { afterAll, describe, expect, it } from 'vitest';
import { canonicalBytes } from '../../../src/grants/canonical.ts';
import { consentBundle, DATA_TYPE_SYSTEM, GRANT_POLICY, grantToConsent, SERIES_EXTENSION } from '../../../src/grants/fhir.ts';
import type { GrantRecord, GrantStatement } from '../../../src/grants/model.ts';
import { createKeyFile, ed25519Verifies, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement, type GrantRequest, parseGrantee } from '../../../src/grants/statement.ts';

const { Fhir } = fhirPackage as unknown as {
  Fhir: new () => { validate(o: unknown, opts: object): { valid: boolean; messages: Array<{ location: string; severity: string; message: string }> } };
};
const fhir = new Fhir();

const dir = mkdtempSync(join(tmpdir(), 'dicom-vault-fhir-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const made = createKeyFile(join(dir, 'k.pem'), { account: 'acct', node: 'node-1' });
const key = readKeyFile(join(dir, 'k.pem'));
const NOW = new Date('2027-05-01T09:30:00Z');

function record(request: Partial<GrantRequest>, revoked = false): GrantRecord {
  const statement: GrantStatement = draftStatement(
    {
      nodeId: 'node-1',
      account: 'acct',
      patientIds: [
        { id: 'PID-9', issuer: '1.2.840.113619.6.1' },
        { id: 'MRN-77', issuer: 'St Elsewhere' },
        { id: 'X1', issuer: null },
      ],
      now: NOW,
    },
    { grantee: parseGrantee('user:dr.house'), ...request },
  );
  return {
    statement,
    proof: signStatement(statement, key),
    revokedAt: revoked ? '2027-05-02T00:00:00.000Z' : null,
    revokedBy: revoked ? 'patient:acct' : null,
  };
}

const records: Array<[string, GrantRecord, 'active' | 'revoked' | 'expired' | 'pending']> = [
  [
    'a user, two studies, images and reports, for a week',
    record({ studies: ['1.2.3.4', '1.2.3.5'], dataTypes: ['images', 'reports'], notAfter: new Date('2027-05-08T00:00:00Z') }),
    'active',
  ],
  ['one series of a study, download too', record({ series: [{ study: '1.2.3.4', series: '1.2.3.4.7' }], actions: ['search', 'view', 'download'] }), 'active'],
  [
    'an OpenID subject, CT and MR only, key images',
    record({ grantee: parseGrantee('oidc:https://idp.example.org/realms/h#abc-123'), modalities: ['CT', 'MR'], dataTypes: ['key-images'] }),
    'pending',
  ],
  ['a share link, until revoked, revoked', record({ grantee: { kind: 'link' }, notAfter: null, dataTypes: ['metadata'] }, true), 'revoked'],
];

function validate(resource: unknown): Array<{ location: string; severity: string; message: string }> {
  return fhir.validate(resource, { errorOnUnexpected: true }).messages;
}

describe('FHIR R4 Consent export', () => {
  it('the validator is awake: it flags a Consent with a status outside its value set, a missing scope, an unknown field', () => {
    const c = grantToConsent(records[0]![1], 'active');
    const broken = { ...c, status: 'approved', scope: undefined, grantId: 'x' };
    const messages = validate(JSON.parse(JSON.stringify(broken)));
    expect(messages.filter((m) => m.severity === 'error').map((m) => m.location)).toEqual(
      expect.arrayContaining(['Consent.status', 'Consent.scope', 'Consent.grantId']),
    );
  });

  for (const [what, r, status] of records) {
    it(`is a valid R4 Consent: ${what}`, () => {
      const c = grantToConsent(r, status);
      const messages = validate(c);
      expect(messages.filter((m) => m.severity === 'error')).toEqual([]);
      // Beyond errors, FHIR.js only says that it lacks two value sets (mimetypes; consent-content-code,
      // an *example* binding where any code is allowed) and so cannot find our codes in the latter.
      // Every element with a required or extensible binding (status, scope, category, provision.type,
      // action, actor.role, class) passes without a word.
      for (const m of messages) {
        const lacking =
          m.severity === 'info' && /^Value set "http:\/\/hl7\.org\/fhir\/ValueSet\/(mimetypes|consent-content-code)" could not be found\.$/.test(m.message);
        const exampleBinding = m.severity === 'warning' && /^Consent\.provision\.code\[\d+\]$/.test(m.location);
        expect(lacking || exampleBinding, JSON.stringify(m)).toBe(true);
      }
      const consent = c as any;
      // ppc-1: a policy or a policy rule; ppc-2: a privacy consent names its patient; dom-3: the contained Patient is referenced.
      expect(consent.policy ?? consent.policyRule).toBeDefined();
      expect(consent.scope.coding[0]).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' });
      expect(consent.patient.reference).toBe(`#${consent.contained[0].id}`);
      expect(consent.category[0].coding[0]).toMatchObject({ system: 'http://loinc.org', code: '59284-0' });
      expect(consent.status).toBe(status === 'revoked' || status === 'expired' ? 'inactive' : 'active');
      expect(consent.provision.type).toBe('permit');
      expect(consent.provision.actor[0].role.coding[0]).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' });
      expect(consent.provision.period.start).toBe(r.statement.notBefore);
      expect(consent.provision.period.end).toBe(r.statement.notAfter ?? undefined);
      expect(consent.policy[0].uri).toBe(GRANT_POLICY);
    });
  }

  it('says what, for whom and which studies in codes a consent registry reads', () => {
    const [one, two, three] = records.map(([, r, s]) => grantToConsent(r, s) as any);
    expect(one.provision.data).toEqual([
      { meaning: 'instance', reference: { type: 'ImagingStudy', identifier: { system: 'urn:dicom:uid', value: 'urn:oid:1.2.3.4' } } },
      { meaning: 'instance', reference: { type: 'ImagingStudy', identifier: { system: 'urn:dicom:uid', value: 'urn:oid:1.2.3.5' } } },
    ]);
    expect(one.provision.class).toEqual([
      { system: 'http://hl7.org/fhir/resource-types', code: 'ImagingStudy' },
      { system: 'http://hl7.org/fhir/resource-types', code: 'DiagnosticReport' },
    ]);
    expect(one.provision.code[0].coding).toEqual([
      { system: DATA_TYPE_SYSTEM, code: 'images' },
      { system: DATA_TYPE_SYSTEM, code: 'reports' },
    ]);
    expect(one.provision.action.map((a: any) => a.coding[0].code)).toEqual(['access']);
    expect(one.provision.actor[0].reference).toMatchObject({ identifier: { system: 'urn:dicom-vault:user', value: 'dr.house' } });
    expect(one.contained[0].identifier).toEqual([
      { system: 'urn:oid:1.2.840.113619.6.1', value: 'PID-9' },
      { value: 'MRN-77', assigner: { display: 'St Elsewhere' } },
      { value: 'X1' },
    ]);
    expect(two.provision.data[0].extension).toEqual([{ url: SERIES_EXTENSION, valueIdentifier: { system: 'urn:dicom:uid', value: 'urn:oid:1.2.3.4.7' } }]);
    expect(two.provision.action.map((a: any) => a.coding[0].code)).toEqual(['access', 'use']);
    expect(three.provision.code.slice(1)).toEqual([
      { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'CT' }] },
      { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'MR' }] },
    ]);
    expect(three.provision.actor[0].reference.identifier).toEqual({ system: 'https://idp.example.org/realms/h', value: 'abc-123' });
  });

  it('carries the signed statement, so a third party can check the patient signature without the node', () => {
    const r = records[1]![1];
    const c = grantToConsent(r, 'active') as any;
    expect(c.sourceAttachment.contentType).toBe('application/json');
    const carried = JSON.parse(Buffer.from(c.sourceAttachment.data, 'base64').toString('utf8'));
    expect(ed25519Verifies(canonicalBytes(carried.statement), carried.proof.signature, made.publicKeyPem)).toBe(true);
    expect(ed25519Verifies(canonicalBytes({ ...carried.statement, scope: {} }), carried.proof.signature, made.publicKeyPem)).toBe(false);
  });

  it('is a valid R4 Bundle (collection) of them', () => {
    const bundle = consentBundle(
      records.map(([, record, status]) => ({ record, status })),
      NOW,
    ) as any;
    expect(validate(bundle).filter((m) => m.severity === 'error')).toEqual([]);
    expect(bundle.type).toBe('collection');
    expect(bundle.entry).toHaveLength(4);
    expect(bundle.entry.map((e: any) => e.fullUrl)).toEqual(records.map(([, r]) => `urn:uuid:${r.statement.id}`));
  });
});
