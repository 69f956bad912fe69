// Decode throughput of the frame decoders (src/dicom/codecs) through their worker pool, on frames
// made here: a CT-like phantom encoded with the codecs' own encoders (the full WebAssembly builds
// of the same packages; the node loads only their decoders). Not wired into bench/run.ts yet:
//
//   node -e "import('./bench/decode.ts').then(async (b) => console.log(await b.measureDecode({ syntax: '1.2.840.10008.1.2.4.90' })))"
//
// encodeFrame also makes the test frames of test/unit/dicom/codecs.test.ts for syntaxes that
// pydicom has no file of (HTJ2K).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { DecodePool } from '../src/dicom/codecs/index.ts';
import type { FrameInfo } from '../src/dicom/codecs/frame.ts';

const require = createRequire(import.meta.url);

interface Encoder {
  getDecodedBuffer(info: {
    width: number;
    height: number;
    bitsPerSample: number;
    componentCount: number;
    isSigned: boolean;
    isUsingColorTransform?: boolean;
  }): Uint8Array;
  getEncodedBuffer(): Uint8Array;
  encode(): void;
  delete(): void;
  setQuality?(lossless: boolean, quantizationStep: number): void;
  setProgressionOrder?(order: number): void;
  setNearLossless?(near: number): void;
}

type Module = Record<string, new () => Encoder>;
const modules = new Map<string, Promise<Module>>();

function fullBuild(pkg: string): Promise<Module> {
  let m = modules.get(pkg);
  if (m === undefined) {
    const factory = require(`${pkg}/wasmjs`) as (o: Record<string, unknown>) => Promise<Module>;
    m = factory({ wasmBinary: readFileSync(require.resolve(`${pkg}/wasm`)), print: () => {}, printErr: () => {} });
    modules.set(pkg, m);
  }
  return m;
}

const P = '1.2.840.10008.1.2.4';
/** The syntaxes encodeFrame makes, with the encoder of each. */
export const ENCODABLE = {
  [`${P}.80`]: 'CharLS, lossless',
  [`${P}.81`]: 'CharLS, near-lossless (NEAR 2)',
  [`${P}.90`]: 'OpenJPEG, reversible 5/3',
  [`${P}.91`]: 'OpenJPEG, irreversible 9/7 (fine quantization: about 1.5:1, max error 2 on the phantom)',
  [`${P}.201`]: 'OpenJPH, reversible',
  [`${P}.202`]: 'OpenJPH, reversible, RPCL',
  [`${P}.203`]: 'OpenJPH, irreversible (step 0.0001: about 8:1, max error 14 HU on the phantom)',
} as const;

/**
 * Encodes one native little-endian frame (colour interleaved) in `transferSyntaxUID` (one of
 * ENCODABLE). Colour HTJ2K and JPEG 2000 use the reversible / irreversible component transform.
 */
export async function encodeFrame(transferSyntaxUID: string, pixels: Uint8Array, info: FrameInfo): Promise<Uint8Array> {
  const kind = transferSyntaxUID.slice(P.length + 1);
  const frameInfo = {
    width: info.columns,
    height: info.rows,
    bitsPerSample: info.bitsStored,
    componentCount: info.samplesPerPixel,
    isSigned: info.pixelRepresentation === 1,
    isUsingColorTransform: info.samplesPerPixel === 3,
  };
  let encoder: Encoder;
  if (kind === '80' || kind === '81') {
    encoder = new (await fullBuild('@cornerstonejs/codec-charls')).JpegLSEncoder!();
    if (kind === '81') encoder.setNearLossless!(2);
  } else if (kind === '90' || kind === '91') {
    encoder = new (await fullBuild('@cornerstonejs/codec-openjpeg')).J2KEncoder!();
    if (kind === '91') encoder.setQuality!(false, 0.005);
  } else if (kind === '201' || kind === '202' || kind === '203') {
    encoder = new (await fullBuild('@cornerstonejs/codec-openjph')).HTJ2KEncoder!();
    if (kind === '203') encoder.setQuality!(false, 0.0001);
    if (kind === '202') encoder.setProgressionOrder!(2); // OpenJPH: LRCP 0, RLCP 1, RPCL 2
  } else {
    throw new Error(`encodeFrame: no encoder for ${transferSyntaxUID}`);
  }
  try {
    encoder.getDecodedBuffer(frameInfo).set(pixels);
    encoder.encode();
    return encoder.getEncodedBuffer().slice();
  } finally {
    encoder.delete();
  }
}

/**
 * A CT-like 16-bit signed frame (Hounsfield units): air around an elliptic body of soft tissue
 * with a few organs and bones, and noise of about 10 HU, so that it compresses as real CT does
 * (about 2.5:1 lossless), not as a smooth test pattern would.
 */
export function phantom(size: number, seed = 1): Uint8Array {
  const out = new Int16Array(size * size);
  let s = seed >>> 0;
  const random = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const c = size / 2;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const dx = (x - c) / (size * 0.42);
      const dy = (y - c) / (size * 0.32);
      let hu = -1000;
      if (dx * dx + dy * dy < 1) {
        hu = 40;
        if ((x - c * 0.7) ** 2 + (y - c) ** 2 < (size * 0.1) ** 2) hu = -850; // lung
        if ((x - c * 1.3) ** 2 + (y - c) ** 2 < (size * 0.1) ** 2) hu = -850;
        if ((x - c) ** 2 + (y - c * 1.35) ** 2 < (size * 0.05) ** 2) hu = 700; // spine
        if ((x - c) ** 2 + (y - c * 0.9) ** 2 < (size * 0.06) ** 2) hu = 60 + 30 * Math.sin(x / 5); // organ with texture
      }
      out[y * size + x] = Math.round(hu + (random() + random() + random() - 1.5) * 12);
    }
  }
  return new Uint8Array(out.buffer);
}

export interface DecodeMeasure {
  transferSyntaxUID: string;
  encoder: string;
  size: number;
  frames: number;
  workers: number;
  /** Bytes of the one encoded frame decoded again and again, and its native size. */
  encodedBytes: number;
  nativeBytes: number;
  seconds: number;
  framesPerSecond: number;
}

/**
 * Decodes `frames` frames of size x size 16-bit CT (the same phantom frame, encoded once) through
 * a DecodePool of `workers` threads, all submitted at once (the pool's queue holds them), and
 * times it from the first submission to the last frame decoded, after one warm-up frame per
 * worker (thread start and WebAssembly compilation are not counted).
 */
export async function measureDecode(options: { syntax: string; frames?: number; size?: number; workers?: number }): Promise<DecodeMeasure> {
  const size = options.size ?? 512;
  const frames = options.frames ?? 200;
  const workers = options.workers ?? 2;
  const info: FrameInfo = {
    rows: size,
    columns: size,
    samplesPerPixel: 1,
    bitsAllocated: 16,
    bitsStored: 16,
    pixelRepresentation: 1,
    photometricInterpretation: 'MONOCHROME2',
    planarConfiguration: 0,
  };
  const native = phantom(size);
  const encoded = await encodeFrame(options.syntax, native, info);
  const pool = new DecodePool({ workers, maxQueue: frames });
  try {
    await Promise.all(Array.from({ length: workers }, () => pool.decode(options.syntax, encoded, info)));
    const start = performance.now();
    await Promise.all(Array.from({ length: frames }, () => pool.decode(options.syntax, encoded, info)));
    const seconds = (performance.now() - start) / 1000;
    return {
      transferSyntaxUID: options.syntax,
      encoder: ENCODABLE[options.syntax as keyof typeof ENCODABLE],
      size,
      frames,
      workers,
      encodedBytes: encoded.length,
      nativeBytes: native.length,
      seconds,
      framesPerSecond: frames / seconds,
    };
  } finally {
    await pool.close();
  }
}
