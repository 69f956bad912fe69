// What `npm run bench` measured, and the figures it reports from that: per scenario and system,
// rates, latencies, memory, CPU per GiB and bytes stored per byte, each beside the peer's (ratio
// ours/peer) and beside the machine limit it runs against. Pure functions over plain results, so
// every figure and ratio can be tested without running a benchmark.
//
// The results it reads are in measured.ts, the sampling that made their latencies in sampling.ts,
// the limits each figure runs against in figure-limits.ts.
import type { MachineLimits } from './limits.ts';
import type { ChartLimit, ChartRow } from './chart.ts';
import { type FigureLimits, SHORT_LIMIT_LABELS } from './figure-limits.ts';
import type { LatencyResult, ScenarioResult, SystemRun } from './measured.ts';
import { advantage, type ComparedFigure, type FigureLimit } from './report.ts';
import { cpuSecondsPerGiB } from './sampling.ts';
import { footprintFigures, type Footprint, type MeasuredScale } from './scale.ts';

export { type FigureLimits, figureLimits, SHORT_LIMIT_LABELS } from './figure-limits.ts';
export {
  type IngestRun,
  type Latency,
  type LatencyResult,
  medianRun,
  type RepeatRun,
  type RetrieveRun,
  runFailed,
  type ScenarioResult,
  type SystemRun,
} from './measured.ts';
export { cpuSecondsPerGiB, DEFAULT_SAMPLE_BUDGET_MS, peakRss, percentile, type SampleOptions, sampleLatencies, summarize } from './sampling.ts';

const GiB = 2 ** 30;

export const OURS = 'dicom-vault';
export const ORTHANC = 'Orthanc';

// ---------- shapes of the generated studies ----------

/** 512 x 512 x 16 bit, as the generator's default frame. */
export const FRAME_BYTES = 512 * 512 * 2;
/** Instances of a huge study at least: "a few". */
export const MIN_HUGE_INSTANCES = 4;

/**
 * Instances and frames per instance of a huge study of `gib`: at least MIN_HUGE_INSTANCES, more
 * when an instance would be larger than `maxInstanceGiB`, all of one size.
 */
export function hugeStudyShape(gib: number, maxInstanceGiB: number): { instances: number; frames: number } {
  if (!(gib > 0) || !(maxInstanceGiB > 0)) throw new RangeError('sizes must be above 0');
  const total = gib * GiB;
  const instances = Math.max(MIN_HUGE_INSTANCES, Math.ceil(total / (maxInstanceGiB * GiB) - 1e-9));
  const frames = Math.max(1, Math.round(total / instances / FRAME_BYTES));
  return { instances, frames };
}

/**
 * `n` frame numbers in 1..frames spread over the whole instance (a golden-ratio sequence: no two
 * close together, no pattern a read-ahead could follow), the same for every run and system.
 */
export function spreadFrames(frames: number, n: number): number[] {
  if (!Number.isSafeInteger(frames) || frames < 1) throw new RangeError('frames must be >= 1');
  const phi = (Math.sqrt(5) - 1) / 2;
  return Array.from({ length: n }, (_, i) => 1 + Math.floor((((i + 1) * phi) % 1) * frames));
}

// ---------- figures ----------

/** A figure with the ratio ours/peer (better-is-bigger, as report.advantage) kept for the JSON. */
export interface Figure extends ComparedFigure {
  id: string;
  ratio: number | null;
}

interface Extract {
  id: string;
  /** A function where the words depend on the scenario (STOW or C-STORE). */
  operation: string | ((s: ScenarioResult) => string);
  unit: string;
  lowerIsBetter?: boolean;
  digits?: number;
  value: (r: SystemRun, s: ScenarioResult) => number | null;
  ok: (r: SystemRun) => boolean;
  limit?: (s: ScenarioResult, l: FigureLimits) => FigureLimit | undefined;
  /** Only for scenarios where it means something. */
  when?: (s: ScenarioResult) => boolean;
}

const rate = (bytes: number, seconds: number): number | null => (seconds > 0 ? bytes / 1e6 / seconds : null);
const meanInstanceBytes = (s: ScenarioResult): number => s.bytes / s.instances;
const okIngest = (r: SystemRun): boolean => r.ingest?.ok ?? false;
/** How the scenario's studies went in. */
const ingestBy = (s: ScenarioResult): string => (s.kind === 'dimse' ? 'DIMSE C-STORE' : 'STOW');
const okRetrieve = (r: SystemRun): boolean => r.retrieve?.ok ?? false;
/** One core's crypto per GiB, in CPU seconds: what the node cannot spend less than. */
const cpuFloor = (l: FigureLimits): FigureLimit => ({ name: SHORT_LIMIT_LABELS.ingestCrypto, value: GiB / (l.cryptoMBps * 1e6), kind: 'floor' });
const ram = (l: FigureLimits): FigureLimit => ({ name: SHORT_LIMIT_LABELS.memory, value: l.memoryMiB });
const trip = (l: FigureLimits): FigureLimit | undefined =>
  l.roundTripMs === null ? undefined : { name: SHORT_LIMIT_LABELS.roundTrip, value: l.roundTripMs, kind: 'floor' };

function latencyFigures(id: string, operation: string, pick: (r: SystemRun) => LatencyResult | null, when?: (s: ScenarioResult) => boolean): Extract[] {
  return (['median', 'p99'] as const).map((q) => ({
    id: `${id}-${q}`,
    operation: `${operation}, ${q}`,
    unit: 'ms',
    lowerIsBetter: true,
    value: (r) => pick(r)?.[q] ?? null,
    ok: (r) => pick(r)?.ok ?? false,
    limit: (_s, l) => trip(l),
    ...(when ? { when } : {}),
  }));
}

const EXTRACTS: Extract[] = [
  {
    id: 'ingest-MBps',
    operation: (s) => `ingest (${ingestBy(s)})`,
    unit: 'MB/s',
    value: (r) => (r.ingest ? rate(r.ingest.bytes, r.ingest.seconds) : null),
    ok: okIngest,
    limit: (_s, l) => ({ name: l.ingest.name, value: l.ingest.MBps }),
  },
  {
    id: 'ingest-instances',
    operation: (s) => `ingest (${ingestBy(s)})`,
    unit: 'inst/s',
    value: (r) => (r.ingest && r.ingest.seconds > 0 ? r.ingest.instances / r.ingest.seconds : null),
    ok: okIngest,
    // The byte ceiling in instances of this study's mean size.
    limit: (s, l) => ({ name: l.ingest.name, value: (l.ingest.MBps * 1e6) / meanInstanceBytes(s) }),
  },
  {
    id: 'ingest-rss',
    operation: 'ingest: server peak RSS',
    unit: 'MiB',
    lowerIsBetter: true,
    value: (r) => r.ingest?.peakRssMiB ?? null,
    ok: okIngest,
    limit: (_s, l) => ram(l),
  },
  {
    id: 'ingest-cpu',
    operation: 'ingest: server CPU per GiB',
    unit: 'CPU-s/GiB',
    lowerIsBetter: true,
    value: (r) => (r.ingest ? cpuSecondsPerGiB(r.ingest.cpuSeconds, r.ingest.bytes) : null),
    ok: okIngest,
    limit: (_s, l) => cpuFloor(l),
  },
  {
    id: 'stored-per-byte',
    operation: 'bytes stored per byte ingested',
    unit: 'B/B',
    lowerIsBetter: true,
    digits: 4,
    value: (r, s) => (r.storedBytes === null ? null : r.storedBytes / s.bytes),
    ok: okIngest,
  },
  {
    id: 'retrieve-MBps',
    operation: 'retrieve (WADO study)',
    unit: 'MB/s',
    value: (r) => (r.retrieve ? rate(r.retrieve.bytes, r.retrieve.seconds) : null),
    ok: okRetrieve,
    limit: (_s, l) => ({ name: l.retrieve.name, value: l.retrieve.MBps }),
  },
  {
    id: 'retrieve-instances',
    operation: 'retrieve (WADO study)',
    unit: 'inst/s',
    value: (r) => (r.retrieve && r.retrieve.seconds > 0 ? r.retrieve.parts / r.retrieve.seconds : null),
    ok: okRetrieve,
    limit: (s, l) => ({ name: l.retrieve.name, value: (l.retrieve.MBps * 1e6) / meanInstanceBytes(s) }),
  },
  {
    id: 'retrieve-ttfb',
    operation: 'retrieve: first byte',
    unit: 'ms',
    lowerIsBetter: true,
    value: (r) => r.retrieve?.ttfbMs ?? null,
    ok: okRetrieve,
    limit: (_s, l) => trip(l),
  },
  {
    id: 'retrieve-rss',
    operation: 'retrieve: server peak RSS',
    unit: 'MiB',
    lowerIsBetter: true,
    value: (r) => r.retrieve?.peakRssMiB ?? null,
    ok: okRetrieve,
    limit: (_s, l) => ram(l),
  },
  {
    id: 'retrieve-cpu',
    operation: 'retrieve: server CPU per GiB',
    unit: 'CPU-s/GiB',
    lowerIsBetter: true,
    value: (r) => (r.retrieve ? cpuSecondsPerGiB(r.retrieve.cpuSeconds, r.retrieve.bytes) : null),
    ok: okRetrieve,
    limit: (_s, l) => cpuFloor(l),
  },
  ...latencyFigures('qido', 'QIDO /studies?PatientID=', (r) => r.qido),
  ...latencyFigures('series-metadata', 'series metadata', (r) => r.seriesMetadata),
  ...latencyFigures(
    'frame',
    'one frame of a huge instance',
    (r) => r.frames,
    (s) => s.shape === 'huge' && s.kind !== 'concurrent',
  ),
];

/**
 * Every figure of one scenario: ours, the peer's (the second run, when there is one), the ratio
 * and the limit. A figure nobody measured is left out; one that only the peer lacks stays.
 */
export function scenarioFigures(s: ScenarioResult, limits: FigureLimits | null): Figure[] {
  const ours = s.runs[0];
  const peer = s.runs[1];
  if (!ours) return [];
  const out: Figure[] = [];
  for (const x of EXTRACTS) {
    if (x.when && !x.when(s)) continue;
    const a = x.value(ours, s);
    const b = peer ? x.value(peer, s) : undefined;
    if (a === null && (b === null || b === undefined)) continue;
    const limit = limits && x.limit ? x.limit(s, limits) : undefined;
    const f: Figure = {
      id: x.id,
      scenario: s.label,
      operation: typeof x.operation === 'function' ? x.operation(s) : x.operation,
      unit: x.unit,
      ours: a,
      ...(peer ? { peer: b ?? null, peerOk: x.ok(peer) } : {}),
      ...(x.lowerIsBetter ? { lowerIsBetter: true } : {}),
      ...(limit ? { limit } : {}),
      ...(x.digits !== undefined ? { digits: x.digits } : {}),
      ok: x.ok(ours),
      ratio: null,
    };
    f.ratio = advantage(f);
    out.push(f);
  }
  return out;
}

// ---------- chart ----------

/** Bars for bench/chart.ts: ingest and retrieval of every scenario, per system. */
export function chartRows(results: readonly ScenarioResult[]): ChartRow[] {
  const rows: ChartRow[] = [];
  for (const s of results) {
    for (const [op, pick] of [
      ['ingest', (r: SystemRun) => r.ingest],
      ['retrieve', (r: SystemRun) => r.retrieve],
    ] as const) {
      for (const r of s.runs) {
        const m = pick(r);
        if (!m) continue;
        rows.push({
          group: `${op}, ${s.label}`,
          system: r.system,
          MBps: rate(m.bytes, m.seconds),
          // Instance counts matter for small instances only (chart.ts: one axis for all groups).
          ...(s.shape === 'small' ? { instancesPerSecond: m.seconds > 0 ? ('instances' in m ? m.instances : m.parts) / m.seconds : null } : {}),
          peakRssMiB: m.peakRssMiB,
        });
      }
    }
  }
  return rows;
}

/** The reference lines of the chart's MB/s panel. */
export function chartLimits(l: MachineLimits): ChartLimit[] {
  const f = l.figures;
  return [
    { label: SHORT_LIMIT_LABELS.ingestCrypto, MBps: f.ingestCrypto.MBps },
    { label: SHORT_LIMIT_LABELS.diskWrite1MiBFilesParallel, MBps: f.diskWrite1MiBFilesParallel.MBps },
    { label: SHORT_LIMIT_LABELS.loopbackHttp, MBps: f.loopbackHttp.MBps },
  ];
}

// ---------- scale on paper ----------

export interface HugeFootprint {
  /** DICOM bytes of the study. */
  bytes: number;
  instances: number;
  /** Frames of all instances. */
  frames: number;
  /** Node peak RSS while ingesting it. */
  peakRssMiB: number;
  ingestMBps: number;
  footprint: Footprint;
}

/**
 * The per-unit figures bench/scale.ts projects from: node and manifest sizes and bytes per byte
 * from the largest huge study, catalog bytes per instance from the largest small one (per frame
 * from the huge one beyond that), peak RSS at every huge size. null without a huge study on fs.
 */
export function measuredScale(input: {
  huge: readonly HugeFootprint[];
  small?: { instances: number; footprint: Footprint };
  heldBytesPerChunk?: number;
}): MeasuredScale | null {
  if (input.huge.length === 0) return null;
  const largest = input.huge.reduce((a, b) => (b.bytes > a.bytes ? b : a));
  const perInstance = input.small ? input.small.footprint.catalogBytes / input.small.instances : undefined;
  const figures = footprintFigures(largest.footprint, {
    bytes: largest.bytes,
    instances: largest.instances,
    studies: 1,
    frames: largest.frames,
    ...(perInstance !== undefined ? { catalogBytesPerInstance: perInstance } : {}),
  });
  return {
    ...figures,
    peakRss: [...input.huge].sort((a, b) => a.bytes - b.bytes).map((h) => ({ studyBytes: h.bytes, MiB: h.peakRssMiB })),
    ingestMBps: largest.ingestMBps,
    ...(input.heldBytesPerChunk !== undefined ? { heldBytesPerChunk: input.heldBytesPerChunk } : {}),
  };
}

// ---------- the targets ----------

export interface TargetCheck {
  /** e.g. 'ingest ≥ 2× Orthanc MB/s' */
  target: string;
  scenario: string;
  /** What was measured, e.g. '2.4× (312 vs 130 MB/s)'. */
  measured: string;
  /** null: not measurable in this run (no peer, no limits, one size only). */
  met: boolean | null;
}

/** The peak RSS of ingest counts as flat when the peaks differ by less than this (scale.ts rssModel's noise). */
export const FLAT_RSS_TOLERANCE = { fraction: 0.1, minMiB: 32 };

/**
 * The targets of issue 5, checked against one run's figures (fs store, same-run ratios). They are
 * figures to reach, reported MET or MISSED, never assertions that stop the run.
 */
export function checkTargets(results: readonly ScenarioResult[], limits: FigureLimits | null): TargetCheck[] {
  const out: TargetCheck[] = [];
  const fmt = (v: number): string => (Math.abs(v) >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10));
  const vs = (target: string, s: ScenarioResult, a: number | null, b: number | null, unit: string, min: number, lowerIsBetter = false): void => {
    if (s.runs.length < 2) return; // no peer ran: nothing to compare with
    const ratio = a === null || b === null || !(a > 0) || !(b > 0) ? null : lowerIsBetter ? b / a : a / b;
    out.push({
      target,
      scenario: s.label,
      measured: ratio === null ? (b === null ? 'no peer figure' : 'not measured') : `${ratio.toFixed(2)}× (${fmt(a!)} vs ${fmt(b!)} ${unit})`,
      met: ratio === null ? null : ratio >= min,
    });
  };
  const ingestMBps = (r: SystemRun | undefined): number | null => (r?.ingest?.ok && r.ingest.seconds > 0 ? r.ingest.bytes / 1e6 / r.ingest.seconds : null);
  const retrieveMBps = (r: SystemRun | undefined): number | null =>
    r?.retrieve?.ok && r.retrieve.seconds > 0 ? r.retrieve.bytes / 1e6 / r.retrieve.seconds : null;
  const ingestInstances = (r: SystemRun | undefined): number | null => (r?.ingest?.ok && r.ingest.seconds > 0 ? r.ingest.instances / r.ingest.seconds : null);

  for (const s of results) {
    if (s.kind === 'concurrent') continue;
    const [ours, peer] = s.runs;
    const peerName = peer?.system ?? 'the peer';
    if (s.kind === 'dimse') {
      // Issue 20: C-STORE ingest at least twice Orthanc's own DIMSE SCP, by instances for small
      // instances and by bytes for huge ones.
      if (s.shape === 'huge') vs(`DIMSE ingest ≥ 2× ${peerName}'s DIMSE MB/s`, s, ingestMBps(ours), ingestMBps(peer), 'MB/s', 2);
      else vs(`DIMSE ingest ≥ 2× ${peerName}'s DIMSE instances/s`, s, ingestInstances(ours), ingestInstances(peer), 'inst/s', 2);
      continue;
    }
    if (s.shape === 'huge') {
      vs(`ingest ≥ 2× ${peerName} MB/s`, s, ingestMBps(ours), ingestMBps(peer), 'MB/s', 2);
      vs(`ingest peak RSS ≥ 10× below ${peerName}`, s, ours?.ingest?.peakRssMiB ?? null, peer?.ingest?.peakRssMiB ?? null, 'MiB', 10, true);
      vs(`retrieval ≥ 2× ${peerName} MB/s`, s, retrieveMBps(ours), retrieveMBps(peer), 'MB/s', 2);
      const ttfb = ours?.retrieve?.ok ? ours.retrieve.ttfbMs : null;
      out.push({
        target: 'retrieval first byte < 100 ms',
        scenario: s.label,
        measured: ttfb === null ? 'not measured' : `${fmt(ttfb)} ms`,
        met: ttfb === null ? null : ttfb < 100,
      });
    } else {
      vs(`ingest ≥ 2× ${peerName} instances/s`, s, ingestInstances(ours), ingestInstances(peer), 'inst/s', 2);
      vs(`retrieval ≥ 0.8× ${peerName} MB/s`, s, retrieveMBps(ours), retrieveMBps(peer), 'MB/s', 0.8);
    }
    const mbps = ingestMBps(ours);
    out.push({
      target: 'ingest ≥ 70% of the lower of the disk and crypto limits',
      scenario: s.label,
      measured:
        mbps === null || limits === null
          ? limits === null
            ? 'limits not measured'
            : 'not measured'
          : `${Math.round((mbps / limits.ingest.MBps) * 100)}% (${fmt(mbps)} of ${fmt(limits.ingest.MBps)} MB/s, ${limits.ingest.name})`,
      met: mbps === null || limits === null ? null : mbps >= 0.7 * limits.ingest.MBps,
    });
  }

  const peaks = results
    .filter((s) => s.kind === 'huge' && s.runs[0]?.ingest?.ok)
    .map((s) => ({ gib: s.bytes / GiB, MiB: s.runs[0]!.ingest!.peakRssMiB }))
    .sort((a, b) => a.gib - b.gib);
  if (peaks.length > 0) {
    const lo = Math.min(...peaks.map((p) => p.MiB));
    const hi = Math.max(...peaks.map((p) => p.MiB));
    const tolerance = Math.max(FLAT_RSS_TOLERANCE.fraction * lo, FLAT_RSS_TOLERANCE.minMiB);
    out.push({
      target: 'ingest peak RSS flat across study sizes',
      scenario: peaks.map((p) => `${Number(p.gib.toFixed(3))} GiB`).join(', '),
      measured: peaks.map((p) => `${Math.round(p.MiB)} MiB`).join(', '),
      met: peaks.length < 2 ? null : hi - lo < tolerance,
    });
  }
  return out;
}
