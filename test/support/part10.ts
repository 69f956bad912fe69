// Part 10 instances built element by element (Explicit VR LE unless said otherwise), and the
// ways the scanner's tests feed them in: shared by test/unit/dicom/scanner-*.test.ts.
import type { ByteRange, ScannedInstance } from '../../src/dicom/model.ts';
import { DicomScanner, type DicomScannerOptions } from '../../src/dicom/scanner.ts';

export function scanChunked(bytes: Uint8Array, sizes: () => number, options?: DicomScannerOptions): ScannedInstance {
  const scanner = new DicomScanner(options);
  for (let pos = 0; pos < bytes.length; ) {
    const n = Math.max(1, sizes());
    scanner.push(bytes.subarray(pos, pos + n));
    pos += n;
  }
  return scanner.end();
}

export function scanWhole(bytes: Uint8Array, options?: DicomScannerOptions): ScannedInstance {
  const scanner = new DicomScanner(options);
  scanner.push(bytes);
  return scanner.end();
}

export function errorOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

export function bytesAt(file: Uint8Array, ranges: ByteRange[]): Buffer {
  return Buffer.concat(ranges.map((r) => file.subarray(r.offset, r.offset + r.length)));
}

// ---------------------------------------------------------------------------------------------
// Building instances

export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}
export function text(s: string, pad = ' '): Buffer {
  return Buffer.from(s.length % 2 ? s + pad : s, 'latin1');
}
export function uid(s: string): Buffer {
  return text(s, '\0');
}

const LONG = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);

/** An Explicit VR LE element; `length` overrides the value's length (-1 = undefined). */
export function el(tag: number, vr: string, value: Buffer, length = value.length): Buffer {
  const head = LONG.has(vr)
    ? Buffer.concat([u16(tag >>> 16), u16(tag & 0xffff), Buffer.from(vr, 'latin1'), u16(0), u32(length < 0 ? 0xffffffff : length)])
    : Buffer.concat([u16(tag >>> 16), u16(tag & 0xffff), Buffer.from(vr, 'latin1'), u16(length)]);
  return Buffer.concat([head, value]);
}
export function implicitEl(tag: number, value: Buffer): Buffer {
  return Buffer.concat([u16(tag >>> 16), u16(tag & 0xffff), u32(value.length), value]);
}
export function item(value: Buffer, length = value.length): Buffer {
  return Buffer.concat([u16(0xfffe), u16(0xe000), u32(length < 0 ? 0xffffffff : length), value]);
}
export const SEQ_DELIMITER = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);

export const STUDY = '1.2.826.0.1.3680043.8.498.1';
export const SERIES = '1.2.826.0.1.3680043.8.498.2';
export const SOP = '1.2.826.0.1.3680043.8.498.3';
export const SOP_CLASS = '1.2.840.10008.5.1.4.1.1.7';

export function part10(dataset: Buffer, ts = '1.2.840.10008.1.2.1'): Buffer {
  const meta = Buffer.concat([
    el(0x00020001, 'OB', Buffer.from([0, 1])),
    el(0x00020002, 'UI', uid(SOP_CLASS)),
    el(0x00020003, 'UI', uid(SOP)),
    el(0x00020010, 'UI', uid(ts)),
    el(0x00020012, 'UI', uid('1.2.3.4')),
  ]);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), el(0x00020000, 'UL', u32(meta.length)), meta, dataset]);
}

/** The identifying elements up to Series Instance UID, then Instance Number. */
export function identity(study = STUDY): Buffer {
  return Buffer.concat([
    el(0x00080016, 'UI', uid(SOP_CLASS)),
    el(0x00080018, 'UI', uid(SOP)),
    el(0x0020000d, 'UI', uid(study)),
    el(0x0020000e, 'UI', uid(SERIES)),
    el(0x00200013, 'IS', text('1')),
  ]);
}

export function imagePixelModule(rows: number, columns: number, bits: number, frames: number): Buffer {
  return Buffer.concat([
    el(0x00280002, 'US', u16(1)),
    el(0x00280004, 'CS', text('MONOCHROME2')),
    el(0x00280008, 'IS', text(String(frames))),
    el(0x00280010, 'US', u16(rows)),
    el(0x00280011, 'US', u16(columns)),
    el(0x00280100, 'US', u16(bits)),
    el(0x00280101, 'US', u16(bits)),
    el(0x00280102, 'US', u16(bits - 1)),
    el(0x00280103, 'US', u16(0)),
  ]);
}
