// The erasure benchmark at a small size: it erases, and its times come in the order of the steps.
import { describe, expect, it } from 'vitest';
import { formatErasureBench, runErasureBench } from '../erasure.ts';

describe('erasure benchmark', () => {
  it('measures each case: keys gone before the catalog, the catalog before the blocks; every block counted', async () => {
    const rows = await runErasureBench({ gib: 1 / 64, instances: 30 });
    expect(rows.map((r) => r.instances)).toEqual([1, 30]);
    for (const r of rows) {
      expect(r.keysGoneMs).toBeLessThanOrEqual(r.catalogGoneMs);
      expect(r.catalogGoneMs).toBeLessThanOrEqual(r.blocksFreedMs);
      // A manifest, and per instance its node and its chunks (1 MiB each).
      expect(r.blocks).toBeGreaterThan(r.instances * 2);
    }
    expect(formatErasureBench(rows)).toMatch(/30 instances/);
  }, 60_000);
});
