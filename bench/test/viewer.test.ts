import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KeepAlivePool } from '../keep-alive.ts';
import { ScratchSpace } from '../scratch.ts';
import { firstShown, outwardOrder, runViewerScenario, type ViewerOpening, type ViewerResult, type ViewerSystemRun } from '../viewer.ts';
import { viewerFailed, viewerMarkdown, viewerTargets } from '../viewer-report.ts';

describe('the viewer scenario: the order a viewer asks for the images', () => {
  it('from the image shown outward, as cornerstone prefetches: +1, -1, +2, -2, ...', () => {
    expect(outwardOrder(5, 2)).toEqual([2, 3, 1, 4, 0]);
    expect(outwardOrder(6, 3)).toEqual([3, 4, 2, 5, 1, 0]);
    expect(outwardOrder(4, 0)).toEqual([0, 1, 2, 3]);
    expect(outwardOrder(4, 3)).toEqual([3, 2, 1, 0]);
    expect(outwardOrder(0, 0)).toEqual([]);
    const big = outwardOrder(500, firstShown(500, 'middle'));
    expect(big[0]).toBe(250);
    expect([...big].sort((a, b) => a - b)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(firstShown(500, 'first')).toBe(0);
    expect(() => outwardOrder(3, 3)).toThrow(RangeError);
  });
});

describe('a browser-like keep-alive pool', () => {
  const servers: http.Server[] = [];
  afterAll(() => {
    for (const s of servers) s.close();
  });
  const serve = async (handler: http.RequestListener): Promise<{ url: URL; peak: () => number }> => {
    let open = 0;
    let peak = 0;
    const server = http.createServer(async (req, res) => {
      open++;
      peak = Math.max(peak, open);
      res.on('close', () => open--);
      handler(req, res);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), peak: () => peak };
  };

  it('sends at most 6 requests at once over 6 reused connections, in the order made, bodies whole', async () => {
    const order: string[] = [];
    const { url, peak } = await serve((req, res) => {
      order.push(req.url!);
      const n = Number(new URL(req.url!, 'http://x').searchParams.get('n'));
      const body = Buffer.alloc(100_000 + n, n);
      // Every other response chunked, the others with a Content-Length.
      setTimeout(() => {
        if (n % 2 === 0) res.setHeader('content-length', body.length);
        res.end(body);
      }, 5);
    });
    const pool = new KeepAlivePool(url, 6);
    try {
      const got = await Promise.all(
        Array.from({ length: 40 }, async (_, n) => {
          let bytes = 0;
          let wrong = 0;
          const r = await pool.get(
            `/x?n=${n}`,
            {},
            {
              onBody(chunk) {
                bytes += chunk.length;
                for (const b of chunk) if (b !== n) wrong++;
              },
            },
          );
          return { status: r.status, bytes, wrong };
        }),
      );
      expect(got).toEqual(got.map((_, n) => ({ status: 200, bytes: 100_000 + n, wrong: 0 })));
      expect(pool.connectionsOpened).toBe(6);
      expect(peak()).toBeLessThanOrEqual(6);
      // Sent in the order made, six at a time: each arrives among the six around its turn (on
      // separate connections, two sent in the same tick may arrive either way round).
      const offBy = order.map((u, i) => Math.abs(Number(new URL(u, 'http://x').searchParams.get('n')) - i));
      expect(Math.max(...offBy)).toBeLessThan(6);
      expect(order).toHaveLength(40);
    } finally {
      pool.close();
    }
  });

  it('opens a new connection when the server closed an idle one, or said it would close it', async () => {
    let n = 0;
    const { url } = await serve((req, res) => {
      n++;
      // The first connection is closed by the server once idle; the second response says so itself.
      if (n === 1) res.on('finish', () => setTimeout(() => req.socket.destroy(), 20));
      if (n === 2) res.setHeader('connection', 'close');
      res.end('ok');
    });
    const pool = new KeepAlivePool(url, 1);
    try {
      const text = async (): Promise<string> => {
        let s = '';
        await pool.get('/', {}, { onBody: (c) => (s += c.toString()) });
        return s;
      };
      expect(await text()).toBe('ok');
      await new Promise((r) => setTimeout(r, 200)); // the server has closed it by now
      expect(await text()).toBe('ok');
      expect(await text()).toBe('ok');
      expect(pool.connectionsOpened).toBe(3);
    } finally {
      pool.close();
    }
  });
});

const opening = (round: number, firstImageMs: number, seriesMs: number, ok = true): ViewerOpening => ({
  round,
  afterStart: false,
  ok,
  failures: ok ? [] : ['1 of 10 frames failed'],
  studyQidoMs: 1,
  seriesQidoMs: 1,
  metadataMs: 5,
  metadataBytes: 1000,
  readyMs: 8,
  firstImageMs,
  firstFrameMs: 3,
  seriesMs,
  frames: 10,
  frameBytes: 10,
  frameMs: { median: 2, p95: 3, max: 4 },
  serverCpuSeconds: 0.1,
  clock: { start: 0, ready: 1, firstImage: 2, end: 3 },
});

const system = (name: string, openings: ViewerOpening[], types = ['application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1']): ViewerSystemRun => ({
  system: name,
  detail: name,
  ingest: { seconds: 1, instances: 10, stored: 10, failures: [] },
  openings,
  peakRssMiB: 100,
  frameContentTypes: types,
  auditRecords: null,
  requests: 13,
  connectionsOpened: 6,
  errors: [],
});

const result = (systems: ViewerSystemRun[]): ViewerResult => ({
  label: 'viewer: test',
  instances: 10,
  seriesBytes: 5e6,
  rows: 512,
  columns: 512,
  connections: 6,
  start: 'middle',
  rounds: 2,
  openingsPerRound: 2,
  accept: 'x',
  systems,
  seconds: 1,
  errors: [],
});

describe('the viewer scenario: targets and verdicts', () => {
  it("targets on medians, Orthanc's over ours: 5x to the first image, 2x to the whole series, with each round's ratio", () => {
    const ours = system('dicom-vault', [opening(1, 10, 100), opening(1, 12, 110), opening(2, 20, 100), opening(2, 22, 120)]);
    const peer = system('Orthanc', [opening(1, 100, 150), opening(1, 100, 150), opening(2, 60, 300), opening(2, 60, 300)]);
    const [first, series] = viewerTargets(result([ours, peer]));
    // Medians (nearest rank): ours 12 and 100 ms; Orthanc 60 and 150 ms.
    expect(first!.met).toBe(true);
    expect(first!.measured).toMatch(/^5\.00× \(12 vs 60 ms, medians of 4 and 4 openings; rounds 10\.0×, 3\.0×\)/);
    expect(series!.met).toBe(false);
    expect(series!.measured).toMatch(/^1\.50×/);
    expect(viewerTargets(result([ours]))).toEqual([]);
    // A failed opening of ours leaves the others to the medians, and fails the scenario.
    const failing = system('dicom-vault', [opening(1, 10, 100), opening(1, 1, 1, false)]);
    expect(viewerFailed(result([failing, peer]))).toBe(true);
    expect(viewerFailed(result([ours, peer]))).toBe(false);
    expect(viewerMarkdown(result([failing, peer]))).toMatch(/1 openings FAILED: 1 of 10 frames failed/);
  });

  it('fails when our frame parts do not name their transfer syntax', () => {
    const bare = system('dicom-vault', [opening(1, 10, 100)], ['application/octet-stream']);
    expect(viewerFailed(result([bare]))).toBe(true);
  });
});

describe('the viewer scenario against a real node', () => {
  const scratch = new ScratchSpace();
  let work: string | undefined;
  afterAll(async () => {
    await scratch.removeAll();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('opens a small series with identity on: every frame checked, parts name their syntax, every request audited', async () => {
    work = await mkdtemp(join(tmpdir(), 'viewer-test-'));
    const r = await runViewerScenario({
      instances: 7,
      rounds: 1,
      openings: 2,
      peer: null,
      store: 'fs',
      env: {},
      workDir: work,
      scratch,
      keep: false,
      log: () => {},
    });
    expect(r.errors).toEqual([]);
    const [ours] = r.systems;
    expect(ours!.openings).toHaveLength(2);
    for (const x of ours!.openings) {
      expect(x.failures).toEqual([]);
      expect(x.frames).toBe(7);
      expect(x.frameBytes).toBe(7 * 512 * 512 * 2);
      expect(x.firstImageMs).toBeLessThanOrEqual(x.seriesMs);
      expect(x.clock.start).toBeLessThan(x.clock.firstImage);
    }
    expect(ours!.frameContentTypes).toEqual(['application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1']);
    // 3 JSON requests and 7 frames per opening, each one an audit record.
    expect(ours!.requests).toBe(20);
    expect(ours!.auditRecords).toBeGreaterThanOrEqual(20);
    expect(viewerFailed(r)).toBe(false);
  }, 120_000);
});
