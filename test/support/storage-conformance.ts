// The conformance suite every BlockStore backend (fs, IPFS, S3) must pass. A backend's test file
// calls `blockStoreConformance(name, factory)`; the factory makes a fresh, empty store per test.
import { randomBytes } from 'node:crypto';
import { CID } from 'multiformats/cid';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VaultError, isVaultError } from '../../src/core/errors.ts';
import type { BlockStore } from '../../storage/block-store.ts';
import { rawCid } from '../../storage/cid.ts';
import { VerifiedBlockStore, getVerified } from '../../storage/verified.ts';

const MiB = 1024 * 1024;
const DAG_CBOR = 0x71;

/**
 * One fresh store plus the backend-specific hooks the suite needs to reach under the interface.
 * The hooks live here, not in a separate argument, because they must act on this very instance
 * (its directory, bucket or repo).
 */
export interface BlockStoreHarness {
  store: BlockStore;
  /** Closes the store and removes everything it stored. */
  cleanup(): Promise<void>;
  /** Changes one byte of the stored block in the backend's raw storage, keeping its length. */
  corruptBlock?(cid: CID): Promise<void>;
  /**
   * Makes the stored block unreadable for a reason other than absence (a permission, an I/O
   * error, a file where a directory should be). Reads must then fail with STORE_UNAVAILABLE.
   */
  makeUnreadable?(cid: CID): Promise<void>;
}

export function blockStoreConformance(name: string, factory: () => Promise<BlockStoreHarness>): void {
  describe(`BlockStore conformance: ${name}`, () => {
    let harness: BlockStoreHarness;
    let store: BlockStore;

    beforeEach(async () => {
      harness = await factory();
      store = harness.store;
    });
    afterEach(async () => {
      await harness.cleanup();
    });

    describe('put and get', () => {
      it.each([
        ['empty', 0],
        ['small', 13],
        ['1 MiB', MiB],
        ['4 MiB', 4 * MiB],
      ])('returns a %s block exactly as put', async (_label, size) => {
        const { cid, bytes } = block(size);
        await store.put(cid, bytes);
        expectSameBytes(await store.get(cid), bytes);
        expectSameBytes(await getVerified(store, cid), bytes);
      });

      it('makes a block readable as soon as a non-durable put resolves, and flush keeps it', async () => {
        const { cid, bytes } = block(500 * 1024);
        await store.put(cid, bytes, { durable: false });
        expectSameBytes(await store.get(cid), bytes);
        await store.flush?.();
        expectSameBytes(await getVerified(store, cid), bytes);
      });

      it('keeps a dag-cbor CID (codec 0x71) as its own block, verifiable by its hash', async () => {
        const bytes = randomBytes(2048);
        const cid = CID.createV1(DAG_CBOR, rawCid(bytes).multihash);
        await store.put(cid, bytes);
        expectSameBytes(await getVerified(store, cid), bytes);
        if (store.list !== undefined) expect(await listed(store)).toEqual([cid.toString()]);
      });
    });

    describe('has and delete', () => {
      it('reports presence, and absence after delete', async () => {
        const { cid, bytes } = block(100);
        expect(await store.has(cid)).toBe(false);
        await store.put(cid, bytes);
        expect(await store.has(cid)).toBe(true);
        await store.delete(cid);
        expect(await store.has(cid)).toBe(false);
        await expectCode(store.get(cid), 'BLOCK_NOT_FOUND');
      });

      it('deletes only the named block', async () => {
        const kept = block(100);
        const gone = block(100);
        await store.put(kept.cid, kept.bytes);
        await store.put(gone.cid, gone.bytes);
        await store.delete(gone.cid);
        expectSameBytes(await store.get(kept.cid), kept.bytes);
      });

      it('treats deleting an absent block as success', async () => {
        const { cid, bytes } = block(100);
        await store.delete(cid);
        await store.put(cid, bytes);
        await store.delete(cid);
        await store.delete(cid);
        expect(await store.has(cid)).toBe(false);
      });
    });

    describe('missing blocks', () => {
      it('rejects get of an absent block with BLOCK_NOT_FOUND', async () => {
        const { cid } = block(100);
        await expectCode(store.get(cid), 'BLOCK_NOT_FOUND');
      });

      it('names the CID when a verified read finds nothing', async () => {
        const { cid } = block(100);
        const err = await expectCode(getVerified(store, cid), 'BLOCK_NOT_FOUND');
        expect(err.details).toMatchObject({ cid: cid.toString() });
        expect(err.message).toContain(cid.toString());
      });
    });

    describe('idempotence and concurrency', () => {
      it('accepts the same block twice and keeps one copy', async () => {
        const { cid, bytes } = block(MiB);
        await store.put(cid, bytes);
        await store.put(cid, bytes);
        await store.put(cid, bytes, { durable: false });
        await store.flush?.();
        expectSameBytes(await getVerified(store, cid), bytes);
        if (store.list !== undefined) expect(await listed(store)).toEqual([cid.toString()]);
      });

      it('lets 16 concurrent puts of one block all succeed, leaving it intact', async () => {
        const { cid, bytes } = block(MiB);
        const results = await Promise.allSettled(Array.from({ length: 16 }, () => store.put(cid, bytes)));
        expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
        expectSameBytes(await getVerified(store, cid), bytes);
        if (store.list !== undefined) expect(await listed(store)).toEqual([cid.toString()]);
      });

      it('stores 64 different blocks put concurrently', async () => {
        const blocks = Array.from({ length: 64 }, (_, i) => block(((i * 7919) % 600) * 1024 + i));
        await Promise.all(blocks.map(({ cid, bytes }, i) => store.put(cid, bytes, { durable: i % 2 === 0 })));
        await store.flush?.();
        const read = await Promise.all(blocks.map(({ cid }) => getVerified(store, cid)));
        for (const [i, bytes] of read.entries()) expectSameBytes(bytes, blocks[i]!.bytes);
      });
    });

    describe('abort', () => {
      it('rejects a put whose signal is already aborted with ABORTED and stores nothing', async () => {
        const { cid, bytes } = block(MiB);
        await expectCode(store.put(cid, bytes, { signal: AbortSignal.abort() }), 'ABORTED');
        expect(await store.has(cid)).toBe(false);
        if (store.list !== undefined) expect(await listed(store)).toEqual([]);
      });

      it('rejects every other call with an already-aborted signal, and changes nothing', async () => {
        const { cid, bytes } = block(100);
        await store.put(cid, bytes);
        const signal = AbortSignal.abort();
        await expectCode(store.get(cid, { signal }), 'ABORTED');
        await expectCode(store.has(cid, { signal }), 'ABORTED');
        await expectCode(store.delete(cid, { signal }), 'ABORTED');
        if (store.flush !== undefined) await expectCode(store.flush({ signal }), 'ABORTED');
        if (store.list !== undefined) await expectCode(listed(store, signal), 'ABORTED');
        expectSameBytes(await store.get(cid), bytes);
      });

      it('keeps the reason when the signal was aborted with a VaultError', async () => {
        const { cid, bytes } = block(100);
        const reason = new VaultError('ABORTED', 'client went away');
        await expect(store.put(cid, bytes, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
      });

      it('after an abort during a put, holds either the whole block or nothing', async () => {
        const { cid, bytes } = block(4 * MiB);
        const controller = new AbortController();
        const pending = store.put(cid, bytes, { signal: controller.signal });
        controller.abort();
        const outcome = await pending.then(
          () => 'stored' as const,
          (err: unknown) => err,
        );
        if (outcome === 'stored') {
          expectSameBytes(await getVerified(store, cid), bytes);
        } else {
          expect(isVaultError(outcome, 'ABORTED'), String(outcome)).toBe(true);
          expect(await store.has(cid)).toBe(false);
        }
        if (store.list !== undefined) expect(await listed(store)).toEqual(outcome === 'stored' ? [cid.toString()] : []);
      });
    });

    describe('list', () => {
      it('returns exactly the blocks stored', async (ctx) => {
        if (store.list === undefined) return ctx.skip();
        expect(await listed(store)).toEqual([]);
        const blocks = Array.from({ length: 5 }, (_, i) => block(1000 + i));
        for (const { cid, bytes } of blocks) await store.put(cid, bytes);
        await store.delete(blocks[2]!.cid);
        const expected = blocks.filter((_, i) => i !== 2).map(({ cid }) => cid.toString());
        expect(await listed(store)).toEqual(expected.sort());
      });
    });

    describe('verification', () => {
      it('rejects a verified read of a corrupted block with BLOCK_CORRUPT naming the CID', async (ctx) => {
        if (harness.corruptBlock === undefined) return ctx.skip();
        const { cid, bytes } = block(MiB);
        await store.put(cid, bytes);
        await harness.corruptBlock(cid);
        const raw = await store.get(cid);
        expect(raw.byteLength).toBe(bytes.byteLength);
        const err = await expectCode(getVerified(store, cid), 'BLOCK_CORRUPT');
        expect(err.details).toMatchObject({ cid: cid.toString() });
        await expectCode(new VerifiedBlockStore(store).get(cid), 'BLOCK_CORRUPT');
        // Corrupt is not absent: the block is still there to be repaired or investigated.
        expect(await store.has(cid)).toBe(true);
      });

      it('never returns bytes put under a CID they do not hash to as verified', async () => {
        // Stores need not hash on put (ingest computes the CID from the very bytes it puts),
        // but such a block must not pass a verified read.
        const { cid } = block(1000);
        const other = randomBytes(1000);
        const put = await store.put(cid, other).then(
          () => undefined,
          (err: unknown) => err,
        );
        if (put !== undefined) {
          expect(isVaultError(put, 'BLOCK_CORRUPT'), String(put)).toBe(true);
          return;
        }
        await expectCode(getVerified(store, cid), 'BLOCK_CORRUPT');
      });
    });

    describe('store failures', () => {
      it('reports an unreadable block as STORE_UNAVAILABLE with its cause, never as not found', async (ctx) => {
        if (harness.makeUnreadable === undefined) return ctx.skip();
        const { cid, bytes } = block(1000);
        await store.put(cid, bytes);
        await harness.makeUnreadable(cid);
        const err = await expectCode(store.get(cid), 'STORE_UNAVAILABLE');
        expect(err.cause).toBeDefined();
        await expectCode(getVerified(store, cid), 'STORE_UNAVAILABLE');
        await expectCode(store.has(cid), 'STORE_UNAVAILABLE');
      });
    });
  });
}

function block(size: number): { cid: CID; bytes: Uint8Array } {
  const bytes = randomBytes(size);
  return { cid: rawCid(bytes), bytes };
}

async function listed(store: BlockStore, signal?: AbortSignal): Promise<string[]> {
  const cids: string[] = [];
  for await (const cid of store.list!(signal === undefined ? {} : { signal })) cids.push(cid.toString());
  return cids.sort();
}

/** Compares without vitest's per-element diffing, which is slow on megabytes. */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.byteLength).toBe(expected.byteLength);
  expect(Buffer.compare(actual, expected) === 0, 'block bytes differ').toBe(true);
}

/** Awaits a rejection with the given VaultError code and returns the error. */
export async function expectCode(promise: Promise<unknown>, code: VaultError['code']): Promise<VaultError> {
  const err = await promise.then(
    () => new Error(`expected rejection with ${code}, but it resolved`),
    (e: unknown) => e,
  );
  expect(isVaultError(err) ? err.code : err).toBe(code);
  return err as VaultError;
}
