// The soak's post-GC heap (bench/heap-probe.ts) read from a real node over its inspector.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openHeapProbe } from '../heap-probe.ts';
import { serveNode, type ServedNode } from '../node-process.ts';
import { readProcMemory } from '../rss.ts';

describe('the heap probe', () => {
  let dir: string;
  let node: ServedNode;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dicom-vault-heap-probe-'));
    node = await serveNode(dir, [], {}, { inspect: true });
  }, 90_000);
  afterAll(async () => {
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("reads the serving node's heap after a full GC, with no route of the node's involved", async () => {
    expect(node.inspectorUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\//);
    const probe = await openHeapProbe(node.inspectorUrl!);
    try {
      const m = await probe.postGc();
      // The node itself, not this process: its RSS as procfs sees it.
      const rss = readProcMemory(node.pid).rssBytes;
      expect(Math.abs(m.rssBytes - rss)).toBeLessThan(64 * 2 ** 20);
      expect(m.heapUsedBytes).toBeGreaterThan(4 * 2 ** 20);
      expect(m.heapUsedBytes).toBeLessThan(m.rssBytes);
      expect(m.externalBytes).toBeGreaterThan(0);
      // Still serving afterwards.
      expect((await fetch(`${new URL(node.url).origin}/healthz`)).status).toBe(200);
    } finally {
      probe.close();
    }
  });
});
