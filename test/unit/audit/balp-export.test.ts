// The log's entries as BALP AuditEvents: an access is completed by the outcome entry that points
// at it (how it ended decides AuditEvent.outcome), refusals and study versions become their
// patterns, entries BALP has no pattern for and entries that no longer open (erased) are left out.
import fhirPackage from 'fhir';
import { describe, expect, it } from 'vitest';
import { balpBundle } from '../../../src/audit/balp.ts';
import { balpOfEntries, type OpenedEntry } from '../../../src/audit/balp-export.ts';
import type { AuditRecord } from '../../../src/audit/entry.ts';

const { Fhir } = fhirPackage as unknown as {
  Fhir: new () => { validate(o: unknown, opts: object): { messages: Array<{ severity: string; location: string; message: string }> } };
};
const SOURCE = { sourceId: 'vault-1', host: 'vault-1.example.org' };
const STUDY = '1.2.826.0.1.3680043.8.498.7';
const who = { id: 'user:dr', roles: ['staff'], method: 'token', name: 'dr' };
const access: AuditRecord = {
  kind: 'access',
  who,
  what: { action: 'retrieve', study: STUDY, dataType: 'frames' },
  where: { address: '10.0.0.9', method: 'GET', url: `/dicom-web/studies/${STUDY}/frames/1` },
  why: 'staff policy',
};
const entry = (index: number, record: AuditRecord | undefined): OpenedEntry => ({ index, time: Date.UTC(2027, 0, 1, 0, 0, index), record });

describe('BALP from log entries', () => {
  it('completes each access with its outcome, and keeps only what BALP has a pattern for', () => {
    const entries = [
      entry(0, access),
      entry(1, { ...access, kind: 'outcome', ref: 0, what: { ...access.what, status: 200, complete: false, bytes: 100 } }),
      entry(2, access),
      entry(3, { ...access, kind: 'outcome', ref: 2, what: { ...access.what, status: 500, complete: true } }),
      entry(4, access), // its outcome not written (yet): served
      entry(5, {
        kind: 'refused',
        who: { id: 'unidentified' },
        what: { action: 'search', status: 401 },
        where: { address: '10.0.0.9', method: 'GET', url: '/dicom-web/studies' },
        why: 'unknown token',
      }),
      entry(6, { kind: 'version', who: { id: 'ae:MODALITY', method: 'dimse' }, what: { action: 'store', study: STUDY, version: 2, source: 'dimse' } }),
      entry(7, { kind: 'grant', who: { id: 'patient:p' }, what: { action: 'grant added' } }),
      entry(8, undefined), // erased: no longer opens
      entry(9, { ...access, what: { ...access.what, action: 'store' }, where: { address: '10.0.0.9', method: 'POST', url: '/dicom-web/studies' } }),
      entry(10, { ...access, kind: 'outcome', ref: 9, what: { action: 'store', status: 200, complete: true } }),
    ];
    const patients = { [STUDY]: { id: 'PID-7', issuer: null } };
    const rs = balpOfEntries(entries, SOURCE, { patientOf: (s) => patients[s as keyof typeof patients] }) as any[];
    expect(rs.map((r) => [r.action, r.outcome, r.outcomeDesc ?? null])).toEqual([
      ['R', '4', 'HTTP 200: response broken off before its end: staff policy'],
      ['R', '8', 'HTTP 500: staff policy'],
      ['R', '0', null],
      ['E', '4', 'HTTP 401: caller not identified: unknown token'],
      ['C', '0', null],
    ]);
    expect(rs[4].agent.find((a: any) => a.requestor).who.identifier.value).toBe('ae:MODALITY');
    expect(rs[4].entity.find((x: any) => x.role.code === '1').what.identifier.value).toBe('PID-7');
    expect(rs.every((r) => r.recorded.startsWith('2027-01-01T00:00:'))).toBe(true);
    const errors = new Fhir()
      .validate(balpBundle(rs, { next: '/api/audit/balp?before=0' }), { errorOnUnexpected: true })
      .messages.filter((m) => m.severity === 'error');
    expect(errors).toEqual([]);
  });
});
