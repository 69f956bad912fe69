// `npm run bench`: streaming benchmarks over loopback against a real node process. Studies are
// generated on the fly (bench/generate.ts): nothing large is written except the node's own store.
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createAgent, qido, stow, wado, wadoFrames } from './client.ts';
import { planStudy, type GeneratedStudy } from './generate.ts';
import { serveNode, type ServedNode } from './node-process.ts';
import { startRssSampler, type RssReport } from './rss.ts';

const HELP = `npm run bench -- [options]

  --scenario NAME    huge | small | all (default all)
                       huge:  a few multi-frame instances (Enhanced MR, 512x512x16 bit frames)
                       small: many single-frame MR instances (512x512x16 bit, ~525 KB each)
  --size GIB         study size in GiB for the huge scenario (default 1; 4 and 16 work: streamed)
  --instances N      instances in the small scenario (default 1000)
  --per-request N    instances per STOW request in the small scenario (default 100)
  --concurrency N    STOW requests in flight (default 1)
  --out FILE         JSON results (default bench/out/results-<time>.json)
  --keep             keep the node's data directory
  --cpu-prof DIR     write a V8 CPU profile of the node process into DIR (one .cpuprofile per run)
  -h, --help         this text
`;

interface Row {
  scenario: string;
  operation: string;
  bytes?: number;
  seconds?: number;
  MBps?: number;
  instancesPerSecond?: number;
  ttfbMs?: number;
  latencyMs?: { median: number; p99: number; n: number };
  nodePeakRssMiB?: number;
  nodeCpuSeconds?: number | null;
  ok: boolean;
  note?: string;
}

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

const round = (n: number, d = 1): number => Math.round(n * 10 ** d) / 10 ** d;

async function measure<T>(node: ServedNode, fn: () => Promise<T>): Promise<{ result: T; rss: RssReport }> {
  const sampler = startRssSampler(node.pid);
  const result = await fn();
  return { result, rss: sampler.stop() };
}

async function latencies(n: number, fn: () => Promise<{ ms: number; ok: boolean }>): Promise<{ median: number; p99: number; n: number; ok: boolean }> {
  const ms: number[] = [];
  let ok = true;
  for (let i = 0; i < n; i++) {
    const r = await fn();
    ms.push(r.ms);
    ok &&= r.ok;
  }
  return { median: round(percentile(ms, 50), 2), p99: round(percentile(ms, 99), 2), n, ok };
}

async function ingestAndRetrieve(node: ServedNode, scenario: string, study: GeneratedStudy, perRequest: number, concurrency: number, rows: Row[]): Promise<void> {
  const agent = createAgent();
  const ing = await measure(node, () => stow({ baseUrl: node.url, study, perRequest, concurrency, agent }));
  rows.push({
    scenario,
    operation: `STOW ${perRequest}/request x${concurrency}`,
    bytes: ing.result.bytes,
    seconds: round(ing.result.seconds, 2),
    MBps: round(ing.result.bytes / 1e6 / ing.result.seconds),
    instancesPerSecond: round(ing.result.instances / ing.result.seconds),
    nodePeakRssMiB: round(ing.rss.peakRssMiB),
    nodeCpuSeconds: ing.rss.cpuSeconds,
    ok: ing.result.failures.length === 0 && ing.result.stored === study.instances.length,
    ...(ing.result.failures.length ? { note: ing.result.failures.slice(0, 3).join('; ') } : {}),
  });
  // Hash checking on the client runs at ~1.7 GB/s on one core and would bottleneck the
  // retrieval figure; correctness of WADO is the tests' job, so the timed run only counts.
  const ret = await measure(node, () => wado({ baseUrl: node.url, studyInstanceUID: study.studyInstanceUID, expect: study, verify: false, agent }));
  rows.push({
    scenario,
    operation: 'WADO study (transfer-syntax=*)',
    bytes: ret.result.partBytes,
    seconds: round(ret.result.seconds, 2),
    MBps: round(ret.result.partBytes / 1e6 / ret.result.seconds),
    instancesPerSecond: round(ret.result.parts / ret.result.seconds),
    ttfbMs: round(ret.result.ttfbMs, 1),
    nodePeakRssMiB: round(ret.rss.peakRssMiB),
    nodeCpuSeconds: ret.rss.cpuSeconds,
    ok: ret.result.status === 200 && ret.result.parts === study.instances.length,
  });
  const first = study.instances[0]!;
  const seriesMeta = await latencies(20, async () => {
    const t0 = performance.now();
    const res = await fetch(`${node.url}/studies/${study.studyInstanceUID}/series/${first.seriesInstanceUID}/metadata`, { headers: { accept: 'application/dicom+json' } });
    const body = (await res.json()) as unknown[];
    return { ms: performance.now() - t0, ok: res.status === 200 && body.length === study.instances.length };
  });
  rows.push({ scenario, operation: `series metadata (${study.instances.length} instances)`, latencyMs: seriesMeta, ok: seriesMeta.ok });
  const q = await latencies(50, async () => {
    const r = await qido(node.url, `/studies?PatientID=${encodeURIComponent(study.patientId)}`, { agent });
    return { ms: r.ms, ok: r.results === 1 };
  });
  rows.push({ scenario, operation: 'QIDO /studies?PatientID=', latencyMs: q, ok: q.ok });
  agent.destroy();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', default: 'all' },
      size: { type: 'string', default: '1' },
      instances: { type: 'string', default: '1000' },
      'per-request': { type: 'string', default: '100' },
      concurrency: { type: 'string', default: '1' },
      out: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const scenarios = values.scenario === 'all' ? ['huge', 'small'] : [values.scenario!];
  const rows: Row[] = [];
  const dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-bench-'));
  // NODE_OPTIONS reaches the node process (bin/dicom-vault.js keeps the environment when it
  // re-executes itself); the profile is written when it exits after SIGTERM.
  const profDir = values['cpu-prof'];
  if (profDir !== undefined) mkdirSync(profDir, { recursive: true });
  const env = profDir === undefined ? {} : { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${resolve(profDir)}`.trim() };
  const node = await serveNode(dataDir, [], env);
  const started = new Date();
  try {
    const concurrency = Number(values.concurrency);
    if (scenarios.includes('huge')) {
      const gib = Number(values.size);
      const study = planStudy({ kind: 'multiframe', totalBytes: gib * 2 ** 30, seed: 1 });
      const scenario = `huge ${gib} GiB (${study.instances.length} x ${study.instances[0]!.numberOfFrames} frames)`;
      await ingestAndRetrieve(node, scenario, study, 1, concurrency, rows);
      const inst = study.instances[0]!;
      const frame = Math.min(500, inst.numberOfFrames);
      const f = await latencies(20, async () => {
        const r = await wadoFrames(node.url, study.studyInstanceUID, inst.seriesInstanceUID, inst.sopInstanceUID, [frame], { expect: inst });
        return { ms: r.ms, ok: r.ok };
      });
      rows.push({ scenario, operation: `frame ${frame} of a ${round(inst.size / 2 ** 20, 0)} MiB instance`, latencyMs: f, ok: f.ok });
    }
    if (scenarios.includes('small')) {
      const study = planStudy({ kind: 'single', instances: Number(values.instances), seed: 2 });
      await ingestAndRetrieve(node, `small ${study.instances.length} instances`, study, Number(values['per-request']), concurrency, rows);
    }
  } finally {
    await node.stop();
    if (!values.keep) await rm(dataDir, { recursive: true, force: true });
  }

  const table = rows.map((r) => ({
    scenario: r.scenario,
    operation: r.operation,
    'MB/s': r.MBps ?? '',
    'inst/s': r.instancesPerSecond ?? '',
    'TTFB ms': r.ttfbMs ?? '',
    'median/p99 ms': r.latencyMs ? `${r.latencyMs.median} / ${r.latencyMs.p99}` : '',
    'node peak RSS MiB': r.nodePeakRssMiB ?? '',
    ok: r.ok ? 'yes' : 'NO',
  }));
  console.table(table);
  const out = values.out ?? join('bench', 'out', `results-${started.toISOString().replaceAll(':', '-')}.json`);
  mkdirSync(join(out, '..'), { recursive: true });
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGiB: round(totalmem() / 2 ** 30), node: process.version };
  writeFileSync(out, JSON.stringify({ started: started.toISOString(), machine, options: values, rows }, null, 2));
  console.log(`results written to ${out}`);
  if (profDir !== undefined) console.log(`CPU profile of the node written to ${profDir}`);
  if (rows.some((r) => !r.ok)) process.exitCode = 1;
}

await main();
