// What the scanner's records of one instance cost in memory, held against a limit (issue 21).
// Header bytes alone do not bound it: an 8-byte empty item becomes a JSON object of ~67 bytes,
// an 8-byte empty element ~145, a value of 'a\b\c' three strings. So every record the scan
// sink keeps (elements, items, values, bulk data entries, fragments, frames) is charged what it
// takes on the heap, and a value whose decoding alone would pass the limit is refused before it
// is decoded.
import { VaultError } from '../core/errors.ts';
import type { DicomJsonElement } from './model.ts';
import { tagLabel } from './metadata.ts';

// Heap bytes per record: what a scan of 200,000 records of each kind retained (heapUsed after a
// full GC, Node 24 x64), rounded up. Strings are charged two bytes a character: a text value
// decoded from UTF-8 or an ISO 2022 set can be a two-byte string.
/** A kept element: its JSON object, its key in the data set, its Value array (empty SH: 145). */
export const ELEMENT_COST = 160;
/** A sequence item: its data set object and its slot in the sequence (67). */
export const ITEM_COST = 80;
/** A numeric value (8: unboxed in the Value array), or a null. */
export const NUMBER_COST = 8;
/** A string value, plus 2 per character (a 5-character one-byte string: 32). */
export const STRING_COST = 24;
/** A person name value (an object of 1-3 strings, each charged as a string: 72 for 'a^b'). */
export const OBJECT_COST = 64;
/** A bulk data value: BulkDataURI element and byte range, plus 4 per character of its path (291). */
export const BULK_COST = 256;
/** A fragment of the top-level Pixel Data: four numbers in a growing array (32, and its slack). */
export const FRAGMENT_COST = 48;
/** A frame of the layout: its array of byte ranges and its slot (40). */
export const FRAME_COST = 56;
/** A byte range of a frame: an object of two numbers, boxed past 2^31 (40-72). */
export const RANGE_COST = 56;

/** Values longer than this are sized before they are decoded (smaller ones decode in a few KiB). */
const PRECHECK_BYTES = 4096;
/** Bytes a value of each binary numeric VR takes per value. */
const NUMBER_SIZES: Readonly<Record<string, number>> = { US: 2, SS: 2, UL: 4, SL: 4, FL: 4, AT: 4, FD: 8, SV: 8, UV: 8 };
/** String VRs with one value only: a backslash there is an ordinary character. */
const SINGLE_VALUED = new Set(['LT', 'ST', 'UT', 'UR']);
const BINARY = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'UN']);

/** Where a record was found, for the reason of a refusal. */
export interface Where {
  tag?: number;
  offset: number;
}

function bytesLabel(n: number): string {
  return n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MiB` : `${n.toLocaleString('en-US')} bytes`;
}

function valueCost(v: unknown): number {
  if (typeof v === 'string') return STRING_COST + 2 * v.length;
  if (v === null || typeof v !== 'object') return NUMBER_COST;
  let bytes = OBJECT_COST;
  const pn = v as Record<string, string>;
  for (const k in pn) bytes += STRING_COST + 2 * pn[k]!.length;
  return bytes;
}

/** The memory one instance's metadata and layout take, as the scan sink builds them. */
export class MetadataBudget {
  readonly limit: number;
  /** Bytes charged so far. */
  held = 0;
  elements = 0;
  items = 0;
  values = 0;
  fragments = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /**
   * Before a value is decoded: refuses one whose decoding would pass the limit by itself
   * (a 60 MiB UC of 'ab\ab\...' splits into 20 million strings before anything is kept).
   * Only values over PRECHECK_BYTES are sized (a search for backslashes).
   */
  precheck(vr: string, value: Uint8Array, where: Where): void {
    const n = value.length;
    if (n <= PRECHECK_BYTES) return;
    let peak: number;
    const size = NUMBER_SIZES[vr];
    if (size !== undefined) {
      peak = (n / size) * 2 * NUMBER_COST;
    } else if (BINARY.has(vr)) {
      peak = 3 * n; // base64 text (4/3 n) beside a swapped copy
    } else {
      let count = 1;
      if (!SINGLE_VALUED.has(vr)) for (let i = value.indexOf(0x5c); i !== -1; i = value.indexOf(0x5c, i + 1)) count++;
      // The decoded text and the characters of its split parts (two bytes each at most), a
      // string and two array slots per part (the split and what it maps to), a name's object.
      peak = 4 * n + count * (STRING_COST + 2 * NUMBER_COST + (vr === 'PN' ? OBJECT_COST : 0));
    }
    if (this.held + ELEMENT_COST + peak > this.limit) {
      throw this.#exceeded(where, `a value of ${n.toLocaleString('en-US')} bytes (${vr})`);
    }
  }

  /**
   * Before a large value is buffered: refuses one that would not fit twice (its bytes, then
   * what they decode to) in what is left, before its bytes are held (three 60 MB values at once
   * were 180 MB of buffers).
   */
  buffer(length: number, where: Where): void {
    if (this.held + 2 * length > this.limit) throw this.#exceeded(where, `a value of ${length.toLocaleString('en-US')} bytes`);
  }

  /** A kept element, decoded. */
  element(json: DicomJsonElement, where: Where): void {
    let bytes = ELEMENT_COST;
    const values = json.Value;
    if (values !== undefined) {
      for (let i = 0; i < values.length; i++) bytes += valueCost(values[i]);
      this.values += values.length;
    } else if (json.InlineBinary !== undefined) {
      bytes += STRING_COST + json.InlineBinary.length;
    }
    this.elements++;
    this.#charge(bytes, where);
  }

  /** A kept sequence (its items are charged as they come). */
  sequence(where: Where): void {
    this.elements++;
    this.#charge(ELEMENT_COST, where);
  }

  item(where: Where): void {
    this.items++;
    this.#charge(ITEM_COST, where);
  }

  /** A value kept as a BulkDataURI and a byte range under `path`. */
  bulk(path: string, where: Where): void {
    this.elements++;
    this.#charge(BULK_COST + 4 * path.length, where);
  }

  fragment(where: Where): void {
    this.fragments++;
    this.#charge(FRAGMENT_COST, where);
  }

  /** Bytes kept as they are, or as one number per 4 bytes (a Basic Offset Table). */
  bytes(n: number, where: Where): void {
    this.#charge(n, where);
  }

  /** Before a layout of `count` frames, of `ranges` byte ranges in all, is built. */
  frames(count: number, ranges: number): void {
    const bytes = count * FRAME_COST + ranges * RANGE_COST;
    if (this.held + bytes > this.limit) throw this.#exceeded(undefined, `a layout of ${count.toLocaleString('en-US')} frames`);
    this.held += bytes;
  }

  #charge(bytes: number, where: Where): void {
    this.held += bytes;
    if (this.held > this.limit) throw this.#exceeded(where);
  }

  #exceeded(where: Where | undefined, what?: string): VaultError {
    const at = where === undefined ? '' : ` at ${where.tag === undefined ? 'an item' : tagLabel(where.tag)} (offset ${where.offset})`;
    const counts = `${this.elements.toLocaleString('en-US')} data elements, ${this.items.toLocaleString('en-US')} items, ${this.values.toLocaleString('en-US')} values and ${this.fragments.toLocaleString('en-US')} fragments`;
    return new VaultError(
      'TOO_LARGE',
      `DICOM metadata exceeds the limit of ${bytesLabel(this.limit)} held in memory per instance (maxMetadataBytes)${what === undefined ? '' : ` with ${what}`}${at}, after ${counts}`,
    );
  }
}
