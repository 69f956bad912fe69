// DICOM PS3.15 Annex A.5 audit messages: what an IHE ATNA audit record repository (and the
// hospital's security officer behind it) expects from a node that holds images. One message per
// access through the access seam:
//   a retrieval of instances, frames, bulk data, metadata or renderings   DICOM Instances Transferred (110104), R
//   a STOW of instances                                                   DICOM Instances Transferred (110104), C
//   a read of a study's anchor receipt                                    DICOM Instances Accessed (110103), R
//   a QIDO search                                                         Query (110112), E
//   a failed authentication (401)                                         User Authentication (110114) / Login, failure
//   a refusal (403)                                                       Security Alert (110113) / Use of Restricted Function
// A failed or broken-off request keeps its kind with EventOutcomeIndicator 4 (8 for the node's
// own faults) and says why in EventOutcomeDescription. Participant objects: the study (110180
// Study Instance UID, with the series and instance the request named), and the patient (Patient
// Number, as an HL7 CX) when the catalog knows the study. Extensions (A.5 b): the two failure
// messages also carry the study and patient the request named, so that "who tried to reach this
// study" is one query in the repository.
// Built with xmlbuilder2, which escapes attribute values and text (names, URLs and reasons come
// from callers) and here drops characters XML 1.0 cannot carry. One quirk is undone: it leaves an
// `&` that starts something entity-like (`&amp;`, `&lt;`) as it is, so a name sent as `A&amp;B`
// would reach the repository as `A&B`; every `&` is escaped before it gets the value, so what a
// caller sent arrives exactly.
import { create } from 'xmlbuilder2';
import type { XMLBuilder } from 'xmlbuilder2/lib/interfaces.js';
import type { AuditEvent } from '../access/policy.ts';
import { type AuditPatient, type AuditSource, auditKind, outcomeDescription, outcomeOf, patientCx } from './event-kind.ts';

interface Coded {
  code: string;
  system: string;
  text: string;
}

const DCM = (code: string, text: string): Coded => ({ code, system: 'DCM', text });

export const PS315 = {
  instancesAccessed: DCM('110103', 'DICOM Instances Accessed'),
  instancesTransferred: DCM('110104', 'DICOM Instances Transferred'),
  query: DCM('110112', 'Query'),
  securityAlert: DCM('110113', 'Security Alert'),
  userAuthentication: DCM('110114', 'User Authentication'),
  login: DCM('110122', 'Login'),
  useOfRestrictedFunction: DCM('110132', 'Use of Restricted Function'),
  sourceRole: DCM('110153', 'Source Role ID'),
  destinationRole: DCM('110152', 'Destination Role ID'),
  studyInstanceUid: DCM('110180', 'Study Instance UID'),
  sopClassUid: DCM('110181', 'SOP Class UID'),
  patientNumber: { code: '2', system: 'RFC-3881', text: 'Patient Number' } satisfies Coded,
} as const;

/** The Study Root Query/Retrieve Information Model - FIND SOP Class: what a QIDO-RS search is the web form of. */
const STUDY_ROOT_FIND = '1.2.840.10008.5.1.4.1.2.2.1';

/** A value for xmlbuilder2: see the header on `&`. */
function x(s: string): string {
  return s.replace(/&/g, '&amp;');
}

/** Attributes for xmlbuilder2, each value as x() makes it. */
function a(attributes: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, x(v)]));
}

function coded(parent: XMLBuilder, name: string, c: Coded): void {
  parent.ele(name, a({ 'csd-code': c.code, codeSystemName: c.system, originalText: c.text })).up();
}

/** The PS3.15 A.5 audit message (XML, UTF-8, no declaration: it travels as a syslog MSG) for one access. */
export function toPs315(event: AuditEvent, source: AuditSource, patient?: AuditPatient): string {
  const kind = auditKind(event);
  const r = event.resource;
  const doc = create({ invalidCharReplacement: '' }).ele('AuditMessage');

  const [eventId, action, typeCode] =
    kind === 'authentication-failed'
      ? [PS315.userAuthentication, 'E', PS315.login]
      : kind === 'refused'
        ? [PS315.securityAlert, 'E', PS315.useOfRestrictedFunction]
        : kind === 'query'
          ? [PS315.query, 'E', undefined]
          : kind === 'transfer-in'
            ? [PS315.instancesTransferred, 'C', undefined]
            : kind === 'read'
              ? [PS315.instancesAccessed, 'R', undefined]
              : [PS315.instancesTransferred, 'R', undefined];
  const ev = doc.ele('EventIdentification', a({ EventActionCode: action, EventDateTime: event.time, EventOutcomeIndicator: outcomeOf(event) }));
  coded(ev, 'EventID', eventId);
  if (typeCode !== undefined) coded(ev, 'EventTypeCode', typeCode);
  const description = outcomeDescription(event);
  if (description !== undefined) ev.ele('EventOutcomeDescription').txt(x(description)).up();

  // The caller, and the node. Roles as A.5.3 gives them: for a query and a store the caller is
  // the source (the request flows to the node); for a transfer out the node is the source.
  const caller = doc.ele(
    'ActiveParticipant',
    a({
      UserID: event.principal.id,
      ...(event.principal.name !== undefined ? { UserName: event.principal.name } : {}),
      UserIsRequestor: 'true',
      ...(event.remoteAddress !== '' ? { NetworkAccessPointID: event.remoteAddress, NetworkAccessPointTypeCode: '2' } : {}),
    }),
  );
  const node = doc.ele(
    'ActiveParticipant',
    a({
      UserID: source.sourceId,
      AlternativeUserID: String(process.pid),
      UserIsRequestor: 'false',
      NetworkAccessPointID: source.host,
      NetworkAccessPointTypeCode: '1',
    }),
  );
  if (kind === 'query' || kind === 'transfer-in') {
    coded(caller, 'RoleIDCode', PS315.sourceRole);
    coded(node, 'RoleIDCode', PS315.destinationRole);
  } else if (kind === 'transfer-out') {
    coded(caller, 'RoleIDCode', PS315.destinationRole);
    coded(node, 'RoleIDCode', PS315.sourceRole);
  }

  const asi = doc.ele(
    'AuditSourceIdentification',
    a({
      ...(source.enterpriseSiteId !== undefined ? { AuditEnterpriseSiteID: source.enterpriseSiteId } : {}),
      AuditSourceID: source.sourceId,
    }),
  );
  asi.ele('AuditSourceTypeCode', a({ 'csd-code': '4' })).up(); // application server process

  if (kind === 'query') {
    // The query as sent (base64, so that a hostile query survives unchanged), under the SOP Class it is the web form of.
    const q = doc.ele(
      'ParticipantObjectIdentification',
      a({
        ParticipantObjectID: STUDY_ROOT_FIND,
        ParticipantObjectTypeCode: '2',
        ParticipantObjectTypeCodeRole: '3',
      }),
    );
    coded(q, 'ParticipantObjectIDTypeCode', PS315.sopClassUid);
    q.ele('ParticipantObjectQuery').txt(Buffer.from(event.url, 'utf8').toString('base64')).up();
    q.ele('ParticipantObjectDetail', a({ type: 'QueryEncoding', value: Buffer.from('UTF-8').toString('base64') })).up();
  }
  if (r.studyInstanceUID !== undefined) {
    const study = doc.ele(
      'ParticipantObjectIdentification',
      a({
        ParticipantObjectID: r.studyInstanceUID,
        ParticipantObjectTypeCode: '2',
        ParticipantObjectTypeCodeRole: '3',
        ...(kind === 'transfer-in'
          ? { ParticipantObjectDataLifeCycle: '1' }
          : kind === 'transfer-out' || kind === 'read'
            ? { ParticipantObjectDataLifeCycle: '6' }
            : {}),
      }),
    );
    coded(study, 'ParticipantObjectIDTypeCode', PS315.studyInstanceUid);
    if (r.seriesInstanceUID !== undefined) {
      study.ele('ParticipantObjectDetail', a({ type: 'SeriesInstanceUID', value: Buffer.from(r.seriesInstanceUID).toString('base64') })).up();
    }
    if (r.dataType !== undefined) study.ele('ParticipantObjectDetail', a({ type: 'DataType', value: Buffer.from(r.dataType).toString('base64') })).up();
    if (r.sopInstanceUID !== undefined) {
      // The SOP Class is not known at the seam (the catalog has it); Instance names the one object.
      study
        .ele('ParticipantObjectDescription')
        .ele('SOPClass', a({ NumberOfInstances: '1' }))
        .ele('Instance', a({ UID: r.sopInstanceUID }))
        .up()
        .up()
        .up();
    }
  }
  if (patient !== undefined) {
    const p = doc.ele(
      'ParticipantObjectIdentification',
      a({
        ParticipantObjectID: patientCx(patient),
        ParticipantObjectTypeCode: '1',
        ParticipantObjectTypeCodeRole: '1',
      }),
    );
    coded(p, 'ParticipantObjectIDTypeCode', PS315.patientNumber);
    if (patient.name !== undefined) p.ele('ParticipantObjectName').txt(x(patient.name)).up();
  }
  return doc.end({ prettyPrint: false, headless: true });
}
