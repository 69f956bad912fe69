// Coalesced pack reads (storage/s3/span-reader.ts) against an in-memory pack: how many ranged
// reads a sequential reader costs, that concurrent gets share a read, that the caller owns every
// buffer, the cache's bound, and aborts. Against real S3 in s3-store.test.ts.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { VaultError } from '../../../../src/core/errors.ts';
import { rawCid } from '../../../../storage/cid.ts';
import type { PackedBlock } from '../../../../storage/s3/pack-index.ts';
import { SpanReader, type SpanTarget } from '../../../../storage/s3/span-reader.ts';
import { expectCode, expectSameBytes } from '../../../support/storage-conformance.ts';

/**
 * `count` blocks of `size` bytes in packs of `perPack` (default: one pack), their index rows, and
 * a reader over them. Packs are named p1, p2... in the order written.
 */
function harness(count: number, size: number, options: { readSpan?: number; cacheBytes?: number; perPack?: number } = {}) {
  const perPack = options.perPack ?? count;
  const object = randomBytes(100 + count * size); // one buffer; each pack is a window of it
  const packOf = (i: number): string => `p${Math.floor(i / perPack) + 1}`;
  const base = (pack: string): number => (Number(pack.slice(1)) - 1) * perPack * size;
  const rows: PackedBlock[] = Array.from({ length: count }, (_, i) => {
    const start = 100 + (i % perPack) * size;
    const at = base(packOf(i)) + start;
    return { cid: rawCid(object.subarray(at, at + size)).bytes, pack: packOf(i), start, size };
  });
  const packs = [...new Set(rows.map((r) => r.pack))];
  const reads: Array<{ start: number; end: number }> = [];
  const readPacks: string[] = [];
  let gate: Promise<void> | undefined;
  let fail: unknown;
  const reader = new SpanReader(
    { readSpan: options.readSpan ?? 4 * size, cacheBytes: options.cacheBytes ?? 32 * size },
    {
      following: (pack, start, limit) => rows.filter((r) => r.pack === pack && r.start >= start).slice(0, limit),
      adjacentPack: (pack, direction) => packs[packs.indexOf(pack) + direction],
      async read(pack, start, end, targets: readonly SpanTarget[], signal) {
        reads.push({ start, end });
        readPacks.push(pack);
        if (gate) await gate;
        if (signal.aborted) throw new VaultError('ABORTED', 'stopped');
        if (fail !== undefined) throw fail;
        for (const t of targets) t.out.set(object.subarray(base(pack) + t.start, base(pack) + t.start + t.size));
      },
    },
  );
  const bytes = (i: number): Uint8Array => {
    const at = base(rows[i]!.pack) + rows[i]!.start;
    return object.subarray(at, at + size);
  };
  /** What the store does: cache first, then a read. */
  const get = async (i: number, signal?: AbortSignal): Promise<Uint8Array> => reader.take(rows[i]!.cid) ?? reader.get(rows[i]!, signal);
  return {
    reader,
    rows,
    reads,
    readPacks,
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

  it('with a read-ahead (4 gets in flight) shares each read among the gets it covers, and reads the next span ahead', async () => {
    const h = harness(16, 1000, { readSpan: 4000 });
    const release = h.hold();
    const gets = [0, 1, 2, 3].map((i) => h.get(i));
    await new Promise((r) => setImmediate(r));
    // One read for the four, and (a second block of it being asked for) the next span ahead.
    expect(h.reads).toEqual([
      { start: 100, end: 4100 },
      { start: 4100, end: 8100 },
    ]);
    release();
    for (const [i, b] of (await Promise.all(gets)).entries()) expectSameBytes(b, h.bytes(i));
    for (let i = 4; i < 16; i++) expectSameBytes(await h.get(i), h.bytes(i));
    expect(h.reads).toHaveLength(4);
  });

  it('reads the next pack ahead once the reader went on from one pack to the one written after it', async () => {
    const h = harness(32, 1000, { perPack: 8, readSpan: 8000 });
    for (let i = 0; i < 8; i++) expectSameBytes(await h.get(i), h.bytes(i));
    expect(h.readPacks).toEqual(['p1']); // the end of p1, but no evidence yet of reading on
    expectSameBytes(await h.get(8), h.bytes(8));
    expectSameBytes(await h.get(9), h.bytes(9));
    expect(h.readPacks).toEqual(['p1', 'p2', 'p3']); // p1 -> p2 seen: p3 is read ahead
    for (let i = 10; i < 17; i++) expectSameBytes(await h.get(i), h.bytes(i));
    expect(h.readPacks).toEqual(['p1', 'p2', 'p3', 'p4']);
    for (let i = 17; i < 32; i++) expectSameBytes(await h.get(i), h.bytes(i));
    expect(h.readPacks).toEqual(['p1', 'p2', 'p3', 'p4']);
  });

  it('reads no pack ahead for a reader going through packs in another order (interleaved ingests)', async () => {
    const h = harness(32, 1000, { perPack: 8, readSpan: 8000 });
    for (const i of [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]) expectSameBytes(await h.get(i), h.bytes(i));
    expect(h.readPacks).toEqual(['p1', 'p3']);
  });

  it('reads no span ahead for a lone read (a frame)', async () => {
    const h = harness(16, 1000, { readSpan: 4000 });
    await h.get(5);
    await h.get(12);
    expect(h.reads).toEqual([
      { start: 5100, end: 9100 },
      { start: 12100, end: 16100 },
    ]);
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

    const g = harness(8, 1000);
    const release2 = g.hold();
    const c = new AbortController();
    const third = g.get(4, c.signal);
    c.abort();
    await expectCode(third, 'ABORTED');
    // A new get does not join the abandoned read.
    const fourth = g.get(4);
    release2();
    expectSameBytes(await fourth, g.bytes(4));
    expect(g.reads).toHaveLength(2);
  });

  it('forgets a deleted block', async () => {
    const h = harness(4, 1000);
    await h.get(0);
    h.reader.forget(h.rows[1]!.cid);
    expect(h.reader.take(h.rows[1]!.cid)).toBeUndefined();
  });
});
