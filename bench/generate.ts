// Synthetic DICOM studies for benchmarks, generated on the fly: a plan is a few numbers and
// UIDs, and `open()` streams an instance's exact Part 10 bytes in chunks of at most 1 MiB, so a
// 16 GiB study needs neither a 16 GiB file nor 16 GiB of memory. Same spec + seed => same bytes.
//
// Data mirrors the Orthanc peer's gen_study.py: MR Image Storage single-frame instances or
// Enhanced MR multi-frame instances with shared and per-frame functional groups, Explicit VR
// Little Endian, random 12-bit pixel data unique per instance (nothing dedups or compresses).
//
// Why hand-written: dcmjs/dicom-parser write whole data sets in memory; here only the header
// is encoded and Pixel Data is produced block by block.

import { createCipheriv, createHash } from 'node:crypto';

/** Largest chunk `open()` yields, in bytes (1 MiB). */
export const CHUNK_BYTES = 1 << 20;
export const DEFAULT_SEED = 1;
/** Rows and columns of a frame when not given. */
export const DEFAULT_ROWS = 512;
export const DEFAULT_COLUMNS = 512;
/** Frames per multi-frame instance when neither `frames` nor `instances` decide it. */
export const DEFAULT_FRAMES = 512;
/** Instance counts when neither `totalBytes` nor `instances` is given (the Orthanc datasets). */
export const DEFAULT_MULTIFRAME_INSTANCES = 4;
export const DEFAULT_SINGLE_INSTANCES = 2000;

export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
export const MR_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.4';
export const ENHANCED_MR_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.4.1';

// Part 10 needs a value here; a fixed UUID-derived UID identifies this generator.
const IMPLEMENTATION_CLASS_UID = uidFromHash('dicom-vault synthetic study generator');
const IMPLEMENTATION_VERSION_NAME = 'DVAULT_GEN_1';
// OW values have a 32-bit length and 0xFFFFFFFF means "undefined".
const MAX_PIXEL_BYTES = 0xfffffffe;
// blockPattern packs the instance index into 24 bits.
const MAX_INSTANCES = 2 ** 24;

export interface StudySpec {
  /** 'multiframe': few huge Enhanced MR instances; 'single': many small MR instances. */
  kind: 'multiframe' | 'single';
  /**
   * Approximate study size in bytes; picks the instance (and, for multiframe, frame) counts
   * that `instances`/`frames` leave open. Ignored when both are given.
   */
  totalBytes?: number;
  instances?: number;
  /** Frames per instance; multiframe only (single is always 1). Default 512 (capped by totalBytes). */
  frames?: number;
  /** Default 512. */
  rows?: number;
  /** Default 512. */
  columns?: number;
  /** Default 1. Different seeds give different UIDs and pixel data. */
  seed?: number;
  /** Default: derived from seed and kind. Also varies all other UIDs and pixel data. */
  studyInstanceUID?: string;
  /** Default `BENCH-<KIND>-<seed>`. */
  patientId?: string;
  /** Only Explicit VR Little Endian for now. */
  transferSyntax?: 'explicit-le';
}

export interface GeneratedInstance {
  sopInstanceUID: string;
  seriesInstanceUID: string;
  /** 1-based, as in InstanceNumber. */
  instanceNumber: number;
  /** Exact Part 10 byte count. */
  size: number;
  numberOfFrames: number;
  /** Bytes per frame (rows * columns * 2). */
  frameBytes: number;
  /** Offset of the first Pixel Data value byte; frame n (1-based) starts at + (n-1)*frameBytes. */
  pixelDataOffset: number;
  /**
   * Streams the exact bytes [start, end) (default: all), chunks of at most CHUNK_BYTES. Only the
   * 1 MiB pixel blocks touching the range are generated. Fresh buffers each call, unless `pool`
   * is given: pixel blocks are then written into its buffers, and the caller gives each chunk
   * back (`pool.give`) once nothing reads it any more.
   */
  open(start?: number, end?: number, pool?: BlockPool): AsyncIterable<Buffer>;
  /** sha256 hex of all bytes; computed by streaming open() once, then cached. */
  sha256(): Promise<string>;
}

export interface GeneratedStudy {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  patientId: string;
  kind: StudySpec['kind'];
  rows: number;
  columns: number;
  instances: GeneratedInstance[];
  /** Sum of the instances' sizes. */
  totalBytes: number;
}

interface Plan {
  kind: StudySpec['kind'];
  instances: number;
  frames: number;
  rows: number;
  columns: number;
}

interface StudyContext {
  key: Buffer;
  kind: StudySpec['kind'];
  rows: number;
  columns: number;
  frames: number;
  studyUID: string;
  seriesUID: string;
  frameOfReferenceUID: string;
  dimensionOrganizationUID: string;
  patientId: string;
  accession: string;
  /** 1 MiB of 12-bit samples shared by the study; see pixelBlock. */
  base: Uint32Array;
  /** Study-specific 48-bit offset so two seeds never share block patterns. */
  patternSalt: bigint;
}

export function planStudy(spec: StudySpec): GeneratedStudy {
  if (spec.transferSyntax !== undefined && spec.transferSyntax !== 'explicit-le') {
    throw new RangeError(`unsupported transferSyntax ${String(spec.transferSyntax)}`);
  }
  const plan = resolvePlan(spec);
  const seed = spec.seed ?? DEFAULT_SEED;
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
  if (spec.studyInstanceUID !== undefined && !isValidUid(spec.studyInstanceUID)) {
    throw new RangeError(`not a valid UID: ${spec.studyInstanceUID}`);
  }
  const patientId = spec.patientId ?? `BENCH-${plan.kind.toUpperCase()}-${seed}`;
  if (patientId.length > 64 || /[\\\x00-\x1f]/.test(patientId)) {
    throw new RangeError('patientId must be at most 64 characters without backslash or control characters');
  }
  const key = createHash('sha256')
    .update(`dicom-vault-gen/v1\0${plan.kind}\0${seed}\0${spec.studyInstanceUID ?? ''}`)
    .digest();
  const derive = (role: string): string => uidFromHash(`${key.toString('hex')}/${role}`);
  const ctx: StudyContext = {
    key,
    kind: plan.kind,
    rows: plan.rows,
    columns: plan.columns,
    frames: plan.frames,
    studyUID: spec.studyInstanceUID ?? derive('study'),
    seriesUID: derive('series'),
    frameOfReferenceUID: derive('frame-of-reference'),
    dimensionOrganizationUID: derive('dimension-organization'),
    patientId,
    accession: `A${(key.readUInt32BE(0) % 1e9).toString().padStart(9, '0')}`,
    base: makeBase(key),
    patternSalt: BigInt(`0x${key.subarray(16, 22).toString('hex')}`),
  };

  const instances: GeneratedInstance[] = [];
  let totalBytes = 0;
  for (let i = 0; i < plan.instances; i++) {
    const inst = makeInstance(ctx, i, derive(`sop/${i}`));
    instances.push(inst);
    totalBytes += inst.size;
  }
  return {
    studyInstanceUID: ctx.studyUID,
    seriesInstanceUID: ctx.seriesUID,
    patientId,
    kind: plan.kind,
    rows: plan.rows,
    columns: plan.columns,
    instances,
    totalBytes,
  };
}

function resolvePlan(spec: StudySpec): Plan {
  const rows = positiveInt('rows', spec.rows ?? DEFAULT_ROWS, 0xffff);
  const columns = positiveInt('columns', spec.columns ?? DEFAULT_COLUMNS, 0xffff);
  const frameBytes = rows * columns * 2;
  const total = spec.totalBytes === undefined ? undefined : positiveInt('totalBytes', spec.totalBytes);
  if (spec.kind === 'single') {
    if (spec.frames !== undefined && spec.frames !== 1) throw new RangeError('single-frame studies have frames = 1');
    // ~1 KiB of header per instance is close enough for "approximate".
    const instances = spec.instances ?? (total === undefined ? DEFAULT_SINGLE_INSTANCES : Math.max(1, Math.round(total / (frameBytes + 1024))));
    return { kind: 'single', instances: positiveInt('instances', instances, MAX_INSTANCES), frames: 1, rows, columns };
  }
  if (spec.kind !== 'multiframe') throw new RangeError(`unknown kind ${String(spec.kind)}`);
  let { instances, frames } = spec;
  if (total !== undefined) {
    if (instances === undefined && frames === undefined) {
      frames = Math.min(DEFAULT_FRAMES, Math.max(1, Math.round(total / frameBytes)));
    }
    if (instances === undefined) instances = Math.max(1, Math.round(total / (frameBytes * (frames ?? DEFAULT_FRAMES))));
    else if (frames === undefined) frames = Math.max(1, Math.round(total / (frameBytes * instances)));
  }
  instances = positiveInt('instances', instances ?? DEFAULT_MULTIFRAME_INSTANCES, MAX_INSTANCES);
  frames = positiveInt('frames', frames ?? DEFAULT_FRAMES);
  if (frames * frameBytes > MAX_PIXEL_BYTES) {
    throw new RangeError(`one instance's pixel data would be ${frames * frameBytes} bytes; OW allows at most ${MAX_PIXEL_BYTES}`);
  }
  return { kind: 'multiframe', instances, frames, rows, columns };
}

function positiveInt(name: string, v: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(v) || v < 1 || v > max) throw new RangeError(`${name} must be an integer in 1..${max}, got ${v}`);
  return v;
}

function makeInstance(ctx: StudyContext, index: number, sopUID: string): GeneratedInstance {
  const frameBytes = ctx.rows * ctx.columns * 2;
  const pixelBytes = frameBytes * ctx.frames;
  // The header is rebuilt on each open() rather than kept: 30k single-frame instances would
  // otherwise pin their headers for the whole run. Building one takes microseconds.
  const header = (): Buffer => encodeHeader(ctx, index, sopUID, pixelBytes);
  const headerBytes = header().length;
  const size = headerBytes + pixelBytes;
  let digest: Promise<string> | undefined;

  async function* open(start = 0, end = size, pool?: BlockPool): AsyncGenerator<Buffer> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end > size || start > end) {
      throw new RangeError(`range [${start}, ${end}) is outside [0, ${size})`);
    }
    if (start < headerBytes) {
      const h = header();
      for (let o = start; o < Math.min(end, headerBytes); o += CHUNK_BYTES) {
        yield h.subarray(o, Math.min(o + CHUNK_BYTES, end, headerBytes));
      }
    }
    const ps = Math.max(start, headerBytes) - headerBytes;
    const pe = end - headerBytes;
    for (let block = Math.floor(ps / CHUNK_BYTES); block * CHUNK_BYTES < pe; block++) {
      const b0 = block * CHUNK_BYTES;
      const buf = pixelBlock(ctx, index, block, Math.min(CHUNK_BYTES, pixelBytes - b0), pool?.take());
      yield buf.subarray(Math.max(ps, b0) - b0, Math.min(pe, b0 + CHUNK_BYTES) - b0);
    }
  }

  return {
    sopInstanceUID: sopUID,
    seriesInstanceUID: ctx.seriesUID,
    instanceNumber: index + 1,
    size,
    numberOfFrames: ctx.frames,
    frameBytes,
    pixelDataOffset: headerBytes,
    open,
    sha256() {
      digest ??= (async () => {
        const h = createHash('sha256');
        for await (const c of open()) h.update(c);
        return h.digest('hex');
      })();
      return digest;
    },
  };
}

// ---------- pixel data ----------
//
// Speed matters (the generator must never limit a 300 MB/s benchmark) and so does uniqueness
// (a content-addressed store must not dedup anything). A PRNG per sample in JS runs at a few
// hundred MB/s, so instead: one 1 MiB base block of 12-bit samples per study, from AES-256-CTR
// keystream (deterministic, seeded by the study key), and every 1 MiB pixel block of every
// instance is that base XORed with a 64-bit pattern (four 12-bit lanes, so samples stay
// < 4096). The pattern is a bijection of (instance, block) over 48 bits, so no two blocks in a
// study are equal and every 8-byte word differs between any two of them. One XOR pass is
// ~5 GB/s. The blocks are not independent random data (they differ by a constant XOR), which
// no storage layer can exploit without knowing the pattern.

/**
 * Pixel-block buffers used again once their consumer is done with them. Streaming a study with
 * a fresh 1 MiB ArrayBuffer per block made V8 run a full GC about every 130 ms in the STOW client
 * (measured: 1.3 of its 2.6 CPU-s for 1,000 small instances), on the two cores the server under
 * test shares.
 */
export class BlockPool {
  readonly #free: Buffer[] = [];
  /** Buffers taken and not given back yet, by their ArrayBuffer. */
  readonly #lent = new Map<ArrayBufferLike, Buffer>();
  readonly #max: number;

  /** `max`: free buffers kept; more given back are left to the GC. */
  constructor(max = 64) {
    this.#max = max;
  }

  take(): Buffer {
    const buf = this.#free.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES);
    this.#lent.set(buf.buffer, buf);
    return buf;
  }

  /**
   * Takes back a chunk `open()` yielded: one cut from a lent buffer frees that buffer (once);
   * others (header chunks) are ignored. A chunk never given back is left to the GC.
   */
  give(chunk: Uint8Array): void {
    const buf = this.#lent.get(chunk.buffer);
    if (buf === undefined) return;
    this.#lent.delete(chunk.buffer);
    if (this.#free.length < this.#max) this.#free.push(buf);
  }
}

function makeBase(key: Buffer): Uint32Array {
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const stream = cipher.update(Buffer.alloc(CHUNK_BYTES));
  const base = new Uint32Array(stream.buffer.slice(stream.byteOffset, stream.byteOffset + CHUNK_BYTES));
  for (let i = 0; i < base.length; i++) base[i] = base[i]! & 0x0fff0fff;
  return base;
}

const MASK48 = (1n << 48n) - 1n;

/** 48-bit bijective mix of (instance, block), spread into four 12-bit lanes of a 64-bit word. */
function blockPattern(ctx: StudyContext, instance: number, block: number): [number, number] {
  // instance < 2^24 (MAX_INSTANCES) and block < 2^12 (pixel data < 4 GiB): the counter is injective.
  let x = ((BigInt(instance) << 24n) | BigInt(block)) ^ ctx.patternSalt;
  x = (x * 0x9e3779b97f4an + 1n) & MASK48; // odd multiplier: bijective mod 2^48
  x ^= x >> 24n;
  x = (x * 0xd6e8feb86659n) & MASK48;
  x ^= x >> 23n;
  const n = Number(x);
  const l0 = n & 0xfff;
  const l1 = Math.floor(n / 2 ** 12) & 0xfff;
  const l2 = Math.floor(n / 2 ** 24) & 0xfff;
  const l3 = Math.floor(n / 2 ** 36) & 0xfff;
  return [(l0 | (l1 << 16)) >>> 0, (l2 | (l3 << 16)) >>> 0];
}

/** `into`: a buffer of CHUNK_BYTES at offset 0 of its own ArrayBuffer (BlockPool's). */
function pixelBlock(ctx: StudyContext, instance: number, block: number, length: number, into?: Buffer): Buffer {
  const [lo, hi] = blockPattern(ctx, instance, block);
  const words = Math.ceil(length / 4);
  // allocUnsafeSlow: own ArrayBuffer at offset 0, so the Uint32Array view is aligned.
  const buf = into ?? Buffer.allocUnsafeSlow(words * 4);
  const w = new Uint32Array(buf.buffer, 0, words);
  const base = ctx.base;
  let i = 0;
  for (; i + 1 < words; i += 2) {
    w[i] = base[i]! ^ lo;
    w[i + 1] = base[i + 1]! ^ hi;
  }
  if (i < words) w[i] = base[i]! ^ lo;
  return buf.subarray(0, length);
}

// ---------- header encoding (Explicit VR Little Endian) ----------

interface Element {
  tag: number;
  vr: string;
  value?: Buffer;
  items?: Element[][];
}

const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);

const t = (group: number, element: number): number => ((group << 16) | element) >>> 0;

function str(tag: number, vr: string, s: string): Element {
  const b = Buffer.from(s, 'latin1');
  const pad = vr === 'UI' ? 0 : 0x20; // UI pads with NUL, text with space (PS3.5 6.2)
  return { tag, vr, value: b.length % 2 ? Buffer.concat([b, Buffer.from([pad])]) : b };
}
const uid = (tag: number, s: string): Element => str(tag, 'UI', s);
function us(tag: number, n: number): Element {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return { tag, vr: 'US', value: b };
}
function ul(tag: number, n: number): Element {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return { tag, vr: 'UL', value: b };
}
function at(tag: number, pointer: number): Element {
  const b = Buffer.alloc(4);
  b.writeUInt16LE(pointer >>> 16, 0);
  b.writeUInt16LE(pointer & 0xffff, 2);
  return { tag, vr: 'AT', value: b };
}
const sq = (tag: number, items: Element[][]): Element => ({ tag, vr: 'SQ', items });

class ByteWriter {
  buf = Buffer.allocUnsafe(4096);
  len = 0;
  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
  u16(v: number): void {
    this.ensure(2);
    this.len = this.buf.writeUInt16LE(v, this.len);
  }
  u32(v: number): void {
    this.ensure(4);
    this.len = this.buf.writeUInt32LE(v, this.len);
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  result(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

function writeTag(w: ByteWriter, tag: number): void {
  w.u16(tag >>> 16);
  w.u16(tag & 0xffff);
}

/** Elements are sorted by tag here, so builders may list them in any order. */
function encodeElements(w: ByteWriter, elements: Element[]): void {
  for (const el of [...elements].sort((a, b) => a.tag - b.tag)) {
    writeTag(w, el.tag);
    w.bytes(Buffer.from(el.vr, 'latin1'));
    if (el.items) {
      // Undefined-length sequences and items, as pydicom writes them.
      w.u16(0);
      w.u32(0xffffffff);
      for (const item of el.items) {
        writeTag(w, t(0xfffe, 0xe000));
        w.u32(0xffffffff);
        encodeElements(w, item);
        writeTag(w, t(0xfffe, 0xe00d));
        w.u32(0);
      }
      writeTag(w, t(0xfffe, 0xe0dd));
      w.u32(0);
      continue;
    }
    const value = el.value ?? Buffer.alloc(0);
    if (LONG_VRS.has(el.vr)) {
      w.u16(0);
      w.u32(value.length);
    } else {
      if (value.length > 0xffff) throw new RangeError(`value of ${el.tag.toString(16)} too long for VR ${el.vr}`);
      w.u16(value.length);
    }
    w.bytes(value);
  }
}

const STUDY_DATE = '20240102';
const STUDY_TIME = '030405';
const ACQUISITION_DATETIME = STUDY_DATE + STUDY_TIME;

/** Everything before the Pixel Data value: preamble, DICM, File Meta, data set, Pixel Data header. */
function encodeHeader(ctx: StudyContext, index: number, sopUID: string, pixelBytes: number): Buffer {
  const multi = ctx.kind === 'multiframe';
  const sopClass = multi ? ENHANCED_MR_IMAGE_STORAGE : MR_IMAGE_STORAGE;
  const n = index + 1;

  const meta = new ByteWriter();
  encodeElements(meta, [
    { tag: t(0x0002, 0x0001), vr: 'OB', value: Buffer.from([0, 1]) },
    uid(t(0x0002, 0x0002), sopClass),
    uid(t(0x0002, 0x0003), sopUID),
    uid(t(0x0002, 0x0010), EXPLICIT_VR_LITTLE_ENDIAN),
    uid(t(0x0002, 0x0012), IMPLEMENTATION_CLASS_UID),
    str(t(0x0002, 0x0013), 'SH', IMPLEMENTATION_VERSION_NAME),
  ]);

  const ds: Element[] = [
    str(t(0x0008, 0x0005), 'CS', 'ISO_IR 100'),
    uid(t(0x0008, 0x0016), sopClass),
    uid(t(0x0008, 0x0018), sopUID),
    str(t(0x0008, 0x0020), 'DA', STUDY_DATE),
    str(t(0x0008, 0x0023), 'DA', STUDY_DATE),
    str(t(0x0008, 0x0030), 'TM', STUDY_TIME),
    str(t(0x0008, 0x0033), 'TM', STUDY_TIME),
    str(t(0x0008, 0x0050), 'SH', ctx.accession),
    str(t(0x0008, 0x0060), 'CS', 'MR'),
    str(t(0x0008, 0x0070), 'LO', 'SYNTHETIC'),
    str(t(0x0008, 0x0090), 'PN', ''),
    str(t(0x0008, 0x1030), 'LO', 'Synthetic benchmark study'),
    str(t(0x0008, 0x103e), 'LO', multi ? 'Synthetic Enhanced MR multi-frame' : 'Synthetic MR single-frame'),
    str(t(0x0010, 0x0010), 'PN', `BENCH^${ctx.patientId}`),
    str(t(0x0010, 0x0020), 'LO', ctx.patientId),
    str(t(0x0010, 0x0030), 'DA', '19700101'),
    str(t(0x0010, 0x0040), 'CS', 'O'),
    str(t(0x0018, 0x0087), 'DS', '3'),
    uid(t(0x0020, 0x000d), ctx.studyUID),
    uid(t(0x0020, 0x000e), ctx.seriesUID),
    str(t(0x0020, 0x0010), 'SH', '1'),
    str(t(0x0020, 0x0011), 'IS', '1'),
    str(t(0x0020, 0x0013), 'IS', String(n)),
    uid(t(0x0020, 0x0052), ctx.frameOfReferenceUID),
    str(t(0x0020, 0x1040), 'LO', ''),
    us(t(0x0028, 0x0002), 1),
    str(t(0x0028, 0x0004), 'CS', 'MONOCHROME2'),
    us(t(0x0028, 0x0010), ctx.rows),
    us(t(0x0028, 0x0011), ctx.columns),
    us(t(0x0028, 0x0100), 16),
    us(t(0x0028, 0x0101), 12),
    us(t(0x0028, 0x0102), 11),
    us(t(0x0028, 0x0103), 0),
  ];
  if (multi) {
    ds.push(
      str(t(0x0008, 0x0008), 'CS', 'ORIGINAL\\PRIMARY\\M\\NONE'),
      str(t(0x0008, 0x002a), 'DT', ACQUISITION_DATETIME),
      str(t(0x0020, 0x0012), 'IS', String(n)),
      str(t(0x0020, 0x9311), 'CS', '3D'), // DimensionOrganizationType
      sq(t(0x0020, 0x9221), [[uid(t(0x0020, 0x9164), ctx.dimensionOrganizationUID)]]),
      sq(t(0x0020, 0x9222), [
        [
          uid(t(0x0020, 0x9164), ctx.dimensionOrganizationUID),
          at(t(0x0020, 0x9165), t(0x0020, 0x0032)), // Image Position (Patient)
          at(t(0x0020, 0x9167), t(0x0020, 0x9113)), // in Plane Position Sequence
        ],
      ]),
      str(t(0x0028, 0x0008), 'IS', String(ctx.frames)),
      str(t(0x0028, 0x2110), 'CS', '00'),
      sq(t(0x5200, 0x9229), [sharedFunctionalGroups()]),
      sq(
        t(0x5200, 0x9230),
        Array.from({ length: ctx.frames }, (_, f) => perFrameFunctionalGroups(f)),
      ),
    );
  } else {
    ds.push(
      str(t(0x0008, 0x0008), 'CS', 'ORIGINAL\\PRIMARY\\OTHER'),
      str(t(0x0018, 0x0020), 'CS', 'SE'),
      str(t(0x0018, 0x0021), 'CS', 'NONE'),
      str(t(0x0018, 0x0022), 'CS', ''),
      str(t(0x0018, 0x0023), 'CS', '2D'),
      str(t(0x0018, 0x0050), 'DS', '1'),
      str(t(0x0018, 0x0080), 'DS', '500'),
      str(t(0x0018, 0x0081), 'DS', '20'),
      str(t(0x0020, 0x0032), 'DS', `0\\0\\${n}`),
      str(t(0x0020, 0x0037), 'DS', '1\\0\\0\\0\\1\\0'),
      str(t(0x0020, 0x1041), 'DS', String(n)),
      str(t(0x0028, 0x0030), 'DS', '0.5\\0.5'),
      str(t(0x0028, 0x1050), 'DS', '2048'),
      str(t(0x0028, 0x1051), 'DS', '4096'),
    );
  }

  const w = new ByteWriter();
  w.bytes(Buffer.alloc(128));
  w.bytes(Buffer.from('DICM', 'latin1'));
  const metaBytes = meta.result();
  encodeElements(w, [ul(t(0x0002, 0x0000), metaBytes.length)]);
  w.bytes(metaBytes);
  encodeElements(w, ds);
  // Pixel Data header only; its value is streamed by open().
  writeTag(w, t(0x7fe0, 0x0010));
  w.bytes(Buffer.from('OW', 'latin1'));
  w.u16(0);
  w.u32(pixelBytes);
  return w.result();
}

function sharedFunctionalGroups(): Element[] {
  return [
    sq(t(0x0018, 0x9112), [[str(t(0x0018, 0x0080), 'DS', '500'), str(t(0x0018, 0x1314), 'DS', '90')]]),
    sq(t(0x0018, 0x9226), [
      [
        str(t(0x0008, 0x9007), 'CS', 'ORIGINAL\\PRIMARY\\M\\NONE'),
        str(t(0x0008, 0x9205), 'CS', 'MONOCHROME'),
        str(t(0x0008, 0x9206), 'CS', 'VOLUME'),
        str(t(0x0008, 0x9207), 'CS', 'NONE'),
        str(t(0x0008, 0x9208), 'CS', 'MAGNITUDE'),
        str(t(0x0008, 0x9209), 'CS', 'T1'),
      ],
    ]),
    sq(t(0x0020, 0x9116), [[str(t(0x0020, 0x0037), 'DS', '1\\0\\0\\0\\1\\0')]]),
    sq(t(0x0028, 0x9110), [[str(t(0x0018, 0x0050), 'DS', '1'), str(t(0x0028, 0x0030), 'DS', '0.5\\0.5')]]),
    sq(t(0x0028, 0x9132), [[str(t(0x0028, 0x1050), 'DS', '2048'), str(t(0x0028, 0x1051), 'DS', '4096')]]),
  ];
}

function perFrameFunctionalGroups(f: number): Element[] {
  return [
    sq(t(0x0020, 0x9111), [
      [str(t(0x0018, 0x9074), 'DT', ACQUISITION_DATETIME), str(t(0x0020, 0x9056), 'SH', '1'), ul(t(0x0020, 0x9057), f + 1), ul(t(0x0020, 0x9157), f + 1)],
    ]),
    sq(t(0x0020, 0x9113), [[str(t(0x0020, 0x0032), 'DS', `0\\0\\${f}`)]]),
  ];
}

// ---------- UIDs ----------

/** `2.25.<128 bits as decimal>`: at most 44 characters, digits and dots, no leading zeros. */
function uidFromHash(input: string): string {
  const h = createHash('sha256').update(input).digest('hex').slice(0, 32);
  return `2.25.${BigInt(`0x${h}`).toString(10)}`;
}

export function isValidUid(s: string): boolean {
  return s.length <= 64 && /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/.test(s);
}
