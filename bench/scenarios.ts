// The scenarios of `npm run bench`, and one pass of one system (ours or the peer) through one:
// every client pushes its own study at once (STOW), as many viewers fetch them back at once
// (WADO), then QIDO, series metadata and, inside a huge instance, frame latencies. The server
// is any DICOMweb base URL with a PID to watch: the same code measures dicom-vault and Orthanc.
import type http from 'node:http';
import { createAgent, qido, stow, wado, wadoFrames } from './client.ts';
import {
  hugeStudyShape,
  peakRss,
  sampleLatencies,
  spreadFrames,
  type IngestRun,
  type LatencyResult,
  type RetrieveRun,
  type ScenarioResult,
  type SystemRun,
} from './figures.ts';
import { planStudy, type GeneratedInstance, type GeneratedStudy } from './generate.ts';
import type { BenchOptions } from './options.ts';
import { startRssSampler } from './rss.ts';
import { bytes as fmtBytes } from './scale.ts';

/** QIDO requests timed per scenario and system. */
export const QIDO_SAMPLES = 100;
/** Series metadata requests timed (a big series' metadata is megabytes). */
export const METADATA_SAMPLES = 20;
/** Single-frame requests timed inside one huge instance. */
export const FRAME_SAMPLES = 30;
/** Largest DICOM JSON response read (series metadata of 10,000 instances or of thousands of frames). */
export const MAX_METADATA_BYTES = 1 << 30;
/** Failures kept per operation in the results (the count is always kept). */
const MAX_FAILURES_KEPT = 5;

export interface ScenarioPlan {
  id: string;
  kind: ScenarioResult['kind'];
  shape: ScenarioResult['shape'];
  label: string;
  /** One per client. */
  studies: GeneratedStudy[];
  perRequest: number;
  /** Huge, one client: the instance frames are read from. */
  frameSource?: GeneratedInstance;
}

/** GiB as people write it: 1, 0.25, 16. */
const gibText = (g: number): string => `${Number(g.toFixed(3))} GiB`;

function hugeStudy(gib: number, maxInstanceGiB: number, seed: number): GeneratedStudy {
  const { instances, frames } = hugeStudyShape(gib, maxInstanceGiB);
  return planStudy({ kind: 'multiframe', instances, frames, seed });
}

/** The scenarios the options ask for, in run order, with their studies planned (nothing generated yet). */
export function planScenarios(o: Pick<BenchOptions, 'scenarios' | 'sizesGiB' | 'instances' | 'perRequest' | 'concurrency' | 'maxInstanceGiB'>): ScenarioPlan[] {
  const plans: ScenarioPlan[] = [];
  // Distinct seeds: distinct UIDs and pixel data for every study of the run.
  if (o.scenarios.includes('huge')) {
    o.sizesGiB.forEach((gib, i) => {
      const study = hugeStudy(gib, o.maxInstanceGiB, 10 + i);
      const first = study.instances[0]!;
      plans.push({
        id: `huge-${gib}`,
        kind: 'huge',
        shape: 'huge',
        label: `huge ${gibText(gib)} (${study.instances.length} × ${fmtBytes(first.size)})`,
        studies: [study],
        perRequest: 1,
        frameSource: first,
      });
    });
  }
  if (o.scenarios.includes('small')) {
    o.instances.forEach((n, i) => {
      plans.push({
        id: `small-${n}`,
        kind: 'small',
        shape: 'small',
        label: `small ${n.toLocaleString('en-US')} instances`,
        studies: [planStudy({ kind: 'single', instances: n, seed: 100 + i })],
        perRequest: o.perRequest,
      });
    });
  }
  if (o.scenarios.includes('concurrent')) {
    const n = o.instances[0]!;
    const gib = o.sizesGiB[0]!;
    const c = o.concurrency;
    plans.push({
      id: 'concurrent-small',
      kind: 'concurrent',
      shape: 'small',
      label: `${c} clients at once × small ${n.toLocaleString('en-US')} instances`,
      studies: Array.from({ length: c }, (_, i) => planStudy({ kind: 'single', instances: n, seed: 200 + i })),
      perRequest: o.perRequest,
    });
    plans.push({
      id: 'concurrent-huge',
      kind: 'concurrent',
      shape: 'huge',
      label: `${c} clients at once × huge ${gibText(gib)}`,
      studies: Array.from({ length: c }, (_, i) => hugeStudy(gib, o.maxInstanceGiB, 300 + i)),
      perRequest: 1,
    });
  }
  if (o.scenarios.includes('dimse')) {
    // One association per study (perRequest: every instance of it); the first of each size list,
    // as the concurrent scenario does.
    const n = o.instances[0]!;
    const gib = o.sizesGiB[0]!;
    const c = o.concurrency;
    const small = planStudy({ kind: 'single', instances: n, seed: 400 });
    plans.push({
      id: 'dimse-small',
      kind: 'dimse',
      shape: 'small',
      label: `DIMSE small ${n.toLocaleString('en-US')} instances`,
      studies: [small],
      perRequest: n,
    });
    const huge = hugeStudy(gib, o.maxInstanceGiB, 410);
    plans.push({
      id: 'dimse-huge',
      kind: 'dimse',
      shape: 'huge',
      label: `DIMSE huge ${gibText(gib)} (${huge.instances.length} × ${fmtBytes(huge.instances[0]!.size)})`,
      studies: [huge],
      perRequest: huge.instances.length,
    });
    if (c > 1) {
      plans.push({
        id: 'dimse-concurrent',
        kind: 'dimse',
        shape: 'small',
        label: `DIMSE ${c} clients at once × small ${n.toLocaleString('en-US')} instances`,
        studies: Array.from({ length: c }, (_, i) => planStudy({ kind: 'single', instances: n, seed: 420 + i })),
        perRequest: n,
      });
    }
  }
  return plans;
}

/** The plan's numbers as they go into the results. */
export function scenarioHeader(p: ScenarioPlan): Omit<ScenarioResult, 'runs'> {
  const instances = p.studies.reduce((a, s) => a + s.instances.length, 0);
  return {
    id: p.id,
    kind: p.kind,
    shape: p.shape,
    label: p.label,
    clients: p.studies.length,
    bytes: p.studies.reduce((a, s) => a + s.totalBytes, 0),
    instances,
    perRequest: p.perRequest,
    ...(p.frameSource ? { frameSource: { instanceBytes: p.frameSource.size, numberOfFrames: p.frameSource.numberOfFrames } } : {}),
  };
}

export interface Server {
  system: string;
  detail: string;
  /** DICOMweb base URL. */
  url: string;
  /** The server process, for RSS and CPU. */
  pid: number;
}

/** One system through one scenario. Failures are recorded, not thrown: the run goes on. */
export async function exercise(server: Server, plan: ScenarioPlan, log: (line: string) => void): Promise<SystemRun> {
  const run: SystemRun = {
    system: server.system,
    detail: server.detail,
    ingest: null,
    retrieve: null,
    qido: null,
    seriesMetadata: null,
    frames: null,
    storedBytes: null,
    errors: [],
  };
  // One connection pool per client, as separate PACS and viewers would have.
  const agents = plan.studies.map(() => createAgent());
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T | null> => {
    log(`${server.system}: ${name}`);
    try {
      return await fn();
    } catch (err) {
      run.errors.push(`${name}: ${describe(err)}`);
      log(`${server.system}: ${name} failed: ${describe(err)}`);
      return null;
    }
  };
  try {
    const total = plan.studies.reduce((a, s) => a + s.totalBytes, 0);
    run.ingest = await step(`STOW ${plan.studies.length} × ${fmtBytes(total / plan.studies.length)}, ${plan.perRequest}/request`, () =>
      ingest(server, plan, agents),
    );
    // Nothing to read back when nothing went in.
    if (run.ingest === null || run.ingest.stored === 0) return run;
    run.retrieve = await step('WADO the studies back', () => retrieve(server, plan));
    const study = plan.studies[0]!;
    const agent = agents[0]!;
    run.qido = await step('QIDO latency', () =>
      sampleLatencies(
        async () => {
          const r = await qido(server.url, `/studies?PatientID=${encodeURIComponent(study.patientId)}`, { agent });
          return { ms: r.ms, ok: r.status === 200 && r.results === 1, note: `HTTP ${r.status}, ${r.results} results` };
        },
        { n: QIDO_SAMPLES },
      ),
    );
    run.seriesMetadata = await step('series metadata latency', () =>
      sampleLatencies(
        async () => {
          const r = await qido(server.url, `/studies/${study.studyInstanceUID}/series/${study.seriesInstanceUID}/metadata`, {
            agent,
            maxResponseBytes: MAX_METADATA_BYTES,
          });
          return { ms: r.ms, ok: r.status === 200 && r.results === study.instances.length, note: `HTTP ${r.status}, ${r.results} instances` };
        },
        { n: METADATA_SAMPLES },
      ),
    );
    const inst = plan.frameSource;
    if (inst) {
      run.frames = await step(`frame latency (${inst.numberOfFrames} frames, ${fmtBytes(inst.size)})`, () => frameLatency(server, study, inst));
    }
    return run;
  } finally {
    for (const a of agents) a.destroy();
  }
}

async function ingest(server: Server, plan: ScenarioPlan, agents: http.Agent[]): Promise<IngestRun> {
  const sampler = startRssSampler(server.pid);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const results = await Promise.all(
    plan.studies.map((study, i) => stow({ baseUrl: server.url, study, perRequest: plan.perRequest, concurrency: 1, agent: agents[i]! })),
  );
  const seconds = (performance.now() - t0) / 1000;
  const rss = sampler.stop();
  const instances = plan.studies.reduce((a, s) => a + s.instances.length, 0);
  const stored = results.reduce((a, r) => a + r.stored, 0);
  const failures = results.flatMap((r, i) => r.failures.map((f) => `client ${i + 1}: ${f}`));
  return {
    bytes: results.reduce((a, r) => a + r.bytes, 0),
    seconds,
    instances,
    requests: results.reduce((a, r) => a + r.requests, 0),
    stored,
    peakRssMiB: peakRss(rss),
    cpuSeconds: rss.cpuSeconds,
    clientCpuSeconds: cpuSecondsSince(cpu0),
    ok: failures.length === 0 && stored === instances,
    failures: failures.length > MAX_FAILURES_KEPT ? [...failures.slice(0, MAX_FAILURES_KEPT), `… ${failures.length} in all`] : failures,
  };
}

async function retrieve(server: Server, plan: ScenarioPlan): Promise<RetrieveRun> {
  const sampler = startRssSampler(server.pid);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  // Not hashed by the client: at ~1.7 GB/s on one core the client would be the bottleneck.
  // Correctness of WADO is the tests' job; here parts and bytes are counted.
  const results = await Promise.all(
    plan.studies.map((study) => wado({ baseUrl: server.url, studyInstanceUID: study.studyInstanceUID, expect: study, verify: false })),
  );
  const seconds = (performance.now() - t0) / 1000;
  const rss = sampler.stop();
  const failures: string[] = [];
  results.forEach((r, i) => {
    const study = plan.studies[i]!;
    if (r.status !== 200) failures.push(`client ${i + 1}: HTTP ${r.status ?? 'no response'}`);
    if (r.partBytes !== study.totalBytes) failures.push(`client ${i + 1}: ${r.partBytes} bytes, expected ${study.totalBytes}`);
    for (const m of r.mismatches) failures.push(`client ${i + 1}: ${m}`);
  });
  const ttfb = results.map((r) => r.ttfbMs).sort((a, b) => a - b);
  return {
    bytes: results.reduce((a, r) => a + r.partBytes, 0),
    seconds,
    parts: results.reduce((a, r) => a + r.parts, 0),
    ttfbMs: Math.round(ttfb[ttfb.length >> 1]! * 10) / 10,
    peakRssMiB: peakRss(rss),
    cpuSeconds: rss.cpuSeconds,
    clientCpuSeconds: cpuSecondsSince(cpu0),
    ok: failures.length === 0,
    failures: failures.slice(0, MAX_FAILURES_KEPT),
  };
}

function frameLatency(server: Server, study: GeneratedStudy, inst: GeneratedInstance): Promise<LatencyResult> {
  const frames = spreadFrames(inst.numberOfFrames, FRAME_SAMPLES);
  let i = 0;
  return sampleLatencies(
    async () => {
      const frame = frames[i++]!;
      // Checked against the generated frame: a fast wrong answer must not count.
      const r = await wadoFrames(server.url, study.studyInstanceUID, inst.seriesInstanceUID, inst.sopInstanceUID, [frame], { expect: inst });
      return { ms: r.ms, ok: r.ok, note: `frame ${frame}: HTTP ${r.status ?? 'no response'} ${r.mismatches.slice(0, 2).join('; ')}` };
    },
    { n: FRAME_SAMPLES },
  );
}

function cpuSecondsSince(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return Math.round((d.user + d.system) / 1e4) / 100;
}

export function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
