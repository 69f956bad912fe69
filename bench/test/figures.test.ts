import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  chartRows,
  checkTargets,
  cpuSecondsPerGiB,
  figureLimits,
  hugeStudyShape,
  measuredScale,
  medianRun,
  runFailed,
  peakRss,
  percentile,
  sampleLatencies,
  scenarioFigures,
  spreadFrames,
  summarize,
  type FigureLimits,
  type ScenarioResult,
  type SystemRun,
} from '../figures.ts';
import type { MachineLimits } from '../limits.ts';
import { reportMarkdown, type ReportInput } from '../publish.ts';
import { comparisonTable, ofLimit, ratioText } from '../report.ts';
import { diskUsage, type Footprint } from '../scale.ts';
import { planScenarios, scenarioHeader } from '../scenarios.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function limitsWith(o: { ingestCrypto: number; disk: number; loopback: number; roundTripMs?: number; memoryGiB?: number }): MachineLimits {
  const fig = (MBps: number) => ({ MBps, runs: [MBps], bytes: 1, description: '' });
  return {
    machine: { cpus: 2, cpuModel: 'test', memoryGiB: o.memoryGiB ?? 16, kernel: '', node: '', openssl: '' },
    figures: { ingestCrypto: fig(o.ingestCrypto), diskWrite1MiBFilesParallel: fig(o.disk), loopbackHttp: fig(o.loopback) },
    ...(o.roundTripMs !== undefined ? { roundTrip: { medianMs: o.roundTripMs, p99Ms: 1, n: 10, description: '' } } : {}),
  } as unknown as MachineLimits;
}

const LIMITS: FigureLimits = figureLimits(limitsWith({ ingestCrypto: 400, disk: 300, loopback: 1000, roundTripMs: 0.2, memoryGiB: 16 }));

function run(system: string, o: Partial<SystemRun> = {}): SystemRun {
  return { system, detail: '', ingest: null, retrieve: null, qido: null, seriesMetadata: null, frames: null, storedBytes: null, errors: [], ...o };
}

const HUGE: ScenarioResult = {
  id: 'huge-1',
  kind: 'huge',
  shape: 'huge',
  label: 'huge 1 GiB (4 × 256 MiB)',
  clients: 1,
  bytes: GiB,
  instances: 4,
  perRequest: 1,
  frameSource: { instanceBytes: GiB / 4, numberOfFrames: 512 },
  runs: [
    run('dicom-vault', {
      ingest: { bytes: GiB, seconds: 4, instances: 4, requests: 4, stored: 4, peakRssMiB: 100, cpuSeconds: 6, clientCpuSeconds: 2, ok: true, failures: [] },
      retrieve: { bytes: GiB, seconds: 2, parts: 4, ttfbMs: 20, peakRssMiB: 120, cpuSeconds: 3, clientCpuSeconds: 1, ok: true, failures: [] },
      qido: { median: 1, p99: 3, n: 100, ok: true },
      seriesMetadata: { median: 5, p99: 9, n: 20, ok: true },
      frames: { median: 4, p99: 12, n: 30, ok: true },
      storedBytes: GiB * 1.01,
    }),
    run('Orthanc', {
      ingest: { bytes: GiB, seconds: 10, instances: 4, requests: 4, stored: 4, peakRssMiB: 800, cpuSeconds: 8, clientCpuSeconds: 2, ok: true, failures: [] },
      retrieve: { bytes: GiB / 2, seconds: 8, parts: 2, ttfbMs: 2000, peakRssMiB: 800, cpuSeconds: 5, clientCpuSeconds: 1, ok: false, failures: ['x'] },
      qido: { median: 6, p99: 10, n: 100, ok: true },
      seriesMetadata: null,
      frames: { median: 1000, p99: 1500, n: 3, ok: true },
      storedBytes: GiB * 1.01,
    }),
  ],
};

describe('study shapes', () => {
  it('a huge study is at least 4 instances, more when they would pass the largest instance size', () => {
    expect(hugeStudyShape(1, 1)).toEqual({ instances: 4, frames: 512 });
    expect(hugeStudyShape(0.25, 1)).toEqual({ instances: 4, frames: 128 });
    expect(hugeStudyShape(4, 1)).toEqual({ instances: 4, frames: 2048 });
    expect(hugeStudyShape(16, 1)).toEqual({ instances: 16, frames: 2048 });
    expect(hugeStudyShape(16, 2)).toEqual({ instances: 8, frames: 4096 });
    expect(() => hugeStudyShape(0, 1)).toThrow(RangeError);
  });

  it('frames to read are spread over the whole instance, the same every run', () => {
    const f = spreadFrames(2048, 30);
    expect(f).toHaveLength(30);
    expect(f.every((n) => Number.isInteger(n) && n >= 1 && n <= 2048)).toBe(true);
    expect(new Set(f).size).toBe(30);
    expect(Math.min(...f)).toBeLessThan(2048 / 4);
    expect(Math.max(...f)).toBeGreaterThan((3 * 2048) / 4);
    expect(spreadFrames(2048, 30)).toEqual(f);
    expect(spreadFrames(1, 3)).toEqual([1, 1, 1]);
  });

  it('scenarios are planned from the options, each study its own', () => {
    const plans = planScenarios({
      scenarios: ['huge', 'small', 'concurrent'],
      sizesGiB: [0.25, 0.5],
      instances: [20, 40],
      perRequest: 10,
      concurrency: 3,
      maxInstanceGiB: 1,
    });
    expect(plans.map((p) => p.id)).toEqual(['huge-0.25', 'huge-0.5', 'small-20', 'small-40', 'concurrent-small', 'concurrent-huge']);
    const [h, , s, , cs, ch] = plans;
    expect(h!.label).toBe('huge 0.25 GiB (4 × 64 MiB)');
    expect(h!.perRequest).toBe(1);
    expect(h!.frameSource?.numberOfFrames).toBe(128);
    expect(s!.studies[0]!.instances).toHaveLength(20);
    expect(s!.perRequest).toBe(10);
    expect(s!.frameSource).toBeUndefined();
    // Concurrent: one study per client, of the first small count and the first huge size.
    expect(cs!.studies.map((x) => x.instances.length)).toEqual([20, 20, 20]);
    expect(ch!.studies.map((x) => x.instances.length)).toEqual([4, 4, 4]);
    const uids = plans.flatMap((p) => p.studies.map((x) => x.studyInstanceUID));
    expect(new Set(uids).size).toBe(uids.length);
    const patients = cs!.studies.map((x) => x.patientId);
    expect(new Set(patients).size).toBe(3);
    const header = scenarioHeader(cs!);
    expect(header.clients).toBe(3);
    expect(header.instances).toBe(60);
    expect(header.bytes).toBe(cs!.studies.reduce((a, x) => a + x.totalBytes, 0));
    expect(planScenarios({ scenarios: ['small'], sizesGiB: [1], instances: [5], perRequest: 1, concurrency: 1, maxInstanceGiB: 1 })).toHaveLength(1);
  });
});

describe('sampling', () => {
  it('nearest-rank percentiles', () => {
    const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile(xs, 100)).toBe(100);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
    // Of 20 samples the p99 is the largest.
    expect(summarize([...Array.from({ length: 19 }, () => 1), 40])).toEqual({ median: 1, p99: 40, n: 20 });
  });

  it('takes n samples, or stops after minN once the budget is spent', async () => {
    let clock = 0;
    let calls = 0;
    const fn = async () => {
      calls++;
      clock += 10;
      return { ms: 10, ok: true };
    };
    expect((await sampleLatencies(fn, { n: 5, now: () => clock })).n).toBe(5);
    calls = 0;
    const slow = await sampleLatencies(fn, { n: 100, minN: 3, budgetMs: 25, now: () => clock });
    expect(calls).toBe(3);
    expect(slow).toEqual({ median: 10, p99: 10, n: 3, ok: true });
  });

  it('a failed sample fails the figure and says which', async () => {
    let i = 0;
    const r = await sampleLatencies(
      async () => {
        i++;
        return { ms: i, ok: i !== 2, note: `HTTP 500 at ${i}` };
      },
      { n: 4 },
    );
    expect(r.ok).toBe(false);
    expect(r.note).toBe('sample 2: HTTP 500 at 2');
    expect(r.n).toBe(4);
  });

  it('peak RSS prefers the kernel peak; CPU per GiB', () => {
    expect(peakRss({ peakRssMiB: 90, hwmMiB: null })).toBe(90);
    expect(peakRss({ peakRssMiB: 90, hwmMiB: 120 })).toBe(120);
    expect(cpuSecondsPerGiB(2, GiB / 2)).toBe(4);
    expect(cpuSecondsPerGiB(null, GiB)).toBeNull();
    expect(cpuSecondsPerGiB(1, 0)).toBeNull();
  });
});

describe('limits each figure runs against', () => {
  it('ingest: the lower of crypto and disk; retrieval: the lower of loopback and crypto', () => {
    expect(LIMITS.ingest).toEqual({ name: 'disk, 1 MiB files + fsync', MBps: 300 });
    expect(LIMITS.retrieve).toEqual({ name: 'verify + decrypt crypto, 1 core', MBps: 400 });
    const slowNet = figureLimits(limitsWith({ ingestCrypto: 400, disk: 500, loopback: 350 }));
    expect(slowNet.ingest).toEqual({ name: 'ingest crypto, 1 core', MBps: 400 });
    expect(slowNet.retrieve).toEqual({ name: 'loopback HTTP', MBps: 350 });
    expect(slowNet.roundTripMs).toBeNull();
    expect(LIMITS.roundTripMs).toBe(0.2);
    expect(LIMITS.memoryMiB).toBe(16 * 1024);
  });
});

describe('figures of a scenario', () => {
  const figures = scenarioFigures(HUGE, LIMITS);
  const get = (id: string) => {
    const f = figures.find((x) => x.id === id);
    if (!f) throw new Error(`no figure ${id}`);
    return f;
  };

  it('ingest MB/s against the ingest limit, and the ratio to the peer', () => {
    const f = get('ingest-MBps');
    expect(f.ours).toBeCloseTo(GiB / 1e6 / 4);
    expect(f.peer).toBeCloseTo(GiB / 1e6 / 10);
    expect(f.ratio).toBeCloseTo(2.5);
    expect(f.limit).toEqual({ name: 'disk, 1 MiB files + fsync', value: 300 });
    expect(ofLimit(f)).toBe('89% of 300 (disk, 1 MiB files + fsync)');
  });

  it('instances per second against the same limit in instances of this study', () => {
    const f = get('ingest-instances');
    expect(f.ours).toBe(1);
    expect(f.limit!.value).toBeCloseTo((300e6 * 4) / GiB);
  });

  it('memory, CPU and latency: lower is better, the ratio reads peer/ours', () => {
    const rss = get('ingest-rss');
    expect(rss.lowerIsBetter).toBe(true);
    expect(rss.ratio).toBe(8);
    expect(ofLimit(rss)).toBe('1% of 16,384 (RAM)');
    const cpu = get('ingest-cpu');
    expect(cpu.ours).toBe(6);
    expect(cpu.peer).toBe(8);
    expect(cpu.limit).toEqual({ name: 'ingest crypto, 1 core', value: GiB / 400e6, kind: 'floor' });
    expect(ofLimit(cpu)).toBe('2.2× the floor of 2.68 (ingest crypto, 1 core)');
    const q = get('qido-median');
    expect(q.ratio).toBe(6);
    expect(ofLimit(q)).toBe('5.0× the floor of 0.2 (empty loopback request)');
    expect(get('frame-p99').ratio).toBe(125);
  });

  it('a failed peer operation is kept and flagged; a figure nobody has is left out', () => {
    const r = get('retrieve-MBps');
    expect(r.ok).toBe(true);
    expect(r.peerOk).toBe(false);
    const meta = get('series-metadata-median');
    expect(meta.peer).toBeNull();
    expect(meta.ratio).toBeNull();
    const none = scenarioFigures({ ...HUGE, runs: [run('dicom-vault', { ingest: HUGE.runs[0]!.ingest })] }, null);
    expect(none.map((f) => f.id)).toEqual(['ingest-MBps', 'ingest-instances', 'ingest-rss', 'ingest-cpu']);
    expect(none.every((f) => f.limit === undefined && f.peer === undefined)).toBe(true);
  });

  it('bytes stored per byte with four decimals', () => {
    const s = get('stored-per-byte');
    expect(s.ours).toBeCloseTo(1.01);
    expect(s.digits).toBe(4);
    expect(ratioText(s)).toBe('≈ same');
  });

  it('frame latency only where one huge instance was read by one client', () => {
    expect(figures.some((f) => f.id.startsWith('frame-'))).toBe(true);
    const concurrent = scenarioFigures({ ...HUGE, kind: 'concurrent' }, LIMITS);
    expect(concurrent.some((f) => f.id.startsWith('frame-'))).toBe(false);
  });

  it('chart bars: MB/s and memory for all, instances per second for small instances only', () => {
    const rows = chartRows([HUGE, { ...HUGE, id: 'small', shape: 'small', label: 'small 8' }]);
    expect(rows.filter((r) => r.group === 'ingest, huge 1 GiB (4 × 256 MiB)').map((r) => r.system)).toEqual(['dicom-vault', 'Orthanc']);
    const hugeIngest = rows.find((r) => r.group === 'ingest, huge 1 GiB (4 × 256 MiB)' && r.system === 'dicom-vault')!;
    expect(hugeIngest.MBps).toBeCloseTo(GiB / 4e6);
    expect(hugeIngest.peakRssMiB).toBe(100);
    expect(hugeIngest.instancesPerSecond).toBeUndefined();
    expect(rows.find((r) => r.group === 'retrieve, small 8' && r.system === 'Orthanc')!.instancesPerSecond).toBe(0.25);
  });
});

describe('report formatting', () => {
  it('ratios: ≈ same within 5%, "more" when ours is worse', () => {
    expect(ratioText({ ours: 100, peer: 103 })).toBe('≈ same');
    expect(ratioText({ ours: 300, peer: 100 })).toBe('3.0×');
    expect(ratioText({ ours: 50, peer: 100 })).toBe('0.5×');
    expect(ratioText({ ours: 200, peer: 100, lowerIsBetter: true })).toBe('2.0× more');
    expect(ratioText({ ours: 100, peer: 200, lowerIsBetter: true })).toBe('2.0× less');
    expect(ratioText({ ours: 100, peer: null })).toBe('');
  });

  it('a table for one scenario, failures flagged', () => {
    const t = comparisonTable(
      [{ scenario: 's', operation: 'ingest', unit: 'MB/s', ours: 300, peer: 100, peerOk: false, ok: true }],
      { ours: 'dicom-vault', peer: 'Orthanc' },
      { scenarioColumn: false },
    );
    expect(t.split('\n')[0]).toBe('| operation | dicom-vault | Orthanc | dicom-vault vs Orthanc | of the machine limit |');
    expect(t.split('\n')[1]).toBe('|---|---:|---:|---:|---|');
    expect(t).toContain('| ingest | 300 MB/s | 100 MB/s (FAILED) | 3.0× |');
  });

  it('the markdown report holds what ran and nothing else', () => {
    const base: ReportInput = {
      started: '2026-12-01T00:00:00.000Z',
      command: 'npm run bench -- --peer orthanc',
      machine: '2 × test CPU',
      load: { before: [1, 1, 1], after: [2, 2, 2] },
      limits: null,
      figures: scenarioFigures(HUGE, LIMITS),
      targets: [],
      ours: 'dicom-vault (fs store)',
      peer: 'Orthanc 1.10.1 (DICOMweb plugin 1.7)',
      chart: 'results.svg',
      backends: null,
      anchor: null,
      scale: null,
      notes: ['a note'],
    };
    const md = reportMarkdown(base);
    expect(md).toContain('### Results of 2026-12-01');
    expect(md).toContain('`npm run bench -- --peer orthanc`');
    expect(md).toContain('![benchmark chart](results.svg)');
    expect(md).toContain('#### huge 1 GiB (4 × 256 MiB)');
    expect(md).toContain('| ingest (STOW) | 268 MB/s | 107 MB/s | 2.5× | 89% of 300 (disk, 1 MiB files + fsync) |');
    expect(md).toContain('- a note');
    for (const absent of ['#### Limits', '#### Block stores', '#### Anchoring', '#### Scale', '#### Targets']) expect(md).not.toContain(absent);
    expect(reportMarkdown({ ...base, targets: checkTargets([HUGE], LIMITS) })).toContain(
      '| retrieval first byte < 100 ms | huge 1 GiB (4 × 256 MiB) | 20 ms | MET |',
    );
    const withBackends = reportMarkdown({
      ...base,
      backends: [
        { backend: 'ipfs', operation: 'ingest (STOW)', bytes: 1, seconds: 1, MBps: 150, ratioToFs: 0.5, nodePeakRssMiB: 200, nodeCpuSeconds: 3, ok: true },
      ],
      scale: '| x |\n',
    });
    expect(withBackends).toContain('| ipfs | ingest (STOW) | 150 | 0.50× | 200 MiB | 3 | yes |');
    expect(withBackends).toContain('#### Scale on paper');
  });
});

describe('scale inputs', () => {
  const fp = (o: Partial<Footprint>): Footprint => ({
    rawBlocks: 0,
    rawBytes: 0,
    instanceNodes: [],
    manifests: [],
    blockBytes: 0,
    catalogBytes: 0,
    keysBytes: 0,
    ...o,
  });

  it('nothing to project without a huge study', () => {
    expect(measuredScale({ huge: [] })).toBeNull();
  });

  it('the largest huge study for per-GiB figures, the small one for catalog bytes per instance, RSS at every size', () => {
    const small = { instances: 1000, footprint: fp({ catalogBytes: 4_000_000 }) };
    const m = measuredScale({
      huge: [
        {
          bytes: 4 * GiB,
          instances: 4,
          frames: 8192,
          peakRssMiB: 110,
          ingestMBps: 250,
          footprint: fp({
            blockBytes: 4 * GiB + 4 * MiB,
            catalogBytes: 4 * 4000 + 8192 * 100,
            manifests: [{ bytes: 200 + 4 * 41, links: 4 }],
            instanceNodes: [{ bytes: 300 + 1024 * 41, links: 1024 }],
          }),
        },
        { bytes: GiB, instances: 4, frames: 2048, peakRssMiB: 100, ingestMBps: 200, footprint: fp({ blockBytes: 2 * GiB }) },
      ],
      small,
      heldBytesPerChunk: 900,
    })!;
    expect(m.bytesStoredPerByte).toBeCloseTo(1 + 1 / 1024);
    expect(m.ingestMBps).toBe(250);
    expect(m.catalogBytesPerInstance).toBe(4000);
    expect(m.catalogBytesPerFrame).toBe(100);
    expect(m.manifestFixedBytes).toBe(200);
    expect(m.peakRss).toEqual([
      { studyBytes: GiB, MiB: 100 },
      { studyBytes: 4 * GiB, MiB: 110 },
    ]);
    expect(m.heldBytesPerChunk).toBe(900);
  });

  it('diskUsage counts allocated bytes of a whole tree, 0 for none', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bench-du-'));
    try {
      await mkdir(join(dir, 'a', 'b'), { recursive: true });
      await writeFile(join(dir, 'a', 'b', 'one'), Buffer.alloc(MiB, 1));
      await writeFile(join(dir, 'two'), Buffer.alloc(MiB, 2));
      const used = await diskUsage(dir);
      expect(used).toBeGreaterThanOrEqual(2 * MiB);
      expect(used).toBeLessThan(2 * MiB + 64 * 1024);
      expect(await diskUsage(join(dir, 'missing'))).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the issue's targets", () => {
  const targets = checkTargets([HUGE], LIMITS);
  const find = (t: string) => {
    const x = targets.find((y) => y.target === t);
    if (!x) throw new Error(`no target ${t}`);
    return x;
  };

  it('huge instances: ingest and retrieval ratios, memory, first byte, share of the limit', () => {
    expect(find('ingest ≥ 2× Orthanc MB/s')).toMatchObject({ measured: '2.50× (268 vs 107 MB/s)', met: true });
    expect(find('ingest peak RSS ≥ 10× below Orthanc')).toMatchObject({ measured: '8.00× (100 vs 800 MiB)', met: false });
    // The peer's retrieval failed: no ratio is claimed.
    expect(find('retrieval ≥ 2× Orthanc MB/s')).toMatchObject({ measured: 'no peer figure', met: null });
    expect(find('retrieval first byte < 100 ms').met).toBe(true);
    expect(find('ingest ≥ 70% of the lower of the disk and crypto limits')).toMatchObject({ met: true });
    expect(find('ingest ≥ 70% of the lower of the disk and crypto limits').measured).toMatch(/^89% \(268 of 300 MB\/s, disk/);
  });

  it('small instances: instances/s against 2×, retrieval against 0.8×', () => {
    const { frameSource: _none, ...rest } = HUGE;
    const small: ScenarioResult = { ...rest, id: 'small-8', shape: 'small', kind: 'small', label: 'small 8' };
    const t = checkTargets([small], null);
    expect(t.map((x) => x.target)).toEqual([
      'ingest ≥ 2× Orthanc instances/s',
      'retrieval ≥ 0.8× Orthanc MB/s',
      'ingest ≥ 70% of the lower of the disk and crypto limits',
    ]);
    expect(t[1]).toMatchObject({ measured: 'no peer figure', met: null });
    expect(t[0]).toMatchObject({ measured: '2.50× (1 vs 0.4 inst/s)', met: true });
    expect(t[2]).toMatchObject({ measured: 'limits not measured', met: null });
  });

  it('peak RSS flat across sizes within noise; one size cannot tell', () => {
    const at = (gib: number, MiB: number): ScenarioResult => ({
      ...HUGE,
      id: `huge-${gib}`,
      bytes: gib * GiB,
      runs: [run('dicom-vault', { ingest: { ...HUGE.runs[0]!.ingest!, peakRssMiB: MiB } })],
    });
    const flat = (rs: ScenarioResult[]) => checkTargets(rs, null).find((x) => x.target === 'ingest peak RSS flat across study sizes')!;
    expect(flat([at(1, 150)]).met).toBeNull();
    expect(flat([at(16, 170), at(1, 150)])).toMatchObject({ scenario: '1 GiB, 16 GiB', measured: '150 MiB, 170 MiB', met: true });
    expect(flat([at(1, 150), at(16, 400)]).met).toBe(false);
  });

  it('without a peer, only the targets against the machine', () => {
    const alone = checkTargets([{ ...HUGE, runs: [HUGE.runs[0]!] }], LIMITS).map((t) => t.target);
    expect(alone).toEqual([
      'retrieval first byte < 100 ms',
      'ingest ≥ 70% of the lower of the disk and crypto limits',
      'ingest peak RSS flat across study sizes',
    ]);
  });

  it('concurrent scenarios have no target of their own', () => {
    expect(checkTargets([{ ...HUGE, kind: 'concurrent' }], LIMITS).filter((t) => t.scenario === HUGE.label)).toEqual([]);
  });
  it("DIMSE scenarios: C-STORE ingest against 2× the peer's DIMSE, by instances or by bytes, nothing else", () => {
    const dimseHuge: ScenarioResult = {
      ...HUGE,
      id: 'dimse-huge',
      kind: 'dimse',
      label: 'DIMSE huge 1 GiB',
      runs: HUGE.runs.map((r) => ({ ...r, retrieve: null, qido: null, seriesMetadata: null, frames: null })),
    };
    const { frameSource: _none, ...rest } = dimseHuge;
    const dimseSmall: ScenarioResult = { ...rest, id: 'dimse-small', shape: 'small', label: 'DIMSE small 4' };
    const t = checkTargets([dimseHuge, dimseSmall], LIMITS);
    expect(t).toEqual([
      { target: "DIMSE ingest ≥ 2× Orthanc's DIMSE MB/s", scenario: 'DIMSE huge 1 GiB', measured: '2.50× (268 vs 107 MB/s)', met: true },
      { target: "DIMSE ingest ≥ 2× Orthanc's DIMSE instances/s", scenario: 'DIMSE small 4', measured: '2.50× (1 vs 0.4 inst/s)', met: true },
    ]);
    // The figures name the protocol; no retrieval or latency figure appears.
    const f = scenarioFigures(dimseHuge, LIMITS);
    expect(f.find((x) => x.id === 'ingest-MBps')?.operation).toBe('ingest (DIMSE C-STORE)');
    expect(f.some((x) => x.id.startsWith('retrieve') || x.id.startsWith('frame') || x.id.startsWith('qido'))).toBe(false);
    expect(scenarioFigures(HUGE, LIMITS).find((x) => x.id === 'ingest-MBps')?.operation).toBe('ingest (STOW)');
  });
});

describe('repeated scenarios', () => {
  const ok = { ok: true, failures: [] };
  const small = (seconds: number, o: Partial<SystemRun> = {}): SystemRun =>
    run('dicom-vault', {
      ingest: { bytes: 500e6, seconds, instances: 1000, requests: 10, stored: 1000, peakRssMiB: 200, cpuSeconds: seconds + 1, clientCpuSeconds: 1, ...ok },
      retrieve: { bytes: 500e6, seconds: 1, parts: 1000, ttfbMs: 20, peakRssMiB: 200, cpuSeconds: 1, clientCpuSeconds: 1, ...ok },
      detail: `${seconds} s`,
      ...o,
    });

  it('reports the run with the median ingest rate and lists every run in the order they ran', () => {
    const m = medianRun([small(4), small(2.5), small(3.2)]);
    expect(m.detail).toBe('3.2 s');
    expect(m.repeats!.map((r) => Math.round(r.instancesPerSecond!))).toEqual([250, 400, 313]);
    expect(m.repeats!.map((r) => Math.round(r.megabytesPerSecond!))).toEqual([125, 200, 156]);
    expect(m.repeats!.map((r) => r.cpuSeconds)).toEqual([5, 3.5, 4.2]);
  });

  it('takes the lower middle run of an even count, and a single run as it is', () => {
    expect(medianRun([small(2), small(4), small(3), small(1)]).detail).toBe('3 s');
    const one = small(3);
    expect(medianRun([one])).toBe(one);
    expect(one.repeats).toBeUndefined();
    expect(() => medianRun([])).toThrow(RangeError);
  });

  it('a failed run is reported rather than hidden behind good ones', () => {
    const broken = small(2, { errors: ['node exited'] });
    const m = medianRun([small(3), broken, small(4)]);
    expect(m.errors).toEqual(['node exited']);
    const noIngest = medianRun([small(3), small(2, { ingest: null }), small(4)]);
    expect(noIngest.ingest).toBeNull();
    expect(noIngest.repeats!.map((r) => r.instancesPerSecond)).toEqual([1000 / 3, null, 250]);
    const badRetrieval = medianRun([small(3), small(5, { retrieve: null })]);
    expect(badRetrieval.retrieve).toBeNull();
  });

  it('a DIMSE scenario only ingests: no retrieval is no failure, and its median run is reported', () => {
    const dimse = [small(3, { retrieve: null }), small(5, { retrieve: null }), small(4, { retrieve: null })];
    expect(dimse.some((r) => runFailed(r, false))).toBe(false);
    expect(medianRun(dimse, false).detail).toBe('4 s');
    expect(runFailed(small(3, { retrieve: null }))).toBe(true);
    expect(runFailed(small(3, { retrieve: null, errors: ['storescu exited 1'] }), false)).toBe(true);
  });
});
