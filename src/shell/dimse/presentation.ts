// Which presentation contexts the Storage SCP accepts, and in which transfer syntax. Pure
// functions of the A-ASSOCIATE-RQ's proposals, so they are tested without a network.
import { EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, isKnownTransferSyntax } from '../../dicom/transfer-syntax.ts';

export const VERIFICATION_SOP_CLASS = '1.2.840.10008.1.1';

// PS3.4 B.5 / PS3.6 Table A-1: every Storage SOP Class the standard defines, now or later, sits
// under this arc (CT, MR, whole-slide, SR, RT, segmentation, encapsulated PDF, ...), so the
// arc is the list: a new modality's storage class is accepted without a code change.
// dcmjs-dimse's StorageClass constant names only ~60 of them, which is why it is not used.
const STORAGE_ARC = '1.2.840.10008.5.1.4.1.1.';

// The few UIDs under that arc that are not storage: the Protocol Approval query/retrieve models.
const NOT_STORAGE_IN_ARC = new Set([
  '1.2.840.10008.5.1.4.1.1.200.4', // Protocol Approval Information Model - FIND
  '1.2.840.10008.5.1.4.1.1.200.5', // Protocol Approval Information Model - MOVE
  '1.2.840.10008.5.1.4.1.1.200.6', // Protocol Approval Information Model - GET
]);

// Storage SOP Classes the standard placed outside the arc (PS3.6 Table A-1).
const STORAGE_OUTSIDE_ARC = new Set([
  '1.2.840.10008.5.1.4.34.1', // RT Beams Delivery Instruction Storage - Trial (retired)
  '1.2.840.10008.5.1.4.34.7', // RT Beams Delivery Instruction Storage
  '1.2.840.10008.5.1.4.34.10', // RT Brachy Application Setup Delivery Instruction Storage
  '1.2.840.10008.5.1.4.38.1', // Hanging Protocol Storage
  '1.2.840.10008.5.1.4.39.1', // Color Palette Storage
  '1.2.840.10008.5.1.4.43.1', // Generic Implant Template Storage
  '1.2.840.10008.5.1.4.44.1', // Implant Assembly Template Storage
  '1.2.840.10008.5.1.4.45.1', // Implant Template Group Storage
  '1.2.840.10008.5.1.1.27', // Stored Print Storage (retired)
  '1.2.840.10008.5.1.1.29', // Hardcopy Grayscale Image Storage (retired)
  '1.2.840.10008.5.1.1.30', // Hardcopy Color Image Storage (retired)
]);

export function isStorageSopClass(uid: string): boolean {
  if (uid.startsWith(STORAGE_ARC)) return !NOT_STORAGE_IN_ARC.has(uid);
  return STORAGE_OUTSIDE_ARC.has(uid);
}

const UNCOMPRESSED = new Set([IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE]);

/**
 * The transfer syntax to accept out of a presentation context's proposals, or undefined when
 * none is one the node can store. The proposer's first choice is taken, so a modality that holds
 * an image compressed sends it as it is (no re-encoding on either side), except that among
 * uncompressed syntaxes Explicit VR Little Endian is preferred: it keeps VRs and is what WADO-RS
 * serves by default without transcoding. Unknown (private) syntaxes are refused: the scanner
 * could not walk what they encode.
 */
export function chooseTransferSyntax(proposed: readonly string[]): string | undefined {
  const storable = proposed.filter(isKnownTransferSyntax);
  const first = storable[0];
  if (first === undefined) return undefined;
  if (UNCOMPRESSED.has(first) && storable.includes(EXPLICIT_VR_LE)) return EXPLICIT_VR_LE;
  return first;
}
