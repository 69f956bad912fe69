// The audit log's proofs, checked in the browser: bytes, base64, hex and CIDs; RFC 9162 hashing
// (inclusion and consistency proofs, an anchoring batch's tree head); entries' leaves (their clear
// header, their details opened under the subject's key) and heads (their signed body, their
// Ed25519 signature). Apart from audit-verify.ts, which fetches the log and decides what each
// result means, because these are the pure checks it and the anchor's (audit-anchor.ts) are made
// of, each comparable one by one with the node's own.
//
// The node-side modules this mirrors (src/audit/entry.ts parseLeaf, anchor/merkle.ts,
// src/audit/tree.ts verifyConsistency, src/audit/head.ts) hash with node:crypto synchronously and
// read with Buffer; WebCrypto's digest is asynchronous, so the few functions are written again
// here over Uint8Array. test/integration/web/audit-verify.test.ts checks them against those
// modules (the same roots and CIDs).
//
// Browser code: no node: imports, no Buffer. It also runs under Node 24, which has the same APIs.

// ---------------------------------------------------------------------------------------------
// Bytes, base64, hex, CIDs

export const enc = new TextEncoder();

/** Standard or URL-safe base64, padded or not; undefined when not base64. */
export function fromBase64(s: string): Uint8Array | undefined {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(s)) return undefined;
  const std = s.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
  if (std.length % 4 === 1) return undefined;
  try {
    const bin = atob(std + '='.repeat((4 - (std.length % 4)) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

export function toHex(b: Uint8Array): string {
  let s = '0x';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

export function fromHex(h: string): Uint8Array | undefined {
  if (typeof h !== 'string' || !/^0x([0-9a-fA-F]{2})*$/.test(h)) return undefined;
  const out = new Uint8Array((h.length - 2) / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(h.slice(2 + 2 * i, 4 + 2 * i), 16);
  return out;
}

export function same(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

export const sameHex = (a: string | undefined, b: string | undefined): boolean => a !== undefined && b !== undefined && a.toLowerCase() === b.toLowerCase();

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', concat(...parts)));
}

/** CIDv1, raw codec (0x55), sha2-256 multihash: the bytes a head is anchored as (src/audit/head.ts headCid). */
export async function headCidBytes(body: string): Promise<Uint8Array> {
  return concat(Uint8Array.of(0x01, 0x55, 0x12, 0x20), await sha256(enc.encode(body)));
}

/** A CID's text: multibase "b", RFC 4648 base32, lower case, unpadded (as multiformats prints CIDv1). */
export function cidText(bytes: Uint8Array): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let out = 'b';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

// ---------------------------------------------------------------------------------------------
// RFC 9162 hashing (anchor/merkle.ts, src/audit/tree.ts)

export const leafHash = (data: Uint8Array): Promise<Uint8Array> => sha256(Uint8Array.of(0x00), data);
const nodeHash = (l: Uint8Array, r: Uint8Array): Promise<Uint8Array> => sha256(Uint8Array.of(0x01), l, r);

/** An anchoring batch's tree head: SHA-256(0x02 || size u64 BE || MTH) (anchor/merkle.ts treeHead). */
export function treeHead(size: number, mth: Uint8Array): Promise<Uint8Array> {
  const n = new Uint8Array(8);
  new DataView(n.buffer).setBigUint64(0, BigInt(size));
  return sha256(Uint8Array.of(0x02), n, mth);
}

/** RFC 9162 §2.1.3.2: the root `path` leads to from `leaf` (a leaf hash) at `index` of `size`; undefined when the path cannot belong there. */
export async function rootFromInclusionPath(leaf: Uint8Array, index: number, size: number, path: readonly Uint8Array[]): Promise<Uint8Array | undefined> {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return undefined;
  // Plain numbers, not bit operators: those truncate to 32 bits.
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (p.length !== 32 || sn === 0) return undefined;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn /= 2;
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : undefined;
}

/** RFC 9162 §2.1.4.2: the tree of `first` leaves (firstRoot) is a prefix of the tree of `second` (secondRoot). */
export async function verifyConsistency(
  first: number,
  second: number,
  proof: readonly Uint8Array[],
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
): Promise<boolean> {
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second) return false;
  if (proof.some((p) => p.length !== 32)) return false;
  if (first === second) return proof.length === 0 && same(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0;
  if (proof.length === 0) return false;
  const path = Number.isInteger(Math.log2(first)) ? [firstRoot, ...proof] : [...proof];
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(fr, firstRoot) && same(sr, secondRoot);
}

// ---------------------------------------------------------------------------------------------
// Entries and heads (src/audit/entry.ts, src/audit/head.ts)

/** The clear header of a version 1 leaf; undefined when the bytes are not one. */
export function parseLeafHeader(leaf: Uint8Array): { index: number; time: number; subject: string; prev: Uint8Array } | undefined {
  if (leaf.length < 18 || leaf[0] !== 1) return undefined;
  const len = leaf[17]!;
  const ivAt = 18 + len + 32;
  if (len === 0 || leaf.length < ivAt + 12 + 16) return undefined;
  const view = new DataView(leaf.buffer, leaf.byteOffset, leaf.byteLength);
  const index = view.getBigUint64(1);
  const time = view.getBigUint64(9);
  if (index > BigInt(Number.MAX_SAFE_INTEGER) || time > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return { index: Number(index), time: Number(time), subject: String.fromCharCode(...leaf.subarray(18, 18 + len)), prev: leaf.subarray(18 + len, ivAt) };
}

/** JSON with object keys sorted: the same details compare equal whatever order the node wrote them in. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

/**
 * Opens a leaf's details under the subject's key (AES-256-GCM, the clear header as additional
 * data: src/audit/entry.ts openLeaf); undefined when the key does not open it.
 */
export async function openLeafDetails(leaf: Uint8Array, rawKey: Uint8Array): Promise<Record<string, unknown> | undefined> {
  const header = parseLeafHeader(leaf);
  if (header === undefined) return undefined;
  const at = 18 + header.subject.length + 32;
  try {
    const key = await crypto.subtle.importKey('raw', concat(rawKey), { name: 'AES-GCM' }, false, ['decrypt']);
    const clear = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: concat(leaf.subarray(at, at + 12)), additionalData: concat(leaf.subarray(0, at)), tagLength: 128 },
      key,
      concat(leaf.subarray(at + 12)),
    );
    return JSON.parse(new TextDecoder().decode(clear)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

const HEAD_PREFIX = 'dicom-vault audit log ';

/** A head's signed body, parsed; undefined when it is not one. */
export function parseHeadBody(body: string): { size: number; root: Uint8Array; time: string; prevSize: number } | undefined {
  const lines = body.split('\n');
  if (lines.length !== 6 || lines[5] !== '' || !lines[0]!.startsWith(HEAD_PREFIX)) return undefined;
  const size = Number(lines[1]);
  const root = fromBase64(lines[2]!);
  const prevSize = Number(lines[4]!.split(' ')[0]);
  if (!Number.isSafeInteger(size) || size < 0 || root?.length !== 32 || !Number.isSafeInteger(prevSize) || Number.isNaN(Date.parse(lines[3]!)))
    return undefined;
  return { size, root, time: lines[3]!, prevSize };
}

/** WebCrypto's key type (named through the API: the project's tsconfig has no DOM library). */
type WebKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

export async function importNodeKey(spkiBase64: string): Promise<WebKey | undefined> {
  const der = fromBase64(spkiBase64);
  if (der === undefined) return undefined;
  try {
    return await crypto.subtle.importKey('spki', concat(der), { name: 'Ed25519' }, false, ['verify']);
  } catch {
    return undefined;
  }
}

export async function signedBy(key: WebKey | undefined, body: string, signature: string): Promise<boolean> {
  const sig = fromBase64(signature);
  if (key === undefined || sig === undefined) return false;
  try {
    return await crypto.subtle.verify({ name: 'Ed25519' }, key, concat(sig), enc.encode(body));
  } catch {
    return false;
  }
}
