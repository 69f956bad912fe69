// The markdown report of one `npm run bench` run, written to paste under the README's
// "## Benchmarks": the command, the machine, the chart, a table per scenario (ours, the peer, the
// ratio, the fraction of the machine limit), the limits themselves, the block stores, anchoring
// and the scale projection. Only what the run measured; a part that did not run is left out.
import type { AnchorBenchResult } from './anchor.ts';
import type { BackendBenchRow } from './backends.ts';
import type { Figure, TargetCheck } from './figures.ts';
import { limitsTable, type MachineLimits } from './limits.ts';
import { comparisonTable, formatNumber, markdownTable } from './report.ts';

export interface ReportInput {
  /** ISO time the run started. */
  started: string;
  /** The command line, e.g. `npm run bench -- --peer orthanc`. */
  command: string;
  /** One line: CPUs, RAM, filesystem, Node. */
  machine: string;
  /** 1/5/15-min load averages before and after: other jobs on the machine lower every figure. */
  load: { before: number[]; after: number[] };
  limits: MachineLimits | null;
  figures: Figure[];
  /** The issue's targets, MET / MISSED / not measurable. */
  targets: TargetCheck[];
  ours: string;
  /** e.g. 'Orthanc 1.10.1 (DICOMweb 1.7)'; null: no peer ran. */
  peer: string | null;
  /** The chart's path relative to the report, or null. */
  chart: string | null;
  backends: BackendBenchRow[] | null;
  anchor: AnchorBenchResult | null;
  /** scaleMarkdown's output, or null. */
  scale: string | null;
  /** soakMarkdown's output (bench/soak.ts), or null: no soak ran. */
  soak?: string | null;
  /** authMarkdown's output (bench/auth-scenario.ts), or null: the auth scenario did not run. */
  auth?: string | null;
  /** viewerMarkdown's output (bench/viewer.ts), or null: the viewer scenario did not run. */
  viewer?: string | null;
  notes: string[];
}

export function reportMarkdown(r: ReportInput): string {
  const out: string[] = [];
  out.push(`### Results of ${r.started.slice(0, 10)}`, '');
  out.push(`- Command: \`${r.command}\``);
  out.push(`- Machine: ${r.machine}`);
  out.push(`- Load average (1/5/15 min) before: ${r.load.before.join(' / ')}, after: ${r.load.after.join(' / ')}`);
  out.push(`- Systems: ${r.ours}${r.peer ? `; peer: ${r.peer}` : ''}`);
  out.push('');
  if (r.chart) out.push(`![benchmark chart](${r.chart})`, '');

  const scenarios = [...new Set(r.figures.map((f) => f.scenario))];
  for (const s of scenarios) {
    out.push(`#### ${s}`, '');
    const names = r.peer ? { ours: 'dicom-vault', peer: 'Orthanc' } : { ours: 'dicom-vault' };
    out.push(
      comparisonTable(
        r.figures.filter((f) => f.scenario === s),
        names,
        { scenarioColumn: false },
      ),
      '',
    );
  }
  if (scenarios.length > 0) {
    out.push(
      'Ratios read "better is bigger": ours/peer for rates, peer/ours for time, memory, CPU and bytes. ' +
        '"of the machine limit": a rate as a percentage of the ceiling it runs against, a cost or latency as a multiple of its floor.',
      '',
    );
  }

  if (r.targets.length > 0) {
    out.push('#### Targets', '');
    out.push(targetsTable(r.targets), '');
  }

  if (r.auth) out.push('#### Access control: identity off and on, revocation', '', r.auth.trimEnd(), '');
  if (r.viewer) out.push('#### A viewer opening a series (OHIF)', '', r.viewer.trimEnd(), '');
  if (r.soak) out.push('#### Soak', '', r.soak.trimEnd(), '');

  if (r.limits) {
    const m = r.limits.machine;
    out.push('#### Limits of this machine, measured in the same run', '');
    out.push(`${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, kernel ${m.kernel}, Node ${m.node}, OpenSSL ${m.openssl}; ${r.limits.seconds} s.`, '');
    out.push(limitsTable(r.limits), '');
  }

  if (r.backends && r.backends.length > 0) {
    out.push('#### Block stores', '');
    out.push(
      markdownTable(
        ['store', 'operation', 'MB/s', 'vs fs', 'server peak RSS', 'server CPU-s', 'ok'],
        r.backends.map((b) => [
          b.backend,
          b.operation,
          formatNumber(b.MBps),
          b.ratioToFs === null ? '' : `${b.ratioToFs.toFixed(2)}×`,
          `${formatNumber(b.nodePeakRssMiB)} MiB`,
          b.nodeCpuSeconds === null ? '' : formatNumber(b.nodeCpuSeconds),
          b.ok ? 'yes' : `NO${b.note ? `: ${b.note}` : ''}`,
        ]),
        ['left', 'left', 'right', 'right', 'right', 'right', 'left'],
      ),
      '',
    );
  }

  if (r.anchor) {
    const a = r.anchor;
    out.push('#### Anchoring (local anvil)', '');
    out.push(
      markdownTable(
        ['roots per batch', 'transactions', 'gas per batch', 'gas per study', 'receipt bytes', 'proof hashes', `cost per study at ${a.gasPriceGwei} gwei`],
        a.rows.map((x) => [
          x.batchSize.toLocaleString('en-US'),
          x.transactions,
          x.gasPerBatch.toLocaleString('en-US'),
          x.gasPerStudy.toLocaleString('en-US'),
          x.receiptBytes,
          x.proofHashes,
          `${x.costPerStudy} ETH`,
        ]),
        ['right', 'right', 'right', 'right', 'right', 'right', 'right'],
      ),
      '',
      `Committed version to confirmed anchor: median ${a.ingestToConfirmedMs.median} ms, max ${a.ingestToConfirmedMs.max} ms ` +
        `(${a.ingestToConfirmedMs.n} versions, batch interval 0, 1 confirmation; add the configured batch interval). ${a.formula}.`,
      '',
    );
  }

  if (r.scale) out.push("#### Scale on paper (projected from this run's per-GiB figures)", '', r.scale.trimEnd(), '');
  if (r.notes.length > 0) out.push('#### Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  return out.join('\n');
}

export function targetsTable(targets: readonly TargetCheck[]): string {
  return markdownTable(
    ['target', 'scenario', 'measured', ''],
    targets.map((t) => [t.target, t.scenario, t.measured, t.met === null ? 'not measurable here' : t.met ? 'MET' : 'MISSED']),
  );
}
