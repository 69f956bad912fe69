// "Scale on paper": how blocks, DAG nodes, catalog, key store, memory and ingest time grow from a
// 1 GiB study to a 1 TiB one and to a petabyte archive, from figures measured in the benchmark
// run (bytes stored per byte, catalog bytes per instance and per frame, node sizes, peak RSS at
// two study sizes, ingest MB/s) and from the design (1 MiB chunks, flat lists of 41-byte links).
// It says where the design must change: an InstanceNode of a huge instance outgrows one IPFS
// block, a version adding a million instances makes a manifest of the same size, and so on.//
// Its terms (design, measured figures, projection shapes) are in scale-model.ts, the measuring of a
// node's data directory in scale-measure.ts, the units it writes in scale-format.ts.
import { bytes, count, duration, mib } from './scale-format.ts';
import {
  type ArchiveProjection,
  DEFAULT_HELD_BYTES_PER_CHUNK,
  DEFAULT_SCALE_DESIGN,
  GiB,
  type MeasuredScale,
  MiB,
  type ScaleDesign,
  type ScaleProjection,
  type StudyProjection,
  TiB,
} from './scale-model.ts';

export { bytes, count, duration } from './scale-format.ts';
export {
  diskUsage,
  ESTIMATED_KEY_ROW_BYTES,
  type Footprint,
  footprintFigures,
  measureFootprint,
  measureHeldCidBytes,
} from './scale-measure.ts';
export {
  type ArchiveProjection,
  CID_BYTES,
  DAG_CBOR_LINK_BYTES,
  DEFAULT_HELD_BYTES_PER_CHUNK,
  DEFAULT_MAX_NODE_BYTES,
  DEFAULT_SCALE_DESIGN,
  type MeasuredScale,
  PETABYTE,
  type ScaleDesign,
  type ScaleProjection,
  type StudyProjection,
} from './scale-model.ts';

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
