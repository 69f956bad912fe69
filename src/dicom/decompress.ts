// What serving a compressed instance uncompressed involves besides the codecs (codecs/): what its
// header says once its frames are decoded (PS3.5 8.2, PS3.3 C.7.6.3), how big its native Pixel
// Data is before any frame is decoded, and, when its frames cannot be located among its Pixel Data
// fragments, exactly why. Pure functions: the WADO service and the transcoder (transcode.ts) use them.
import { VaultError } from '../core/errors.ts';
import { decodedFrameLength, type FrameInfo } from './codecs/frame.ts';
import { firstNumber, firstString } from './metadata.ts';
import type { DicomJsonDataset, PixelDataLayout } from './model.ts';
import { describeTransferSyntax } from './transfer-syntax.ts';

const P = '1.2.840.10008.1.2.4';
/** JPEG DCT syntaxes: libjpeg turns colour into RGB whatever the components were (codecs/decode.ts). */
const JPEG_DCT = new Set([`${P}.50`, `${P}.51`]);
/** Lossy by definition (PS3.5 A.4): the decompressed instance says so (Lossy Image Compression "01"). */
const ALWAYS_LOSSY = new Set([`${P}.50`, `${P}.51`, `${P}.81`]);

/** The Image Pixel attributes a decoder needs, from an instance's DICOM JSON metadata. */
export function frameInfoOf(metadata: DicomJsonDataset): FrameInfo {
  const need = (tag: string, name: string): number => {
    const v = firstNumber(metadata[tag]);
    if (v === undefined) throw new VaultError('NOT_ACCEPTABLE', `the instance has no ${name} (${tag}): its pixel data cannot be decoded`);
    return v;
  };
  const bitsAllocated = need('00280100', 'Bits Allocated');
  return {
    rows: need('00280010', 'Rows'),
    columns: need('00280011', 'Columns'),
    samplesPerPixel: firstNumber(metadata['00280002']) ?? 1,
    bitsAllocated,
    bitsStored: firstNumber(metadata['00280101']) ?? bitsAllocated,
    pixelRepresentation: firstNumber(metadata['00280103']) ?? 0,
    photometricInterpretation: (firstString(metadata['00280004']) ?? 'MONOCHROME2').trim(),
    planarConfiguration: firstNumber(metadata['00280006']) ?? 0,
  };
}

/** Number of Frames (0028,0008): 1 when absent, undefined when it is not a positive integer. */
export function frameCountOf(metadata: DicomJsonDataset): number | undefined {
  const element = metadata['00280008'];
  if (element?.Value === undefined) return 1;
  const n = firstNumber(element);
  return n !== undefined && Number.isInteger(n) && n >= 1 ? n : undefined;
}

/** The photometric interpretation of decoded frames of `transferSyntaxUID` (what the codecs give back). */
export function decodedPhotometric(transferSyntaxUID: string, info: FrameInfo): string {
  const stored = info.photometricInterpretation;
  if (JPEG_DCT.has(transferSyntaxUID) && info.samplesPerPixel === 3 && info.bitsStored <= 8) return 'RGB';
  // A J2K decoder undoes the multiple component transform (PS3.5 8.2.4).
  if (describeTransferSyntax(transferSyntaxUID).codestream === 'j2k' && (stored === 'YBR_ICT' || stored === 'YBR_RCT')) return 'RGB';
  return stored;
}

/** An encapsulated instance's Image Pixel module and Pixel Data once its frames are decoded. */
export interface DecodedLayout {
  /** As stored: what each frame is decoded against. */
  info: FrameInfo;
  frames: number;
  /** Photometric Interpretation of the decoded frames (Planar Configuration is always 0). */
  photometricInterpretation: string;
  /** Bytes of one decoded frame. */
  frameLength: number;
  /** Value length of the native Pixel Data: frames x frameLength, padded to even. */
  pixelDataLength: number;
  vr: 'OB' | 'OW';
  /** The syntax is lossy by definition: Lossy Image Compression (0028,2110) must say "01". */
  lossy: boolean;
}

/** How an encapsulated instance of `transferSyntaxUID` is written once decoded; known before any frame is. */
export function decodedLayout(transferSyntaxUID: string, metadata: DicomJsonDataset): DecodedLayout {
  const info = frameInfoOf(metadata);
  const frames = frameCountOf(metadata);
  if (frames === undefined)
    throw new VaultError('NOT_ACCEPTABLE', `its Number of Frames (0028,0008) is not a positive integer (${JSON.stringify(metadata['00280008']?.Value?.[0])})`);
  const frameLength = decodedFrameLength(info);
  const total = frames * frameLength;
  return {
    info,
    frames,
    photometricInterpretation: decodedPhotometric(transferSyntaxUID, info),
    frameLength,
    pixelDataLength: total + (total % 2),
    vr: info.bitsAllocated > 8 ? 'OW' : 'OB',
    lossy: ALWAYS_LOSSY.has(transferSyntaxUID),
  };
}

/** Reads `length` bytes at `offset` of the stored instance. */
export type ByteReader = (offset: number, length: number) => Promise<Uint8Array>;

/** Fragment items read at most when explaining why frames cannot be located. */
const MAX_ITEMS = 100_000;

/**
 * Why the frames of an encapsulated instance cannot be located among its Pixel Data fragments
 * (the scanner found no grouping that fits: layout.frames is empty). Walks the item headers of
 * the Pixel Data (reading only them and each fragment's first two bytes) and says what is wrong:
 * the Number of Frames, the Basic or Extended Offset Table, or fragments that cannot be grouped.
 */
export async function explainUnlocatedFrames(
  read: ByteReader,
  pixelData: PixelDataLayout,
  metadata: DicomJsonDataset,
  transferSyntaxUID: string,
  instanceSize: number,
): Promise<string> {
  const frames = frameCountOf(metadata);
  if (frames === undefined) return `its Number of Frames (0028,0008) is not a positive integer (${JSON.stringify(metadata['00280008']?.Value?.[0])})`;
  const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
  const u16 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint16(at, true);
  let pos = pixelData.valueOffset;
  const item = async (): Promise<{ tag: number; length: number } | undefined> => {
    if (pos + 8 > instanceSize) return undefined;
    const h = await read(pos, 8);
    return { tag: ((u16(h, 0) << 16) | u16(h, 2)) >>> 0, length: u32(h, 4) };
  };
  const bot = await item();
  if (bot === undefined || bot.tag !== 0xfffee000) return 'its encapsulated Pixel Data does not start with an item (the Basic Offset Table)';
  const table = bot.length > 0 && pos + 8 + bot.length <= instanceSize ? await read(pos + 8, bot.length) : new Uint8Array(0);
  const entries = Array.from({ length: Math.floor(table.length / 4) }, (_, i) => u32(table, i * 4));
  pos += 8 + bot.length;
  const first = pos;
  const starts: number[] = [];
  const markers: number[] = [];
  for (let n = 0; n < MAX_ITEMS; n++) {
    const next = await item();
    if (next === undefined || next.tag !== 0xfffee000) break;
    starts.push(pos - first);
    const head = next.length >= 2 ? await read(pos + 8, 2) : new Uint8Array(0);
    markers.push(head.length === 2 ? (head[0]! << 8) | head[1]! : -1);
    pos += 8 + next.length;
  }
  const fragments = starts.length;
  const says = `Number of Frames is ${frames}`;
  if (fragments === 0) return `its Pixel Data holds no fragments (${says})`;
  const eot = metadata['7FE00001'];
  if (eot !== undefined)
    return `its Extended Offset Table (7FE0,0001) does not give the start of each of its ${frames} frames among its ${fragments} fragments`;
  if (entries.length === frames) {
    for (let i = 0; i < entries.length; i++) {
      if (!starts.includes(entries[i]!)) {
        return `entry ${i + 1} of its Basic Offset Table (${entries[i]}) is not where a fragment starts (fragments start at ${starts.slice(0, 8).join(', ')}${fragments > 8 ? ', ...' : ''}; ${says})`;
      }
      if (i > 0 && entries[i]! <= entries[i - 1]!)
        return `its Basic Offset Table is not increasing (entry ${i + 1} is ${entries[i]}, entry ${i} ${entries[i - 1]})`;
    }
    if (entries[0] !== 0) return `its Basic Offset Table's first entry is ${entries[0]}, not 0`;
  }
  const tableNote = entries.length === 0 ? 'no Basic Offset Table' : `a Basic Offset Table of ${entries.length} entries`;
  const codestream = describeTransferSyntax(transferSyntaxUID).codestream;
  const markerNote =
    codestream === undefined
      ? ''
      : `, and ${markers.filter((m) => m === (codestream === 'jpeg' ? 0xffd8 : 0xff4f)).length} of the fragments start with a ${codestream === 'jpeg' ? 'JPEG SOI' : 'JPEG 2000 SOC'} marker`;
  return `its ${fragments}${fragments >= MAX_ITEMS ? '+' : ''} fragments cannot be grouped into its ${frames} frames: ${tableNote}${markerNote}`;
}

/**
 * Why the native frames of an instance could not be located by the scanner (layout.frames empty
 * although it has Pixel Data): Number of Frames, the image size, or a Pixel Data too short.
 */
export function explainNativeFrames(metadata: DicomJsonDataset, pixelData: PixelDataLayout): string {
  const frames = frameCountOf(metadata);
  if (frames === undefined) return `its Number of Frames (0028,0008) is not a positive integer (${JSON.stringify(metadata['00280008']?.Value?.[0])})`;
  const rows = firstNumber(metadata['00280010']);
  const columns = firstNumber(metadata['00280011']);
  const bits = firstNumber(metadata['00280100']);
  if (rows === undefined || columns === undefined || bits === undefined) return 'it lacks Rows, Columns or Bits Allocated';
  const photometric = firstString(metadata['00280004'])?.trim();
  // YBR_*_422 native data holds 2 samples per pixel on average (Cb and Cr are shared).
  const samples = photometric === 'YBR_FULL_422' || photometric === 'YBR_PARTIAL_422' ? 2 : (firstNumber(metadata['00280002']) ?? 1);
  const frameBits = rows * columns * samples * bits;
  if (frameBits % 8 !== 0) return `its frames of ${frameBits} bits do not start on byte boundaries (Bits Allocated ${bits})`;
  return `its Pixel Data holds ${pixelData.valueLength} bytes, fewer than ${frames} frames of ${frameBits / 8}`;
}
