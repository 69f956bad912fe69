import { randomBytes, randomFillSync } from 'node:crypto';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { identity } from 'multiformats/hashes/identity';
import { sha256, sha512 } from 'multiformats/hashes/sha2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VaultError, isVaultError } from '../../../src/core/errors.ts';
import { alignedRoom, allocateAligned, copyInto, isAligned } from '../../../src/core/aligned-memory.ts';
import { cidMatches, rawCid } from '../../../storage/cid.ts';
import { FsBlockStore } from '../../../storage/fs.ts';
import { getVerified } from '../../../storage/verified.ts';
import { blockStoreConformance, expectCode, expectSameBytes } from '../../support/storage-conformance.ts';

const MiB = 1024 * 1024;
const execFileAsync = promisify(execFile);

// The on-disk layout, spelled out independently of the implementation: operators and backup
// tools rely on it. Shard = the 2 characters before the last one of the base32 CID.
function shardOf(root: string, cid: CID, prefixLength = 2): string {
  const name = cid.toString();
  return path.join(root, name.slice(-1 - prefixLength, -1));
}
function blockPath(root: string, cid: CID, prefixLength = 2): string {
  return path.join(shardOf(root, cid, prefixLength), `${cid.toString()}.data`);
}

function block(size: number): { cid: CID; bytes: Uint8Array } {
  const bytes = randomBytes(size);
  return { cid: rawCid(bytes), bytes };
}

/** For each descriptor this process has open on `file`: whether it was opened with O_DIRECT. */
async function openFlags(file: string): Promise<boolean[]> {
  const found: boolean[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')) !== file) continue;
    const flags = /^flags:\s+([0-7]+)$/m.exec(await readFile(`/proc/self/fdinfo/${fd}`, 'utf8'));
    found.push((Number.parseInt(flags![1]!, 8) & constants.O_DIRECT) !== 0);
  }
  return found;
}

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'dicom-vault-fs-'));
}

blockStoreConformance('FsBlockStore', async () => {
  const root = await tempDir();
  const store = await FsBlockStore.open({ path: root });
  return {
    store,
    async cleanup() {
      await store.close();
      await rm(root, { recursive: true, force: true });
    },
    async corruptBlock(cid) {
      const file = blockPath(root, cid);
      const bytes = await readFile(file);
      bytes[bytes.length >> 1]! ^= 0xff;
      await writeFile(file, bytes);
    },
    async makeUnreadable(cid) {
      // Tests run as root, where chmod 000 denies nothing: a file where the shard directory
      // should be gives ENOTDIR instead.
      const shard = shardOf(root, cid);
      await rm(shard, { recursive: true });
      await writeFile(shard, 'not a directory');
    },
  };
});

describe('FsBlockStore on disk', () => {
  let root: string;
  let store: FsBlockStore;

  beforeEach(async () => {
    root = await tempDir();
    store = await FsBlockStore.open({ path: root });
  });
  afterEach(async () => {
    await store.close().catch(() => undefined); // a test may have made its flushes fail on purpose
    await rm(root, { recursive: true, force: true });
  });

  it('keeps one descriptor per directory it fsyncs, takes the new one for a shard made again, and closes them on close', async () => {
    /** What this process's descriptors on the store's directories point at ("... (deleted)" once removed). */
    const dirDescriptors = async (): Promise<string[]> => {
      const targets: string[] = [];
      for (const fd of await readdir('/proc/self/fd')) {
        const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
        if (target.startsWith(root + path.sep) && !target.includes('.data')) targets.push(target);
      }
      return targets.sort();
    };
    const blocks = [block(1000), block(1000), block(1000)];
    for (const { cid, bytes } of blocks) await store.put(cid, bytes);
    for (const { cid, bytes } of blocks) await store.put(cid, bytes); // synced again: no new descriptor
    const shards = [...new Set(blocks.map(({ cid }) => shardOf(root, cid)))].sort();
    expect(await dirDescriptors()).toEqual(shards);

    const [first] = blocks;
    await rm(shardOf(root, first!.cid), { recursive: true });
    await store.put(first!.cid, first!.bytes);
    expect(await dirDescriptors()).toEqual(shards); // the removed directory's descriptor closed: none "(deleted)"
    expectSameBytes(await getVerified(store, first!.cid), first!.bytes);

    await store.close();
    expect(await dirDescriptors()).toEqual([]);
  });

  it('stores each block as <root>/<shard>/<base32 CID>.data holding exactly its bytes', async () => {
    const { cid, bytes } = block(MiB);
    await store.put(cid, bytes);
    expectSameBytes(await readFile(blockPath(root, cid)), bytes);
    expect(await readFile(path.join(root, 'SHARDING'), 'utf8')).toBe('dicom-vault/fs-block-store/v1/next-to-last/2\n');
  });

  it('makes all 1,024 shard directories of a new store up front, and none beyond 1,024', async () => {
    const shards = (await readdir(root)).filter((n) => /^[a-z2-7]{2}$/.test(n));
    expect(shards).toHaveLength(1024);
    const { cid } = block(10);
    expect(shards).toContain(path.basename(shardOf(root, cid)));
    const wide = path.join(root, 'wide');
    await FsBlockStore.open({ path: wide, shardPrefixLength: 3 });
    expect(await readdir(wide)).toEqual(['SHARDING']);
  });

  it('opens a store whose shard directories were cut short by a crash, and makes the missing one on put', async () => {
    const { cid, bytes } = block(1000);
    await rm(shardOf(root, cid), { recursive: true });
    const reopened = await FsBlockStore.open({ path: root });
    await reopened.put(cid, bytes);
    expectSameBytes(await getVerified(reopened, cid), bytes);
  });

  it('puts that find their shard missing at once all land in the one directory made again', async () => {
    // Prefix 1: 32 shards, so random blocks soon share one.
    const dir = path.join(root, 'narrow');
    const narrow = await FsBlockStore.open({ path: dir, shardPrefixLength: 1 });
    const blocks = Array.from({ length: 200 }, () => block(5000));
    const shard = shardOf(dir, blocks[0]!.cid, 1);
    const same = blocks.filter(({ cid }) => shardOf(dir, cid, 1) === shard);
    expect(same.length).toBeGreaterThan(1);
    await rm(shard, { recursive: true });
    await Promise.all(same.map(({ cid, bytes }, i) => narrow.put(cid, bytes, { durable: i % 2 === 0 })));
    await narrow.flush();
    for (const { cid, bytes } of same) expectSameBytes(await readFile(blockPath(dir, cid, 1)), bytes);
    await narrow.close();
  });

  it('uses longer shard names when asked, and keeps that layout on reopen', async () => {
    const dir = path.join(root, 'wide');
    const wide = await FsBlockStore.open({ path: dir, shardPrefixLength: 3 });
    const { cid, bytes } = block(1000);
    await wide.put(cid, bytes);
    expectSameBytes(await readFile(blockPath(dir, cid, 3)), bytes);

    const reopened = await FsBlockStore.open({ path: dir });
    expect(reopened.shardPrefixLength).toBe(3);
    expectSameBytes(await reopened.get(cid), bytes);
    await expectCode(FsBlockStore.open({ path: dir, shardPrefixLength: 2 }), 'CONFIG_INVALID');
  });

  it('sees blocks stored before it was reopened', async () => {
    const blocks = [block(10), block(MiB), block(0)];
    for (const { cid, bytes } of blocks) await store.put(cid, bytes);
    await store.close();

    const reopened = await FsBlockStore.open({ path: root });
    const listed: string[] = [];
    for await (const cid of reopened.list()) listed.push(cid.toString());
    expect(listed.sort()).toEqual(blocks.map(({ cid }) => cid.toString()).sort());
    for (const { cid, bytes } of blocks) expectSameBytes(await getVerified(reopened, cid), bytes);
  });

  it('ignores a temp file left by a crash between write and rename, and can still store the block', async () => {
    const { cid, bytes } = block(1000);
    const shard = shardOf(root, cid);
    await mkdir(shard, { recursive: true });
    await writeFile(path.join(shard, `.${cid.toString()}.data.0b5e55ed.tmp`), bytes.subarray(0, 400));

    expect(await store.has(cid)).toBe(false);
    await expectCode(store.get(cid), 'BLOCK_NOT_FOUND');
    expect(await all(store.list())).toEqual([]);

    await store.put(cid, bytes);
    expectSameBytes(await getVerified(store, cid), bytes);
    expect(await all(store.list())).toEqual([cid.toString()]);
  });

  it('replaces a torn block file (crash before flush) when the block is put again', async () => {
    const { cid, bytes } = block(MiB);
    await mkdir(shardOf(root, cid), { recursive: true });
    await writeFile(blockPath(root, cid), bytes.subarray(0, 4096));

    await store.put(cid, bytes);
    expectSameBytes(await getVerified(store, cid), bytes);
  });

  it("reads a block into a caller's buffer (getInto): its length and exact bytes, nothing when it does not fit", async () => {
    const { cid, bytes } = block(MiB + 16);
    await store.put(cid, bytes);
    const target = Buffer.alloc(MiB + 100, 0xee);
    expect(await store.getInto(cid, target)).toBe(MiB + 16);
    expectSameBytes(target.subarray(0, MiB + 16), bytes);
    expect(target.subarray(MiB + 16).every((b) => b === 0xee)).toBe(true); // nothing written past the block

    const small = Buffer.alloc(MiB, 0xee);
    expect(await store.getInto(cid, small)).toBeUndefined();
    expect(small.every((b) => b === 0xee)).toBe(true);

    const missing = block(10).cid;
    await expectCode(store.getInto(missing, target), 'BLOCK_NOT_FOUND');
    const aborted = AbortSignal.abort();
    await expectCode(store.getInto(cid, target, { signal: aborted }), 'ABORTED');
  });

  it('reads a block into aligned memory (getInto, O_DIRECT) exactly, whatever its length against 4 KiB blocks', async () => {
    const [slot] = allocateAligned(1, MiB + 16);
    for (const length of [100, 4095, 4096, 4097, 3 * 4096 + 1, MiB, MiB + 16]) {
      const { cid, bytes } = block(length);
      await store.put(cid, bytes);
      slot!.fill(0xee);
      expect(await store.getInto(cid, slot!), `${length} bytes`).toBe(length);
      expectSameBytes(slot!.subarray(0, length), bytes);
    }
    const big = block(MiB + 17);
    await store.put(big.cid, big.bytes);
    expect(await store.getInto(big.cid, slot!)).toBeUndefined();
    expect(store.directIO).toBe(true);
  });

  it('lists only block files that get can read', async () => {
    const { cid, bytes } = block(100);
    await store.put(cid, bytes);
    const stray = block(100).cid;
    await writeFile(path.join(root, 'README'), 'operator notes');
    await writeFile(path.join(shardOf(root, cid), 'not-a-cid.data'), 'x');
    // A valid block name in the wrong shard directory: get would never look there.
    const wrongShard = path.join(root, shardOf(root, stray).endsWith('aa') ? 'ab' : 'aa');
    await mkdir(wrongShard, { recursive: true });
    await writeFile(path.join(wrongShard, `${stray.toString()}.data`), 'x');

    expect(await all(store.list())).toEqual([cid.toString()]);
  });

  it('reports a file where the shard directory should be as STORE_UNAVAILABLE on every call', async () => {
    const { cid, bytes } = block(100);
    await rm(shardOf(root, cid), { recursive: true });
    await writeFile(shardOf(root, cid), 'in the way');

    const calls = [() => store.get(cid), () => store.has(cid), () => store.put(cid, bytes), () => store.delete(cid)];
    for (const call of calls) {
      const err = await expectCode(call(), 'STORE_UNAVAILABLE');
      expect(err.cause).toMatchObject({ code: 'ENOTDIR' });
      expect(err.details).toMatchObject({ cid: cid.toString() });
    }
  });

  it('leaves no temp file and no block behind whichever step of a put an abort interrupts', async () => {
    // A signal that turns aborted after being read `reads` times, so the abort lands at each
    // successive check inside put (before the write, after it, before the rename...).
    const outcomes = new Set<string>();
    for (let reads = 0; reads < 10; reads++) {
      const { cid, bytes } = block(2 * MiB);
      const reason = new VaultError('ABORTED', `aborted after ${reads} checks`);
      let seen = 0;
      const signal = {
        get aborted() {
          return seen++ >= reads;
        },
        reason,
      } as unknown as AbortSignal;

      const outcome = await store.put(cid, bytes, { signal }).then(
        () => 'stored',
        (err: unknown) => (isVaultError(err, 'ABORTED') ? 'aborted' : err),
      );
      outcomes.add(String(outcome));
      const shard = shardOf(root, cid);
      const leftovers = (await readdir(shard).catch(() => [])).filter((name) => name.endsWith('.tmp'));
      expect(leftovers, `after ${reads} checks`).toEqual([]);
      if (outcome === 'stored') expectSameBytes(await getVerified(store, cid), bytes);
      else expect(await store.has(cid), `after ${reads} checks`).toBe(false);
    }
    expect([...outcomes].sort()).toEqual(['aborted', 'stored']);
  });

  it('makes non-durable puts readable at once and flushes them, even if one was deleted meanwhile', async () => {
    const blocks = Array.from({ length: 8 }, () => block(500 * 1024));
    await Promise.all(blocks.map(({ cid, bytes }) => store.put(cid, bytes, { durable: false })));
    await store.delete(blocks[0]!.cid);
    await store.flush();
    for (const { cid, bytes } of blocks.slice(1)) expectSameBytes(await getVerified(store, cid), bytes);
    await store.flush();
  });

  it('writes blocks in aligned memory with O_DIRECT (a tail under 4 KiB buffered), others buffered, all read back exact', async () => {
    expect(store.directIO).toBe(true);
    const [view] = allocateAligned(1, 2 * MiB);
    // [length, whether the descriptor a non-durable put keeps open for its flush is O_DIRECT]:
    // whole 4 KiB blocks stay on the direct descriptor; a tail is written (and synced) through a
    // second, buffered one; a block under 4 KiB is buffered throughout.
    const cases: Array<[number, boolean]> = [
      [4096, true],
      [MiB, true],
      [3 * 4096 + 1, false],
      [MiB + 16, false],
      [4095, false],
      [100, false],
    ];
    for (const [length, direct] of cases) {
      const bytes = view!.subarray(0, length);
      randomFillSync(bytes);
      const cid = rawCid(bytes);
      await store.put(cid, bytes, { durable: false });
      expect(await openFlags(blockPath(root, cid)), `${length} bytes`).toEqual([direct]);
      expect(Buffer.from(await readFile(blockPath(root, cid))).equals(bytes), `${length} bytes`).toBe(true);
      const durable = { cid: rawCid(randomFillSync(bytes)), bytes };
      await store.put(durable.cid, bytes);
      expect(await openFlags(blockPath(root, durable.cid))).toEqual([]);
      expectSameBytes(await getVerified(store, durable.cid), bytes);
    }
    await store.flush();
    expect(store.directIO).toBe(true); // the filesystem took every direct write
  });

  it('writes buffered when directIO is off, and the same bytes', async () => {
    const buffered = await FsBlockStore.open({ path: root, directIO: false });
    expect(buffered.directIO).toBe(false);
    const [view] = allocateAligned(1, MiB);
    const bytes = randomFillSync(view!);
    const cid = rawCid(bytes);
    await buffered.put(cid, bytes, { durable: false });
    expect(await openFlags(blockPath(root, cid))).toEqual([false]);
    await buffered.flush();
    expectSameBytes(await getVerified(buffered, cid), bytes);
  });

  it('never lets a flush succeed after one failed, since the failed blocks may be lost', async () => {
    const { cid, bytes } = block(1000);
    await store.put(cid, bytes, { durable: false });
    const shard = shardOf(root, cid);
    await rm(shard, { recursive: true });
    await writeFile(shard, 'in the way');

    await expectCode(store.flush(), 'STORE_UNAVAILABLE');
    await expectCode(store.flush(), 'STORE_UNAVAILABLE');
    // Reopening is how an operator acknowledges the failure; the fresh store flushes again.
    await rm(shard);
    const reopened = await FsBlockStore.open({ path: root });
    await reopened.flush();
  });

  it('creates the root directory, and refuses a non-empty directory that is not a block store', async () => {
    const nested = path.join(root, 'a', 'b');
    const created = await FsBlockStore.open({ path: nested });
    const { cid, bytes } = block(10);
    await created.put(cid, bytes);
    expect(await created.has(cid)).toBe(true);

    const other = path.join(root, 'home');
    await mkdir(other);
    await writeFile(path.join(other, 'notes.txt'), 'not blocks');
    await expectCode(FsBlockStore.open({ path: other }), 'CONFIG_INVALID');
  });

  it('rejects invalid options with CONFIG_INVALID and an unusable path with STORE_UNAVAILABLE', async () => {
    for (const shardPrefixLength of [0, 5, 1.5]) {
      await expectCode(FsBlockStore.open({ path: path.join(root, 'x'), shardPrefixLength }), 'CONFIG_INVALID');
    }
    await expectCode(FsBlockStore.open({ path: '' }), 'CONFIG_INVALID');
    const file = path.join(root, 'file');
    await writeFile(file, 'x');
    await expectCode(FsBlockStore.open({ path: file }), 'STORE_UNAVAILABLE');
  });
});

// A filesystem that refuses O_DIRECT when a file is opened with it (EINVAL): ramfs has no direct
// I/O (tmpfs has had it since Linux 6.6, so it no longer serves). Mounting one needs root, which
// CI is (.ci/run); elsewhere this suite is skipped.
describe.skipIf(process.getuid?.() !== 0)('FsBlockStore on a filesystem that refuses O_DIRECT (ramfs, as root)', () => {
  let mountPoint: string;
  let root: string;
  let store: FsBlockStore;

  beforeEach(async () => {
    mountPoint = await tempDir();
    await execFileAsync('mount', ['-t', 'ramfs', 'ramfs', mountPoint]);
    root = path.join(mountPoint, 'blocks');
    store = await FsBlockStore.open({ path: root });
  });
  afterEach(async () => {
    await store.close();
    await execFileAsync('umount', [mountPoint]);
    await rm(mountPoint, { recursive: true, force: true });
  });

  it('writes blocks in aligned memory buffered from the first refusal on, durable or not, the same bytes', async () => {
    expect(store.directIO).toBe(true); // not known before a direct open is refused
    const [view] = allocateAligned(1, MiB + 16);
    const stored: Array<{ cid: CID; bytes: Buffer }> = [];
    for (const [length, durable] of [
      [MiB, false],
      [MiB + 16, true],
      [4096, false],
    ] as const) {
      const bytes = view!.subarray(0, length);
      randomFillSync(bytes);
      const cid = rawCid(bytes);
      await store.put(cid, bytes, { durable });
      expect(store.directIO, `${length} bytes`).toBe(false);
      // The descriptor a non-durable put keeps for its flush is an ordinary one.
      expect(await openFlags(blockPath(root, cid)), `${length} bytes`).toEqual(durable ? [] : [false]);
      stored.push({ cid, bytes: Buffer.from(bytes) });
    }
    await store.flush();
    const [slot] = allocateAligned(1, MiB + 16);
    for (const { cid, bytes } of stored) {
      expect(await store.getInto(cid, slot!)).toBe(bytes.length);
      expectSameBytes(slot!.subarray(0, bytes.length), bytes);
      expectSameBytes(await getVerified(store, cid), bytes);
    }
  });

  it('reads into aligned memory buffered once the direct open is refused, when reading comes first', async () => {
    const { cid, bytes } = block(MiB + 16); // ordinary memory: written buffered, nothing learnt
    await store.put(cid, bytes);
    expect(store.directIO).toBe(true);
    const [slot] = allocateAligned(1, MiB + 16);
    expect(await store.getInto(cid, slot!)).toBe(bytes.length);
    expect(store.directIO).toBe(false);
    expectSameBytes(slot!.subarray(0, bytes.length), bytes);
  });
});

describe('aligned memory', () => {
  it('hands out views on 4 KiB boundaries of shared memory, with their padding as room for direct reads', () => {
    const views = allocateAligned(3, 5000);
    expect(views.map((v) => [v.byteLength, v.byteOffset % 4096, isAligned(v)])).toEqual([
      [5000, 0, true],
      [5000, 0, true],
      [5000, 0, true],
    ]);
    expect(views[1]!.byteOffset - views[0]!.byteOffset).toBe(8192);
    expect(alignedRoom(views[1]!)?.byteLength).toBe(8192);
    expect(isAligned(views[0]!.subarray(16))).toBe(false);
    expect(alignedRoom(Buffer.alloc(8192))).toBeUndefined();
    expect(isAligned(Buffer.alloc(8192))).toBe(false);
  });

  it('copies exactly, into and out of shared memory, at any offset', () => {
    const [shared] = allocateAligned(1, 100_000);
    const plain = Buffer.alloc(100_000);
    const source = randomBytes(70_001);
    copyInto(shared!, source.subarray(1), 13);
    expectSameBytes(shared!.subarray(13, 13 + 70_000), source.subarray(1));
    copyInto(plain, shared!.subarray(13, 13 + 70_000), 7);
    expectSameBytes(plain.subarray(7, 7 + 70_000), source.subarray(1));
    expect(plain[6]).toBe(0);
    expect(plain[7 + 70_000]).toBe(0);
    copyInto(plain, new Uint8Array(0), 5); // nothing to copy is not an error
  });
});

describe('rawCid and cidMatches', () => {
  it.each([0, 1, 1000, MiB + 3])('rawCid of %i bytes equals multiformats’ own CID', async (size) => {
    const bytes = randomBytes(size);
    const expected = CID.create(1, raw.code, await sha256.digest(bytes));
    const actual = rawCid(bytes);
    expect(actual.equals(expected)).toBe(true);
    expect(actual.toString()).toBe(expected.toString());
  });

  it('checks sha2-256 regardless of codec, and sha2-512 and identity', async () => {
    const bytes = randomBytes(4096);
    const tampered = Uint8Array.from(bytes);
    tampered[100]! ^= 1;
    const cids = [
      rawCid(bytes),
      CID.createV1(0x71, rawCid(bytes).multihash),
      CID.createV1(0x71, await sha512.digest(bytes)),
      CID.createV1(raw.code, identity.digest(bytes)),
    ];
    for (const cid of cids) {
      expect(cidMatches(cid, bytes), cid.toString()).toBe(true);
      expect(cidMatches(cid, tampered), cid.toString()).toBe(false);
    }
  });

  it('refuses to judge a block whose hash it cannot compute', () => {
    const blake3 = CID.createV1(raw.code, Digest.create(0x1e, new Uint8Array(32)));
    let err: unknown;
    try {
      cidMatches(blake3, new Uint8Array(10));
    } catch (e) {
      err = e;
    }
    expect(isVaultError(err, 'INTERNAL')).toBe(true);
  });
});

async function all(cids: AsyncIterable<CID>): Promise<string[]> {
  const out: string[] = [];
  for await (const cid of cids) out.push(cid.toString());
  return out.sort();
}
