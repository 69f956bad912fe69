import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ScratchSpace } from '../scratch.ts';

const root = await mkdtemp(join(tmpdir(), 'dv-scratch-'));
afterAll(() => rm(root, { recursive: true, force: true }));

describe("ScratchSpace (the benchmark's cleanup)", () => {
  it("empties a finished scenario's files at once, keeping them (and their inodes) until removeAll", async () => {
    const dir = join(root, 'scenario');
    await mkdir(join(dir, 'blocks', 'ab'), { recursive: true });
    const files = [join(dir, 'catalog.db'), join(dir, 'blocks', 'ab', 'x.data')];
    for (const f of files) await writeFile(f, Buffer.alloc(100_000, 1));
    const inodes = await Promise.all(files.map(async (f) => (await stat(f)).ino));

    const scratch = new ScratchSpace();
    await scratch.release(dir);
    await scratch.release(join(root, 'never-created'));
    for (const [i, f] of files.entries()) {
      const s = await stat(f);
      expect(s.size).toBe(0);
      expect(s.ino).toBe(inodes[i]);
    }
    await scratch.removeAll();
    expect(await readdir(root)).toEqual([]);
  });
});
