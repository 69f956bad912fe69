// RFC 8785 JSON Canonicalization Scheme (JCS): the one byte string a grant's signature covers, so
// that the patient's device, the node and anyone re-checking an exported grant hash the same bytes
// whatever their JSON library's key order or number formatting. The serializer is `canonicalize`
// (by Erdtman, a co-author of the RFC); this file only refuses what JCS cannot represent faithfully
// instead of letting it vanish silently (a top-level undefined, a function).
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { VaultError } from '../core/errors.ts';

/** The canonical JSON text of `value` (RFC 8785). Throws BAD_REQUEST for what JSON cannot hold (NaN, Infinity, a lone surrogate, a cycle). */
export function canonicalJson(value: unknown): string {
  let text: string | undefined;
  try {
    text = canonicalize(value);
  } catch (cause) {
    throw new VaultError('BAD_REQUEST', `not canonicalizable JSON: ${(cause as Error).message}`, { cause });
  }
  if (typeof text !== 'string') throw new VaultError('BAD_REQUEST', 'not canonicalizable JSON: the value has no JSON representation');
  return text;
}

/** The UTF-8 bytes of the canonical JSON: what a key file's Ed25519 signature covers. */
export function canonicalBytes(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), 'utf8');
}

/** SHA-256 of the canonical bytes: a passkey's WebAuthn challenge for a statement. */
export function canonicalDigest(value: unknown): Buffer {
  return createHash('sha256').update(canonicalBytes(value)).digest();
}
