// How the bench samples: latencies taken one at a time within a time budget, nearest-rank
// percentiles and their summary, the peak RSS to report and CPU seconds per GiB. Apart from
// figures.ts because the scenarios use these while they run; figures.ts reads what they made.
import type { Latency, LatencyResult } from './measured.ts';

const GiB = 2 ** 30;

// ---------- sampling ----------

/** Nearest-rank percentile (p in 0..100) of unsorted values; NaN for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const round = (n: number, d = 1): number => Math.round(n * 10 ** d) / 10 ** d;

export function summarize(ms: readonly number[]): Latency {
  return { median: round(percentile(ms, 50), 2), p99: round(percentile(ms, 99), 2), n: ms.length };
}

export interface SampleOptions {
  /** Samples wanted. */
  n: number;
  /** Samples taken even past the budget. Default 3. */
  minN?: number;
  /** Stop early (after minN) once this much time has gone: a slow peer must not take an hour. Default 60 s. */
  budgetMs?: number;
  /** Clock, ms. Default performance.now. */
  now?: () => number;
}

export const DEFAULT_SAMPLE_BUDGET_MS = 60_000;

/** Calls `fn` one at a time until `n` samples, or `minN` once the budget is spent. */
export async function sampleLatencies(fn: () => Promise<{ ms: number; ok: boolean; note?: string }>, o: SampleOptions): Promise<LatencyResult> {
  const now = o.now ?? (() => performance.now());
  const minN = Math.min(o.n, o.minN ?? 3);
  const budget = o.budgetMs ?? DEFAULT_SAMPLE_BUDGET_MS;
  const start = now();
  const ms: number[] = [];
  let note: string | undefined;
  for (let i = 0; i < o.n; i++) {
    if (i >= minN && now() - start >= budget) break;
    const r = await fn();
    ms.push(r.ms);
    if (!r.ok && note === undefined) note = `sample ${i + 1}: ${r.note ?? 'failed'}`;
  }
  return { ...summarize(ms), ok: note === undefined, ...(note !== undefined ? { note } : {}) };
}

/** The exact kernel peak (VmHWM after a reset) when there is one, else the polled peak. */
export function peakRss(r: { peakRssMiB: number; hwmMiB: number | null }): number {
  return r.hwmMiB === null ? r.peakRssMiB : Math.max(r.hwmMiB, r.peakRssMiB);
}

/** Server CPU seconds per GiB moved; null without CPU figure or bytes. */
export function cpuSecondsPerGiB(cpuSeconds: number | null, bytes: number): number | null {
  if (cpuSeconds === null || !(bytes > 0)) return null;
  return cpuSeconds / (bytes / GiB);
}
