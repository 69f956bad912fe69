// What the Storage SCP accepts at association, and the Part 10 header it puts before a data set.
// @ts-expect-error dcmjs ships no type declarations; its File Meta writer is the referee below.
import dcmjs from 'dcmjs';
import { describe, expect, it } from 'vitest';
import { IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, part10Header } from '../../../../src/shell/dimse/file-meta.ts';
import { VERIFICATION_SOP_CLASS, chooseTransferSyntax, isStorageSopClass } from '../../../../src/shell/dimse/presentation.ts';

const IMPLICIT = '1.2.840.10008.1.2';
const EXPLICIT = '1.2.840.10008.1.2.1';
const BIG_ENDIAN = '1.2.840.10008.1.2.2';
const DEFLATED = '1.2.840.10008.1.2.1.99';
const J2K = '1.2.840.10008.1.2.4.90';
const RLE = '1.2.840.10008.1.2.5';
const JPEG_BASELINE = '1.2.840.10008.1.2.4.50';

describe('isStorageSopClass', () => {
  it('takes every storage class, including ones no short list names', () => {
    for (const uid of [
      '1.2.840.10008.5.1.4.1.1.2', // CT
      '1.2.840.10008.5.1.4.1.1.4.1', // Enhanced MR
      '1.2.840.10008.5.1.4.1.1.77.1.6', // VL Whole Slide Microscopy
      '1.2.840.10008.5.1.4.1.1.66.4', // Segmentation
      '1.2.840.10008.5.1.4.1.1.104.1', // Encapsulated PDF
      '1.2.840.10008.5.1.4.1.1.9.1.1', // 12-lead ECG
      '1.2.840.10008.5.1.4.1.1.481.5', // RT Plan
      '1.2.840.10008.5.1.4.1.1.88.33', // Comprehensive SR
      '1.2.840.10008.5.1.4.34.7', // RT Beams Delivery Instruction (outside the arc)
      '1.2.840.10008.5.1.4.38.1', // Hanging Protocol (outside the arc)
    ]) {
      expect(isStorageSopClass(uid), uid).toBe(true);
    }
  });

  it('refuses what is not storage', () => {
    for (const uid of [
      VERIFICATION_SOP_CLASS,
      '1.2.840.10008.5.1.4.1.2.2.1', // Study Root Q/R FIND
      '1.2.840.10008.5.1.4.1.2.2.3', // Study Root Q/R GET
      '1.2.840.10008.5.1.4.31', // Modality Worklist FIND
      '1.2.840.10008.1.20.1', // Storage Commitment Push
      '1.2.840.10008.5.1.4.1.1.200.4', // Protocol Approval FIND, under the storage arc
      '1.2.840.10008.1.3.10', // Media Storage Directory (DICOMDIR)
      '1.2.3.4',
    ]) {
      expect(isStorageSopClass(uid), uid).toBe(false);
    }
  });
});

describe('chooseTransferSyntax', () => {
  it('prefers Explicit VR Little Endian among uncompressed syntaxes', () => {
    expect(chooseTransferSyntax([IMPLICIT, EXPLICIT, BIG_ENDIAN])).toBe(EXPLICIT);
    expect(chooseTransferSyntax([BIG_ENDIAN, IMPLICIT, EXPLICIT])).toBe(EXPLICIT);
    expect(chooseTransferSyntax([IMPLICIT])).toBe(IMPLICIT);
    expect(chooseTransferSyntax([BIG_ENDIAN, IMPLICIT])).toBe(BIG_ENDIAN);
  });

  it('takes a compressed syntax the proposer put first, so nothing is re-encoded', () => {
    expect(chooseTransferSyntax([J2K, EXPLICIT, IMPLICIT])).toBe(J2K);
    expect(chooseTransferSyntax([RLE])).toBe(RLE);
    expect(chooseTransferSyntax([JPEG_BASELINE, EXPLICIT])).toBe(JPEG_BASELINE);
    expect(chooseTransferSyntax([DEFLATED, EXPLICIT])).toBe(DEFLATED);
    // Uncompressed first: the proposer holds the image uncompressed.
    expect(chooseTransferSyntax([IMPLICIT, J2K, EXPLICIT])).toBe(EXPLICIT);
  });

  it('skips syntaxes the node cannot walk, and refuses when none is left', () => {
    expect(chooseTransferSyntax(['1.2.3.4.5.6', IMPLICIT])).toBe(IMPLICIT);
    expect(chooseTransferSyntax(['1.2.3.4.5.6'])).toBeUndefined();
    expect(chooseTransferSyntax([])).toBeUndefined();
  });
});

describe('part10Header', () => {
  /** Group 0002 elements of an Explicit VR LE meta group, as tag -> [VR, value text]. */
  function readMeta(b: Buffer): { end: number; elements: Map<string, [string, Buffer]> } {
    const elements = new Map<string, [string, Buffer]>();
    let at = 132;
    while (at < b.length && b.readUInt16LE(at) === 0x0002) {
      const tag = b
        .readUInt16LE(at + 2)
        .toString(16)
        .padStart(4, '0');
      const vr = b.toString('latin1', at + 4, at + 6);
      const long = vr === 'OB';
      const len = long ? b.readUInt32LE(at + 8) : b.readUInt16LE(at + 6);
      const start = at + (long ? 12 : 8);
      elements.set(tag, [vr, b.subarray(start, start + len)]);
      at = start + len;
    }
    return { end: at, elements };
  }

  it('is preamble, DICM and a complete File Meta group naming the instance, syntax, node and sender', () => {
    const b = Buffer.from(
      part10Header({ sopClassUid: '1.2.840.10008.5.1.4.1.1.2', sopInstanceUid: '1.2.3.456', transferSyntaxUid: J2K, sourceAeTitle: 'CT01' }),
    );
    expect(b.subarray(0, 128).every((x) => x === 0)).toBe(true);
    expect(b.toString('latin1', 128, 132)).toBe('DICM');
    const { end, elements } = readMeta(b);
    // The header is exactly the meta group: the data set follows right after it.
    expect(end).toBe(b.length);
    const groupLength = elements.get('0000')![1].readUInt32LE(0);
    expect(b.length).toBe(132 + 12 + groupLength);
    const text = (tag: string): string =>
      elements
        .get(tag)![1]
        .toString('latin1')
        .replace(/[\0 ]+$/, '');
    expect([...elements.get('0001')![1]]).toEqual([0, 1]);
    expect(text('0002')).toBe('1.2.840.10008.5.1.4.1.1.2');
    expect(text('0003')).toBe('1.2.3.456');
    expect(text('0010')).toBe(J2K);
    expect(text('0012')).toBe(IMPLEMENTATION_CLASS_UID);
    expect(text('0013')).toBe(IMPLEMENTATION_VERSION_NAME);
    expect(text('0016')).toBe('CT01');
    // Every value has even length (PS3.5 7.1.1): odd UIDs padded with NUL.
    for (const [tag, [, v]] of elements) expect(v.length % 2, tag).toBe(0);
    expect(elements.get('0003')![1].at(-1)).toBe(0);
  });

  it('is byte for byte what dcmjs writes for the same fields', () => {
    const { DicomDict } = (dcmjs as { data: { DicomDict: new (meta: Record<string, unknown>) => { write(): ArrayBuffer } } }).data;
    // Odd and even lengths of every variable value, an AE title of one and of sixteen characters.
    for (const sopInstanceUid of ['1.2.3.456', '1.2.3.4567']) {
      for (const [transferSyntaxUid, sourceAeTitle] of [
        [J2K, 'CT01'],
        [EXPLICIT, 'A'],
        [IMPLICIT, 'SIXTEEN_CHARS_AE'],
        [DEFLATED, 'PACS 2'],
      ]) {
        for (const sopClassUid of ['1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.5.1.4.1.1.4.1']) {
          const theirs = new DicomDict({
            '00020001': { vr: 'OB', Value: [new Uint8Array([0, 1]).buffer] },
            '00020002': { vr: 'UI', Value: [sopClassUid] },
            '00020003': { vr: 'UI', Value: [sopInstanceUid] },
            '00020010': { vr: 'UI', Value: [transferSyntaxUid] },
            '00020012': { vr: 'UI', Value: [IMPLEMENTATION_CLASS_UID] },
            '00020013': { vr: 'SH', Value: [IMPLEMENTATION_VERSION_NAME] },
            '00020016': { vr: 'AE', Value: [sourceAeTitle] },
          }).write();
          const ours = part10Header({ sopClassUid, sopInstanceUid, transferSyntaxUid: transferSyntaxUid!, sourceAeTitle: sourceAeTitle! });
          expect(Buffer.from(ours).toString('hex'), `${sopInstanceUid} ${transferSyntaxUid} ${sourceAeTitle}`).toBe(Buffer.from(theirs).toString('hex'));
        }
      }
    }
  });
});
