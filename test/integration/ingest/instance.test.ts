// Where ingest's chunk blocks are written from: the crypto pool's aligned shared slots, which the
// file store writes with O_DIRECT (src/core/aligned-memory.ts, storage/fs.ts).
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CID } from 'multiformats/cid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { discardInstances, ingestInstance, keysOncePerStudy } from '../../../ingest/instance.ts';
import { KeyStore } from '../../../src/format/keys.ts';
import { VaultError } from '../../../src/core/errors.ts';
import { isAligned } from '../../../src/core/aligned-memory.ts';
import { cidMatches } from '../../../storage/cid.ts';
import { FsBlockStore } from '../../../storage/fs.ts';

let dir: string;
let store: FsBlockStore;
let keys: KeyStore;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dv-ingest-'));
  store = await FsBlockStore.open({ path: join(dir, 'blocks') });
  keys = KeyStore.open({ path: join(dir, 'keys.db'), masterKey: randomBytes(32) });
});

afterAll(async () => {
  keys?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('ingestInstance', () => {
  it('puts every chunk block from aligned memory, each the bytes its CID names', async () => {
    const puts: Array<{ cid: CID; aligned: boolean; matches: boolean }> = [];
    const recording = {
      put: (cid: CID, bytes: Uint8Array, options?: { durable?: boolean }) => {
        puts.push({ cid, aligned: isAligned(bytes), matches: cidMatches(cid, bytes) });
        return store.put(cid, bytes, options);
      },
      delete: store.delete.bind(store),
      get: store.get.bind(store),
      flush: store.flush.bind(store),
    };
    const [generated] = planStudy({ kind: 'single', instances: 1, rows: 512, columns: 600, seed: 3 }).instances;
    const ingested = await ingestInstance(generated!.open(), { store: recording, keys }, { chunkSize: 256 * 1024 });
    await ingested.durable;
    const chunks = puts.filter((p) => !p.cid.equals(ingested.node.cid));
    expect(chunks.length).toBe(Math.ceil(ingested.size / (256 * 1024)));
    expect(chunks.map((p) => [p.aligned, p.matches])).toEqual(chunks.map(() => [true, true]));
    expect(puts.find((p) => p.cid.equals(ingested.node.cid))?.matches).toBe(true);
  });
});

describe('keysOncePerStudy', () => {
  it("asks the key store once per study, and hands back that study's key after", () => {
    const asked: string[] = [];
    const memo = keysOncePerStudy({
      getOrCreate: (uid: string) => {
        asked.push(uid);
        return keys.getOrCreate(uid);
      },
    });
    const a = memo.getOrCreate('1.2.3');
    expect(memo.getOrCreate('1.2.3')).toBe(a);
    const b = memo.getOrCreate('1.2.4');
    expect(b.keyId).not.toBe(a.keyId);
    expect(memo.getOrCreate('1.2.4')).toBe(b);
    expect(asked).toEqual(['1.2.3', '1.2.4']);
    expect(a.key.equals(keys.require('1.2.3').key)).toBe(true);
  });
});

describe('ingestInstance with a chunk tree (format 2)', () => {
  const listed = async (s: FsBlockStore): Promise<string[]> => {
    const out: string[] = [];
    for await (const cid of s.list()) out.push(cid.toString());
    return out;
  };

  it('leaves nothing behind when the stream fails after link nodes were written, nor after an instance is discarded', async () => {
    const own = await FsBlockStore.open({ path: join(dir, 'tree-blocks') });
    const [generated] = planStudy({ kind: 'single', instances: 1, rows: 256, columns: 256, seed: 4 }).instances;
    // 128 KiB of pixels at 1 KiB chunks and fanout 4: link nodes on 3 levels by the time it breaks.
    let sent = 0;
    async function* breaking(): AsyncGenerator<Uint8Array> {
      for await (const piece of generated!.open()) {
        for (let at = 0; at < piece.length; at += 4096) {
          sent += Math.min(4096, piece.length - at);
          if (sent > 100 * 1024) throw new Error('client gone');
          yield piece.subarray(at, at + 4096);
        }
      }
    }
    const puts: string[] = [];
    // No `get`: clean-up must never read back what it wrote (the store may be what failed).
    const recording = {
      delete: own.delete.bind(own),
      flush: own.flush.bind(own),
      put: (cid: CID, b: Uint8Array, o?: { durable?: boolean }) => {
        puts.push(cid.toString());
        return own.put(cid, b, o);
      },
    };
    await expect(ingestInstance(breaking(), { store: recording, keys }, { chunkSize: 1024, fanout: 4 })).rejects.toThrow('client gone');
    expect(puts.filter((c) => c.startsWith('bafyrei')).length).toBeGreaterThan(5); // link nodes were written
    expect(await listed(own)).toEqual([]);

    const whole = await ingestInstance(generated!.open(), { store: own, keys }, { chunkSize: 1024, fanout: 4 });
    await whole.durable;
    expect(whole.depth).toBe(3);
    expect((await listed(own)).length).toBeGreaterThan(Math.ceil(whole.size / 1024));
    expect(whole.written.count).toBe((await listed(own)).length);
    await discardInstances({ delete: own.delete.bind(own) }, [whole]);
    expect(await listed(own)).toEqual([]);
  });

  it('leaves nothing behind when the store fails mid-way and cannot be read, once it is back', async () => {
    const own = await FsBlockStore.open({ path: join(dir, 'outage-blocks') });
    const [generated] = planStudy({ kind: 'single', instances: 1, rows: 256, columns: 256, seed: 5 }).instances;
    // The disk fills after 60 blocks (chunks and link nodes of 3 levels by then), and while it
    // is full nothing can be read either: the failure a discard that reads link nodes back
    // could not clean up after.
    let puts = 0;
    let down = false;
    const failing = {
      get: (): Promise<Uint8Array> => Promise.reject(new VaultError('STORE_UNAVAILABLE', 'the store is down')),
      delete: own.delete.bind(own),
      flush: own.flush.bind(own),
      put: (cid: CID, b: Uint8Array, o?: { durable?: boolean }) => {
        if (down || ++puts > 60) {
          down = true;
          return Promise.reject(new VaultError('STORE_UNAVAILABLE', 'no space left on device'));
        }
        return own.put(cid, b, o);
      },
    };
    await expect(ingestInstance(generated!.open(), { store: failing, keys }, { chunkSize: 1024, fanout: 4 })).rejects.toThrow('no space left');
    expect(down).toBe(true);
    down = false;
    expect(await listed(own)).toEqual([]);
  });
});
