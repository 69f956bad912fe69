// The pack object: many blocks in one S3 object, so that a store paying per request (Swift's
// proxy, S3's request pricing, per-request TLS and signing) moves megabytes per request instead of
// one block. Self-describing, so an index can be rebuilt from the bucket alone:
//
//   "DVPACK1\n"              8 bytes, magic and version
//   header length            u32, big-endian
//   header                   dag-cbor { v: 1, blocks: [[cidBytes, offset, length], ...] }
//   data                     the blocks' bytes; offsets are relative to the start of the data
//
// The header comes first so that one ranged GET of a pack's head lists its blocks. The writer
// (`PackBuilder`) still copies each block only once: it copies blocks to their final place behind
// a reserved gap and writes the header into the end of that gap when the pack is sealed.
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { VaultError } from '../../src/core/errors.ts';
import { copyInto } from '../../src/core/aligned-memory.ts';

export const PACK_MAGIC = new TextEncoder().encode('DVPACK1\n');
export const PACK_VERSION = 1;
/** Magic plus the u32 header length: the bytes to read before the header's length is known. */
export const PACK_PREAMBLE_BYTES = PACK_MAGIC.byteLength + 4;
/** Largest header accepted when decoding, 64 MiB: a corrupt length must not allocate gigabytes. */
export const MAX_PACK_HEADER_BYTES = 64 * 1024 * 1024;
/**
 * Bytes the builder reserves in front of the data for the header, 64 KiB: room for about 1,300
 * entries of sha2-256 CIDs. A pack with more blocks (tiny chunks) is copied once more at sealing.
 */
export const DEFAULT_HEADER_RESERVE = 64 * 1024;

/** One block of a pack: `offset` is relative to the start of the data section. */
export interface PackEntry {
  cid: CID;
  offset: number;
  length: number;
}

export interface PackHeader {
  /** Where the data section starts in the object: preamble plus header. */
  dataStart: number;
  entries: PackEntry[];
}

/** The preamble and header of a pack holding `entries`. */
export function encodePackHeader(entries: readonly PackEntry[]): Uint8Array {
  const header = dagCbor.encode({ v: PACK_VERSION, blocks: entries.map((e) => [e.cid.bytes, e.offset, e.length]) });
  const out = new Uint8Array(PACK_PREAMBLE_BYTES + header.byteLength);
  writePreamble(out, 0, header.byteLength);
  out.set(header, PACK_PREAMBLE_BYTES);
  return out;
}

/**
 * Where a pack's data section starts (preamble plus header), from at least its first
 * PACK_PREAMBLE_BYTES bytes. Throws BLOCK_CORRUPT when they are not a pack's.
 */
export function packDataStart(head: Uint8Array, name = 'pack'): number {
  if (head.byteLength < PACK_PREAMBLE_BYTES) throw corrupt(name, `only ${head.byteLength} bytes`);
  for (let i = 0; i < PACK_MAGIC.byteLength; i++) {
    if (head[i] !== PACK_MAGIC[i]) throw corrupt(name, 'no DVPACK1 magic');
  }
  const length = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(PACK_MAGIC.byteLength);
  if (length > MAX_PACK_HEADER_BYTES) throw corrupt(name, `header of ${length} bytes`);
  return PACK_PREAMBLE_BYTES + length;
}

/**
 * The header of a pack from at least its first `dataStart` bytes. With `dataBytes` (the data
 * section's size, i.e. object size minus dataStart), every entry must lie inside the data.
 * Throws BLOCK_CORRUPT naming `name` for anything malformed.
 */
export function decodePackHeader(head: Uint8Array, dataBytes?: number, name = 'pack'): PackHeader {
  const dataStart = packDataStart(head, name);
  if (head.byteLength < dataStart) throw corrupt(name, `header needs ${dataStart} bytes, got ${head.byteLength}`);
  let value: unknown;
  try {
    value = dagCbor.decode(head.subarray(PACK_PREAMBLE_BYTES, dataStart));
  } catch (cause) {
    throw corrupt(name, 'header is not dag-cbor', cause);
  }
  if (typeof value !== 'object' || value === null || !('v' in value) || !('blocks' in value)) throw corrupt(name, 'header lacks v or blocks');
  if (value.v !== PACK_VERSION) throw corrupt(name, `unknown version ${String(value.v)}`);
  if (!Array.isArray(value.blocks)) throw corrupt(name, 'blocks is not a list');
  const entries: PackEntry[] = [];
  for (const item of value.blocks as unknown[]) {
    if (!Array.isArray(item) || item.length !== 3) throw corrupt(name, 'an entry is not [cid, offset, length]');
    const [bytes, offset, length] = item as unknown[];
    if (!(bytes instanceof Uint8Array) || !isSize(offset) || !isSize(length)) throw corrupt(name, 'an entry is not [bytes, uint, uint]');
    if (dataBytes !== undefined && offset + length > dataBytes) throw corrupt(name, `an entry (${offset}+${length}) lies past the data (${dataBytes} bytes)`);
    let cid: CID;
    try {
      cid = CID.decode(bytes);
    } catch (cause) {
      throw corrupt(name, 'an entry has no valid CID', cause);
    }
    entries.push({ cid, offset, length });
  }
  return { dataStart, entries };
}

/**
 * A whole pack of `blocks`, in order, with its header's entries and where its data section starts
 * (S3 compaction; the pack writer fills a PackBuilder block by block instead).
 */
export function buildPack(blocks: ReadonlyArray<{ cid: CID; bytes: Uint8Array }>): { body: Uint8Array; entries: PackEntry[]; dataStart: number } {
  const builder = new PackBuilder(blocks.reduce((n, b) => n + b.bytes.byteLength, 0));
  const entries = blocks.map((b) => ({ cid: b.cid, ...builder.add(b.bytes) }));
  const body = builder.seal(entries);
  return { body, entries, dataStart: body.byteLength - builder.dataBytes };
}

/** A whole pack of `blocks`, in order (buildPack's bytes). */
export function encodePack(blocks: ReadonlyArray<{ cid: CID; bytes: Uint8Array }>): Uint8Array {
  return buildPack(blocks).body;
}

/** Every block of a whole pack object, as views into `pack`. Throws BLOCK_CORRUPT if malformed. */
export function decodePack(pack: Uint8Array, name = 'pack'): Array<{ cid: CID; bytes: Uint8Array }> {
  const dataStart = packDataStart(pack, name);
  const { entries } = decodePackHeader(pack, Math.max(0, pack.byteLength - dataStart), name);
  return entries.map((e) => ({ cid: e.cid, bytes: pack.subarray(dataStart + e.offset, dataStart + e.offset + e.length) }));
}

/**
 * Builds one pack in one buffer: blocks are copied straight to their place in the data section,
 * behind a gap reserved for the header. `seal` writes the header at the end of the gap and
 * returns the pack as a view, so the upload body is never assembled by concatenation.
 */
export class PackBuilder {
  readonly #buffer: Uint8Array;
  readonly #dataStart: number;
  #used = 0;

  /**
   * `capacity`: the data bytes this pack can take; no block is ever added beyond it. `buffer`:
   * one to reuse (of a pack that is done with), at least headerReserve + capacity bytes.
   */
  constructor(capacity: number, options: { headerReserve?: number; buffer?: Uint8Array } = {}) {
    const reserve = options.headerReserve ?? DEFAULT_HEADER_RESERVE;
    this.#dataStart = reserve;
    if (options.buffer !== undefined && options.buffer.byteLength >= reserve + capacity) {
      this.#buffer = options.buffer.subarray(0, reserve + capacity);
    } else {
      // Not zeroed: only bytes written by add() and seal() are ever part of the pack.
      this.#buffer = new Uint8Array(Buffer.allocUnsafeSlow(reserve + capacity).buffer, 0, reserve + capacity);
    }
  }

  /** The whole buffer, for reuse by a later pack once this one is done with. */
  get buffer(): Uint8Array {
    return this.#buffer;
  }

  /** Data bytes added so far. */
  get dataBytes(): number {
    return this.#used;
  }

  /** Whether `length` more bytes fit. */
  fits(length: number): boolean {
    return this.#dataStart + this.#used + length <= this.#buffer.byteLength;
  }

  /** Copies `bytes` in; returns where they are in the data section. The caller may reuse `bytes`. */
  add(bytes: Uint8Array): { offset: number; length: number } {
    if (!this.fits(bytes.byteLength)) throw new RangeError(`pack full: ${bytes.byteLength} bytes do not fit`);
    const offset = this.#used;
    copyInto(this.#buffer, bytes, this.#dataStart + offset); // from a shared slot, set() would copy byte by byte
    this.#used += bytes.byteLength;
    return { offset, length: bytes.byteLength };
  }

  /** The bytes of a block added earlier (a view: copy it before handing it out). */
  view(offset: number, length: number): Uint8Array {
    return this.#buffer.subarray(this.#dataStart + offset, this.#dataStart + offset + length);
  }

  /**
   * The pack listing `entries` (normally every block added; a block deleted meanwhile is left
   * out and its bytes stay as a gap). Returns a view of the builder's buffer.
   */
  seal(entries: readonly PackEntry[]): Uint8Array {
    const head = encodePackHeader(entries);
    const data = this.#buffer.subarray(this.#dataStart, this.#dataStart + this.#used);
    if (head.byteLength <= this.#dataStart) {
      const start = this.#dataStart - head.byteLength;
      this.#buffer.set(head, start);
      return this.#buffer.subarray(start, this.#dataStart + this.#used);
    }
    // More entries than the reserve holds: one extra copy, only for packs of many tiny blocks.
    const out = new Uint8Array(head.byteLength + data.byteLength);
    out.set(head, 0);
    out.set(data, head.byteLength);
    return out;
  }
}

function writePreamble(out: Uint8Array, at: number, headerLength: number): void {
  out.set(PACK_MAGIC, at);
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(at + PACK_MAGIC.byteLength, headerLength);
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function corrupt(name: string, reason: string, cause?: unknown): VaultError {
  return new VaultError('BLOCK_CORRUPT', `${name} is not a valid pack: ${reason}`, {
    ...(cause === undefined ? {} : { cause }),
    details: { pack: name },
  });
}
