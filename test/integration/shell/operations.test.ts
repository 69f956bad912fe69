// What a PACS administrator runs the node with: /healthz, /readyz (503 naming what is not ready),
// Prometheus metrics that move with the traffic, and logs that carry no patient data.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { CID } from 'multiformats/cid';
import { decodeInstanceNode } from '../../../src/format/dag.ts';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { bytesOf } from '../../support/generated.ts';
import { captureLogs, type CapturedLogs } from '../../support/logs.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { blockFileOf } from '../../support/blocks.ts';

const origin = (node: TestNode): string => new URL(node.url).origin;

/** One sample of a metric from the Prometheus text format: the sum over series matching `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

describe('operations', () => {
  let node: TestNode;
  let logs: CapturedLogs;
  const study = planStudy({ kind: 'single', instances: 3, rows: 64, columns: 64, seed: 4101, patientId: 'PIDSECRET4101' });
  let parts: Buffer[];

  beforeAll(async () => {
    logs = captureLogs('debug');
    node = await startTestNode({ logger: logs.logger });
    parts = await Promise.all(study.instances.map(bytesOf));
  });
  afterAll(() => node.stop());

  it('answers /healthz and /readyz while its parts are up', async () => {
    expect((await fetch(`${origin(node)}/healthz`)).status).toBe(200);
    const ready = await fetch(`${origin(node)}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({
      status: 'ready',
      checks: [
        { name: 'catalog', ok: true },
        { name: 'store', ok: true },
      ],
    });
  });

  it('counts requests, bytes, latencies and verified blocks in /metrics', async () => {
    const before = await (await fetch(`${origin(node)}/metrics`)).text();
    expect((await stow(node.url, parts)).status).toBe(200);
    const back = await retrieve(`${node.url}/studies/${study.studyInstanceUID}`);
    expect(back.parts).toHaveLength(3);
    const res = await fetch(`${origin(node)}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const after = await res.text();
    const delta = (name: string, labels: Record<string, string> = {}): number => sample(after, name, labels) - sample(before, name, labels);
    expect(delta('dicomvault_http_requests_total', { route: '/dicom-web/studies', method: 'POST', status: '200' })).toBe(1);
    expect(delta('dicomvault_http_requests_total', { route: '/dicom-web/studies/:study', method: 'GET', status: '200' })).toBe(1);
    const stored = parts.reduce((n, p) => n + p.length, 0);
    expect(delta('dicomvault_http_received_bytes_total', { route: '/dicom-web/studies' })).toBeGreaterThan(stored);
    expect(delta('dicomvault_http_sent_bytes_total', { route: '/dicom-web/studies/:study' })).toBeGreaterThan(stored);
    expect(delta('dicomvault_request_duration_seconds_count', { action: 'store' })).toBe(1);
    expect(delta('dicomvault_request_duration_seconds_count', { action: 'retrieve' })).toBe(1);
    // Every chunk of the three instances was verified on the way out.
    expect(delta('dicomvault_blocks_verified_total')).toBeGreaterThanOrEqual(3);
    expect(delta('dicomvault_verified_bytes_total')).toBeGreaterThan(stored);
    expect(sample(after, 'dicomvault_process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('counts a block that fails verification', async () => {
    const inst = node.vault.catalog.listInstances({ study: study.studyInstanceUID })[0]!;
    const nodeCid = CID.parse(inst.nodeCid);
    const node0 = await node.vault.store.get(nodeCid);
    const before = sample(await (await fetch(`${origin(node)}/metrics`)).text(), 'dicomvault_verification_failures_total', { reason: 'corrupt' });
    // Alter the instance's first chunk on disk (the fs store keeps one file per block).
    const chunk = decodeInstanceNode(node0, nodeCid).links[0]!;
    const file = blockFileOf(join(node.dataDir, 'blocks'), chunk);
    const bytes = await readFile(file);
    bytes[bytes.length >> 1]! ^= 0xff;
    await writeFile(file, bytes);
    const r = await retrieve(`${node.url}/studies/${study.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}`);
    expect(r.status).toBe(500);
    const after = sample(await (await fetch(`${origin(node)}/metrics`)).text(), 'dicomvault_verification_failures_total', { reason: 'corrupt' });
    expect(after - before).toBe(1);
  });

  it('keeps patient names, IDs and UIDs out of every log line, queries included', async () => {
    const q = await fetch(`${node.url}/studies?PatientName=${encodeURIComponent('BENCH^PIDSECRET*')}&PatientID=PIDSECRET4101`);
    expect(q.status).toBe(200);
    await retrieve(`${node.url}/studies/${study.studyInstanceUID}/metadata`, 'application/dicom+json');
    await fetch(
      `${node.url}/studies/${study.studyInstanceUID}/series/${study.instances[0]!.seriesInstanceUID}/instances/${study.instances[0]!.sopInstanceUID}/frames/1`,
    );
    const text = logs.lines.map((l) => JSON.stringify(l)).join('\n');
    expect(logs.lines.length).toBeGreaterThan(10);
    for (const secret of ['PIDSECRET', study.studyInstanceUID, study.instances[0]!.seriesInstanceUID, study.instances[0]!.sopInstanceUID]) {
      expect(text, secret).not.toContain(secret);
    }
    // What is left still tells an operator what happened.
    expect(text).toMatch(/"url":"\/dicom-web\/studies\?PatientName=\*&PatientID=\*"/);
    expect(text).toMatch(/\/dicom-web\/studies\/uid:[0-9a-f]{10}\/metadata/);
  });
});

describe('readiness', () => {
  it('answers 503 naming the part that is not ready', async () => {
    const node = await startTestNode();
    try {
      // The fs store's directory replaced by a file: every store call fails.
      await rm(join(node.dataDir, 'blocks'), { recursive: true, force: true });
      await writeFile(join(node.dataDir, 'blocks'), 'not a directory');
      const r = await fetch(`${origin(node)}/readyz`);
      expect(r.status).toBe(503);
      const body = (await r.json()) as { status: string; reason: string };
      expect(body.status).toBe('not ready');
      expect(body.reason).toMatch(/^store: /);
      expect((await fetch(`${origin(node)}/healthz`)).status).toBe(200);
    } finally {
      await node.stop().catch(() => undefined);
    }
  });
});
