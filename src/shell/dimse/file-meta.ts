// The Part 10 header (preamble, "DICM", File Meta group) the Storage SCP puts before a data set
// received by C-STORE, so the ingest sees the same kind of stream STOW-RS hands it.
//
// Written by hand: seven short elements in Explicit VR Little Endian. dcmjs wrote it before
// (DicomDict.write), at 1.8 ms per instance on a fresh node (80 us once warm) on the path every
// C-STORE's answer waits on; the unit test checks the bytes against dcmjs's for the same fields.

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

const PREAMBLE = 128;

/** Preamble, "DICM" and the File Meta group; the data set, in `transferSyntaxUid`, follows as is. */
export function part10Header(fields: FileMetaFields): Uint8Array {
  // PS3.10 Table 7.1-1, in tag order; UIDs padded with NUL, SH and AE with a space (PS3.5 6.2).
  const elements: Array<[number, string, string, number]> = [
    [0x0002, 'UI', fields.sopClassUid, 0],
    [0x0003, 'UI', fields.sopInstanceUid, 0],
    [0x0010, 'UI', fields.transferSyntaxUid, 0],
    [0x0012, 'UI', IMPLEMENTATION_CLASS_UID, 0],
    [0x0013, 'SH', IMPLEMENTATION_VERSION_NAME, 0x20],
    [0x0016, 'AE', fields.sourceAeTitle, 0x20],
  ];
  const padded = (s: string): number => s.length + (s.length & 1);
  // (0002,0001) File Meta Information Version, OB: 12-byte header and its 2 bytes.
  const groupLength = 14 + elements.reduce((n, [, , value]) => n + 8 + padded(value), 0);
  const out = Buffer.alloc(PREAMBLE + 4 + 12 + groupLength);
  let at = out.write('DICM', PREAMBLE, 'latin1') + PREAMBLE;
  at = shortHeader(out, at, 0x0000, 'UL', 4);
  at = out.writeUInt32LE(groupLength, at);
  out.writeUInt16LE(0x0002, at);
  out.writeUInt16LE(0x0001, at + 2);
  out.write('OB', at + 4, 'latin1');
  out.writeUInt32LE(2, at + 8); // bytes 6-7 reserved, 0
  out[at + 13] = 1; // version 00 01
  at += 14;
  for (const [element, vr, value, pad] of elements) {
    const length = padded(value);
    at = shortHeader(out, at, element, vr, length);
    out.write(value, at, 'latin1');
    if (length > value.length) out[at + value.length] = pad;
    at += length;
  }
  return out;
}

function shortHeader(out: Buffer, at: number, element: number, vr: string, length: number): number {
  out.writeUInt16LE(0x0002, at);
  out.writeUInt16LE(element, at + 2);
  out.write(vr, at + 4, 'latin1');
  out.writeUInt16LE(length, at + 6);
  return at + 8;
}
