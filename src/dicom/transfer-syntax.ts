// Transfer syntax facts (PS3.5 Table A-1, PS3.6 Table A-1): how a data set is encoded, so the
// scanner knows how to walk it and WADO-RS knows what it can serve, transcode or decode.

export const IMPLICIT_VR_LE = '1.2.840.10008.1.2';
export const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';
export const EXPLICIT_VR_BE = '1.2.840.10008.1.2.2';
export const DEFLATED_EXPLICIT_VR_LE = '1.2.840.10008.1.2.1.99';
export const ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LE = '1.2.840.10008.1.2.1.98';
export const RLE_LOSSLESS = '1.2.840.10008.1.2.5';

export interface TransferSyntaxFacts {
  explicitVR: boolean;
  littleEndian: boolean;
  /** The data set after the File Meta is raw-deflate compressed. */
  deflated: boolean;
  /** Pixel Data is encapsulated (fragments in items), typically compressed. */
  encapsulated: boolean;
  /** Retired from the standard; still readable. */
  retired?: boolean;
  /** Pixel data fragments are JPEG / JPEG-LS (start with SOI FFD8) or JPEG 2000 / HTJ2K codestreams (SOC FF4F). */
  codestream?: 'jpeg' | 'j2k';
}

const NATIVE_LE: TransferSyntaxFacts = { explicitVR: true, littleEndian: true, deflated: false, encapsulated: false };
const ENCAPSULATED: TransferSyntaxFacts = { explicitVR: true, littleEndian: true, deflated: false, encapsulated: true };
const JPEG: TransferSyntaxFacts = { ...ENCAPSULATED, codestream: 'jpeg' };
const JPEG_RETIRED: TransferSyntaxFacts = { ...JPEG, retired: true };
const J2K: TransferSyntaxFacts = { ...ENCAPSULATED, codestream: 'j2k' };
// JPIP Referenced Deflate: no pixel data, deflated data set.
const JPIP_DEFLATE: TransferSyntaxFacts = { explicitVR: true, littleEndian: true, deflated: true, encapsulated: false };

const P = '1.2.840.10008.1.2';
const KNOWN: ReadonlyMap<string, TransferSyntaxFacts> = new Map<string, TransferSyntaxFacts>([
  [IMPLICIT_VR_LE, { explicitVR: false, littleEndian: true, deflated: false, encapsulated: false }],
  [EXPLICIT_VR_LE, NATIVE_LE],
  [ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LE, ENCAPSULATED],
  [DEFLATED_EXPLICIT_VR_LE, { explicitVR: true, littleEndian: true, deflated: true, encapsulated: false }],
  [EXPLICIT_VR_BE, { explicitVR: true, littleEndian: false, deflated: false, encapsulated: false, retired: true }],
  [`${P}.4.50`, JPEG], // Baseline (Process 1)
  [`${P}.4.51`, JPEG], // Extended (Process 2 & 4)
  ...['52', '53', '54', '55', '56', '58', '59', '60', '61', '62', '63', '64', '65', '66'].map((n): [string, TransferSyntaxFacts] => [
    `${P}.4.${n}`,
    JPEG_RETIRED,
  ]),
  [`${P}.4.57`, JPEG], // Lossless (Process 14)
  [`${P}.4.70`, JPEG], // Lossless SV1
  [`${P}.4.80`, JPEG], // JPEG-LS lossless
  [`${P}.4.81`, JPEG], // JPEG-LS near-lossless
  [`${P}.4.90`, J2K],
  [`${P}.4.91`, J2K],
  [`${P}.4.92`, J2K], // Part 2 multi-component lossless
  [`${P}.4.93`, J2K], // Part 2 multi-component
  [`${P}.4.94`, NATIVE_LE], // JPIP Referenced: no pixel data in the data set
  [`${P}.4.95`, JPIP_DEFLATE],
  ...['100', '100.1', '101', '101.1', '102', '102.1', '103', '103.1', '104', '104.1', '105', '105.1', '106', '106.1', '107', '108'].map(
    (n): [string, TransferSyntaxFacts] => [`${P}.4.${n}`, ENCAPSULATED], // MPEG-2/4, HEVC
  ),
  [`${P}.4.110`, ENCAPSULATED], // JPEG XL lossless
  [`${P}.4.111`, ENCAPSULATED], // JPEG XL JPEG recompression
  [`${P}.4.112`, ENCAPSULATED], // JPEG XL
  [`${P}.4.201`, J2K], // HTJ2K lossless
  [`${P}.4.202`, J2K], // HTJ2K lossless RPCL
  [`${P}.4.203`, J2K], // HTJ2K
  [`${P}.4.204`, NATIVE_LE], // JPIP HTJ2K Referenced
  [`${P}.4.205`, JPIP_DEFLATE],
  [RLE_LOSSLESS, ENCAPSULATED],
  [`${P}.6.1`, { ...ENCAPSULATED, retired: true }], // RFC 2557 MIME encapsulation
  [`${P}.6.2`, { ...ENCAPSULATED, retired: true }], // XML encoding
  [`${P}.7.1`, NATIVE_LE], // SMPTE ST 2110-20 progressive (pixel data sent separately)
  [`${P}.7.2`, NATIVE_LE], // SMPTE ST 2110-20 interlaced
  [`${P}.7.3`, NATIVE_LE], // SMPTE ST 2110-30 PCM audio
]);

/**
 * Encoding facts of a transfer syntax. Unknown (private or future) UIDs are treated as
 * Explicit VR Little Endian with encapsulated pixel data: PS3.5 requires every transfer syntax
 * other than the ones above to be explicit VR LE, and their pixel data is opaque to us.
 */
export function describeTransferSyntax(uid: string): TransferSyntaxFacts {
  return KNOWN.get(uid) ?? ENCAPSULATED;
}

export function isKnownTransferSyntax(uid: string): boolean {
  return KNOWN.has(uid);
}

/** What the transcoder (transcode.ts) writes: the native encodings WADO-RS is asked for. */
export const TRANSCODE_TARGETS: ReadonlySet<string> = new Set([EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE]);

/** Native encodings (pixel data, if any, not encapsulated) the transcoder reads. */
function isNativeSource(uid: string): boolean {
  return uid === IMPLICIT_VR_LE || uid === EXPLICIT_VR_LE || uid === EXPLICIT_VR_BE || uid === DEFLATED_EXPLICIT_VR_LE;
}

/** Whether the transcoder (or plain pass-through) turns `from` into `to` without decompressing. */
export function canTranscode(from: string, to: string): boolean {
  if (from === to) return true;
  return TRANSCODE_TARGETS.has(to) && isNativeSource(from);
}

/**
 * Why an instance stored as `from` cannot be sent as `to`; undefined when it can. `decodable`:
 * frames of `from` can be decoded here (codecs/canDecode), so an encapsulated instance can be
 * written natively. Nothing is ever compressed: a compressed `to` is only sent as stored.
 */
export function conversionRefusal(from: string, to: string, decodable: boolean): string | undefined {
  if (from === to || canTranscode(from, to)) return undefined;
  const name = (uid: string): string => `${uid}${isKnownTransferSyntax(uid) ? '' : ' (unknown)'}`;
  if (!TRANSCODE_TARGETS.has(to)) {
    if (to === EXPLICIT_VR_BE) return `Explicit VR Big Endian (${to}) is retired and not written here`;
    if (describeTransferSyntax(to).encapsulated) return `no encoder here writes ${name(to)}: instances are compressed only as they were received`;
    return `${name(to)} is not written here`;
  }
  if (!decodable) return `no decoder here reads the pixel data of ${name(from)}`;
  return undefined;
}
