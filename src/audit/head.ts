// Signed tree heads ("checkpoints", as C2SP tlog-checkpoint calls them): the log's size and root,
// when, and the head before it, signed with the node's Ed25519 audit key. The body is text, one
// field a line, so a person can read what was signed:
//
//   dicom-vault audit log <origin>
//   <size>
//   <root, base64>
//   <time, ISO 8601>
//   <previous head's size> <SHA-256 of the previous head's body, base64>    ("0 -" for the first)
//
// Each head names the one before it, and the log keeps the consistency proof between them, so the
// heads form one chain that only grows: a node that shows two histories must sign two heads that
// no consistency proof joins. A head is anchored as the CID of its body (raw, sha2-256), one leaf
// among the study roots of an anchor batch.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { create as createDigest } from 'multiformats/hashes/digest';
import { sha256 } from 'multiformats/hashes/sha2';
import { VaultError } from '../core/errors.ts';
import { createSecretFileOnce } from '../format/keys.ts';
import { HASH_SIZE } from './tree.ts';

export const AUDIT_SIGNING_KEY_FILE = 'audit-signing.key';
const PREFIX = 'dicom-vault audit log ';

export interface HeadFields {
  origin: string;
  size: number;
  root: Uint8Array;
  time: string;
  prevSize: number;
  /** SHA-256 of the previous head's body; undefined for the first head. */
  prevHash: Uint8Array | undefined;
}

export interface SignedHead extends HeadFields {
  body: string;
  /** Ed25519 signature of the body, 64 bytes. */
  signature: Uint8Array;
}

export function headBody(h: HeadFields): string {
  const prev = h.prevHash === undefined ? `${h.prevSize} -` : `${h.prevSize} ${Buffer.from(h.prevHash).toString('base64')}`;
  return `${PREFIX}${h.origin}\n${h.size}\n${Buffer.from(h.root).toString('base64')}\n${h.time}\n${prev}\n`;
}

/** Parses a head's body; undefined when it is not one. */
export function parseHeadBody(body: string): HeadFields | undefined {
  const lines = body.split('\n');
  if (lines.length !== 6 || lines[5] !== '' || !lines[0]!.startsWith(PREFIX)) return undefined;
  const size = Number(lines[1]);
  const root = Buffer.from(lines[2]!, 'base64');
  const [ps, ph] = lines[4]!.split(' ');
  const prevSize = Number(ps);
  if (!Number.isSafeInteger(size) || size < 0 || root.length !== HASH_SIZE || !Number.isSafeInteger(prevSize) || prevSize < 0 || prevSize > size)
    return undefined;
  const prevHash = ph === '-' ? undefined : Buffer.from(ph ?? '', 'base64');
  if (prevHash !== undefined && prevHash.length !== HASH_SIZE) return undefined;
  if (Number.isNaN(Date.parse(lines[3]!))) return undefined;
  return { origin: lines[0]!.slice(PREFIX.length), size, root, time: lines[3]!, prevSize, prevHash };
}

/** SHA-256 of a head's body: what the next head names. */
export function headHash(body: string): Uint8Array {
  return createHash('sha256').update(body, 'utf8').digest();
}

/** The CID a head is anchored as: CIDv1, raw, sha2-256 of its body. */
export function headCid(body: string): CID {
  return CID.createV1(raw.code, createDigest(sha256.code, headHash(body)));
}

/** The node's audit signing key: Ed25519, PKCS#8 PEM in a 0600 file of the data directory, made on first use. */
export class HeadSigner {
  readonly #key: KeyObject;
  readonly publicKey: KeyObject;

  constructor(privateKey: KeyObject) {
    this.#key = privateKey;
    this.publicKey = createPublicKey(privateKey);
  }

  static loadOrCreate(path: string): HeadSigner {
    createSecretFileOnce(path, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    try {
      return new HeadSigner(createPrivateKey(readFileSync(path)));
    } catch (cause) {
      throw new VaultError('CONFIG_INVALID', `${path} is not an Ed25519 private key (PKCS#8 PEM)`, { cause });
    }
  }

  sign(fields: HeadFields): SignedHead {
    const body = headBody(fields);
    return { ...fields, body, signature: sign(null, Buffer.from(body, 'utf8'), this.#key) };
  }
}

/** True when `head` is signed by `publicKey` and its fields are its body's. */
export function verifyHeadSignature(head: Pick<SignedHead, 'body' | 'signature'>, publicKey: KeyObject): boolean {
  try {
    return verify(null, Buffer.from(head.body, 'utf8'), publicKey, head.signature);
  } catch {
    return false;
  }
}

/** The public key as served and pinned: SPKI DER, base64. */
export function publicKeyText(key: KeyObject): string {
  return (key.export({ type: 'spki', format: 'der' }) as Buffer).toString('base64');
}

export function publicKeyOf(text: string): KeyObject {
  try {
    return createPublicKey({ key: Buffer.from(text, 'base64'), format: 'der', type: 'spki' });
  } catch (cause) {
    throw new VaultError('BAD_REQUEST', 'not an Ed25519 public key (SPKI DER, base64)', { cause });
  }
}
