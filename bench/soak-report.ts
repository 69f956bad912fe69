// The soak's tally and report (pure): the load's shape, what each event counts as, the
// per-minute series, the targets a run is held to, and its markdown. The run is soak.ts.
import type { TargetCheck } from './figures.ts';
import { formatNumber, markdownTable } from './report.ts';

// ---------- the load's shape (the run follows it; the report states it) ----------

/** PACS pushing small studies at once. */
export const SMALL_CLIENTS = 2;
/** Instances per small study (a client starts a new study after this many). */
export const SMALL_STUDY_INSTANCES = 100;
export const SMALL_PER_REQUEST = 20;
/** Huge instances: 256 frames of 512 x 512 x 16 bit, two per study. */
export const HUGE_FRAMES = 256;
export const HUGE_STUDY_INSTANCES = 2;
/** Share of the ingest rate the huge client takes; the small clients share the rest. */
export const HUGE_SHARE = 0.5;
/** Pauses of the viewers between requests, ms. */
export const QIDO_INTERVAL_MS = 1000;
export const WADO_STUDY_INTERVAL_MS = 3000;
export const FRAME_INTERVAL_MS = 500;
/** Pause of the faulty client between its uploads, ms. */
export const FAULT_INTERVAL_MS = 5000;
/** How often the node's heap is measured after a forced full GC, ms (each GC pauses the node for some ms). */
export const HEAP_SAMPLE_INTERVAL_MS = 15_000;
/** How long a stalled upload waits for the node to close it (its idle timeout is 30 s by default). */
export const STALL_CAP_MS = 75_000;

export type SoakKind = 'stow-small' | 'stow-huge' | 'qido' | 'wado-study' | 'wado-frame' | FaultKind;
export type FaultKind = 'truncated' | 'wrong-boundary' | 'garbage' | 'abandoned' | 'stalled';
export const FAULT_KINDS: readonly FaultKind[] = ['truncated', 'wrong-boundary', 'garbage', 'abandoned', 'stalled'];
export const SOAK_KINDS: readonly SoakKind[] = ['stow-small', 'stow-huge', 'qido', 'wado-study', 'wado-frame', ...FAULT_KINDS];

// ---------- the tally (pure) ----------

export interface SoakEvent {
  /** ms since the load started. */
  at: number;
  kind: SoakKind;
  outcome: 'ok' | 'expected' | 'unexpected';
  /** What happened, for refusals and failures: e.g. 'HTTP 400', 'busy (503)'. */
  reason?: string;
  /** DICOM bytes the node acknowledged (uploads), bytes received (retrievals). */
  bytesIn?: number;
  bytesOut?: number;
  /** Instances the node acknowledged. */
  instances?: number;
}

export interface SoakMinute {
  /** 1-based. */
  minute: number;
  instancesStored: number;
  MBIn: number;
  MBOut: number;
  requests: Record<SoakKind, number>;
  expected: number;
  unexpected: number;
  /** Peak node RSS sampled in the minute; null without a sample. */
  peakRssMiB: number | null;
  /** Lowest node RSS sampled in the minute (the floor: what it holds with the least in flight); null without a sample. */
  floorRssMiB: number | null;
  /** Lowest V8 heap in use right after a forced full GC in the minute; null without a sample. */
  heapMiB: number | null;
  /** External memory (Buffers, ArrayBuffers) at that sample's GC; null without a sample. */
  externalMiB: number | null;
  /** Node CPU seconds spent in the minute; null without two samples. */
  nodeCpuSeconds: number | null;
}

const zeroKinds = (): Record<SoakKind, number> => Object.fromEntries(SOAK_KINDS.map((k) => [k, 0])) as Record<SoakKind, number>;

/** Everything that happened during the load, by minute and by kind. */
export class SoakTally {
  readonly #events: SoakEvent[] = [];
  readonly #samples: Array<{ at: number; rssMiB: number; cpuSeconds: number }> = [];
  readonly #heap: Array<{ at: number; heapMiB: number; externalMiB: number }> = [];

  record(e: SoakEvent): void {
    this.#events.push(e);
  }

  /** A sample of the node: RSS and its CPU seconds so far. */
  sample(at: number, rssMiB: number, cpuSeconds: number): void {
    this.#samples.push({ at, rssMiB, cpuSeconds });
  }

  /** A sample of the node's V8 heap in use and its external memory, right after a forced full GC. */
  sampleHeap(at: number, heapMiB: number, externalMiB: number): void {
    this.#heap.push({ at, heapMiB, externalMiB });
  }

  /**
   * One row per minute from the first to the last with an event or a sample; with `untilMs`
   * (the load's length), what came after it (the last requests finishing, the closing sample)
   * counts in the load's last minute rather than in a minute of its own, except in its floors
   * (RSS, post-GC heap): those are the node's under load.
   */
  minutes(untilMs?: number): SoakMinute[] {
    const last = untilMs ?? Math.max(0, ...this.#events.map((e) => e.at), ...this.#samples.map((s) => s.at), ...this.#heap.map((s) => s.at));
    const n = Math.floor(Math.max(0, last - 1) / 60_000) + 1;
    const row = (at: number): SoakMinute => rows[Math.min(n - 1, Math.floor(at / 60_000))]!;
    const rows: SoakMinute[] = Array.from({ length: n }, (_, i) => ({
      minute: i + 1,
      instancesStored: 0,
      MBIn: 0,
      MBOut: 0,
      requests: zeroKinds(),
      expected: 0,
      unexpected: 0,
      peakRssMiB: null,
      floorRssMiB: null,
      heapMiB: null,
      externalMiB: null,
      nodeCpuSeconds: null,
    }));
    for (const e of this.#events) {
      const r = row(e.at);
      r.requests[e.kind]++;
      r.instancesStored += e.instances ?? 0;
      r.MBIn += (e.bytesIn ?? 0) / 1e6;
      r.MBOut += (e.bytesOut ?? 0) / 1e6;
      if (e.outcome === 'expected') r.expected++;
      if (e.outcome === 'unexpected') r.unexpected++;
    }
    let previous: { cpuSeconds: number } | undefined;
    for (const s of this.#samples) {
      const r = row(s.at);
      r.peakRssMiB = Math.max(r.peakRssMiB ?? 0, s.rssMiB);
      // The floor is the node's under load: a sample after the load (an idle node) is no floor of its last minute.
      if (untilMs === undefined || s.at <= untilMs) r.floorRssMiB = Math.min(r.floorRssMiB ?? Number.POSITIVE_INFINITY, s.rssMiB);
      if (previous) r.nodeCpuSeconds = round((r.nodeCpuSeconds ?? 0) + s.cpuSeconds - previous.cpuSeconds, 2);
      previous = s;
    }
    for (const h of this.#heap) {
      if (untilMs !== undefined && h.at > untilMs) continue;
      const r = row(h.at);
      if (r.heapMiB === null || h.heapMiB < r.heapMiB) {
        r.heapMiB = round(h.heapMiB, 1);
        r.externalMiB = round(h.externalMiB, 1);
      }
    }
    for (const r of rows) {
      r.MBIn = round(r.MBIn, 1);
      r.MBOut = round(r.MBOut, 1);
    }
    return rows;
  }

  totals(): { instancesStored: number; bytesIn: number; bytesOut: number; requests: Record<SoakKind, number> } {
    const requests = zeroKinds();
    let instancesStored = 0;
    let bytesIn = 0;
    let bytesOut = 0;
    for (const e of this.#events) {
      requests[e.kind]++;
      instancesStored += e.instances ?? 0;
      bytesIn += e.bytesIn ?? 0;
      bytesOut += e.bytesOut ?? 0;
    }
    return { instancesStored, bytesIn, bytesOut, requests };
  }

  /** Refusals and failures counted by `kind: reason`, expected apart from unexpected. */
  errors(): { expected: Record<string, number>; unexpected: Record<string, number> } {
    const expected: Record<string, number> = {};
    const unexpected: Record<string, number> = {};
    for (const e of this.#events) {
      if (e.outcome === 'ok') continue;
      const key = `${e.kind}: ${e.reason ?? 'unknown'}`;
      const into = e.outcome === 'expected' ? expected : unexpected;
      into[key] = (into[key] ?? 0) + 1;
    }
    return { expected, unexpected };
  }

  rss(): { startMiB: number | null; peakMiB: number | null; lastMiB: number | null } {
    const s = this.#samples;
    return {
      startMiB: s[0]?.rssMiB ?? null,
      peakMiB: s.length === 0 ? null : Math.max(...s.map((x) => x.rssMiB)),
      lastMiB: s.at(-1)?.rssMiB ?? null,
    };
  }

  /** Post-GC heap over the run; null without a sample. */
  heap(): { firstMiB: number; lastMiB: number; samples: number } | null {
    const h = this.#heap;
    return h.length === 0 ? null : { firstMiB: round(h[0]!.heapMiB, 1), lastMiB: round(h.at(-1)!.heapMiB, 1), samples: h.length };
  }

  cpuSeconds(): number | null {
    const s = this.#samples;
    return s.length < 2 ? null : round(s.at(-1)!.cpuSeconds - s[0]!.cpuSeconds, 2);
  }
}

/** What a faulty upload's answer means: a refusal the node owes, or a failure. */
export function classifyFault(
  kind: FaultKind,
  r: { status: number | undefined; closedBy: 'server' | 'client' | 'cap'; ms: number },
): { outcome: 'expected' | 'unexpected'; reason: string } {
  if (kind === 'abandoned') return { outcome: 'expected', reason: 'client reset the connection mid-body' };
  if (kind === 'stalled') {
    if (r.closedBy === 'cap') return { outcome: 'unexpected', reason: `still open after ${Math.round(r.ms / 1000)} s` };
    // Rounded to 5 s so that the tally groups them.
    const after = `${Math.floor(r.ms / 5000) * 5}-${Math.floor(r.ms / 5000) * 5 + 5} s`;
    return { outcome: 'expected', reason: r.status === undefined ? `closed by the node after ${after}` : `HTTP ${r.status} after ${after}` };
  }
  if (r.status === undefined) {
    // Cut short: the node may answer or just close; a malformed complete body deserves an answer.
    if (r.closedBy === 'server' && kind === 'truncated') return { outcome: 'expected', reason: 'closed without an answer' };
    return { outcome: 'unexpected', reason: r.closedBy === 'cap' ? `no answer within ${Math.round(r.ms / 1000)} s` : 'closed without an answer' };
  }
  if (r.status >= 400 && r.status < 500) return { outcome: 'expected', reason: `HTTP ${r.status}` };
  if (r.status === 503) return { outcome: 'expected', reason: 'busy (503)' };
  return { outcome: 'unexpected', reason: `HTTP ${r.status}` };
}

/** How long a paced client waits before its next request so that it averages `bytesPerSecond`. */
export function paceDelayMs(bytesSent: number, bytesPerSecond: number, elapsedMs: number): number {
  return Math.max(0, (bytesSent / bytesPerSecond) * 1000 - elapsedMs);
}

// ---------- the result and its report (pure) ----------

export interface SoakResult {
  minutes: number;
  ingestMBps: number;
  /** Length of the load, s (the last requests finish after the deadline). */
  seconds: number;
  store: string;
  perMinute: SoakMinute[];
  totals: ReturnType<SoakTally['totals']>;
  rss: { startMiB: number | null; peakMiB: number | null; finalMiB: number | null };
  /** The node's V8 heap in use after a forced full GC (bench/heap-probe.ts), first and last sample; null: not measured. */
  heap: ReturnType<SoakTally['heap']>;
  nodeCpuSeconds: number | null;
  errors: { expected: Record<string, number>; unexpected: Record<string, number>; examples: string[] };
  verification: {
    studies: number;
    instancesAcknowledged: number;
    wado: { studies: number; instancesVerified: number; failures: string[] };
    /** The verify command's code in this process, every study; null: no study. */
    verifier: { studies: number; ok: number; instances: number; seconds: number; failures: string[] } | null;
    /** The `dicom-vault verify` command on CLI_VERIFY_SAMPLE studies; null: no study. */
    cli: { studies: number; ok: number; failures: string[] } | null;
    refused: { uploads: number; instancesListed: number; failures: string[] };
  };
  nodeUpAtEnd: boolean;
  errorsOutside: string[];
}

export const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);

/**
 * RSS counts as flat when the last full minute's floor (its lowest sample) is within this of the
 * second minute's (the first warms up). The floor, not the peak: a minute's peak is whatever
 * happened to be in flight at once (huge uploads' chunk windows, a study being served), which
 * moves by tens of MiB from one minute to the next; memory that is kept raises the floor.
 */
export const SOAK_RSS_GROWTH = { fraction: 0.1, minMiB: 32 };
/** Below this many full minutes a trend in RSS cannot be told from warm-up. */
const MIN_MINUTES_FOR_TREND = 5;

/** Issue 21's checks of a soak, MET / MISSED / not measurable. */
export function soakTargets(r: SoakResult): TargetCheck[] {
  const scenario = `soak ${formatNumber(r.minutes)} min`;
  const v = r.verification;
  const cliOk =
    v.verifier === null || v.cli === null
      ? null
      : v.verifier.ok === v.verifier.studies && v.verifier.failures.length === 0 && v.cli.ok === v.cli.studies && v.cli.failures.length === 0;
  const wadoOk = v.wado.failures.length === 0 && v.wado.instancesVerified >= v.instancesAcknowledged;
  const out: TargetCheck[] = [
    {
      target: 'soak: every acknowledged instance verifies (WADO sha256 and dicom-vault verify)',
      scenario,
      measured:
        `${formatNumber(v.wado.instancesVerified)} of ${formatNumber(v.instancesAcknowledged)} instances byte-exact over WADO` +
        (v.verifier === null || v.cli === null
          ? '; dicom-vault verify not run'
          : `; dicom-vault verify OK on ${v.verifier.ok} of ${v.verifier.studies} studies (the command itself on ${v.cli.ok} of ${v.cli.studies})`),
      met: cliOk === null ? (wadoOk ? null : false) : wadoOk && cliOk,
    },
    {
      target: 'soak: no unexpected failure',
      scenario,
      measured: `${sum(r.errors.unexpected)} unexpected, ${sum(r.errors.expected)} expected refusals`,
      met: sum(r.errors.unexpected) === 0 && r.errorsOutside.length === 0,
    },
    {
      target: 'soak: nothing of a refused or abandoned upload stored',
      scenario,
      measured: `${v.refused.instancesListed} instances listed of ${v.refused.uploads} refused or abandoned uploads`,
      met: v.refused.failures.length > 0 ? null : v.refused.instancesListed === 0,
    },
    { target: 'soak: the node stays up', scenario, measured: r.nodeUpAtEnd ? 'up at the end' : 'not up at the end', met: r.nodeUpAtEnd },
  ];
  const full = r.perMinute.filter((m) => m.minute * 60 <= r.seconds && m.floorRssMiB !== null && m.peakRssMiB !== null);
  const second = full[1];
  const last = full.at(-1);
  const enough = full.length >= MIN_MINUTES_FOR_TREND && second !== undefined && last !== undefined;
  const mib = (v: number | null): string => (v === null ? '?' : String(Math.round(v)));
  const heap =
    enough && second.heapMiB !== null && last.heapMiB !== null ? `post-GC heap ${mib(second.heapMiB)} → ${mib(last.heapMiB)} MiB` : 'post-GC heap not measured';
  out.push({
    target: "soak: no memory growth (last full minute's RSS floor within 10% or 32 MiB of the second minute's)",
    scenario,
    measured: enough
      ? `RSS floor ${mib(second.floorRssMiB)} → ${mib(last.floorRssMiB)} MiB (peak ${mib(second.peakRssMiB)} → ${mib(last.peakRssMiB)} MiB; ${heap})`
      : `${full.length} full minutes (${MIN_MINUTES_FOR_TREND} needed)`,
    met: enough ? last.floorRssMiB! - second.floorRssMiB! <= Math.max(SOAK_RSS_GROWTH.fraction * second.floorRssMiB!, SOAK_RSS_GROWTH.minMiB) : null,
  });
  return out;
}

/** The soak's part of the markdown report. */
export function soakMarkdown(r: SoakResult): string {
  const out: string[] = [];
  const t = r.totals;
  const v = r.verification;
  out.push(
    `One node (${r.store} store) for ${formatNumber(r.minutes)} min (${formatNumber(r.seconds)} s of load): ${SMALL_CLIENTS} PACS pushing small studies ` +
      `(${SMALL_PER_REQUEST} instances per STOW request) and one pushing huge instances (${HUGE_FRAMES} frames of 512 × 512, one per request), ` +
      `paced together to ${formatNumber(r.ingestMBps)} MB/s; viewers: QIDO every ${QIDO_INTERVAL_MS / 1000} s, a whole small study every ` +
      `${WADO_STUDY_INTERVAL_MS / 1000} s, a frame of a huge instance every ${FRAME_INTERVAL_MS / 1000} s; a faulty upload every ` +
      `${FAULT_INTERVAL_MS / 1000} s (${FAULT_KINDS.join(', ')}).`,
    '',
    `- Stored: ${formatNumber(t.instancesStored)} instances, ${formatNumber(t.bytesIn / 1e6)} MB in (${formatNumber(t.bytesIn / 1e6 / r.seconds)} MB/s); ` +
      `${formatNumber(t.bytesOut / 1e6)} MB out.`,
    `- Node RSS: ${fmtMiB(r.rss.startMiB)} at the start, peak ${fmtMiB(r.rss.peakMiB)}, ${fmtMiB(r.rss.finalMiB)} at the end of the load; ` +
      `node CPU ${r.nodeCpuSeconds === null ? 'n/a' : `${formatNumber(r.nodeCpuSeconds)} s`}; ` +
      (r.heap === null
        ? 'post-GC V8 heap not measured.'
        : `post-GC V8 heap ${fmtMiB(r.heap.firstMiB)} at the first sample, ${fmtMiB(r.heap.lastMiB)} at the last (${r.heap.samples} samples).`),
    `- Verification: ${formatNumber(v.wado.instancesVerified)} of ${formatNumber(v.instancesAcknowledged)} acknowledged instances of ${v.studies} studies ` +
      `byte-exact over WADO (sha256)${v.wado.failures.length > 0 ? `, failures: ${v.wado.failures.slice(0, 3).join('; ')}` : ''}; ` +
      (v.verifier === null || v.cli === null
        ? '`dicom-vault verify` not run.'
        : `\`dicom-vault verify\`'s verifier OK on ${v.verifier.ok} of ${v.verifier.studies} studies (${formatNumber(v.verifier.instances)} instances, ` +
          `${formatNumber(v.verifier.seconds)} s, the vault opened once)${v.verifier.failures.length > 0 ? `, failures: ${v.verifier.failures.slice(0, 3).join('; ')}` : ''}; ` +
          `the command itself OK on ${v.cli.ok} of ${v.cli.studies}${v.cli.failures.length > 0 ? `, failures: ${v.cli.failures.slice(0, 2).join('; ')}` : ''}.`),
    `- Refused and abandoned uploads: ${v.refused.uploads}, instances of them listed by QIDO afterwards: ${v.refused.instancesListed}` +
      `${v.refused.failures.length > 0 ? ` (could not check: ${v.refused.failures.slice(0, 2).join('; ')})` : ''}.`,
    `- The node was ${r.nodeUpAtEnd ? 'up' : 'NOT up'} at the end.${r.errorsOutside.length > 0 ? ` Errors: ${r.errorsOutside.slice(0, 3).join('; ')}` : ''}`,
    '',
  );
  const shown: SoakKind[] = ['stow-small', 'stow-huge', 'qido', 'wado-study', 'wado-frame'];
  out.push(
    markdownTable(
      [
        'minute',
        'instances stored',
        'MB in',
        'MB out',
        ...shown,
        'malformed',
        'abandoned',
        'expected refusals',
        'unexpected',
        'node RSS peak MiB',
        'RSS floor MiB',
        'post-GC heap MiB',
        'external MiB',
        'node CPU-s',
      ],
      r.perMinute.map((m) => [
        m.minute,
        m.instancesStored,
        m.MBIn,
        m.MBOut,
        ...shown.map((k) => m.requests[k]),
        m.requests.truncated + m.requests['wrong-boundary'] + m.requests.garbage,
        m.requests.abandoned + m.requests.stalled,
        m.expected,
        m.unexpected,
        m.peakRssMiB === null ? '' : Math.round(m.peakRssMiB),
        m.floorRssMiB === null ? '' : Math.round(m.floorRssMiB),
        m.heapMiB === null ? '' : Math.round(m.heapMiB),
        m.externalMiB === null ? '' : Math.round(m.externalMiB),
        m.nodeCpuSeconds === null ? '' : m.nodeCpuSeconds,
      ]),
      Array.from({ length: 19 }, (_, i) => (i === 0 ? 'left' : 'right')),
    ),
    '',
    'Requests are counted in the minute they finished (a huge upload, with its bytes, in the minute it was acknowledged). ' +
      "RSS is sampled every second: the peak and the floor (lowest sample) of each minute. The post-GC heap is the minute's lowest " +
      'V8 heap in use right after a full GC the benchmark forces in the node (over its inspector) every ' +
      `${HEAP_SAMPLE_INTERVAL_MS / 1000} s, with the external memory (Buffers) at that GC. Memory growth is judged on the RSS floor.`,
    '',
  );
  const rows = [
    ...Object.entries(r.errors.expected).map(([k, n]) => [k, 'expected refusal', n] as [string, string, number]),
    ...Object.entries(r.errors.unexpected).map(([k, n]) => [k, 'UNEXPECTED', n] as [string, string, number]),
  ];
  if (rows.length > 0) out.push(markdownTable(['kind: what happened', '', 'count'], rows, ['left', 'left', 'right']), '');
  if (r.errors.examples.length > 0) out.push('Unexpected failures, first ones:', '', ...r.errors.examples.map((e) => `- ${e}`), '');
  return out.join('\n');
}

function fmtMiB(v: number | null): string {
  return v === null ? 'n/a' : `${Math.round(v)} MiB`;
}

export function round(n: number, d: number): number {
  return Math.round(n * 10 ** d) / 10 ** d;
}
