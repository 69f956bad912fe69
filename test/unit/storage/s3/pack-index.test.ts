// The S3 store's pack index (storage/s3/pack-index.ts) on its own: landing a pack twice, as a
// rebuild and the pack's writer may (S3BlockStore.rebuildIndex runs beside a serving node), a
// pack whose blocks are all indexed elsewhere, and the touch times gc reads (and their migration).
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rawCid } from '../../../../storage/cid.ts';
import { PackIndex, type LandedBlock } from '../../../../storage/s3/pack-index.ts';

let dir: string;
let index: PackIndex;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dicom-vault-pack-index-'));
  index = PackIndex.open(join(dir, 's3-index.db'));
});

afterEach(async () => {
  index.close();
  await rm(dir, { recursive: true, force: true });
});

function blocks(n: number): LandedBlock[] {
  return Array.from({ length: n }, (_, i) => ({ cid: rawCid(randomBytes(64)), start: 100 + i * 64, size: 64 }));
}

describe('PackIndex.land', () => {
  it('counts a pack landed a second time (a rebuild got there first) instead of refusing it', () => {
    const landed = blocks(3);
    expect(index.land('p-1', 400, landed)).toBe(3);
    // The writer's own landing, after a rebuild read the pack's header: its blocks are kept.
    expect(index.land('p-1', 400, landed)).toBe(3);
    expect(index.hasPack('p-1')).toBe(true);
    for (const b of landed) expect(index.lookup(b.cid)).toMatchObject({ pack: 'p-1', start: b.start, size: b.size });
    // Its live count is the blocks pointing into it: deleting them all marks it dead.
    for (const b of landed) index.remove(b.cid);
    expect(index.deadPacks()).toEqual(['p-1']);
  });

  it('counts only the blocks a second landing still names, when one was deleted in between', () => {
    const landed = blocks(2);
    index.land('p-2', 300, landed);
    index.remove(landed[0]!.cid);
    expect(index.land('p-2', 300, landed.slice(1))).toBe(1);
    expect(index.lookup(landed[0]!.cid)).toBeUndefined();
  });

  it('keeps no row for a pack whose every block is indexed in another pack', () => {
    const landed = blocks(2);
    expect(index.land('p-a', 300, landed)).toBe(2);
    expect(
      index.land(
        'p-b',
        300,
        landed.map((b) => ({ ...b, start: b.start + 1 })),
      ),
    ).toBe(0);
    expect(index.hasPack('p-b')).toBe(false);
    expect(index.lookup(landed[0]!.cid)).toMatchObject({ pack: 'p-a' });
  });
});

describe('PackIndex.touch', () => {
  it('gives a block put again a new time, only when its own is over a minute old', () => {
    const [b] = blocks(1);
    const now = Date.now();
    index.land('p-t', 200, [b!], now - 2 * 24 * 3600 * 1000);
    expect(index.written(b!.cid)).toEqual({ size: 64, writtenMs: now - 2 * 24 * 3600 * 1000 });
    expect(index.touch(b!.cid, now)).toBe(true);
    expect(index.written(b!.cid)?.writtenMs).toBe(now);
    expect(index.touch(b!.cid, now + 30_000)).toBe(true);
    expect(index.written(b!.cid)?.writtenMs).toBe(now); // within the minute: no write
    expect(index.touch(rawCid(randomBytes(8)), now)).toBe(false);
  });

  it('comes to an index written before blocks had a touch time (schema 1) when it is opened', () => {
    const [b] = blocks(1);
    index.land('p-old', 200, [b!], 1_000);
    index.close();
    const path = join(dir, 's3-index.db');
    const db = new DatabaseSync(path);
    db.exec('ALTER TABLE blocks DROP COLUMN touched; PRAGMA user_version = 1');
    db.close();
    index = PackIndex.open(path);
    expect(index.written(b!.cid)).toEqual({ size: 64, writtenMs: 1_000 });
    expect(index.touch(b!.cid, 5_000_000)).toBe(true);
    expect(index.written(b!.cid)?.writtenMs).toBe(5_000_000);
  });
});

describe('PackIndex compaction', () => {
  it('lists packs at most the given fraction live, and moves only the blocks still in the old pack', () => {
    const landed = blocks(4); // 4 x 64 bytes in a pack of 400
    index.land('p-old', 400, landed, 7_000);
    expect(index.sparsePacks(0.5)).toEqual([]);
    index.remove(landed[0]!.cid);
    index.remove(landed[1]!.cid);
    expect(index.sparsePacks(0.5)).toEqual([{ id: 'p-old', bytes: 400, created: 7_000, liveBytes: 128 }]);

    // Compaction copied blocks 1-3; block 1 was deleted before, block 2 while it ran.
    index.remove(landed[2]!.cid);
    const copied = landed.slice(1).map((b, i) => ({ ...b, start: 50 + i * 64 }));
    expect(index.repoint('p-old', 'p-new', 100, 7_000, copied)).toEqual({ moved: 1, fromLive: 0 });
    expect(index.lookup(landed[3]!.cid)).toMatchObject({ pack: 'p-new', start: 50 + 2 * 64 });
    expect(index.lookup(landed[1]!.cid)).toBeUndefined();
    expect(index.lookup(landed[2]!.cid)).toBeUndefined();
    expect(index.deadPacks()).toEqual(['p-old']);
    expect(index.written(landed[3]!.cid)?.writtenMs).toBe(7_000); // the old pack's time, for gc
    expect(index.sparsePacks(0.5)).toEqual([]);
  });

  it('keeps no row for the new pack when every block was deleted meanwhile', () => {
    const landed = blocks(2);
    index.land('p-x', 300, landed);
    for (const b of landed) index.remove(b.cid);
    expect(index.repoint('p-x', 'p-y', 200, 1, landed)).toEqual({ moved: 0, fromLive: 0 });
    expect(index.hasPack('p-y')).toBe(false);
  });
});
