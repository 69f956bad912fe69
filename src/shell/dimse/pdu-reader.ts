// Reads one association's PDU stream (PS3.8 9.3) as socket reads arrive, without gathering
// P-DATA-TF PDUs whole: the value of each PDV is handed on in pieces, as views of the socket's
// own buffers, however the PDUs fall across reads.
//
// Why by hand: dcmjs-dimse (which still negotiates associations here) gathers every PDU by
// concatenating socket reads, Buffer.concat after Buffer.concat, before parsing it: a 256 KiB
// PDU arriving in 64 KiB reads was copied 2.5 times over, and its PDVs once more into its
// streams. Profiled on 200 small C-STOREs, that took ~2 s of the node's main thread and most of
// its garbage collection; the data set bytes are now copied once, by the ingest.
// Every PDU other than P-DATA-TF (association, release, abort) is small and is still passed to
// dcmjs-dimse whole, as it arrived.
import { VaultError } from '../../core/errors.ts';

export const PduType = {
  AssociateRq: 0x01,
  AssociateAc: 0x02,
  AssociateRj: 0x03,
  PDataTf: 0x04,
  ReleaseRq: 0x05,
  ReleaseRp: 0x06,
  Abort: 0x07,
} as const;

/** A-ABORT reasons when the service provider aborts (PS3.8 9.3.8, Table 9-26). */
export const AbortReason = {
  NotSpecified: 0,
  UnrecognizedPdu: 1,
  UnexpectedPdu: 2,
  UnrecognizedPduParameter: 4,
  UnexpectedPduParameter: 5,
  InvalidPduParameterValue: 6,
} as const;

/** PDU header and PDV item header: both 6 bytes (type, reserved, length; length, context ID, control). */
const HEADER_BYTES = 6;

/**
 * Longest PDU other than P-DATA-TF taken, in bytes (1 MiB). PS3.8 sets none; an A-ASSOCIATE-RQ
 * proposing all 128 presentation contexts with several transfer syntaxes each is ~200 KiB.
 */
export const MAX_CONTROL_PDU_LENGTH = 1024 * 1024;

export interface PduHandler {
  /** A whole PDU other than P-DATA-TF, its 6-byte header included. */
  pdu(bytes: Buffer): void;
  /**
   * A piece of the value of a PDV (`control`: its message control header, PS3.8 E.2), a view of
   * the socket's buffer; `end` on the piece that ends the PDV item (an empty PDV is one empty piece).
   */
  pdv(contextId: number, control: number, piece: Buffer, end: boolean): void;
}

/** A protocol error: the association is aborted with `reason` (AbortReason). */
export function pduError(message: string, reason: number): VaultError {
  return new VaultError('BAD_REQUEST', message, { details: { abortReason: reason } });
}

/** The A-ABORT reason a protocol error carries (NotSpecified for any other error). */
export function abortReasonOf(err: unknown): number {
  const reason = err instanceof VaultError ? err.details?.abortReason : undefined;
  return typeof reason === 'number' ? reason : AbortReason.NotSpecified;
}

type State = 'pdu-header' | 'pdv-header' | 'pdv-value' | 'pdu-body';

export class PduReader {
  readonly #handler: PduHandler;
  readonly #maxDataPduLength: number;
  #state: State = 'pdu-header';
  /** A header (PDU or PDV item) split across reads, gathered here. */
  readonly #header = Buffer.alloc(HEADER_BYTES);
  #headerFill = 0;
  /** Bytes of the current P-DATA-TF's variable field not yet read (item headers included). */
  #pduLeft = 0;
  /** Bytes of the current PDV's value not yet read. */
  #pdvLeft = 0;
  #contextId = 0;
  #control = 0;
  /** A PDU other than P-DATA-TF being gathered whole. */
  #body: Buffer | null = null;
  #bodyFill = 0;
  #failed = false;

  /** `maxDataPduLength`: the longest P-DATA-TF variable field taken, as advertised in A-ASSOCIATE-AC. */
  constructor(handler: PduHandler, maxDataPduLength: number) {
    this.#handler = handler;
    this.#maxDataPduLength = maxDataPduLength;
  }

  /**
   * Reads one socket read. Throws (pduError) on a malformed stream, and reads nothing more after
   * that; what the handler throws is passed on the same way.
   */
  push(chunk: Buffer): void {
    if (this.#failed) return;
    try {
      this.#read(chunk);
    } catch (err) {
      this.#failed = true;
      throw err;
    }
  }

  #read(chunk: Buffer): void {
    let at = 0;
    const length = chunk.length;
    while (at < length) {
      switch (this.#state) {
        case 'pdu-header':
        case 'pdv-header': {
          let header: Buffer;
          let headerAt: number;
          if (this.#headerFill === 0 && length - at >= HEADER_BYTES) {
            header = chunk;
            headerAt = at;
            at += HEADER_BYTES;
          } else {
            // A header split across reads: its bytes gathered first.
            const n = Math.min(HEADER_BYTES - this.#headerFill, length - at);
            chunk.copy(this.#header, this.#headerFill, at, at + n);
            this.#headerFill += n;
            at += n;
            if (this.#headerFill < HEADER_BYTES) return;
            this.#headerFill = 0;
            header = this.#header;
            headerAt = 0;
          }
          if (this.#state === 'pdu-header') this.#startPdu(header, headerAt);
          else this.#startPdv(header, headerAt);
          break;
        }
        case 'pdv-value': {
          const n = Math.min(this.#pdvLeft, length - at);
          this.#pdvLeft -= n;
          this.#pduLeft -= n;
          const piece = chunk.subarray(at, at + n);
          at += n;
          if (this.#pdvLeft === 0) this.#endPdv();
          this.#handler.pdv(this.#contextId, this.#control, piece, this.#pdvLeft === 0);
          break;
        }
        case 'pdu-body': {
          const body = this.#body!;
          const n = Math.min(body.length - this.#bodyFill, length - at);
          chunk.copy(body, this.#bodyFill, at, at + n);
          this.#bodyFill += n;
          at += n;
          if (this.#bodyFill === body.length) {
            this.#body = null;
            this.#state = 'pdu-header';
            this.#handler.pdu(body);
          }
          break;
        }
      }
    }
  }

  #startPdu(header: Buffer, at: number): void {
    const type = header[at]!;
    const pduLength = header.readUInt32BE(at + 2);
    if (type === PduType.PDataTf) {
      if (pduLength > this.#maxDataPduLength) {
        throw pduError(`P-DATA-TF of ${pduLength} bytes, longer than the ${this.#maxDataPduLength} negotiated`, AbortReason.InvalidPduParameterValue);
      }
      if (pduLength < HEADER_BYTES) throw pduError(`P-DATA-TF of ${pduLength} bytes holds no PDV`, AbortReason.InvalidPduParameterValue);
      this.#pduLeft = pduLength;
      this.#state = 'pdv-header';
      return;
    }
    if (type < PduType.AssociateRq || type > PduType.Abort) throw pduError(`unknown PDU type 0x${type.toString(16)}`, AbortReason.UnrecognizedPdu);
    if (pduLength > MAX_CONTROL_PDU_LENGTH) {
      throw pduError(`PDU of type 0x${type.toString(16)} of ${pduLength} bytes, over ${MAX_CONTROL_PDU_LENGTH}`, AbortReason.InvalidPduParameterValue);
    }
    // Gathered whole, header included, for dcmjs-dimse's parser: these are small and rare.
    const body = Buffer.allocUnsafe(HEADER_BYTES + pduLength);
    header.copy(body, 0, at, at + HEADER_BYTES);
    if (pduLength === 0) {
      this.#handler.pdu(body);
      return;
    }
    this.#body = body;
    this.#bodyFill = HEADER_BYTES;
    this.#state = 'pdu-body';
  }

  #startPdv(header: Buffer, at: number): void {
    const itemLength = header.readUInt32BE(at);
    // The item length counts the context ID and control bytes (PS3.8 9.3.5.1).
    if (itemLength < 2 || itemLength > this.#pduLeft - 4) {
      throw pduError(`PDV item of ${itemLength} bytes does not fit its P-DATA-TF (${this.#pduLeft - 4} bytes left)`, AbortReason.InvalidPduParameterValue);
    }
    this.#contextId = header[at + 4]!;
    this.#control = header[at + 5]!;
    this.#pduLeft -= HEADER_BYTES;
    this.#pdvLeft = itemLength - 2;
    if (this.#pdvLeft === 0) {
      this.#endPdv();
      this.#handler.pdv(this.#contextId, this.#control, EMPTY, true);
      return;
    }
    this.#state = 'pdv-value';
  }

  /** After a PDV's last byte: the next item of the same PDU, or the next PDU. */
  #endPdv(): void {
    if (this.#pduLeft === 0) this.#state = 'pdu-header';
    else if (this.#pduLeft < HEADER_BYTES) {
      throw pduError(`${this.#pduLeft} bytes left in a P-DATA-TF after its last whole PDV`, AbortReason.InvalidPduParameterValue);
    } else this.#state = 'pdv-header';
  }
}

const EMPTY = Buffer.alloc(0);
