// Markdown for the benchmark section of the README and the console: figures side by side with
// the peer (ratio ours/peer, worded so that > 1 is better) and as a fraction of the machine limit
// each runs against.

export interface ComparedFigure {
  /** e.g. 'huge 1 GiB (4 x 512 frames)' */
  scenario: string;
  /** e.g. 'ingest (STOW, 1 instance/request)' */
  operation: string;
  /** e.g. 'MB/s', 'inst/s', 'ms', 'MiB' */
  unit: string;
  ours: number | null;
  peer?: number | null;
  /** Latency and memory: smaller is better, so the ratio shown is peer/ours. */
  lowerIsBetter?: boolean;
  /** The machine limit this figure runs against (same unit). */
  limit?: FigureLimit;
  /** Decimals shown (default: formatNumber's, 0-2 by magnitude). */
  digits?: number;
  /** false: the operation failed (the figure is shown, flagged). Default true. */
  ok?: boolean;
  /** The peer's operation failed. Default true. */
  peerOk?: boolean;
}

/**
 * A ceiling (a rate the machine cannot exceed, or a size it cannot hold: shown as ours/limit, e.g.
 * '72% of 403') or a floor (a cost or latency it cannot go under: shown as ours/floor, e.g. '1.6×
 * the floor of 2.7').
 */
export interface FigureLimit {
  name: string;
  value: number;
  /** Default 'ceiling'. */
  kind?: 'ceiling' | 'floor';
}

export interface ComparisonNames {
  ours: string;
  /** Omit when no peer ran: the ratio column is left out. */
  peer?: string;
}

/** Better-is-bigger ratio: ours/peer for rates, peer/ours when lower is better; null if either is missing. */
export function advantage(f: Pick<ComparedFigure, 'ours' | 'peer' | 'lowerIsBetter'>): number | null {
  const a = f.ours;
  const b = f.peer;
  if (a === null || b === null || b === undefined || !(a > 0) || !(b > 0)) return null;
  return f.lowerIsBetter ? b / a : a / b;
}

/**
 * 'ours / limit' as a percentage, e.g. '72% of 403 (ingest crypto)', or for a floor the multiple,
 * e.g. '1.6× the floor of 2.7 (ingest crypto)'; '' without a limit.
 */
export function ofLimit(f: Pick<ComparedFigure, 'ours' | 'limit'>): string {
  if (!f.limit || f.ours === null || !(f.limit.value > 0) || !Number.isFinite(f.ours)) return '';
  if (f.limit.kind === 'floor') return `${formatRatio(f.ours / f.limit.value)} the floor of ${formatNumber(f.limit.value)} (${f.limit.name})`;
  return `${Math.round((f.ours / f.limit.value) * 100)}% of ${formatNumber(f.limit.value)} (${f.limit.name})`;
}

/** The ratio column: '3.0×' for rates, '9.2× less' / '1.5× more' when lower is better, '≈ same' within 5%. */
export function ratioText(f: Pick<ComparedFigure, 'ours' | 'peer' | 'lowerIsBetter'>): string {
  const adv = advantage(f);
  if (adv === null) return '';
  // Closer than this is within run-to-run noise on a shared machine (as in the chart).
  if (Math.abs(adv - 1) < 0.05) return '≈ same';
  if (!f.lowerIsBetter) return formatRatio(adv);
  return adv >= 1 ? `${formatRatio(adv)} less` : `${formatRatio(1 / adv)} more`;
}

/** `scenarioColumn: false` for a table of one scenario under its own heading. */
export function comparisonTable(figures: ComparedFigure[], names: ComparisonNames, o: { scenarioColumn?: boolean } = {}): string {
  const withPeer = names.peer !== undefined;
  const lead = o.scenarioColumn === false ? [] : ['scenario'];
  const headers = [...lead, 'operation', names.ours, ...(withPeer ? [names.peer!, `${names.ours} vs ${names.peer}`] : []), 'of the machine limit'];
  const rows = figures.map((f) => [
    ...(lead.length > 0 ? [f.scenario] : []),
    f.operation,
    withUnit(f.ours, f.unit, f.digits, f.ok),
    ...(withPeer ? [withUnit(f.peer ?? null, f.unit, f.digits, f.peerOk), ratioText(f)] : []),
    ofLimit(f),
  ]);
  return markdownTable(
    headers,
    rows,
    headers.map((_, i) => (i >= lead.length + 1 && i < headers.length - 1 ? 'right' : 'left')),
  );
}

/** A GitHub-flavoured markdown table; `|` in cells is escaped. */
export function markdownTable(headers: string[], rows: Array<Array<string | number>>, align: Array<'left' | 'right'> = []): string {
  const cell = (v: string | number): string => String(v).replaceAll('|', '\\|').replaceAll('\n', ' ');
  const lines = [
    `| ${headers.map(cell).join(' | ')} |`,
    `|${headers.map((_, i) => (align[i] === 'right' ? '---:' : '---')).join('|')}|`,
    ...rows.map((r) => `| ${headers.map((_, i) => cell(r[i] ?? '')).join(' | ')} |`),
  ];
  return lines.join('\n');
}

/** 1,234 / 56.7 / 0.85 */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return '?';
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 10) return String(Math.round(v * 10) / 10);
  return String(Math.round(v * 100) / 100);
}

/** 2.4× / 12× */
export function formatRatio(r: number): string {
  return `${r >= 10 ? Math.round(r) : r.toFixed(1)}×`;
}

function withUnit(v: number | null, unit: string, digits?: number, ok = true): string {
  const shown = v === null ? 'n/a' : `${digits === undefined ? formatNumber(v) : v.toFixed(digits)} ${unit}`;
  return ok ? shown : `${shown} (FAILED)`;
}
