// DICOM UID syntax (PS3.5 9.1): UIDs reach URLs, SQL and file names, so the check must be exact.
import { describe, expect, it } from 'vitest';
import { assertUid, isValidUid } from '../../../src/dicom/uid.ts';
import { isVaultError } from '../../../src/core/errors.ts';

describe('isValidUid', () => {
  it('accepts well-formed UIDs', () => {
    for (const uid of ['1.2.3', '0', '1.2.840.10008.1.2.1', '2.25.329800735698586629295641978511506172918', '1.0.2', `1.${'2'.repeat(62)}`]) {
      expect(isValidUid(uid), uid).toBe(true);
    }
  });

  it('refuses path tricks, leading zeros, empty components, stray characters', () => {
    for (const uid of [
      '../etc',
      '1.2/3',
      '1.02',
      '01.2',
      '1..2',
      '.1.2',
      '1.2.',
      '',
      '1.2.3 ',
      ' 1.2',
      '1.2.3\0',
      '1.a',
      '1,2',
      '-1.2',
      '1.2e3',
      '１.２',
      '1.2.٣',
      '1.2\n',
    ]) {
      expect(isValidUid(uid), JSON.stringify(uid)).toBe(false);
    }
  });

  it('allows 64 characters and no more', () => {
    const at64 = `1.${'2'.repeat(62)}`;
    expect(at64).toHaveLength(64);
    expect(isValidUid(at64)).toBe(true);
    expect(isValidUid(`${at64}3`)).toBe(false);
  });
});

describe('assertUid', () => {
  it('returns a valid UID and throws INVALID_UID naming the attribute otherwise', () => {
    expect(assertUid('1.2.3', 'StudyInstanceUID')).toBe('1.2.3');
    let err: unknown;
    try {
      assertUid('../x', 'SeriesInstanceUID');
    } catch (e) {
      err = e;
    }
    expect(isVaultError(err, 'INVALID_UID')).toBe(true);
    expect((err as Error).message).toBe('SeriesInstanceUID is not a valid DICOM UID');
    expect((err as { status: number }).status).toBe(400);
  });
});
