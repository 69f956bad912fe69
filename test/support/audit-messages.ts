// Reading DICOM PS3.15 A.5 audit messages as an audit repository would: parsed by an XML parser
// of its own (fast-xml-parser, not the builder that wrote them), checked against the rules of
// the A.5.1 schema (element order, required attributes, enumerated values, base64 and dateTime
// types), and turned into plain data for assertions. The schema is RELAX NG Compact, which no
// validator on npm reads; its rules are restated here, each a check that can fail.
import { XMLParser } from 'fast-xml-parser';

type Node = Record<string, unknown>;

export interface AuditMessageCode {
  code: string;
  system: string;
  text: string;
}

export interface ParsedAuditMessage {
  eventId: AuditMessageCode;
  typeCodes: AuditMessageCode[];
  action: string | undefined;
  time: string;
  outcome: string;
  outcomeDescription: string | undefined;
  participants: Array<{ userId: string; userName?: string; requestor: boolean; address?: string; addressType?: string; roles: string[] }>;
  source: { id: string; site?: string; types: string[] };
  objects: Array<{
    id: string;
    typeCode?: string;
    role?: string;
    lifeCycle?: string;
    idType: AuditMessageCode;
    name?: string;
    /** ParticipantObjectQuery, decoded. */
    query?: string;
    /** ParticipantObjectDetail type → decoded value. */
    details: Record<string, string>;
    instances: string[];
  }>;
}

const ordered = new XMLParser({ preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: '' });
const plain = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseAttributeValue: false,
  parseTagValue: false,
  // Numeric character references (&#10;) too, as every XML parser decodes them.
  htmlEntities: true,
  isArray: (name) =>
    [
      'ActiveParticipant',
      'ParticipantObjectIdentification',
      'RoleIDCode',
      'EventTypeCode',
      'ParticipantObjectDetail',
      'AuditSourceTypeCode',
      'SOPClass',
      'Instance',
    ].includes(name),
});

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const DATE_TIME = /^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/;

function childNames(list: unknown): string[] {
  return (list as Node[]).map((n) => Object.keys(n).find((k) => k !== ':@')!).filter((k) => k !== '#text');
}

/** Names in `actual` follow the pattern `expected` (each: name, and whether it may repeat / be absent). */
function followsOrder(actual: string[], pattern: Array<[string, 'one' | 'opt' | 'many' | 'some']>): boolean {
  let i = 0;
  for (const [name, card] of pattern) {
    let n = 0;
    while (actual[i] === name) {
      i++;
      n++;
    }
    if ((card === 'one' && n !== 1) || (card === 'opt' && n > 1) || (card === 'some' && n < 1)) return false;
  }
  return i === actual.length;
}

function coded(n: Node | undefined, where: string, problems: string[]): AuditMessageCode {
  const code = String(n?.['csd-code'] ?? '');
  const system = String(n?.codeSystemName ?? '');
  const text = String(n?.originalText ?? '');
  if (code === '' || system === '' || text === '') problems.push(`${where}: a coded value needs csd-code, codeSystemName and originalText`);
  return { code, system, text };
}

function oneOf(v: unknown, values: string[], where: string, problems: string[], optional = true): string | undefined {
  if (v === undefined) {
    if (!optional) problems.push(`${where} is required`);
    return undefined;
  }
  if (!values.includes(String(v))) problems.push(`${where} is "${String(v)}", not one of ${values.join(' ')}`);
  return String(v);
}

const range = (a: number, b: number): string[] => Array.from({ length: b - a + 1 }, (_, i) => String(a + i));

/** Parses one message; `problems` lists every rule of the A.5.1 schema it breaks (empty: valid). */
export function parseAuditMessage(xml: string): { message: ParsedAuditMessage; problems: string[] } {
  const problems: string[] = [];
  const text = xml.replace(/^\uFEFF/, '');
  const tree = ordered.parse(text) as Node[];
  const roots = childNames(tree).filter((n) => n !== '?xml');
  if (roots.length !== 1 || roots[0] !== 'AuditMessage') problems.push(`root is ${roots.join(', ')}, not one AuditMessage`);
  const rootChildren = childNames((tree.find((n) => 'AuditMessage' in n) as Node).AuditMessage);
  if (
    !followsOrder(rootChildren, [
      ['EventIdentification', 'one'],
      ['ActiveParticipant', 'some'],
      ['AuditSourceIdentification', 'one'],
      ['ParticipantObjectIdentification', 'many'],
    ])
  ) {
    problems.push(`AuditMessage children out of the schema's order: ${rootChildren.join(', ')}`);
  }
  for (const po of ((tree.find((n) => 'AuditMessage' in n) as Node).AuditMessage as Node[]).filter((n) => 'ParticipantObjectIdentification' in n)) {
    const names = childNames(po.ParticipantObjectIdentification);
    const withoutChoice = names.filter((n) => n !== 'ParticipantObjectName' && n !== 'ParticipantObjectQuery');
    if (
      names.filter((n) => n === 'ParticipantObjectName' || n === 'ParticipantObjectQuery').length > 1 ||
      !followsOrder(
        names,
        names.length === withoutChoice.length
          ? [
              ['ParticipantObjectIDTypeCode', 'one'],
              ['ParticipantObjectDetail', 'many'],
              ['ParticipantObjectDescription', 'many'],
            ]
          : [
              ['ParticipantObjectIDTypeCode', 'one'],
              [names[1]!, 'one'],
              ['ParticipantObjectDetail', 'many'],
              ['ParticipantObjectDescription', 'many'],
            ],
      )
    ) {
      problems.push(`ParticipantObjectIdentification children out of the schema's order: ${names.join(', ')}`);
    }
  }

  const m = (plain.parse(text) as Node).AuditMessage as Node;
  const ev = m.EventIdentification as Node;
  const eventId = coded(ev.EventID as Node, 'EventID', problems);
  const typeCodes = ((ev.EventTypeCode as Node[] | undefined) ?? []).map((c) => coded(c, 'EventTypeCode', problems));
  const action = oneOf(ev.EventActionCode, ['C', 'R', 'U', 'D', 'E'], 'EventActionCode', problems);
  const time = String(ev.EventDateTime ?? '');
  if (!DATE_TIME.test(time)) problems.push(`EventDateTime "${time}" is not an xsd:dateTime`);
  const outcome = oneOf(ev.EventOutcomeIndicator, ['0', '4', '8', '12'], 'EventOutcomeIndicator', problems, false) ?? '';
  const outcomeDescription = ev.EventOutcomeDescription === undefined ? undefined : String(ev.EventOutcomeDescription);

  const participants = ((m.ActiveParticipant as Node[] | undefined) ?? []).map((p, i) => {
    const where = `ActiveParticipant[${i}]`;
    if (p.UserID === undefined) problems.push(`${where}.UserID is required`);
    const requestor = oneOf(p.UserIsRequestor, ['true', 'false', '1', '0'], `${where}.UserIsRequestor`, problems, false);
    const addressType = oneOf(p.NetworkAccessPointTypeCode, range(1, 5), `${where}.NetworkAccessPointTypeCode`, problems);
    return {
      userId: String(p.UserID ?? ''),
      ...(p.UserName !== undefined ? { userName: String(p.UserName) } : {}),
      requestor: requestor === 'true' || requestor === '1',
      ...(p.NetworkAccessPointID !== undefined ? { address: String(p.NetworkAccessPointID) } : {}),
      ...(addressType !== undefined ? { addressType } : {}),
      roles: ((p.RoleIDCode as Node[] | undefined) ?? []).map((c) => coded(c, `${where}.RoleIDCode`, problems).code),
    };
  });

  const asi = m.AuditSourceIdentification as Node;
  if (asi?.AuditSourceID === undefined) problems.push('AuditSourceIdentification.AuditSourceID is required');
  const source = {
    id: String(asi?.AuditSourceID ?? ''),
    ...(asi?.AuditEnterpriseSiteID !== undefined ? { site: String(asi.AuditEnterpriseSiteID) } : {}),
    types: ((asi?.AuditSourceTypeCode as Node[] | undefined) ?? []).map((t) => {
      const code = String(t['csd-code'] ?? '');
      if (!range(1, 9).includes(code) && t.codeSystemName === undefined) problems.push(`AuditSourceTypeCode "${code}" needs a codeSystemName`);
      return code;
    }),
  };

  const objects = ((m.ParticipantObjectIdentification as Node[] | undefined) ?? []).map((o, i) => {
    const where = `ParticipantObjectIdentification[${i}]`;
    if (o.ParticipantObjectID === undefined) problems.push(`${where}.ParticipantObjectID is required`);
    const typeCode = oneOf(o.ParticipantObjectTypeCode, range(1, 4), `${where}.ParticipantObjectTypeCode`, problems);
    const role = oneOf(o.ParticipantObjectTypeCodeRole, range(1, 26), `${where}.ParticipantObjectTypeCodeRole`, problems);
    const lifeCycle = oneOf(o.ParticipantObjectDataLifeCycle, range(1, 15), `${where}.ParticipantObjectDataLifeCycle`, problems);
    const details: Record<string, string> = {};
    for (const d of (o.ParticipantObjectDetail as Node[] | undefined) ?? []) {
      const value = String(d.value ?? '');
      if (d.type === undefined || !BASE64.test(value)) problems.push(`${where}.ParticipantObjectDetail needs a type and a base64 value`);
      details[String(d.type)] = Buffer.from(value, 'base64').toString('utf8');
    }
    let query: string | undefined;
    if (o.ParticipantObjectQuery !== undefined) {
      const q = String(o.ParticipantObjectQuery);
      if (!BASE64.test(q)) problems.push(`${where}.ParticipantObjectQuery is not base64`);
      query = Buffer.from(q, 'base64').toString('utf8');
    }
    const descriptions = o.ParticipantObjectDescription === undefined ? [] : [o.ParticipantObjectDescription].flat();
    const instances = (descriptions as Node[]).flatMap((d) =>
      ((d.SOPClass as Node[] | undefined) ?? []).flatMap((c) => ((c.Instance as Node[] | undefined) ?? []).map((x) => String(x.UID))),
    );
    for (const d of descriptions as Node[]) {
      for (const c of (d.SOPClass as Node[] | undefined) ?? [])
        if (!/^\d+$/.test(String(c.NumberOfInstances ?? ''))) problems.push(`${where}: SOPClass needs NumberOfInstances`);
    }
    return {
      id: String(o.ParticipantObjectID ?? ''),
      ...(typeCode !== undefined ? { typeCode } : {}),
      ...(role !== undefined ? { role } : {}),
      ...(lifeCycle !== undefined ? { lifeCycle } : {}),
      idType: coded(o.ParticipantObjectIDTypeCode as Node, `${where}.ParticipantObjectIDTypeCode`, problems),
      ...(o.ParticipantObjectName !== undefined ? { name: String(o.ParticipantObjectName) } : {}),
      ...(query !== undefined ? { query } : {}),
      details,
      instances,
    };
  });

  return { message: { eventId, typeCodes, action, time, outcome, outcomeDescription, participants, source, objects }, problems };
}

/** An RFC 5424 message split into its header fields and MSG. */
export function parseSyslog5424(line: string): {
  pri: number;
  version: string;
  timestamp: string;
  host: string;
  app: string;
  procId: string;
  msgId: string;
  sd: string;
  msg: string;
} {
  const m = /^<(\d{1,3})>(\d) (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) ([\s\S]*)$/.exec(line);
  if (m === null) throw new Error(`not an RFC 5424 message: ${line.slice(0, 120)}`);
  return { pri: Number(m[1]), version: m[2]!, timestamp: m[3]!, host: m[4]!, app: m[5]!, procId: m[6]!, msgId: m[7]!, sd: m[8]!, msg: m[9]! };
}
