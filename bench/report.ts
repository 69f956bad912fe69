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
  limit?: { name: string; value: number };
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

/** 'ours / limit' as a percentage, e.g. '72% of 403 (ingest crypto)'; '' without a limit. */
export function ofLimit(f: Pick<ComparedFigure, 'ours' | 'limit'>): string {
  if (!f.limit || f.ours === null || !(f.limit.value > 0)) return '';
  return `${Math.round((f.ours / f.limit.value) * 100)}% of ${formatNumber(f.limit.value)} (${f.limit.name})`;
}

export function comparisonTable(figures: ComparedFigure[], names: ComparisonNames): string {
  const withPeer = names.peer !== undefined;
  const headers = ['scenario', 'operation', names.ours, ...(withPeer ? [names.peer!, `${names.ours} vs ${names.peer}`] : []), 'of the machine limit'];
  const rows = figures.map((f) => {
    const adv = advantage(f);
    const ratio = adv === null ? '' : f.lowerIsBetter ? `${formatRatio(adv)} ${adv >= 1 ? 'less' : 'more'}` : `${formatRatio(adv)}`;
    return [
      f.scenario,
      f.operation,
      withUnit(f.ours, f.unit),
      ...(withPeer ? [withUnit(f.peer ?? null, f.unit), ratio] : []),
      ofLimit(f),
    ];
  });
  return markdownTable(headers, rows, headers.map((_, i) => (i >= 2 && i < headers.length - 1 ? 'right' : 'left')));
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

function withUnit(v: number | null, unit: string): string {
  return v === null ? 'n/a' : `${formatNumber(v)} ${unit}`;
}
