// The fs block store's directory layout: one file per block, `<root>/<shard>/<base32 CID>.data`,
// in shard directories named by the characters before the name's last one (go-ds-flatfs
// "next-to-last"), and the SHARDING file that records the shard length, read and written at open.
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { base32 } from 'multiformats/bases/base32';
import { CID } from 'multiformats/cid';
import { VaultError } from '../../src/core/errors.ts';
import { errnoCode, forEachLimit, fsyncDir, isIntegerIn } from './io.ts';

/** Characters of a block's name that pick its shard directory: 2 gives 32² = 1024 directories. */
export const DEFAULT_SHARD_PREFIX_LENGTH = 2;
export const MAX_SHARD_PREFIX_LENGTH = 4;

export const EXTENSION = '.data';
const LAYOUT_FILE = 'SHARDING';
const LAYOUT_PREFIX = 'dicom-vault/fs-block-store/v1/next-to-last/';

/**
 * Where a block's file is: its shard directory and its path. `root` ends in a separator (joined by
 * hand: path.join normalizes every time, and this is on every put and get).
 */
export function blockLocation(root: string, shardPrefixLength: number, cid: CID): { dir: string; file: string } {
  // Full CID, not just the multihash as blockstore-fs does, so list() returns each block's
  // codec. Shard = the characters before the last one: in base32 the last character of a
  // sha2-256 CIDv1 carries only 3 bits (blockstore-fs's choice gives 256 dirs, not 1024).
  const name = base32.encode(cid.bytes);
  const dir = root + name.slice(-1 - shardPrefixLength, -1);
  return { dir, file: dir + path.sep + name + EXTENSION };
}

/** The block a file in shard directory `shard` holds, if it is a block's file and in its right shard. */
export function parseBlockName(shard: string, fileName: string, shardPrefixLength: number): CID | undefined {
  if (!fileName.endsWith(EXTENSION) || fileName.startsWith('.')) return undefined;
  let cid: CID;
  try {
    cid = CID.decode(base32.decode(fileName.slice(0, -EXTENSION.length)));
  } catch {
    return undefined;
  }
  return base32.encode(cid.bytes).slice(-1 - shardPrefixLength, -1) === shard ? cid : undefined;
}

/**
 * Shard directories made up front for a new store with at most this many (prefix length 2:
 * 1,024, 4 MiB of directory blocks on ext4). Made on demand instead, the first few thousand puts
 * of a new store each created one and fsynced the root: 1,000 small instances into a new store
 * spent a tenth of the node's main thread there.
 */
export const MAX_PRECREATED_SHARDS = 1024;

const BASE32_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/** Makes every shard directory of a new store (when there are few enough), then fsyncs the root once. */
export async function createShardDirs(root: string, shardPrefixLength: number): Promise<void> {
  if (BASE32_ALPHABET.length ** shardPrefixLength > MAX_PRECREATED_SHARDS) return;
  let names = [''];
  for (let i = 0; i < shardPrefixLength; i++) names = names.flatMap((n) => [...BASE32_ALPHABET].map((c) => n + c));
  await forEachLimit(names, 32, async (name) => {
    await fs.mkdir(path.join(root, name)).catch((err: unknown) => {
      if (errnoCode(err) !== 'EEXIST') throw err;
    });
  }).then((failed) => {
    if (failed !== undefined) throw failed;
  });
  await fsyncDir(root);
}

export async function readLayout(root: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path.join(root, LAYOUT_FILE), 'utf8');
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
    // A non-empty directory without the marker is something else (a mistyped path): refuse to
    // scatter blocks into it.
    // Ignored: a fresh filesystem's lost+found, and our own marker's temp file from a crash.
    const entries = (await fs.readdir(root)).filter((name) => name !== 'lost+found' && !name.startsWith(`.${LAYOUT_FILE}.`));
    if (entries.length > 0) {
      throw new VaultError('CONFIG_INVALID', `${root} is not empty and not a block store (no ${LAYOUT_FILE} file)`);
    }
    return undefined;
  }
  const length = Number(text.trim().slice(LAYOUT_PREFIX.length));
  if (!text.startsWith(LAYOUT_PREFIX) || !isIntegerIn(length, 1, MAX_SHARD_PREFIX_LENGTH)) {
    throw new VaultError('CONFIG_INVALID', `${path.join(root, LAYOUT_FILE)} names an unknown layout: ${JSON.stringify(text.trim())}`);
  }
  return length;
}

export async function writeLayout(root: string, shardPrefixLength: number): Promise<void> {
  const tmp = path.join(root, `.${LAYOUT_FILE}.${randomUUID()}.tmp`);
  const handle = await fs.open(tmp, 'wx');
  try {
    await handle.writeFile(`${LAYOUT_PREFIX}${shardPrefixLength}\n`);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, path.join(root, LAYOUT_FILE));
  await fsyncDir(root);
}
