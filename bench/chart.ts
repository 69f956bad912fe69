// The benchmark results as one SVG a person would rather look at than read: grouped horizontal
// bars of throughput (MB/s), instances/s and peak server memory, one bar per system, with the
// machine's measured limits drawn as reference lines and the ratio ours/peer beside each group.
// Hand-written SVG text: a charting library would bring a DOM or a browser for three bar panels.
import { formatNumber as formatValue, formatRatio } from './report.ts';

export interface ChartRow {
  /** e.g. 'ingest, huge 1 GiB'. Rows with the same group are drawn together, in first-seen order. */
  group: string;
  /** One of ChartInput.systems. */
  system: string;
  MBps?: number | null;
  /**
   * Give it where instance counts matter (many small instances): all groups share one axis, so
   * a few huge instances at 1/s beside 900/s would be an invisible bar.
   */
  instancesPerSecond?: number | null;
  peakRssMiB?: number | null;
}

export interface ChartLimit {
  /** e.g. 'disk write + fsync' */
  label: string;
  MBps: number;
}

export interface ChartInput {
  /** Default 'dicom-vault benchmark'. */
  title?: string;
  /** e.g. '2 vCPU AMD EPYC, 23.5 GiB RAM, ext4 on virtio, Node 24.21.0' */
  machine: string;
  /** Shown as given, e.g. '2026-11-21'. */
  date: string;
  /** Bar order and colour; the first is "ours", the second the peer the ratios compare with. */
  systems: string[];
  rows: ChartRow[];
  /** Drawn as vertical reference lines on the MB/s panel. */
  limits?: ChartLimit[];
  /** Footer lines: method, caveats (load average...). */
  notes?: string[];
}

export const CHART_WIDTH = 1000;
const LABEL_X = 16; // group labels start here
const PLOT_X0 = 270;
const PLOT_X1 = 830;
const RATIO_X = 846;
const BAR_H = 17;
const BAR_GAP = 3;
const GROUP_GAP = 14;
const FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"';
const COLOURS = ['#0f766e', '#d97706', '#6366f1', '#be185d', '#4b5563'];
const GRID = '#e5e7eb';
const INK = '#111827';
const MUTED = '#4b5563';

interface Metric {
  key: 'MBps' | 'instancesPerSecond' | 'peakRssMiB';
  title: string;
  unit: string;
  lowerIsBetter: boolean;
}

const METRICS: Metric[] = [
  { key: 'MBps', title: 'Throughput, MB/s (10^6 bytes/s; higher is better)', unit: 'MB/s', lowerIsBetter: false },
  { key: 'instancesPerSecond', title: 'Instances per second (higher is better)', unit: 'inst/s', lowerIsBetter: false },
  { key: 'peakRssMiB', title: 'Peak RSS of the server, MiB (lower is better)', unit: 'MiB', lowerIsBetter: true },
];

export function renderChart(input: ChartInput): string {
  const out: string[] = [];
  let y = 34;
  out.push(text(LABEL_X, y, input.title ?? 'dicom-vault benchmark', { size: 20, weight: 'bold' }));
  y += 22;
  out.push(text(LABEL_X, y, `${input.machine} · ${input.date}`, { size: 13, fill: MUTED }));
  y += 24;

  // Legend: one swatch per system, then the reference line.
  let lx = LABEL_X;
  input.systems.forEach((s, i) => {
    out.push(`<rect x="${lx}" y="${y - 11}" width="14" height="14" rx="2" fill="${colour(i)}"/>`);
    out.push(text(lx + 20, y, s, { size: 13 }));
    lx += 20 + textWidth(s, 13) + 24;
  });
  if ((input.limits ?? []).length > 0) {
    out.push(`<line x1="${lx}" y1="${y - 4}" x2="${lx + 26}" y2="${y - 4}" stroke="${INK}" stroke-width="1.5" stroke-dasharray="5 3"/>`);
    out.push(text(lx + 32, y, 'limit of this machine, measured in the same run', { size: 13 }));
  }
  y += 18;

  for (const metric of METRICS) {
    const groups = groupsWith(input.rows, metric.key);
    if (groups.length === 0) continue;
    const limits = metric.key === 'MBps' ? (input.limits ?? []).filter((l) => Number.isFinite(l.MBps) && l.MBps > 0) : [];
    y = panel(out, y + 16, metric, groups, input.systems, input.rows, limits);
  }

  if (input.notes && input.notes.length > 0) {
    y += 8;
    for (const note of input.notes) {
      for (const line of wrap(note, 150)) {
        y += 15;
        out.push(text(LABEL_X, y, line, { size: 11, fill: MUTED }));
      }
    }
  }
  const height = Math.ceil(y + 20);
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${CHART_WIDTH}" height="${height}" viewBox="0 0 ${CHART_WIDTH} ${height}" ${FONT}>`,
    `<title>${escapeXml(input.title ?? 'dicom-vault benchmark')}</title>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    ...out,
    `</svg>`,
    '',
  ].join('\n');
}

/** Draws one panel starting at y; returns the y below it. */
function panel(out: string[], y: number, metric: Metric, groups: string[], systems: string[], rows: ChartRow[], limits: ChartLimit[]): number {
  out.push(text(LABEL_X, y, metric.title, { size: 15, weight: 'bold' }));
  y += 10;

  const values = rows.map((r) => r[metric.key]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const max = niceMax(Math.max(0, ...values, ...limits.map((l) => l.MBps)));
  const ticks = tickValues(max);
  const sx = (v: number): number => PLOT_X0 + (Math.max(0, v) / max) * (PLOT_X1 - PLOT_X0);

  // Limit labels above the plot, stacked into as many rows as they need not to overlap.
  const placed = placeLabels(limits.map((l) => ({ x: sx(l.MBps), text: `${l.label}: ${formatValue(l.MBps)}` })));
  const labelRows = placed.reduce((m, p) => Math.max(m, p.row + 1), 0);
  const top = y + labelRows * 14 + (labelRows > 0 ? 6 : 0);

  const barsPerGroup = systems.length;
  const groupH = barsPerGroup * BAR_H + (barsPerGroup - 1) * BAR_GAP;
  const bottom = top + 6 + groups.length * groupH + (groups.length - 1) * GROUP_GAP + 6;

  for (const t of ticks) {
    const x = sx(t);
    out.push(`<line x1="${r1(x)}" y1="${top}" x2="${r1(x)}" y2="${bottom}" stroke="${GRID}" stroke-width="1"/>`);
    out.push(text(x, bottom + 14, formatValue(t), { size: 11, fill: MUTED, anchor: 'middle' }));
  }
  out.push(`<line x1="${PLOT_X0}" y1="${top}" x2="${PLOT_X0}" y2="${bottom}" stroke="${MUTED}" stroke-width="1"/>`);
  if (systems.length >= 2) {
    out.push(text(RATIO_X, y - 10, `${systems[0]} vs ${systems[1]}`, { size: 11, fill: MUTED }));
  }

  // Reference lines go under the bars; their labels sit above the plot.
  for (const p of placed) {
    const x = r1(p.x);
    const ly = y + p.row * 14 + 11;
    out.push(`<line x1="${x}" y1="${ly + 3}" x2="${x}" y2="${bottom}" stroke="${INK}" stroke-width="1.5" stroke-dasharray="5 3" opacity="0.7"/>`);
    out.push(text(p.anchor === 'start' ? p.x + 3 : p.x - 3, ly, p.text, { size: 11, fill: INK, anchor: p.anchor }));
  }

  let gy = top + 6;
  const labels: string[] = []; // drawn last, over bars and lines
  for (const g of groups) {
    const labelY = gy + groupH / 2 + 4;
    const gl = wrap(g, 34);
    for (const [i, line] of gl.entries()) out.push(text(LABEL_X, labelY + (i - (gl.length - 1) / 2) * 14, line, { size: 13 }));
    systems.forEach((s, i) => {
      const by = gy + i * (BAR_H + BAR_GAP);
      const v = rows.find((r) => r.group === g && r.system === s)?.[metric.key];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        labels.push(text(PLOT_X0 + 6, by + BAR_H - 4, `${s}: not measured`, { size: 11, fill: MUTED, italic: true, halo: true }));
        return;
      }
      const x = sx(v);
      const w = Math.max(1, x - PLOT_X0);
      out.push(
        `<rect x="${PLOT_X0}" y="${r1(by)}" width="${r1(w)}" height="${BAR_H}" fill="${colour(i)}"><title>${escapeXml(`${s}, ${g}: ${formatValue(v)} ${metric.unit}`)}</title></rect>`,
      );
      const label = `${formatValue(v)} ${metric.unit}`;
      const lw = textWidth(label, 12);
      // Inside the bar when there is no room after it.
      if (x + 6 + lw > PLOT_X1 + 8 && w > lw + 12) {
        labels.push(text(x - 6, by + BAR_H - 4, label, { size: 12, fill: '#ffffff', anchor: 'end', weight: 'bold' }));
      } else {
        labels.push(text(x + 5, by + BAR_H - 4, label, { size: 12, fill: INK, halo: true }));
      }
    });
    const ratio = ratioOf(rows, g, systems, metric);
    if (ratio) {
      const fill = ratio.verdict === 'even' ? MUTED : colour(ratio.verdict === 'better' ? 0 : 1);
      out.push(text(RATIO_X, labelY, ratio.text, { size: 13, weight: 'bold', fill }));
    }
    gy += groupH + GROUP_GAP;
  }
  out.push(...labels);
  return bottom + 22;
}

/**
 * The first system against the second for one group, worded for the metric ('2.8× Orthanc' for
 * rates, '9.0× less' for memory, '≈ same' within 5%); undefined when either value is missing.
 */
export function ratioOf(
  rows: ChartRow[],
  group: string,
  systems: string[],
  metric: Pick<Metric, 'key' | 'lowerIsBetter'>,
): { text: string; verdict: 'better' | 'worse' | 'even' } | undefined {
  const [ours, peer] = systems;
  if (ours === undefined || peer === undefined) return undefined;
  const a = rows.find((r) => r.group === group && r.system === ours)?.[metric.key];
  const b = rows.find((r) => r.group === group && r.system === peer)?.[metric.key];
  if (typeof a !== 'number' || typeof b !== 'number' || !(a > 0) || !(b > 0)) return undefined;
  // Closer than this is within run-to-run noise on a shared machine; a ratio would overstate it.
  if (Math.abs(a / b - 1) < 0.05) return { text: '≈ same', verdict: 'even' };
  const oursBetter = metric.lowerIsBetter ? a < b : a > b;
  const text = metric.lowerIsBetter ? (a < b ? `${formatRatio(b / a)} less` : `${formatRatio(a / b)} more`) : `${formatRatio(a / b)} ${peer}`;
  return { text, verdict: oursBetter ? 'better' : 'worse' };
}

interface PlacedLabel {
  x: number;
  text: string;
  row: number;
  anchor: 'start' | 'end';
}

/** Greedy: each label (left to right) goes into the first row where it does not overlap. */
export function placeLabels(labels: Array<{ x: number; text: string }>): PlacedLabel[] {
  const rowsEnd: number[] = [];
  const rowsStart: number[] = [];
  const sorted = [...labels].sort((a, b) => a.x - b.x);
  return sorted.map((l) => {
    const w = textWidth(l.text, 11) + 6;
    // Labels near the right edge grow leftwards.
    const anchor: 'start' | 'end' = l.x + w > CHART_WIDTH - 8 ? 'end' : 'start';
    const from = anchor === 'start' ? l.x : l.x - w;
    const to = anchor === 'start' ? l.x + w : l.x;
    let row = rowsEnd.findIndex((end, i) => from > end + 4 || to < rowsStart[i]! - 4);
    if (row < 0) {
      row = rowsEnd.length;
      rowsEnd.push(to);
      rowsStart.push(from);
    } else {
      rowsEnd[row] = Math.max(rowsEnd[row]!, to);
      rowsStart[row] = Math.min(rowsStart[row]!, from);
    }
    return { x: l.x, text: l.text, row, anchor };
  });
}

function groupsWith(rows: ChartRow[], key: Metric['key']): string[] {
  const out: string[] = [];
  for (const r of rows) {
    const v = r[key];
    if (typeof v === 'number' && Number.isFinite(v) && !out.includes(r.group)) out.push(r.group);
  }
  return out;
}

/** The smallest 1, 2, 2.5 or 5 x 10^k at or above v (at least 1). */
export function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function tickValues(max: number): number[] {
  // 4 or 5 intervals: 1 -> 0.2 steps, 2 -> 0.5, 2.5 -> 0.5, 5 -> 1.
  const p = 10 ** Math.floor(Math.log10(max));
  const m = max / p;
  const step = (m <= 1 ? 0.2 : m <= 2.5 ? 0.5 : 1) * p;
  const out: number[] = [];
  for (let t = 0; t <= max * 1.0001; t += step) out.push(Math.round(t * 1e6) / 1e6);
  return out;
}

function colour(i: number): string {
  return COLOURS[i % COLOURS.length]!;
}

/** An estimate (no font metrics without a renderer): average glyph width of a sans font. */
function textWidth(s: string, size: number): number {
  return s.length * size * 0.56;
}

function wrap(s: string, max: number): string[] {
  const words = s.split(' ');
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && line.length + 1 + w.length > max) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines;
}

function text(
  x: number,
  y: number,
  s: string,
  o: { size: number; fill?: string; weight?: 'bold'; anchor?: 'start' | 'middle' | 'end'; italic?: boolean; halo?: boolean },
): string {
  const attrs = [`x="${r1(x)}"`, `y="${r1(y)}"`, `font-size="${o.size}"`, `fill="${o.fill ?? INK}"`];
  // A white outline under the glyphs keeps a label readable where it crosses a line.
  if (o.halo) attrs.push('stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke"');
  if (o.weight) attrs.push(`font-weight="${o.weight}"`);
  if (o.anchor && o.anchor !== 'start') attrs.push(`text-anchor="${o.anchor}"`);
  if (o.italic) attrs.push('font-style="italic"');
  return `<text ${attrs.join(' ')}>${escapeXml(s)}</text>`;
}

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function r1(n: number): number {
  return Math.round(n * 10) / 10;
}
