// Coalesced pack reads (storage/s3-span-reader.ts) against an in-memory pack: how many ranged
// reads a sequential reader costs, that concurrent gets share a read, that the caller owns every
// buffer, the cache's bound, and aborts. Against real S3 in s3-store.test.ts.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { VaultError } from '../src/errors.ts';
import { rawCid } from '../storage/cid.ts';
import type { PackedBlock } from '../storage/s3-pack-index.ts';
import { SpanReader, type SpanTarget } from '../storage/s3-span-reader.ts';
import { expectCode, expectSameBytes } from './storage-conformance.ts';

/** One pack of `count` blocks of `size` bytes, its index rows, and a reader over it. */
function harness(count: number, size: number, options: { readSpan?: number; cacheBytes?: number } = {}) {
  const object = randomBytes(100 + count * size);
  const rows: PackedBlock[] = Array.from({ length: count }, (_, i) => {
    const start = 100 + i * size;
    return { cid: rawCid(object.subarray(start, start + size)).bytes, pack: 'p1', start, size };
  });
  const reads: Array<{ start: number; end: number }> = [];
  let gate: Promise<void> | undefined;
  let fail: unknown;
  const reader = new SpanReader(
    { readSpan: options.readSpan ?? 4 * size, cacheBytes: options.cacheBytes ?? 32 * size },
    {
      following: (pack, start, limit) => rows.filter((r) => r.pack === pack && r.start >= start).slice(0, limit),
      async read(_pack, start, end, targets: readonly SpanTarget[], signal) {
        reads.push({ start, end });
        if (gate) await gate;
        if (signal.aborted) throw new VaultError('ABORTED', 'stopped');
        if (fail !== undefined) throw fail;
        for (const t of targets) t.out.set(object.subarray(t.start, t.start + t.size));
      },
    },
  );
  const bytes = (i: number): Uint8Array => object.subarray(rows[i]!.start, rows[i]!.start + size);
  /** What the store does: cache first, then a read. */
  const get = async (i: number, signal?: AbortSignal): Promise<Uint8Array> => reader.take(rows[i]!.cid) ?? reader.get(rows[i]!, signal);
  return {
    reader,
    rows,
    reads,
    bytes,
    get,
    hold(): () => void {
      let open!: () => void;
      gate = new Promise<void>((r) => (open = r));
      return () => {
        gate = undefined;
        open();
      };
    },
    failWith(err: unknown): void {
      fail = err;
    },
  };
}

describe('SpanReader', () => {
  it('reads N sequential blocks in about N / (blocks per span) ranged reads', async () => {
    const h = harness(32, 1000, { readSpan: 4000 });
    for (let i = 0; i < 32; i++) expectSameBytes(await h.get(i), h.bytes(i));
    expect(h.reads).toHaveLength(8);
    expect(h.reads[1]).toEqual({ start: 4100, end: 8100 });
  });

  it('covers whole blocks, up to the first one that reaches the span', async () => {
    const h = harness(10, 1000, { readSpan: 2500 });
    await h.get(0);
    expect(h.reads).toEqual([{ start: 100, end: 3100 }]);
  });

  it('with a read-ahead (4 gets in flight) shares each read among the gets it covers', async () => {
    const h = harness(16, 1000, { readSpan: 4000 });
    const release = h.hold();
    const gets = [0, 1, 2, 3].map((i) => h.get(i));
    await new Promise((r) => setImmediate(r));
    expect(h.reads).toHaveLength(1);
    release();
    (await Promise.all(gets)).forEach((b, i) => expectSameBytes(b, h.bytes(i)));
  });

  it('hands each caller a buffer of its own, also for two gets of one block', async () => {
    const h = harness(4, 1000);
    const [a, b] = await Promise.all([h.get(0), h.get(0)]);
    expect(a.buffer).not.toBe(b.buffer);
    expect(a.byteOffset).toBe(0);
    expect(a.buffer.byteLength).toBe(1000); // transferable to a worker without taking others along
    a.fill(0);
    expectSameBytes(b, h.bytes(0));
    // Blocks read ahead are handed out once: the cache does not keep what it gave away.
    expectSameBytes(await h.get(1), h.bytes(1));
    expect(h.reader.take(h.rows[1]!.cid)).toBeUndefined();
  });

  it('keeps at most cacheBytes of blocks read ahead, dropping the oldest', async () => {
    const h = harness(20, 1000, { readSpan: 10_000, cacheBytes: 5000 });
    await h.get(0); // reads 0-9; 1-9 are left over, only the last 5 kept
    expect(h.reader.cachedBytes).toBe(5000);
    expect(h.reader.take(h.rows[1]!.cid)).toBeUndefined();
    expectSameBytes(h.reader.take(h.rows[9]!.cid)!, h.bytes(9));
  });

  it('starts a span at the first block already cached or being read, and never overlaps one', async () => {
    const h = harness(8, 1000, { readSpan: 8000 });
    await h.get(4); // reads 4-7; 4 is handed out, 5-7 cached
    await h.get(0); // reads 0-4 only: 5 is cached
    expect(h.reads).toEqual([
      { start: 4100, end: 8100 },
      { start: 100, end: 5100 },
    ]);
  });

  it('gives every waiter the read error', async () => {
    const h = harness(4, 1000);
    const err = new Error('503');
    h.failWith(err);
    const results = await Promise.allSettled([h.get(0), h.get(1)]);
    expect(results.map((r) => (r.status === 'rejected' ? r.reason : r.value))).toEqual([err, err]);
  });

  it('stops a read when its last waiter aborts, but not while another still waits', async () => {
    const h = harness(8, 1000);
    const release = h.hold();
    const a = new AbortController();
    const b = new AbortController();
    const first = h.get(0, a.signal);
    const second = h.get(1, b.signal);
    a.abort();
    await expectCode(first, 'ABORTED');
    release();
    expectSameBytes(await second, h.bytes(1));

    const release2 = h.hold();
    const c = new AbortController();
    const third = h.get(4, c.signal);
    c.abort();
    await expectCode(third, 'ABORTED');
    // A new get does not join the abandoned read.
    const fourth = h.get(4);
    release2();
    expectSameBytes(await fourth, h.bytes(4));
  });

  it('forgets a deleted block', async () => {
    const h = harness(4, 1000);
    await h.get(0);
    h.reader.forget(h.rows[1]!.cid);
    expect(h.reader.take(h.rows[1]!.cid)).toBeUndefined();
  });
});
