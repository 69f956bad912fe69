// The pack object format (storage/s3/pack-format.ts), as pure encode/decode: what an operator's
// tool or an index rebuild reads from a bucket.
import { randomBytes } from 'node:crypto';
import * as dagCbor from '@ipld/dag-cbor';
import type { CID } from 'multiformats/cid';
import { describe, expect, it } from 'vitest';
import { rawCid } from '../../../../storage/cid.ts';
import {
  PACK_MAGIC,
  PACK_PREAMBLE_BYTES,
  PackBuilder,
  decodePack,
  decodePackHeader,
  encodePack,
  encodePackHeader,
  packDataStart,
} from '../../../../storage/s3/pack-format.ts';
import { expectCode, expectSameBytes } from '../../../support/storage-conformance.ts';

function block(size: number): { cid: CID; bytes: Uint8Array } {
  const bytes = randomBytes(size);
  return { cid: rawCid(bytes), bytes };
}

describe('pack format', () => {
  it('round-trips blocks of every size, empty ones included, in order', () => {
    const blocks = [block(0), block(1), block(1000), block(1024 * 1024 + 16), block(0), block(77)];
    const pack = encodePack(blocks);
    const back = decodePack(pack);
    expect(back.map((b) => b.cid.toString())).toEqual(blocks.map((b) => b.cid.toString()));
    for (const [i, b] of back.entries()) expectSameBytes(b.bytes, blocks[i]!.bytes);
  });

  it('is laid out as magic, u32 BE header length, dag-cbor header {v, blocks}, then the data', () => {
    const a = block(10);
    const b = block(20);
    const pack = encodePack([a, b]);
    expect(Buffer.from(pack.subarray(0, 8)).toString('latin1')).toBe('DVPACK1\n');
    const headerLength = Buffer.from(pack).readUInt32BE(8);
    expect(PACK_PREAMBLE_BYTES + headerLength + 30).toBe(pack.byteLength);
    const header = dagCbor.decode(pack.subarray(12, 12 + headerLength));
    expect(header).toEqual({
      v: 1,
      blocks: [
        [a.cid.bytes, 0, 10],
        [b.cid.bytes, 10, 20],
      ],
    });
    expectSameBytes(pack.subarray(12 + headerLength), Buffer.concat([a.bytes, b.bytes]));
  });

  it('reads the header from the head of a pack alone (an index rebuild needs no more)', () => {
    const blocks = Array.from({ length: 5 }, () => block(5000));
    const pack = encodePack(blocks);
    const dataStart = packDataStart(pack.subarray(0, PACK_PREAMBLE_BYTES));
    const { entries } = decodePackHeader(pack.subarray(0, dataStart), pack.byteLength - dataStart);
    expect(entries.map((e) => [e.cid.toString(), e.offset, e.length])).toEqual(blocks.map((b, i) => [b.cid.toString(), i * 5000, 5000]));
  });

  it('leaves a block deleted before sealing out of the header; its bytes stay as a gap', () => {
    const builder = new PackBuilder(3000);
    const [a, b, c] = [block(1000), block(1000), block(1000)];
    const at = [a, b, c].map((x) => ({ cid: x.cid, ...builder.add(x.bytes) }));
    const pack = builder.seal([at[0]!, at[2]!]);
    const back = decodePack(pack);
    expect(back.map((x) => x.cid.toString())).toEqual([a.cid.toString(), c.cid.toString()]);
    expectSameBytes(back[1]!.bytes, c.bytes);
  });

  it('copies each block in, so the caller may reuse its buffer at once', () => {
    const builder = new PackBuilder(100);
    const scratch = new Uint8Array(10).fill(7);
    const cid = rawCid(scratch);
    const at = builder.add(scratch);
    scratch.fill(0);
    expectSameBytes(builder.view(at.offset, at.length), new Uint8Array(10).fill(7));
    expectSameBytes(decodePack(builder.seal([{ cid, ...at }]))[0]!.bytes, new Uint8Array(10).fill(7));
  });

  it('refuses a block beyond its capacity', () => {
    const builder = new PackBuilder(10);
    builder.add(new Uint8Array(6));
    expect(builder.fits(4)).toBe(true);
    expect(builder.fits(5)).toBe(false);
    expect(() => builder.add(new Uint8Array(5))).toThrow(RangeError);
  });

  it('still writes a header larger than the reserved room (many tiny blocks)', () => {
    const blocks = Array.from({ length: 3000 }, (_, i) => block(i % 3));
    const builder = new PackBuilder(3000, { headerReserve: 1024 });
    const entries = blocks.map((b) => ({ cid: b.cid, ...builder.add(b.bytes) }));
    const pack = builder.seal(entries);
    const back = decodePack(pack);
    expect(back).toHaveLength(3000);
    for (const [i, b] of back.entries()) expectSameBytes(b.bytes, blocks[i]!.bytes);
  });

  describe('refuses what is not a valid pack, with BLOCK_CORRUPT naming it', () => {
    const good = encodePack([block(100), block(50)]);
    const mutate = (fn: (bytes: Uint8Array) => Uint8Array): Uint8Array => fn(Uint8Array.from(good));
    const headerOnly = (header: unknown): Uint8Array => {
      const cbor = dagCbor.encode(header);
      const out = new Uint8Array(PACK_PREAMBLE_BYTES + cbor.byteLength + 100);
      out.set(PACK_MAGIC, 0);
      Buffer.from(out.buffer).writeUInt32BE(cbor.byteLength, 8);
      out.set(cbor, PACK_PREAMBLE_BYTES);
      return out;
    };
    const cases: Array<[string, Uint8Array]> = [
      [
        'a wrong magic',
        mutate((b) => {
          b[0] = 0x41;
          return b;
        }),
      ],
      ['a truncated preamble', good.subarray(0, 7)],
      ['a header cut short', good.subarray(0, PACK_PREAMBLE_BYTES + 5)],
      [
        'a header length of gigabytes',
        mutate((b) => {
          Buffer.from(b.buffer).writeUInt32BE(0xffffffff, 8);
          return b;
        }),
      ],
      ['another version', headerOnly({ v: 2, blocks: [] })],
      ['blocks that are not a list', headerOnly({ v: 1, blocks: 3 })],
      ['an entry that is not a triple', headerOnly({ v: 1, blocks: [[new Uint8Array(4), 0]] })],
      ['an entry with a negative offset', headerOnly({ v: 1, blocks: [[block(1).cid.bytes, -1, 1]] })],
      ['an entry that is no CID', headerOnly({ v: 1, blocks: [[new Uint8Array([1, 2, 3]), 0, 1]] })],
      ['an entry past the data', headerOnly({ v: 1, blocks: [[block(1).cid.bytes, 90, 20]] })],
    ];
    it.each(cases)('%s', async (_label, bytes) => {
      const err = await expectCode(
        Promise.resolve().then(() => decodePack(bytes, 'packs/p-test')),
        'BLOCK_CORRUPT',
      );
      expect(err.message).toContain('packs/p-test');
    });
  });

  it('encodes the header the same way the builder does', () => {
    const a = block(3);
    const direct = encodePackHeader([{ cid: a.cid, offset: 0, length: 3 }]);
    const built = encodePack([a]);
    expectSameBytes(built.subarray(0, direct.byteLength), direct);
  });
});
