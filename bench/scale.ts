// "Scale on paper": how blocks, DAG nodes, catalog, key store, memory and ingest time grow from a
// 1 GiB study to a 1 TiB one and to a petabyte archive, from figures measured in the benchmark
// run (bytes stored per byte, catalog bytes per instance and per frame, node sizes, peak RSS at
// two study sizes, ingest MB/s) and from the design (1 MiB chunks, flat lists of 41-byte links).
// It says where the design must change: an InstanceNode of a huge instance outgrows one IPFS
// block, a version adding a million instances makes a manifest of the same size, and so on.
import type { Stats } from 'node:fs';
import { lstat, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { rawCid } from '../storage/cid.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
/** 10^15 bytes, as disks are sold. */
export const PETABYTE = 1e15;

/** A CIDv1 with a sha2-256 multihash: version, codec, hash code, length, 32 bytes. */
export const CID_BYTES = 36;
/** The same CID as a dag-cbor link: tag 42 (2 bytes), byte-string header (2), 0x00 prefix (1). */
export const DAG_CBOR_LINK_BYTES = CID_BYTES + 5;
/**
 * Largest DAG node to plan for: Kubo refuses blocks over 2 MiB and Helia's Bitswap messages are
 * at most 2 MiB by default, so 1 MiB leaves room (and matches the chunk size).
 */
export const DEFAULT_MAX_NODE_BYTES = 1 * MiB;
/**
 * JS memory per chunk CID while ingest builds (or retrieval decodes) an instance's flat chunk
 * list: a multiformats CID object with its digest views, ~950 B on Node 24 (measureHeldCidBytes).
 */
export const DEFAULT_HELD_BYTES_PER_CHUNK = 950;

export interface ScaleDesign {
  /** Plaintext bytes per chunk (one block each). Default 1 MiB. */
  chunkBytes: number;
  /** dag-cbor bytes per link in an InstanceNode or manifest. Default 41. */
  linkBytes: number;
  /** Default DEFAULT_MAX_NODE_BYTES. */
  maxNodeBytes: number;
  /** Huge instances per study in the "few huge instances" shape. Default 4 (the bench's). */
  hugeInstancesPerStudy: number;
  /** Bytes of one small instance (512x512x16-bit MR: 525 KB). */
  smallInstanceBytes: number;
  /** Instances per STOW request, i.e. per study version, in the small shape. Default 100. */
  instancesPerVersion: number;
  /** Frame bytes of a multi-frame instance (512x512x16 bit). */
  frameBytes: number;
  /** fs store shard directories (2 base32 characters: 1024). */
  shardDirs: number;
  /** Average study size in the archive row. Default 1 GiB. */
  archiveStudyBytes: number;
  /** Default 10^15 bytes. */
  archiveBytes: number;
}

export const DEFAULT_SCALE_DESIGN: ScaleDesign = {
  chunkBytes: MiB,
  linkBytes: DAG_CBOR_LINK_BYTES,
  maxNodeBytes: DEFAULT_MAX_NODE_BYTES,
  hugeInstancesPerStudy: 4,
  smallInstanceBytes: 512 * 512 * 2 + 1090,
  instancesPerVersion: 100,
  frameBytes: 512 * 512 * 2,
  shardDirs: 1024,
  archiveStudyBytes: GiB,
  archiveBytes: PETABYTE,
};

export interface MeasuredScale {
  /** Block store bytes on disk per byte of DICOM ingested (tags, nodes; e.g. 1.0001). */
  bytesStoredPerByte: number;
  /** catalog.db bytes per small instance (row, indexes, DICOM JSON metadata). */
  catalogBytesPerInstance: number;
  /** Extra catalog bytes per frame of a multi-frame instance (per-frame metadata, frame layout). Default 0. */
  catalogBytesPerFrame?: number;
  /** StudyManifest bytes besides its `added` links. */
  manifestFixedBytes: number;
  /** InstanceNode bytes besides its chunk links. */
  instanceNodeFixedBytes: number;
  /** Bytes per chunk link in an InstanceNode, measured (design: 41). */
  instanceNodeBytesPerChunk: number;
  /** keys.db bytes per study. */
  keyStoreBytesPerStudy: number;
  /** Peak RSS of the node while ingesting studies of two or more sizes. */
  peakRss: Array<{ studyBytes: number; MiB: number }>;
  /** Ingest rate of huge instances, MB/s (10^6). */
  ingestMBps: number;
  /** Memory per chunk CID held in an instance's chunk list (measureHeldCidBytes); default DEFAULT_HELD_BYTES_PER_CHUNK. */
  heldBytesPerChunk?: number;
}

export interface StudyProjection {
  label: string;
  studyBytes: number;
  /** 1 MiB chunks (raw blocks) in the few-huge-instances shape. */
  chunks: number;
  /** All blocks, few huge instances: chunks + instance nodes + one manifest. */
  blocksHuge: number;
  /** All blocks, small instances: each a chunk or two + its node, plus one manifest per version. */
  blocksSmall: number;
  storedBytes: number;
  /** Few huge instances: each instance's size, its InstanceNode's links and bytes. */
  hugeInstanceBytes: number;
  hugeNodeLinks: number;
  hugeNodeBytes: number;
  /** The whole study as one instance (a whole-slide level, a 4D series in one object). */
  singleInstanceNodeBytes: number;
  /** Levels of link nodes a tree would need for the single-instance case (1 = the flat list fits). */
  singleInstanceTreeLevels: number;
  /** Largest instance whose flat InstanceNode fits maxNodeBytes. */
  maxFlatInstanceBytes: number;
  /** Many small instances. */
  smallInstances: number;
  smallVersions: number;
  manifestBytesPerVersion: number;
  /** Whole study in one version (one STOW request, or one folder import). */
  manifestBytesOneVersion: number;
  catalogBytesSmall: number;
  catalogBytesHuge: number;
  /** Metadata+layout bytes in one catalog row of one huge instance. */
  catalogRowBytesHuge: number;
  /** Memory of one instance's chunk CID list (few huge / whole study as one instance), MiB. */
  chunkListMiBHuge: number;
  chunkListMiBSingle: number;
  /** The measured (flat or fitted) peak plus the chunk list of one huge instance. */
  peakRssMiB: number;
  rssGrowthMiBPerGiB: number;
  ingestSeconds: number;
  keyStoreBytes: number;
  /** Files per fs shard directory (the larger shape). */
  filesPerShardDir: number;
}

export interface ArchiveProjection {
  archiveBytes: number;
  studies: number;
  /** All of it in few huge instances / all in small instances. */
  blocksHuge: number;
  blocksSmall: number;
  storedBytes: number;
  filesPerShardDir: number;
  smallInstances: number;
  catalogBytes: number;
  keyStoreBytes: number;
  /** One node ingesting at the measured rate, seconds. */
  ingestSeconds: number;
  peakRssMiB: number;
}

export interface ScaleProjection {
  design: ScaleDesign;
  measured: MeasuredScale;
  studies: StudyProjection[];
  archive: ArchiveProjection;
  /** Where the design must change, one sentence each. */
  findings: string[];
}

export const DEFAULT_STUDY_SIZES: ReadonlyArray<{ label: string; bytes: number }> = [
  { label: '1 GiB', bytes: GiB },
  { label: '16 GiB', bytes: 16 * GiB },
  { label: '1 TiB', bytes: TiB },
];

export function projectScale(
  measured: MeasuredScale,
  design: Partial<ScaleDesign> = {},
  sizes: ReadonlyArray<{ label: string; bytes: number }> = DEFAULT_STUDY_SIZES,
): ScaleProjection {
  const d: ScaleDesign = { ...DEFAULT_SCALE_DESIGN, ...design };
  const perChunk = measured.instanceNodeBytesPerChunk;
  const rss = rssModel(measured.peakRss);
  // Children a link node can hold within maxNodeBytes.
  const fanout = Math.floor((d.maxNodeBytes - measured.instanceNodeFixedBytes) / perChunk);
  const maxFlatInstanceBytes = fanout * d.chunkBytes;

  const studies = sizes.map(({ label, bytes }): StudyProjection => {
    const hugeInstanceBytes = bytes / d.hugeInstancesPerStudy;
    const hugeNodeLinks = Math.ceil(hugeInstanceBytes / d.chunkBytes);
    const chunks = d.hugeInstancesPerStudy * hugeNodeLinks;
    const singleLinks = Math.ceil(bytes / d.chunkBytes);
    const smallInstances = Math.ceil(bytes / d.smallInstanceBytes);
    const smallVersions = Math.ceil(smallInstances / d.instancesPerVersion);
    const framesPerHuge = Math.ceil(hugeInstanceBytes / d.frameBytes);
    const catalogRowBytesHuge = measured.catalogBytesPerInstance + framesPerHuge * (measured.catalogBytesPerFrame ?? 0);
    const blocksHuge = chunks + d.hugeInstancesPerStudy + 1;
    const blocksSmall = smallBlocks(smallInstances, d);
    const held = measured.heldBytesPerChunk ?? DEFAULT_HELD_BYTES_PER_CHUNK;
    const chunkListMiBHuge = (hugeNodeLinks * held) / MiB;
    return {
      label,
      studyBytes: bytes,
      chunks,
      blocksHuge,
      blocksSmall,
      storedBytes: bytes * measured.bytesStoredPerByte,
      hugeInstanceBytes,
      hugeNodeLinks,
      hugeNodeBytes: measured.instanceNodeFixedBytes + hugeNodeLinks * perChunk,
      singleInstanceNodeBytes: measured.instanceNodeFixedBytes + singleLinks * perChunk,
      singleInstanceTreeLevels: treeLevels(singleLinks, fanout),
      maxFlatInstanceBytes,
      smallInstances,
      smallVersions,
      manifestBytesPerVersion: measured.manifestFixedBytes + Math.min(d.instancesPerVersion, smallInstances) * d.linkBytes,
      manifestBytesOneVersion: measured.manifestFixedBytes + smallInstances * d.linkBytes,
      catalogBytesSmall: smallInstances * measured.catalogBytesPerInstance,
      catalogBytesHuge: d.hugeInstancesPerStudy * catalogRowBytesHuge,
      catalogRowBytesHuge,
      chunkListMiBHuge,
      chunkListMiBSingle: (singleLinks * held) / MiB,
      // The measured peaks already include the chunk lists of the measured sizes (a few MiB).
      peakRssMiB: rss.at(bytes) + chunkListMiBHuge,
      rssGrowthMiBPerGiB: rss.slopePerGiB,
      ingestSeconds: bytes / (measured.ingestMBps * 1e6),
      keyStoreBytes: measured.keyStoreBytesPerStudy,
      filesPerShardDir: Math.max(blocksHuge, blocksSmall) / d.shardDirs,
    };
  });

  const studiesInArchive = Math.ceil(d.archiveBytes / d.archiveStudyBytes);
  const archiveSmall = Math.ceil(d.archiveBytes / d.smallInstanceBytes);
  const archiveHugeInstances = studiesInArchive * d.hugeInstancesPerStudy;
  const archiveBlocksHuge = Math.ceil(d.archiveBytes / d.chunkBytes) + archiveHugeInstances + studiesInArchive;
  const archiveBlocksSmall = smallBlocks(archiveSmall, d);
  const archive: ArchiveProjection = {
    archiveBytes: d.archiveBytes,
    studies: studiesInArchive,
    blocksHuge: archiveBlocksHuge,
    blocksSmall: archiveBlocksSmall,
    storedBytes: d.archiveBytes * measured.bytesStoredPerByte,
    filesPerShardDir: Math.max(archiveBlocksHuge, archiveBlocksSmall) / d.shardDirs,
    smallInstances: archiveSmall,
    catalogBytes: archiveSmall * measured.catalogBytesPerInstance,
    keyStoreBytes: studiesInArchive * measured.keyStoreBytesPerStudy,
    ingestSeconds: d.archiveBytes / (measured.ingestMBps * 1e6),
    peakRssMiB: rss.at(d.archiveStudyBytes),
  };

  return { design: d, measured, studies, archive, findings: findings(d, measured, studies, archive, fanout, rss) };
}

/** Blocks of `n` small instances: their chunks, one node each, one manifest per version. */
function smallBlocks(n: number, d: ScaleDesign): number {
  return n * Math.ceil(d.smallInstanceBytes / d.chunkBytes) + n + Math.ceil(n / d.instancesPerVersion);
}

/** Peaks of one process differ this much between identical runs (GC timing, sampling interval). */
export const RSS_NOISE_MIB = 32;

interface RssModel {
  at(studyBytes: number): number;
  slopePerGiB: number;
  flat: boolean;
}

/**
 * Least squares line through the measured peaks. "Flat" when the peaks differ by less than the
 * sampling noise (10% of the lowest, at least RSS_NOISE_MIB): then the projection is the highest
 * peak seen, and `slopePerGiB` only bounds what the measurement cannot exclude.
 */
export function rssModel(points: MeasuredScale['peakRss']): RssModel {
  if (points.length === 0) return { at: () => NaN, slopePerGiB: NaN, flat: false };
  const xs = points.map((p) => p.studyBytes / GiB);
  const ys = points.map((p) => p.MiB);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const sxx = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  const slope = sxx === 0 ? 0 : xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0) / sxx;
  const intercept = my - slope * mx;
  const flat = Math.max(...ys) - Math.min(...ys) < Math.max(0.1 * Math.min(...ys), RSS_NOISE_MIB);
  // Flat: the largest peak seen, not a line that noise tilts down or up.
  return flat ? { at: () => Math.max(...ys), slopePerGiB: slope, flat } : { at: (b) => intercept + slope * (b / GiB), slopePerGiB: slope, flat };
}

/** Levels of a tree of link nodes with `fanout` links each over `leaves` chunks (1 = one flat node). */
export function treeLevels(leaves: number, fanout: number): number {
  if (!(fanout >= 2)) return Infinity;
  let levels = 1;
  for (let capacity = fanout; capacity < leaves; capacity *= fanout) levels++;
  return levels;
}

function findings(d: ScaleDesign, m: MeasuredScale, studies: StudyProjection[], a: ArchiveProjection, fanout: number, rss: RssModel): string[] {
  const out: string[] = [];
  const limit = bytes(d.maxNodeBytes);
  const bigNode = studies.find((s) => s.hugeNodeBytes > d.maxNodeBytes) ?? studies.find((s) => s.singleInstanceNodeBytes > d.maxNodeBytes);
  out.push(
    `InstanceNode: a flat list of ${d.linkBytes}-byte links fits in ${limit} up to ${count(fanout)} chunks, i.e. instances up to ` +
      `${bytes(fanout * d.chunkBytes)}.` +
      (bigNode
        ? ` At ${bigNode.label} per study the node of ${bigNode.hugeNodeBytes > d.maxNodeBytes ? `each of ${d.hugeInstancesPerStudy} instances` : 'a single-instance study'} ` +
          `would be ${bytes(bigNode.hugeNodeBytes > d.maxNodeBytes ? bigNode.hugeNodeBytes : bigNode.singleInstanceNodeBytes)}, over what IPFS moves as one block ` +
          `(Kubo refuses blocks over 2 MiB): the design must change to a tree of link nodes (${count(fanout)} links each; ` +
          `${treeLevels(Math.ceil(TiB / d.chunkBytes), fanout)} levels for a 1 TiB instance), which also lets a frame read fetch only its branch.`
        : ''),
  );
  const oneVersion = studies.find((s) => s.manifestBytesOneVersion > d.maxNodeBytes);
  out.push(
    `StudyManifest: versions are deltas, so a study pushed ${d.instancesPerVersion} instances per request grows by ` +
      `${bytes(studies[0]?.manifestBytesPerVersion ?? NaN)} per version.` +
      (oneVersion
        ? ` A version that adds a whole ${oneVersion.label} study of small instances at once (${count(oneVersion.smallInstances)} links) ` +
          `would be ${bytes(oneVersion.manifestBytesOneVersion)}: \`added\` must be split into link nodes the same way ` +
          `(or ingest must cut such a version into several).`
        : ''),
  );
  const longest = studies[studies.length - 1];
  if (longest) {
    out.push(
      `Version chain: the current instance set is a walk of \`prev\`; a ${longest.label} study of small instances sent ` +
        `${d.instancesPerVersion} per request has ${count(longest.smallVersions)} versions. The catalog answers queries ` +
        `without walking, but rebuilding it from the DAG alone would read every manifest: periodic checkpoint versions ` +
        `(a full instance index, itself a tree) would bound that.`,
    );
    out.push(
      `Catalog: ${bytes(m.catalogBytesPerInstance)} per small instance, so ${bytes(longest.catalogBytesSmall)} for a ${longest.label} study ` +
        `and ${bytes(a.catalogBytes)} for ${bytes(a.archiveBytes, true)} of small instances (${count(a.smallInstances)} rows). ` +
        `One SQLite file holds that, but backups and VACUUM of a multi-TB file do not scale: beyond some ` +
        `tens of GB the catalog should be partitioned (per study or per patient range) or moved to a server database.` +
        ((m.catalogBytesPerFrame ?? 0) > 0
          ? ` A huge instance's row grows with its frames (${bytes(m.catalogBytesPerFrame ?? 0)} per frame): ${bytes(longest.catalogRowBytesHuge)} for one of ${bytes(longest.hugeInstanceBytes)}, ` +
            `read whole for every metadata request; per-frame metadata should move out of the row.`
          : ''),
    );
  }
  out.push(
    `Block store: ${count(a.blocksHuge)} blocks for ${bytes(a.archiveBytes, true)} of huge instances, ${count(a.blocksSmall)} for small ones ` +
      `(a small instance is a block and a node); the fs store's ${count(d.shardDirs)} shard directories ` +
      `would hold ${count(Math.round(a.filesPerShardDir))} files each. A second shard level (or a store per volume, or S3/IPFS) is needed past ` +
      `a few hundred TB; one node ingesting at ${Math.round(m.ingestMBps)} MB/s would take ${duration(a.ingestSeconds)} to fill it.`,
  );
  out.push(
    rss.flat
      ? `Memory: peak RSS stayed flat (${Math.round(rss.at(GiB))} MiB at most) across the measured study sizes ` +
          `(${m.peakRss.map((x) => bytes(x.studyBytes)).join(', ')}): ingest and retrieval hold bounded windows of blocks, never an instance ` +
          `or a study, so study size alone does not move it (instance size does, past tens of GiB: see chunk lists). What the measurement ` +
          `alone cannot exclude is a growth below its noise ` +
          `(${Math.max(0, rss.slopePerGiB).toFixed(1)} MiB per GiB fitted), which would be ${Math.round(Math.max(...m.peakRss.map((x) => x.MiB)) + Math.max(0, rss.slopePerGiB) * 1024)} MiB at 1 TiB.`
      : `Memory: peak RSS grew ${rss.slopePerGiB.toFixed(1)} MiB per GiB of study between the measured sizes; projected linearly ` +
          `that is ${Math.round(rss.at(TiB))} MiB at 1 TiB. Something holds per-study state (lists of CIDs, catalog rows): find it before trusting huge studies.`,
  );
  const held = m.heldBytesPerChunk ?? DEFAULT_HELD_BYTES_PER_CHUNK;
  if (longest) {
    out.push(
      `Chunk lists in memory: ingest keeps every chunk's CID of the instance it is writing (about ${bytes(held)} each as JS objects) ` +
        `until it writes the InstanceNode, and retrieval decodes the whole node: ${bytes(longest.chunkListMiBHuge * MiB)} for one of ` +
        `${bytes(longest.hugeInstanceBytes)}, ${bytes(longest.chunkListMiBSingle * MiB)} for a ${longest.label} instance. ` +
        `Flat up to tens of GiB per instance; beyond that memory grows with the instance unless link nodes are written (and read) as the ` +
        `chunks stream, which the tree of link nodes above gives for free.`,
    );
  }
  out.push(
    `Key store: one wrapped key per study (${bytes(m.keyStoreBytesPerStudy)}): ${bytes(a.keyStoreBytes)} for ${count(a.studies)} studies of ${bytes(d.archiveStudyBytes)}.`,
  );
  return out;
}

/** Markdown for the README: one table (quantities by study size) and the findings. */
export function scaleMarkdown(p: ScaleProjection): string {
  const s = p.studies;
  const a = p.archive;
  const head = `| | ${s.map((x) => `${x.label} study`).join(' | ')} | ${bytes(a.archiveBytes, true)} (${bytes(a.archiveBytes)}) archive of ${bytes(p.design.archiveStudyBytes)} studies |`;
  const sep = `|---|${s.map(() => '---:').join('|')}|---:|`;
  const row = (name: string, cells: string[], archive: string): string => `| ${name} | ${cells.join(' | ')} | ${archive} |`;
  const over = (n: number): string => (n > p.design.maxNodeBytes ? `**${bytes(n)}** (over ${bytes(p.design.maxNodeBytes)})` : bytes(n));
  const lines = [
    head,
    sep,
    row(
      `blocks, ${p.design.hugeInstancesPerStudy} huge instances per study`,
      s.map((x) => count(x.blocksHuge)),
      count(a.blocksHuge),
    ),
    row(
      'blocks, small instances',
      s.map((x) => count(x.blocksSmall)),
      count(a.blocksSmall),
    ),
    row(
      'bytes stored',
      s.map((x) => bytes(x.storedBytes)),
      bytes(a.storedBytes),
    ),
    row(
      `InstanceNode, ${p.design.hugeInstancesPerStudy} huge instances`,
      s.map((x) => `${count(x.hugeNodeLinks)} links, ${over(x.hugeNodeBytes)}`),
      '–',
    ),
    row(
      'InstanceNode, whole study as one instance',
      s.map((x) => over(x.singleInstanceNodeBytes)),
      '–',
    ),
    row(
      `small instances (${bytes(p.design.smallInstanceBytes)})`,
      s.map((x) => count(x.smallInstances)),
      count(a.smallInstances),
    ),
    row(
      `manifest per version (${p.design.instancesPerVersion} instances)`,
      s.map((x) => bytes(x.manifestBytesPerVersion)),
      '–',
    ),
    row(
      'versions (one per request)',
      s.map((x) => count(x.smallVersions)),
      '–',
    ),
    row(
      'manifest if one version adds all',
      s.map((x) => over(x.manifestBytesOneVersion)),
      '–',
    ),
    row(
      'catalog, small instances',
      s.map((x) => bytes(x.catalogBytesSmall)),
      bytes(a.catalogBytes),
    ),
    row(
      `catalog, ${p.design.hugeInstancesPerStudy} huge instances`,
      s.map((x) => bytes(x.catalogBytesHuge)),
      '–',
    ),
    row(
      'fs store files per shard directory',
      s.map((x) => count(Math.round(x.filesPerShardDir))),
      count(Math.round(a.filesPerShardDir)),
    ),
    row(
      'chunk CIDs held in memory, one huge instance / whole study as one',
      s.map((x) => `${mib(x.chunkListMiBHuge)} / ${mib(x.chunkListMiBSingle)}`),
      '–',
    ),
    row(
      'node peak RSS while ingesting (measured + chunk list)',
      s.map((x) => mib(x.peakRssMiB)),
      `${mib(a.peakRssMiB)} per ingest`,
    ),
    row(
      `ingest time at ${Math.round(p.measured.ingestMBps)} MB/s`,
      s.map((x) => duration(x.ingestSeconds)),
      duration(a.ingestSeconds),
    ),
    row(
      'key store',
      s.map((x) => bytes(x.keyStoreBytes)),
      `${bytes(a.keyStoreBytes)} (${count(a.studies)} studies)`,
    ),
  ];
  return [...lines, '', ...p.findings.map((f) => `- ${f}`), ''].join('\n');
}

// ---------- measuring ----------

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

// ---------- formatting ----------

/** Binary units (KiB...PiB) unless `decimal` (kB...PB). */
export function bytes(n: number, decimal = false): string {
  if (!Number.isFinite(n)) return '?';
  const base = decimal ? 1000 : 1024;
  const units = decimal ? ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'] : ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let u = 0;
  let v = n;
  while (Math.abs(v) >= base && u < units.length - 1) {
    v /= base;
    u++;
  }
  const digits = u === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${Number(v.toFixed(digits))} ${units[u]}`;
}

function mib(n: number): string {
  return Number.isFinite(n) ? `${n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US')} MiB` : '?';
}

export function count(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '?';
}

export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 48 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}
