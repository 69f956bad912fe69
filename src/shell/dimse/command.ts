// DIMSE command sets (PS3.7 E.1, 9.3): the few fields the Storage SCP reads from a request, and
// the responses it sends, each in its P-DATA-TF. A command set is a short list of group 0000
// elements in Implicit VR Little Endian.
//
// Why by hand: dcmjs-dimse builds a command's Dataset through dcmjs (naturalize, denaturalize,
// a write stream per element) and logs every command as a string even when its logging is off;
// on a fresh node that was ~5 ms per C-STORE (0.3 ms once warm), and a C-STORE's answer waits
// on it. The SCP reads seven fields and writes at most eight, which is a few lines; the unit
// tests check both directions against dcmjs-dimse's own encoding.
import { VaultError } from '../../core/errors.ts';
import { AbortReason, pduError, PduType } from './pdu-reader.ts';

/** Command Field values (PS3.7 E.1-1). */
export const CommandField = {
  CStoreRq: 0x0001,
  CStoreRsp: 0x8001,
  CEchoRq: 0x0030,
  CEchoRsp: 0x8030,
  CCancelRq: 0x0fff,
} as const;

/** Command Data Set Type: no data set follows (PS3.7 E.1-1; any other value: one does). */
export const NO_DATA_SET = 0x0101;

/** Status: the operation is not one the SCP knows for the SOP class (PS3.7 C.5.3). */
export const UNRECOGNIZED_OPERATION = 0x0211;

/** The SCP's limit on a command set, in bytes (64 KiB: dcmtk's largest are a few hundred). */
export const MAX_COMMAND_BYTES = 64 * 1024;

export interface CommandSet {
  commandField: number;
  messageId: number;
  /** Affected (or, for N- services, Requested) SOP Class UID; '' when absent. */
  sopClassUid: string;
  /** Affected SOP Instance UID; '' when absent. */
  sopInstanceUid: string;
  hasDataSet: boolean;
}

const TAG_AFFECTED_SOP_CLASS = 0x0002;
const TAG_REQUESTED_SOP_CLASS = 0x0003;
const TAG_COMMAND_FIELD = 0x0100;
const TAG_MESSAGE_ID = 0x0110;
const TAG_MESSAGE_ID_RESPONDED = 0x0120;
const TAG_DATA_SET_TYPE = 0x0800;
const TAG_STATUS = 0x0900;
const TAG_ERROR_COMMENT = 0x0902;
const TAG_AFFECTED_SOP_INSTANCE = 0x1000;

/** Reads a command set; throws a protocol error (the association is aborted) when it is malformed. */
export function decodeCommand(bytes: Buffer): CommandSet {
  let commandField: number | undefined;
  let messageId: number | undefined;
  let dataSetType: number | undefined;
  let affectedClass = '';
  let requestedClass = '';
  let sopInstanceUid = '';
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < 8) throw malformed('an element header is cut short');
    const group = bytes.readUInt16LE(at);
    const element = bytes.readUInt16LE(at + 2);
    const length = bytes.readUInt32LE(at + 4);
    at += 8;
    if (group !== 0x0000) throw malformed(`an element of group ${group.toString(16).padStart(4, '0')}`);
    if (length > bytes.length - at) throw malformed(`element (0000,${element.toString(16).padStart(4, '0')}) runs past the command set`);
    const value = bytes.subarray(at, at + length);
    at += length;
    switch (element) {
      case TAG_COMMAND_FIELD:
        commandField = us(value, element);
        break;
      case TAG_MESSAGE_ID:
        messageId = us(value, element);
        break;
      case TAG_DATA_SET_TYPE:
        dataSetType = us(value, element);
        break;
      case TAG_AFFECTED_SOP_CLASS:
        affectedClass = uid(value);
        break;
      case TAG_REQUESTED_SOP_CLASS:
        requestedClass = uid(value);
        break;
      case TAG_AFFECTED_SOP_INSTANCE:
        sopInstanceUid = uid(value);
        break;
      default:
        // Group length, priority, move originator...: not needed to store or echo.
        break;
    }
  }
  if (commandField === undefined) throw malformed('no Command Field');
  if (dataSetType === undefined) throw malformed('no Command Data Set Type');
  return {
    commandField,
    messageId: messageId ?? 0,
    sopClassUid: affectedClass !== '' ? affectedClass : requestedClass,
    sopInstanceUid,
    hasDataSet: dataSetType !== NO_DATA_SET,
  };
}

export interface ResponseFields {
  commandField: number;
  messageIdBeingRespondedTo: number;
  sopClassUid: string;
  /** Omitted when ''. */
  sopInstanceUid?: string;
  status: number;
  /** ErrorComment (LO, at most 64 characters); omitted when '' or absent. */
  errorComment?: string;
}

/** A response's command set (no data set follows), group length first. */
export function encodeResponse(r: ResponseFields): Buffer {
  const elements: Array<[number, Buffer]> = [
    [TAG_AFFECTED_SOP_CLASS, text(r.sopClassUid, 0)],
    [TAG_COMMAND_FIELD, u16(r.commandField)],
    [TAG_MESSAGE_ID_RESPONDED, u16(r.messageIdBeingRespondedTo)],
    [TAG_DATA_SET_TYPE, u16(NO_DATA_SET)],
    [TAG_STATUS, u16(r.status)],
  ];
  if (r.errorComment) {
    if (r.errorComment.length > 64) throw new VaultError('INTERNAL', 'an ErrorComment is at most 64 characters');
    elements.push([TAG_ERROR_COMMENT, text(r.errorComment, 0x20)]);
  }
  if (r.sopInstanceUid) elements.push([TAG_AFFECTED_SOP_INSTANCE, text(r.sopInstanceUid, 0)]);
  const groupLength = elements.reduce((n, [, v]) => n + 8 + v.length, 0);
  const out = Buffer.allocUnsafe(12 + groupLength);
  let at = writeHeader(out, 0, 0x0000, 4);
  at = out.writeUInt32LE(groupLength, at);
  for (const [element, value] of elements) {
    at = writeHeader(out, at, element, value.length);
    at += value.copy(out, at);
  }
  return out;
}

/** A P-DATA-TF of one PDV: the whole of a command set, its last fragment. */
export function commandPdu(contextId: number, command: Buffer): Buffer {
  const out = Buffer.allocUnsafe(12 + command.length);
  out[0] = PduType.PDataTf;
  out[1] = 0;
  out.writeUInt32BE(6 + command.length, 2);
  out.writeUInt32BE(2 + command.length, 6);
  out[10] = contextId;
  out[11] = 0x03; // command, last fragment
  command.copy(out, 12);
  return out;
}

function writeHeader(out: Buffer, at: number, element: number, length: number): number {
  out.writeUInt16LE(0x0000, at);
  out.writeUInt16LE(element, at + 2);
  out.writeUInt32LE(length, at + 4);
  return at + 8;
}

function u16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16LE(n);
  return b;
}

/** UI (padded with NUL) or LO (with space) to even length (PS3.5 6.2). */
function text(s: string, pad: number): Buffer {
  const b = Buffer.alloc(s.length + (s.length & 1), pad);
  b.write(s, 0, 'latin1');
  return b;
}

function us(value: Buffer, element: number): number {
  if (value.length !== 2) throw malformed(`element (0000,${element.toString(16).padStart(4, '0')}) is not 2 bytes`);
  return value.readUInt16LE(0);
}

/** UI values may carry their padding (PS3.5 9.1). */
function uid(value: Buffer): string {
  return value.toString('latin1').replace(/[\0 ]+$/, '');
}

function malformed(what: string): VaultError {
  return pduError(`malformed DIMSE command: ${what}`, AbortReason.InvalidPduParameterValue);
}
