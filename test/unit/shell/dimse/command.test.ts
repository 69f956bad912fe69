// DIMSE command sets as the Storage SCP reads and writes them, with dcmjs-dimse (the library that
// negotiates the associations) as the referee: what it encodes, we read the same; what we
// encode, it reads the same, byte for byte where both write the same elements.
import dimse from 'dcmjs-dimse';
import { describe, expect, it } from 'vitest';
import { isVaultError } from '../../../../src/core/errors.ts';
import { CommandField, commandPdu, decodeCommand, encodeResponse } from '../../../../src/shell/dimse/command.ts';
import { PduReader } from '../../../../src/shell/dimse/pdu-reader.ts';

const { Dataset, requests, responses } = dimse;
const IMPLICIT_LE = '1.2.840.10008.1.2';
const MR = '1.2.840.10008.5.1.4.1.1.4';
const CT = '1.2.840.10008.5.1.4.1.1.2';

/** dcmjs-dimse's encoding of a command set (what it would send). */
function dcmjsCommand(command: { getCommandDataset(): unknown }): Buffer {
  return (command.getCommandDataset() as { getDenaturalizedCommandDataset(): Buffer }).getDenaturalizedCommandDataset();
}

function storeRequest(sopClass: string, sopInstance: string, messageId: number): InstanceType<typeof requests.CStoreRequest> {
  const request = new requests.CStoreRequest(new Dataset({ SOPClassUID: sopClass, SOPInstanceUID: sopInstance, _meta: {} }, IMPLICIT_LE));
  request.setMessageId(messageId);
  return request;
}

describe('decodeCommand', () => {
  it('reads the fields of C-STORE and C-ECHO requests as dcmjs-dimse writes them', () => {
    // Odd and even UID lengths: padding is not part of the value.
    for (const uid of ['1.2.3.4.5', '1.2.826.0.1.3680043.8.498.123456789012345678901234567890']) {
      const cmd = decodeCommand(dcmjsCommand(storeRequest(MR, uid, 4242)));
      expect(cmd).toEqual({ commandField: CommandField.CStoreRq, messageId: 4242, sopClassUid: MR, sopInstanceUid: uid, hasDataSet: true });
    }
    const echo = new requests.CEchoRequest();
    echo.setMessageId(7);
    expect(decodeCommand(dcmjsCommand(echo))).toEqual({
      commandField: CommandField.CEchoRq,
      messageId: 7,
      sopClassUid: '1.2.840.10008.1.1',
      sopInstanceUid: '',
      hasDataSet: false,
    });
  });

  it('refuses a malformed command set', () => {
    const good = dcmjsCommand(storeRequest(CT, '1.2.3', 1));
    const otherGroup = Buffer.from(good);
    otherGroup.writeUInt16LE(0x0008, 12); // the element after the group length
    const overlong = Buffer.from(good);
    overlong.writeUInt32LE(good.length, 16);
    const noField = Buffer.alloc(10);
    noField.writeUInt32LE(2, 4); // (0000,0000) of 2 bytes: no Command Field anywhere
    for (const [what, bytes] of [
      ['cut inside an element header', good.subarray(0, good.length - 3 - 8 - 6)],
      ['an element of another group', otherGroup],
      ['an element running past the end', overlong],
      ['no Command Field', noField],
    ] as const) {
      expect(() => decodeCommand(bytes), what).toThrow();
      try {
        decodeCommand(bytes);
      } catch (err) {
        expect(isVaultError(err, 'BAD_REQUEST'), what).toBe(true);
      }
    }
  });
});

describe('encodeResponse', () => {
  it('writes a failed C-STORE response byte for byte as dcmjs-dimse does', () => {
    for (const uid of ['1.2.3.4.5', '1.2.3.4.56']) {
      for (const comment of ['out of resources: retry later', 'odd']) {
        const theirs = new responses.CStoreResponse(0xa700, comment);
        theirs.setMessageIdBeingRespondedTo(99);
        theirs.setAffectedSopClassUid(MR);
        theirs.setAffectedSopInstanceUid(uid);
        const ours = encodeResponse({
          commandField: CommandField.CStoreRsp,
          messageIdBeingRespondedTo: 99,
          sopClassUid: MR,
          sopInstanceUid: uid,
          status: 0xa700,
          errorComment: comment,
        });
        expect(ours.toString('hex')).toBe(dcmjsCommand(theirs).toString('hex'));
      }
    }
  });

  it('writes success and C-ECHO responses that dcmjs-dimse reads back as it would have written them', () => {
    const read = (b: Buffer): Record<string, unknown> => {
      const elements = { ...new Dataset(b, IMPLICIT_LE).getElements() };
      // dcmjs-dimse writes an empty ErrorComment even on success (PS3.7 has it only on failure),
      // which its group length counts: both are compared apart.
      if (elements.ErrorComment === '' || elements.ErrorComment === undefined) delete elements.ErrorComment;
      expect(elements.CommandGroupLength).toBeTypeOf('number');
      delete elements.CommandGroupLength;
      return elements;
    };
    const store = new responses.CStoreResponse(0x0000, '');
    store.setMessageIdBeingRespondedTo(65535);
    store.setAffectedSopClassUid(CT);
    store.setAffectedSopInstanceUid('1.2.840.99');
    const ours = encodeResponse({
      commandField: CommandField.CStoreRsp,
      messageIdBeingRespondedTo: 65535,
      sopClassUid: CT,
      sopInstanceUid: '1.2.840.99',
      status: 0,
    });
    expect(read(ours)).toEqual(read(dcmjsCommand(store)));
    expect(read(ours).Status).toBe(0);
    // Group length: every byte after the 12 of its own element.
    expect(new Dataset(ours, IMPLICIT_LE).getElements().CommandGroupLength).toBe(ours.length - 12);

    const echo = new responses.CEchoResponse(0, '');
    echo.setMessageIdBeingRespondedTo(3);
    const oursEcho = encodeResponse({ commandField: CommandField.CEchoRsp, messageIdBeingRespondedTo: 3, sopClassUid: '1.2.840.10008.1.1', status: 0 });
    expect(read(oursEcho)).toEqual(read(dcmjsCommand(echo)));
  });

  it('is sent as one P-DATA-TF of one last command fragment', () => {
    const command = encodeResponse({ commandField: CommandField.CEchoRsp, messageIdBeingRespondedTo: 1, sopClassUid: '1.2.840.10008.1.1', status: 0 });
    const got: Array<[number, number, Buffer, boolean]> = [];
    new PduReader({ pdu: () => expect.unreachable(), pdv: (id, control, piece, end) => got.push([id, control, Buffer.from(piece), end]) }, 16384).push(
      commandPdu(7, command),
    );
    expect(got).toEqual([[7, 0x03, command, true]]);
  });
});
