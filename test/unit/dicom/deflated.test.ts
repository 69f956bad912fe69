// Values of deflated instances, cut out of the data set as it is inflated (src/dicom/deflated.ts):
// a 15-frame RT Dose written deflated by the transcoder, its frames read in any order against the
// frames of the original; pydicom's own deflated image; values that are not there.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isVaultError } from '../../../src/core/errors.ts';
import { DeflatedValueReader, deflatedValue } from '../../../src/dicom/deflated.ts';
import { scanInstance } from '../../../src/dicom/scanner.ts';
import { transcode } from '../../../src/dicom/transcode.ts';
import { DEFLATED_EXPLICIT_VR_LE } from '../../../src/dicom/transfer-syntax.ts';

const TEST_FILES = '/usr/lib/python3/dist-packages/pydicom/data/test_files';

async function* pieces(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let pos = 0; pos < bytes.length; pos += size) yield bytes.subarray(pos, pos + size);
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of source) out.push(Buffer.from(c));
  return Buffer.concat(out);
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

describe.skipIf(!existsSync(TEST_FILES))('values of deflated instances', () => {
  it('reads frames in any order, in one pass while they ascend, each equal to the original frame', async () => {
    const original = readFileSync(join(TEST_FILES, 'rtdose.dcm'));
    const scanned = await scanInstance(pieces(original, 4096));
    const deflated = await collect(transcode(pieces(original, 4096), scanned, { transferSyntaxUID: DEFLATED_EXPLICIT_VR_LE }));
    expect(deflated.length).toBeLessThan(original.length);
    let passes = 0;
    const reader = new DeflatedValueReader(() => {
      passes++;
      return pieces(deflated, 333);
    }, '7FE00010');
    const frame = (n: number): Buffer => {
      const [r] = scanned.layout.frames[n - 1]!;
      return original.subarray(r!.offset, r!.offset + r!.length);
    };
    const length = scanned.layout.frames[0]![0]!.length;
    const read = async (n: number): Promise<Buffer> => Buffer.from(await reader.read({ offset: (n - 1) * length, length }));
    for (const n of [2, 3, 9, 15]) expect((await read(n)).equals(frame(n)), `frame ${n}`).toBe(true);
    expect(passes).toBe(1);
    for (const n of [1, 15, 14]) expect((await read(n)).equals(frame(n)), `frame ${n}`).toBe(true);
    expect(passes).toBe(3);
    // Asked for at once (frames decoded or rendered ahead), read one after the other.
    const together = await Promise.all([4, 5, 6].map(read));
    for (const [i, bytes] of together.entries()) expect(bytes.equals(frame(4 + i)), `frame ${4 + i}`).toBe(true);
    expect(passes).toBe(4);
    // Past the end of the value.
    expect(isVaultError(await failure(read(16)), 'BULKDATA_NOT_FOUND')).toBe(true);
    await reader.close();
  });

  it("cuts pydicom's deflated image's Pixel Data, a range of it, and an inline value; a value it lacks is BULKDATA_NOT_FOUND", async () => {
    const file = readFileSync(join(TEST_FILES, 'image_dfl.dcm'));
    const pixels = await collect(deflatedValue(pieces(file, 1000), '7FE00010'));
    expect(pixels.length).toBe(512 * 512);
    const part = await collect(deflatedValue(pieces(file, 1000), '7FE00010', { offset: 70_000, length: 5000 }));
    expect(part.equals(pixels.subarray(70_000, 75_000))).toBe(true);
    const rows = await collect(deflatedValue(pieces(file, 1000), '00280010'));
    expect(rows.readUInt16LE(0)).toBe(512);
    expect(isVaultError(await failure(collect(deflatedValue(pieces(file, 1000), '00091010'))), 'BULKDATA_NOT_FOUND')).toBe(true);
    expect(isVaultError(await failure(collect(deflatedValue(pieces(file, 1000), '7FE00010', { offset: 262_000, length: 1000 }))), 'BULKDATA_NOT_FOUND')).toBe(
      true,
    );
  });
});
