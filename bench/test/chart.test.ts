import { describe, expect, it } from 'vitest';
import { niceMax, placeLabels, ratioOf, renderChart, type ChartInput } from '../chart.ts';

const SAMPLE: ChartInput = {
  title: 'dicom-vault vs Orthanc <1 GiB> & more',
  machine: '2 vCPU AMD EPYC, 23.5 GiB RAM',
  date: '2026-11-21',
  systems: ['dicom-vault', 'Orthanc'],
  rows: [
    { group: 'ingest, huge 1 GiB', system: 'dicom-vault', MBps: 312.4, peakRssMiB: 92 },
    { group: 'ingest, huge 1 GiB', system: 'Orthanc', MBps: 113, peakRssMiB: 830 },
    { group: 'ingest, 2,000 small "CT" instances', system: 'dicom-vault', MBps: 140, instancesPerSecond: 266, peakRssMiB: 120 },
    { group: 'ingest, 2,000 small "CT" instances', system: 'Orthanc', MBps: 76.5, instancesPerSecond: 146, peakRssMiB: 279 },
    { group: '3 PACS at once', system: 'dicom-vault', MBps: 290 },
    { group: '3 PACS at once', system: 'Orthanc', MBps: null },
  ],
  limits: [
    { label: 'ingest crypto, 1 core', MBps: 403 },
    { label: 'disk write + fdatasync', MBps: 314 },
    { label: 'loopback HTTP', MBps: 1267 },
  ],
  notes: ['Medians of 3 runs; load average 5.7 on 2 cores.'],
};

/**
 * A minimal XML well-formedness check (no DOMParser in Node): one root, every tag closed in
 * order, attributes quoted, only the five predefined entities or numeric references, no raw '<'
 * or '&' in text.
 */
function checkWellFormed(xml: string): { elements: string[]; texts: string[] } {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  const elements: string[] = [];
  const texts: string[] = [];
  let roots = 0;
  let i = 0;
  const checkText = (t: string): void => {
    if (t.includes('<')) throw new Error(`raw < in text: ${t}`);
    for (const m of t.matchAll(/&([^;\s]*);?/g)) {
      if (!/^&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);$/.test(m[0])) throw new Error(`bad entity ${m[0]}`);
    }
  };
  while (i < body.length) {
    const lt = body.indexOf('<', i);
    const text = body.slice(i, lt < 0 ? body.length : lt);
    checkText(text);
    if (text.trim()) {
      if (stack.length === 0) throw new Error(`text outside the root: ${text.trim()}`);
      texts.push(text);
    }
    if (lt < 0) break;
    const gt = body.indexOf('>', lt);
    if (gt < 0) throw new Error('unterminated tag');
    const tag = body.slice(lt + 1, gt);
    i = gt + 1;
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim();
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open}>`);
      continue;
    }
    const selfClosing = tag.endsWith('/');
    const m = /^([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*="[^"<]*")*)\s*\/?$/.exec(tag);
    if (!m) throw new Error(`malformed tag <${tag}>`);
    checkText(m[2] ?? '');
    const attrNames = [...(m[2] ?? '').matchAll(/([A-Za-z_][\w.:-]*)=/g)].map((a) => a[1]);
    if (new Set(attrNames).size !== attrNames.length) throw new Error(`duplicate attribute in <${tag}>`);
    if (stack.length === 0) roots++;
    elements.push(m[1]!);
    if (!selfClosing) stack.push(m[1]!);
  }
  if (stack.length > 0) throw new Error(`unclosed <${stack.join('> <')}>`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
  return { elements, texts };
}

const unescapeXml = (s: string): string =>
  s.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&quot;', '"').replaceAll('&apos;', "'").replaceAll('&amp;', '&');

describe('renderChart', () => {
  const svg = renderChart(SAMPLE);
  const { elements, texts } = checkWellFormed(svg);
  const shown = texts.map(unescapeXml);

  it('is well-formed SVG with a size a browser can lay out', () => {
    expect(elements[0]).toBe('svg');
    expect(svg).toMatch(/<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="\d+" height="\d+" viewBox="0 0 \d+ \d+"/);
  });

  it('shows the title, machine and date, escaped', () => {
    expect(shown).toContain(SAMPLE.title);
    expect(shown.some((t) => t.includes(SAMPLE.machine) && t.includes(SAMPLE.date))).toBe(true);
    expect(svg).not.toContain('<1 GiB>');
  });

  it('labels every group, system and limit', () => {
    for (const r of SAMPLE.rows) expect(shown).toContain(r.group);
    for (const s of SAMPLE.systems) expect(shown).toContain(s);
    expect(shown).toContain('ingest crypto, 1 core: 403');
    expect(shown).toContain('loopback HTTP: 1,267');
  });

  it('prints each value with its unit and marks what was not measured', () => {
    for (const v of ['312 MB/s', '113 MB/s', '140 MB/s', '76.5 MB/s', '290 MB/s', '266 inst/s', '146 inst/s', '92 MiB', '830 MiB', '120 MiB', '279 MiB']) {
      expect(shown).toContain(v);
    }
    expect(shown).toContain('Orthanc: not measured');
  });

  it('states the ratio ours/peer the way each metric reads', () => {
    expect(shown).toContain('2.8× Orthanc'); // 312.4 / 113
    expect(shown).toContain('9.0× less'); // 830 / 92
    expect(shown).toContain('1.8× Orthanc'); // 266 / 146
  });

  it('draws one bar per value, no bar for a missing one', () => {
    // 5 MB/s values, 2 inst/s, 4 RSS, plus the legend swatches (2) and the background.
    expect(elements.filter((e) => e === 'rect')).toHaveLength(5 + 2 + 4 + 2 + 1);
  });

  it('leaves out panels without data', () => {
    const only = renderChart({ ...SAMPLE, rows: SAMPLE.rows.map((r) => ({ group: r.group, system: r.system, MBps: r.MBps ?? null })) });
    expect(only).toContain('Throughput');
    expect(only).not.toContain('Instances per second');
    expect(only).not.toContain('Peak RSS');
    checkWellFormed(only);
  });
});

describe('chart helpers', () => {
  it('niceMax rounds up to 1, 2, 2.5 or 5 x 10^k', () => {
    expect(niceMax(1267)).toBe(2000);
    expect(niceMax(830)).toBe(1000);
    expect(niceMax(2001)).toBe(2500);
    expect(niceMax(266)).toBe(500);
    expect(niceMax(0)).toBe(1);
    expect(niceMax(100)).toBe(100);
  });

  it('placeLabels puts overlapping labels in different rows', () => {
    const placed = placeLabels([
      { x: 300, text: 'disk write + fdatasync: 314' },
      { x: 320, text: 'ingest crypto: 403' },
      { x: 700, text: 'loopback HTTP: 1,267' },
    ]);
    const row = (t: string): number => placed.find((p) => p.text.startsWith(t))!.row;
    expect(row('disk')).toBe(0);
    expect(row('ingest')).toBe(1);
    expect(row('loopback')).toBe(0);
  });

  it('ratioOf needs both values', () => {
    const rows = [
      { group: 'g', system: 'a', MBps: 10 },
      { group: 'g', system: 'b', MBps: null },
    ];
    expect(ratioOf(rows, 'g', ['a', 'b'], { key: 'MBps', lowerIsBetter: false })).toBeUndefined();
    expect(
      ratioOf(
        [
          { group: 'g', system: 'a', MBps: 5 },
          { group: 'g', system: 'b', MBps: 10 },
        ],
        'g',
        ['a', 'b'],
        { key: 'MBps', lowerIsBetter: false },
      ),
    ).toEqual({ text: '0.5× b', verdict: 'worse' });
    expect(
      ratioOf(
        [
          { group: 'g', system: 'a', peakRssMiB: 319 },
          { group: 'g', system: 'b', peakRssMiB: 305 },
        ],
        'g',
        ['a', 'b'],
        { key: 'peakRssMiB', lowerIsBetter: true },
      ),
    ).toEqual({ text: '≈ same', verdict: 'even' });
  });
});
