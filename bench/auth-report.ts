// The `auth` scenario's shape, statistics and report (pure): its modes and operations, the
// bootstrap comparison of medians, the targets of issue 23 and the markdown. The run is auth-scenario.ts.
import type { KeyFile } from '../src/grants/signing.ts';
import type { TargetCheck } from './figures.ts';
import { percentile } from './figures.ts';
import { formatNumber, markdownTable } from './report.ts';
import type { ScratchSpace } from './scratch.ts';

export const AUTH_MODES = ['open', 'staff', 'grantee'] as const;
export type AuthMode = (typeof AUTH_MODES)[number];
export const AUTH_OPS = ['qido', 'frame', 'metadata'] as const;
export type AuthOp = (typeof AUTH_OPS)[number];
const OP_LABEL: Record<AuthOp, string> = {
  qido: 'QIDO /studies?PatientID=',
  frame: 'one frame (WADO-RS frames)',
  metadata: 'series metadata',
};

/** Timed requests per round, mode and operation. */
export const AUTH_SAMPLES: Record<AuthOp, number> = { qido: 60, frame: 40, metadata: 10 };
/** Untimed requests of each operation and mode at the start of each node (JIT, caches). */
export const WARMUP = 5;
/** The viewer's pace while a revocation comes: bytes per second read from the stream. */
export const STREAM_BYTES_PER_SECOND = 8e6;
/** The poller's interval, ms: its first refused request bounds "the next request refused". */
export const POLL_MS = 10;
/** A stream not cut within this long after its revocation counts as not cut. */
export const CUT_TIMEOUT_MS = 10_000;
export const BOOTSTRAP_ITERATIONS = 2_000;

export const PATIENT = 'BENCH-AUTH-1';
export const OTHER_PATIENT = 'BENCH-AUTH-2';
export const STAFF = 'bench.staff';
export const GRANTEE = 'bench.grantee';
export const STREAMER = 'bench.stream';
export const DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*';

export interface AuthOptions {
  instances: number;
  rounds: number;
  revocations: number;
  store: string;
  env: NodeJS.ProcessEnv;
  workDir: string;
  scratch: ScratchSpace;
  keep: boolean;
  log: (line: string) => void;
  /** Timed requests per round (default AUTH_SAMPLES). */
  samples?: Partial<Record<AuthOp, number>>;
  /** The viewer's pace (default STREAM_BYTES_PER_SECOND): the series must outlast a CLI process's start at it. */
  streamBytesPerSecond?: number;
}

export interface AuthLatency {
  median: number;
  p95: number;
  n: number;
  /** The median of each round. */
  roundMedians: number[];
  failures: number;
}

export interface AuthComparison {
  op: AuthOp;
  mode: Exclude<AuthMode, 'open'>;
  /** median(mode) - median(open), ms, and its 95% bootstrap interval. */
  addedMs: number;
  addedInterval: [number, number];
  /** median(mode) / median(open), and its 95% bootstrap interval. */
  ratio: number;
  ratioInterval: [number, number];
  /** The ratio of medians within each round. */
  roundRatios: number[];
}

export interface RevocationTrial {
  via: 'node' | 'cli';
  /** Revocation to the node closing the stream (its audit record of the response, not complete), ms; null: none seen. */
  nodeCutMs: number | null;
  /** Revocation to the client seeing the stream end, ms; null: not cut within CUT_TIMEOUT_MS. */
  cutMs: number | null;
  /** Revocation to the first refused (404) answer of the poller, ms. */
  refusedMs: number | null;
  /** Revocation to its acknowledgement: the API's answer, or the CLI's exit. */
  ackMs: number;
  /** The CLI process from spawn to exit, ms (cli only). */
  cliMs?: number;
  /** Bytes the client still received after the revocation (what the kernel's buffers held, and what the node sent). */
  bytesAfter: number;
  /** Requests sent after the revocation was acknowledged that were still answered 200: must be 0. */
  allowedAfterAck: number;
  complete: boolean;
  error?: string;
}

export interface AuthResult {
  instances: number;
  seriesBytes: number;
  rounds: number;
  latencies: Record<AuthOp, Record<AuthMode, AuthLatency>>;
  comparisons: AuthComparison[];
  revocations: RevocationTrial[];
  streamBytesPerSecond: number;
  pollMs: number;
  seconds: number;
  errors: string[];
}

/** The accounts and the patient's key of a run. */
export interface Setup {
  tokens: { staff: string; grantee: string; streamer: string };
  keyFile: string;
  key: KeyFile;
}

// ---------- statistics ----------

/** A small seeded PRNG (mulberry32): the bootstrap gives the same intervals for the same samples. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function resampledMedian(xs: readonly number[], rnd: () => number, scratch: number[]): number {
  for (let i = 0; i < xs.length; i++) scratch[i] = xs[Math.floor(rnd() * xs.length)]!;
  return percentile(scratch, 50);
}

/**
 * Added median and ratio of medians of `a` over `base`, each with a 95% percentile-bootstrap
 * interval (both samples resampled independently).
 */
export function compareMedians(
  a: readonly number[],
  base: readonly number[],
  iterations = BOOTSTRAP_ITERATIONS,
): { added: number; addedInterval: [number, number]; ratio: number; ratioInterval: [number, number] } {
  if (a.length === 0 || base.length === 0) return { added: NaN, addedInterval: [NaN, NaN], ratio: NaN, ratioInterval: [NaN, NaN] };
  const ma = percentile(a, 50);
  const mb = percentile(base, 50);
  const rnd = prng(0x5eed);
  const sa = new Array<number>(a.length);
  const sb = new Array<number>(base.length);
  const added: number[] = [];
  const ratio: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const x = resampledMedian(a, rnd, sa);
    const y = resampledMedian(base, rnd, sb);
    added.push(x - y);
    ratio.push(x / y);
  }
  return {
    added: ma - mb,
    addedInterval: [percentile(added, 2.5), percentile(added, 97.5)],
    ratio: ma / mb,
    ratioInterval: [percentile(ratio, 2.5), percentile(ratio, 97.5)],
  };
}

export const r2 = (n: number): number => Math.round(n * 100) / 100;
export const r3 = (n: number): number => Math.round(n * 1000) / 1000;

export function summarizeAuth(samples: number[][], failures: number): AuthLatency {
  const all = samples.flat();
  return {
    median: r2(percentile(all, 50)),
    p95: r2(percentile(all, 95)),
    n: all.length,
    roundMedians: samples.map((s) => r2(percentile(s, 50))),
    failures,
  };
}

// ---------- report ----------

const ms = (v: number): string => (Number.isFinite(v) ? formatNumber(v) : 'n/a');
const interval = (x: [number, number], digits: number): string => `${x[0].toFixed(digits)} to ${x[1].toFixed(digits)}`;

/** Medians of a trial field over the trials of one path, with min and max. */
function spread(xs: Array<number | null>): string {
  const v = xs.filter((x): x is number => x !== null && Number.isFinite(x));
  if (v.length === 0) return 'n/a';
  return `${ms(percentile(v, 50))} (${ms(Math.min(...v))}–${ms(Math.max(...v))})`;
}

export function authFailed(r: AuthResult): boolean {
  const anyFailed = AUTH_OPS.some((op) => AUTH_MODES.some((m) => r.latencies[op][m].failures > 0 || r.latencies[op][m].n === 0));
  return r.errors.length > 0 || anyFailed || r.revocations.some((t) => t.error !== undefined || t.cutMs === null || t.complete || t.allowedAfterAck > 0);
}

/** The issue's targets: identity adds under 1 ms median; series metadata under a series grant ≤ 1.2× open; a cut within a second. */
export function authTargets(r: AuthResult): TargetCheck[] {
  const scenario = `auth (${r.instances.toLocaleString('en-US')}-instance series)`;
  const out: TargetCheck[] = [];
  for (const c of r.comparisons) {
    out.push({
      target: `identity adds < 1 ms median: ${OP_LABEL[c.op]}, ${c.mode}`,
      scenario,
      measured: `${c.addedMs >= 0 ? '+' : ''}${c.addedMs.toFixed(2)} ms (95% interval ${interval(c.addedInterval, 2)})`,
      met: Number.isFinite(c.addedMs) ? c.addedMs < 1 : null,
    });
  }
  const meta = r.comparisons.find((c) => c.op === 'metadata' && c.mode === 'grantee');
  if (meta) {
    out.push({
      target: 'series metadata under a series grant ≤ 1.2× open',
      scenario,
      measured: `${meta.ratio.toFixed(2)}× (95% interval ${interval(meta.ratioInterval, 2)}; rounds ${meta.roundRatios.map((x) => x.toFixed(2)).join(' / ')})`,
      met: Number.isFinite(meta.ratio) ? meta.ratio <= 1.2 : null,
    });
  }
  for (const via of ['node', 'cli'] as const) {
    const t = r.revocations.filter((x) => x.via === via);
    if (t.length === 0) continue;
    const worst = Math.max(...t.map((x) => (x.nodeCutMs === null ? Infinity : x.nodeCutMs)));
    out.push({
      target: `revocation (${via === 'node' ? "node's API" : 'CLI'}) cuts a running stream within 1 s (the node's close)`,
      scenario,
      measured: `slowest ${Number.isFinite(worst) ? `${formatNumber(worst)} ms` : 'not cut'} of ${t.length}`,
      met: worst < 1_000,
    });
  }
  return out;
}

export function authMarkdown(r: AuthResult): string {
  const out: string[] = [];
  out.push(
    `One data directory: a study of ${r.instances.toLocaleString('en-US')} + 20 single-frame MR instances (${formatNumber(r.seriesBytes / 2 ** 20)} MiB in the granted series) ` +
      `and another patient's study of 20. ${r.rounds} rounds, each an open node (\`--open\`) and a node with identity on, the order alternating; ` +
      'with identity on, a staff token and a grantee (one series, under a grant the patient signed with a key file) take turns request by request. ' +
      `${r.seconds} s in all.`,
    '',
  );
  const rows: string[][] = [];
  for (const op of AUTH_OPS) {
    for (const mode of AUTH_MODES) {
      const l = r.latencies[op][mode];
      const c = r.comparisons.find((x) => x.op === op && x.mode === mode);
      rows.push([
        OP_LABEL[op],
        mode === 'open' ? 'identity off' : mode,
        ms(l.median),
        ms(l.p95),
        l.roundMedians.map(ms).join(' / '),
        c ? `${c.addedMs >= 0 ? '+' : ''}${c.addedMs.toFixed(2)} (${interval(c.addedInterval, 2)})` : '',
        c ? `${c.ratio.toFixed(2)}× (${interval(c.ratioInterval, 2)}; rounds ${c.roundRatios.map((x) => x.toFixed(2)).join(' / ')})` : '',
        `${l.n}${l.failures > 0 ? `, ${l.failures} FAILED` : ''}`,
      ]);
    }
  }
  out.push(
    markdownTable(
      ['request', 'caller', 'median ms', 'p95 ms', 'round medians ms', 'added median ms (95% interval)', 'ratio to open (95% interval; per round)', 'samples'],
      rows,
      ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'right'],
    ),
    '',
  );
  out.push(
    'Intervals: percentile bootstrap of the medians (both samples resampled, 2,000 times). Frames: frame 1 of a different instance each time, ' +
      'one connection per request, checked against the generated frame.',
    '',
  );
  if (r.revocations.length > 0) {
    const paths = (['node', 'cli'] as const).filter((v) => r.revocations.some((t) => t.via === v));
    out.push(
      markdownTable(
        [
          'revoked',
          'trials',
          'to the node cutting the stream, ms',
          'to the client seeing it cut, ms',
          'to the next request refused, ms',
          'to the acknowledgement, ms',
          'bytes after the revocation',
          'allowed after ack',
        ],
        paths.map((via) => {
          const t = r.revocations.filter((x) => x.via === via);
          const errs = t.filter((x) => x.error !== undefined).length;
          return [
            via === 'node' ? "through the node's patient API" : '`dicom-vault patient revoke` (its own process)',
            `${t.length}${errs > 0 ? ` (${errs} FAILED)` : ''}`,
            spread(t.map((x) => x.nodeCutMs)),
            spread(t.map((x) => x.cutMs)),
            spread(t.map((x) => x.refusedMs)),
            `${spread(t.map((x) => x.ackMs))}${via === 'cli' ? `; the process ran ${spread(t.map((x) => x.cliMs ?? null))}` : ''}`,
            spread(t.map((x) => x.bytesAfter)),
            String(t.reduce((a, x) => a + x.allowedAfterAck, 0)),
          ];
        }),
        ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
      ),
      '',
      `Median (min–max), on a node of its own that logs its audit records (info level) after the rounds above. A grantee reads the granted series (WADO-RS, whole instances) at ${formatNumber(r.streamBytesPerSecond / 1e6)} MB/s; ` +
        `a poller asks for one instance's metadata every ${r.pollMs} ms. Timed from the revocation (the API request sent; for the CLI, the time it wrote ` +
        'in the grant) to the node closing the stream (the time of its audit record of that response, not complete), to the client seeing its stream end (after reading what the kernel had buffered: "bytes after"; the CLI\'s estimated from the pace) ' +
        'and to the first refused (404) answer.',
      '',
    );
    for (const t of r.revocations.filter((x) => x.error !== undefined).slice(0, 3)) out.push(`- revocation via ${t.via} failed: ${t.error}`);
  }
  if (r.errors.length > 0) out.push(...r.errors.map((e) => `- error: ${e}`), '');
  return out.join('\n');
}
