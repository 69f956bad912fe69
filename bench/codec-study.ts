// Compressed multi-frame instances for the decode benchmark (`--scenario decode`): 512 x 512
// frames of a CT-like phantom (bench/decode.ts), 12 bits stored in 16, each frame of an instance
// a different slice of noise, encoded with the codecs' own encoders (encodeFrame: OpenJPEG for
// JPEG 2000, CharLS for JPEG-LS) and written as Multi-frame Grayscale Word Secondary Capture
// instances, one fragment per frame with a Basic Offset Table. dcmjs writes the data set (it
// writes encapsulated Pixel Data with its offset table); an instance is tens of MB, written
// whole to a scratch file, which the benchmark is allowed to do with its own inputs.
//
// What a decoder must give back is known here: each frame's native little-endian bytes, whose
// SHA-256 the benchmark compares every decoded frame with (lossless syntaxes only, so exact).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
// @ts-expect-error dcmjs ships no type declarations; only DicomDict and denaturalizeDataset are used (typed below).
import dcmjs from 'dcmjs';
import type { FrameInfo } from '../src/dicom/codecs/frame.ts';
import { encodeFrame, phantom } from './decode.ts';
import { CHUNK_BYTES, isValidUid, type GeneratedInstance, type GeneratedStudy } from './generate.ts';

const { DicomDict, DicomMetaDictionary } = (
  dcmjs as {
    data: {
      DicomDict: new (meta: Record<string, unknown>) => { dict: Record<string, unknown>; write(options?: Record<string, unknown>): ArrayBuffer };
      DicomMetaDictionary: { denaturalizeDataset(d: Record<string, unknown>): Record<string, unknown> };
    };
  }
).data;

/** JPEG 2000 lossless (reversible 5/3). */
export const JPEG2000_LOSSLESS = '1.2.840.10008.1.2.4.90';
/** JPEG-LS lossless. */
export const JPEG_LS_LOSSLESS = '1.2.840.10008.1.2.4.80';
/** What the decode benchmark asks both servers for: frames decoded to Explicit VR Little Endian. */
export const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';
/** The syntaxes of the decode benchmark, with the names the report uses. */
export const DECODE_SYNTAXES: Readonly<Record<string, string>> = {
  [JPEG2000_LOSSLESS]: 'JPEG 2000 lossless',
  [JPEG_LS_LOSSLESS]: 'JPEG-LS lossless',
};
export const WORD_SC_MULTIFRAME = '1.2.840.10008.5.1.4.1.1.7.3';
/** Stored values are HU + 1024 in 12 bits (0..4095), as CT scanners store them. */
const HU_OFFSET = 1024;
const BITS_STORED = 12;

export interface CodecInstance {
  file: string;
  bytes: number;
  sopInstanceUID: string;
  seriesInstanceUID: string;
  transferSyntaxUID: string;
  numberOfFrames: number;
  /** Native little-endian bytes of one frame (rows * columns * 2). */
  frameBytes: number;
  /** SHA-256 (hex) of frame n's native bytes at index n - 1. */
  frameSha256: string[];
  /** Encoded bytes of all frames. */
  encodedBytes: number;
}

export interface CodecStudy {
  studyInstanceUID: string;
  patientId: string;
  instances: CodecInstance[];
  /** A few encoded frames per syntax (SAMPLE_FRAMES), for the decoders' own rate in the same run. */
  samples: Record<string, Uint8Array[]>;
  /** Rows = columns. */
  size: number;
}

/** Encoded frames kept per syntax for measuring the decoders alone. */
export const SAMPLE_FRAMES = 8;

/** The frame info the encoders and the node's decoders see. */
export function codecFrameInfo(size: number): FrameInfo {
  return {
    rows: size,
    columns: size,
    samplesPerPixel: 1,
    bitsAllocated: 16,
    bitsStored: BITS_STORED,
    pixelRepresentation: 0,
    photometricInterpretation: 'MONOCHROME2',
    planarConfiguration: 0,
  };
}

/** Frame `n` (0-based) of the phantom series: native little-endian unsigned 16-bit, HU + 1024. */
export function phantomFrame(size: number, n: number): Uint8Array {
  const hu = new Int16Array(phantom(size, 1 + n).buffer);
  const out = new Uint16Array(hu.length);
  for (let i = 0; i < hu.length; i++) out[i] = Math.min(2 ** BITS_STORED - 1, Math.max(0, hu[i]! + HU_OFFSET));
  return new Uint8Array(out.buffer);
}

/** A UID under 2.25 from a label: the same study every run with the same options. */
export function uidFrom(label: string): string {
  const uid = `2.25.${BigInt(`0x${createHash('sha256').update(label).digest('hex').slice(0, 30)}`).toString()}`;
  if (!isValidUid(uid)) throw new Error(`bad UID ${uid}`);
  return uid;
}

export interface BuildOptions {
  dir: string;
  syntaxes: readonly string[];
  /** Instances per syntax. */
  instances: number;
  frames: number;
  /** Rows = columns. Default 512. */
  size?: number;
  /** Distinguishes the studies of one run. */
  seed?: number;
}

/**
 * Writes `instances` instances per syntax into `dir`, one series per syntax, one study for all.
 * The frames are encoded once per syntax (frame n of every instance of a syntax is the same
 * image; the instances differ in UIDs), which keeps a J2K build to seconds (~70 ms per frame).
 */
export async function buildCodecStudy(o: BuildOptions): Promise<CodecStudy> {
  const size = o.size ?? 512;
  const seed = o.seed ?? 1;
  const info = codecFrameInfo(size);
  const studyInstanceUID = uidFrom(`decode-bench/study/${seed}`);
  const patientId = `BENCH-DECODE-${seed}`;
  const natives = Array.from({ length: o.frames }, (_, n) => phantomFrame(size, n));
  const frameSha256 = natives.map((f) => createHash('sha256').update(f).digest('hex'));
  const instances: CodecInstance[] = [];
  const samples: Record<string, Uint8Array[]> = {};
  for (const syntax of o.syntaxes) {
    if (DECODE_SYNTAXES[syntax] === undefined) throw new RangeError(`no encoder for ${syntax} here`);
    const encoded: Uint8Array[] = [];
    for (const native of natives) encoded.push(await encodeFrame(syntax, native, info));
    const encodedBytes = encoded.reduce((a, e) => a + e.length, 0);
    samples[syntax] = encoded.slice(0, SAMPLE_FRAMES);
    const seriesInstanceUID = uidFrom(`decode-bench/series/${seed}/${syntax}`);
    for (let i = 0; i < o.instances; i++) {
      const sopInstanceUID = uidFrom(`decode-bench/instance/${seed}/${syntax}/${i}`);
      const bytes = part10({
        studyInstanceUID,
        seriesInstanceUID,
        sopInstanceUID,
        patientId,
        syntax,
        size,
        frames: encoded,
        instanceNumber: i + 1,
        seriesNumber: o.syntaxes.indexOf(syntax) + 1,
      });
      const file = join(o.dir, `${syntax}-${i + 1}.dcm`);
      await writeFile(file, bytes);
      instances.push({
        file,
        bytes: bytes.length,
        sopInstanceUID,
        seriesInstanceUID,
        transferSyntaxUID: syntax,
        numberOfFrames: o.frames,
        frameBytes: size * size * 2,
        frameSha256,
        encodedBytes,
      });
    }
  }
  return { studyInstanceUID, patientId, instances, samples, size };
}

function part10(x: {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  patientId: string;
  syntax: string;
  size: number;
  frames: Uint8Array[];
  instanceNumber: number;
  seriesNumber: number;
}): Buffer {
  const meta = {
    '00020001': { vr: 'OB', Value: [new Uint8Array([0, 1]).buffer] },
    '00020002': { vr: 'UI', Value: [WORD_SC_MULTIFRAME] },
    '00020003': { vr: 'UI', Value: [x.sopInstanceUID] },
    '00020010': { vr: 'UI', Value: [x.syntax] },
    '00020012': { vr: 'UI', Value: [uidFrom('dicom-vault decode bench')] },
    '00020013': { vr: 'SH', Value: ['DVAULT_DECODE_1'] },
  };
  const dict = new DicomDict(meta);
  dict.dict = DicomMetaDictionary.denaturalizeDataset({
    SpecificCharacterSet: 'ISO_IR 100',
    ImageType: ['DERIVED', 'SECONDARY'],
    SOPClassUID: WORD_SC_MULTIFRAME,
    SOPInstanceUID: x.sopInstanceUID,
    StudyDate: '20260101',
    StudyTime: '120000',
    AccessionNumber: '',
    Modality: 'CT',
    ConversionType: 'WSD',
    ReferringPhysicianName: '',
    PatientName: 'Decode^Bench',
    PatientID: x.patientId,
    PatientBirthDate: '',
    PatientSex: 'O',
    StudyInstanceUID: x.studyInstanceUID,
    SeriesInstanceUID: x.seriesInstanceUID,
    StudyID: '1',
    SeriesNumber: String(x.seriesNumber),
    InstanceNumber: String(x.instanceNumber),
    PatientOrientation: '',
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    NumberOfFrames: String(x.frames.length),
    FrameIncrementPointer: 0x00181063,
    FrameTime: '100',
    Rows: x.size,
    Columns: x.size,
    BitsAllocated: 16,
    BitsStored: BITS_STORED,
    HighBit: BITS_STORED - 1,
    PixelRepresentation: 0,
    RescaleIntercept: String(-HU_OFFSET),
    RescaleSlope: '1',
    RescaleType: 'HU',
    WindowCenter: '40',
    WindowWidth: '400',
    LossyImageCompression: '00',
    // Encapsulated: dcmjs writes the offset table and, with fragmentMultiframe false, one fragment per frame.
    PixelData: x.frames.map((f) => f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength)),
    _vrMap: { PixelData: 'OB' },
  });
  return Buffer.from(dict.write({ fragmentMultiframe: false }));
}

/**
 * The instances of one series as a GeneratedStudy read from their files, so that the benchmark's
 * STOW client (client.ts stow) uploads them as it uploads generated studies. Frame offsets are
 * not meaningful here (the frames are encapsulated): frames are checked against frameSha256.
 */
export function uploadStudy(study: CodecStudy, instances: readonly CodecInstance[] = study.instances): GeneratedStudy {
  const generated = instances.map((c, i): GeneratedInstance => {
    let sha: Promise<string> | undefined;
    const open = (start = 0, end = c.bytes): AsyncIterable<Buffer> =>
      end <= start ? (async function* () {})() : createReadStream(c.file, { start, end: end - 1, highWaterMark: CHUNK_BYTES });
    return {
      sopInstanceUID: c.sopInstanceUID,
      seriesInstanceUID: c.seriesInstanceUID,
      instanceNumber: i + 1,
      size: c.bytes,
      numberOfFrames: c.numberOfFrames,
      frameBytes: c.frameBytes,
      pixelDataOffset: 0,
      open,
      sha256: () => {
        sha ??= (async () => {
          const h = createHash('sha256');
          for await (const chunk of open()) h.update(chunk);
          return h.digest('hex');
        })();
        return sha;
      },
    };
  });
  const first = instances[0];
  if (first === undefined) throw new RangeError('no instances');
  const size = Math.round(Math.sqrt(first.frameBytes / 2));
  return {
    studyInstanceUID: study.studyInstanceUID,
    seriesInstanceUID: first.seriesInstanceUID,
    patientId: study.patientId,
    kind: 'multiframe',
    rows: size,
    columns: size,
    instances: generated,
    totalBytes: generated.reduce((a, g) => a + g.size, 0),
  };
}
