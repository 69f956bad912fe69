// The DIMSE PDU reader: whatever way the socket cuts a stream of PDUs into reads, it hands on
// the same PDUs and the same PDV values, the values as views of the reads (never gathered), and
// it refuses PDUs whose lengths do not add up.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isVaultError } from '../../../../src/core/errors.ts';
import { AbortReason, MAX_CONTROL_PDU_LENGTH, PduReader, abortReasonOf } from '../../../../src/shell/dimse/pdu-reader.ts';

const MAX = 256 * 1024;

interface Pdv {
  contextId: number;
  control: number;
  value: Buffer;
}

function pdu(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(6);
  head[0] = type;
  head.writeUInt32BE(body.length, 2);
  return Buffer.concat([head, body]);
}

function pDataTf(pdvs: Pdv[]): Buffer {
  return pdu(
    0x04,
    Buffer.concat(
      pdvs.map((p) => {
        const item = Buffer.alloc(6);
        item.writeUInt32BE(p.value.length + 2, 0);
        item[4] = p.contextId;
        item[5] = p.control;
        return Buffer.concat([item, p.value]);
      }),
    ),
  );
}

/** What the reader handed on, with each PDV's pieces joined again. */
class Recorder {
  readonly events: Array<{ pdu: Buffer } | Pdv> = [];
  pieces = 0;
  #open: { contextId: number; control: number; parts: Buffer[] } | null = null;
  readonly handler = {
    pdu: (bytes: Buffer) => {
      expect(this.#open, 'a PDU in the middle of a PDV').toBeNull();
      this.events.push({ pdu: Buffer.from(bytes) });
    },
    pdv: (contextId: number, control: number, piece: Buffer, end: boolean) => {
      this.pieces++;
      if (this.#open === null) this.#open = { contextId, control, parts: [] };
      expect([contextId, control]).toEqual([this.#open.contextId, this.#open.control]);
      this.#open.parts.push(Buffer.from(piece));
      if (end) {
        this.events.push({ contextId, control, value: Buffer.concat(this.#open.parts) });
        this.#open = null;
      }
    },
  };
}

/** A stream of every kind: an association request, commands and data sets over several PDUs, an empty PDV, a release. */
function sampleStream(): { bytes: Buffer; expected: Recorder['events'] } {
  const associate = pdu(0x01, randomBytes(300));
  const command: Pdv = { contextId: 1, control: 0x03, value: randomBytes(130) };
  const data1: Pdv = { contextId: 1, control: 0x00, value: randomBytes(1000) };
  const data2: Pdv = { contextId: 1, control: 0x02, value: randomBytes(777) };
  const empty: Pdv = { contextId: 3, control: 0x02, value: Buffer.alloc(0) };
  const echo: Pdv = { contextId: 3, control: 0x03, value: randomBytes(68) };
  const release = pdu(0x05, Buffer.alloc(4));
  const bytes = Buffer.concat([associate, pDataTf([command, data1]), pDataTf([data2]), pDataTf([empty, echo]), release]);
  return { bytes, expected: [{ pdu: associate }, command, data1, data2, empty, echo, { pdu: release }] };
}

function feed(bytes: Buffer, cuts: number[]): Recorder {
  const rec = new Recorder();
  const reader = new PduReader(rec.handler, MAX);
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    reader.push(bytes.subarray(at, cut));
    at = cut;
  }
  return rec;
}

function refusal(bytes: Buffer, max = MAX): unknown {
  const reader = new PduReader(new Recorder().handler, max);
  try {
    reader.push(bytes);
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('PduReader', () => {
  it('hands on the same PDUs and PDV values wherever the reads split the stream', () => {
    const { bytes, expected } = sampleStream();
    expect(feed(bytes, []).events).toEqual(expected);
    // Every single split point (inside headers, item headers, values, between PDUs) ...
    for (let cut = 1; cut < bytes.length; cut++) expect(feed(bytes, [cut]).events, `cut at ${cut}`).toEqual(expected);
    // ... every pair of them in the first PDUs, and a byte at a time.
    for (let a = 1; a < 480; a += 7) for (let b = a + 1; b < 500; b += 5) expect(feed(bytes, [a, b]).events).toEqual(expected);
    expect(
      feed(
        bytes,
        Array.from({ length: bytes.length - 1 }, (_, i) => i + 1),
      ).events,
    ).toEqual(expected);
  });

  it('reads a PDU spanning many reads as it comes, in pieces that are views of the reads', () => {
    const value = randomBytes(MAX - 6);
    const bytes = pDataTf([{ contextId: 5, control: 0x02, value }]);
    const pieces: Buffer[] = [];
    const chunks: Buffer[] = [];
    const reader = new PduReader(
      {
        pdu: () => expect.unreachable(),
        pdv: (_id, _control, piece) => {
          pieces.push(piece);
        },
      },
      MAX,
    );
    for (let at = 0; at < bytes.length; at += 1000) {
      // Buffer.alloc: never from the shared pool, so a copy could not pass for a view below.
      const part = bytes.subarray(at, at + 1000);
      const chunk = Buffer.alloc(part.length);
      part.copy(chunk);
      chunks.push(chunk);
      const before = pieces.length;
      reader.push(chunk);
      // The value so far is handed on at once, not held back until the PDU is whole.
      expect(pieces.length).toBe(before + 1);
    }
    expect(Buffer.concat(pieces).equals(value)).toBe(true);
    // Views of the socket's buffers, not copies.
    for (const [i, p] of pieces.entries()) expect(p.buffer).toBe(chunks[i]!.buffer);
  });

  it('reads many PDUs in one read', () => {
    const pdvs = Array.from({ length: 200 }, (_, i) => ({ contextId: 1 + 2 * (i % 3), control: i % 4, value: randomBytes(i % 50) }));
    const bytes = Buffer.concat(pdvs.map((p) => pDataTf([p])));
    expect(feed(bytes, []).events).toEqual(pdvs);
    // And several PDVs per PDU, the whole stream in one read.
    const packed = Buffer.concat([pDataTf(pdvs.slice(0, 100)), pDataTf(pdvs.slice(100))]);
    expect(feed(packed, []).events).toEqual(pdvs);
  });

  it('refuses PDUs whose lengths do not add up, and reads nothing after', () => {
    const good = pDataTf([{ contextId: 1, control: 3, value: randomBytes(10) }]);
    const cases: Array<[string, Buffer, number]> = [
      ['a P-DATA-TF longer than negotiated', pDataTf([{ contextId: 1, control: 0, value: randomBytes(MAX) }]), AbortReason.InvalidPduParameterValue],
      ['a P-DATA-TF without a PDV', pdu(0x04, Buffer.alloc(0)), AbortReason.InvalidPduParameterValue],
      ['a P-DATA-TF too short for a PDV item header', pdu(0x04, Buffer.alloc(4)), AbortReason.InvalidPduParameterValue],
      ['a PDV longer than its PDU', patch(good, 6, 0xff), AbortReason.InvalidPduParameterValue],
      ['a PDV item without context ID and control', patchLength(good, 6, 1), AbortReason.InvalidPduParameterValue],
      ['bytes left over after the last whole PDV', patchLength(good, 2, good.length - 6 + 3), AbortReason.InvalidPduParameterValue],
      ['an unknown PDU type', pdu(0x09, Buffer.alloc(4)), AbortReason.UnrecognizedPdu],
      ['an association PDU over the limit', patchLength(pdu(0x01, Buffer.alloc(0)), 2, MAX_CONTROL_PDU_LENGTH + 1), AbortReason.InvalidPduParameterValue],
    ];
    for (const [what, bytes, reason] of cases) {
      const err = refusal(bytes);
      expect(isVaultError(err), what).toBe(true);
      expect(abortReasonOf(err), what).toBe(reason);
    }
    // The limits themselves are taken: a P-DATA-TF of exactly the negotiated length, an association PDU of the limit's.
    expect(feed(pDataTf([{ contextId: 1, control: 0, value: randomBytes(MAX - 6) }]), []).events).toHaveLength(1);
    expect(feed(pdu(0x01, Buffer.alloc(MAX_CONTROL_PDU_LENGTH)), []).events).toHaveLength(1);

    // After a refusal the reader stays silent, whatever comes.
    const rec = new Recorder();
    const reader = new PduReader(rec.handler, MAX);
    expect(() => reader.push(pdu(0x09, Buffer.alloc(2)))).toThrow();
    reader.push(good);
    expect(rec.events).toEqual([]);
  });

  it('passes on what the handler throws, as a refusal', () => {
    const reader = new PduReader(
      {
        pdu: () => undefined,
        pdv: () => {
          throw new Error('not now');
        },
      },
      MAX,
    );
    expect(() => reader.push(pDataTf([{ contextId: 1, control: 3, value: randomBytes(4) }]))).toThrow('not now');
  });
});

/** `bytes` with the byte at `at` set to `value`. */
function patch(bytes: Buffer, at: number, value: number): Buffer {
  const out = Buffer.from(bytes);
  out[at] = value;
  return out;
}

/** `bytes` with the 32-bit big-endian length at `at` set to `length`. */
function patchLength(bytes: Buffer, at: number, length: number): Buffer {
  const out = Buffer.from(bytes);
  out.writeUInt32BE(length, at);
  return out;
}
