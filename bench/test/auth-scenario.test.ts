import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AUTH_MODES, AUTH_OPS, authFailed, authMarkdown, authTargets, compareMedians, summarizeAuth, type AuthResult } from '../auth-report.ts';
import { runAuthScenario } from '../auth-scenario.ts';
import { ScratchSpace } from '../scratch.ts';

describe('the auth scenario: statistics', () => {
  it('the added median and the ratio of medians, with bootstrap intervals around them', () => {
    const base = Array.from({ length: 101 }, (_, i) => 2 + (i % 10) * 0.1); // median 2.4 (nearest rank)
    const slower = base.map((x) => x + 0.5);
    const c = compareMedians(slower, base);
    expect(c.added).toBeCloseTo(0.5, 9);
    expect(c.ratio).toBeCloseTo(2.9 / 2.4, 9);
    expect(c.addedInterval[0]).toBeLessThanOrEqual(0.5);
    expect(c.addedInterval[1]).toBeGreaterThanOrEqual(0.5);
    expect(c.addedInterval[1] - c.addedInterval[0]).toBeLessThan(0.5);
    expect(c.ratioInterval[0]).toBeLessThanOrEqual(c.ratio);
    expect(c.ratioInterval[1]).toBeGreaterThanOrEqual(c.ratio);
    // Seeded: the same samples give the same intervals.
    expect(compareMedians(slower, base)).toEqual(c);
    // Noisier samples, wider intervals.
    const noisy = slower.map((x, i) => x + (i % 2 === 0 ? 3 : -0.4));
    const w = compareMedians(noisy, base);
    expect(w.addedInterval[1] - w.addedInterval[0]).toBeGreaterThan(c.addedInterval[1] - c.addedInterval[0]);
    expect(Number.isNaN(compareMedians([], base).added)).toBe(true);
  });

  it('median, p95 (nearest rank) and the median of each round', () => {
    const l = summarizeAuth(
      [
        [1, 2, 3],
        [10, 20, 30, 40],
      ],
      1,
    );
    expect(l).toEqual({ median: 10, p95: 40, n: 7, roundMedians: [2, 20], failures: 1 });
  });

  it('targets read MET or MISSED against 1 ms added and 1.2× for series metadata; revocations against 1 s', () => {
    const latency = { median: 1, p95: 2, n: 10, roundMedians: [1], failures: 0 };
    const r: AuthResult = {
      instances: 1000,
      seriesBytes: 525e6,
      rounds: 1,
      latencies: Object.fromEntries(AUTH_OPS.map((op) => [op, Object.fromEntries(AUTH_MODES.map((m) => [m, latency]))])) as AuthResult['latencies'],
      comparisons: [
        { op: 'qido', mode: 'staff', addedMs: 0.4, addedInterval: [0.2, 0.6], ratio: 1.2, ratioInterval: [1.1, 1.3], roundRatios: [1.2] },
        { op: 'metadata', mode: 'grantee', addedMs: 30, addedInterval: [20, 40], ratio: 1.3, ratioInterval: [1.2, 1.4], roundRatios: [1.3] },
      ],
      revocations: [
        { via: 'node', nodeCutMs: 40, cutMs: 500, refusedMs: 20, ackMs: 10, bytesAfter: 4e6, allowedAfterAck: 0, complete: false },
        { via: 'cli', nodeCutMs: 1_200, cutMs: 1_700, refusedMs: 20, ackMs: 10, cliMs: 1500, bytesAfter: 4e6, allowedAfterAck: 0, complete: false },
      ],
      streamBytesPerSecond: 8e6,
      pollMs: 10,
      seconds: 100,
      errors: [],
    };
    const t = authTargets(r);
    expect(t.map((x) => x.met)).toEqual([true, false, false, true, false]);
    expect(t[1]!.measured).toBe('+30.00 ms (95% interval 20.00 to 40.00)');
    expect(t[2]!.target).toBe('series metadata under a series grant ≤ 1.2× open');
    expect(t[2]!.measured).toContain('1.30×');
    expect(authFailed(r)).toBe(false);
    expect(authFailed({ ...r, revocations: [{ ...r.revocations[0]!, allowedAfterAck: 1 }] })).toBe(true);
    expect(authFailed({ ...r, revocations: [{ ...r.revocations[0]!, cutMs: null }] })).toBe(true);
    const md = authMarkdown(r);
    expect(md).toContain('| series metadata | grantee |');
    expect(md).toContain('+30.00 (20.00 to 40.00)');
    expect(md).toContain('`dicom-vault patient revoke` (its own process)');
  });
});

describe('the auth scenario on real nodes (small)', () => {
  const scratch = new ScratchSpace();
  let work: string | undefined;
  afterAll(async () => {
    await scratch.removeAll();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('measures the open node, staff and a grantee on the same data, and cuts streams on revocation both ways', async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-bench-auth-'));
    const r = await runAuthScenario({
      // 31 MB at 4 MB/s: the stream outlasts the CLI's start on a loaded machine.
      instances: 60,
      streamBytesPerSecond: 4e6,
      rounds: 1,
      revocations: 1,
      store: 'fs',
      env: {},
      workDir: work,
      scratch,
      keep: false,
      log: () => {},
      samples: { qido: 4, frame: 3, metadata: 2 },
    });
    expect(r.errors).toEqual([]);
    for (const op of AUTH_OPS) {
      for (const mode of AUTH_MODES) {
        // Every request answered as its caller may see it (tokens sent, the grant enforced, checked per request).
        expect(r.latencies[op][mode].failures, `${op} ${mode}`).toBe(0);
        expect(r.latencies[op][mode].n, `${op} ${mode}`).toBeGreaterThan(0);
      }
    }
    expect(r.comparisons).toHaveLength(6);
    expect(r.revocations.map((t) => t.via)).toEqual(['node', 'cli']);
    for (const t of r.revocations) {
      expect(t.error).toBeUndefined();
      expect(t.complete).toBe(false);
      expect(t.cutMs).not.toBeNull();
      expect(t.nodeCutMs).not.toBeNull();
      expect(t.refusedMs).not.toBeNull();
      expect(t.allowedAfterAck).toBe(0);
    }
    expect(authFailed(r)).toBe(false);
  }, 120_000);
});
