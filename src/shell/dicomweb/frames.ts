// The frames of a stored instance, for WADO-RS frames and bulk data (wado.ts) and the rendered
// resources (rendered.ts): located through the instance's layout, read from verified chunks, and
// decoded on the codecs' worker pool when they are compressed.
import type { CatalogInstance } from '../../catalog/records.ts';
import { isVaultError, VaultError } from '../../core/errors.ts';
import { publishDecodeFailed } from '../../core/events.ts';
import { sharedDecodePool, type DecodedFrame, type FrameInfo } from '../../dicom/codecs/index.ts';
import { explainNativeFrames, explainUnlocatedFrames, frameCountOf, frameInfoOf, type ByteReader } from '../../dicom/decompress.ts';
import { DeflatedValueReader } from '../../dicom/deflated.ts';
import { firstNumber, firstString } from '../../dicom/metadata.ts';
import type { ByteRange, DicomJsonDataset } from '../../dicom/model.ts';
import { describeTransferSyntax, EXPLICIT_VR_LE } from '../../dicom/transfer-syntax.ts';
import { DECODE_AHEAD_BYTES, type FrameDecoder } from '../../dicom/transcode.ts';
import { openInstance, type PieceLoans, type OpenedInstance, type ReadOptions, type ReaderDeps } from '../../read/instance-reader.ts';

export async function* readRanges(
  opened: OpenedInstance,
  ranges: ByteRange[],
  options: ReadOptions & { signal: AbortSignal },
  swapWidth: number,
): AsyncGenerator<Uint8Array> {
  for (const r of ranges) {
    if (swapWidth === 0) {
      yield* opened.read(r, options);
      continue;
    }
    // Big-endian native pixel data: frames are sent little endian (PS3.18 8.7.3.3.2). Gather
    // the frame (frames are a few MiB at most in such legacy objects) and swap words. Its
    // pieces are kept, so they are read without loans.
    const parts: Buffer[] = [];
    for await (const p of opened.read(r, { signal: options.signal })) parts.push(p);
    const buf = Buffer.concat(parts);
    if (swapWidth === 2) buf.swap16();
    else if (swapWidth === 4) buf.swap32();
    else if (swapWidth === 8) buf.swap64();
    yield buf;
  }
}

export function bitsAllocated(meta: DicomJsonDataset): number {
  const v = meta['00280100']?.Value?.[0];
  return typeof v === 'number' ? v : 16;
}

/** Pixel Data's tag. */
export const PIXEL_DATA = '7FE00010';

/**
 * A deflated instance with an image: the scanner stops at its Pixel Data (offsets into the
 * inflated data set are useless to readers), so it is known by its Image Pixel module. Not one
 * whose pixels are elsewhere (JPIP: Pixel Data Provider URL).
 */
export function isDeflatedImage(inst: CatalogInstance): boolean {
  const facts = describeTransferSyntax(inst.transferSyntaxUID);
  if (!facts.deflated || facts.encapsulated) return false;
  const m = inst.metadata;
  return m[PIXEL_DATA] === undefined && m['00287FE0'] === undefined && ['00280010', '00280011', '00280100'].every((t) => firstNumber(m[t]) !== undefined);
}

/** Whether the instance has Pixel Data (to send as frames, or to render). */
export function hasPixelData(inst: CatalogInstance): boolean {
  return inst.layout.pixelData !== null || isDeflatedImage(inst);
}

/** A refusal that names the instance that has no image. */
export function noPixelData(inst: CatalogInstance, what: string): VaultError {
  const modality = firstString(inst.metadata['00080060']);
  return new VaultError(
    'NOT_ACCEPTABLE',
    `instance ${inst.sopInstanceUID} has no Pixel Data (SOP Class ${inst.sopClassUID}${modality === undefined ? '' : `, modality ${modality}`}): it has no ${what}`,
  );
}

/** The frames of an instance: how many, and each one's bytes. */
export interface InstanceFrames {
  count: number;
  /** The transfer syntax of the bytes given: as stored when encapsulated, else Explicit VR Little Endian. */
  transferSyntaxUID: string;
  encapsulated: boolean;
  /** Frame `n` (1-based) whole: a codestream (its fragments joined), or native little-endian samples. */
  read(n: number): Promise<Uint8Array>;
  /** Frame `n` as it streams, its pieces lent through `loans` where they can be. */
  stream(n: number, loans: PieceLoans): AsyncIterable<Uint8Array>;
  /** A bulk value of the instance (BulkDataURI path), little endian; undefined when it has none stored apart. */
  bulk(path: string): Promise<Uint8Array | undefined>;
  /** Ends what reading left open (a deflated instance's inflating pass). */
  close(): Promise<void>;
}

/**
 * Opens an instance's frames. NOT_ACCEPTABLE, saying what is wrong, when it has no Pixel Data or
 * its frames cannot be located (a wrong fragment table, a bad Number of Frames).
 */
export async function openFrames(deps: ReaderDeps, inst: CatalogInstance, signal: AbortSignal): Promise<InstanceFrames> {
  if (!hasPixelData(inst)) throw noPixelData(inst, 'frames');
  const opened = await openInstance(deps, inst, { signal });
  const cannot = (why: string): VaultError =>
    new VaultError(
      'NOT_ACCEPTABLE',
      `the frames of instance ${inst.sopInstanceUID} cannot be located: ${why}. The whole instance can still be retrieved as stored (transfer-syntax=*)`,
    );
  const pixelData = inst.layout.pixelData;
  if (pixelData === null) {
    // Deflated: cut out of the inflated Pixel Data, whose frames follow each other.
    const count = frameCountOf(inst.metadata);
    const frameLength = nativeFrameLength(inst.metadata);
    if (count === undefined || frameLength === undefined)
      throw cannot(explainNativeFrames(inst.metadata, { valueOffset: 0, valueLength: -1, encapsulated: false, vr: 'OW' }));
    const reader = new DeflatedValueReader(() => opened.read(undefined, { signal }), PIXEL_DATA);
    const read = (n: number): Promise<Uint8Array> => reader.read({ offset: (n - 1) * frameLength, length: frameLength });
    return {
      count,
      transferSyntaxUID: EXPLICIT_VR_LE,
      encapsulated: false,
      read,
      stream: (n) => single(read(n)),
      // Every other value of a deflated instance is in its metadata.
      bulk: async () => undefined,
      close: () => reader.close(),
    };
  }
  const ranges = inst.layout.frames;
  if (ranges.length === 0) {
    throw cannot(
      pixelData.encapsulated
        ? await explainUnlocatedFrames(byteReader(opened, signal), pixelData, inst.metadata, inst.transferSyntaxUID, inst.size)
        : explainNativeFrames(inst.metadata, pixelData),
    );
  }
  const ts = describeTransferSyntax(inst.transferSyntaxUID);
  const swap = !ts.littleEndian && !pixelData.encapsulated && bitsAllocated(inst.metadata) > 8 ? bitsAllocated(inst.metadata) / 8 : 0;
  const bytes = byteReader(opened, signal);
  return {
    count: ranges.length,
    transferSyntaxUID: pixelData.encapsulated ? inst.transferSyntaxUID : EXPLICIT_VR_LE,
    encapsulated: pixelData.encapsulated,
    read: async (n) => {
      const parts = await Promise.all(ranges[n - 1]!.map((r) => bytes(r.offset, r.length)));
      // A frame of one range within one chunk is a view of that (kept) chunk: copied, since
      // the decoder takes it and the swap below changes it.
      const frame = Buffer.concat(parts);
      if (swap === 2) frame.swap16();
      else if (swap === 4) frame.swap32();
      else if (swap === 8) frame.swap64();
      return frame;
    },
    stream: (n, loans) => readRanges(opened, ranges[n - 1]!, { signal, loans }, swap),
    bulk: async (path) => {
      const range = inst.layout.bulk[path];
      if (range === undefined) return undefined;
      const pieces: Uint8Array[] = [];
      for await (const p of readRanges(opened, [range], { signal }, ts.littleEndian ? 0 : 2)) pieces.push(p);
      return Buffer.concat(pieces);
    },
    close: async () => {},
  };
}

/** Bytes of one native frame from the metadata; undefined when frames do not start on byte boundaries. */
function nativeFrameLength(meta: DicomJsonDataset): number | undefined {
  const rows = firstNumber(meta['00280010']);
  const columns = firstNumber(meta['00280011']);
  const bits = firstNumber(meta['00280100']);
  if (rows === undefined || columns === undefined || bits === undefined) return undefined;
  const photometric = firstString(meta['00280004'])?.trim();
  // YBR_*_422 native data holds 2 samples per pixel on average (Cb and Cr are shared).
  const samples = photometric === 'YBR_FULL_422' || photometric === 'YBR_PARTIAL_422' ? 2 : (firstNumber(meta['00280002']) ?? 1);
  const bitsPerFrame = rows * columns * samples * bits;
  return bitsPerFrame > 0 && bitsPerFrame % 8 === 0 ? bitsPerFrame / 8 : undefined;
}

/** Chunks a byteReader keeps: consecutive frames (and item headers) mostly share chunks. */
const KEPT_CHUNKS = 4;

/**
 * Random access to an instance's bytes through its verified chunks, the last few kept: frames
 * read one after another for decoding (a JPEG-LS frame of a CT is a sixth of a chunk) and the
 * item headers of a fragment table would otherwise open the same chunk again and again.
 */
function byteReader(opened: OpenedInstance, signal: AbortSignal): ByteReader {
  const kept = new Map<number, Promise<Buffer>>();
  const chunk = (index: number): Promise<Buffer> => {
    let p = kept.get(index);
    if (p === undefined) {
      p = opened.chunk(index, { signal });
      p.catch(() => kept.delete(index));
      kept.set(index, p);
      if (kept.size > KEPT_CHUNKS) kept.delete(kept.keys().next().value!);
    }
    return p;
  };
  const size = opened.node.chunkSize;
  return async (offset, length) => {
    if (offset < 0 || offset + length > opened.size)
      throw new VaultError('INSTANCE_CORRUPT', `bytes ${offset}-${offset + length} lie outside instance ${opened.cid}`);
    const first = Math.floor(offset / size);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / size);
    const chunks = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => chunk(first + i)));
    if (chunks.length === 1) return chunks[0]!.subarray(offset - first * size, offset - first * size + length);
    const out = Buffer.allocUnsafe(length);
    let filled = 0;
    for (const [i, bytes] of chunks.entries()) {
      const from = i === 0 ? offset - first * size : 0;
      const take = Math.min(bytes.length - from, length - filled);
      bytes.copy(out, filled, from, from + take);
      filled += take;
    }
    return out;
  };
}

/**
 * Decodes the frames of `inst` (its codestreams as stored) on the shared decode pool. A frame that
 * fails is counted (publishDecodeFailed: dicomvault_decode_failures_total) and its error names the
 * instance and the frame.
 */
export function frameDecoder(inst: Pick<CatalogInstance, 'sopInstanceUID' | 'transferSyntaxUID' | 'metadata'>, signal: AbortSignal): FrameDecoder {
  let info: FrameInfo | undefined;
  return {
    decode: async (encoded: Uint8Array, n: number): Promise<DecodedFrame> => {
      info ??= frameInfoOf(inst.metadata);
      try {
        return await sharedDecodePool().decode(inst.transferSyntaxUID, encoded, info, { signal });
      } catch (err) {
        throw decodeFailure(err, inst, n);
      }
    },
  };
}

/** A DECODE_FAILED error counted and re-thrown naming the instance and frame; any other error as it is. */
export function decodeFailure(err: unknown, inst: Pick<CatalogInstance, 'sopInstanceUID' | 'transferSyntaxUID'>, frame: number): unknown {
  if (!isVaultError(err, 'DECODE_FAILED')) return err;
  publishDecodeFailed(inst.transferSyntaxUID, err.message);
  return new VaultError('DECODE_FAILED', `frame ${frame} of instance ${inst.sopInstanceUID} (${inst.transferSyntaxUID}) could not be decoded: ${err.message}`, {
    cause: err,
    details: { frame },
  });
}

/** Frames decoded at once for one response: as many as fit DECODE_AHEAD_BYTES, 1 to 4. */
export function decodeAhead(frameLength: number): number {
  return Math.min(4, Math.max(1, Math.floor(DECODE_AHEAD_BYTES / Math.max(1, frameLength))));
}

/**
 * `fn` of each item, in order, with up to `ahead` running at once: frames are decoded (and
 * rendered) on the pool's workers while earlier ones are written out.
 */
export async function* mapAhead<T, R>(items: Iterable<T>, ahead: number, fn: (item: T) => Promise<R>): AsyncGenerator<R> {
  const iterator = items[Symbol.iterator]();
  const running: Array<Promise<R>> = [];
  const fill = (): void => {
    while (running.length < ahead) {
      const next = iterator.next();
      if (next.done === true) return;
      const p = fn(next.value);
      p.catch(() => {}); // awaited in order below; an early stop leaves it unseen
      running.push(p);
    }
  };
  fill();
  while (running.length > 0) {
    const result = await running.shift()!;
    fill();
    yield result;
  }
}

/** One piece (given or awaited) as a stream. */
export async function* single(piece: Uint8Array | Promise<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield await piece;
}

/** `parts`, then `frames` closed, however the consumer stops. */
export async function* closing<T>(parts: AsyncGenerator<T>, frames: InstanceFrames): AsyncGenerator<T> {
  try {
    yield* parts;
  } finally {
    await frames.close();
  }
}
