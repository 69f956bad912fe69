import { describe, expect, it } from 'vitest';
import { classifyFault, paceDelayMs, SoakTally, soakMarkdown, soakTargets, type SoakResult } from '../soak-report.ts';

describe('the soak tally', () => {
  const tally = new SoakTally();
  tally.record({ at: 1_000, kind: 'stow-small', outcome: 'ok', bytesIn: 10e6, instances: 20 });
  tally.record({ at: 59_999, kind: 'stow-huge', outcome: 'ok', bytesIn: 268e6, instances: 1 });
  tally.record({ at: 61_000, kind: 'wado-study', outcome: 'ok', bytesOut: 52e6 });
  tally.record({ at: 62_000, kind: 'truncated', outcome: 'expected', reason: 'HTTP 400' });
  tally.record({ at: 63_000, kind: 'truncated', outcome: 'expected', reason: 'HTTP 400' });
  tally.record({ at: 64_000, kind: 'stow-small', outcome: 'expected', reason: 'busy (503)' });
  tally.record({ at: 119_000, kind: 'wado-frame', outcome: 'unexpected', reason: 'frame 3: HTTP 500' });
  // A request finishing after the load's end, and the closing sample.
  tally.record({ at: 121_500, kind: 'stow-small', outcome: 'ok', bytesIn: 10e6, instances: 20 });
  for (const [at, rss, cpu] of [
    [0, 100, 1],
    [30_000, 150, 4],
    [90_000, 180, 10],
    [100_000, 160, 11],
    [121_000, 170, 12],
    // After the load: idle, it is no floor of the last minute.
    [122_000, 90, 12],
  ] as const)
    tally.sample(at, rss, cpu);
  // The node's V8 heap and external memory after a forced full GC.
  for (const [at, heap, external] of [
    [15_000, 40, 12],
    [45_000, 38, 11],
    [75_000, 44, 12],
    [105_000, 42, 13],
    [125_000, 30, 9],
  ] as const)
    tally.sampleHeap(at, heap, external);

  it('counts by minute: requests, instances, MB, refusals apart from failures, RSS peak and floor, post-GC heap, CPU', () => {
    const m = tally.minutes(120_000);
    expect(m).toHaveLength(2);
    expect(m[0]).toMatchObject({
      minute: 1,
      instancesStored: 21,
      MBIn: 278,
      MBOut: 0,
      expected: 0,
      unexpected: 0,
      peakRssMiB: 150,
      floorRssMiB: 100,
      heapMiB: 38,
      externalMiB: 11,
      nodeCpuSeconds: 3,
    });
    expect(m[0]!.requests['stow-small']).toBe(1);
    expect(m[0]!.requests['stow-huge']).toBe(1);
    // What finished after the load's end counts in its last minute.
    expect(m[1]).toMatchObject({
      minute: 2,
      instancesStored: 20,
      MBIn: 10,
      MBOut: 52,
      expected: 3,
      unexpected: 1,
      peakRssMiB: 180,
      floorRssMiB: 160,
      heapMiB: 42,
      externalMiB: 13,
      nodeCpuSeconds: 8,
    });
    expect(m[1]!.requests.truncated).toBe(2);
    // Without a length, every minute with anything in it has its row.
    expect(tally.minutes()).toHaveLength(3);
  });

  it('totals, errors by kind and reason, RSS and CPU over the run', () => {
    expect(tally.totals()).toMatchObject({ instancesStored: 41, bytesIn: 288e6, bytesOut: 52e6 });
    expect(tally.errors()).toEqual({
      expected: { 'truncated: HTTP 400': 2, 'stow-small: busy (503)': 1 },
      unexpected: { 'wado-frame: frame 3: HTTP 500': 1 },
    });
    expect(tally.rss()).toEqual({ startMiB: 100, peakMiB: 180, lastMiB: 90 });
    expect(tally.heap()).toEqual({ firstMiB: 40, lastMiB: 30, samples: 5 });
    expect(tally.cpuSeconds()).toBe(11);
  });
});

describe('faulty uploads', () => {
  it('a refusal the node owes is expected; acceptance, a 5xx or silence is not', () => {
    expect(classifyFault('truncated', { status: 400, closedBy: 'server', ms: 20 })).toEqual({ outcome: 'expected', reason: 'HTTP 400' });
    expect(classifyFault('truncated', { status: undefined, closedBy: 'server', ms: 20 })).toEqual({ outcome: 'expected', reason: 'closed without an answer' });
    expect(classifyFault('wrong-boundary', { status: undefined, closedBy: 'server', ms: 20 }).outcome).toBe('unexpected');
    expect(classifyFault('garbage', { status: 409, closedBy: 'server', ms: 20 })).toEqual({ outcome: 'expected', reason: 'HTTP 409' });
    expect(classifyFault('garbage', { status: 200, closedBy: 'server', ms: 20 })).toEqual({ outcome: 'unexpected', reason: 'HTTP 200' });
    expect(classifyFault('wrong-boundary', { status: 500, closedBy: 'server', ms: 20 })).toEqual({ outcome: 'unexpected', reason: 'HTTP 500' });
    expect(classifyFault('garbage', { status: 503, closedBy: 'server', ms: 20 })).toEqual({ outcome: 'expected', reason: 'busy (503)' });
    expect(classifyFault('garbage', { status: undefined, closedBy: 'cap', ms: 30_000 })).toEqual({ outcome: 'unexpected', reason: 'no answer within 30 s' });
    expect(classifyFault('abandoned', { status: undefined, closedBy: 'client', ms: 5 }).outcome).toBe('expected');
  });

  it('a stalled upload must be ended by the node; the time is grouped by 5 s', () => {
    expect(classifyFault('stalled', { status: undefined, closedBy: 'server', ms: 31_200 })).toEqual({
      outcome: 'expected',
      reason: 'closed by the node after 30-35 s',
    });
    expect(classifyFault('stalled', { status: 408, closedBy: 'server', ms: 30_100 })).toEqual({ outcome: 'expected', reason: 'HTTP 408 after 30-35 s' });
    expect(classifyFault('stalled', { status: undefined, closedBy: 'cap', ms: 75_000 })).toEqual({ outcome: 'unexpected', reason: 'still open after 75 s' });
  });

  it('paced clients wait for their average rate, never a negative time', () => {
    expect(paceDelayMs(10e6, 5e6, 1000)).toBe(1000);
    expect(paceDelayMs(10e6, 5e6, 3000)).toBe(0);
  });
});

function result(o: Partial<SoakResult> = {}): SoakResult {
  const requests = {
    'stow-small': 1,
    'stow-huge': 0,
    qido: 0,
    'wado-study': 0,
    'wado-frame': 0,
    truncated: 0,
    'wrong-boundary': 0,
    garbage: 0,
    abandoned: 0,
    stalled: 0,
  };
  return {
    minutes: 6,
    ingestMBps: 10,
    seconds: 360,
    store: 'fs',
    perMinute: [1, 2, 3, 4, 5, 6].map((minute) => ({
      minute,
      instancesStored: 10,
      MBIn: 60,
      MBOut: 30,
      requests,
      expected: 0,
      unexpected: 0,
      peakRssMiB: minute === 1 ? 150 : 200 + minute,
      floorRssMiB: minute === 1 ? 120 : 170 + minute,
      heapMiB: 40 + minute,
      externalMiB: 10,
      nodeCpuSeconds: 20,
    })),
    totals: { instancesStored: 60, bytesIn: 360e6, bytesOut: 180e6, requests },
    rss: { startMiB: 120, peakMiB: 206, finalMiB: 200 },
    heap: { firstMiB: 41, lastMiB: 46, samples: 24 },
    nodeCpuSeconds: 120,
    errors: { expected: { 'truncated: HTTP 400': 3 }, unexpected: {}, examples: [] },
    verification: {
      studies: 4,
      instancesAcknowledged: 60,
      wado: { studies: 4, instancesVerified: 60, failures: [] },
      verifier: { studies: 4, ok: 4, instances: 60, seconds: 2, failures: [] },
      cli: { studies: 3, ok: 3, failures: [] },
      refused: { uploads: 12, instancesListed: 0, failures: [] },
    },
    nodeUpAtEnd: true,
    errorsOutside: [],
    ...o,
  };
}

describe("the soak's targets and report", () => {
  it('all met on a clean run', () => {
    const t = soakTargets(result());
    expect(t.map((x) => x.met)).toEqual([true, true, true, true, true]);
    expect(t[4]).toMatchObject({ measured: 'RSS floor 172 → 176 MiB (peak 202 → 206 MiB; post-GC heap 42 → 46 MiB)' });
  });

  it('memory growth is judged on the RSS floor, not on the peak', () => {
    const r = result();
    // Peaks jumping with what happened to overlap in a minute, the floor flat: met.
    const spiky = soakTargets({ ...r, perMinute: r.perMinute.map((m) => ({ ...m, peakRssMiB: m.minute % 2 === 0 ? 200 : 320 })) })[4]!;
    expect(spiky.met).toBe(true);
    // The floor rising by more than 10% and 32 MiB with flat peaks: missed.
    const leak = soakTargets({ ...r, perMinute: r.perMinute.map((m) => ({ ...m, floorRssMiB: 150 + m.minute * 15 })) })[4]!;
    expect(leak).toMatchObject({ met: false });
    expect(leak.measured).toMatch(/^RSS floor 180 → 240 MiB/);
    // Without post-GC samples (the probe failed) the RSS still judges.
    const noHeap = soakTargets({ ...r, heap: null, perMinute: r.perMinute.map((m) => ({ ...m, heapMiB: null, externalMiB: null })) })[4]!;
    expect(noHeap).toMatchObject({ met: true, measured: 'RSS floor 172 → 176 MiB (peak 202 → 206 MiB; post-GC heap not measured)' });
  });

  it('an acknowledged instance missing, a failure, a refused upload stored, memory growing: each MISSED', () => {
    const r = result();
    const bad = soakTargets({
      ...r,
      verification: {
        ...r.verification,
        wado: { studies: 4, instancesVerified: 59, failures: ['x: 1 acknowledged instances missing'] },
        refused: { uploads: 12, instancesListed: 1, failures: [] },
      },
      errors: { ...r.errors, unexpected: { 'wado-frame: HTTP 500': 1 } },
      perMinute: r.perMinute.map((m) => ({ ...m, peakRssMiB: m.minute * 60, floorRssMiB: m.minute * 50 })),
      nodeUpAtEnd: false,
    });
    expect(bad.map((x) => x.met)).toEqual([false, false, false, false, false]);
    // The verifier failing is as bad as WADO failing.
    expect(
      soakTargets({ ...r, verification: { ...r.verification, verifier: { studies: 4, ok: 3, instances: 50, seconds: 2, failures: ['y: missing block'] } } })[0]!
        .met,
    ).toBe(false);
  });

  it('too short to tell a memory trend', () => {
    const r = result({ minutes: 2, seconds: 120 });
    expect(soakTargets({ ...r, perMinute: r.perMinute.slice(0, 2) })[4]).toMatchObject({ met: null, measured: '2 full minutes (5 needed)' });
  });

  it('the report: a row per minute, refusals and failures by kind', () => {
    const md = soakMarkdown(
      result({ errors: { expected: { 'truncated: HTTP 400': 3 }, unexpected: { 'qido: HTTP 500': 1 }, examples: ['12 s: qido: HTTP 500'] } }),
    );
    expect(md).toContain('| 6 | 10 | 60 | 30 |');
    // Each minute: RSS peak and floor, post-GC heap and external memory.
    expect(md).toContain('| 206 | 176 | 46 | 10 | 20 |');
    expect(md).toContain('post-GC V8 heap 41 MiB at the first sample, 46 MiB at the last (24 samples)');
    expect(md).toContain('| truncated: HTTP 400 | expected refusal | 3 |');
    expect(md).toContain('| qido: HTTP 500 | UNEXPECTED | 1 |');
    expect(md).toContain('60 of 60 acknowledged instances of 4 studies byte-exact');
    expect(md).toContain('- 12 s: qido: HTTP 500');
  });
});
