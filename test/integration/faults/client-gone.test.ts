// Clients that leave before their request is served (issue 21). A request's 'close' can fire
// while the access seam still waits (for the caller's identity, or for the audit log to admit
// the access): whatever listens for 'close' after that never hears it. Such a STOW must not keep
// an ingest slot (16 of them and every ingest is refused with 503 until a restart), nor the audit
// sink a pending entry; every access in the log keeps its outcome linked to it.
import { request as httpRequest, type ClientRequest } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyRequest } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { openPolicy, type AccessPolicy, type AuditEvent, type AuditSink } from '../../../src/access/policy.ts';
import { openLeaf, type AuditRecord } from '../../../src/audit/entry.ts';
import { accessAuditSink, StudyPatients } from '../../../src/shell/audit.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { allBlockFiles } from '../../support/blocks.ts';
import { multipartBody, stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const BOUNDARY = 'client-gone-boundary';
const LIMITS = { 'max-ingests': '2', 'max-ingests-per-client': '2' };

/** Waits until `probe` gives a value, polling; fails after `ms`. */
async function until<T>(probe: () => T | undefined, ms = 10_000): Promise<T> {
  const end = performance.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (performance.now() > end) throw new Error('timed out waiting');
    await sleep(10);
  }
}

/** A STOW whose body is sent but never ended, so the node waits for more; the test destroys it. */
function openStow(node: TestNode, path = '/studies', body?: Buffer): ClientRequest {
  const url = new URL(`${node.url}${path}`);
  const req = httpRequest({
    host: url.hostname,
    port: url.port,
    path: url.pathname,
    method: 'POST',
    headers: {
      authorization: `Bearer ${node.token}`,
      'content-type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}`,
      'transfer-encoding': 'chunked',
    },
  });
  req.on('error', () => undefined); // the test destroys it
  if (body !== undefined) req.write(body);
  return req;
}

/** Every entry of the node's audit log, opened. */
function entries(node: RunningNode): Array<{ index: number; r: AuditRecord | undefined }> {
  const { store, keys } = node.vault.audit;
  node.vault.audit.log.flush();
  return store.scan(0, store.size()).map((e) => ({ index: e.index, r: openLeaf(e.leaf, keys.key(e.subject) ?? Buffer.alloc(32)) }));
}

describe('a STOW whose client leaves while the audit log admits it', () => {
  let node: TestNode;
  let part: Buffer;
  let hold = false;
  const held = new Map<string, () => void>();
  const closed = new Set<string>();
  // An audit sink slow to admit, as a log on a slow disk is, held until the test opens it.
  const slowSink: AuditSink = {
    admit: (event) => (hold ? new Promise<void>((resolve) => held.set(event.id!, resolve)) : Promise.resolve()),
    record: (event) => void (event.id !== undefined && closed.add(event.id)),
  };

  beforeAll(async () => {
    node = await startTestNode({ audit: slowSink, flags: LIMITS });
    const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 2101 });
    part = multipartBody([await bytesOf(s.instances[0]!)], BOUNDARY);
  });
  afterAll(() => node.stop());

  it('keeps no ingest slot: twice the node limit of them, and the next STOW is stored', async () => {
    const blocksBefore = (await allBlockFiles(join(node.dataDir, 'blocks'))).length;
    hold = true;
    for (let i = 0; i < 4; i++) {
      const req = openStow(node, '/studies', part);
      const id = await until(() => [...held.keys()].find((k) => !closed.has(k)));
      req.destroy();
      // The node has seen the client go ('close' fired) before the access is admitted.
      await until(() => closed.has(id));
      held.get(id)!();
    }
    hold = false;
    await sleep(200);
    const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 2102 });
    const r = await stow(node.url, [await bytesOf(s.instances[0]!)]);
    expect(r.status).toBe(200);
    // Nothing of the gone clients' uploads was kept: only the last STOW's blocks are new.
    const after = (await allBlockFiles(join(node.dataDir, 'blocks'))).length;
    expect(after - blocksBefore).toBeGreaterThan(0);
    expect(after - blocksBefore).toBeLessThanOrEqual(4);
  });
});

describe('a STOW whose client leaves while the node establishes who is calling', () => {
  let node: TestNode;
  let part: Buffer;
  let hold = false;
  const waiting: Array<{ url: string; open: () => void }> = [];
  const authorized = new Set<string>();
  // Open access, slow to identify (an OpenID provider's keys being fetched), held by the test.
  const slowIdentity: AccessPolicy = {
    identify: async (request: FastifyRequest) => {
      if (hold) await new Promise<void>((open) => waiting.push({ url: request.url, open }));
      return openPolicy.identify(request);
    },
    authorize: async (principal, resource) => {
      if (resource.studyInstanceUID !== undefined) authorized.add(resource.studyInstanceUID);
      return openPolicy.authorize(principal, resource);
    },
  };

  beforeAll(async () => {
    node = await startTestNode({ access: slowIdentity, flags: LIMITS });
    const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 2103 });
    part = multipartBody([await bytesOf(s.instances[0]!)], BOUNDARY);
  });
  afterAll(() => node.stop());

  it('admits nothing for it: no access without its outcome in the audit log, no slot kept', async () => {
    hold = true;
    const studies = Array.from({ length: 4 }, (_, i) => `1.2.826.0.1.3680043.10.543.2103.${i + 1}`);
    for (const study of studies) {
      const req = openStow(node, `/studies/${study}`, part);
      const w = await until(() => waiting.find((x) => x.url.endsWith(study)));
      req.destroy();
      // Its outcome is recorded when the node sees the client go, before it knows who called.
      await until(() => entries(node).some((e) => e.r?.kind === 'outcome' && e.r.where?.url?.endsWith(study)));
      w.open();
      await until(() => authorized.has(study));
    }
    hold = false;
    await sleep(200);
    const log = entries(node);
    for (const study of studies) {
      const mine = log.filter((e) => e.r?.where?.url?.endsWith(study));
      // An access entry would have no outcome to close it (that was written before it), and the
      // sink would keep its index waiting for an outcome that never comes.
      expect(mine.map((e) => e.r!.kind)).toEqual(['outcome']);
    }
    const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 2104 });
    expect((await stow(node.url, [await bytesOf(s.instances[0]!)])).status).toBe(200);
  });
});

describe("the audit sink, when a request's outcome comes while its admission is being written", () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode();
  });
  afterAll(() => node.stop());

  it('links the outcome to the access and keeps nothing pending', async () => {
    const sink = accessAuditSink({ audit: node.vault.audit, patients: new StudyPatients(node.vault.catalog), identity: node.vault.identity });
    const url = '/dicom-web/studies?PatientID=CLIENT-GONE';
    const event: AuditEvent = {
      time: new Date().toISOString(),
      principal: { id: 'user:gone', roles: ['staff'], method: 'token' },
      resource: { action: 'search', level: 'studies' },
      method: 'GET',
      url,
      status: 200,
      complete: false,
      remoteAddress: '127.0.0.1',
      id: 'client-gone-1',
    };
    // The client goes while the access is on its way to disk: 'close' records the outcome then.
    const admitted = sink.admit(event);
    sink.record(event);
    await admitted;
    await sleep(50);
    const mine = entries(node).filter((e) => e.r?.where?.url === url);
    const access = mine.find((e) => e.r?.kind === 'access');
    const outcome = mine.find((e) => e.r?.kind === 'outcome');
    expect(access).toBeDefined();
    expect(outcome?.r?.ref).toBe(access!.index);
    expect(mine).toHaveLength(2);
    // Nothing kept: a later outcome under the same id is not linked to that access.
    sink.record({ ...event, url: `${url}-again` });
    await sleep(50);
    const again = entries(node).find((e) => e.r?.where?.url === `${url}-again`);
    expect(again?.r?.ref).toBeUndefined();
  });
});
