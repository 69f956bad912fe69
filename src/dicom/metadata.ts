// DICOM data dictionary facts and value decoding into the DICOM JSON Model (PS3.18 F.2).
// Used by the ingest scanner to turn header bytes into stored metadata, and by the transcoder
// to give implicit-VR elements their VR.
//
// dcmjs is used for the data dictionary only. Its own readers (DicomMessage.readFile) are not
// used: they need the whole buffer, give no byte offsets for bulk data, return a "naturalised"
// shape that still has to be re-mapped to DICOM JSON, and decode Specific Character Set from
// one TextDecoder per data set, which garbles ISO 2022 values that switch character sets
// mid-string (Japanese and Korean PN). So the value decoding below is hand-written.
// @ts-expect-error dcmjs ships no type declarations; only its dictionary lookup is used (typed below).
import dcmjs from 'dcmjs';
import type { DicomJsonElement } from './model.ts';

// ---------------------------------------------------------------------------------------------
// Tags and VRs

/** 8 upper-case hex digits, as DICOM JSON keys and bulk tag paths use. */
export function tagHex(tag: number): string {
  const key = tag >>> 0;
  let hex = TAG_HEX.get(key);
  if (hex === undefined) {
    hex = key.toString(16).toUpperCase().padStart(8, '0');
    if (TAG_HEX.size < TAG_HEX_MAX) TAG_HEX.set(key, hex);
  }
  return hex;
}
/** Every element of every instance names its tag: the names of the usual few thousand are kept. */
const TAG_HEX = new Map<number, string>();
const TAG_HEX_MAX = 8192;

/** '(GGGG,EEEE)', for messages. */
export function tagLabel(tag: number): string {
  const h = tagHex(tag);
  return `(${h.slice(0, 4)},${h.slice(4)})`;
}

export const ALL_VRS: ReadonlySet<string> = new Set([
  'AE',
  'AS',
  'AT',
  'CS',
  'DA',
  'DS',
  'DT',
  'FD',
  'FL',
  'IS',
  'LO',
  'LT',
  'OB',
  'OD',
  'OF',
  'OL',
  'OV',
  'OW',
  'PN',
  'SH',
  'SL',
  'SQ',
  'SS',
  'ST',
  'SV',
  'TM',
  'UC',
  'UI',
  'UL',
  'UN',
  'UR',
  'US',
  'UT',
  'UV',
]);

/** VRs whose explicit-VR header has 2 reserved bytes and a 32-bit length (PS3.5 7.1.2). */
export const LONG_LENGTH_VRS: ReadonlySet<string> = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);

/** VRs holding opaque binary data: InlineBinary or BulkDataURI in DICOM JSON. */
export const BINARY_VRS: ReadonlySet<string> = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'UN']);

/** Size of the unit whose bytes are swapped between big and little endian; 1 = no swapping. */
export function swapUnit(vr: string): number {
  switch (vr) {
    case 'US':
    case 'SS':
    case 'OW':
    case 'AT':
      return 2;
    case 'UL':
    case 'SL':
    case 'FL':
    case 'OF':
    case 'OL':
      return 4;
    case 'FD':
    case 'OD':
    case 'SV':
    case 'UV':
    case 'OV':
      return 8;
    default:
      return 1;
  }
}

/** A copy of `bytes` with each `unit`-byte group reversed (a trailing partial group is kept as is). */
export function swapBytes(bytes: Uint8Array, unit: number): Uint8Array {
  const out = Buffer.from(bytes); // a copy: the caller's bytes are not ours to change
  if (unit === 1) return out;
  const whole = out.subarray(0, bytes.length - (bytes.length % unit));
  if (unit === 2) whole.swap16();
  else if (unit === 4) whole.swap32();
  else whole.swap64();
  return out;
}

export const PIXEL_DATA = 0x7fe00010;
export const FLOAT_PIXEL_DATA = 0x7fe00008;
export const DOUBLE_FLOAT_PIXEL_DATA = 0x7fe00009;
export const EXTENDED_OFFSET_TABLE = 0x7fe00001;
export const EXTENDED_OFFSET_TABLE_LENGTHS = 0x7fe00002;
export const SPECIFIC_CHARACTER_SET = 0x00080005;
export const PIXEL_REPRESENTATION = 0x00280103;
export const BITS_ALLOCATED = 0x00280100;

export function isPixelDataTag(tag: number): boolean {
  return tag === PIXEL_DATA || tag === FLOAT_PIXEL_DATA || tag === DOUBLE_FLOAT_PIXEL_DATA;
}

interface DictionaryEntry {
  vr: string;
}
const dictionary = (dcmjs as { data: { DicomMetaDictionary: { dictionary: Record<string, DictionaryEntry | undefined> } } }).data.DicomMetaDictionary
  .dictionary;
const dictionaryCache = new Map<number, string | undefined>();

/**
 * The dictionary VR of a tag, as dcmjs spells it: ambiguous ones are 'ox' (OB or OW), 'xs' (US
 * or SS), 'lt' (US or OW: LUT data), 'up' (UL pointer). Undefined for unknown and private tags.
 */
function dictionaryVR(tag: number): string | undefined {
  if (dictionaryCache.has(tag)) return dictionaryCache.get(tag);
  const vr = dictionary[tagLabel(tag)]?.vr;
  dictionaryCache.set(tag, vr);
  return vr;
}

/** What an implicit-VR reader knows of the data set around an element, to resolve ambiguous VRs. */
export interface ImplicitVRContext {
  pixelRepresentation: number | undefined;
  bitsAllocated: number | undefined;
}

// LUT descriptors are 'US or SS' in the dictionary but their 2nd and 3rd values are always US.
const DESCRIPTOR_TAGS = new Set([0x00283002, 0x00281101, 0x00281102, 0x00281103, 0x00281221, 0x00281222, 0x00281223]);

/**
 * The VR an implicit-VR element has: from the dictionary, with the ambiguous ones resolved the
 * way pydicom and dcmtk do (PS3.5 A.1, PS3.6 6); 'UN' when unknown.
 */
export function implicitVR(tag: number, context: ImplicitVRContext, length: number): string {
  const element = tag & 0xffff;
  if (element === 0x0000) return 'UL'; // group length
  if ((tag >>> 16) & 1) return element >= 0x0010 && element <= 0x00ff ? 'LO' : 'UN'; // private creator / private
  const vr = dictionaryVR(tag);
  switch (vr) {
    case undefined:
    case 'na':
      return 'UN';
    case 'ox':
      return tag === PIXEL_DATA && context.bitsAllocated !== undefined && context.bitsAllocated <= 8 ? 'OB' : 'OW';
    case 'xs':
      return context.pixelRepresentation === 1 && !DESCRIPTOR_TAGS.has(tag) ? 'SS' : 'US';
    case 'lt':
      return length > 0xffff ? 'OW' : 'US';
    case 'up':
      return 'UL';
    default:
      return vr;
  }
}

// ---------------------------------------------------------------------------------------------
// Specific Character Set (PS3.3 C.12.1.1.2, PS3.5 6.1)

/** Decodes the bytes of a text value (SH, LO, UC, ST, LT, UT, PN) into a string. */
export type TextDecodeFn = (bytes: Uint8Array, vr: string) => string;

const decoders = new Map<string, InstanceType<typeof TextDecoder>>();
function decodeWith(label: string, bytes: Uint8Array): string {
  // latin1 through Buffer: WHATWG's 'iso-8859-1' is really windows-1252, which maps 0x80-0x9F.
  if (label === 'latin1') return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  let decoder = decoders.get(label);
  if (decoder === undefined) {
    try {
      decoder = new TextDecoder(label);
    } catch {
      // A Node built without full ICU lacks the CJK decoders: degrade, never fail an ingest.
      return decodeWith('latin1', bytes);
    }
    decoders.set(label, decoder);
  }
  return decoder.decode(bytes);
}

/** Single-byte and Unicode character sets (no code extensions), by defined term. */
const PLAIN_CHARSETS: Record<string, string> = {
  '': 'latin1', // default repertoire is ASCII; latin1 decodes it and never fails on stray bytes
  ISO_IR_6: 'latin1',
  ISO_IR_100: 'latin1',
  ISO_IR_101: 'iso-8859-2',
  ISO_IR_109: 'iso-8859-3',
  ISO_IR_110: 'iso-8859-4',
  ISO_IR_144: 'iso-8859-5',
  ISO_IR_127: 'iso-8859-6',
  ISO_IR_126: 'iso-8859-7',
  ISO_IR_138: 'iso-8859-8',
  ISO_IR_148: 'iso-8859-9',
  ISO_IR_203: 'iso-8859-15',
  ISO_IR_166: 'windows-874',
  ISO_IR_13: 'shift_jis', // JIS X 0201: romaji below 0x80, half-width katakana above
  ISO_IR_192: 'utf-8',
  GB18030: 'gb18030',
  GBK: 'gbk',
};

/** A graphic character set that ISO 2022 escape sequences designate to G0 or G1. */
interface CodeElement {
  /** TextDecoder label, or 'latin1'. */
  label: string;
  /** Bytes per character. */
  width: 1 | 2;
  /**
   * How 7-bit G0 bytes of a two-byte set become bytes `label` decodes: JIS X 0208 sets the high
   * bits (giving EUC-JP); JIS X 0212 also prefixes 0x8F.
   */
  g0?: 'euc' | 'euc-0212';
}

const ASCII: CodeElement = { label: 'latin1', width: 1 };
const JIS_X_0201_KATAKANA: CodeElement = { label: 'shift_jis', width: 1 };
const JIS_X_0208: CodeElement = { label: 'euc-jp', width: 2, g0: 'euc' };
const JIS_X_0212: CodeElement = { label: 'euc-jp', width: 2, g0: 'euc-0212' };
const KS_X_1001: CodeElement = { label: 'euc-kr', width: 2 };
const GB_2312: CodeElement = { label: 'gbk', width: 2 };
const single = (label: string): CodeElement => ({ label, width: 1 });

/** ISO 2022 defined terms: which element each designates, to G0 or G1, by default. */
const ISO2022_TERMS: Record<string, { g0?: CodeElement; g1?: CodeElement }> = {
  'ISO 2022 IR 6': { g0: ASCII },
  'ISO 2022 IR 100': { g0: ASCII, g1: single('latin1') },
  'ISO 2022 IR 101': { g0: ASCII, g1: single('iso-8859-2') },
  'ISO 2022 IR 109': { g0: ASCII, g1: single('iso-8859-3') },
  'ISO 2022 IR 110': { g0: ASCII, g1: single('iso-8859-4') },
  'ISO 2022 IR 144': { g0: ASCII, g1: single('iso-8859-5') },
  'ISO 2022 IR 127': { g0: ASCII, g1: single('iso-8859-6') },
  'ISO 2022 IR 126': { g0: ASCII, g1: single('iso-8859-7') },
  'ISO 2022 IR 138': { g0: ASCII, g1: single('iso-8859-8') },
  'ISO 2022 IR 148': { g0: ASCII, g1: single('iso-8859-9') },
  'ISO 2022 IR 203': { g0: ASCII, g1: single('iso-8859-15') },
  'ISO 2022 IR 166': { g0: ASCII, g1: single('windows-874') },
  // JIS X 0201 romaji differs from ASCII only in 0x5C and 0x7E, which DICOM reads as ASCII.
  'ISO 2022 IR 13': { g0: ASCII, g1: JIS_X_0201_KATAKANA },
  'ISO 2022 IR 87': {},
  'ISO 2022 IR 159': {},
  'ISO 2022 IR 149': {},
  'ISO 2022 IR 58': {},
};

/** Escape sequences (after ESC) and what they designate (PS3.3 Table C.12-3, C.12-4). */
const ESCAPES: Array<[number[], 'g0' | 'g1', CodeElement]> = [
  [[0x28, 0x42], 'g0', ASCII], // ESC ( B
  [[0x28, 0x4a], 'g0', ASCII], // ESC ( J  JIS X 0201 romaji
  [[0x29, 0x49], 'g1', JIS_X_0201_KATAKANA], // ESC ) I
  [[0x24, 0x42], 'g0', JIS_X_0208], // ESC $ B
  [[0x24, 0x40], 'g0', JIS_X_0208], // ESC $ @ (JIS C 6226-1978, decoded as X 0208)
  [[0x24, 0x28, 0x44], 'g0', JIS_X_0212], // ESC $ ( D
  [[0x24, 0x29, 0x43], 'g1', KS_X_1001], // ESC $ ) C
  [[0x24, 0x29, 0x41], 'g1', GB_2312], // ESC $ ) A
  [[0x2d, 0x41], 'g1', single('latin1')],
  [[0x2d, 0x42], 'g1', single('iso-8859-2')],
  [[0x2d, 0x43], 'g1', single('iso-8859-3')],
  [[0x2d, 0x44], 'g1', single('iso-8859-4')],
  [[0x2d, 0x4c], 'g1', single('iso-8859-5')],
  [[0x2d, 0x47], 'g1', single('iso-8859-6')],
  [[0x2d, 0x46], 'g1', single('iso-8859-7')],
  [[0x2d, 0x48], 'g1', single('iso-8859-8')],
  [[0x2d, 0x4d], 'g1', single('iso-8859-9')],
  [[0x2d, 0x62], 'g1', single('iso-8859-15')],
  [[0x2d, 0x54], 'g1', single('windows-874')],
];

function normaliseTerm(term: string): string {
  return term.trim().toUpperCase();
}

/**
 * A text decoder for a data set whose (0008,0005) Specific Character Set has these values.
 * Unknown terms fall back to UTF-8 when the bytes are valid UTF-8 and latin1 otherwise, so an
 * odd charset never fails an ingest.
 */
export function textDecoderFor(terms: readonly string[]): TextDecodeFn {
  const normalised = terms.map(normaliseTerm);
  if (normalised.some((t) => t.startsWith('ISO 2022'))) return iso2022Decoder(normalised);
  const first = (normalised[0] ?? '').replace(/ /g, '_');
  const label = PLAIN_CHARSETS[first] ?? (first === 'UTF-8' || first === 'UTF8' ? 'utf-8' : undefined);
  if (label !== undefined) return (bytes) => decodeWith(label, bytes);
  return (bytes) => {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      return decodeWith('latin1', bytes);
    }
  };
}

export const DEFAULT_TEXT_DECODER: TextDecodeFn = textDecoderFor([]);

// ISO 2022 with code extensions: escape sequences switch G0 (bytes < 0x80) and G1 (bytes >=
// 0x80) between character sets. PS3.5 6.1.2.5.3 has writers switch back to the defaults
// before delimiters ('\', and '^' '=' in PN) with explicit escapes; designations are kept
// across delimiters here (as pydicom does), which reads conformant values the same and
// non-conformant ones the way their writers meant.
function iso2022Decoder(terms: string[]): TextDecodeFn {
  // The first term names the defaults; a plain 'ISO_IR n' there means its ISO 2022 twin.
  const t0 = terms[0] ?? '';
  const first = ISO2022_TERMS[t0 === '' ? 'ISO 2022 IR 6' : t0.replace(/^ISO_IR /, 'ISO 2022 IR ')];
  const initialG0 = first?.g0 ?? ASCII;
  const initialG1 = first?.g1;
  return (bytes) => {
    let g0 = initialG0;
    let g1 = initialG1;
    let out = '';
    let i = 0;
    const n = bytes.length;
    while (i < n) {
      const b = bytes[i]!;
      if (b === 0x1b) {
        const match = ESCAPES.find(([seq]) => seq.every((s, k) => bytes[i + 1 + k] === s));
        if (match !== undefined) {
          if (match[1] === 'g0') g0 = match[2];
          else g1 = match[2];
          i += 1 + match[0].length;
          continue;
        }
        i += 1; // unknown escape: drop ESC, keep the rest as text
        continue;
      }
      // A run of bytes in one code element.
      let j = i;
      if (b < 0x80) {
        if (g0.width === 2 && b > 0x20) {
          while (j < n && bytes[j]! > 0x20 && bytes[j]! < 0x80) j++;
          const run = bytes.subarray(i, j);
          const mapped = new Uint8Array(g0.g0 === 'euc-0212' ? run.length * 1.5 : run.length);
          if (g0.g0 === 'euc-0212') {
            for (let k = 0, m = 0; k + 1 < run.length; k += 2) {
              mapped[m++] = 0x8f;
              mapped[m++] = run[k]! | 0x80;
              mapped[m++] = run[k + 1]! | 0x80;
            }
          } else {
            for (let k = 0; k < run.length; k++) mapped[k] = run[k]! | 0x80;
          }
          out += decodeWith(g0.label, mapped);
        } else {
          out += String.fromCharCode(b); // ASCII (and controls, space)
          j = i + 1;
        }
      } else {
        while (j < n && bytes[j]! >= 0x80) j++;
        out += decodeWith(g1?.label ?? 'latin1', bytes.subarray(i, j));
      }
      i = j;
    }
    return out;
  };
}

// ---------------------------------------------------------------------------------------------
// Values → DICOM JSON

const TEXT_VRS = new Set(['SH', 'LO', 'UC', 'ST', 'LT', 'UT', 'PN']);
/** String VRs holding exactly one value: backslash is an ordinary character there. */
const SINGLE_VALUED = new Set(['LT', 'ST', 'UT', 'UR']);
/** String VRs whose leading spaces are significant (only trailing padding is removed). */
const KEEP_LEADING = new Set(['LT', 'ST', 'UT', 'UC', 'PN', 'UR']);

function trimValue(s: string, vr: string): string {
  const t = s.replace(/[\0 ]+$/, '');
  return KEEP_LEADING.has(vr) ? t : t.replace(/^ +/, '');
}

function personName(s: string): unknown {
  if (s === '') return null;
  const [alphabetic = '', ideographic = '', phonetic = ''] = s.split('=');
  const pn: Record<string, string> = {};
  if (alphabetic !== '') pn.Alphabetic = alphabetic;
  if (ideographic !== '') pn.Ideographic = ideographic;
  if (phonetic !== '') pn.Phonetic = phonetic;
  return Object.keys(pn).length === 0 ? null : pn;
}

function numberString(s: string, integer: boolean): unknown {
  if (s === '') return null;
  const n = Number(s);
  // Invalid IS/DS text is kept as a string rather than dropped: the store must not lose data.
  return Number.isFinite(n) && (!integer || Number.isInteger(n)) ? n : s;
}

function floatValue(n: number): number | string {
  if (Number.isFinite(n)) return n;
  return Number.isNaN(n) ? 'NaN' : n > 0 ? 'Infinity' : '-Infinity';
}

function bigValue(n: bigint): number | string {
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n.toString();
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

/**
 * One element's value as DICOM JSON. Binary values become InlineBinary in little endian order
 * (PS3.18 F.2.7); empty values have no `Value`; empty items of multi-valued strings are null.
 * Sequences are not handled here (the caller builds them from items).
 */
export function decodeElementValue(vr: string, bytes: Uint8Array, littleEndian: boolean, decodeText: TextDecodeFn): DicomJsonElement {
  if (bytes.length === 0) return { vr };
  switch (vr) {
    case 'US':
      return numbers(vr, bytes, 2, (dv, o) => dv.getUint16(o, littleEndian));
    case 'SS':
      return numbers(vr, bytes, 2, (dv, o) => dv.getInt16(o, littleEndian));
    case 'UL':
      return numbers(vr, bytes, 4, (dv, o) => dv.getUint32(o, littleEndian));
    case 'SL':
      return numbers(vr, bytes, 4, (dv, o) => dv.getInt32(o, littleEndian));
    case 'FL':
      return numbers(vr, bytes, 4, (dv, o) => floatValue(dv.getFloat32(o, littleEndian)));
    case 'FD':
      return numbers(vr, bytes, 8, (dv, o) => floatValue(dv.getFloat64(o, littleEndian)));
    case 'SV':
      return numbers(vr, bytes, 8, (dv, o) => bigValue(dv.getBigInt64(o, littleEndian)));
    case 'UV':
      return numbers(vr, bytes, 8, (dv, o) => bigValue(dv.getBigUint64(o, littleEndian)));
    case 'AT':
      return numbers(vr, bytes, 4, (dv, o) => tagHex(((dv.getUint16(o, littleEndian) << 16) | dv.getUint16(o + 2, littleEndian)) >>> 0));
    case 'OB':
    case 'UN':
      return { vr, InlineBinary: base64(bytes) };
    case 'OW':
    case 'OF':
    case 'OL':
    case 'OD':
    case 'OV':
      return { vr, InlineBinary: base64(littleEndian ? bytes : swapBytes(bytes, swapUnit(vr))) };
    case 'SQ':
      return { vr };
    default:
      break;
  }
  const text = TEXT_VRS.has(vr) ? decodeText(bytes, vr) : decodeWith('latin1', bytes);
  const whole = trimValue(text, vr);
  if (whole === '') return { vr };
  // Most values hold one item: already trimmed, no split needed.
  const parts = SINGLE_VALUED.has(vr) || !whole.includes('\\') ? [whole] : whole.split('\\').map((p) => trimValue(p, vr));
  let values: unknown[];
  switch (vr) {
    case 'PN':
      values = parts.map(personName);
      break;
    case 'IS':
      values = parts.map((p) => numberString(p, true));
      break;
    case 'DS':
      values = parts.map((p) => numberString(p, false));
      break;
    default:
      values = parts.map((p) => (p === '' ? null : p));
  }
  return { vr, Value: values };
}

/** Binary numbers and attribute tags, `size` bytes each; a trailing partial value is dropped. */
function numbers(vr: string, bytes: Uint8Array, size: number, read: (dv: DataView, offset: number) => unknown): DicomJsonElement {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = Math.floor(bytes.length / size);
  const values: unknown[] = new Array(count);
  for (let i = 0; i < count; i++) values[i] = read(dv, i * size);
  return count === 0 ? { vr } : { vr, Value: values };
}

/** The first value of a string element as a string, if it has one. */
export function firstString(element: DicomJsonElement | undefined): string | undefined {
  const v = element?.Value?.[0];
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined;
}

/** The first value of a numeric element (US, IS...) as a number, if it has a valid one. */
export function firstNumber(element: DicomJsonElement | undefined): number | undefined {
  const v = element?.Value?.[0];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
