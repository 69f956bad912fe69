// Where the fs store keeps a block (storage/fs.ts: one file per block at
// <blocks dir>/<next-to-last two characters of its base32 CID>/<base32 CID>.data), for tests that
// alter, delete or count stored blocks as an attacker or a failing disk would.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { CID } from 'multiformats/cid';

export function blockFileOf(blocksDir: string, cid: CID | string): string {
  const name = cid.toString();
  return join(blocksDir, name.slice(-3, -1), `${name}.data`);
}

/** Every block file under `blocksDir`, sorted. */
export async function allBlockFiles(blocksDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const shard of await readdir(blocksDir, { withFileTypes: true })) {
    if (!shard.isDirectory()) continue;
    for (const f of await readdir(join(blocksDir, shard.name))) if (f.endsWith('.data')) out.push(join(blocksDir, shard.name, f));
  }
  return out.sort();
}
