// DICOM UID syntax (PS3.5 9.1). UIDs end up in URLs, file names and SQL, so everything that
// reaches the node is checked here first; the grammar is small enough that a regex is clearer
// than any library.
import { VaultError } from '../core/errors.ts';

/** Max length of a UID (PS3.5 9.1). */
export const MAX_UID_LENGTH = 64;

// Components are '0' or digits without a leading zero, separated by single dots.
const UID_PATTERN = /^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$/;

export function isValidUid(s: string): boolean {
  return s.length >= 1 && s.length <= MAX_UID_LENGTH && UID_PATTERN.test(s);
}

/** Returns `s` when it is a valid UID; throws VaultError('INVALID_UID') naming `what` otherwise. */
export function assertUid(s: string, what: string): string {
  if (!isValidUid(s)) throw new VaultError('INVALID_UID', `${what} is not a valid DICOM UID`);
  return s;
}
