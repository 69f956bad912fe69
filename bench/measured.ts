// What `npm run bench` measured, as plain results: per scenario and system, the ingest, the
// retrieval and the latencies, with how repeated runs are told apart (the median run, unless one
// failed). Apart from figures.ts because every scenario module writes these results and every
// report reads them; the figures are one reading of them.

// ---------- what was measured ----------

/** Latency samples in milliseconds. */
export interface Latency {
  median: number;
  p99: number;
  n: number;
}

export interface LatencyResult extends Latency {
  ok: boolean;
  /** The first failure, when one failed. */
  note?: string;
}

export interface IngestRun {
  /** DICOM bytes sent (request bodies completed). */
  bytes: number;
  seconds: number;
  instances: number;
  requests: number;
  /** Instances the server confirmed. */
  stored: number;
  /** Peak RSS of the server process during the ingest. */
  peakRssMiB: number;
  /** CPU seconds of the server process during the ingest (null: it had exited). */
  cpuSeconds: number | null;
  /** CPU seconds of the benchmark client (generating and sending the studies). */
  clientCpuSeconds: number;
  ok: boolean;
  failures: string[];
}

export interface RetrieveRun {
  /** Part (DICOM) bytes received. */
  bytes: number;
  seconds: number;
  parts: number;
  /** Request sent to first body byte (median over the clients). */
  ttfbMs: number;
  peakRssMiB: number;
  cpuSeconds: number | null;
  clientCpuSeconds: number;
  ok: boolean;
  failures: string[];
}

/** One system (ours or the peer) through one scenario. */
export interface SystemRun {
  system: string;
  /** e.g. 'Orthanc 1.10.1, DICOMweb 1.7'; 'fs store' */
  detail: string;
  ingest: IngestRun | null;
  retrieve: RetrieveRun | null;
  qido: LatencyResult | null;
  seriesMetadata: LatencyResult | null;
  /** Huge instances only: one frame per request, frames spread over one instance. */
  frames: LatencyResult | null;
  /** Bytes allocated on disk by the data directory (ours) or storage directory (peer) after ingest. */
  storedBytes: number | null;
  /** What went wrong outside the timed operations (start-up, a thrown error). */
  errors: string[];
  /**
   * A scenario run more than once (--repeat): every run's ingest, in the order they ran. The
   * other fields are those of the run with the median ingest rate (medianRun).
   */
  repeats?: RepeatRun[];
}

/** One run of a repeated scenario, by its ingest. */
export interface RepeatRun {
  /** null: the ingest failed. */
  instancesPerSecond: number | null;
  megabytesPerSecond: number | null;
  /** Node (or peer) CPU seconds of the ingest. */
  cpuSeconds: number | null;
}

/** Whether anything of a run failed: the bench then exits non-zero. */
/** Whether a run failed. `retrieves`: the scenario reads back (all but DIMSE, which only ingests); a missing retrieval then fails it. */
export function runFailed(r: SystemRun, retrieves = true): boolean {
  const retrieval = retrieves ? r.retrieve?.ok === true : r.retrieve?.ok !== false;
  return r.errors.length > 0 || !r.ingest?.ok || !retrieval || r.qido?.ok === false || r.seriesMetadata?.ok === false || r.frames?.ok === false;
}

/**
 * The run to report of several of one scenario: the one with the median ingest rate (the lower
 * middle one of an even count), with every run's ingest listed in `repeats`. A run that failed
 * is reported instead, so that no failure hides behind a good repeat.
 */
export function medianRun(runs: readonly SystemRun[], retrieves = true): SystemRun {
  if (runs.length === 0) throw new RangeError('no runs');
  if (runs.length === 1) return runs[0]!;
  const rate = (r: SystemRun): number | null => (r.ingest?.ok && r.ingest.seconds > 0 ? r.ingest.instances / r.ingest.seconds : null);
  const repeats: RepeatRun[] = runs.map((r) => {
    const ips = rate(r);
    return {
      instancesPerSecond: ips,
      megabytesPerSecond: ips === null ? null : r.ingest!.bytes / r.ingest!.seconds / 1e6,
      cpuSeconds: r.ingest?.cpuSeconds ?? null,
    };
  });
  const failed = runs.find((r) => runFailed(r, retrieves));
  if (failed !== undefined) return { ...failed, repeats };
  const ranked = [...runs].sort((a, b) => rate(a)! - rate(b)!);
  return { ...ranked[Math.floor((ranked.length - 1) / 2)]!, repeats };
}

export interface ScenarioResult {
  /** e.g. 'huge-1', 'small-1000', 'concurrent-huge', 'dimse-small' */
  id: string;
  /** dimse: pushed with C-STORE (bench/dimse.ts), ingest only; the others with STOW-RS. */
  kind: 'huge' | 'small' | 'concurrent' | 'dimse';
  /** The instances' shape: few huge multi-frame ones or many small single-frame ones. */
  shape: 'huge' | 'small';
  /** e.g. 'huge 1 GiB (4 × 256 MiB)' */
  label: string;
  /** Clients pushing at once (one study each). */
  clients: number;
  /** DICOM bytes of all studies. */
  bytes: number;
  instances: number;
  perRequest: number;
  /** Huge shape: the instance the frames were read from. */
  frameSource?: { instanceBytes: number; numberOfFrames: number };
  /** Ours first, then the peer if it ran. */
  runs: SystemRun[];
}
