// The pack writer's bookkeeping (storage/s3/pack-writer.ts) with the upload and the index made
// up in memory: when puts resolve, when packs are sealed, backpressure, what flush promises
// (never a false success), deletes at each stage, aborts. The same code against real S3 is in
// s3-store.test.ts.
import { randomBytes } from 'node:crypto';
import type { CID } from 'multiformats/cid';
import { describe, expect, it } from 'vitest';
import { VaultError } from '../../../../src/core/errors.ts';
import { rawCid } from '../../../../storage/cid.ts';
import { decodePack } from '../../../../storage/s3/pack-format.ts';
import { PackWriter } from '../../../../storage/s3/pack-writer.ts';
import type { LandedBlock } from '../../../../storage/s3/pack-index.ts';
import { expectCode, expectSameBytes } from '../../../support/storage-conformance.ts';

function block(size: number): { cid: CID; bytes: Uint8Array } {
  const bytes = randomBytes(size);
  return { cid: rawCid(bytes), bytes };
}

interface Upload {
  id: string;
  body: Uint8Array;
  signal: AbortSignal;
  resolve(): void;
  reject(err: unknown): void;
}

/** A writer whose uploads succeed at once ('auto'), wait for the test ('hold'), or fail ('fail'). */
function harness(options: { packBytes?: number; packUploads?: number } = {}) {
  const uploads: Upload[] = [];
  const index = new Map<string, { pack: string; start: number; size: number }>();
  const objects = new Map<string, Uint8Array>();
  const discarded: string[] = [];
  let ids = 0;
  const h = {
    mode: 'auto' as 'auto' | 'hold' | 'fail',
    uploads,
    index,
    objects,
    discarded,
    writer: new PackWriter(
      { packBytes: options.packBytes ?? 1000, packUploads: options.packUploads ?? 2 },
      {
        newId: () => `p${++ids}`,
        upload(id, body, signal) {
          return new Promise<void>((resolve, reject) => {
            const copy = body.slice();
            const u: Upload = {
              id,
              body: copy,
              signal,
              resolve: () => {
                objects.set(id, copy);
                resolve();
              },
              reject,
            };
            uploads.push(u);
            signal.addEventListener('abort', () => reject(new VaultError('ABORTED', 'upload stopped')), { once: true });
            if (h.mode === 'auto') queueMicrotask(u.resolve);
            if (h.mode === 'fail')
              queueMicrotask(() => reject(new VaultError('STORE_UNAVAILABLE', 'S3 put pack failed: 503 SlowDown', { details: { status: 503 } })));
          });
        },
        land(id, bytes, blocks: readonly LandedBlock[]) {
          expect(objects.get(id)?.byteLength).toBe(bytes);
          let live = 0;
          for (const b of blocks) {
            if (index.has(b.cid.toString())) continue;
            index.set(b.cid.toString(), { pack: id, start: b.start, size: b.size });
            live++;
          }
          return live;
        },
        discard: (id) => void discarded.push(id),
        indexed: (cid) => index.has(cid.toString()),
        describe: (err, cid, pack) =>
          new VaultError('STORE_UNAVAILABLE', `block ${cid} was not stored: ${(err as Error).message}`, { cause: err, details: { cid: cid.toString(), pack } }),
      },
    ),
    /** The bytes the index points at, read from the uploaded pack objects. */
    stored(cid: CID): Uint8Array | undefined {
      const at = index.get(cid.toString());
      return at === undefined ? undefined : objects.get(at.pack)!.subarray(at.start, at.start + at.size);
    },
  };
  return h;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('PackWriter', () => {
  it('resolves a non-durable put once the bytes are copied, and serves them as a fresh copy', async () => {
    const h = harness({ packBytes: 10_000 });
    const scratch = randomBytes(300);
    const cid = rawCid(scratch);
    const original = Uint8Array.from(scratch);
    await h.writer.put(cid, scratch, { durable: false });
    scratch.fill(0); // the caller reuses its buffer
    const read = h.writer.read(cid)!;
    expectSameBytes(read, original);
    read.fill(1); // the reader owns what it got
    expectSameBytes(h.writer.read(cid)!, original);
    expect(h.uploads).toHaveLength(0);
    expect(h.writer.has(cid)).toBe(true);
  });

  it('seals a pack once it holds packBytes and spreads blocks over several packs', async () => {
    const h = harness({ packBytes: 1000 });
    const blocks = Array.from({ length: 7 }, () => block(400));
    for (const b of blocks) await h.writer.put(b.cid, b.bytes, { durable: false });
    // 400 + 400 + 400 >= 1000: packs of three, the seventh block still pending.
    await tick();
    expect(h.uploads.map((u) => decodePack(u.body).length)).toEqual([3, 3]);
    await h.writer.flush();
    expect(h.uploads.map((u) => decodePack(u.body).length)).toEqual([3, 3, 1]);
    for (const b of blocks) expectSameBytes(h.stored(b.cid)!, b.bytes);
    expect(new Set([...h.index.values()].map((v) => v.pack)).size).toBe(3);
    expect(h.writer.has(blocks[0]!.cid)).toBe(false); // indexed now, no longer held in memory
  });

  it('puts a block that does not fit the pending pack into the next one', async () => {
    const h = harness({ packBytes: 1000 });
    const small = block(900);
    const big = block(3 * 1024 * 1024);
    await h.writer.put(small.cid, small.bytes, { durable: false });
    await h.writer.put(big.cid, big.bytes, { durable: false });
    await h.writer.flush();
    expect(h.uploads.map((u) => decodePack(u.body).map((b) => b.cid.toString()))).toEqual([[small.cid.toString()], [big.cid.toString()]]);
    expectSameBytes(h.stored(big.cid)!, big.bytes);
  });

  it('does not store a block twice: pending, in flight or indexed', async () => {
    const h = harness({ packBytes: 10_000 });
    const b = block(100);
    await h.writer.put(b.cid, b.bytes, { durable: false });
    await h.writer.put(b.cid, b.bytes, { durable: false });
    await h.writer.put(b.cid, b.bytes);
    await h.writer.put(b.cid, b.bytes);
    expect(h.uploads).toHaveLength(1);
    expect(decodePack(h.uploads[0]!.body)).toHaveLength(1);
  });

  it('lets durable puts of one tick share a pack and resolve once it is indexed', async () => {
    const h = harness({ packBytes: 100_000 });
    h.mode = 'hold';
    const blocks = Array.from({ length: 10 }, () => block(500));
    let resolved = 0;
    const puts = blocks.map((b) => h.writer.put(b.cid, b.bytes).then(() => resolved++));
    await tick();
    expect(h.uploads).toHaveLength(1);
    expect(resolved).toBe(0);
    h.uploads[0]!.resolve();
    await Promise.all(puts);
    for (const b of blocks) expectSameBytes(h.stored(b.cid)!, b.bytes);
  });

  it('keeps at most packUploads uploads in flight; further puts wait (bounded memory)', async () => {
    const h = harness({ packBytes: 1000, packUploads: 2 });
    h.mode = 'hold';
    let done = 0;
    const puts: Array<Promise<void>> = [];
    for (let i = 0; i < 5; i++) {
      const b = block(1000); // one block fills a pack
      puts.push(h.writer.put(b.cid, b.bytes, { durable: false }).then(() => void done++));
      await tick();
    }
    // Two uploading, one sealed and queued; the next puts wait for room.
    expect(h.uploads).toHaveLength(2);
    expect(h.writer.stats).toMatchObject({ uploading: 2, queued: 1 });
    expect(done).toBe(3);
    h.uploads[0]!.resolve();
    await tick();
    expect(h.uploads).toHaveLength(3);
    expect(done).toBe(4);
    h.mode = 'auto';
    for (const u of h.uploads.slice(1)) u.resolve();
    await Promise.all(puts);
    await h.writer.flush();
    expect(h.index.size).toBe(5);
  });

  it('flush waits for every pack sealed before it; concurrent flushes share the work', async () => {
    const h = harness({ packBytes: 10_000 });
    h.mode = 'hold';
    const a = block(100);
    await h.writer.put(a.cid, a.bytes, { durable: false });
    let flushed = 0;
    const first = h.writer.flush().then(() => flushed++);
    await tick();
    expect(h.uploads).toHaveLength(1);
    const b = block(100);
    await h.writer.put(b.cid, b.bytes, { durable: false });
    const second = h.writer.flush().then(() => flushed++);
    const third = h.writer.flush().then(() => flushed++);
    await tick();
    expect(flushed).toBe(0);
    h.uploads[0]!.resolve();
    await first;
    await tick();
    // The second and third calls share one flush, which seals b's pack only now.
    expect(h.uploads).toHaveLength(2);
    expect(flushed).toBe(1);
    h.uploads[1]!.resolve();
    await Promise.all([second, third]);
    expect(h.index.size).toBe(2);
  });

  describe('a pack upload that fails', () => {
    it('makes flush reject naming a block, and keeps rejecting until the block is deleted', async () => {
      const h = harness({ packBytes: 10_000 });
      h.mode = 'fail';
      const b = block(100);
      await h.writer.put(b.cid, b.bytes, { durable: false });
      const err = await expectCode(h.writer.flush(), 'STORE_UNAVAILABLE');
      expect(err.message).toContain(b.cid.toString());
      expect(err.message).toContain('503 SlowDown');
      expect(err.cause).toBeInstanceOf(VaultError);
      expect(h.writer.has(b.cid)).toBe(false); // not stored, so not readable either
      expect(h.writer.read(b.cid)).toBeUndefined();
      h.mode = 'auto';
      await expectCode(h.writer.flush(), 'STORE_UNAVAILABLE');
      h.writer.delete(b.cid);
      await h.writer.flush();
    });

    it('is overcome by putting the block again, without reopening', async () => {
      const h = harness({ packBytes: 10_000 });
      h.mode = 'fail';
      const b = block(100);
      await h.writer.put(b.cid, b.bytes, { durable: false });
      await expectCode(h.writer.flush(), 'STORE_UNAVAILABLE');
      h.mode = 'auto';
      await h.writer.put(b.cid, b.bytes, { durable: false });
      await h.writer.flush();
      expectSameBytes(h.stored(b.cid)!, b.bytes);
    });

    it('does not fail a flush that started before the failed block was put', async () => {
      const h = harness({ packBytes: 10_000 });
      h.mode = 'hold';
      const a = block(100);
      await h.writer.put(a.cid, a.bytes, { durable: false });
      const flushing = h.writer.flush();
      await tick();
      h.mode = 'fail';
      const late = block(100);
      await h.writer.put(late.cid, late.bytes, { durable: false });
      await expectCode(h.writer.put(block(10).cid, new Uint8Array(10)), 'STORE_UNAVAILABLE'); // seals late's pack, which fails
      h.uploads[0]!.resolve();
      await flushing;
      await expectCode(h.writer.flush(), 'STORE_UNAVAILABLE');
    });

    it('rejects a durable put itself, which then no longer fails later flushes', async () => {
      const h = harness({ packBytes: 10_000 });
      h.mode = 'fail';
      const b = block(100);
      const err = await expectCode(h.writer.put(b.cid, b.bytes), 'STORE_UNAVAILABLE');
      expect(err.details).toMatchObject({ cid: b.cid.toString() });
      h.mode = 'auto';
      await h.writer.flush();
      expect(h.writer.stats.failed).toBe(0);
    });
  });

  describe('delete', () => {
    it('of a pending block leaves it out of its pack', async () => {
      const h = harness({ packBytes: 10_000 });
      const [a, b] = [block(100), block(100)];
      await h.writer.put(a.cid, a.bytes, { durable: false });
      await h.writer.put(b.cid, b.bytes, { durable: false });
      expect(h.writer.delete(a.cid)).toBe(true);
      expect(h.writer.read(a.cid)).toBeUndefined();
      await h.writer.flush();
      expect(decodePack(h.uploads[0]!.body).map((x) => x.cid.toString())).toEqual([b.cid.toString()]);
      expect(h.index.has(a.cid.toString())).toBe(false);
    });

    it('of every pending block uploads nothing', async () => {
      const h = harness({ packBytes: 10_000 });
      const a = block(100);
      await h.writer.put(a.cid, a.bytes, { durable: false });
      h.writer.delete(a.cid);
      await h.writer.flush();
      expect(h.uploads).toHaveLength(0);
    });

    it('of a block in flight keeps it out of the index when its pack lands', async () => {
      const h = harness({ packBytes: 10_000 });
      h.mode = 'hold';
      const [a, b] = [block(100), block(100)];
      await h.writer.put(a.cid, a.bytes, { durable: false });
      await h.writer.put(b.cid, b.bytes, { durable: false });
      const flushing = h.writer.flush();
      await tick();
      h.writer.delete(a.cid);
      h.uploads[0]!.resolve();
      await flushing;
      expect([...h.index.keys()]).toEqual([b.cid.toString()]);
      expect(h.discarded).toEqual([]);
    });

    it('of the last block in flight stops the upload and discards the pack', async () => {
      const h = harness({ packBytes: 10_000 });
      h.mode = 'hold';
      const a = block(100);
      await h.writer.put(a.cid, a.bytes, { durable: false });
      const flushing = h.writer.flush();
      await tick();
      h.writer.delete(a.cid);
      expect(h.uploads[0]!.signal.aborted).toBe(true);
      await flushing;
      expect(h.index.size).toBe(0);
      expect(h.discarded).toEqual(['p1']);
    });
  });

  describe('abort', () => {
    it('of a durable put while its pack uploads removes the block, unless another put wanted it', async () => {
      const h = harness({ packBytes: 10_000 });
      h.mode = 'hold';
      const [a, b] = [block(100), block(100)];
      const ca = new AbortController();
      const cb = new AbortController();
      const pa = h.writer.put(a.cid, a.bytes, { signal: ca.signal });
      await h.writer.put(b.cid, b.bytes, { durable: false });
      const pb = h.writer.put(b.cid, b.bytes, { signal: cb.signal });
      ca.abort();
      cb.abort();
      await expectCode(pa, 'ABORTED');
      await expectCode(pb, 'ABORTED');
      expect(h.writer.has(a.cid)).toBe(false);
      expect(h.writer.has(b.cid)).toBe(true); // put before without durable: still promised
      await tick();
      h.mode = 'auto';
      for (const u of h.uploads) u.resolve();
      await h.writer.flush();
      expect([...h.index.keys()]).toEqual([b.cid.toString()]);
    });

    it('of a put waiting for room stores nothing', async () => {
      const h = harness({ packBytes: 100, packUploads: 1 });
      h.mode = 'hold';
      await h.writer.put(block(100).cid, new Uint8Array(100), { durable: false });
      await h.writer.put(block(100).cid, randomBytes(100), { durable: false }); // sealed, queued
      const c = block(10);
      const controller = new AbortController();
      const waiting = h.writer.put(c.cid, c.bytes, { durable: false, signal: controller.signal });
      await tick();
      controller.abort();
      await expectCode(waiting, 'ABORTED');
      expect(h.writer.has(c.cid)).toBe(false);
    });

    it('of a flush caller stops only its own wait', async () => {
      const h = harness({ packBytes: 10_000 });
      h.mode = 'hold';
      const a = block(100);
      await h.writer.put(a.cid, a.bytes, { durable: false });
      const controller = new AbortController();
      const mine = h.writer.flush({ signal: controller.signal });
      const other = h.writer.flush();
      controller.abort();
      await expectCode(mine, 'ABORTED');
      await tick();
      h.uploads[0]!.resolve();
      await other;
      expect(h.index.size).toBe(1);
    });
  });
});
