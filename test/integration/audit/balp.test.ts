// The BALP export of what a real node records (issue 24, item 5): the AuditEvents the access seam
// hands its sink for a STOW, a read, a search, a refusal and a failed authentication, with the
// patient looked up in the node's catalog, become FHIR R4 AuditEvents that FHIR.js validates and
// that say the same as the PS3.15 messages of the same accesses.
import fhirPackage from 'fhir';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import type { AuditEvent } from '../../../src/access/policy.ts';
import { BALP_PROFILE, balpBundle, toBalp } from '../../../src/audit/balp.ts';
import type { AuditSource } from '../../../src/audit/event-kind.ts';
import { catalogPatients } from '../../../src/audit/patients.ts';
import { toPs315 } from '../../../src/audit/ps315.ts';
import { parseAuditMessage } from '../../support/audit-messages.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const { Fhir } = fhirPackage as unknown as {
  Fhir: new () => { validate(o: unknown, opts: object): { messages: Array<{ severity: string; location: string }> } };
};
const fhir = new Fhir();
const SOURCE: AuditSource = { sourceId: 'vault-balp', host: 'localhost' };

let node: TestNode;
const events: AuditEvent[] = [];
const s = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: 2403, patientId: 'PAT-BALP' });

beforeAll(async () => {
  node = await startTestNode({ audit: { record: (e) => events.push(e) } });
  expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)), { study: s.studyInstanceUID })).status).toBe(200);
  const inst = s.instances[0]!;
  const base = `${node.url}/studies/${s.studyInstanceUID}`;
  expect(
    (
      await fetch(`${base}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}/frames/1`, {
        headers: { accept: 'multipart/related; type="application/octet-stream"' },
      })
    ).status,
  ).toBe(200);
  expect((await fetch(`${base}/series`, { headers: { accept: 'application/dicom+json' } })).status).toBe(200);
  const clerk = node.vault.identity.addUser('clerk', ['admin']).token;
  expect((await fetch(`${base}/metadata`, { headers: { authorization: `Bearer ${clerk}` } })).status).toBe(403);
  expect((await fetch(`${base}/metadata`, { headers: { authorization: 'Bearer nope' } })).status).toBe(401);
  // Recorded when each response closes.
  for (let i = 0; i < 50 && events.length < 5; i++) await new Promise((r) => setTimeout(r, 20));
}, 60_000);

afterAll(async () => {
  await node?.stop();
});

describe('BALP from a real node', () => {
  it('every access recorded becomes a valid R4 AuditEvent of the right pattern, with the patient from the catalog', () => {
    expect(events.map((e) => [e.resource.action, e.status])).toEqual([
      ['store', 200],
      ['retrieve', 200],
      ['search', 200],
      ['retrieve', 403],
      ['retrieve', 401],
    ]);
    const patientOf = catalogPatients(node.vault.catalog);
    const resources = events.map((e) => toBalp(e, SOURCE, patientOf(s.studyInstanceUID)) as any);
    const errors = fhir.validate(balpBundle(resources), { errorOnUnexpected: true }).messages.filter((m) => m.severity === 'error');
    expect(errors).toEqual([]);
    expect(resources.map((r) => [r.meta?.profile[0]?.slice(BALP_PROFILE.length), r.action, r.outcome])).toEqual([
      ['PatientCreate', 'C', '0'],
      ['PatientRead', 'R', '0'],
      ['PatientQuery', 'E', '0'],
      [undefined, 'R', '4'],
      [undefined, 'E', '4'],
    ]);
    for (const r of resources) {
      expect(r.entity.find((x: any) => x.role.code === '1').what.identifier.value).toBe('PAT-BALP');
      expect(r.entity.find((x: any) => x.what?.type === 'ImagingStudy').what.identifier.value).toBe(`urn:oid:${s.studyInstanceUID}`);
    }
    expect(resources.map((r) => r.agent.find((a: any) => a.requestor).who.identifier.value)).toEqual([
      'user:tester',
      'user:tester',
      'user:tester',
      'user:clerk',
      'unidentified',
    ]);
    expect(resources[1].agent.find((a: any) => a.requestor).policy).toEqual(['urn:dicom-vault:policy:staff-policy']);
  });

  it('says the same as the PS3.15 message of each access: outcome, action, user, study', () => {
    const patientOf = catalogPatients(node.vault.catalog);
    for (const e of events) {
      const r = toBalp(e, SOURCE, patientOf(s.studyInstanceUID)) as any;
      const { message, problems } = parseAuditMessage(toPs315(e, SOURCE, patientOf(s.studyInstanceUID)));
      expect(problems).toEqual([]);
      expect(message.outcome).toBe(r.outcome);
      expect(message.participants.find((p) => p.requestor)!.userId).toBe(r.agent.find((a: any) => a.requestor).who.identifier.value);
      expect(message.objects.find((o) => o.idType.code === '110180')!.id).toBe(s.studyInstanceUID);
      expect(message.objects.find((o) => o.idType.code === '2')!.id).toBe('PAT-BALP');
      // A refusal is a Security Alert (E) in PS3.15, the attempted read (R) in BALP; everything else agrees.
      if (e.status !== 403) expect(message.action).toBe(r.action);
    }
  });
});
