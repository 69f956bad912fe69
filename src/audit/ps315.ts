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
//
// Serialized by hand (a tree of elements, escaped text and attributes) rather than with an npm XML
// builder, because the two well-kept ones cost far more than the request being audited, on the
// serving thread: xmlbuilder2 4.0.3 takes ~460 µs per message (DOM-based; its callback API ~480
// µs) and fast-xml-parser 5.12.1's XMLBuilder ~105 µs, where this takes a few µs. Both also alter
// what they are given: xmlbuilder2 leaves an `&` that starts something entity-like (`&amp;`)
// unescaped, so `A&amp;B` arrives as `A&B`; fast-xml-parser writes the attribute value "true" as a
// bare attribute name, which is not XML. The schema is fixed and small; the tests read every
// message back with an independent parser and check it against the A.5.1 rules.
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

/** An element: its name, attributes (absent values left out), children or text. */
interface El {
  name: string;
  attrs?: Record<string, string | undefined>;
  children?: El[];
  text?: string;
}

/** Characters XML 1.0 cannot carry at all (C0 controls but tab, LF, CR; lone surrogates; U+FFFE/FFFF): dropped. */
const NOT_XML = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;', '\t': '&#9;', '\n': '&#10;', '\r': '&#13;' };

/** Text or an attribute value, escaped; tab, LF and CR as references so that attribute normalization keeps them and the message stays one line. */
function xmlEscape(s: string): string {
  return s.replace(NOT_XML, '').replace(/[&<>"'\t\n\r]/g, (c) => ESCAPES[c]!);
}

function serialize(e: El, out: string[]): void {
  out.push('<', e.name);
  for (const [k, v] of Object.entries(e.attrs ?? {})) if (v !== undefined) out.push(' ', k, '="', xmlEscape(v), '"');
  if ((e.children === undefined || e.children.length === 0) && e.text === undefined) {
    out.push('/>');
    return;
  }
  out.push('>');
  if (e.text !== undefined) out.push(xmlEscape(e.text));
  for (const c of e.children ?? []) serialize(c, out);
  out.push('</', e.name, '>');
}

const coded = (name: string, c: Coded): El => ({ name, attrs: { 'csd-code': c.code, codeSystemName: c.system, originalText: c.text } });
const base64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const detail = (type: string, value: string): El => ({ name: 'ParticipantObjectDetail', attrs: { type, value: base64(value) } });

/** The PS3.15 A.5 audit message (XML, UTF-8, no declaration: it travels as a syslog MSG) for one access. */
export function toPs315(event: AuditEvent, source: AuditSource, patient?: AuditPatient): string {
  const kind = auditKind(event);
  const r = event.resource;

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
  const description = outcomeDescription(event);
  const eventIdentification: El = {
    name: 'EventIdentification',
    attrs: { EventActionCode: action, EventDateTime: event.time, EventOutcomeIndicator: outcomeOf(event) },
    children: [
      coded('EventID', eventId),
      ...(typeCode !== undefined ? [coded('EventTypeCode', typeCode)] : []),
      ...(description !== undefined ? [{ name: 'EventOutcomeDescription', text: description }] : []),
    ],
  };

  // The caller, and the node. Roles as A.5.3 gives them: for a query and a store the caller is
  // the source (the request flows to the node); for a transfer out the node is the source.
  const [callerRole, nodeRole] =
    kind === 'query' || kind === 'transfer-in'
      ? [PS315.sourceRole, PS315.destinationRole]
      : kind === 'transfer-out'
        ? [PS315.destinationRole, PS315.sourceRole]
        : [undefined, undefined];
  const caller: El = {
    name: 'ActiveParticipant',
    attrs: {
      UserID: event.principal.id,
      UserName: event.principal.name,
      UserIsRequestor: 'true',
      NetworkAccessPointID: event.remoteAddress || undefined,
      NetworkAccessPointTypeCode: event.remoteAddress ? '2' : undefined,
    },
    children: callerRole !== undefined ? [coded('RoleIDCode', callerRole)] : [],
  };
  const node: El = {
    name: 'ActiveParticipant',
    attrs: {
      UserID: source.sourceId,
      AlternativeUserID: String(process.pid),
      UserIsRequestor: 'false',
      NetworkAccessPointID: source.host,
      NetworkAccessPointTypeCode: '1',
    },
    children: nodeRole !== undefined ? [coded('RoleIDCode', nodeRole)] : [],
  };
  const auditSource: El = {
    name: 'AuditSourceIdentification',
    attrs: { AuditEnterpriseSiteID: source.enterpriseSiteId, AuditSourceID: source.sourceId },
    children: [{ name: 'AuditSourceTypeCode', attrs: { 'csd-code': '4' } }], // application server process
  };

  const objects: El[] = [];
  if (r.action === 'search') {
    // The query as sent (base64, so that a hostile query survives unchanged), under the SOP Class
    // it is the web form of; for a refused or unauthenticated search too: what was attempted.
    objects.push({
      name: 'ParticipantObjectIdentification',
      attrs: { ParticipantObjectID: STUDY_ROOT_FIND, ParticipantObjectTypeCode: '2', ParticipantObjectTypeCodeRole: '3' },
      children: [
        coded('ParticipantObjectIDTypeCode', PS315.sopClassUid),
        { name: 'ParticipantObjectQuery', text: base64(event.url) },
        detail('QueryEncoding', 'UTF-8'),
      ],
    });
  }
  if (r.studyInstanceUID !== undefined) {
    objects.push({
      name: 'ParticipantObjectIdentification',
      attrs: {
        ParticipantObjectID: r.studyInstanceUID,
        ParticipantObjectTypeCode: '2',
        ParticipantObjectTypeCodeRole: '3',
        ParticipantObjectDataLifeCycle: kind === 'transfer-in' ? '1' : kind === 'transfer-out' || kind === 'read' ? '6' : undefined,
      },
      children: [
        coded('ParticipantObjectIDTypeCode', PS315.studyInstanceUid),
        ...(r.seriesInstanceUID !== undefined ? [detail('SeriesInstanceUID', r.seriesInstanceUID)] : []),
        ...(r.dataType !== undefined ? [detail('DataType', r.dataType)] : []),
        // The SOP Class is not known at the seam (the catalog has it); Instance names the one object.
        ...(r.sopInstanceUID !== undefined
          ? [
              {
                name: 'ParticipantObjectDescription',
                children: [{ name: 'SOPClass', attrs: { NumberOfInstances: '1' }, children: [{ name: 'Instance', attrs: { UID: r.sopInstanceUID } }] }],
              },
            ]
          : []),
      ],
    });
  }
  if (patient !== undefined) {
    objects.push({
      name: 'ParticipantObjectIdentification',
      attrs: { ParticipantObjectID: patientCx(patient), ParticipantObjectTypeCode: '1', ParticipantObjectTypeCodeRole: '1' },
      children: [
        coded('ParticipantObjectIDTypeCode', PS315.patientNumber),
        ...(patient.name !== undefined ? [{ name: 'ParticipantObjectName', text: patient.name }] : []),
      ],
    });
  }

  const out: string[] = [];
  serialize({ name: 'AuditMessage', children: [eventIdentification, caller, node, auditSource, ...objects] }, out);
  return out.join('');
}
