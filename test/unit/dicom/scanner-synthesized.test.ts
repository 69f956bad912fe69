// The streaming Part 10 scanner of ingest against synthesized instances: broken ones, and one
// far larger than memory should ever hold. Real DICOM written by others:
// scanner-pydicom.test.ts.
import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { ScannedInstance } from '../../../src/dicom/model.ts';
import { DicomScanner, scanInstance } from '../../../src/dicom/scanner.ts';
import {
  bytesAt,
  el,
  errorOf,
  identity,
  imagePixelModule,
  implicitEl,
  item,
  part10,
  SEQ_DELIMITER,
  SERIES,
  SOP,
  SOP_CLASS,
  STUDY,
  scanChunked,
  scanWhole,
  text,
  u16,
  u32,
  uid,
} from '../../support/part10.ts';

describe('scanning synthesized instances', () => {
  const header = (study = STUDY): Buffer => Buffer.concat([identity(study), imagePixelModule(4, 4, 8, 1)]);
  const pixels = (n: number, length = n): Buffer => el(0x7fe00010, 'OB', Buffer.alloc(n, 7), length);

  it('identifies the instance from the header alone, before any pixel data arrives', () => {
    const scanner = new DicomScanner();
    const file = part10(Buffer.concat([header(), pixels(16)]));
    const cut = file.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]));
    scanner.push(file.subarray(0, cut));
    expect(scanner.identified).toBe(true);
    expect(scanner.identity()).toEqual({
      studyInstanceUID: STUDY,
      seriesInstanceUID: SERIES,
      sopInstanceUID: SOP,
      sopClassUID: SOP_CLASS,
      transferSyntaxUID: '1.2.840.10008.1.2.1',
    });
    scanner.push(file.subarray(cut));
    expect(scanner.bytesSeen).toBe(file.length);
    expect(scanner.end().layout.frames).toEqual([[{ offset: cut + 12, length: 16 }]]);
  });

  it('refuses random bytes as NOT_DICOM as soon as offset 128 is seen', () => {
    const scanner = new DicomScanner();
    const err = errorOf(() => scanner.push(randomBytes(4096)));
    expect((err as { code: string }).code).toBe('NOT_DICOM');
    expect((errorOf(() => scanWhole(Buffer.from('hello'))) as { code: string }).code).toBe('NOT_DICOM');
  });

  it('refuses a Pixel Data length beyond the data as DICOM_TRUNCATED, naming the tag', () => {
    const err = errorOf(() => scanWhole(part10(Buffer.concat([header(), pixels(10, 1000)]))));
    expect((err as { code: string }).code).toBe('DICOM_TRUNCATED');
    expect((err as Error).message).toMatch(/declared length 1000 of \(7FE0,0010\)/);
  });

  it('refuses an element length beyond the data in the header as DICOM_TRUNCATED', () => {
    const file = part10(Buffer.concat([identity(), el(0x00081030, 'LO', text('cut short'), 200)]));
    const err = errorOf(() => scanWhole(file));
    expect((err as { code: string }).code).toBe('DICOM_TRUNCATED');
    expect((err as Error).message).toMatch(/\(0008,1030\)/);
  });

  it('refuses an undefined-length sequence that is never closed as DICOM_TRUNCATED', () => {
    const file = part10(Buffer.concat([identity(), el(0x00081115, 'SQ', item(el(0x00081150, 'UI', uid('1.2.3'))), -1)]));
    expect((errorOf(() => scanWhole(file)) as { code: string }).code).toBe('DICOM_TRUNCATED');
  });

  it('refuses an invalid VR and a sequence without items as DICOM_MALFORMED', () => {
    const badVR = part10(Buffer.concat([identity(), el(0x00081030, 'zz', text('x'))]));
    expect((errorOf(() => scanWhole(badVR)) as { code: string }).code).toBe('DICOM_MALFORMED');
    const noItem = part10(Buffer.concat([identity(), el(0x00081115, 'SQ', el(0x00081150, 'UI', uid('1.2.3')))]));
    const err = errorOf(() => scanWhole(noItem));
    expect((err as { code: string }).code).toBe('DICOM_MALFORMED');
    expect((err as Error).message).toMatch(/expected an item in \(0008,1115\)/);
  });

  it('refuses an element that overruns its item as DICOM_MALFORMED', () => {
    const inner = el(0x00081150, 'UI', uid('1.2.3'));
    const file = part10(Buffer.concat([identity(), el(0x00081115, 'SQ', item(inner, inner.length - 2)), pixels(16)]));
    expect((errorOf(() => scanWhole(file)) as { code: string }).code).toBe('DICOM_MALFORMED');
  });

  it('refuses a StudyInstanceUID like ../x as INVALID_UID while the header streams in', () => {
    const scanner = new DicomScanner();
    const err = errorOf(() => scanner.push(part10(header('../x'))));
    expect((err as { code: string }).code).toBe('INVALID_UID');
    expect((err as Error).message).toBe('StudyInstanceUID is not a valid DICOM UID');
    // A failed scanner stays failed.
    expect((errorOf(() => scanner.end()) as { code: string }).code).toBe('INVALID_UID');
  });

  it('refuses a missing SeriesInstanceUID as DICOM_MALFORMED', () => {
    const file = part10(Buffer.concat([el(0x00080016, 'UI', uid(SOP_CLASS)), el(0x0020000d, 'UI', uid(STUDY)), pixels(16)]));
    const err = errorOf(() => scanWhole(file));
    expect((err as { code: string }).code).toBe('DICOM_MALFORMED');
    expect((err as Error).message).toBe('missing SeriesInstanceUID');
  });

  it('refuses a header larger than maxHeaderBytes as TOO_LARGE, but not large bulk data', () => {
    const big = el(0x00081030, 'LO', text('x'.repeat(60_000)));
    const file = part10(Buffer.concat([identity(), big, pixels(16)]));
    expect((errorOf(() => scanWhole(file, { maxHeaderBytes: 32 * 1024 })) as { code: string }).code).toBe('TOO_LARGE');
    // The same header with the payload in an OB (an Encapsulated Document, say) streams past.
    const doc = el(0x00420011, 'OB', Buffer.alloc(200_000, 1));
    const scanned = scanWhole(part10(Buffer.concat([identity(), doc])), { maxHeaderBytes: 32 * 1024 });
    expect(scanned.metadata['00420011']).toEqual({ vr: 'OB', BulkDataURI: 'bulk/00420011' });
    expect(scanned.layout.bulk['00420011']!.length).toBe(200_000);
  });

  it('keeps binary values up to bulkDataThreshold inline', () => {
    const file = part10(Buffer.concat([identity(), el(0x00420011, 'OB', Buffer.from([1, 2, 3, 4]))]));
    expect(scanWhole(file, { bulkDataThreshold: 4 }).metadata['00420011']).toEqual({ vr: 'OB', InlineBinary: 'AQIDBA==' });
    expect(scanWhole(file, { bulkDataThreshold: 3 }).metadata['00420011']).toEqual({ vr: 'OB', BulkDataURI: 'bulk/00420011' });
  });

  it('accepts a data set whose transfer syntax says explicit VR but whose elements are implicit', () => {
    const dataset = Buffer.concat([
      implicitEl(0x00080016, uid(SOP_CLASS)),
      implicitEl(0x00080018, uid(SOP)),
      implicitEl(0x0020000d, uid(STUDY)),
      implicitEl(0x0020000e, uid(SERIES)),
      implicitEl(0x00280010, u16(4)),
    ]);
    const scanned = scanWhole(part10(dataset));
    expect(scanned.studyInstanceUID).toBe(STUDY);
    expect(scanned.metadata['00280010']).toEqual({ vr: 'US', Value: [4] });
  });

  describe('encapsulated frames', () => {
    const JPEG = '1.2.840.10008.1.2.4.50';
    const jpeg = (n: number): Buffer => Buffer.concat([Buffer.from([0xff, 0xd8]), Buffer.alloc(n, n)]);
    const more = (n: number): Buffer => Buffer.alloc(n, 0x55);
    const encapsulated = (bot: number[], fragments: Buffer[], extra = Buffer.alloc(0)): Buffer =>
      Buffer.concat([
        identity(),
        imagePixelModule(4, 4, 8, 2),
        extra,
        el(0x7fe00010, 'OB', Buffer.concat([item(Buffer.concat(bot.map(u32))), ...fragments.map((f) => item(f)), SEQ_DELIMITER]), -1),
      ]);
    const frameBytes = (file: Buffer, s: ScannedInstance): string[] => s.layout.frames.map((f) => bytesAt(file, f).toString('hex'));

    it('groups fragments by the Basic Offset Table', () => {
      const frags = [jpeg(10), more(6), jpeg(20)];
      const file = part10(encapsulated([0, 8 + 12 + 8 + 6], frags), JPEG);
      const scanned = scanWhole(file);
      expect(frameBytes(file, scanned)).toEqual([Buffer.concat([frags[0]!, frags[1]!]).toString('hex'), frags[2]!.toString('hex')]);
      expect(scanned.layout.frames[0]).toHaveLength(2);
    });

    it('groups fragments by the Extended Offset Table', () => {
      const frags = [jpeg(10), jpeg(4), more(8)];
      const eot = Buffer.alloc(16);
      eot.writeBigUInt64LE(0n, 0);
      eot.writeBigUInt64LE(BigInt(8 + 12), 8);
      const lengths = Buffer.alloc(16);
      const file = part10(encapsulated([], frags, Buffer.concat([el(0x7fe00001, 'OV', eot), el(0x7fe00002, 'OV', lengths)])), JPEG);
      const scanned = scanWhole(file);
      expect(frameBytes(file, scanned)).toEqual([frags[0]!.toString('hex'), Buffer.concat([frags[1]!, frags[2]!]).toString('hex')]);
    });

    it('without offset tables: one fragment per frame, or JPEG start markers', () => {
      const oneEach = [jpeg(10), jpeg(4)];
      const file1 = part10(encapsulated([], oneEach), JPEG);
      expect(frameBytes(file1, scanWhole(file1))).toEqual(oneEach.map((f) => f.toString('hex')));
      const split = [jpeg(10), more(3), jpeg(4), more(5)];
      // Fed one byte at a time, so the markers are split across pushes.
      const file2 = part10(encapsulated([], split), JPEG);
      expect(
        frameBytes(
          file2,
          scanChunked(file2, () => 1),
        ),
      ).toEqual([Buffer.concat([split[0]!, split[1]!]).toString('hex'), Buffer.concat([split[2]!, split[3]!]).toString('hex')]);
    });

    it('gives no frames when fragments cannot be attributed (RLE, 3 fragments for 2 frames)', () => {
      const file = part10(encapsulated([], [more(4), more(4), more(4)]), '1.2.840.10008.1.2.5');
      const scanned = scanWhole(file);
      expect(scanned.layout.pixelData?.encapsulated).toBe(true);
      expect(scanned.layout.frames).toEqual([]);
    });
  });

  it('leaves frames empty for 1-bit frames that do not end on a byte boundary', () => {
    const file = part10(Buffer.concat([identity(), imagePixelModule(3, 3, 1, 2), el(0x7fe00010, 'OB', Buffer.alloc(4))]));
    expect(scanWhole(file).layout.frames).toEqual([]);
    const aligned = part10(Buffer.concat([identity(), imagePixelModule(4, 4, 1, 2), el(0x7fe00010, 'OB', Buffer.alloc(4))]));
    expect(scanWhole(aligned).layout.frames).toEqual([[{ offset: aligned.length - 4, length: 2 }], [{ offset: aligned.length - 2, length: 2 }]]);
  });

  it('finds the header of a deflated instance whose pixel data inflates far beyond the limits', () => {
    const dataset = Buffer.concat([identity(), imagePixelModule(1024, 1024, 16, 16), el(0x7fe00010, 'OW', Buffer.alloc(32 * 1024 * 1024))]);
    const file = Buffer.concat([part10(Buffer.alloc(0), '1.2.840.10008.1.2.1.99'), zlib.deflateRawSync(dataset)]);
    // 32 MiB of zeros deflate to ~32 KiB, pushed as one piece; the inflated limit is 2 MiB.
    const scanned = scanWhole(file, { maxHeaderBytes: 1024 * 1024 });
    expect(scanned.studyInstanceUID).toBe(STUDY);
    expect(scanned.metadata['00280008']).toEqual({ vr: 'IS', Value: [16] });
    expect(scanned.layout.pixelData).toBeNull();
  });

  it('scans a 300 MiB native multi-frame instance in 1 MiB chunks without holding it', async () => {
    const rows = 512;
    const columns = 512;
    const frameCount = 600;
    const frameBytes = rows * columns * 2;
    const head = part10(Buffer.concat([identity(), imagePixelModule(rows, columns, 16, frameCount)]));
    const pixelHeader = el(0x7fe00010, 'OW', Buffer.alloc(0), frameBytes * frameCount);
    const total = head.length + pixelHeader.length + frameBytes * frameCount;
    const chunk = Buffer.alloc(1024 * 1024);
    /** Where the generator put each frame's first byte (it stamps the frame number there). */
    const stamped: number[] = [];
    let peakArrayBuffers = 0;
    const baseline = process.memoryUsage().arrayBuffers;
    async function* stream(): AsyncGenerator<Uint8Array> {
      const prefix = Buffer.concat([head, pixelHeader]);
      const pixelStart = prefix.length;
      for (let offset = 0; offset < total; offset += chunk.length) {
        const n = Math.min(chunk.length, total - offset);
        chunk.fill(0);
        if (offset < pixelStart) prefix.copy(chunk, 0, offset);
        // Stamp every frame that starts in this chunk (frames are 512 KiB, chunks 1 MiB).
        for (let f = Math.max(0, Math.ceil((offset - pixelStart) / frameBytes)); pixelStart + f * frameBytes < offset + n && f < frameCount; f++) {
          const at = pixelStart + f * frameBytes;
          stamped[f] = at;
          chunk.writeUInt16LE(f, at - offset);
        }
        peakArrayBuffers = Math.max(peakArrayBuffers, process.memoryUsage().arrayBuffers);
        yield chunk.subarray(0, n);
      }
    }
    const scanned = await scanInstance(stream());
    expect(scanned.size).toBe(total);
    expect(scanned.layout.frames).toHaveLength(frameCount);
    expect(scanned.layout.frames.map((f) => f[0]!.offset)).toEqual(stamped);
    expect(scanned.layout.frames.every((f) => f[0]!.length === frameBytes)).toBe(true);
    expect(scanned.layout.pixelData).toEqual({ valueOffset: stamped[0], valueLength: frameBytes * frameCount, encapsulated: false, vr: 'OW' });
    // Nothing near the instance's size was allocated (a copy of the pixel data would be 300 MiB).
    expect(peakArrayBuffers - baseline).toBeLessThan(32 * 1024 * 1024);
  });
});
