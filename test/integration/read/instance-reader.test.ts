// The verified reader over a real fs store: several instances read one after the other with the
// next ones prefetched (readInstances, what WADO study and series retrieval use).
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { base32 } from 'multiformats/bases/base32';
import { CID } from 'multiformats/cid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance } from '../../../bench/generate.ts';
import { ingestInstance } from '../../../ingest/instance.ts';
import { decodeInstanceNode } from '../../../src/format/dag.ts';
import { KeyStore } from '../../../src/format/keys.ts';
import { openInstance, PieceLoans, readInstances, type InstanceRef } from '../../../src/read/instance-reader.ts';
import { CryptoPool, type Slot } from '../../../src/format/crypto-pool.ts';
import { FsBlockStore } from '../../../storage/fs.ts';

let dir: string;
let store: FsBlockStore;
let keys: KeyStore;
const refs: Array<InstanceRef & { generated: GeneratedInstance }> = [];
const CHUNK = 64 * 1024;

async function bytesOf(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of source) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dv-reader-'));
  store = await FsBlockStore.open({ path: join(dir, 'blocks') });
  keys = KeyStore.open({ path: join(dir, 'keys.db'), masterKey: randomBytes(32) });
  // Six small instances of 1-3 chunks each (64 KiB chunks).
  const study = planStudy({ kind: 'single', instances: 6, rows: 128, columns: 128 + 64, seed: 7 });
  for (const generated of study.instances) {
    const ingested = await ingestInstance(generated.open(), { store, keys }, { chunkSize: CHUNK });
    await ingested.durable;
    refs.push({ studyInstanceUID: study.studyInstanceUID, nodeCid: ingested.node.cid.toString(), sha256: ingested.sha256, size: ingested.size, generated });
  }
});

afterAll(async () => {
  keys?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A store that counts gets and can hold them back. */
function countingStore(): { store: Pick<FsBlockStore, 'get'>; gets: CID[] } {
  const gets: CID[] = [];
  return {
    gets,
    store: {
      get: (cid, options) => {
        gets.push(cid);
        return store.get(cid, options);
      },
    },
  };
}

describe('readInstances', () => {
  it("refuses a catalog row that names a node under another instance's UIDs (a row edited on disk)", async () => {
    const [a, b] = refs as [(typeof refs)[0], (typeof refs)[0]];
    const row = (sop: GeneratedInstance): InstanceRef => ({
      studyInstanceUID: a.studyInstanceUID,
      seriesInstanceUID: a.generated.seriesInstanceUID,
      sopInstanceUID: sop.sopInstanceUID,
      nodeCid: a.nodeCid,
      sha256: a.sha256,
      size: a.size,
    });
    expect((await openInstance({ store, keys }, row(a.generated))).envelope.sopInstanceUID).toBe(a.generated.sopInstanceUID);
    await expect(openInstance({ store, keys }, row(b.generated))).rejects.toMatchObject({ code: 'INSTANCE_CORRUPT', details: { fields: ['sopInstanceUID'] } });
    await expect(openInstance({ store, keys }, { ...row(a.generated), seriesInstanceUID: '1.2.3.4' })).rejects.toMatchObject({
      code: 'INSTANCE_CORRUPT',
      details: { fields: ['seriesInstanceUID'] },
    });
  });

  it('yields every instance in order, byte for byte', async () => {
    const out: Buffer[] = [];
    for await (const { ref, pieces } of readInstances({ store, keys }, refs)) {
      out.push(await bytesOf(pieces));
      expect(ref).toBe(refs[out.length - 1]);
    }
    expect(out.length).toBe(refs.length);
    for (const [i, ref] of refs.entries()) expect(out[i]!.equals(await bytesOf(ref.generated.open()))).toBe(true);
  });

  it('opens the first instance alone until its first piece is taken, then the next ones and their first chunks, before it is consumed', async () => {
    const counting = countingStore();
    const it = readInstances({ store: counting.store, keys }, refs, { readAhead: 8 });
    const first = await it.next();
    expect(first.done).toBe(false);
    const nodes = new Set(refs.map((r) => r.nodeCid));
    const nodeGets = (): number => counting.gets.filter((c) => nodes.has(c.toString())).length;
    await new Promise((r) => setTimeout(r, 50));
    expect(nodeGets()).toBe(1); // the first byte waits for nothing else
    const pieces = first.value!.pieces[Symbol.asyncIterator]();
    await pieces.next();
    const second = pieces.next(); // the first piece is on its way
    // Later instances' nodes (and, once open, their first chunks) are asked for while the
    // first instance is still being read.
    await new Promise((r) => setTimeout(r, 50));
    expect(nodeGets()).toBeGreaterThan(2);
    expect(counting.gets.length).toBeGreaterThan(nodeGets() + 1);
    await second;
    await pieces.return?.(undefined);
    await it.return(undefined);
  });

  it('with loans, reads into pooled buffers that hold later chunks once given back, byte for byte', async () => {
    const crypto = new CryptoPool({ workers: 2 });
    const taken = spySlots(crypto);
    try {
      for (let round = 0; round < 3; round++) {
        const loans = new PieceLoans();
        const out: Buffer[] = [];
        for await (const { pieces } of readInstances({ store, keys, crypto }, refs, { loans })) {
          const parts: Buffer[] = [];
          for await (const piece of pieces) {
            parts.push(Buffer.from(piece)); // a copy: the piece itself goes back
            loans.giveBack(piece);
          }
          out.push(Buffer.concat(parts));
        }
        for (const [i, ref] of refs.entries()) expect(out[i]!.equals(await bytesOf(ref.generated.open()))).toBe(true);
      }
      expect(taken.calls).toBeGreaterThanOrEqual(3 * refs.length);
      expect(taken.slots.size).toBeLessThan(taken.calls / 2);
    } finally {
      await crypto.close();
    }
  });

  it('with loans, never reuses a piece that was not given back', async () => {
    const crypto = new CryptoPool({ workers: 2 });
    const taken = spySlots(crypto);
    try {
      const loans = new PieceLoans();
      const kept: Buffer[][] = [];
      for (let round = 0; round < 2; round++) {
        for await (const { pieces } of readInstances({ store, keys, crypto }, refs, { loans })) {
          const parts: Buffer[] = [];
          for await (const piece of pieces) parts.push(piece);
          kept.push(parts);
        }
      }
      // Read again after everything: every kept piece still holds its own bytes.
      for (const [i, parts] of kept.entries()) {
        expect(Buffer.concat(parts).equals(await bytesOf(refs[i % refs.length]!.generated.open()))).toBe(true);
      }
      expect(taken.slots.size).toBe(taken.calls);
    } finally {
      await crypto.close();
    }
  });

  it('delivers the instances before a corrupt one whole, then fails with BLOCK_CORRUPT naming the block', async () => {
    const victim = refs[3]!;
    const node = decodeInstanceNode(await store.get(parseCid(victim.nodeCid)), parseCid(victim.nodeCid));
    const chunk = node.links[0]!;
    const file = join(store.path, ...(await blockPath(chunk)));
    const original = await readFile(file);
    const flipped = Buffer.from(original);
    flipped[10] = flipped[10]! ^ 0xff;
    await writeFile(file, flipped);
    try {
      const delivered: number[] = [];
      let failure: unknown;
      try {
        for await (const { pieces } of readInstances({ store, keys }, refs)) {
          await bytesOf(pieces);
          delivered.push(delivered.length);
        }
      } catch (err) {
        failure = err;
      }
      expect(delivered).toEqual([0, 1, 2]);
      expect(failure).toMatchObject({ code: 'BLOCK_CORRUPT', details: { cid: chunk.toString() } });
    } finally {
      await writeFile(file, original);
    }
  });

  it('stops cleanly when the consumer stops early, leaving no read behind', async () => {
    const counting = countingStore();
    for await (const { pieces } of readInstances({ store: counting.store, keys }, refs)) {
      await bytesOf(pieces);
      break;
    }
    const after = counting.gets.length;
    await new Promise((r) => setTimeout(r, 50));
    expect(counting.gets.length).toBe(after);
  });
});

const parseCid = (s: string): CID => CID.parse(s);

/** Counts the slots a pool hands out, and how many distinct ones. */
function spySlots(crypto: CryptoPool): { calls: number; slots: Set<Slot> } {
  const spy = { calls: 0, slots: new Set<Slot>() };
  const take = crypto.takeSlot.bind(crypto);
  crypto.takeSlot = (capacity: number): Slot => {
    const slot = take(capacity);
    spy.calls++;
    spy.slots.add(slot);
    return slot;
  };
  return spy;
}

/** The block's file under the store root: <shard>/<base32 CID>.data. */
async function blockPath(cid: CID): Promise<string[]> {
  const name = base32.encode(cid.bytes);
  for (const shard of await readdir(store.path)) {
    const names = await readdir(join(store.path, shard)).catch(() => [] as string[]);
    const hit = names.find((n) => n.startsWith(name));
    if (hit) return [shard, hit];
  }
  throw new Error(`block ${cid} not in the store`);
}
