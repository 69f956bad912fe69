// The portability benchmark at a small size: the patient travels whole, and every figure is measured.
import { describe, expect, it } from 'vitest';
import { formatPortabilityBench, runPortabilityBench } from '../portability.ts';

describe('portability benchmark', () => {
  it('exports, copies and imports the same archive, each timed, the audit proofs checked', async () => {
    const r = await runPortabilityBench({ gib: 2 / 64 });
    expect(r.instances).toBe(2);
    // The archive holds the study's bytes (encrypted, with a manifest, instance nodes, the archive block).
    expect(r.archiveBytes).toBeGreaterThan(r.studyBytes);
    expect(r.blocks).toBeGreaterThan(r.instances * 2);
    for (const ms of [r.exportMs, r.importMs, r.cpMs]) expect(ms).toBeGreaterThan(0);
    expect(r.importMBps).toBeCloseTo(r.archiveBytes / 1e6 / (r.importMs / 1000), 0);
    expect(r.proofsChecked).toBeGreaterThan(0);
    expect(formatPortabilityBench(r)).toMatch(/export .* MB\/s[\s\S]*import .* MB\/s[\s\S]*cp .* MB\/s/);
  }, 60_000);
});
