// The terms of "scale on paper" (scale.ts): the design it projects (chunk and link sizes, node
// limit, study shapes, archive size, with their defaults), the figures measured in the benchmark
// run that it starts from, and the shapes of the projection it yields. Apart from scale.ts
// because the measuring (scale-measure.ts) fills these same figures in, without the projection.

const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;
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
