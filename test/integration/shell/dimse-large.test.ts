// The DIMSE Storage SCP against dcmtk's storescu with a ~300 MiB instance, as a modality pushes
// one: it arrives as it is sent, the sender is held back while the ingest does not read, memory
// stays flat, and an association killed or a server closed mid-instance aborts the store. The
// SCP runs in this process on a free port, with the test ingest of test/support/dimse.ts. Other
// DIMSE suites: dimse-storage.test.ts, dimse-protocol.test.ts.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startDimseServer, type DimseServer } from '../../../src/shell/dimse/scp.ts';
import { DCMTK_ENV, ECHOSCU, STORESCU, bytesRead, dataSetOffset, runTool, startTool, type ToolResult } from '../../support/dcmtk.ts';
import { AE, FileIngest, MiB, requireDcmtkAndPydicom, storescu, TEST_FILES, writeBigFile } from '../../support/dimse.ts';
import { requireFreeSpace } from '../../support/disk.ts';
import { captureLogs, type CapturedLogs } from '../../support/logs.ts';

/** ~300 MiB: 600 frames of 512x512x16 bit. */
const LARGE_FRAMES = 600;
/**
 * Allowed growth of this process's heap + external memory (Buffers) while the ~300 MiB instance
 * passes: at its peak, garbage included, and what is still held after a full GC in the middle of
 * the ingest's pause, when everything not yet read would have piled up without backpressure.
 */
const MAX_PEAK_GROWTH = 150 * MiB;
const MAX_HELD_GROWTH = 32 * MiB;
/** Where the test ingest stops reading for a while, to prove the sender is held back meanwhile. */
const PAUSE_AFTER = 64 * MiB;
const PAUSE_MS = 1500;

async function headOf(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** sha256 of a Part 10 file's data set, streamed. */
async function dataSetHash(path: string): Promise<{ hash: string; bytes: number }> {
  const start = dataSetOffset(await headOf(path));
  const h = createHash('sha256');
  let bytes = 0;
  for await (const c of createReadStream(path, { start, highWaterMark: 4 * MiB }) as AsyncIterable<Buffer>) {
    h.update(c);
    bytes += c.length;
  }
  return { hash: h.digest('hex'), bytes };
}

// A full GC on demand, to measure what is held rather than what awaits collection.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function memoryInUse(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}
// ---------------------------------------------------------------------------------------------

requireDcmtkAndPydicom();

describe('DIMSE Storage SCP with dcmtk storescu/echoscu', () => {
  let dir: string;
  let ingest: FileIngest;
  let logs: CapturedLogs;
  let server: DimseServer;
  let large: string;
  let largeSize: number;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dimse-scp-'));
    // The large instance, its received copy and a few small ones.
    await requireFreeSpace(dir, 800 * MiB, 'the DIMSE large-instance test');
    large = join(dir, 'large.dcm');
    writeBigFile(large, LARGE_FRAMES);
    largeSize = (await stat(large)).size;

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

  it('streams a ~300 MiB instance: many chunks as it arrives, the sender held back, memory flat', async () => {
    const before = ingest.received.length;
    let storescuPid = 0;
    const sender: { atPauseStart?: number; atPauseEnd?: number } = {};
    let echoDuringPause: Promise<ToolResult> | undefined;
    ingest.mode = {
      kind: 'store',
      pause: {
        after: PAUSE_AFTER,
        ms: PAUSE_MS,
        atStart: () => {
          sender.atPauseStart = bytesRead(storescuPid);
          // Another association is served while this one is held back.
          echoDuringPause = runTool(ECHOSCU, ['-aec', AE, '127.0.0.1', String(server.port)]);
        },
        atEnd: () => {
          sender.atPauseEnd = bytesRead(storescuPid);
          gc();
          heldDuringPause = memoryInUse();
        },
      },
    };
    gc();
    const base = memoryInUse();
    let heldDuringPause = 0;
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, memoryInUse())), 10);
    const t0 = performance.now();
    const { child, result } = startTool(STORESCU, ['-v', '-aec', AE, '127.0.0.1', String(server.port), large]);
    storescuPid = child.pid!;
    const sent = await result;
    const seconds = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    peak = Math.max(peak, memoryInUse());

    expect(sent.code, sent.output).toBe(0);
    expect(sent.output).toMatch(/Received Store Response \(Success\)/);
    const rec = ingest.received[before]!;
    expect(rec.outcome).toBe('stored');
    // Chunks came a PDU at a time, from the first PDU on (not all at the end).
    expect(rec.chunks).toBeGreaterThan(1000);
    expect(rec.lastChunkAt - rec.firstChunkAt).toBeGreaterThan(PAUSE_MS);
    // While the ingest stopped reading, storescu (which reads the file as it sends) was held
    // back: it had read little more than the ingest had when the pause began, and read almost
    // nothing more during it. Without backpressure it would have sent the remaining ~236 MiB.
    expect(sender.atPauseStart! - PAUSE_AFTER).toBeLessThan(32 * MiB);
    expect(sender.atPauseEnd! - sender.atPauseStart!).toBeLessThan(16 * MiB);
    // Nor did the remaining bytes pile up here: memory never grew by anything near the instance.
    expect(heldDuringPause - base, `held during the pause ${((heldDuringPause - base) / MiB).toFixed(1)} MiB`).toBeLessThan(MAX_HELD_GROWTH);
    expect(peak - base, `peak growth ${((peak - base) / MiB).toFixed(1)} MiB`).toBeLessThan(MAX_PEAK_GROWTH);
    const echo = await echoDuringPause!;
    expect(echo.code, echo.output).toBe(0);

    const [theirs, ours] = await Promise.all([dataSetHash(large), dataSetHash(rec.path)]);
    expect(ours.bytes).toBe(theirs.bytes);
    expect(ours.hash).toBe(theirs.hash);
    console.log(
      `DIMSE large instance: ${(largeSize / MiB).toFixed(0)} MiB in ${seconds.toFixed(1)} s incl. a ${PAUSE_MS} ms ingest pause ` +
        `(${(largeSize / MiB / (seconds - PAUSE_MS / 1000)).toFixed(0)} MiB/s without it), ${rec.chunks} chunks, ` +
        `memory growth ${((peak - base) / MiB).toFixed(1)} MiB at peak, ${((heldDuringPause - base) / MiB).toFixed(1)} MiB held mid-pause, storescu read ` +
        `${((sender.atPauseEnd! - sender.atPauseStart!) / MiB).toFixed(1)} MiB during the pause`,
    );
    await rm(rec.path);
  });

  it('an association killed mid-instance aborts the store; nothing counts as stored; the SCP serves on', async () => {
    const before = ingest.received.length;
    let reached!: () => void;
    const arrived = new Promise<void>((resolve) => (reached = resolve));
    ingest.mode = { kind: 'store', onBytes: { at: 32 * MiB, reached } };
    const child = spawn(STORESCU, ['-aec', AE, '127.0.0.1', String(server.port), large], { stdio: 'ignore', env: DCMTK_ENV });
    const exited = once(child, 'close');
    await arrived;
    child.kill('SIGKILL');
    await exited;

    const rec = ingest.received[before]!;
    await rec.settled;
    expect(rec.signalAborted).toBe(true);
    expect(rec.outcome).toBe('aborted');
    expect(rec.bytes).toBeLessThan(largeSize);
    expect(logs.find('the association ended mid-instance', 40)).not.toHaveLength(0);

    // The SCP still takes new associations and stores.
    ingest.mode = { kind: 'store' };
    const echo = await runTool(ECHOSCU, ['-aec', AE, '127.0.0.1', String(server.port)]);
    expect(echo.code, echo.output).toBe(0);
    const sent = await storescu(server.port, [join(TEST_FILES, 'CT_small.dcm')]);
    expect(sent.code, sent.output).toBe(0);
    expect(ingest.received.at(-1)!.outcome).toBe('stored');
    expect(ingest.received.filter((r, i) => i >= before && r.outcome === 'stored')).toHaveLength(1);
  });

  it('close() aborts an instance in flight and waits for its ingest to settle', async () => {
    const other = await startDimseServer({ port: 0, aeTitle: AE, logger: logs.logger, ingest });
    const before = ingest.received.length;
    let reached!: () => void;
    const arrived = new Promise<void>((resolve) => (reached = resolve));
    ingest.mode = { kind: 'store', onBytes: { at: 16 * MiB, reached } };
    const { result } = startTool(STORESCU, ['-v', '-aec', AE, '127.0.0.1', String(other.port), large]);
    await arrived;
    await other.close();
    const rec = ingest.received[before]!;
    expect(rec.outcome).toBe('aborted');
    expect(rec.signalAborted).toBe(true);
    const sent = await result;
    expect(sent.code).not.toBe(0);
    expect(sent.output).not.toMatch(/Received Store Response \(Success\)/);
  });
});
