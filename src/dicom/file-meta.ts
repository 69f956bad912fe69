// File Meta Information (PS3.10 7.1): preamble, 'DICM', group 0002 in explicit VR LE.
import { VaultError } from '../core/errors.ts';
import { ALL_VRS, LONG_LENGTH_VRS, tagLabel } from './metadata.ts';
import { describeTransferSyntax } from './transfer-syntax.ts';
import { malformed, truncated, UNDEFINED_LENGTH, vrAt } from './wire.ts';

const PREAMBLE_LENGTH = 128;
const DICM = [0x44, 0x49, 0x43, 0x4d];

export interface FileMetaElement {
  tag: number;
  vr: string;
  /** A copy of the value bytes (little endian). */
  value: Uint8Array;
}

export interface FileMeta {
  elements: FileMetaElement[];
  transferSyntaxUID: string;
  mediaStorageSOPClassUID: string | undefined;
  mediaStorageSOPInstanceUID: string | undefined;
  /** Offset of the first byte of the data set. */
  datasetOffset: number;
}

function metaString(value: Uint8Array): string {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .trim();
}

/**
 * Parses preamble and File Meta from the start of an instance. Returns undefined when more
 * bytes are needed (never when `final`). Throws NOT_DICOM without preamble, 'DICM' or group
 * 0002, DICOM_MALFORMED for a broken File Meta, DICOM_TRUNCATED (when `final`) for a cut one.
 *
 * The File Meta ends where the group changes (as pydicom and dcmtk read it: group lengths are
 * often wrong); only for deflated data sets, whose first bytes are compressed, the group length
 * decides.
 */
export function parseFileMeta(buf: Uint8Array, final: boolean): FileMeta | undefined {
  const n = buf.length;
  for (let i = 0; i < 4 && PREAMBLE_LENGTH + i < n; i++) {
    if (buf[PREAMBLE_LENGTH + i] !== DICM[i]) throw new VaultError('NOT_DICOM', "no 'DICM' prefix at offset 128: not a DICOM Part 10 file");
  }
  if (n < PREAMBLE_LENGTH + 4) {
    if (final) throw new VaultError('NOT_DICOM', `only ${n} bytes: shorter than the Part 10 preamble and 'DICM' prefix`);
    return undefined;
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const elements: FileMetaElement[] = [];
  let pos = PREAMBLE_LENGTH + 4;
  let groupEnd: number | undefined;
  let transferSyntaxUID: string | undefined;
  const done = (): FileMeta => {
    if (transferSyntaxUID === undefined || transferSyntaxUID === '') {
      throw malformed('File Meta Information has no Transfer Syntax UID (0002,0010)');
    }
    const find = (tag: number): string | undefined => {
      const e = elements.find((x) => x.tag === tag);
      return e === undefined ? undefined : metaString(e.value);
    };
    return {
      elements,
      transferSyntaxUID,
      mediaStorageSOPClassUID: find(0x00020002),
      mediaStorageSOPInstanceUID: find(0x00020003),
      datasetOffset: pos,
    };
  };
  for (;;) {
    if (groupEnd !== undefined && pos === groupEnd && transferSyntaxUID !== undefined && describeTransferSyntax(transferSyntaxUID).deflated) {
      return done();
    }
    if (pos + 2 > n) {
      if (!final) return undefined;
      if (elements.length === 0) throw new VaultError('NOT_DICOM', 'no File Meta Information (group 0002) after the DICM prefix');
      if (pos < n) throw truncated(`data set cut short at offset ${pos}`);
      return done();
    }
    const group = dv.getUint16(pos, true);
    if (group !== 0x0002) {
      if (elements.length === 0) throw new VaultError('NOT_DICOM', 'no File Meta Information (group 0002) after the DICM prefix');
      return done();
    }
    if (pos + 8 > n) {
      if (final) throw truncated(`File Meta element header at offset ${pos} cut short`);
      return undefined;
    }
    const tag = ((group << 16) | dv.getUint16(pos + 2, true)) >>> 0;
    const vr = vrAt(buf, pos + 4);
    if (!ALL_VRS.has(vr)) throw malformed(`File Meta element ${tagLabel(tag)} at offset ${pos} is not in explicit VR (VR bytes ${JSON.stringify(vr)})`);
    let header = 8;
    let length = dv.getUint16(pos + 6, true);
    if (LONG_LENGTH_VRS.has(vr)) {
      if (pos + 12 > n) {
        if (final) throw truncated(`File Meta element header at offset ${pos} cut short`);
        return undefined;
      }
      header = 12;
      length = dv.getUint32(pos + 8, true);
      if (length === UNDEFINED_LENGTH) throw malformed(`File Meta element ${tagLabel(tag)} at offset ${pos} has undefined length`);
    }
    if (pos + header + length > n) {
      if (final) throw truncated(`declared length ${length} of ${tagLabel(tag)} at offset ${pos} beyond end of data`);
      return undefined;
    }
    const value = buf.slice(pos + header, pos + header + length);
    elements.push({ tag, vr, value });
    if (tag === 0x00020000 && length === 4) groupEnd = pos + header + 4 + dv.getUint32(pos + header, true);
    if (tag === 0x00020010) transferSyntaxUID = metaString(value);
    pos += header + length;
  }
}
