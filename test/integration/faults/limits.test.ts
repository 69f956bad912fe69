// Slow and greedy clients: uploads that stall or trickle are cut off within the configured time,
// headers that trickle in too; ingests past the per-client and per-node limits get 503 with
// Retry-After (C-STORE: 0xA700); nothing half-stored, the node keeps serving, and /metrics counts it.
import { request as httpRequest, type ClientRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { bytesOf } from '../../support/generated.ts';
import { allBlockFiles } from '../../support/blocks.ts';
import { multipartBody } from '../../support/dicomweb.ts';
import { runTool } from '../../support/dcmtk.ts';
import { PYDICOM_DATA } from '../../support/pydicom.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const BOUNDARY = 'limits-test-boundary';

/** A STOW whose body is sent by the test, piece by piece; `local` is the client's source address. */
function openStow(
  node: TestNode,
  local = '127.0.0.1',
): { req: ClientRequest; response: Promise<{ status: number; headers: Record<string, unknown>; body: string } | { error: string }> } {
  const url = new URL(`${node.url}/studies`);
  const req = httpRequest({
    host: url.hostname,
    port: url.port,
    path: url.pathname,
    method: 'POST',
    localAddress: local,
    headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}`, 'transfer-encoding': 'chunked' },
  });
  const response = new Promise<{ status: number; headers: Record<string, unknown>; body: string } | { error: string }>((resolve) => {
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', (e) => resolve({ error: e.message }));
    });
    req.on('error', (e) => resolve({ error: e.message }));
  });
  // Writes after the node cut the connection fail; the test reads the outcome from `response`.
  req.on('error', () => undefined);
  return { req, response };
}

async function metric(node: TestNode, name: string, label: string): Promise<number> {
  const text = await (await fetch(`${new URL(node.url).origin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${label}}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

async function healthy(node: TestNode): Promise<number> {
  const t = performance.now();
  expect((await fetch(`${new URL(node.url).origin}/healthz`)).status).toBe(200);
  return performance.now() - t;
}

describe('timeouts', () => {
  let node: TestNode;
  let part: Buffer;
  beforeAll(async () => {
    node = await startTestNode({
      flags: { 'idle-timeout': '2', 'headers-timeout': '2', 'min-body-rate': '2048', 'max-ingests': '200', 'max-ingests-per-client': '200' },
    });
    const s = planStudy({ kind: 'single', instances: 1, rows: 256, columns: 256, seed: 6601 });
    part = multipartBody([await bytesOf(s.instances[0]!)], BOUNDARY);
  });
  afterAll(() => node.stop());

  it('cuts off uploads that stop moving, stores nothing of them, and keeps serving', async () => {
    const blocksBefore = (await allBlockFiles(join(node.dataDir, 'blocks'))).length;
    const before = await metric(node, 'dicomvault_connection_timeouts_total', 'phase="idle"');
    const stalled = Array.from({ length: 50 }, () => openStow(node));
    for (const s of stalled) s.req.write(part.subarray(0, 4096)); // then nothing
    const started = performance.now();
    const results = await Promise.all(stalled.map((s) => s.response));
    expect(performance.now() - started).toBeLessThan(8_000);
    for (const r of results) expect('error' in r || r.status >= 400).toBe(true);
    expect(await healthy(node)).toBeLessThan(500);
    expect((await metric(node, 'dicomvault_connection_timeouts_total', 'phase="idle"')) - before).toBe(50);
    expect((await allBlockFiles(join(node.dataDir, 'blocks'))).length).toBe(blocksBefore);
  });

  it('cuts off uploads that trickle (a few bytes a second never trip the idle timeout)', async () => {
    const before = await metric(node, 'dicomvault_connection_timeouts_total', 'phase="slow-body"');
    const trickling = Array.from({ length: 20 }, () => openStow(node));
    let stop = false;
    const feed = (async () => {
      for (let at = 0; !stop && at < part.length; at += 16) {
        for (const t of trickling) if (!t.req.destroyed) t.req.write(part.subarray(at, at + 16));
        await sleep(500);
      }
    })();
    const started = performance.now();
    const results = await Promise.all(trickling.map((t) => t.response));
    stop = true;
    await feed;
    expect(performance.now() - started).toBeLessThan(10_000);
    for (const r of results) if (!('error' in r)) expect(r.status).toBe(408);
    expect((await metric(node, 'dicomvault_connection_timeouts_total', 'phase="slow-body"')) - before).toBe(20);
    expect(await healthy(node)).toBeLessThan(500);
  });

  it('closes connections whose headers trickle in', async () => {
    const url = new URL(node.url);
    const socket = connect(Number(url.port), url.hostname);
    await new Promise((r) => socket.once('connect', r));
    socket.on('error', () => undefined); // writes after the node closed it
    socket.write('POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\n');
    const feeding = setInterval(() => socket.write('X-Slow: y\r\n'), 300);
    const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())));
    const started = performance.now();
    const end = await closed;
    clearInterval(feeding);
    expect(end - started).toBeLessThan(6_000);
  });
});

describe('concurrency limits', () => {
  let node: TestNode;
  let part: Buffer;
  beforeAll(async () => {
    node = await startTestNode({ flags: { 'max-ingests': '3', 'max-ingests-per-client': '2', 'dimse-port': '0' } });
    const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 6602 });
    part = multipartBody([await bytesOf(s.instances[0]!)], BOUNDARY);
  });
  afterAll(() => node.stop());

  it('refuses ingests past the per-client and per-node limits with 503 and Retry-After, then takes them again', async () => {
    const a1 = openStow(node, '127.0.0.1');
    const a2 = openStow(node, '127.0.0.1');
    for (const s of [a1, a2]) s.req.write(part.subarray(0, 100));
    await sleep(300);
    const a3 = await fetch(`${node.url}/studies`, {
      method: 'POST',
      headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}` },
      body: part,
    });
    expect(a3.status).toBe(503);
    expect(a3.headers.get('retry-after')).toBe('5');
    expect(((await a3.json()) as { code: string; message: string }).message).toMatch(/limit per client/);
    const b1 = openStow(node, '127.0.0.2');
    b1.req.write(part.subarray(0, 100));
    await sleep(300);
    const b2 = openStow(node, '127.0.0.2');
    b2.req.end(part);
    const refused = await b2.response;
    expect('status' in refused && refused.status).toBe(503);
    expect('body' in refused && refused.body).toMatch(/ingests at once, its limit/);
    // A C-STORE past the node's limit is refused with 0xA700 (out of resources).
    const dimse = await runTool('/usr/bin/storescu', [
      '-d',
      '-aec',
      'DICOMVAULT',
      '127.0.0.1',
      String(node.dimse!.port),
      join(PYDICOM_DATA, 'test_files', 'CT_small.dcm'),
    ]);
    expect(dimse.code).not.toBe(0);
    expect(dimse.output).toMatch(/0xa700|Refused: OutOfResources/i);
    expect(await healthy(node)).toBeLessThan(500);
    // Finished, the slots are free again.
    for (const s of [a1, a2, b1]) s.req.end(part.subarray(100));
    for (const s of [a1, a2, b1]) {
      const r = await s.response;
      expect('status' in r && r.status).toBe(200);
    }
    const again = await fetch(`${node.url}/studies`, {
      method: 'POST',
      headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}` },
      body: part,
    });
    expect(again.status).toBe(200);
    expect(await metric(node, 'dicomvault_ingests_refused_busy_total', 'door="stow"')).toBe(2);
    expect(await metric(node, 'dicomvault_ingests_refused_busy_total', 'door="dimse"')).toBe(1);
  });
});
