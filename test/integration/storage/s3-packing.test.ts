// Packing of the S3 backend against a real S3-compatible server (Swift's s3api on loopback,
// shared by the S3 suites: test/support/s3.ts), reached through a fault-injecting proxy: packs,
// their index, failed uploads, deletes, coalesced reads; rebuilding a lost index from the packs'
// headers; compaction; large blocks in multipart uploads.
import { randomBytes } from 'node:crypto';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { CID } from 'multiformats/cid';
import { describe, expect, it } from 'vitest';
import { decodePack } from '../../../storage/s3/pack-format.ts';
import type { S3BlockStore } from '../../../storage/s3/store.ts';
import { getVerified } from '../../../storage/verified.ts';
import { listKeys } from '../../support/s3.ts';
import { admin, block, bucket, getObject, nextIndex, nextPrefix, packGets, proxy, until, useS3Suite, viaProxy } from '../../support/s3-suite.ts';
import { expectCode, expectSameBytes } from '../../support/storage-conformance.ts';

const MiB = 1024 * 1024;

useS3Suite();

describe('S3BlockStore packing', () => {
  /** Reads blocks in order with 4 gets in flight, as the instance reader does. */
  async function readInOrder(store: S3BlockStore, cids: readonly CID[]): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    const ahead: Array<Promise<Uint8Array>> = [];
    let next = 0;
    while (out.length < cids.length) {
      while (ahead.length < 4 && next < cids.length) ahead.push(getVerified(store, cids[next++]!));
      out.push(await ahead.shift()!);
    }
    return out;
  }

  it('spreads blocks over several packs, and a second store on the same index reads them all', async () => {
    const indexPath = nextIndex();
    const prefix = nextPrefix('spread');
    const a = await viaProxy({ prefix, indexPath, packBytes: 64 * 1024 });
    const b = await viaProxy({ prefix, indexPath, packBytes: 64 * 1024 });
    try {
      const blocks = Array.from({ length: 20 }, () => block(20 * 1024));
      for (const { cid, bytes } of blocks) await a.put(cid, bytes, { durable: false });
      await a.flush();
      const packs = await listKeys(admin, bucket, `${prefix}packs/`);
      expect(packs).toHaveLength(5); // 4 blocks of 20 KiB reach 64 KiB
      expect(new Set(blocks.map(({ cid }) => a.locate(cid).key))).toEqual(new Set(packs));
      // The second store (as a CLI next to the server would) sees what the first committed.
      for (const { cid, bytes } of blocks) expectSameBytes(await getVerified(b, cid), bytes);
      const listed: string[] = [];
      for await (const cid of b.list()) listed.push(cid.toString());
      expect(listed.sort()).toEqual(blocks.map(({ cid }) => cid.toString()).sort());
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('coalesces reads: 32 sequential blocks of 256 KiB cost 8 ranged GETs with a 1 MiB span', async () => {
    const indexPath = nextIndex();
    const prefix = nextPrefix('span');
    const writer = await viaProxy({ prefix, indexPath });
    const blocks = Array.from({ length: 32 }, () => block(256 * 1024));
    try {
      for (const { cid, bytes } of blocks) await writer.put(cid, bytes, { durable: false });
      await writer.flush();
      expect(await listKeys(admin, bucket, `${prefix}packs/`)).toHaveLength(1);
    } finally {
      await writer.close();
    }
    for (const [readSpan, gets] of [
      [1024 * 1024, 8],
      [0, 32],
    ] as const) {
      const reader = await viaProxy({ prefix, indexPath, readSpan });
      try {
        const before = proxy.log.length;
        const read = await readInOrder(
          reader,
          blocks.map((b) => b.cid),
        );
        for (const [i, bytes] of read.entries()) expectSameBytes(bytes, blocks[i]!.bytes);
        expect(packGets(before, prefix)).toBe(gets);
        expect(reader.stats.packReads).toBe(gets);
        const ranges = proxy.log
          .slice(before)
          .filter((r) => r.method === 'GET')
          .map((r) => r.headers.range);
        expect(ranges.every((r) => r !== undefined && /^bytes=\d+-\d+$/.test(r))).toBe(true);
      } finally {
        await reader.close();
      }
    }
  });

  it('fails the flush when a pack upload fails beyond the retries; the blocks put again after recovery store fine without reopening', async () => {
    const store = await viaProxy({ maxAttempts: 2 });
    try {
      const blocks = Array.from({ length: 3 }, () => block(10_000));
      proxy.rule = (req) => (req.method === 'PUT' && req.url.includes('/packs/') ? { status: 503, code: 'ServiceUnavailable' } : undefined);
      for (const { cid, bytes } of blocks) await store.put(cid, bytes, { durable: false });
      const err = await expectCode(store.flush(), 'STORE_UNAVAILABLE');
      expect(err.details).toMatchObject({ status: 503 });
      expect(blocks.map(({ cid }) => cid.toString())).toContain(err.details?.cid);
      expect(err.message).toContain('503');
      // Not stored, so not there: never a false success.
      await expectCode(store.get(blocks[0]!.cid), 'BLOCK_NOT_FOUND');
      expect(await store.has(blocks[0]!.cid)).toBe(false);
      proxy.rule = () => undefined;
      await expectCode(store.flush(), 'STORE_UNAVAILABLE'); // still owed
      for (const { cid, bytes } of blocks) await store.put(cid, bytes, { durable: false });
      await store.flush();
      for (const { cid, bytes } of blocks) expectSameBytes(await getVerified(store, cid), bytes);
    } finally {
      await store.close();
    }
  });

  it('deletes a pending, an in-flight and an indexed block, and the pack object with its last live block', async () => {
    const prefix = nextPrefix('del');
    const store = await viaProxy({ prefix });
    try {
      // Pending: left out of its pack.
      const [a, b, c] = [block(1000), block(1000), block(1000)];
      for (const x of [a, b, c]) await store.put(x.cid, x.bytes, { durable: false });
      await store.delete(a.cid);
      await store.flush();
      const packKey = store.locate(b.cid).key;
      expect(decodePack(await getObject(packKey)).map((x) => x.cid.toString())).toEqual([b.cid, c.cid].map(String));
      expect(await store.has(a.cid)).toBe(false);

      // In flight: its pack lands without it.
      const [d, e] = [block(1000), block(1000)];
      proxy.rule = (req) => (req.method === 'PUT' && req.url.includes('/packs/') ? { delayMs: 500 } : undefined);
      for (const x of [d, e]) await store.put(x.cid, x.bytes, { durable: false });
      const flushing = store.flush();
      await until(() => proxy.log.some((r) => r.method === 'PUT' && r.fault !== undefined));
      await store.delete(d.cid);
      await flushing;
      expect(store.locate(d.cid).range).toBeUndefined();
      await expectCode(store.get(d.cid), 'BLOCK_NOT_FOUND');
      expectSameBytes(await getVerified(store, e.cid), e.bytes);
      proxy.rule = () => undefined;

      // Indexed: the pack stays while one of its blocks lives, and goes with the last.
      await store.delete(b.cid);
      expect(await listKeys(admin, bucket, `${prefix}packs/`)).toContain(packKey);
      expectSameBytes(await getVerified(store, c.cid), c.bytes);
      await store.delete(c.cid);
      expect(await listKeys(admin, bucket, `${prefix}packs/`)).not.toContain(packKey);
      await expectCode(store.get(c.cid), 'BLOCK_NOT_FOUND');
    } finally {
      await store.close();
    }
  });

  it('reports a block whose pack object is gone as BLOCK_NOT_FOUND naming the CID, and has() as false', async () => {
    const store = await viaProxy();
    try {
      const { cid, bytes } = block(1000);
      await store.put(cid, bytes);
      const { key } = store.locate(cid);
      await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      const err = await expectCode(getVerified(store, cid), 'BLOCK_NOT_FOUND');
      expect(err.details).toMatchObject({ cid: cid.toString() });
      const raw = await expectCode(store.get(cid), 'BLOCK_NOT_FOUND');
      expect(raw.message).toContain(key);
      expect(await store.has(cid)).toBe(false);
    } finally {
      await store.close();
    }
  });

  it('uploads pending blocks on close, and still reads packs with packing turned off, writing new blocks as objects', async () => {
    const indexPath = nextIndex();
    const prefix = nextPrefix('switch');
    const first = await viaProxy({ prefix, indexPath });
    const x = block(5000);
    await first.put(x.cid, x.bytes, { durable: false });
    await first.close();
    const second = await viaProxy({ prefix, indexPath, packBytes: 0 });
    try {
      expectSameBytes(await getVerified(second, x.cid), x.bytes);
      const y = block(5000);
      await second.put(y.cid, y.bytes);
      expect(second.locate(y.cid)).toEqual({ key: second.key(y.cid) });
      expect(await listKeys(admin, bucket, second.key(y.cid))).toEqual([second.key(y.cid)]);
      const listed: string[] = [];
      for await (const cid of second.list()) listed.push(cid.toString());
      expect(listed.sort()).toEqual([x.cid.toString(), y.cid.toString()].sort());
    } finally {
      await second.close();
    }
  });
});

describe('S3BlockStore index rebuild', () => {
  it('indexes every pack of the bucket from its header into a lost index, leaves known packs alone, and names objects that are not packs', async () => {
    const prefix = nextPrefix('rebuild');
    const writer = await viaProxy({ prefix, packBytes: 64 * 1024 });
    const blocks = Array.from({ length: 20 }, () => block(20 * 1024));
    // 2,000 blocks of 4 bytes in one pack: its header (about 90 KiB) outgrows the 64 KiB the
    // writer keeps in front of the data, so it takes a second GET.
    const tiny = Array.from({ length: 2000 }, () => block(4));
    let tinyPack: string;
    try {
      for (const { cid, bytes } of blocks) await writer.put(cid, bytes, { durable: false });
      await writer.flush();
      for (const { cid, bytes } of tiny) await writer.put(cid, bytes, { durable: false });
      await writer.flush();
      tinyPack = writer.locate(tiny[0]!.cid).key;
      expect(new Set(tiny.map(({ cid }) => writer.locate(cid).key))).toEqual(new Set([tinyPack]));
    } finally {
      await writer.close();
    }
    expect(await listKeys(admin, bucket, `${prefix}packs/`)).toHaveLength(6);
    // Two objects that are not packs: garbage, and a pack cut short inside its header.
    await admin.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}packs/not-a-pack`, Body: randomBytes(100) }));
    await admin.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}packs/cut-short`, Body: (await getObject(tinyPack)).subarray(0, 70_000) }));

    const store = await viaProxy({ prefix }); // an index of its own: empty
    try {
      await expectCode(store.get(blocks[0]!.cid), 'BLOCK_NOT_FOUND');
      const from = proxy.log.length;
      const report = await store.rebuildIndex();
      expect(report).toEqual({
        objects: 8,
        known: 0,
        indexed: 6,
        blocks: 2020,
        redundant: 0,
        gone: 0,
        unreadable: [
          { key: `${prefix}packs/cut-short`, reason: expect.stringContaining('runs past') },
          { key: `${prefix}packs/not-a-pack`, reason: expect.stringContaining('no DVPACK1 magic') },
        ],
      });
      // A ranged GET of each head; the large header's pack needs a second one.
      expect(packGets(from, prefix)).toBe(8 + 1);
      for (const { cid, bytes } of blocks) expectSameBytes(await getVerified(store, cid), bytes);
      for (const { cid, bytes } of tiny.filter((_, i) => i % 100 === 99)) expectSameBytes(await getVerified(store, cid), bytes);
      expect(store.locate(tiny[1999]!.cid).key).toBe(tinyPack);

      // Run again: every pack is known, nothing is read.
      const again = proxy.log.length;
      expect(await store.rebuildIndex()).toMatchObject({ objects: 8, known: 6, indexed: 0, blocks: 0, unreadable: [{}, {}] });
      expect(packGets(again, prefix)).toBe(2); // the two objects that are not packs, read again
    } finally {
      await store.close();
    }
  });

  it('counts a pack whose blocks another pack already holds as redundant, and leaves it in the bucket', async () => {
    const prefix = nextPrefix('redundant');
    const x = block(3000);
    const first = await viaProxy({ prefix });
    const indexPath = nextIndex();
    const second = await viaProxy({ prefix, indexPath });
    try {
      // Two stores with indexes of their own each pack the same block: two packs hold it.
      await first.put(x.cid, x.bytes);
      await second.put(x.cid, x.bytes);
    } finally {
      await first.close();
      await second.close();
    }
    const store = await viaProxy({ prefix, indexPath });
    try {
      expect(await store.rebuildIndex()).toEqual({ objects: 2, known: 1, indexed: 0, blocks: 0, redundant: 1, gone: 0, unreadable: [] });
      expect(await listKeys(admin, bucket, `${prefix}packs/`)).toHaveLength(2);
      expectSameBytes(await getVerified(store, x.cid), x.bytes);
    } finally {
      await store.close();
    }
  });
});

describe('S3BlockStore compaction', () => {
  it('rewrites a pack left mostly dead; readers that looked a block up before the move still find it', async () => {
    const prefix = nextPrefix('compact');
    const indexPath = nextIndex();
    const store = await viaProxy({ prefix, indexPath });
    const reader = await viaProxy({ prefix, indexPath }); // as a second process on the same index
    try {
      const blocks = Array.from({ length: 8 }, () => block(50_000));
      for (const b of blocks) await store.put(b.cid, b.bytes, { durable: false });
      await store.flush();
      const oldPack = store.locate(blocks[0]!.cid).key;
      expect(new Set(blocks.map((b) => store.locate(b.cid).key))).toEqual(new Set([oldPack]));
      const full = block(50_000); // a pack of its own, all live: left alone
      await store.put(full.cid, full.bytes);
      const fullPack = store.locate(full.cid).key;
      for (const b of blocks.slice(0, 6)) await store.delete(b.cid);
      const kept = blocks.slice(6); // 2 of 8 live

      // The reader's first GET and first HEAD of the old pack reach the server only after the
      // compaction has deleted it.
      const held = new Set<string>();
      proxy.rule = (req) => {
        if (!req.url.includes(oldPack) || (req.method !== 'GET' && req.method !== 'HEAD') || held.has(req.method)) return undefined;
        held.add(req.method);
        return { delayMs: 2000 };
      };
      const reading = getVerified(reader, kept[0]!.cid);
      const checking = reader.has(kept[1]!.cid);
      await until(() => held.size === 2);
      const report = await store.compact();
      expect(report).toMatchObject({ packs: 1, blocks: 2, skipped: [] });
      expect(report.bytesAfter).toBeLessThan(report.bytesBefore / 3);
      const newPack = store.locate(kept[0]!.cid).key;
      expect(newPack).not.toBe(oldPack);
      const keys = await listKeys(admin, bucket, `${prefix}packs/`);
      expect(keys.sort()).toEqual([fullPack, newPack].sort());

      expectSameBytes(await reading, kept[0]!.bytes);
      expect(await checking).toBe(true);
      for (const b of kept) expectSameBytes(await getVerified(store, b.cid), b.bytes);
      for (const b of blocks.slice(0, 6)) await expectCode(store.get(b.cid), 'BLOCK_NOT_FOUND');
      expect(await store.compact()).toMatchObject({ packs: 0, blocks: 0 });
    } finally {
      await store.close();
      await reader.close();
    }
  });
});

describe('S3BlockStore large blocks', () => {
  it('uploads a block above the multipart threshold in parts and reads it back with ranged GETs', async () => {
    const store = await viaProxy({ multipartThreshold: 12 * MiB, partSize: 5 * MiB });
    try {
      const { cid, bytes } = block(13 * MiB);
      const before = proxy.log.length;
      await store.put(cid, bytes);
      const puts = proxy.log.slice(before).filter((r) => r.url.includes('partNumber='));
      expect(puts).toHaveLength(3);
      const mid = proxy.log.length;
      expectSameBytes(await getVerified(store, cid), bytes);
      const ranges = proxy.log
        .slice(mid)
        .map((r) => r.headers.range)
        .filter((r) => r !== undefined);
      expect(ranges.sort()).toEqual(['bytes=0-5242879', 'bytes=10485760-13631487', 'bytes=5242880-10485759']);
    } finally {
      await store.close();
    }
  });
});
