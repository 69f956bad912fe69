// The incremental, pass-through DICOM Part 10 scanner of ingest. An instance (up to several
// GiB) streams through `push()` once while the same bytes are chunked and encrypted elsewhere;
// the scanner keeps only the header, and learns the identity ingest needs before it can pick the
// study key, the DICOM JSON metadata, and the byte ranges of every frame and bulk value.
//
// Its parts: the File Meta parser (file-meta.ts), the tokenizer (tokenizer.ts), and the sink that
// builds metadata and layout from the tokens (scan-sink.ts).
import zlib from 'node:zlib';
import { VaultError, isVaultError } from '../core/errors.ts';
import type { InstanceIdentity, InstanceLayout, ScannedInstance } from './model.ts';
import { parseFileMeta, type FileMeta } from './file-meta.ts';
import { GrowableBuffer } from './growable-buffer.ts';
import { ScanSink } from './scan-sink.ts';
import { DicomTokenizer } from './tokenizer.ts';
import { describeTransferSyntax } from './transfer-syntax.ts';
import { firstString } from './metadata.ts';
import { malformed, truncated } from './wire.ts';

const MiB = 1024 * 1024;

/** Default limit of header bytes held in memory: 64 MiB. */
export const DEFAULT_MAX_HEADER_BYTES = 64 * MiB;
/** Default size above which binary values become BulkDataURIs: 1024 bytes. */
export const DEFAULT_BULK_DATA_THRESHOLD = 1024;
/**
 * Default limit of the memory one instance's metadata and layout may take: 64 MiB (scan-budget.ts
 * says what each record costs). The largest pydicom test file takes 0.25 MiB, the benchmark's
 * 4 GiB Enhanced MR (8,191 frames, each with its per-frame functional groups) 12.4 MiB, a
 * whole-slide image of 300,000 single-fragment tiles 46 MiB: Enhanced MR and CT from scanners
 * carry several times the benchmark's per-frame attributes, hence the room. An attack refused at
 * the limit costs the node ~100-165 MiB of RSS (V8's heap is about twice what it holds).
 */
export const DEFAULT_MAX_METADATA_BYTES = 64 * MiB;
/**
 * Default deepest nesting of sequences: 64 levels. Real data nests a few levels (an SR content
 * tree ten or so); what reads the metadata later (JSON, the catalog) recurses once per level.
 */
export const DEFAULT_MAX_SEQUENCE_DEPTH = 64;
/**
 * Default limit of bytes read before the instance is identified: 16 MiB. Until the Study
 * Instance UID is known ingest cannot pick the study's key, so it holds the instance's chunks in
 * plaintext; the identifying attributes come in the first few KiB of real instances (group 0020,
 * before anything large but a private value).
 */
export const DEFAULT_MAX_BYTES_BEFORE_IDENTITY = 16 * MiB;
/** Default limit of the File Meta Information: 1 MiB (real ones: a few hundred bytes). */
export const DEFAULT_MAX_FILE_META_BYTES = 1 * MiB;

export interface DicomScannerOptions {
  /**
   * Most bytes the scanner holds and decodes, in bytes. Default DEFAULT_MAX_HEADER_BYTES
   * (64 MiB). Counts everything except values that stream past unbuffered (Pixel Data,
   * fragments, binary values over `bulkDataThreshold`), so it bounds the header (everything
   * before top-level Pixel Data) without refusing, say, a large Encapsulated Document. For
   * deflated data sets it bounds the compressed header and (times two) the inflated one.
   * Exceeded → VaultError('TOO_LARGE').
   */
  maxHeaderBytes?: number;
  /**
   * Binary values (OB OD OF OL OV OW UN) longer than this many bytes are not buffered and
   * become `BulkDataURI`s with their byte range in `layout.bulk`. Default
   * DEFAULT_BULK_DATA_THRESHOLD (1024 bytes).
   */
  bulkDataThreshold?: number;
  /**
   * Most memory the metadata (DICOM JSON) and layout (frames, fragments, bulk data ranges) of
   * the instance may take, in bytes, as estimated per record kept (elements, items, values,
   * fragments, frames: scan-sink.ts). Default DEFAULT_MAX_METADATA_BYTES (64 MiB). Exceeded →
   * VaultError('TOO_LARGE').
   */
  maxMetadataBytes?: number;
  /**
   * Most sequences nested in one another, in levels. Default DEFAULT_MAX_SEQUENCE_DEPTH (64).
   * Exceeded → VaultError('DICOM_MALFORMED').
   */
  maxSequenceDepth?: number;
  /**
   * Most bytes of the instance read before its identity is known, in bytes. Default
   * DEFAULT_MAX_BYTES_BEFORE_IDENTITY (16 MiB). Exceeded → VaultError('TOO_LARGE').
   */
  maxBytesBeforeIdentity?: number;
  /**
   * Most bytes of preamble and File Meta Information, in bytes. Default
   * DEFAULT_MAX_FILE_META_BYTES (1 MiB). Exceeded → VaultError('TOO_LARGE').
   */
  maxFileMetaBytes?: number;
}

const PHASE_META = 0;
const PHASE_DATASET = 1;
const PHASE_DEFLATED = 2;
const PHASE_ENDED = 3;

/** First compressed size at which a deflated header is inflated: 16 KiB. */
const DEFLATE_FIRST_ATTEMPT = 16 * 1024;

export class DicomScanner {
  readonly #maxHeaderBytes: number;
  readonly #bulkDataThreshold: number;
  readonly #maxMetadataBytes: number;
  readonly #maxSequenceDepth: number;
  readonly #maxBytesBeforeIdentity: number;
  readonly #maxFileMetaBytes: number;
  #bytesSeen = 0;
  #phase = PHASE_META;
  #metaBuf: GrowableBuffer | undefined;
  /** An incomplete File Meta is parsed again once its buffer reaches this length (linear work). */
  #nextMetaParse = 0;
  #meta: FileMeta | undefined;
  #tokenizer: DicomTokenizer | undefined;
  #sink: ScanSink | undefined;
  #failure: VaultError | undefined;
  // Deflated data sets: the compressed bytes are kept until the header has been inflated.
  // zlib has no synchronous incremental inflate (processChunkSync closes the stream after one
  // call), and push() is synchronous, so the compressed prefix is re-inflated when it has
  // doubled: linear work overall, and only the new output is fed to the tokenizer.
  #compressed: GrowableBuffer | undefined;
  #inflatedPrefix = 0;
  #inflatedBytes = 0;
  #nextInflate = DEFLATE_FIRST_ATTEMPT;

  constructor(options: DicomScannerOptions = {}) {
    this.#maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    this.#bulkDataThreshold = options.bulkDataThreshold ?? DEFAULT_BULK_DATA_THRESHOLD;
    this.#maxMetadataBytes = options.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES;
    this.#maxSequenceDepth = options.maxSequenceDepth ?? DEFAULT_MAX_SEQUENCE_DEPTH;
    this.#maxBytesBeforeIdentity = options.maxBytesBeforeIdentity ?? DEFAULT_MAX_BYTES_BEFORE_IDENTITY;
    this.#maxFileMetaBytes = options.maxFileMetaBytes ?? DEFAULT_MAX_FILE_META_BYTES;
  }

  /** Bytes seen so far. */
  get bytesSeen(): number {
    return this.#bytesSeen;
  }

  /**
   * True once the identifying attributes are known: when the top-level data set has reached
   * Series Instance UID (0020,000E), or at top-level Pixel Data, or at the end of the data set.
   * That is as soon as ingest can pick the study key, and never later than the end of the header.
   */
  get identified(): boolean {
    return this.#sink?.identity !== undefined;
  }

  /** Study/Series/SOP Instance UIDs, SOP Class UID and transfer syntax; once `identified`. */
  identity(): InstanceIdentity {
    const identity = this.#sink?.identity;
    if (identity === undefined) throw new VaultError('INTERNAL', 'DicomScanner.identity() called before the instance was identified');
    return { ...identity };
  }

  /**
   * Patient ID and Issuer of Patient ID ('' when absent), once `identified`: both precede the
   * UIDs identity waits for (tags come in ascending order), so ingest can file the study's key
   * under its patient (src/format/keys.ts) before the first chunk is sealed.
   */
  patient(): { patientId: string; issuer: string } {
    const root = this.#sink?.root;
    return { patientId: firstString(root?.['00100020']) ?? '', issuer: firstString(root?.['00100021']) ?? '' };
  }

  /** Feeds the next bytes; throws NOT_DICOM, DICOM_MALFORMED, INVALID_UID or TOO_LARGE as soon as they are known bad. */
  push(chunk: Uint8Array): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#phase === PHASE_ENDED) throw new VaultError('INTERNAL', 'DicomScanner.push() after end()');
    this.#bytesSeen += chunk.length;
    this.#guard(() => {
      this.#push(chunk, false);
      if (this.#bytesSeen > this.#maxBytesBeforeIdentity && this.#sink?.identity === undefined) {
        throw new VaultError(
          'TOO_LARGE',
          `instance not identified within its first ${this.#maxBytesBeforeIdentity} bytes (maxBytesBeforeIdentity): Study, Series and SOP Instance UIDs must come before`,
        );
      }
    });
  }

  /** At the end of the stream: checks completeness and returns what was learnt. */
  end(): ScannedInstance {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#phase === PHASE_ENDED) throw new VaultError('INTERNAL', 'DicomScanner.end() called twice');
    return this.#guard(() => this.#end());
  }

  #guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      this.#failure = isVaultError(err)
        ? err
        : new VaultError('DICOM_MALFORMED', `unexpected failure while scanning at offset ${this.#bytesSeen}`, { cause: err });
      throw this.#failure;
    }
  }

  #push(chunk: Uint8Array, final: boolean): void {
    switch (this.#phase) {
      case PHASE_META: {
        let buf = chunk;
        if (this.#metaBuf !== undefined || final) {
          this.#metaBuf ??= new GrowableBuffer();
          this.#metaBuf.append(chunk);
          buf = this.#metaBuf.view();
          // Each attempt parses the File Meta from its start: attempts only when the buffer has
          // doubled keep the work linear however small the pieces.
          if (!final && buf.length < this.#nextMetaParse && buf.length <= this.#maxFileMetaBytes) return;
        }
        const meta = parseFileMeta(buf, final);
        if (meta === undefined) {
          if (this.#metaBuf === undefined) {
            this.#metaBuf = new GrowableBuffer();
            this.#metaBuf.append(chunk);
          }
          this.#nextMetaParse = 2 * this.#metaBuf.length;
          if (this.#metaBuf.length > this.#maxFileMetaBytes) {
            throw new VaultError('TOO_LARGE', `File Meta Information exceeds the limit of ${this.#maxFileMetaBytes} bytes (maxFileMetaBytes)`);
          }
          return;
        }
        this.#metaBuf = undefined;
        this.#startDataset(meta);
        const rest = buf.subarray(meta.datasetOffset);
        if (rest.length > 0) this.#push(rest, false);
        return;
      }
      case PHASE_DATASET:
        this.#tokenizer!.push(chunk);
        return;
      case PHASE_DEFLATED: {
        if (this.#sink!.headerComplete) return; // the rest is not needed (and its offsets mean nothing)
        const compressed = this.#compressed!;
        compressed.append(chunk);
        if (compressed.length > this.#maxHeaderBytes) {
          throw new VaultError('TOO_LARGE', `deflated DICOM header exceeds the limit of ${this.#maxHeaderBytes} bytes`);
        }
        if (compressed.length >= this.#nextInflate) this.#inflate();
        return;
      }
      default:
        return;
    }
  }

  #startDataset(meta: FileMeta): void {
    this.#meta = meta;
    const facts = describeTransferSyntax(meta.transferSyntaxUID);
    this.#sink = new ScanSink(meta, !facts.deflated, facts.deflated ? Number.POSITIVE_INFINITY : this.#bulkDataThreshold, this.#maxMetadataBytes);
    this.#tokenizer = new DicomTokenizer({
      sink: this.#sink,
      explicitVR: facts.explicitVR,
      littleEndian: facts.littleEndian,
      startOffset: facts.deflated ? 0 : meta.datasetOffset,
      // Offsets into inflated bytes are useless to readers: keep every value inline instead.
      bulkDataThreshold: facts.deflated ? Number.POSITIVE_INFINITY : this.#bulkDataThreshold,
      maxBufferedBytes: this.#maxHeaderBytes,
      maxSequenceDepth: this.#maxSequenceDepth,
      stopAtPixelData: facts.deflated,
    });
    if (facts.deflated) {
      this.#phase = PHASE_DEFLATED;
      this.#compressed = new GrowableBuffer();
    } else {
      this.#phase = PHASE_DATASET;
    }
  }

  /**
   * Inflates the compressed prefix and feeds the new output. When the output of the whole
   * prefix would exceed the inflated-size limit (a highly compressible image right after the
   * header), a shorter prefix is tried: the header is usually found in it.
   */
  #inflate(): void {
    const compressed = this.#compressed!.view();
    const limit = 2 * this.#maxHeaderBytes;
    let length = compressed.length;
    let out: Buffer;
    for (;;) {
      try {
        out = zlib.inflateRawSync(compressed.subarray(0, length), { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: limit });
        break;
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' && length - this.#inflatedPrefix > 1) {
          length = this.#inflatedPrefix + Math.floor((length - this.#inflatedPrefix) / 2);
          continue;
        }
        throw inflateError(err, limit);
      }
    }
    this.#inflatedPrefix = length;
    this.#nextInflate = Math.max(2 * length, length + DEFLATE_FIRST_ATTEMPT);
    if (out.length > this.#inflatedBytes) {
      const fresh = out.subarray(this.#inflatedBytes);
      this.#inflatedBytes = out.length;
      this.#tokenizer!.push(fresh);
    }
  }

  #end(): ScannedInstance {
    if (this.#phase === PHASE_META) {
      const pending = this.#metaBuf?.view() ?? new Uint8Array(0);
      this.#metaBuf = undefined;
      this.#push(pending, true);
      if (this.#phase === PHASE_META) throw new VaultError('NOT_DICOM', 'no DICOM data set');
    }
    const sink = this.#sink!;
    const tokenizer = this.#tokenizer!;
    if (this.#phase === PHASE_DEFLATED) {
      if (!sink.headerComplete) {
        const compressed = this.#compressed!.view();
        while (!sink.headerComplete && this.#inflatedPrefix < compressed.length) this.#inflate();
        if (!tokenizer.halted) {
          // The whole data set was inflated with sync flushes; a full inflate also checks that
          // the deflate stream is complete.
          try {
            zlib.inflateRawSync(compressed, { maxOutputLength: 2 * this.#maxHeaderBytes });
          } catch (err) {
            throw inflateError(err, 2 * this.#maxHeaderBytes);
          }
          tokenizer.end();
        }
      }
      this.#compressed = undefined;
    } else {
      tokenizer.end();
    }
    sink.finishHeader();
    this.#phase = PHASE_ENDED;
    const meta = this.#meta!;
    const identity = sink.identity!;
    const layout: InstanceLayout = {
      transferSyntaxUID: meta.transferSyntaxUID,
      datasetOffset: meta.datasetOffset,
      pixelData: sink.pixelData,
      frames: sink.frames(meta.transferSyntaxUID),
      bulk: sink.bulk,
    };
    return { ...identity, metadata: sink.root, layout, size: this.#bytesSeen, heldBytes: sink.heldBytes };
  }
}

function inflateError(err: unknown, limit: number): VaultError {
  const code = (err as { code?: string }).code;
  if (code === 'Z_BUF_ERROR') return truncated('deflated data set ends before its deflate stream does');
  if (code === 'ERR_BUFFER_TOO_LARGE') return new VaultError('TOO_LARGE', `inflated DICOM header exceeds ${limit} bytes`, { cause: err });
  return malformed(`deflated data set is corrupt: ${(err as Error).message}`);
}

/** Scans a whole instance from an async iterable of its bytes (tests and tools). */
export async function scanInstance(source: AsyncIterable<Uint8Array>, options?: DicomScannerOptions): Promise<ScannedInstance> {
  const scanner = new DicomScanner(options);
  for await (const chunk of source) scanner.push(chunk);
  return scanner.end();
}
