// The scanner's limits on what hostile input can make it hold (issue 21): each refuses with a
// 4xx naming the limit, real instances stay well inside them, and an instance that passes never
// holds more heap than its metadata budget allows.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { isVaultError } from '../../../src/core/errors.ts';
import {
  DEFAULT_MAX_BYTES_BEFORE_IDENTITY,
  DEFAULT_MAX_FILE_META_BYTES,
  DEFAULT_MAX_METADATA_BYTES,
  DEFAULT_MAX_SEQUENCE_DEPTH,
  DicomScanner,
  type DicomScannerOptions,
} from '../../../src/dicom/scanner.ts';
import type { ScannedInstance } from '../../../src/dicom/model.ts';
import {
  SEQUENCE_DELIMITER,
  element,
  elementHeader,
  hostileInstance,
  identityElements,
  itemHeader,
  part10Prefix,
  type Attack,
  type StreamedInstance,
} from '../../support/hostile-dicom.ts';
import { bytesOf } from '../../support/generated.ts';

const MiB = 2 ** 20;
const UIDS = { study: '1.2.826.0.1.3680043.8.498.11', series: '1.2.826.0.1.3680043.8.498.12', sop: '1.2.826.0.1.3680043.8.498.13' };

/** Streams an instance through a scanner; returns the result or the error. */
async function scan(inst: StreamedInstance, options?: DicomScannerOptions): Promise<{ scanned?: ScannedInstance; error?: unknown; scanner: DicomScanner }> {
  const scanner = new DicomScanner(options);
  try {
    for await (const piece of inst.open()) scanner.push(piece);
    return { scanned: scanner.end(), scanner };
  } catch (error) {
    return { error, scanner };
  }
}

function bytes(b: Buffer): StreamedInstance {
  return {
    size: b.length,
    async *open() {
      for (let i = 0; i < b.length; i += 65536) yield b.subarray(i, i + 65536);
    },
  };
}

function refusal(error: unknown): { code: string; status: number; message: string } {
  expect(isVaultError(error), String(error)).toBe(true);
  return error as { code: string; status: number; message: string };
}

/** An instance: File Meta, identity, then `body`. */
function instance(body: Buffer): Buffer {
  return Buffer.concat([part10Prefix(UIDS.sop), identityElements(UIDS), body]);
}

describe('sequence depth', () => {
  it(`refuses sequences nested deeper than DEFAULT_MAX_SEQUENCE_DEPTH (${DEFAULT_MAX_SEQUENCE_DEPTH}) as DICOM_MALFORMED, naming the limit`, async () => {
    const ok = await scan(hostileInstance('deep-nesting', DEFAULT_MAX_SEQUENCE_DEPTH, UIDS));
    expect(ok.error).toBeUndefined();
    let level = ok.scanned!.metadata;
    for (let i = 0; i < DEFAULT_MAX_SEQUENCE_DEPTH - 1; i++) level = (level['0040A730']!.Value as Array<typeof level>)[0]!;
    expect(level['0040A730']).toEqual({ vr: 'SQ', Value: [{}] });

    const { error } = await scan(hostileInstance('deep-nesting', 10_000, UIDS));
    const e = refusal(error);
    expect(e.code).toBe('DICOM_MALFORMED');
    expect(e.status).toBe(400);
    expect(e.message).toContain(`nested ${DEFAULT_MAX_SEQUENCE_DEPTH + 1} deep`);
    expect(e.message).toContain(`limit of ${DEFAULT_MAX_SEQUENCE_DEPTH} (maxSequenceDepth)`);
  });

  it('takes its limit from maxSequenceDepth', async () => {
    expect((await scan(hostileInstance('deep-nesting', 3, UIDS), { maxSequenceDepth: 3 })).error).toBeUndefined();
    expect(refusal((await scan(hostileInstance('deep-nesting', 4, UIDS), { maxSequenceDepth: 3 })).error).message).toContain('limit of 3 (maxSequenceDepth)');
  });
});

describe('metadata budget', () => {
  it(`refuses an endless run of tiny items at DEFAULT_MAX_METADATA_BYTES (${DEFAULT_MAX_METADATA_BYTES / MiB} MiB) of memory, long before the header byte limit`, async () => {
    // 8 million empty items: 64 MB on the wire (under the 64 MiB header limit), ~540 MB as JSON.
    const inst = hostileInstance('tiny-items', 8_000_000, UIDS);
    const { error, scanner } = await scan(inst);
    const e = refusal(error);
    expect(e.code).toBe('TOO_LARGE');
    expect(e.status).toBe(413);
    expect(e.message).toContain(`limit of ${DEFAULT_MAX_METADATA_BYTES / MiB} MiB held in memory per instance (maxMetadataBytes)`);
    expect(e.message).toMatch(/after \d+ data elements, [\d,]+ items/);
    // Refused within the first tenth of the stream.
    expect(scanner.bytesSeen).toBeLessThan(inst.size / 8);
  });

  for (const [attack, count, what] of [
    ['tiny-items', 400_000, /[\d,]{7} items/],
    ['tiny-elements', 400_000, /[\d,]{6} data elements/],
    ['huge-multiplicity', 1_000_000, /with a value of 6,000,000 bytes/],
  ] as Array<[Attack, number, RegExp]>) {
    it(`refuses ${attack} past maxMetadataBytes, saying what it holds`, async () => {
      const passes = await scan(hostileInstance(attack, count, UIDS), { maxMetadataBytes: 128 * MiB });
      expect(passes.error).toBeUndefined();
      const { error } = await scan(hostileInstance(attack, count, UIDS), { maxMetadataBytes: 8 * MiB });
      const e = refusal(error);
      expect(e.code).toBe('TOO_LARGE');
      expect(e.message).toContain('limit of 8 MiB held in memory per instance (maxMetadataBytes)');
      expect(e.message).toMatch(what);
    });
  }

  it('counts binary numbers, fragments, bulk data values and frames too', async () => {
    // 100 FD elements of 8,000 values each: 800,000 numbers.
    const fd = Buffer.concat([
      elementHeader(0x0040a730, 'SQ', -1),
      ...Array.from({ length: 100 }, () => {
        const e = element(0x0040a132, 'FD', Buffer.alloc(64_000));
        return Buffer.concat([itemHeader(e.length), e]);
      }),
      SEQUENCE_DELIMITER,
    ]);
    // 100,000 empty fragments of encapsulated Pixel Data.
    const fragments = Buffer.concat([
      elementHeader(0x7fe00010, 'OB', -1),
      itemHeader(0),
      ...Array.from({ length: 100_000 }, () => itemHeader(0)),
      SEQUENCE_DELIMITER,
    ]);
    // 20,000 private OB values just over the bulk data threshold.
    const bulk = Buffer.concat(Array.from({ length: 20_000 }, (_, i) => element(0x00430000 + 0x1000 + i, 'OB', Buffer.alloc(1026))));
    // 1,000,000 native frames of one byte.
    const frames = Buffer.concat([
      element(0x00280002, 'US', Buffer.from([1, 0])),
      element(0x00280008, 'IS', Buffer.from('1000000 ')),
      element(0x00280010, 'US', Buffer.from([1, 0])),
      element(0x00280011, 'US', Buffer.from([1, 0])),
      element(0x00280100, 'US', Buffer.from([8, 0])),
      element(0x7fe00010, 'OB', Buffer.alloc(1_000_000)),
    ]);
    for (const [body, what] of [
      [fd, /[\d,]{7} values/],
      [fragments, /[\d,]{6} fragments/],
      [bulk, /[\d,]{6} data elements/],
      [frames, /a layout of 1,000,000 frames/],
    ] as Array<[Buffer, RegExp]>) {
      expect((await scan(bytes(instance(body)), { maxMetadataBytes: 256 * MiB })).error).toBeUndefined();
      const e = refusal((await scan(bytes(instance(body)), { maxMetadataBytes: 4 * MiB })).error);
      expect(e.code).toBe('TOO_LARGE');
      expect(e.message).toMatch(what);
    }
  });

  it('bounds what an instance that passes really holds on the heap', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const budget = 24 * MiB;
    // Heap held by a scan's result (measured in its own frame, so nothing else stays reachable).
    const heldBy = async (attack: Attack, count: number): Promise<{ held: number; code?: string }> => {
      gc();
      const before = process.memoryUsage().heapUsed;
      const { scanned, error } = await scan(hostileInstance(attack, count, UIDS), { maxMetadataBytes: budget });
      gc();
      const held = process.memoryUsage().heapUsed - before;
      // Used after the measurement: the result was reachable through it.
      if (scanned !== undefined) expect(scanned.sopInstanceUID).toBe(UIDS.sop);
      return { held, ...(error === undefined ? {} : { code: refusal(error).code }) };
    };
    for (const [attack, count] of [
      ['tiny-items', 280_000],
      ['tiny-elements', 140_000],
      ['huge-multiplicity', 300_000],
    ] as Array<[Attack, number]>) {
      const { held, code } = await heldBy(attack, count);
      expect(code, attack).toBeUndefined();
      // Never more than the budget, and not a small fraction of it either (legit instances pass).
      expect(held, attack).toBeLessThan(budget);
      expect(held, attack).toBeGreaterThan(budget / 4);
      // Twice as many records do not fit.
      expect((await heldBy(attack, 2 * count)).code, attack).toBe('TOO_LARGE');
    }
  });

  it('passes a 4 GiB-class Enhanced MR header (8,191 frames of per-frame functional groups) with room to spare', async () => {
    const study = planStudy({ kind: 'multiframe', instances: 1, frames: 8191, rows: 8, columns: 8, seed: 3 });
    const file = await bytesOf(study.instances[0]!);
    const { scanned, error } = await scan(bytes(file), { maxMetadataBytes: DEFAULT_MAX_METADATA_BYTES / 4 });
    expect(error).toBeUndefined();
    expect(scanned!.layout.frames).toHaveLength(8191);
  });
});

describe('bytes before identity', () => {
  it(`refuses an instance not identified within DEFAULT_MAX_BYTES_BEFORE_IDENTITY (${DEFAULT_MAX_BYTES_BEFORE_IDENTITY / MiB} MiB)`, async () => {
    const inst = hostileInstance('bulk-before-identity', 64 * MiB, UIDS);
    const { error, scanner } = await scan(inst);
    const e = refusal(error);
    expect(e.code).toBe('TOO_LARGE');
    expect(e.message).toContain(`not identified within its first ${DEFAULT_MAX_BYTES_BEFORE_IDENTITY} bytes (maxBytesBeforeIdentity)`);
    expect(scanner.bytesSeen).toBeLessThan(DEFAULT_MAX_BYTES_BEFORE_IDENTITY + 2 * 65536);
    // The same value after the identity streams past: the limit is on what comes first.
    expect((await scan(hostileInstance('bulk-before-identity', 2 * MiB, UIDS), { maxBytesBeforeIdentity: 4 * MiB })).error).toBeUndefined();
    expect(refusal((await scan(hostileInstance('bulk-before-identity', 8 * MiB, UIDS), { maxBytesBeforeIdentity: 4 * MiB })).error).code).toBe('TOO_LARGE');
  });

  it('is identified at Series Instance UID itself, before a large value after it is read', () => {
    const head = instance(Buffer.alloc(0));
    const scanner = new DicomScanner({ maxBytesBeforeIdentity: head.length + 100 });
    scanner.push(head);
    expect(scanner.identified).toBe(true);
    scanner.push(elementHeader(0x0040a160, 'UT', 10_000));
    scanner.push(Buffer.alloc(10_000, 0x41));
    expect(scanner.end().metadata['0040A160']!.Value![0]).toHaveLength(10_000);
  });
});

describe('File Meta Information', () => {
  it(`refuses one larger than DEFAULT_MAX_FILE_META_BYTES (${DEFAULT_MAX_FILE_META_BYTES / MiB} MiB), reading it in small pieces in linear time`, () => {
    const scanner = new DicomScanner();
    scanner.push(Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), element(0x00020010, 'UI', Buffer.from('1.2.840.10008.1.2.1\0'))]));
    // Empty (0002,0100) elements in 1 KiB pieces: parsed from the start at every piece, this
    // took 21 s for 3 MB.
    const piece = Buffer.concat(Array.from({ length: 128 }, () => element(0x00020100, 'SH', Buffer.alloc(0))));
    const started = performance.now();
    let error: unknown;
    try {
      for (let i = 0; i < 2 * DEFAULT_MAX_FILE_META_BYTES; i += piece.length) scanner.push(piece);
    } catch (err) {
      error = err;
    }
    const e = refusal(error);
    expect(e.code).toBe('TOO_LARGE');
    expect(e.message).toContain(`limit of ${DEFAULT_MAX_FILE_META_BYTES} bytes (maxFileMetaBytes)`);
    expect(scanner.bytesSeen).toBeLessThanOrEqual(DEFAULT_MAX_FILE_META_BYTES + 1024 + 200);
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});
