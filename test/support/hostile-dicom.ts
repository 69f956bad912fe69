// Hostile DICOM Part 10 instances, streamed: a valid preamble, File Meta and identity, then a
// structure that costs the reader far more memory than its bytes (issue 21). Each is generated
// piece by piece as it is read, so a 60 MiB attack is never held whole by the test either.
//
// Hand-written rather than dcmjs: dcmjs writes whole data sets from memory, and these must be
// streamed and malformed on purpose.
import http from 'node:http';

/** Bytes per piece yielded. */
export const PIECE_BYTES = 64 * 1024;

export const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';
const SECONDARY_CAPTURE = '1.2.840.10008.5.1.4.1.1.7';

export interface Uids {
  study: string;
  series: string;
  sop: string;
}

export type Attack =
  /** A sequence of `count` empty items (8 bytes each). */
  | 'tiny-items'
  /** A sequence holding an item holding a sequence ... `count` levels deep. */
  | 'deep-nesting'
  /** `count` distinct empty top-level elements (8 bytes each). */
  | 'tiny-elements'
  /** One UC element of `count` distinct values (6 bytes each). */
  | 'huge-multiplicity'
  /** A `count`-byte private OB value before the identifying attributes. */
  | 'bulk-before-identity';

export interface StreamedInstance {
  /** Exact byte count. */
  size: number;
  /** A fresh stream of the bytes each call, in pieces of at most PIECE_BYTES. */
  open(): AsyncIterable<Uint8Array>;
}

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}
function padded(s: string, pad: string): Buffer {
  return Buffer.from(s.length % 2 ? s + pad : s, 'latin1');
}

const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);

/** The header of an Explicit VR Little Endian element; `length` -1 is undefined length. */
export function elementHeader(tag: number, vr: string, length: number): Buffer {
  const group = u16(tag >>> 16);
  const element = u16(tag & 0xffff);
  if (LONG_VRS.has(vr)) return Buffer.concat([group, element, Buffer.from(vr, 'latin1'), u16(0), u32(length < 0 ? 0xffffffff : length)]);
  return Buffer.concat([group, element, Buffer.from(vr, 'latin1'), u16(length)]);
}
export function element(tag: number, vr: string, value: Buffer): Buffer {
  return Buffer.concat([elementHeader(tag, vr, value.length), value]);
}
export function itemHeader(length: number): Buffer {
  return Buffer.concat([u16(0xfffe), u16(0xe000), u32(length < 0 ? 0xffffffff : length)]);
}
export const ITEM_DELIMITER = Buffer.from([0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]);
export const SEQUENCE_DELIMITER = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);

/** Preamble, 'DICM' and File Meta Information of an Explicit VR Little Endian instance. */
export function part10Prefix(sop: string): Buffer {
  const meta = Buffer.concat([
    element(0x00020001, 'OB', Buffer.from([0, 1])),
    element(0x00020002, 'UI', padded(SECONDARY_CAPTURE, '\0')),
    element(0x00020003, 'UI', padded(sop, '\0')),
    element(0x00020010, 'UI', padded(EXPLICIT_VR_LE, '\0')),
  ]);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), element(0x00020000, 'UL', u32(meta.length)), meta]);
}

/** SOP Class, SOP Instance, Study and Series Instance UIDs: what makes an instance identified. */
export function identityElements(uids: Uids): Buffer {
  return Buffer.concat([
    element(0x00080016, 'UI', padded(SECONDARY_CAPTURE, '\0')),
    element(0x00080018, 'UI', padded(uids.sop, '\0')),
    element(0x0020000d, 'UI', padded(uids.study, '\0')),
    element(0x0020000e, 'UI', padded(uids.series, '\0')),
  ]);
}

/** A small valid instance: identity, an 8x8 8-bit image. */
export function goodInstance(uids: Uids): Buffer {
  const us = (v: number): Buffer => u16(v);
  return Buffer.concat([
    part10Prefix(uids.sop),
    identityElements(uids),
    element(0x00280002, 'US', us(1)),
    element(0x00280004, 'CS', padded('MONOCHROME2', ' ')),
    element(0x00280010, 'US', us(8)),
    element(0x00280011, 'US', us(8)),
    element(0x00280100, 'US', us(8)),
    element(0x00280101, 'US', us(8)),
    element(0x00280102, 'US', us(7)),
    element(0x00280103, 'US', us(0)),
    element(0x7fe00010, 'OB', Buffer.alloc(64, 0x55)),
  ]);
}

/** A stream made of a fixed head, `count` repetitions of `unit(i)` (all of `unitBytes`), a fixed tail. */
function repeated(head: Buffer, count: number, unitBytes: number, unit: (i: number, into: Buffer, at: number) => void, tail: Buffer): StreamedInstance {
  return {
    size: head.length + count * unitBytes + tail.length,
    async *open() {
      yield head;
      const perPiece = Math.max(1, Math.floor(PIECE_BYTES / unitBytes));
      for (let i = 0; i < count; ) {
        const n = Math.min(perPiece, count - i);
        const piece = Buffer.allocUnsafe(n * unitBytes);
        for (let k = 0; k < n; k++, i++) unit(i, piece, k * unitBytes);
        yield piece;
      }
      yield tail;
    },
  };
}

/**
 * A hostile instance: `count` units of the attack (see Attack). The hostile structure follows
 * the identity (so the node starts storing the instance), except for 'bulk-before-identity'.
 */
export function hostileInstance(attack: Attack, count: number, uids: Uids): StreamedInstance {
  const prefix = part10Prefix(uids.sop);
  const identity = identityElements(uids);
  switch (attack) {
    case 'tiny-items': {
      // Content Sequence (0040,A730), undefined length, of empty defined-length items.
      const empty = itemHeader(0);
      return repeated(
        Buffer.concat([prefix, identity, elementHeader(0x0040a730, 'SQ', -1)]),
        count,
        8,
        (_i, into, at) => empty.copy(into, at),
        SEQUENCE_DELIMITER,
      );
    }
    case 'deep-nesting': {
      // Each level opens a Content Sequence and its one item; all are closed at the end.
      const open = Buffer.concat([elementHeader(0x0040a730, 'SQ', -1), itemHeader(-1)]);
      const close = Buffer.concat([ITEM_DELIMITER, SEQUENCE_DELIMITER]);
      const head = Buffer.concat([prefix, identity]);
      return {
        size: head.length + count * (open.length + close.length),
        async *open() {
          yield head;
          const per = Math.floor(PIECE_BYTES / open.length);
          for (let i = 0; i < count; i += per) yield Buffer.concat(Array(Math.min(per, count - i)).fill(open));
          for (let i = 0; i < count; i += per) yield Buffer.concat(Array(Math.min(per, count - i)).fill(close));
        },
      };
    }
    case 'tiny-elements': {
      // Distinct private tags (odd groups from 0x0021, every element number from 0x0010), empty SH.
      const perGroup = 0x10000 - 0x10;
      return repeated(
        Buffer.concat([prefix, identity]),
        count,
        8,
        (i, into, at) => {
          into.writeUInt16LE(0x0021 + 2 * Math.floor(i / perGroup), at);
          into.writeUInt16LE(0x0010 + (i % perGroup), at + 2);
          into.write('SH', at + 4, 'latin1');
          into.writeUInt16LE(0, at + 6);
        },
        Buffer.alloc(0),
      );
    }
    case 'huge-multiplicity': {
      // Text Value (0040,A160) as UC, whose values are backslash-separated: distinct five-character
      // values (the base-36 count), so that no two share a string.
      const length = count * 6;
      return repeated(
        Buffer.concat([prefix, identity, elementHeader(0x0040a160, 'UC', length)]),
        count,
        6,
        (i, into, at) => into.write(i.toString(36).padStart(5, '0') + (i === count - 1 ? ' ' : '\\'), at, 'latin1'),
        Buffer.alloc(0),
      );
    }
    case 'bulk-before-identity': {
      // A private OB value (group 0019) between the SOP and the Study Instance UIDs: it streams
      // past the scanner (over the bulk threshold) before the instance is identified.
      const sopPart = identity.subarray(0, identity.indexOf(Buffer.from([0x20, 0x00, 0x0d, 0x00])));
      const fill = Buffer.alloc(PIECE_BYTES, 0x5a);
      const head = Buffer.concat([prefix, sopPart, element(0x00190010, 'LO', Buffer.from('HOSTILE ')), elementHeader(0x00191000, 'OB', count)]);
      const tail = identity.subarray(sopPart.length);
      return {
        size: head.length + count + tail.length,
        async *open() {
          yield head;
          for (let i = 0; i < count; i += PIECE_BYTES) yield fill.subarray(0, Math.min(PIECE_BYTES, count - i));
          yield tail;
        },
      };
    }
  }
}

export interface StowAnswer {
  status: number;
  /** The DICOM JSON response (or the error body). */
  body: any;
  warnings: string[];
}

/**
 * Streams instances to STOW-RS in one request, honouring backpressure: one as
 * `application/dicom` when `multipart` is false, else each as a part of multipart/related. A
 * refusal may be answered before the body is sent whole; the rest is then dropped.
 */
export function stowStreamed(baseUrl: string, instances: StreamedInstance[], opts: { multipart: boolean }): Promise<StowAnswer> {
  const boundary = `hostile-${Math.random().toString(36).slice(2)}`;
  const url = new URL(`${baseUrl}/studies`);
  const contentType = opts.multipart ? `multipart/related; type="application/dicom"; boundary=${boundary}` : 'application/dicom';
  if (!opts.multipart && instances.length !== 1) throw new Error('application/dicom carries one instance');
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': contentType, accept: 'application/dicom+json' } },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = text === '' ? {} : JSON.parse(text);
          } catch {
            // not JSON: kept as text
          }
          const warning = res.headers.warning;
          resolve({ status: res.statusCode ?? 0, body, warnings: warning === undefined ? [] : Array.isArray(warning) ? warning : [warning] });
        });
      },
    );
    // Once answered, a refusal closes the connection: writes after that may fail, harmlessly.
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    const write = (bytes: Uint8Array): Promise<void> =>
      new Promise((ok) => {
        if (answered || req.destroyed) return ok();
        if (req.write(bytes)) ok();
        else {
          const done = (): void => {
            req.off('drain', done);
            req.off('close', done);
            ok();
          };
          req.once('drain', done);
          req.once('close', done);
        }
      });
    void (async () => {
      for (const inst of instances) {
        if (opts.multipart) await write(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`));
        for await (const piece of inst.open()) {
          if (answered || req.destroyed) return;
          await write(piece);
        }
        if (opts.multipart) await write(Buffer.from('\r\n'));
      }
      if (opts.multipart) await write(Buffer.from(`--${boundary}--\r\n`));
      if (!req.destroyed) req.end();
    })().catch(reject);
  });
}

/** A whole buffer as a StreamedInstance. */
export function streamed(bytes: Uint8Array): StreamedInstance {
  return {
    size: bytes.length,
    async *open() {
      for (let i = 0; i < bytes.length; i += PIECE_BYTES) yield bytes.subarray(i, i + PIECE_BYTES);
    },
  };
}
