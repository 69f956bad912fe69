// The DIMSE scenario of `npm run bench`: the studies pushed with C-STORE by dcmtk's storescu, a
// PACS's usual sender, into the node's Storage SCP and into Orthanc's, one association per study
// carrying every file of it (several storescu at once in the concurrent case). storescu reads
// files, so each study is first written to the work dir from the generator (timed apart, not in
// the figures); both systems are sent the same files.
//
// Debian's dcmtk is built to leave Nagle's algorithm on unless TCP_NODELAY is set in the
// environment; with it on, each small C-STORE waits ~40 ms for a delayed ACK. storescu runs
// with TCP_NODELAY=1 here, as a PACS tuned for throughput would.
//
// Success is counted by the server, not the sender: after storescu exits, QIDO lists the series'
// instances. storescu may re-encode a file's data set on the way (its sequences with defined
// lengths, say), so bytes are counted as the files' sizes; the byte-exact round trip of what a
// server stored is the tests' and the STOW scenarios' job.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { qido } from './client.ts';
import { peakRss, type IngestRun, type SystemRun } from './figures.ts';
import type { GeneratedStudy } from './generate.ts';
import { startRssSampler } from './rss.ts';

/** The AE title storescu calls itself. */
export const BENCH_CALLING_AE = 'DVBENCH';
/** The node's AE title in the scenario (its default). */
export const NODE_AE = 'DICOMVAULT';
export const ORTHANC_AE = 'ORTHANC';
/** How long storescu waits for a C-STORE response, seconds: a 1 GiB instance is answered once durable. */
export const DIMSE_RESPONSE_TIMEOUT_S = 600;
/** GNU time, for storescu's own CPU seconds (Node has no rusage of a child). */
const GNU_TIME = '/usr/bin/time';
const TIME_MARK = 'DVBENCH-CPU';
/** Lines of storescu's complaints kept per run. */
const MAX_FAILURES_KEPT = 5;

export interface DimseTarget {
  system: string;
  detail: string;
  host: string;
  port: number;
  calledAeTitle: string;
  /** DICOMweb base URL: where the stored instances are counted. */
  url: string;
  /** The server process, for RSS and CPU. */
  pid: number;
}

/** The arguments of one storescu: every file of `dir` over one association. */
export function storescuArgs(t: { host: string; port: number; calledAeTitle: string }, dir: string): string[] {
  return [
    '-aet',
    BENCH_CALLING_AE,
    '-aec',
    t.calledAeTitle,
    // Only the presentation contexts the files need (one SOP class, its transfer syntax).
    '-R',
    // Keep going past a refused instance, so that the count says how many were.
    '-nh',
    '-ta',
    '30',
    '-td',
    String(DIMSE_RESPONSE_TIMEOUT_S),
    '+sd',
    t.host,
    String(t.port),
    dir,
  ];
}

/** Problems storescu reported: its error and warning lines (dcmtk's "E: " and "W: " prefixes). */
export function storescuProblems(output: string): string[] {
  return output
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => /^[EF]: /.test(l) || /^W: .*(fail|refus|reject|abort|error)/i.test(l));
}

/** "DVBENCH-CPU 0.81 0.33" written by GNU time: user + system seconds; null without the line. */
export function parseCpuLine(output: string): number | null {
  const m = new RegExp(`^${TIME_MARK} ([\\d.]+) ([\\d.]+)$`, 'm').exec(output);
  return m ? Math.round((Number(m[1]) + Number(m[2])) * 100) / 100 : null;
}

/**
 * Writes every instance of each study into a directory of its own under `root` (one per study,
 * as storescu sends a directory per association). Returns the directories, in study order.
 */
export async function writeStudyFiles(studies: readonly GeneratedStudy[], root: string): Promise<string[]> {
  const dirs: string[] = [];
  for (const [i, study] of studies.entries()) {
    const dir = join(root, `study-${i + 1}`);
    await mkdir(dir, { recursive: true });
    const width = String(study.instances.length).length;
    for (const inst of study.instances) {
      const file = join(dir, `${String(inst.instanceNumber).padStart(width, '0')}.dcm`);
      await pipeline(Readable.from(inst.open()), createWriteStream(file));
    }
    dirs.push(dir);
  }
  return dirs;
}

interface StorescuOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  problems: string[];
  cpuSeconds: number | null;
}

function runStorescu(storescu: string, args: string[]): Promise<StorescuOutcome> {
  const timed = existsSync(GNU_TIME);
  const child = timed
    ? spawn(GNU_TIME, ['-f', `${TIME_MARK} %U %S`, storescu, ...args], { env: { ...process.env, TCP_NODELAY: '1' }, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(storescu, args, { env: { ...process.env, TCP_NODELAY: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer): void => {
    out += d.toString('latin1');
    // Kept bounded: a run of refusals could print a line per instance.
    if (out.length > 256_000) out = out.slice(0, 64_000) + out.slice(-64_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      resolve({ code, signal, problems: storescuProblems(out), cpuSeconds: timed ? parseCpuLine(out) : null });
    });
  });
}

/**
 * One system through one DIMSE scenario: one storescu per study, all at once, timed from their
 * start to the last one's exit; then the stored instances counted with QIDO.
 */
export async function dimseIngest(
  target: DimseTarget,
  studies: readonly GeneratedStudy[],
  dirs: readonly string[],
  o: { storescu: string; log: (line: string) => void },
): Promise<SystemRun> {
  const run: SystemRun = {
    system: target.system,
    detail: target.detail,
    ingest: null,
    retrieve: null,
    qido: null,
    seriesMetadata: null,
    frames: null,
    storedBytes: null,
    errors: [],
  };
  const total = studies.reduce((a, s) => a + s.totalBytes, 0);
  const instances = studies.reduce((a, s) => a + s.instances.length, 0);
  o.log(
    `${target.system}: C-STORE ${studies.length} × ${instances / studies.length} instances (${(total / 1e6).toFixed(0)} MB) with storescu to ${target.calledAeTitle}@${target.host}:${target.port}`,
  );
  const sampler = startRssSampler(target.pid);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let outcomes: StorescuOutcome[];
  try {
    outcomes = await Promise.all(dirs.map((dir) => runStorescu(o.storescu, storescuArgs(target, dir))));
  } catch (err) {
    sampler.stop();
    run.errors.push(`storescu: ${(err as Error).message}`);
    return run;
  }
  const seconds = (performance.now() - t0) / 1000;
  const rss = sampler.stop();
  const ownCpu = process.cpuUsage(cpu0);
  const failures: string[] = [];
  outcomes.forEach((r, i) => {
    if (r.code !== 0) failures.push(`client ${i + 1}: storescu exited ${r.code ?? r.signal}`);
    for (const p of r.problems) failures.push(`client ${i + 1}: ${p}`);
  });
  let stored = 0;
  for (const [i, study] of studies.entries()) {
    try {
      const r = await qido(target.url, `/studies/${study.studyInstanceUID}/series/${study.seriesInstanceUID}/instances`, { maxResponseBytes: 1 << 30 });
      const n = Math.max(0, r.results);
      stored += n;
      if (n !== study.instances.length)
        failures.push(`client ${i + 1}: ${n} of ${study.instances.length} instances listed after the associations (HTTP ${r.status})`);
    } catch (err) {
      failures.push(`client ${i + 1}: counting the stored instances: ${(err as Error).message}`);
    }
  }
  const storescuCpu = outcomes.every((r) => r.cpuSeconds !== null) ? outcomes.reduce((a, r) => a + r.cpuSeconds!, 0) : 0;
  const ingest: IngestRun = {
    bytes: total,
    seconds,
    instances,
    requests: dirs.length,
    stored,
    peakRssMiB: peakRss(rss),
    cpuSeconds: rss.cpuSeconds,
    // storescu's CPU and this process's (little: it waits): what the client took from the cores.
    clientCpuSeconds: Math.round((storescuCpu + (ownCpu.user + ownCpu.system) / 1e6) * 100) / 100,
    ok: failures.length === 0 && stored === instances,
    failures: failures.length > MAX_FAILURES_KEPT ? [...failures.slice(0, MAX_FAILURES_KEPT), `… ${failures.length} in all`] : failures,
  };
  run.ingest = ingest;
  return run;
}
