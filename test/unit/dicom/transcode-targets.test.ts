// What the transfer syntaxes are and which conversions there are, and streaming transcoding to
// Implicit VR LE and Deflated Explicit VR LE, checked by pydicom: the transcoded file must hold
// the same elements and the same pixels as the original.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transcode } from '../../../src/dicom/transcode.ts';
import {
  DEFLATED_EXPLICIT_VR_LE,
  EXPLICIT_VR_BE,
  EXPLICIT_VR_LE,
  IMPLICIT_VR_LE,
  canTranscode,
  conversionRefusal,
  describeTransferSyntax,
} from '../../../src/dicom/transfer-syntax.ts';
import { PYDICOM_DATA } from '../../support/pydicom.ts';
import { collect, pieces, pydicomCompare, scan } from '../../support/transcode.ts';

const TEST_FILES = join(PYDICOM_DATA, 'test_files');

describe('transfer syntax facts', () => {
  it('knows how each standard transfer syntax is encoded', () => {
    expect(describeTransferSyntax(IMPLICIT_VR_LE)).toMatchObject({ explicitVR: false, littleEndian: true, deflated: false, encapsulated: false });
    expect(describeTransferSyntax(EXPLICIT_VR_BE)).toMatchObject({ explicitVR: true, littleEndian: false, retired: true });
    expect(describeTransferSyntax(DEFLATED_EXPLICIT_VR_LE)).toMatchObject({ deflated: true, encapsulated: false });
    expect(describeTransferSyntax('1.2.840.10008.1.2.4.50')).toMatchObject({ encapsulated: true, codestream: 'jpeg' });
    expect(describeTransferSyntax('1.2.840.10008.1.2.4.201')).toMatchObject({ encapsulated: true, codestream: 'j2k' });
    expect(describeTransferSyntax('1.2.840.10008.1.2.5')).toMatchObject({ encapsulated: true });
    // A private transfer syntax: explicit VR LE with opaque pixel data.
    expect(describeTransferSyntax('1.3.46.670589.33.1.4.1')).toMatchObject({ explicitVR: true, littleEndian: true, encapsulated: true });
  });

  it('transcodes native encodings to the native targets, and says why it cannot do the rest', () => {
    for (const from of [IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE]) {
      for (const to of [EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE]) expect(canTranscode(from, to), `${from} -> ${to}`).toBe(true);
      expect(canTranscode(from, EXPLICIT_VR_BE), from).toBe(from === EXPLICIT_VR_BE);
    }
    expect(canTranscode('1.2.840.10008.1.2.4.50', EXPLICIT_VR_LE)).toBe(false);
    expect(canTranscode('1.2.840.10008.1.2.4.50', '1.2.840.10008.1.2.4.50')).toBe(true);
    // Compressed sources need a decoder; compressed targets, an encoder, which there is none of.
    expect(conversionRefusal('1.2.840.10008.1.2.4.50', EXPLICIT_VR_LE, true)).toBeUndefined();
    expect(conversionRefusal('1.2.840.10008.1.2.4.100', EXPLICIT_VR_LE, false)).toMatch(/no decoder here reads the pixel data of 1.2.840.10008.1.2.4.100/);
    expect(conversionRefusal(EXPLICIT_VR_LE, '1.2.840.10008.1.2.4.90', true)).toMatch(/no encoder here writes 1.2.840.10008.1.2.4.90/);
    expect(conversionRefusal('1.2.840.10008.1.2.4.50', '1.2.840.10008.1.2.4.90', true)).toMatch(/no encoder/);
    expect(conversionRefusal(IMPLICIT_VR_LE, EXPLICIT_VR_BE, true)).toMatch(/retired/);
    expect(conversionRefusal(IMPLICIT_VR_LE, '1.2.3.4', true)).toMatch(/1.2.3.4 \(unknown\)/);
  });
});

describe('transcoding to Implicit VR LE and Deflated Explicit VR LE', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'transcode-targets-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  for (const to of [IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE]) {
    for (const name of ['CT_small.dcm', 'MR_small_bigendian.dcm', 'image_dfl.dcm', 'rtdose.dcm', 'rtplan.dcm', 'MR_small_implicit.dcm']) {
      it(`writes ${name} as ${to}: pydicom reads the same elements and pixels`, async () => {
        const bytes = readFileSync(join(TEST_FILES, name));
        const out = await collect(
          transcode(
            pieces(bytes, () => 777),
            scan(bytes),
            { transferSyntaxUID: to },
          ),
        );
        const path = join(tmp, `${to}-${name}`);
        writeFileSync(path, out);
        const verdict = pydicomCompare(join(TEST_FILES, name), path, undefined, { EXPECT_TS: to });
        expect(verdict.differences).toEqual([]);
        expect(verdict.pixels).toBe(name === 'rtplan.dcm' ? 'none' : 'equal');
      });
    }
  }
});
