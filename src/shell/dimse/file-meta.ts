// The Part 10 header (preamble, "DICM", File Meta group) the Storage SCP puts before a data set
// received by C-STORE, so the ingest sees the same kind of stream STOW-RS hands it. dcmjs writes
// the group (group length, VR padding); it is written once per instance and is a few hundred
// bytes, so building it whole is fine: only the data set that follows is streamed.
// @ts-ignore dcmjs ships no type declarations; only DicomDict's meta writer is used (typed below).
import dcmjs from 'dcmjs';

const { DicomDict } = (dcmjs as { data: { DicomDict: new (meta: Record<string, unknown>) => { write(): ArrayBuffer } } }).data;

/**
 * The node's Implementation Class UID (PS3.7 D.3.3.2), in the UUID-derived 2.25 arc (PS3.5 B.2)
 * since the project has no registered root. Sent in A-ASSOCIATE-AC and written in File Meta.
 */
export const IMPLEMENTATION_CLASS_UID = '2.25.311883766211014571885115861842074531204';
/** The node's Implementation Version Name (SH, at most 16 characters). */
export const IMPLEMENTATION_VERSION_NAME = 'DICOMVAULT_010';

export interface FileMetaFields {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  /** The calling AE title of the association the instance came in. */
  sourceAeTitle: string;
}

/** Preamble, "DICM" and the File Meta group; the data set, in `transferSyntaxUid`, follows as is. */
export function part10Header(fields: FileMetaFields): Uint8Array {
  const meta = {
    '00020001': { vr: 'OB', Value: [new Uint8Array([0, 1]).buffer] },
    '00020002': { vr: 'UI', Value: [fields.sopClassUid] },
    '00020003': { vr: 'UI', Value: [fields.sopInstanceUid] },
    '00020010': { vr: 'UI', Value: [fields.transferSyntaxUid] },
    '00020012': { vr: 'UI', Value: [IMPLEMENTATION_CLASS_UID] },
    '00020013': { vr: 'SH', Value: [IMPLEMENTATION_VERSION_NAME] },
    '00020016': { vr: 'AE', Value: [fields.sourceAeTitle] },
  };
  // An empty data set: write() yields exactly the header, whatever the transfer syntax
  // (a deflated one included: dcmjs deflates nothing when there is nothing).
  return new Uint8Array(new DicomDict(meta).write());
}
