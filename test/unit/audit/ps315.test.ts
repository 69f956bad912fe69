// The DICOM PS3.15 A.5 audit messages, read back by another XML parser and checked against the
// rules of the A.5.1 schema (test/support/audit-messages.ts): each kind of access gives the
// message A.5.3 defines for it, with the roles, the study, series, instance and patient in the
// places an ATNA repository indexes; hostile names and URLs travel escaped; the RFC 5424 frame
// carries what IHE ITI-20 asks.
import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../../src/access/policy.ts';
import type { AuditPatient, AuditSource } from '../../../src/audit/event-kind.ts';
import { toPs315 } from '../../../src/audit/ps315.ts';
import { syslogMessage } from '../../../src/audit/syslog.ts';
import { parseAuditMessage, parseSyslog5424 } from '../../support/audit-messages.ts';

const SOURCE: AuditSource = { sourceId: 'vault-1', host: 'vault-1.example.org', enterpriseSiteId: 'St Elsewhere Radiology' };
const PATIENT: AuditPatient = { id: 'PID-9', issuer: '1.2.840.113619.6.1', name: 'Doe^Jane' };
const STUDY = '1.2.826.0.1.3680043.8.498.1';
const SERIES = `${STUDY}.2`;
const SOP = `${STUDY}.2.3`;

function event(over: { [K in keyof AuditEvent]?: AuditEvent[K] | undefined }): AuditEvent {
  return {
    time: '2027-05-01T09:30:00.123Z',
    principal: { id: 'user:dr.house', roles: ['grantee'], method: 'token', name: 'dr.house' },
    resource: { action: 'retrieve', level: 'instance', studyInstanceUID: STUDY, seriesInstanceUID: SERIES, sopInstanceUID: SOP, dataType: 'dicom' },
    method: 'GET',
    url: `/dicom-web/studies/${STUDY}/series/${SERIES}/instances/${SOP}`,
    status: 200,
    complete: true,
    remoteAddress: '10.1.2.3',
    basis: 'grant 0b6f6a7e-1111-4222-8333-944445555666',
    ...over,
  } as AuditEvent;
}

function read(e: AuditEvent, patient?: AuditPatient) {
  const { message, problems } = parseAuditMessage(toPs315(e, SOURCE, patient));
  expect(problems).toEqual([]);
  return message;
}

const role = (m: ReturnType<typeof read>, userId: string) => m.participants.find((p) => p.userId === userId)!;

describe('PS3.15 A.5 audit messages', () => {
  it('the schema check is awake: it names children out of order, a bad outcome, a coded value without its meaning', () => {
    const xml = toPs315(event({}), SOURCE, PATIENT)
      .replace('EventOutcomeIndicator="0"', 'EventOutcomeIndicator="3"')
      .replace(/ originalText="DICOM Instances Transferred"/, '')
      .replace(/(<ActiveParticipant UserID="vault-1".*?<\/ActiveParticipant>)(<AuditSourceIdentification.*?<\/AuditSourceIdentification>)/, '$2$1');
    const { problems } = parseAuditMessage(xml);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^AuditMessage children out of the schema's order/),
        expect.stringMatching(/^EventOutcomeIndicator is "3"/),
        expect.stringMatching(/^EventID: a coded value needs/),
      ]),
    );
  });

  it('a WADO retrieval: DICOM Instances Transferred (110104, R), the node the source, the caller the destination; study, series, instance, patient', () => {
    const m = read(event({}), PATIENT);
    expect([m.eventId, m.action, m.outcome, m.outcomeDescription, m.time]).toEqual([
      { code: '110104', system: 'DCM', text: 'DICOM Instances Transferred' },
      'R',
      '0',
      undefined,
      '2027-05-01T09:30:00.123Z',
    ]);
    expect(role(m, 'user:dr.house')).toMatchObject({ requestor: true, userName: 'dr.house', address: '10.1.2.3', addressType: '2', roles: ['110152'] });
    expect(role(m, 'vault-1')).toMatchObject({ requestor: false, address: 'vault-1.example.org', addressType: '1', roles: ['110153'] });
    expect(m.source).toEqual({ id: 'vault-1', site: 'St Elsewhere Radiology', types: ['4'] });
    const [study, patient] = m.objects;
    expect(study).toMatchObject({ id: STUDY, typeCode: '2', role: '3', lifeCycle: '6', idType: { code: '110180', system: 'DCM', text: 'Study Instance UID' } });
    expect(study!.details).toEqual({ SeriesInstanceUID: SERIES, DataType: 'dicom' });
    expect(study!.instances).toEqual([SOP]);
    expect(patient).toMatchObject({
      id: 'PID-9^^^&1.2.840.113619.6.1&ISO',
      typeCode: '1',
      role: '1',
      name: 'Doe^Jane',
      idType: { code: '2', text: 'Patient Number' },
    });
  });

  it('a patient with an issuer that is no OID, or none, is named as HL7 CX all the same', () => {
    expect(read(event({}), { id: 'MRN-77', issuer: 'St Elsewhere' }).objects[1]!.id).toBe('MRN-77^^^St Elsewhere');
    expect(read(event({}), { id: 'X1', issuer: null }).objects[1]!.id).toBe('X1');
    expect(read(event({})).objects.map((o) => o.idType.code)).toEqual(['110180']);
  });

  it('an anchor receipt: DICOM Instances Accessed (110103, R)', () => {
    const m = read(
      event({ resource: { action: 'retrieve', level: 'study', studyInstanceUID: STUDY, dataType: 'receipt' }, url: `/dicom-web/studies/${STUDY}/receipt` }),
    );
    expect([m.eventId.code, m.action]).toEqual(['110103', 'R']);
    expect(m.participants.flatMap((p) => p.roles)).toEqual([]);
  });

  it('a QIDO search: Query (110112, E), the caller the source; the request exactly as sent, base64, under the Study Root FIND SOP Class', () => {
    const url = `/dicom-web/studies?PatientName=${encodeURIComponent('<Doe>*')}&00100020=PID-9`;
    const m = read(event({ resource: { action: 'search', level: 'studies' }, url, basis: 'staff policy' }));
    expect([m.eventId.code, m.action]).toEqual(['110112', 'E']);
    expect(role(m, 'user:dr.house').roles).toEqual(['110153']);
    expect(role(m, 'vault-1').roles).toEqual(['110152']);
    expect(m.objects).toEqual([
      {
        id: '1.2.840.10008.5.1.4.1.2.2.1',
        typeCode: '2',
        role: '3',
        idType: { code: '110181', system: 'DCM', text: 'SOP Class UID' },
        query: url,
        details: { QueryEncoding: 'UTF-8' },
        instances: [],
      },
    ]);
  });

  it('a STOW: DICOM Instances Transferred (110104, C), the caller the source, the study created', () => {
    const m = read(
      event({ resource: { action: 'store', level: 'study', studyInstanceUID: STUDY }, method: 'POST', url: `/dicom-web/studies/${STUDY}` }),
      PATIENT,
    );
    expect([m.eventId.code, m.action]).toEqual(['110104', 'C']);
    expect(role(m, 'user:dr.house').roles).toEqual(['110153']);
    expect(m.objects[0]).toMatchObject({ id: STUDY, lifeCycle: '1' });
  });

  it('a refusal: Security Alert (110113) / Use of Restricted Function (110132), minor failure, with who and which study', () => {
    const m = read(event({ status: 403, basis: undefined, principal: { id: 'user:clerk', roles: ['admin'], method: 'token' } }), PATIENT);
    expect([m.eventId.code, m.typeCodes.map((c) => c.code), m.action, m.outcome, m.outcomeDescription]).toEqual([
      '110113',
      ['110132'],
      'E',
      '4',
      'HTTP 403: access not granted',
    ]);
    expect(role(m, 'user:clerk').requestor).toBe(true);
    expect(m.objects.map((o) => o.id)).toEqual([STUDY, 'PID-9^^^&1.2.840.113619.6.1&ISO']);
  });

  it('a failed authentication: User Authentication (110114) / Login (110122), minor failure, from where', () => {
    const m = read(event({ status: 401, basis: undefined, principal: { id: 'unidentified', roles: [], method: 'none' } }));
    expect([m.eventId.code, m.typeCodes.map((c) => c.code), m.outcome, m.outcomeDescription]).toEqual([
      '110114',
      ['110122'],
      '4',
      'HTTP 401: caller not identified',
    ]);
    expect(role(m, 'unidentified')).toMatchObject({ requestor: true, address: '10.1.2.3' });
    expect(m.objects[0]!.id).toBe(STUDY);
    // A refused or unauthenticated search names what it tried, as a query does.
    const url = '/dicom-web/studies?PatientID=PID-9';
    const search = read(event({ status: 403, basis: undefined, resource: { action: 'search', level: 'studies' }, url }));
    expect([search.eventId.code, search.objects[0]!.query]).toEqual(['110113', url]);
  });

  it('broken off: minor failure that says so; the node failing: serious failure', () => {
    expect(read(event({ complete: false })).outcomeDescription).toBe(
      'HTTP 200: response broken off before its end: grant 0b6f6a7e-1111-4222-8333-944445555666',
    );
    expect(read(event({ status: 500, complete: false })).outcome).toBe('8');
  });

  it('hostile names and URLs travel escaped and come back as sent (less what XML 1.0 cannot carry)', () => {
    const name = `<x a="1">&amp; ]]> 'quote' \u0001bell\ttab\nline \ud800lone surrogate \u{1F600}`;
    const url = `/dicom-web/studies?PatientName=</AuditMessage>&x="]]>`;
    const m = read(event({ principal: { id: 'user:<evil>', roles: ['staff'], method: 'token', name }, resource: { action: 'search', level: 'studies' }, url }));
    expect(role(m, 'user:<evil>').userName).toBe(name.replace('\u0001', '').replace('\ud800', ''));
    expect(m.objects[0]!.query).toBe(url);
  });

  it('the RFC 5424 frame: PRI 85 (authpriv.notice), version 1, MSGID IHE+RFC-3881, the XML after a BOM', () => {
    const xml = toPs315(event({}), SOURCE, PATIENT);
    const line = syslogMessage(xml, '2027-05-01T09:30:00.123Z', 'vault 1.example.org').toString('utf8');
    const f = parseSyslog5424(line);
    expect([f.pri, f.version, f.timestamp, f.host, f.app, f.procId, f.msgId, f.sd]).toEqual([
      85,
      '1',
      '2027-05-01T09:30:00.123Z',
      'vault1.example.org',
      'dicom-vault',
      String(process.pid),
      'IHE+RFC-3881',
      '-',
    ]);
    expect(f.msg).toBe(`\uFEFF${xml}`);
    expect(line).not.toContain('\n');
  });
});
