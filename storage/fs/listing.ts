// Walking the fs block store's shard directories: every block (list, which gc reads) and the temp
// files of puts a killed process left behind (removeStaleTemps, which gc calls).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CID } from 'multiformats/cid';
import { VaultError } from '../../src/core/errors.ts';
import { throwIfAborted } from '../../src/core/abort.ts';
import { errnoCode, readdirQuietly } from './io.ts';
import { parseBlockName } from './layout.ts';

/** Every block whose file is where `get` looks for it; temp and foreign files are skipped. */
export async function* listBlocks(root: string, shardPrefixLength: number, signal: AbortSignal | undefined): AsyncGenerator<CID> {
  for (const shard of await shardNames(root, shardPrefixLength, signal)) {
    throwIfAborted(signal);
    for (const name of await readdirQuietly(path.join(root, shard))) {
      const cid = parseBlockName(shard, name, shardPrefixLength);
      if (cid !== undefined) yield cid;
    }
  }
}

/**
 * Deletes the temp files of puts that never finished (a process killed mid-write) last
 * written before `cutoffMs`; returns how many. A put still writing keeps its file young.
 */
export async function removeStaleTemps(root: string, shardPrefixLength: number, cutoffMs: number, signal: AbortSignal | undefined): Promise<number> {
  let removed = 0;
  for (const shard of await shardNames(root, shardPrefixLength, signal)) {
    const dir = path.join(root, shard);
    for (const name of await readdirQuietly(dir)) {
      if (!name.startsWith('.') || !name.endsWith('.tmp')) continue;
      throwIfAborted(signal);
      const file = path.join(dir, name);
      try {
        if ((await fs.stat(file)).mtimeMs >= cutoffMs) continue;
        await fs.unlink(file);
        removed++;
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw new VaultError('STORE_UNAVAILABLE', `cannot remove ${file}: ${errnoCode(err)}`, { cause: err });
      }
    }
  }
  return removed;
}

/** The shard directories' names. */
async function shardNames(root: string, shardPrefixLength: number, signal: AbortSignal | undefined): Promise<string[]> {
  throwIfAborted(signal);
  try {
    const entries = await fs.readdir(root, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory() && e.name.length === shardPrefixLength).map((e) => e.name);
  } catch (err) {
    throw new VaultError('STORE_UNAVAILABLE', `cannot list block store: ${errnoCode(err)}`, { cause: err });
  }
}
