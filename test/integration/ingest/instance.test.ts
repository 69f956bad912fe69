// Where ingest's chunk blocks are written from: the crypto pool's aligned shared slots, which the
// file store writes with O_DIRECT (src/core/aligned-memory.ts, storage/fs.ts).
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CID } from 'multiformats/cid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { ingestInstance, keysOncePerStudy } from '../../../ingest/instance.ts';
import { KeyStore } from '../../../src/format/keys.ts';
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
