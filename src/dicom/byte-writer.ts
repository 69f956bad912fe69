// Little-endian element output for the transcoder: a growable byte writer of element headers
// (explicit or implicit VR) and values, and the File Meta encoded with it. Apart from
// transcode.ts because it is the byte level, below the walk of the data set: it knows nothing of
// tokens, frames or transfer syntaxes beyond the one UID it writes.
import type { FileMeta } from './file-meta.ts';
import { LONG_LENGTH_VRS } from './metadata.ts';

/** Preamble, 'DICM' and the File Meta with `transferSyntaxUID` as transfer syntax. */
export function encodeFileMeta(preamble: Uint8Array, meta: FileMeta, transferSyntaxUID: string): Uint8Array {
  const out = new ByteWriter();
  const body = new ByteWriter();
  for (const element of meta.elements) {
    if (element.tag === 0x00020000) continue;
    const value = element.tag === 0x00020010 ? uidBytes(transferSyntaxUID) : element.value;
    body.header(element.tag, element.vr, value.length, LONG_LENGTH_VRS.has(element.vr));
    body.bytes(value);
  }
  const bodyBytes = body.take();
  out.bytes(preamble);
  out.bytes(new Uint8Array([0x44, 0x49, 0x43, 0x4d]));
  out.header(0x00020000, 'UL', 4, false);
  out.uint32(bodyBytes.length);
  out.bytes(bodyBytes);
  return out.take();
}

function uidBytes(uid: string): Uint8Array {
  const bytes = new Uint8Array(uid.length + (uid.length % 2));
  for (let i = 0; i < uid.length; i++) bytes[i] = uid.charCodeAt(i);
  return bytes; // padded with a NUL to even length
}

/** Little-endian byte output, grown as needed. */
export class ByteWriter {
  /** Element headers without VR, with 32-bit lengths (Implicit VR Little Endian). */
  implicit = false;
  #buf = new Uint8Array(1024);
  #view = new DataView(this.#buf.buffer);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  #ensure(n: number): void {
    if (this.#length + n <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#length + n));
    grown.set(this.#buf.subarray(0, this.#length));
    this.#buf = grown;
    this.#view = new DataView(grown.buffer);
  }

  uint16(v: number): void {
    this.#ensure(2);
    this.#view.setUint16(this.#length, v, true);
    this.#length += 2;
  }

  uint32(v: number): void {
    this.#ensure(4);
    this.#view.setUint32(this.#length, v, true);
    this.#length += 4;
  }

  bytes(b: Uint8Array): void {
    this.#ensure(b.length);
    this.#buf.set(b, this.#length);
    this.#length += b.length;
  }

  tag(tag: number): void {
    this.uint16(tag >>> 16);
    this.uint16(tag & 0xffff);
  }

  /** An element header (explicit VR LE unless `implicit`); `length` -1 = undefined. */
  header(tag: number, vr: string, length: number, longForm: boolean): void {
    this.tag(tag);
    if (this.implicit) {
      this.uint32(length < 0 ? 0xffffffff : length);
      return;
    }
    this.uint16(vr.charCodeAt(0) | (vr.charCodeAt(1) << 8));
    if (longForm) {
      this.uint16(0);
      this.uint32(length < 0 ? 0xffffffff : length);
    } else {
      this.uint16(length);
    }
  }

  take(): Uint8Array {
    const out = this.#buf.slice(0, this.#length);
    this.#length = 0;
    return out;
  }
}
