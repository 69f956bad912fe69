// 12-bit JPEG (PS3.5 JPEG Extended, Process 4: Huffman-coded sequential DCT, 12-bit samples),
// the lossy encoding of many CT and MR archives. Decodes the way IJG libjpeg 6b does (the JPEG
// library in GDCM and DCMTK): the same Huffman decoding, the same "islow" integer inverse DCT and
// the same range limiting, so its output is the same to the bit (test/unit/dicom/codecs.test.ts
// compares it with GDCM's).
//
// Hand-written because nothing maintained serves: the libjpeg-turbo WebAssembly build
// (@cornerstonejs/codec-libjpeg-turbo-8bit) rejects 12-bit data ("Unsupported JPEG data
// precision 12"); jpeg-js is 8-bit only; cornerstone decodes 12-bit with a JavaScript JpegImage
// kept inside @cornerstonejs/dicom-image-loader (not exported, and that package brings
// @cornerstonejs/core and vtk.js as peers) whose output is 9 to 15 above GDCM's and DCMTK's for
// every pixel of pydicom's JPEG-lossy.dcm (its level shift is scaled for 8 bits).
// Not supported (rejected with DECODE_FAILED naming it): arithmetic coding, progressive and
// hierarchical processes, and subsampled colour at 12 bits, none of which DICOM archives use in
// practice with this transfer syntax.
import { VaultError } from '../../core/errors.ts';
import { toNative, type DecodedFrame, type FrameInfo } from './frame.ts';

function fail(reason: string): never {
  throw new VaultError('DECODE_FAILED', `12-bit JPEG: ${reason}`);
}

/** Zig-zag position -> natural (row-major) position in an 8x8 block. */
const NATURAL = Uint8Array.from([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22,
  15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]);

interface Huffman {
  maxcode: Int32Array; // by code length 1..17 (17: sentinel)
  valoffset: Int32Array;
  values: Uint8Array;
}

/** jdhuff.c jpeg_make_d_derived_tbl: canonical codes from the code-length counts. */
function buildHuffman(counts: Uint8Array, values: Uint8Array): Huffman {
  const sizes: number[] = [];
  for (let l = 1; l <= 16; l++) for (let i = 0; i < counts[l - 1]!; i++) sizes.push(l);
  if (sizes.length > 256 || sizes.length > values.length) fail('bad Huffman table');
  const codes: number[] = [];
  let code = 0;
  let si = sizes[0] ?? 0;
  for (let p = 0; p < sizes.length; ) {
    while (p < sizes.length && sizes[p] === si) {
      codes.push(code++);
      p++;
    }
    if (code >= 1 << si) fail('bad Huffman table');
    code <<= 1;
    si++;
  }
  const maxcode = new Int32Array(18).fill(-1);
  const valoffset = new Int32Array(18);
  let p = 0;
  for (let l = 1; l <= 16; l++) {
    const n = counts[l - 1]!;
    if (n > 0) {
      valoffset[l] = p - codes[p]!;
      p += n;
      maxcode[l] = codes[p - 1]!;
    }
  }
  maxcode[17] = 0x7fffffff;
  return { maxcode, valoffset, values };
}

/** Reads the entropy-coded data of a scan bit by bit, unstuffing 0xFF 0x00. */
class BitReader {
  pos: number;
  #byte = 0;
  #left = 0;
  readonly #data: Uint8Array;

  constructor(data: Uint8Array, pos: number) {
    this.#data = data;
    this.pos = pos;
  }

  bit(): number {
    if (this.#left === 0) {
      const d = this.#data;
      if (this.pos >= d.length) fail('the data ends inside the entropy-coded segment (truncated)');
      let b = d[this.pos]!;
      if (b === 0xff) {
        const next = d[this.pos + 1];
        // A marker where data should be: the segment ended before the scan did.
        if (next !== 0x00) fail(`entropy-coded data ended early (marker 0xFF${(next ?? 0).toString(16).toUpperCase().padStart(2, '0')} inside the scan)`);
        this.pos += 2;
      } else {
        this.pos++;
      }
      this.#byte = b;
      this.#left = 8;
      b = 0;
    }
    this.#left--;
    return (this.#byte >> this.#left) & 1;
  }

  bits(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) v = (v << 1) | this.bit();
    return v;
  }

  decode(h: Huffman): number {
    let code = this.bit();
    let l = 1;
    while (code > h.maxcode[l]!) {
      code = (code << 1) | this.bit();
      if (++l > 16) fail('bad Huffman code (corrupt data)');
    }
    const v = h.values[h.valoffset[l]! + code];
    if (v === undefined) fail('bad Huffman code (corrupt data)');
    return v;
  }

  /** At a restart interval's end: drop the padding bits and read RSTn. */
  restart(): void {
    this.#left = 0;
    const d = this.#data;
    while (d[this.pos] === 0xff && d[this.pos + 1] === 0xff) this.pos++;
    const m = d[this.pos + 1];
    if (d[this.pos] !== 0xff || m === undefined || m < 0xd0 || m > 0xd7) fail('a restart marker is missing');
    this.pos += 2;
  }
}

/** The value of an s-bit magnitude category (F.2.2.1 EXTEND). */
function extend(v: number, s: number): number {
  return v < 1 << (s - 1) ? v - (1 << s) + 1 : v;
}

interface Component {
  id: number;
  h: number;
  v: number;
  tq: number;
  quant: Int32Array | undefined; // latched at the first scan of the component
  blocksW: number; // padded to whole MCUs
  blocksH: number;
  usedW: number; // blocks holding image data (a non-interleaved scan covers these)
  usedH: number;
  coefs: Int16Array; // JCOEF is 16-bit in libjpeg: coefficients wrap as there
  dc: number;
  dcTable: Huffman | undefined;
  acTable: Huffman | undefined;
}

// jidctint.c (libjpeg 6b) constants, CONST_BITS = 13; PASS1_BITS = 1 for 12-bit samples.
const CONST_BITS = 13;
const PASS1_BITS = 1;
const FIX_0_298631336 = 2446;
const FIX_0_390180644 = 3196;
const FIX_0_541196100 = 4433;
const FIX_0_765366865 = 6270;
const FIX_0_899976223 = 7373;
const FIX_1_175875602 = 9633;
const FIX_1_501321110 = 12299;
const FIX_1_847759065 = 15137;
const FIX_1_961570560 = 16069;
const FIX_2_053119869 = 16819;
const FIX_2_562915447 = 20995;
const FIX_3_072711026 = 25172;
const RANGE_MASK = 4095 * 4 + 3;

/**
 * DESCALE with libjpeg's 64-bit `long` arithmetic: products of corrupt (huge) coefficients go past
 * 32 bits, so this divides doubles (exact below 2^53) instead of shifting.
 */
function descale(x: number, n: number): number {
  return Math.floor((x + 2 ** (n - 1)) / 2 ** n);
}

/** jdmaster.c's post-IDCT range limit for 12-bit samples: wraps at 14 bits, then clamps to 0..4095 around 2048. */
function rangeLimit(x: number): number {
  const v = ((x & RANGE_MASK) << 18) >> 18;
  const s = v + 2048;
  return s < 0 ? 0 : Math.min(s, 4095);
}

const workspace = new Float64Array(64);

/** jidctint.c jpeg_idct_islow on one block: `coefs` at `at` (natural order), out 8x8 into `out` at `o` with `stride`. */
function idctIslow(coefs: Int16Array, at: number, q: Int32Array, out: Uint16Array, o: number, stride: number): void {
  const ws = workspace;
  // Pass 1: columns, into the workspace ((int) casts of long results: | 0).
  for (let c = 0; c < 8; c++) {
    const i = at + c;
    if (
      coefs[i + 8] === 0 &&
      coefs[i + 16] === 0 &&
      coefs[i + 24] === 0 &&
      coefs[i + 32] === 0 &&
      coefs[i + 40] === 0 &&
      coefs[i + 48] === 0 &&
      coefs[i + 56] === 0
    ) {
      const dc = (coefs[i]! * q[c]! * 2 ** PASS1_BITS) | 0;
      for (let r = 0; r < 8; r++) ws[r * 8 + c] = dc;
      continue;
    }
    let z2 = coefs[i + 16]! * q[c + 16]!;
    let z3 = coefs[i + 48]! * q[c + 48]!;
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    z2 = coefs[i]! * q[c]!;
    z3 = coefs[i + 32]! * q[c + 32]!;
    let tmp0 = (z2 + z3) * 2 ** CONST_BITS;
    let tmp1 = (z2 - z3) * 2 ** CONST_BITS;
    const tmp10 = tmp0 + tmp3;
    const tmp13 = tmp0 - tmp3;
    const tmp11 = tmp1 + tmp2;
    const tmp12 = tmp1 - tmp2;
    tmp0 = coefs[i + 56]! * q[c + 56]!;
    tmp1 = coefs[i + 40]! * q[c + 40]!;
    tmp2 = coefs[i + 24]! * q[c + 24]!;
    tmp3 = coefs[i + 8]! * q[c + 8]!;
    z1 = tmp0 + tmp3;
    z2 = tmp1 + tmp2;
    z3 = tmp0 + tmp2;
    let z4 = tmp1 + tmp3;
    const z5 = (z3 + z4) * FIX_1_175875602;
    tmp0 *= FIX_0_298631336;
    tmp1 *= FIX_2_053119869;
    tmp2 *= FIX_3_072711026;
    tmp3 *= FIX_1_501321110;
    z1 *= -FIX_0_899976223;
    z2 *= -FIX_2_562915447;
    z3 *= -FIX_1_961570560;
    z4 *= -FIX_0_390180644;
    z3 += z5;
    z4 += z5;
    tmp0 += z1 + z3;
    tmp1 += z2 + z4;
    tmp2 += z2 + z3;
    tmp3 += z1 + z4;
    const n = CONST_BITS - PASS1_BITS;
    ws[c] = descale(tmp10 + tmp3, n) | 0;
    ws[56 + c] = descale(tmp10 - tmp3, n) | 0;
    ws[8 + c] = descale(tmp11 + tmp2, n) | 0;
    ws[48 + c] = descale(tmp11 - tmp2, n) | 0;
    ws[16 + c] = descale(tmp12 + tmp1, n) | 0;
    ws[40 + c] = descale(tmp12 - tmp1, n) | 0;
    ws[24 + c] = descale(tmp13 + tmp0, n) | 0;
    ws[32 + c] = descale(tmp13 - tmp0, n) | 0;
  }
  // Pass 2: rows, to samples.
  const n = CONST_BITS + PASS1_BITS + 3;
  for (let r = 0; r < 8; r++) {
    const w = r * 8;
    const p = o + r * stride;
    if (ws[w + 1] === 0 && ws[w + 2] === 0 && ws[w + 3] === 0 && ws[w + 4] === 0 && ws[w + 5] === 0 && ws[w + 6] === 0 && ws[w + 7] === 0) {
      const v = rangeLimit(descale(ws[w]!, PASS1_BITS + 3));
      for (let k = 0; k < 8; k++) out[p + k] = v;
      continue;
    }
    let z2 = ws[w + 2]!;
    let z3 = ws[w + 6]!;
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (ws[w]! + ws[w + 4]!) * 2 ** CONST_BITS;
    let tmp1 = (ws[w]! - ws[w + 4]!) * 2 ** CONST_BITS;
    const tmp10 = tmp0 + tmp3;
    const tmp13 = tmp0 - tmp3;
    const tmp11 = tmp1 + tmp2;
    const tmp12 = tmp1 - tmp2;
    tmp0 = ws[w + 7]!;
    tmp1 = ws[w + 5]!;
    tmp2 = ws[w + 3]!;
    tmp3 = ws[w + 1]!;
    z1 = tmp0 + tmp3;
    z2 = tmp1 + tmp2;
    z3 = tmp0 + tmp2;
    let z4 = tmp1 + tmp3;
    const z5 = (z3 + z4) * FIX_1_175875602;
    tmp0 *= FIX_0_298631336;
    tmp1 *= FIX_2_053119869;
    tmp2 *= FIX_3_072711026;
    tmp3 *= FIX_1_501321110;
    z1 *= -FIX_0_899976223;
    z2 *= -FIX_2_562915447;
    z3 *= -FIX_1_961570560;
    z4 *= -FIX_0_390180644;
    z3 += z5;
    z4 += z5;
    tmp0 += z1 + z3;
    tmp1 += z2 + z4;
    tmp2 += z2 + z3;
    tmp3 += z1 + z4;
    out[p] = rangeLimit(descale(tmp10 + tmp3, n));
    out[p + 7] = rangeLimit(descale(tmp10 - tmp3, n));
    out[p + 1] = rangeLimit(descale(tmp11 + tmp2, n));
    out[p + 6] = rangeLimit(descale(tmp11 - tmp2, n));
    out[p + 2] = rangeLimit(descale(tmp12 + tmp1, n));
    out[p + 5] = rangeLimit(descale(tmp12 - tmp1, n));
    out[p + 3] = rangeLimit(descale(tmp13 + tmp0, n));
    out[p + 4] = rangeLimit(descale(tmp13 - tmp0, n));
  }
}

export interface JpegFrameHeader {
  /** SOFn marker: 0xC0-0xCF (not C4, C8, CC), or 0xF7 for JPEG-LS. */
  marker: number;
  precision: number;
  lines: number;
  samplesPerLine: number;
  components: number;
}

/**
 * The frame header (SOFn) of a JPEG, JPEG lossless or JPEG-LS codestream, read before decoding:
 * its size is checked against the instance's first, so that a corrupt header cannot make a codec
 * allocate for an image of 65535 x 65535. Undefined when there is none before the first scan.
 */
export function readJpegFrameHeader(data: Uint8Array): JpegFrameHeader | undefined {
  if (data[0] !== 0xff || data[1] !== 0xd8) return undefined;
  let pos = 2;
  while (pos + 9 < data.length) {
    if (data[pos] !== 0xff) return undefined;
    const m = data[pos + 1]!;
    if (m === 0xff) {
      pos++;
      continue;
    }
    if ((m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) || m === 0xf7) {
      return {
        marker: m,
        precision: data[pos + 4]!,
        lines: (data[pos + 5]! << 8) | data[pos + 6]!,
        samplesPerLine: (data[pos + 7]! << 8) | data[pos + 8]!,
        components: data[pos + 9]!,
      };
    }
    if (m === 0xda || m === 0xd9) return undefined;
    pos += 2 + ((data[pos + 2]! << 8) | data[pos + 3]!);
  }
  return undefined;
}

export function decodeJpeg12(data: Uint8Array, info: FrameInfo): DecodedFrame {
  if (data[0] !== 0xff || data[1] !== 0xd8) fail('no SOI marker: not a JPEG codestream');
  const quant: (Int32Array | undefined)[] = [];
  const dcTables: (Huffman | undefined)[] = [];
  const acTables: (Huffman | undefined)[] = [];
  let restartInterval = 0;
  let width = 0;
  let height = 0;
  let hmax = 1;
  let vmax = 1;
  let mcusX = 0;
  let mcusY = 0;
  const components: Component[] = [];
  let pos = 2;

  const u16 = (at: number): number => {
    if (at + 1 >= data.length) fail('the data ends inside a marker segment (truncated)');
    return (data[at]! << 8) | data[at + 1]!;
  };

  for (;;) {
    // Find the next marker (fill bytes 0xFF may precede it; after a scan, its padding bits).
    while (pos < data.length && data[pos] !== 0xff) pos++;
    while (pos < data.length && data[pos] === 0xff) pos++;
    if (pos >= data.length) fail(components.length === 0 ? 'no frame header before the data ended (truncated)' : 'no EOI marker (truncated)');
    const marker = data[pos++]!;
    // No length: SOI, RSTn, TEM; 0x00 is a stuffed 0xFF in entropy-coded data a scan did not need.
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01 || marker === 0x00) continue;
    if (marker === 0xd9) break;
    const length = u16(pos);
    const start = pos + 2;
    const end = pos + length;
    if (length < 2 || end > data.length) fail(`marker 0xFF${marker.toString(16).toUpperCase()} runs past the end of the data (truncated)`);
    switch (marker) {
      case 0xdb: {
        // DQT: Pq (0: 8-bit, 1: 16-bit values) and Tq, then 64 values in zig-zag order.
        let p = start;
        while (p < end) {
          const pq = data[p]! >> 4;
          const tq = data[p]! & 15;
          p++;
          if (tq > 3) fail('bad quantization table id');
          const table = new Int32Array(64);
          for (let k = 0; k < 64; k++) {
            table[NATURAL[k]!] = pq === 0 ? data[p]! : u16(p);
            p += pq === 0 ? 1 : 2;
          }
          if (p > end) fail('quantization table runs past its segment');
          quant[tq] = table;
        }
        break;
      }
      case 0xc4: {
        let p = start;
        while (p < end) {
          const tc = data[p]! >> 4;
          const th = data[p]! & 15;
          if (p + 17 > end || th > 3 || tc > 1) fail('bad Huffman table segment');
          const counts = data.subarray(p + 1, p + 17);
          let total = 0;
          for (const c of counts) total += c;
          if (p + 17 + total > end) fail('Huffman table runs past its segment');
          const table = buildHuffman(counts, data.slice(p + 17, p + 17 + total));
          (tc === 0 ? dcTables : acTables)[th] = table;
          p += 17 + total;
        }
        break;
      }
      case 0xdd:
        restartInterval = u16(start);
        break;
      case 0xc0:
      case 0xc1: {
        if (components.length > 0) fail('more than one frame header');
        const precision = data[start]!;
        if (precision !== 12) fail(`sample precision ${precision}; this decoder takes 12`);
        height = u16(start + 1);
        width = u16(start + 3);
        const nf = data[start + 5]!;
        if (height === 0) fail('the number of lines is given by a DNL marker, which is not supported');
        if (width === 0 || nf === 0 || start + 6 + 3 * nf > end) fail('bad frame header');
        for (let i = 0; i < nf; i++) {
          const b = start + 6 + 3 * i;
          const h = data[b + 1]! >> 4;
          const v = data[b + 1]! & 15;
          if (h < 1 || h > 4 || v < 1 || v > 4) fail('bad sampling factors');
          components.push({
            id: data[b]!,
            h,
            v,
            tq: data[b + 2]!,
            quant: undefined,
            blocksW: 0,
            blocksH: 0,
            usedW: 0,
            usedH: 0,
            coefs: new Int16Array(0),
            dc: 0,
            dcTable: undefined,
            acTable: undefined,
          });
        }
        hmax = Math.max(...components.map((c) => c.h));
        vmax = Math.max(...components.map((c) => c.v));
        if (components.some((c) => c.h !== hmax || c.v !== vmax)) fail('subsampled colour at 12 bits is not supported');
        mcusX = Math.ceil(width / (8 * hmax));
        mcusY = Math.ceil(height / (8 * vmax));
        for (const c of components) {
          c.blocksW = mcusX * c.h;
          c.blocksH = mcusY * c.v;
          c.usedW = Math.ceil(Math.ceil((width * c.h) / hmax) / 8);
          c.usedH = Math.ceil(Math.ceil((height * c.v) / vmax) / 8);
          c.coefs = new Int16Array(c.blocksW * c.blocksH * 64);
        }
        break;
      }
      case 0xda: {
        if (components.length === 0) fail('a scan before the frame header');
        const ns = data[start]!;
        if (ns < 1 || ns > 4 || start + 1 + 2 * ns + 3 > end) fail('bad scan header');
        const scan: Component[] = [];
        for (let i = 0; i < ns; i++) {
          const id = data[start + 1 + 2 * i]!;
          const c = components.find((x) => x.id === id);
          if (c === undefined) fail(`the scan names component ${id}, which the frame does not have`);
          const t = data[start + 2 + 2 * i]!;
          c.dcTable = dcTables[t >> 4];
          c.acTable = acTables[t & 15];
          if (c.dcTable === undefined || c.acTable === undefined) fail('the scan uses a Huffman table that was not defined');
          c.quant ??= quant[c.tq];
          if (c.quant === undefined) fail('a component uses a quantization table that was not defined');
          c.dc = 0;
          scan.push(c);
        }
        pos = decodeScan(data, end, scan, restartInterval, mcusX, mcusY);
        continue;
      }
      case 0xc2:
      case 0xc3:
      case 0xc5:
      case 0xc6:
      case 0xc7:
      case 0xc9:
      case 0xca:
      case 0xcb:
      case 0xcd:
      case 0xce:
      case 0xcf:
        return fail(
          `frame type SOF${marker - 0xc0} (${marker >= 0xc9 ? 'arithmetic coding' : marker === 0xc3 ? 'lossless' : 'progressive or hierarchical'}) is not supported`,
        );
      default:
        break; // APPn, COM and others: skipped
    }
    pos = end;
  }
  if (components.length === 0) fail('no frame header');
  if (width !== info.columns || height !== info.rows || components.length !== info.samplesPerPixel) {
    fail(
      `the codestream is ${width}x${height} with ${components.length} components; the instance says ${info.columns}x${info.rows} with ${info.samplesPerPixel}`,
    );
  }

  // Inverse DCT of every block, then the samples of the image area, interleaved.
  const n = components.length;
  const samples = new Uint16Array(width * height * n);
  components.forEach((c, ci) => {
    if (c.quant === undefined) fail(`component ${c.id} is in no scan`);
    const planeW = c.blocksW * 8;
    const plane = new Uint16Array(planeW * c.blocksH * 8);
    for (let by = 0; by < c.blocksH; by++) {
      for (let bx = 0; bx < c.blocksW; bx++) idctIslow(c.coefs, (by * c.blocksW + bx) * 64, c.quant, plane, by * 8 * planeW + bx * 8, planeW);
    }
    for (let y = 0; y < height; y++) {
      const row = y * planeW;
      for (let x = 0, o = y * width * n + ci; x < width; x++, o += n) samples[o] = plane[row + x]!;
    }
  });
  return { pixels: toNative(samples, info), photometricInterpretation: info.photometricInterpretation, planarConfiguration: 0 };
}

/** Decodes one scan's entropy-coded data starting at `pos`; returns where it stopped. */
function decodeScan(data: Uint8Array, pos: number, scan: Component[], restartInterval: number, mcusX: number, mcusY: number): number {
  const bits = new BitReader(data, pos);
  const block = (c: Component, row: number, col: number): void => {
    const coefs = c.coefs;
    const at = (row * c.blocksW + col) * 64;
    const t = bits.decode(c.dcTable!);
    if (t > 16) fail('bad DC difference category (corrupt data)');
    c.dc += t === 0 ? 0 : extend(bits.bits(t), t);
    coefs[at] = c.dc; // stored as a 16-bit JCOEF, as libjpeg does
    for (let k = 1; k < 64; ) {
      const rs = bits.decode(c.acTable!);
      const r = rs >> 4;
      const s = rs & 15;
      if (s === 0) {
        if (r !== 15) break; // end of block
        k += 16;
        continue;
      }
      k += r;
      if (k > 63) fail('AC coefficients run past the end of a block (corrupt data)');
      coefs[at + NATURAL[k]!] = extend(bits.bits(s), s);
      k++;
    }
  };

  let units: number;
  let decodeUnit: (i: number) => void;
  if (scan.length === 1) {
    // Non-interleaved: one block per MCU, over the blocks that hold image data.
    const c = scan[0]!;
    units = c.usedW * c.usedH;
    decodeUnit = (i) => block(c, Math.floor(i / c.usedW), i % c.usedW);
  } else {
    units = mcusX * mcusY;
    decodeUnit = (i) => {
      const my = Math.floor(i / mcusX);
      const mx = i % mcusX;
      for (const c of scan) for (let v = 0; v < c.v; v++) for (let h = 0; h < c.h; h++) block(c, my * c.v + v, mx * c.h + h);
    };
  }
  let toGo = restartInterval;
  for (let i = 0; i < units; i++) {
    if (restartInterval > 0) {
      if (toGo === 0) {
        bits.restart();
        for (const c of scan) c.dc = 0;
        toGo = restartInterval;
      }
      toGo--;
    }
    decodeUnit(i);
  }
  return bits.pos;
}
