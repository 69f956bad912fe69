// The viewer scenario's figures: each system's openings summarized (medians, ranges, the first
// opening after each start), the targets of issue 27 and the markdown. The run is viewer.ts.
import { percentile, type TargetCheck } from './figures.ts';
import { formatNumber, markdownTable } from './report.ts';
import { r1, type ViewerOpening, type ViewerResult, type ViewerSystemRun } from './viewer.ts';

// ---------- figures ----------

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

function spread(values: number[]): Spread | null {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return null;
  return { median: r1(percentile(v, 50)), min: r1(Math.min(...v)), max: r1(Math.max(...v)), n: v.length };
}

export interface ViewerSummary {
  firstImage: Spread | null;
  series: Spread | null;
  /** Only the first opening after each start. */
  firstImageAfterStart: Spread | null;
  seriesAfterStart: Spread | null;
  ready: Spread | null;
  studyQido: Spread | null;
  seriesQido: Spread | null;
  metadata: Spread | null;
  firstFrame: Spread | null;
  frameMedian: Spread | null;
  serverCpuSeconds: Spread | null;
  /** Each round's median first image and series times. */
  rounds: Array<{ round: number; firstImage: number; series: number }>;
  failedOpenings: number;
}

export function summarizeViewer(s: ViewerSystemRun): ViewerSummary {
  const ok = s.openings.filter((x) => x.ok);
  const pick = (f: (x: ViewerOpening) => number, xs = ok): Spread | null => spread(xs.map(f));
  const rounds = [...new Set(ok.map((x) => x.round))].map((round) => {
    const xs = ok.filter((x) => x.round === round);
    return {
      round,
      firstImage: r1(
        percentile(
          xs.map((x) => x.firstImageMs),
          50,
        ),
      ),
      series: r1(
        percentile(
          xs.map((x) => x.seriesMs),
          50,
        ),
      ),
    };
  });
  const afterStart = ok.filter((x) => x.afterStart);
  return {
    firstImage: pick((x) => x.firstImageMs),
    series: pick((x) => x.seriesMs),
    firstImageAfterStart: pick((x) => x.firstImageMs, afterStart),
    seriesAfterStart: pick((x) => x.seriesMs, afterStart),
    ready: pick((x) => x.readyMs),
    studyQido: pick((x) => x.studyQidoMs),
    seriesQido: pick((x) => x.seriesQidoMs),
    metadata: pick((x) => x.metadataMs),
    firstFrame: pick((x) => x.firstFrameMs),
    frameMedian: pick((x) => x.frameMs.median),
    serverCpuSeconds: pick((x) => x.serverCpuSeconds ?? NaN),
    rounds,
    failedOpenings: s.openings.length - ok.length,
  };
}

/** The issue's targets: the peer's median over ours, first image >= 5x, whole series >= 2x. */
export function viewerTargets(r: ViewerResult): TargetCheck[] {
  const [ours, peer] = r.systems;
  if (!ours || !peer) return [];
  const a = summarizeViewer(ours);
  const b = summarizeViewer(peer);
  const check = (what: string, min: number, x: Spread | null, y: Spread | null, key: 'firstImage' | 'series'): TargetCheck => {
    const ratio = x && y && x.median > 0 ? y.median / x.median : null;
    // Each round's ratio of medians: how much one round could have said otherwise.
    const perRound = a.rounds
      .map((ra) => {
        const rb = b.rounds.find((q) => q.round === ra.round);
        return rb ? rb[key] / ra[key] : NaN;
      })
      .filter((v) => Number.isFinite(v));
    const rounds = perRound.length > 0 ? `; rounds ${perRound.map((v) => `${v.toFixed(1)}×`).join(', ')}` : '';
    return {
      target: `${what} ≥ ${min}× ${peer.system} (identity and audit log on)`,
      scenario: r.label,
      measured:
        ratio === null
          ? x === null
            ? 'not measured (ours failed)'
            : 'no peer figure'
          : `${ratio.toFixed(2)}× (${formatNumber(x!.median)} vs ${formatNumber(y!.median)} ms, medians of ${x!.n} and ${y!.n} openings${rounds})`,
      met: ratio === null ? null : ratio >= min,
    };
  };
  return [check('time to the first image', 5, a.firstImage, b.firstImage, 'firstImage'), check('time to the whole series', 2, a.series, b.series, 'series')];
}

/** Our side failed: an error, a failed opening, or a frame part that does not name its transfer syntax. */
export function viewerFailed(r: ViewerResult): boolean {
  const ours = r.systems[0];
  if (r.errors.length > 0 || !ours || ours.errors.length > 0 || ours.openings.length === 0) return true;
  return ours.openings.some((x) => !x.ok) || ours.frameContentTypes.some((t) => !/;\s*transfer-syntax=[\d.]+/.test(t));
}

export function viewerMarkdown(r: ViewerResult): string {
  const sums = r.systems.map(summarizeViewer);
  const fmtSpread = (s: Spread | null, unit = 'ms'): string =>
    s === null ? 'n/a' : s.n === 1 ? `${formatNumber(s.median)} ${unit}` : `${formatNumber(s.median)} ${unit} (${formatNumber(s.min)}–${formatNumber(s.max)})`;
  const ratio = (k: keyof ViewerSummary): string => {
    if (sums.length < 2) return '';
    const x = sums[0]![k] as Spread | null;
    const y = sums[1]![k] as Spread | null;
    return x && y && x.median > 0 ? `${(y.median / x.median).toFixed(2)}×` : '';
  };
  const rows: Array<[string, keyof ViewerSummary, string?]> = [
    ['time to the first image', 'firstImage'],
    ['time to the whole series', 'series'],
    ['first image, first opening after start', 'firstImageAfterStart'],
    ['whole series, first opening after start', 'seriesAfterStart'],
    ['study QIDO', 'studyQido'],
    ['series QIDO', 'seriesQido'],
    ['series metadata', 'metadata'],
    ['start to frame order known (QIDO, QIDO, metadata parsed)', 'ready'],
    ["the first image's frame request", 'firstFrame'],
    ['a frame request (median of each opening)', 'frameMedian'],
    ['server CPU per opening', 'serverCpuSeconds', 's'],
  ];
  const headers = ['per opening', ...r.systems.map((s) => s.system), ...(r.systems.length > 1 ? ['ratio'] : [])];
  const table = markdownTable(
    headers,
    [
      ...rows.map(([name, k, unit]) => [name, ...sums.map((s) => fmtSpread(s[k] as Spread | null, unit ?? 'ms')), ...(r.systems.length > 1 ? [ratio(k)] : [])]),
      [
        'server peak RSS',
        ...r.systems.map((s) => (s.peakRssMiB === null ? 'n/a' : `${formatNumber(s.peakRssMiB)} MiB`)),
        ...(r.systems.length > 1 ? [''] : []),
      ],
    ],
    ['left', ...r.systems.map(() => 'right' as const), ...(r.systems.length > 1 ? ['right' as const] : [])],
  );
  const out: string[] = [];
  out.push(
    `A ${formatNumber(r.instances)}-instance series of single-frame ${r.rows} × ${r.columns} 16-bit instances (${formatNumber(r.seriesBytes / 1e6)} MB), ` +
      `opened as OHIF does: study QIDO, series QIDO, series metadata, then frame 1 of every instance over ${r.connections} keep-alive connections, ` +
      `the ${r.start} image first and its neighbours outward (Accept: \`${r.accept}\`). ${r.rounds} rounds, each system started on its stored data ` +
      `(alternating), ${r.openingsPerRound} openings each: median (min–max) of ${r.rounds * r.openingsPerRound} openings; ratios are Orthanc's median over ours.`,
    '',
    table,
    '',
  );
  for (const [i, s] of r.systems.entries()) {
    const sum = sums[i]!;
    const bits = [
      `${s.system} (${s.detail})`,
      s.ingest ? `STOW (untimed) ${s.ingest.stored} of ${s.ingest.instances} in ${s.ingest.seconds} s` : 'no STOW',
      `each round's median first image / series: ${sum.rounds.map((x) => `${formatNumber(x.firstImage)} / ${formatNumber(x.series)} ms`).join(', ') || 'none'}`,
      `frame parts: ${s.frameContentTypes.map((t) => `\`${t}\``).join(', ') || 'none seen'}`,
      `${s.requests} requests over ${s.connectionsOpened} connections`,
      ...(s.auditRecords === null ? [] : [`${s.auditRecords} audit records written`]),
      ...(sum.failedOpenings > 0
        ? [
            `${sum.failedOpenings} openings FAILED: ${s.openings
              .find((x) => !x.ok)
              ?.failures.slice(0, 2)
              .join('; ')}`,
          ]
        : []),
      ...s.errors.slice(0, 3),
    ];
    out.push(`- ${bits.join('; ')}.`);
  }
  if (r.errors.length > 0) out.push(`- Errors: ${r.errors.slice(0, 3).join('; ')}.`);
  out.push(
    '- Every frame was hashed (SHA-256) as it streamed and compared with the generated frame, in the client, inside the timing, for both systems. ' +
      "The node serves every byte decrypted and verified, with identity on (a staff account's bearer token, made with `dicom-vault user add`) " +
      'and each access written to its audit log (info level, read from its stdout); Orthanc serves its stored files unauthenticated.',
    '- The 10,000-instance study retrieval target (≥ 0.8× Orthanc MB/s) is checked by the `small` scenario (`--instances 10000`), not here.',
  );
  return `${out.join('\n')}\n`;
}
