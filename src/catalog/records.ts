// What the catalog hands out and takes in (instances, study versions, QIDO query results), and
// how its rows become those records.

import type { AttributeFilter } from '../dicom/matching.ts';
import type { DicomJsonDataset, InstanceLayout, Tag } from '../dicom/model.ts';

export interface CatalogInstance {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  transferSyntaxUID: string;
  /** Bytes of the Part 10 instance as received. */
  size: number;
  /** Hex SHA-256 of the plaintext Part 10 bytes. */
  sha256: string;
  /** CID (string) of the instance's DAG node. */
  nodeCid: string;
  /** DICOM JSON without pixel data (BulkDataURI placeholders 'bulk/<path>'). */
  metadata: DicomJsonDataset;
  layout: InstanceLayout;
}

export interface StudyVersion {
  studyInstanceUID: string;
  version: number;
  root: string;
  prev: string | null;
  /** ISO 8601. */
  createdAt: string;
  /** Current instances of the study once this version was committed. */
  instanceCount: number;
}

/** One stored revision of an instance: the current one or one replaced by other bytes. */
export interface InstanceRevision {
  instance: CatalogInstance;
  /** Study version that stored these bytes. */
  version: number;
  /** Study version whose different bytes replaced these; null while current. */
  replacedIn: number | null;
}

export interface PendingAnchor {
  root: string;
  studyInstanceUID: string;
  version: number;
  /** ISO 8601: the commit time of the version. */
  enqueuedAt: string;
}

export interface CommitInput {
  studyInstanceUID: string;
  version: number;
  root: string;
  prev: string | null;
  instances: CatalogInstance[];
  createdAt: string;
}

export interface CatalogQuery {
  filters: AttributeFilter[];
  study?: string;
  series?: string;
  /** Maximum rows returned. */
  limit: number;
  /** Rows skipped first. */
  offset: number;
  /**
   * Instance queries only: the metadata attributes to return, all when absent. Extracting a
   * few attributes inside SQLite is several times cheaper than parsing whole metadata.
   */
  instanceFields?: readonly Tag[];
}

export interface StudyRecord {
  studyInstanceUID: string;
  /** Patient and study attributes, with ModalitiesInStudy, SOPClassesInStudy and the counts. */
  attributes: DicomJsonDataset;
}

export interface SeriesRecord {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  /** Series attributes with NumberOfSeriesRelatedInstances. */
  attributes: DicomJsonDataset;
  studyAttributes: DicomJsonDataset;
}

export interface InstanceRecord {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  transferSyntaxUID: string;
  metadata: DicomJsonDataset;
  seriesAttributes: DicomJsonDataset;
  studyAttributes: DicomJsonDataset;
}

// ---------------------------------------------------------------------------------------
// Rows as read from SQLite

export interface InstanceRow {
  study_uid: string;
  series_uid: string;
  sop_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  size: number;
  sha256: string;
  node_cid: string;
  metadata: string;
  layout: string;
}
export const INSTANCE_COLUMNS =
  'i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid, i.size, i.sha256, i.node_cid, i.metadata, i.layout';

export interface VersionRow {
  study_uid: string;
  version: number;
  root: string;
  prev: string | null;
  created_at: string;
  instance_count: number;
}

export function toVersion(r: VersionRow): StudyVersion {
  return {
    studyInstanceUID: r.study_uid,
    version: r.version,
    root: r.root,
    prev: r.prev,
    createdAt: r.created_at,
    instanceCount: r.instance_count,
  };
}

/** The columns of one instance, less its (large) metadata and layout, and its row id. */
export const INSTANCE_KEY_COLUMNS = 'i.id, i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid, i.size, i.sha256, i.node_cid';
/** An instance row without its metadata and layout. */
export type KeyRow = Omit<InstanceRow, 'metadata' | 'layout'> & { id: number };

/** metadata and layout are parsed on first access: listings often need neither. */
export function toInstance(r: InstanceRow): CatalogInstance {
  return lazyInstance(
    r,
    () => r.metadata,
    () => JSON.parse(r.layout) as InstanceLayout,
  );
}

export function lazyInstance(r: Omit<InstanceRow, 'metadata' | 'layout'>, loadMetadata: () => string, loadLayout: () => InstanceLayout): CatalogInstance {
  let metadata: DicomJsonDataset | undefined;
  let layout: InstanceLayout | undefined;
  return {
    studyInstanceUID: r.study_uid,
    seriesInstanceUID: r.series_uid,
    sopInstanceUID: r.sop_uid,
    sopClassUID: r.sop_class_uid,
    transferSyntaxUID: r.transfer_syntax_uid,
    size: r.size,
    sha256: r.sha256,
    nodeCid: r.node_cid,
    get metadata(): DicomJsonDataset {
      metadata ??= JSON.parse(loadMetadata()) as DicomJsonDataset;
      return metadata;
    },
    set metadata(v: DicomJsonDataset) {
      metadata = v;
    },
    get layout(): InstanceLayout {
      layout ??= loadLayout();
      return layout;
    },
    set layout(v: InstanceLayout) {
      layout = v;
    },
  };
}
