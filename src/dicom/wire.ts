// Encoding primitives shared by the File Meta parser, the tokenizer and the scanner.
import { VaultError } from '../core/errors.ts';

/** The length field of an undefined-length element or item. */
export const UNDEFINED_LENGTH = 0xffffffff;

export function malformed(reason: string): VaultError {
  return new VaultError('DICOM_MALFORMED', reason);
}
export function truncated(reason: string): VaultError {
  return new VaultError('DICOM_TRUNCATED', reason);
}

/** The two VR characters at `offset`. */
export function vrAt(bytes: Uint8Array, offset: number): string {
  return String.fromCharCode(bytes[offset]!, bytes[offset + 1]!);
}
