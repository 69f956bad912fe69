// The hospital's audit record repository receives what a real node does (issue 24, item 5): a
// real rsyslogd (test/support/rsyslog.ts) listens for RFC 5426 UDP and RFC 5425 TLS; two real
// nodes send to it with --audit-syslog, one over each. A STOW, an allowed WADO read, a refused
// read and a failed authentication arrive as DICOM PS3.15 messages that parse, follow the A.5.1
// schema's rules and name the study, the patient and the user. The repository going away
// neither slows nor fails a request; what waited in the bounded queue arrives once it is back,
// what did not fit is counted; a repository whose certificate the node does not trust gets
// nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import type { AuditEvent } from '../../../src/access/policy.ts';
import { SyslogAuditSink } from '../../../src/audit/syslog.ts';
import { type ParsedAuditMessage, parseAuditMessage, parseSyslog5424 } from '../../support/audit-messages.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { type Rsyslog, startRsyslog } from '../../support/rsyslog.ts';
import { readFileSync } from 'node:fs';

const DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*';

let repo: Rsyslog;
const nodes: Record<'udp' | 'tls', TestNode | undefined> = { udp: undefined, tls: undefined };
const studies: Record<'udp' | 'tls', GeneratedStudy | undefined> = { udp: undefined, tls: undefined };

beforeAll(async () => {
  repo = await startRsyslog();
  nodes.udp = await startTestNode({
    flags: { 'audit-syslog': `udp://127.0.0.1:${repo.udpPort}`, 'audit-source-id': 'vault-udp', 'audit-site-id': 'Radiology' },
  });
  nodes.tls = await startTestNode({
    flags: { 'audit-syslog': `tls://localhost:${repo.tlsPort}`, 'audit-syslog-ca': repo.caFile, 'audit-source-id': 'vault-tls', 'audit-site-id': 'Radiology' },
  });
}, 60_000);

afterAll(async () => {
  await nodes.udp?.stop();
  await nodes.tls?.stop();
  await repo?.close();
});

/** The messages from one node about one study (or any, for undefined), parsed; each must follow the schema. */
async function received(sourceId: string, match: (m: ParsedAuditMessage) => boolean, count = 1): Promise<ParsedAuditMessage[]> {
  const parsed = (line: string) => {
    const frame = parseSyslog5424(line);
    if (frame.app !== 'dicom-vault') return undefined;
    const { message, problems } = parseAuditMessage(frame.msg);
    expect(problems, line).toEqual([]);
    expect([frame.pri, frame.msgId]).toEqual([85, 'IHE+RFC-3881']);
    return message.source.id === sourceId && match(message) ? message : undefined;
  };
  return (await repo.waitFor((line) => parsed(line) !== undefined, count)).map((l) => parsed(l)!);
}

const study = (m: ParsedAuditMessage) => m.objects.find((o) => o.idType.code === '110180');
const patient = (m: ParsedAuditMessage) => m.objects.find((o) => o.idType.code === '2');
const requestor = (m: ParsedAuditMessage) => m.participants.find((p) => p.requestor)!;

for (const transport of ['udp', 'tls'] as const) {
  describe(`a node sending to the audit repository over ${transport.toUpperCase()}`, () => {
    const source = `vault-${transport}`;

    it('a STOW arrives as DICOM Instances Transferred (C), the PACS account as the source, the study and its patient named', async () => {
      const node = nodes[transport]!;
      const s = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: transport === 'udp' ? 2401 : 2402, patientId: `PAT-${transport}` });
      studies[transport] = s;
      // To /studies/{study}: the study a STOW to /studies stores is named only in its body, which the access seam does not read.
      expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)), { study: s.studyInstanceUID })).status).toBe(200);
      const [m] = await received(source, (x) => x.eventId.code === '110104' && x.action === 'C' && study(x)?.id === s.studyInstanceUID);
      expect(m!.outcome).toBe('0');
      expect(requestor(m!)).toMatchObject({ userId: 'user:tester', roles: ['110153'], address: '127.0.0.1' });
      expect(m!.source).toEqual({ id: source, site: 'Radiology', types: ['4'] });
    });

    it('an allowed WADO read: DICOM Instances Transferred (R), success, with study, series, instance, patient and user', async () => {
      const node = nodes[transport]!;
      const s = studies[transport]!;
      const inst = s.instances[0]!;
      const res = await fetch(`${node.url}/studies/${s.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}`, {
        headers: { accept: DICOM },
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      const [m] = await received(source, (x) => x.eventId.code === '110104' && x.action === 'R' && study(x)?.id === s.studyInstanceUID);
      expect(m!.outcome).toBe('0');
      expect(requestor(m!)).toMatchObject({ userId: 'user:tester', userName: 'tester', roles: ['110152'], address: '127.0.0.1' });
      expect(m!.participants.find((p) => !p.requestor)).toMatchObject({ userId: source, roles: ['110153'] });
      expect(study(m!)!.details).toEqual({ SeriesInstanceUID: inst.seriesInstanceUID, DataType: 'dicom' });
      expect(study(m!)!.instances).toEqual([inst.sopInstanceUID]);
      expect(patient(m!)).toMatchObject({ id: `PAT-${transport}`, typeCode: '1', role: '1' });
    });

    it('a refused read: Security Alert / Use of Restricted Function, minor failure, naming the account and the study', async () => {
      const node = nodes[transport]!;
      const s = studies[transport]!;
      const clerk = node.vault.identity.addUser(`clerk-${transport}`, ['admin']).token;
      const res = await fetch(`${node.url}/studies/${s.studyInstanceUID}/metadata`, {
        headers: { accept: 'application/dicom+json', authorization: `Bearer ${clerk}` },
      });
      expect(res.status).toBe(403);
      const [m] = await received(source, (x) => x.eventId.code === '110113' && study(x)?.id === s.studyInstanceUID);
      expect([m!.typeCodes.map((c) => c.code), m!.outcome, m!.outcomeDescription]).toEqual([['110132'], '4', 'HTTP 403: access not granted']);
      expect(requestor(m!)).toMatchObject({ userId: `user:clerk-${transport}`, address: '127.0.0.1' });
      expect(patient(m!)!.id).toBe(`PAT-${transport}`);
    });

    it('a failed authentication: User Authentication / Login, minor failure, from where and for which study', async () => {
      const node = nodes[transport]!;
      const s = studies[transport]!;
      const res = await fetch(`${node.url}/studies/${s.studyInstanceUID}/series`, {
        headers: { accept: 'application/dicom+json', authorization: 'Bearer not-a-token' },
      });
      expect(res.status).toBe(401);
      const [m] = await received(source, (x) => x.eventId.code === '110114' && study(x)?.id === s.studyInstanceUID);
      expect([m!.typeCodes.map((c) => c.code), m!.action, m!.outcome, m!.outcomeDescription]).toEqual([
        ['110122'],
        'E',
        '4',
        'HTTP 401: caller not identified',
      ]);
      expect(requestor(m!)).toMatchObject({ userId: 'unidentified', address: '127.0.0.1' });
    });

    it('a QIDO search: Query, the request as sent', async () => {
      const node = nodes[transport]!;
      const url = `${node.url}/studies?PatientID=PAT-${transport}&includefield=all`;
      const res = await fetch(url, { headers: { accept: 'application/dicom+json' } });
      expect(res.status).toBe(200);
      const [m] = await received(source, (x) => x.eventId.code === '110112' && (x.objects[0]?.query ?? '').includes(`PAT-${transport}`));
      expect(m!.objects[0]!.query).toBe(new URL(url).pathname + new URL(url).search);
    });
  });
}

describe('mutual TLS, as ATNA asks of a secure node', () => {
  it('a repository that requires a client certificate takes the messages of a node with --audit-syslog-cert and -key, and none without', async () => {
    const withCert = await startTestNode({
      flags: {
        'audit-syslog': `tls://localhost:${repo.mtlsPort}`,
        'audit-syslog-ca': repo.caFile,
        'audit-syslog-cert': repo.clientCertFile,
        'audit-syslog-key': repo.clientKeyFile,
        'audit-source-id': 'vault-mtls',
      },
    });
    const without = await startTestNode({
      flags: { 'audit-syslog': `tls://localhost:${repo.mtlsPort}`, 'audit-syslog-ca': repo.caFile, 'audit-source-id': 'vault-no-cert' },
    });
    try {
      for (const node of [withCert, without]) {
        // No such patient: 204, recorded all the same.
        const res = await fetch(`${node.url}/studies?PatientID=MTLS`, { headers: { accept: 'application/dicom+json' } });
        expect(res.status).toBe(204);
      }
      const [m] = await received('vault-mtls', (x) => x.eventId.code === '110112');
      expect(m!.objects[0]!.query).toContain('PatientID=MTLS');
      // The node without a certificate: the repository closes each connection; the sink keeps trying, nothing arrives.
      await new Promise((r) => setTimeout(r, 1_000));
      expect(repo.messages().filter((l) => l.includes('vault-no-cert'))).toEqual([]);
    } finally {
      await withCert.stop();
      await without.stop();
    }
  }, 60_000);
});

describe('a flood', () => {
  it('2,000 failed authentications from 16 clients: each answered 401, each in the repository or counted as dropped', async () => {
    const node = nodes.tls!;
    const sink = node.auditSyslog!;
    const before = { ...sink.stats() };
    const marker = `flood-${Date.now()}`;
    let next = 0;
    const statuses = new Map<number, number>();
    const started = performance.now();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let i = next++; i < 2_000; i = next++) {
          const res = await fetch(`${node.url}/studies?AccessionNumber=${marker}-${i}`, { headers: { authorization: 'Bearer flood' } });
          await res.arrayBuffer();
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    expect([...statuses]).toEqual([[401, 2_000]]);
    expect(await sink.flush(20_000)).toBe(true);
    const after = sink.stats();
    expect(after.sent - before.sent + (after.dropped - before.dropped)).toBe(2_000);
    // Each sent message arrives: a User Authentication failure carrying the query it tried.
    const sent = after.sent - before.sent;
    const isFlood = (l: string) =>
      l.includes('vault-tls') && l.includes('110114') && (parseAuditMessage(parseSyslog5424(l).msg).message.objects[0]?.query ?? '').includes(marker);
    expect(await repo.waitFor(isFlood, sent, 30_000)).toHaveLength(sent);
    console.info(`flood: 2,000 refusals in ${seconds.toFixed(1)} s; ${after.sent - before.sent} sent, ${after.dropped - before.dropped} dropped`);
  }, 120_000);
});

describe('the repository away', () => {
  it('a node keeps serving at full speed while the repository is down; the reconnected sink delivers what it queued meanwhile', async () => {
    const node = nodes.tls!;
    const s = studies.tls!;
    const sink = node.auditSyslog!;
    const url = `${node.url}/studies/${s.studyInstanceUID}/series/${s.instances[1]!.seriesInstanceUID}/instances/${s.instances[1]!.sopInstanceUID}`;
    const timedRead = async (): Promise<number> => {
      const t = performance.now();
      const res = await fetch(url, { headers: { accept: DICOM } });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      return performance.now() - t;
    };
    const before: number[] = [];
    for (let i = 0; i < 5; i++) before.push(await timedRead());
    await repo.stop();
    // The node learns of the closed connection (the repository's FIN) before the reads below.
    for (let i = 0; i < 100 && sink.stats().connected; i++) await new Promise((r) => setTimeout(r, 20));
    expect(sink.stats().connected).toBe(false);
    const sentBefore = sink.stats().sent;
    const during: number[] = [];
    for (let i = 0; i < 5; i++) during.push(await timedRead());
    expect(sink.stats().queued).toBeGreaterThanOrEqual(5);
    expect(Math.max(...during)).toBeLessThan(Math.max(...before) * 3 + 50);
    const linesBefore = repo.messages().length;
    await repo.restart();
    // The five reads made while it was down, in order, once the sink is back (backoff: at most 30 s, here a few).
    const arrived = await repo.waitFor(() => true, linesBefore + 5, 20_000);
    const reads = arrived
      .slice(linesBefore)
      .map((l) => parseAuditMessage(parseSyslog5424(l).msg).message)
      .filter((m) => m.eventId.code === '110104' && m.action === 'R' && study(m)?.instances[0] === s.instances[1]!.sopInstanceUID);
    expect(reads).toHaveLength(5);
    expect(sink.stats()).toMatchObject({ connected: true, queued: 0, dropped: 0 });
    expect(sink.stats().sent).toBe(sentBefore + 5);
    // And on /metrics, for the operator's alerts.
    const metrics = await (await fetch(`${new URL(node.url).origin}/metrics`)).text();
    expect(metrics).toContain(`dicomvault_audit_syslog_messages{state="sent"} ${sink.stats().sent}`);
    expect(metrics).toContain('dicomvault_audit_syslog_messages{state="dropped"} 0');
    expect(metrics).toContain('dicomvault_audit_syslog_connected 1');
  }, 60_000);

  it('a full queue drops new events and counts them, never blocking the caller; the queued ones arrive after', async () => {
    await repo.stop();
    const sink = new SyslogAuditSink({
      target: { transport: 'tls', host: '127.0.0.1', port: repo.tlsPort },
      ca: readFileSync(repo.caFile),
      source: { sourceId: 'vault-queue', host: 'localhost' },
      // Room for exactly ten of the events below (a queued event weighs 2 KiB and twice its URL's length).
      maxQueueBytes: 10 * (2_048 + 2 * '/dicom-web/studies?AccessionNumber=0000000000000'.length),
      reconnect: { minMs: 50, maxMs: 200 },
    });
    try {
      const event = (i: number): AuditEvent => ({
        time: new Date().toISOString(),
        principal: { id: 'user:flood', roles: ['staff'], method: 'token' },
        resource: { action: 'search', level: 'studies' },
        method: 'GET',
        url: `/dicom-web/studies?AccessionNumber=${String(i).padStart(13, '0')}`,
        status: 200,
        complete: true,
        remoteAddress: '127.0.0.1',
      });
      const t = performance.now();
      for (let i = 0; i < 1_000; i++) sink.record(event(i));
      const ms = performance.now() - t;
      expect(sink.stats()).toMatchObject({ queued: 10, dropped: 990, connected: false });
      // 1,000 events recorded in a few ms: record() only queues.
      expect(ms).toBeLessThan(50);
      await repo.restart();
      const got = await repo.waitFor((l) => l.includes('vault-queue'), 10, 15_000);
      const queries = got.map((l) => parseAuditMessage(parseSyslog5424(l).msg).message.objects[0]!.query);
      expect(queries).toEqual(Array.from({ length: 10 }, (_, i) => event(i).url));
      expect(sink.stats()).toMatchObject({ queued: 0, sent: 10, dropped: 990, connected: true });
    } finally {
      await sink.close();
    }
  }, 60_000);

  it('a repository whose certificate does not chain to the configured CA gets nothing', async () => {
    const warnings: string[] = [];
    const sink = new SyslogAuditSink({
      target: { transport: 'tls', host: 'localhost', port: repo.tlsPort },
      ca: readFileSync(repo.otherCaFile),
      source: { sourceId: 'vault-wrong-ca', host: 'localhost' },
      reconnect: { minMs: 50, maxMs: 100 },
      logger: { warn: (_o, msg) => warnings.push(msg) },
    });
    try {
      sink.record({
        time: new Date().toISOString(),
        principal: { id: 'user:x', roles: ['staff'], method: 'token' },
        resource: { action: 'search', level: 'studies' },
        method: 'GET',
        url: '/dicom-web/studies',
        status: 200,
        complete: true,
        remoteAddress: '127.0.0.1',
      });
      await new Promise((r) => setTimeout(r, 1_000));
      expect(sink.stats()).toMatchObject({ connected: false, sent: 0, queued: 1 });
      expect(warnings[0]).toMatch(/audit syslog connection failed/);
      expect(repo.messages().filter((l) => l.includes('vault-wrong-ca'))).toEqual([]);
    } finally {
      await sink.close(100);
    }
    expect(sink.stats()).toMatchObject({ queued: 0, dropped: 1 });
  }, 30_000);
});
