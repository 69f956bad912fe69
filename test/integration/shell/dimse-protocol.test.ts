// The DIMSE Storage SCP against peers that break the protocol: P-DATA-TF lengths that do not add
// up, a command sent before the C-STORE was answered, a connection left silent. The
// A-ASSOCIATE-RQ is the one dcmtk's own tools send, replayed; what follows is written by hand.
// The SCP runs in this process on a free port, with the test ingest of test/support/dimse.ts.
// Other DIMSE suites: dimse-storage.test.ts, dimse-large.test.ts.
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import dimse from 'dcmjs-dimse';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startDimseServer, type DimseServer } from '../../../src/shell/dimse/scp.ts';
import { ECHOSCU, STORESCU, runTool } from '../../support/dcmtk.ts';
import { AE, FileIngest, requireDcmtkAndPydicom, TEST_FILES } from '../../support/dimse.ts';
import { captureLogs, type CapturedLogs } from '../../support/logs.ts';

/** The A-ASSOCIATE-RQ a dcmtk tool sends (`args` of the listener's port), caught by a listener that answers nothing. */
async function capturedAssociateRq(tool: string, args: (port: number) => string[]): Promise<Buffer> {
  const { createServer } = await import('node:net');
  const listener = createServer();
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
  const caught = new Promise<Buffer>((resolve) =>
    listener.once('connection', (socket) => {
      let got = Buffer.alloc(0);
      socket.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (got.length >= 6 && got.length >= 6 + got.readUInt32BE(2)) {
          socket.destroy();
          resolve(got.subarray(0, 6 + got.readUInt32BE(2)));
        }
      });
    }),
  );
  const ran = runTool(tool, args((listener.address() as { port: number }).port));
  const rq = await caught;
  await ran;
  await new Promise<void>((r) => listener.close(() => r()));
  expect(rq[0]).toBe(0x01);
  return rq;
}

/** Associates with the SCP by replaying `rq`, sends `then`, and collects what the SCP sends until it closes. */
async function afterAssociation(port: number, rq: Buffer, then: Buffer): Promise<{ replies: Buffer; ms: number }> {
  const socket = connect(port, '127.0.0.1');
  let replies = Buffer.alloc(0);
  let sent = false;
  let t0 = 0;
  socket.on('data', (d: Buffer) => {
    replies = Buffer.concat([replies, d]);
    // Once the A-ASSOCIATE-AC is in, the offending PDU goes out.
    if (!sent && replies.length >= 6 && replies.length >= 6 + replies.readUInt32BE(2)) {
      sent = true;
      t0 = performance.now();
      socket.write(then);
    }
  });
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(rq);
  await once(socket, 'close');
  return { replies, ms: performance.now() - t0 };
}
// ---------------------------------------------------------------------------------------------

requireDcmtkAndPydicom();

describe('DIMSE Storage SCP with dcmtk storescu/echoscu', () => {
  let dir: string;
  let ingest: FileIngest;
  let logs: CapturedLogs;
  let server: DimseServer;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dimse-scp-'));
    ingest = new FileIngest(dir);
    logs = captureLogs('debug');
    server = await startDimseServer({ port: 0, aeTitle: AE, logger: logs.logger, ingest, idleTimeoutMs: 30_000 });
  });

  afterAll(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    ingest.mode = { kind: 'store' };
  });

  it('aborts an association whose P-DATA-TF lengths do not add up (A-ABORT), and serves on', async () => {
    const rq = await capturedAssociateRq(ECHOSCU, (port) => ['-aec', AE, '-ta', '5', '127.0.0.1', String(port)]);
    const before = ingest.received.length;
    const pDataTf = (pduLength: number, itemLength: number): Buffer => {
      const b = Buffer.alloc(12 + 16);
      b[0] = 0x04;
      b.writeUInt32BE(pduLength, 2);
      b.writeUInt32BE(itemLength, 6);
      b[10] = 1;
      b[11] = 0x03;
      return b;
    };
    for (const [what, bad] of [
      ['a PDV longer than its PDU', pDataTf(22, 1000)],
      ['a P-DATA-TF longer than the SCP took', pDataTf(1 << 30, 18)],
      ['an unknown PDU type', Buffer.from([0x42, 0, 0, 0, 0, 0])],
    ] as const) {
      const { replies, ms } = await afterAssociation(server.port, rq, bad);
      expect(replies[0], what).toBe(0x02); // A-ASSOCIATE-AC
      const abort = replies.subarray(6 + replies.readUInt32BE(2));
      // A-ABORT from the service provider (source 2), with the reason, then the connection closed.
      expect([...abort], what).toEqual([0x07, 0, 0, 0, 0, 4, 0, 0, 2, what.startsWith('an unknown') ? 1 : 6]);
      expect(ms, what).toBeLessThan(2000);
    }
    expect(logs.find('DIMSE protocol error', 40)).not.toHaveLength(0);
    expect(ingest.received.length).toBe(before);
    const echo = await runTool(ECHOSCU, ['-aec', AE, '127.0.0.1', String(server.port)]);
    expect(echo.code, echo.output).toBe(0);
  });

  it('aborts an association that sends a command before its C-STORE was answered (no asynchronous operations)', async () => {
    // storescu's A-ASSOCIATE-RQ for CT_small.dcm alone: presentation context 1 is CT Image Storage.
    const ct = join(TEST_FILES, 'CT_small.dcm');
    const rq = await capturedAssociateRq(STORESCU, (port) => ['-aec', AE, '-R', '-ta', '5', '127.0.0.1', String(port), ct]);
    const pdv = (control: number, value: Buffer): Buffer => {
      const b = Buffer.alloc(12);
      b[0] = 0x04;
      b.writeUInt32BE(6 + value.length, 2);
      b.writeUInt32BE(2 + value.length, 6);
      b[10] = 1;
      b[11] = control;
      return Buffer.concat([b, value]);
    };
    const store = new dimse.requests.CStoreRequest(
      new dimse.Dataset({ SOPClassUID: '1.2.840.10008.5.1.4.1.1.2', SOPInstanceUID: '1.2.3.4', _meta: {} }, '1.2.840.10008.1.2'),
    );
    store.setMessageId(1);
    const echo = new dimse.requests.CEchoRequest();
    echo.setMessageId(2);
    const command = (r: { getCommandDataset(): unknown }): Buffer =>
      (r.getCommandDataset() as { getDenaturalizedCommandDataset(): Buffer }).getDenaturalizedCommandDataset();

    const before = ingest.received.length;
    // The ingest holds its answer back for a while once the data set is in.
    ingest.mode = { kind: 'store', pause: { after: 0, ms: 1500 } };
    const socket = connect(server.port, '127.0.0.1');
    let replies = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => (replies = Buffer.concat([replies, d])));
    socket.on('error', () => {});
    await once(socket, 'connect');
    socket.write(rq);
    while (replies.length < 6 || replies.length < 6 + replies.readUInt32BE(2)) await sleep(10);
    expect(replies[0]).toBe(0x02);
    const acLength = replies.length;
    socket.write(Buffer.concat([pdv(0x03, command(store)), pdv(0x02, Buffer.alloc(64, 7))]));
    while (ingest.received.length === before || ingest.received[before]!.bytes === 0) await sleep(10);
    socket.write(pdv(0x03, command(echo)));
    await once(socket, 'close');
    // A-ABORT, unexpected PDU; no C-STORE or C-ECHO response before it.
    expect([...replies.subarray(acLength)]).toEqual([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 2]);
    const rec = ingest.received[before]!;
    await rec.settled;
    expect(rec.outcome).toBe('aborted');
    expect(logs.find('before the last C-STORE was answered', 40)).not.toHaveLength(0);
  });

  it('drops a connection that stays silent past the idle timeout', async () => {
    const quick = await startDimseServer({ port: 0, aeTitle: AE, idleTimeoutMs: 300, logger: logs.logger, ingest });
    try {
      const socket = connect(quick.port, '127.0.0.1');
      socket.resume();
      await once(socket, 'connect');
      const t0 = performance.now();
      await once(socket, 'close');
      const ms = performance.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(250);
      expect(ms).toBeLessThan(5000);
      expect(logs.find('idle too long', 40)).not.toHaveLength(0);
    } finally {
      await quick.close();
    }
  });
});
