import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { CryptoPool, Slot, TAG_BYTES } from '../../../src/format/crypto-pool.ts';
import { chunkAad, openChunk, sealChunk } from '../../../src/format/seal.ts';
import { isAligned } from '../../../src/core/aligned-memory.ts';
import { rawCid } from '../../../storage/cid.ts';

const pool = new CryptoPool({ workers: 2, pooledSlots: 4 });
afterAll(() => pool.close());

const key = randomBytes(32);

async function sealed(index: number, plaintext: Buffer): Promise<{ block: Buffer; digest: Uint8Array }> {
  const slot = pool.takeSlot(Math.max(plaintext.length, 1));
  plaintext.copy(slot.bytes);
  const digest = await pool.seal(key, index, slot, plaintext.length);
  const block = Buffer.from(slot.bytes.subarray(0, plaintext.length + TAG_BYTES));
  pool.giveSlot(slot);
  return { block, digest };
}

describe('CryptoPool', () => {
  it("seals and opens with a chunk's associated data as seal.ts does, and refuses it under another", async () => {
    const plaintext = randomBytes(3000);
    const aad = chunkAad(9, true, 4096, 9 * 4096 + 3000);
    const slot = pool.takeSlot(4096);
    plaintext.copy(slot.bytes);
    const digest = await pool.seal(key, 9, slot, 3000, undefined, { aad });
    const block = Buffer.from(slot.bytes.subarray(0, 3000 + TAG_BYTES));
    pool.giveSlot(slot);
    expect(block.equals(sealChunk(key, 9, plaintext, aad))).toBe(true);
    expect(openChunk(key, 9, block, aad).equals(plaintext)).toBe(true);
    const opened = await pool.open(key, 9, Buffer.from(block), 'sha256', digest, { aad });
    expect('plaintext' in opened && opened.plaintext.equals(plaintext)).toBe(true);
    // Not the last chunk, or another size, or no associated data (format 1): the tag fails.
    for (const other of [chunkAad(9, false, 4096, 0), chunkAad(9, true, 4096, 9 * 4096 + 2999), undefined]) {
      expect(await pool.open(key, 9, Buffer.from(block), 'sha256', digest, other === undefined ? {} : { aad: other })).toEqual({ failure: 'tag' });
      expect(() => openChunk(key, 9, block, other)).toThrow(/authentication/);
    }
  });

  it("moves an ordinary slot's memory to the worker during a seal, and back", async () => {
    const slot = new Slot(1000);
    const memory = slot.bytes.buffer;
    const sealing = pool.seal(key, 0, slot, 1000);
    expect(slot.bytes.byteLength).toBe(0);
    await sealing;
    expect(slot.usable).toBe(true);
    expect(slot.bytes.byteLength).toBe(1000 + TAG_BYTES);
    expect(memory.byteLength).toBe(0); // the old view's buffer stays detached; the slot has a new one
    expect(Buffer.from(slot.bytes.subarray(0, 1000 + TAG_BYTES)).equals(sealChunk(key, 0, Buffer.alloc(1000)))).toBe(true);
  });

  it('hands out pooled slots in aligned shared memory, sealed in place and never moved', async () => {
    const slot = pool.takeSlot(5000);
    expect(slot.shared).toBeDefined();
    expect(isAligned(slot.bytes)).toBe(true);
    const view = slot.bytes;
    const plaintext = randomBytes(5000);
    plaintext.copy(slot.bytes);
    const sealing = pool.seal(key, 3, slot, 5000);
    expect(slot.bytes.byteLength).toBe(0); // not to be touched while the worker has it
    await sealing;
    expect(slot.bytes).toBe(view);
    expect(view.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(view.subarray(0, 5000 + TAG_BYTES).equals(sealChunk(key, 3, plaintext))).toBe(true);
    pool.giveSlot(slot);
  });

  it("seals exactly as sealChunk does, with the digest of the block's CID", async () => {
    for (const [index, length] of [
      [0, 1 << 20],
      [7, 1000],
      [2 ** 40, 1],
      [3, 0],
    ] as const) {
      const plaintext = randomBytes(length);
      const { block, digest } = await sealed(index, plaintext);
      const expected = sealChunk(key, index, plaintext);
      expect(block.equals(expected)).toBe(true);
      expect(Buffer.from(digest).equals(Buffer.from(rawCid(expected).multihash.digest))).toBe(true);
    }
  });

  it('runs many seals at once on several workers, each with its own result', async () => {
    const plains = Array.from({ length: 24 }, () => randomBytes(64 * 1024 + 3));
    const results = await Promise.all(plains.map((p, i) => sealed(i, p)));
    for (const [i, r] of results.entries()) expect(r.block.equals(sealChunk(key, i, plains[i]!))).toBe(true);
    expect(pool.workers).toBe(2);
  });

  it("hashes the plaintext of a stream's seals in order, streams interleaved, and still seals right", async () => {
    const a = Array.from({ length: 5 }, (_, i) => randomBytes(10_000 + i));
    const b = Array.from({ length: 3 }, () => randomBytes(70_000));
    const ha = pool.startHash();
    const hb = pool.startHash();
    const seal = async (h: typeof ha, index: number, plaintext: Buffer): Promise<void> => {
      const slot = pool.takeSlot(plaintext.length);
      plaintext.copy(slot.bytes);
      await pool.seal(key, index, slot, plaintext.length, h);
      expect(slot.bytes.subarray(0, plaintext.length + TAG_BYTES).equals(sealChunk(key, index, plaintext))).toBe(true);
      pool.giveSlot(slot);
    };
    // Sent in order per stream, not awaited one by one: the worker keeps the order.
    await Promise.all([...a.map((p, i) => seal(ha, i, p)), ...b.map((p, i) => seal(hb, i, p))]);
    const sha = (parts: Buffer[]): string => createHash('sha256').update(Buffer.concat(parts)).digest('hex');
    expect(await pool.digest(hb)).toBe(sha(b));
    expect(await pool.digest(ha)).toBe(sha(a));
    expect(await pool.digest(pool.startHash())).toBe(sha([]));
    await expect(pool.digest(ha)).rejects.toMatchObject({ code: 'INTERNAL' }); // ended
    const dropped = pool.startHash();
    await seal(dropped, 0, randomBytes(100));
    pool.dropHash(dropped);
    pool.dropHash(dropped);
    await expect(pool.seal(key, 1, pool.takeSlot(1), 1, dropped)).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('ends a plaintext hash with its last seal: digest needs no round trip, and the hash takes no more seals', async () => {
    const parts = [randomBytes(5000), randomBytes(300)];
    const h = pool.startHash();
    const slots = parts.map((p) => {
      const slot = pool.takeSlot(p.length);
      p.copy(slot.bytes);
      return slot;
    });
    const sealing = parts.map((p, i) => pool.seal(key, i, slots[i]!, p.length, h, { last: i === parts.length - 1 }));
    // Ended at once, before the last seal is back: later seals are refused.
    await expect(pool.seal(key, 9, pool.takeSlot(1), 1, h)).rejects.toMatchObject({ code: 'INTERNAL' });
    await Promise.all(sealing);
    for (const [i, p] of parts.entries()) expect(slots[i]!.bytes.subarray(0, p.length + TAG_BYTES).equals(sealChunk(key, i, p))).toBe(true);
    expect(await pool.digest(h)).toBe(createHash('sha256').update(Buffer.concat(parts)).digest('hex'));
    await expect(pool.digest(h)).rejects.toMatchObject({ code: 'INTERNAL' }); // taken
  });

  it('opens what openChunk opens, and moves a block that owns its buffer', async () => {
    const plaintext = randomBytes(300_000);
    const block = sealChunk(key, 5, plaintext);
    const own = new Uint8Array(block); // its own ArrayBuffer
    const result = await pool.open(key, 5, own, 'sha256', rawCid(block).multihash.digest);
    expect('plaintext' in result && result.plaintext.equals(openChunk(key, 5, block))).toBe(true);
    expect(own.byteLength).toBe(0); // moved (detached), not copied
  });

  it("hashes the plaintext it opened when asked (a one-chunk instance's whole SHA-256), and only then", async () => {
    const plaintext = randomBytes(70_000);
    const block = sealChunk(key, 0, plaintext);
    const asked = await pool.open(key, 0, new Uint8Array(block), 'sha256', rawCid(block).multihash.digest, { plaintextSha256: true });
    expect(asked).toMatchObject({ sha256: createHash('sha256').update(plaintext).digest('hex') });
    const plain = await pool.open(key, 0, new Uint8Array(block), 'sha256', rawCid(block).multihash.digest);
    expect('sha256' in plain).toBe(false);
  });

  it('copies a block that is a view into a larger buffer, leaving that buffer intact', async () => {
    const plaintext = randomBytes(100);
    const block = sealChunk(key, 1, plaintext);
    const big = Buffer.concat([Buffer.from('prefix'), block, Buffer.from('suffix')]);
    const view = big.subarray(6, 6 + block.length);
    const result = await pool.open(key, 1, view, 'sha256', rawCid(block).multihash.digest);
    expect('plaintext' in result && result.plaintext.equals(plaintext)).toBe(true);
    expect(big.subarray(6, 6 + block.length).equals(block)).toBe(true);
  });

  it('checks the block against a sha2-512 digest too', async () => {
    const block = sealChunk(key, 2, randomBytes(5000));
    const digest = createHash('sha512').update(block).digest();
    expect('plaintext' in (await pool.open(key, 2, new Uint8Array(block), 'sha512', digest))).toBe(true);
  });

  it('reports a block that does not match its digest, or fails its tag, without plaintext', async () => {
    const block = sealChunk(key, 3, randomBytes(4096));
    const digest = rawCid(block).multihash.digest;
    const altered = new Uint8Array(block);
    altered[10]! ^= 1;
    expect(await pool.open(key, 3, altered, 'sha256', digest)).toEqual({ failure: 'hash' });
    // Right bytes, wrong position (nonce): the tag fails.
    expect(await pool.open(key, 4, new Uint8Array(block), 'sha256', digest)).toEqual({ failure: 'tag' });
    const tiny = new Uint8Array(8);
    expect(await pool.open(key, 0, tiny, 'sha256', createHash('sha256').update(tiny).digest())).toEqual({ failure: 'short' });
  });

  it('rejects a task that fails in the worker, and keeps serving others', async () => {
    const slot = pool.takeSlot(16);
    await expect(pool.seal(Buffer.alloc(5), 0, slot, 16)).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(slot.usable).toBe(true); // the worker handed the slot's memory back
    await expect(pool.seal(key, 0, slot, 17)).rejects.toMatchObject({ code: 'INTERNAL' });
    slot.bytes.fill(1, 0, 16);
    const digest = await pool.seal(key, 0, slot, 16);
    expect(Buffer.from(digest).equals(Buffer.from(rawCid(sealChunk(key, 0, Buffer.alloc(16, 1))).multihash.digest))).toBe(true);
  });

  it("opens a block read into a slot in place: the plaintext at the slot's start, the slot back in one piece", async () => {
    const plaintext = randomBytes(200_000);
    const block = sealChunk(key, 6, plaintext);
    for (const slot of [pool.takeSlot(plaintext.length), new Slot(plaintext.length)]) {
      block.copy(slot.bytes);
      const memory = slot.bytes.buffer;
      const result = await pool.openInSlot(key, 6, slot, block.length, 'sha256', rawCid(block).multihash.digest, { plaintextSha256: true });
      expect(result).toEqual({ plaintextLength: plaintext.length, sha256: createHash('sha256').update(plaintext).digest('hex') });
      expect(slot.usable).toBe(true);
      expect(slot.bytes.subarray(0, plaintext.length).equals(plaintext)).toBe(true);
      // An ordinary slot's memory went to the worker (and came back as slot.bytes); a shared one stayed.
      if (slot.shared === undefined) expect(memory.byteLength).toBe(0);
      else expect(slot.bytes.buffer).toBe(memory);
      pool.giveSlot(slot);
    }
  });

  it('hands the slot back when the block in it fails its hash or its tag', async () => {
    const block = sealChunk(key, 7, randomBytes(4096));
    const digest = rawCid(block).multihash.digest;
    const slot = pool.takeSlot(4096);
    block.copy(slot.bytes);
    slot.bytes[20]! ^= 1;
    expect(await pool.openInSlot(key, 7, slot, block.length, 'sha256', digest)).toEqual({ failure: 'hash' });
    expect(slot.usable).toBe(true);
    block.copy(slot.bytes);
    expect(await pool.openInSlot(key, 8, slot, block.length, 'sha256', digest)).toEqual({ failure: 'tag' });
    expect(slot.usable).toBe(true);
    expect(slot.bytes.subarray(0, block.length).equals(block)).toBe(true); // a failed open leaves the bytes as read
    await expect(pool.openInSlot(key, 7, slot, block.length + 100, 'sha256', digest)).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('reuses given-back slots, each at most once, and only of the same size', () => {
    const p = new CryptoPool({ workers: 1, pooledSlots: 2 });
    const a = p.takeSlot(100);
    const b = p.takeSlot(100);
    const c = p.takeSlot(100);
    // The pool's two shared slots first, in distinct aligned memory; then an ordinary one.
    expect([a.shared, b.shared].every((v) => v !== undefined && isAligned(v))).toBe(true);
    expect(a.bytes.byteOffset).not.toBe(b.bytes.byteOffset);
    expect(c.shared).toBeUndefined();
    p.giveSlot(a);
    p.giveSlot(a);
    p.giveSlot(b);
    p.giveSlot(c); // beyond pooledSlots: left to GC
    const again = [p.takeSlot(100), p.takeSlot(100), p.takeSlot(100)];
    expect(again.filter((s) => s === a)).toHaveLength(1);
    expect(again.filter((s) => s === b)).toHaveLength(1);
    expect(again).not.toContain(c);
    expect(p.takeSlot(200)).not.toBe(a);
    expect(a.bytes.length).toBe(100 + TAG_BYTES);
    // An ordinary slot given back while shared ones are out is kept for reuse.
    const d = new Slot(100);
    p.giveSlot(d);
    expect(p.takeSlot(100)).toBe(d);
  });

  it('starts all its workers when warmed', async () => {
    const p = new CryptoPool({ workers: 3 });
    p.warm();
    expect(p.workers).toBe(3);
    p.warm();
    expect(p.workers).toBe(3);
    const slot = p.takeSlot(10);
    await p.seal(key, 0, slot, 10);
    await p.close();
    expect(p.workers).toBe(0);
  });

  it('never keeps a process alive with idle workers, so nothing has to close the shared pool', () => {
    const url = new URL('../../../src/format/crypto-pool.ts', import.meta.url).href;
    const script = `import { sharedCryptoPool } from '${url}';
      const pool = sharedCryptoPool(); pool.warm();
      const slot = pool.takeSlot(8); await pool.seal(new Uint8Array(32), 0, slot, 8); console.log('sealed');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(r.error).toBeUndefined(); // no timeout: the process ended by itself
    expect(r.stdout.trim()).toBe('sealed');
    expect(r.status).toBe(0);
  });

  it('terminates its workers on close; running and later tasks reject', async () => {
    const p = new CryptoPool({ workers: 2 });
    const slot = new Slot(4 << 20);
    const shared = p.takeSlot(4 << 20);
    const running = [slot, shared].map((s) =>
      p.seal(key, 0, s, 4 << 20).then(
        () => 'sealed',
        (err: unknown) => err,
      ),
    );
    expect(p.workers).toBe(2);
    await p.close();
    expect(p.workers).toBe(0);
    for (const r of running) expect(await r).toMatchObject({ code: 'INTERNAL' });
    await expect(p.seal(key, 0, p.takeSlot(4), 1)).rejects.toMatchObject({ code: 'INTERNAL' });
    // The ordinary slot's memory went down with the worker: it is not pooled again. The shared
    // one never left.
    expect(slot.usable).toBe(false);
    expect(shared.usable).toBe(true);
    p.giveSlot(slot);
    expect(p.takeSlot(4 << 20)).not.toBe(slot);
  });
});
