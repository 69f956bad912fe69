// DICOM types shared by ingest (which produces them) and the DICOMweb services (which serve
// them). The JSON shapes are the DICOM JSON Model of PS3.18 F.2.

/** Tag as 8 upper-case hex digits, group then element: '0020000D'. */
export type Tag = string;

export interface DicomJsonElement {
  vr: string;
  Value?: unknown[];
  /**
   * Stored form: 'bulk/<tag path>' relative to the instance's URL (e.g. 'bulk/7FE00010',
   * 'bulk/52009230.0.00289110' for nested); the WADO metadata service rewrites it into an
   * absolute URL at response time, so stored metadata never depends on the node's address.
   */
  BulkDataURI?: string;
  InlineBinary?: string;
}

export type DicomJsonDataset = Record<Tag, DicomJsonElement>;

/** A byte range inside an instance's Part 10 bytes (as received). */
export interface ByteRange {
  offset: number;
  length: number;
}

export interface PixelDataLayout {
  /** Offset of the first byte of the Pixel Data value (after its tag, VR and length). */
  valueOffset: number;
  /** Length of the value in bytes; -1 when undefined (encapsulated). */
  valueLength: number;
  encapsulated: boolean;
  vr: string;
}

/**
 * Where things are inside an instance's Part 10 bytes, so frames and bulk data are read by
 * offset from the chunks that hold them and never by reading the whole instance.
 */
export interface InstanceLayout {
  transferSyntaxUID: string;
  /** Offset of the first byte of the data set (after preamble, 'DICM' and File Meta). */
  datasetOffset: number;
  pixelData: PixelDataLayout | null;
  /**
   * frames[i] = the byte ranges holding frame i+1: one range for native pixel data; the
   * fragments' values (without item headers) for encapsulated pixel data. Empty for
   * deflated transfer syntaxes (offsets refer to inflated bytes there) and non-image objects.
   */
  frames: ByteRange[][];
  /** Bulk data values by the tag path used in their BulkDataURI ('7FE00010', ...). */
  bulk: Record<string, ByteRange>;
}

/** The identifying attributes ingest needs before it can encrypt (from the header). */
export interface InstanceIdentity {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  transferSyntaxUID: string;
}

/** What the streaming scanner learns from one instance's bytes. */
export interface ScannedInstance extends InstanceIdentity {
  /** Data set without Pixel Data and with large binary values as BulkDataURI (see above). */
  metadata: DicomJsonDataset;
  layout: InstanceLayout;
  size: number;
  /** Memory the metadata and layout take, as the scanner's budget counts it (bytes); what a session holds until commit. */
  heldBytes?: number;
}
