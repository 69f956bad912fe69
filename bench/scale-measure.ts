// Measuring for "scale on paper" (scale.ts): memory per chunk CID held, a stopped node's data
// directory (blocks by codec, DAG node sizes and links, catalog and key store), disk usage, and
// the per-unit figures the projection needs from such a footprint. Apart from scale.ts because
// this is the part that touches the filesystem and the heap; the projection is pure arithmetic.
import type { Stats } from 'node:fs';
import { lstat, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { rawCid } from '../storage/cid.ts';
import { DEFAULT_SCALE_DESIGN, type MeasuredScale, type ScaleDesign } from './scale-model.ts';

/**
 * Memory per chunk CID held in a list, measured here: `n` CIDs made the way ingest makes them
 * (storage/cid.ts), heap + external bytes before and after, with a forced GC around both.
 */
export function measureHeldCidBytes(n = 100_000): number {
  // gc() is only exposed with --expose-gc; the flag can be set at run time for a new context.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const block = Buffer.alloc(64);
  const used = (): number => {
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.external;
  };
  const before = used();
  const held: unknown[] = [];
  for (let i = 0; i < n; i++) {
    block.writeUInt32LE(i, 0);
    held.push(rawCid(block));
  }
  const after = used();
  if (held.length !== n) throw new Error('unreachable');
  return (after - before) / n;
}

export interface Footprint {
  rawBlocks: number;
  rawBytes: number;
  instanceNodes: Array<{ bytes: number; links: number }>;
  manifests: Array<{ bytes: number; links: number }>;
  /** Every block file, bytes (what `du --apparent-size` of blocks/ would say). */
  blockBytes: number;
  /** catalog.db plus its -wal and -shm. */
  catalogBytes: number;
  keysBytes: number;
}

/**
 * Walks a stopped (or idle) node's data directory: block files by codec (the fs store names each
 * file by its full base32 CID), DAG nodes decoded for their link counts, catalog and key store
 * sizes. Needs the fs backend.
 */
export async function measureFootprint(dataDir: string): Promise<Footprint> {
  const fp: Footprint = { rawBlocks: 0, rawBytes: 0, instanceNodes: [], manifests: [], blockBytes: 0, catalogBytes: 0, keysBytes: 0 };
  const blocks = join(dataDir, 'blocks');
  for (const shard of await readdir(blocks, { withFileTypes: true })) {
    if (!shard.isDirectory()) continue;
    for (const name of await readdir(join(blocks, shard.name))) {
      if (!name.endsWith('.data') || name.startsWith('.')) continue;
      let cid: CID;
      try {
        cid = CID.parse(name.slice(0, -'.data'.length));
      } catch {
        continue;
      }
      const file = join(blocks, shard.name, name);
      if (cid.code === dagCbor.code) {
        const bytes = await readFile(file);
        fp.blockBytes += bytes.length;
        // Format 1 lists chunks flat (`chunks`); format 2 (src/format/tree.ts) has the top `links` of
        // its chunk tree, and link nodes (`dicom-vault/links@1`) of its own, not counted as instance nodes.
        const node = dagCbor.decode(bytes) as { type?: unknown; chunks?: unknown[]; links?: unknown[]; added?: unknown[] };
        const chunkLinks = node.chunks ?? (node.type === 'dicom-vault/instance@2' ? node.links : undefined);
        if (Array.isArray(chunkLinks)) fp.instanceNodes.push({ bytes: bytes.length, links: chunkLinks.length });
        else if (Array.isArray(node.added)) fp.manifests.push({ bytes: bytes.length, links: node.added.length });
      } else {
        const { size } = await stat(file);
        fp.blockBytes += size;
        fp.rawBlocks++;
        fp.rawBytes += size;
      }
    }
  }
  for (const f of ['catalog.db', 'catalog.db-wal', 'catalog.db-shm']) fp.catalogBytes += await sizeOf(join(dataDir, f));
  for (const f of ['keys.db', 'keys.db-wal', 'keys.db-shm']) fp.keysBytes += await sizeOf(join(dataDir, f));
  return fp;
}

/**
 * Bytes a directory tree takes on disk (allocated blocks, as `du` counts them), every file and
 * directory in it; 0 when it does not exist. What an administrator buys disks for.
 */
export async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  const walk = async (path: string): Promise<void> => {
    let st: Stats;
    try {
      st = await lstat(path);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return; // removed while walking, or never there
      throw err;
    }
    total += st.blocks * 512; // st_blocks is in 512-byte units whatever the filesystem's block size
    if (st.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
  };
  await walk(dir);
  return total;
}

/**
 * keys.db bytes per study when too few studies were stored to measure it (SQLite grows by 4 KiB
 * pages): study UID ~64 B, key id 36, wrapped key 60 (key, IV, tag), date 24, row header, and the
 * two unique indexes repeating UID and key id.
 */
export const ESTIMATED_KEY_ROW_BYTES = 320;
/** Below this many studies a keys.db is mostly empty pages. */
const MIN_STUDIES_TO_MEASURE_KEYS = 200;

/**
 * The per-unit figures projectScale needs from one footprint: `bytes` of DICOM in `instances`
 * instances of `studies` studies. For multi-frame data, pass `frames` and the per-instance
 * catalog figure of a small-instance run as `catalogBytesPerInstance`: the rest is per frame.
 */
export function footprintFigures(
  fp: Footprint,
  ingested: { bytes: number; instances: number; studies: number; frames?: number; catalogBytesPerInstance?: number },
  design: Pick<ScaleDesign, 'linkBytes'> = DEFAULT_SCALE_DESIGN,
): Pick<
  MeasuredScale,
  | 'bytesStoredPerByte'
  | 'catalogBytesPerInstance'
  | 'catalogBytesPerFrame'
  | 'manifestFixedBytes'
  | 'instanceNodeFixedBytes'
  | 'instanceNodeBytesPerChunk'
  | 'keyStoreBytesPerStudy'
> {
  const fixed = (nodes: Footprint['manifests'], perLink: number): number => median(nodes.map((n) => n.bytes - n.links * perLink));
  const perChunk = perLinkFit(fp.instanceNodes) ?? design.linkBytes;
  const base = ingested.catalogBytesPerInstance;
  const perFrame =
    ingested.frames !== undefined && ingested.frames > 0 && base !== undefined
      ? Math.max(0, (fp.catalogBytes - ingested.instances * base) / ingested.frames)
      : undefined;
  return {
    bytesStoredPerByte: fp.blockBytes / ingested.bytes,
    catalogBytesPerInstance: base ?? fp.catalogBytes / ingested.instances,
    ...(perFrame !== undefined ? { catalogBytesPerFrame: perFrame } : {}),
    manifestFixedBytes: fixed(fp.manifests, design.linkBytes),
    instanceNodeFixedBytes: fixed(fp.instanceNodes, perChunk),
    instanceNodeBytesPerChunk: perChunk,
    keyStoreBytesPerStudy: ingested.studies >= MIN_STUDIES_TO_MEASURE_KEYS ? fp.keysBytes / ingested.studies : ESTIMATED_KEY_ROW_BYTES,
  };
}

/** Bytes per link from nodes of different link counts (slope between the extremes); undefined if all alike. */
function perLinkFit(nodes: Footprint['instanceNodes']): number | undefined {
  if (nodes.length < 2) return undefined;
  const sorted = [...nodes].sort((x, y) => x.links - y.links);
  const lo = sorted[0]!;
  const hi = sorted[sorted.length - 1]!;
  if (hi.links - lo.links < 16) return undefined; // too close: envelope size noise would dominate
  return (hi.bytes - lo.bytes) / (hi.links - lo.links);
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
