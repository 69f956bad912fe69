// The DIMSE Storage SCP against dcmtk's real echoscu and storescu, as a modality or PACS pushes:
// the SCP runs in this process on a free port, with an ingest that streams each instance to a
// temp file and records when its chunks arrive. What a sender sees (exit codes, the statuses
// storescu prints) and what reaches the ingest (a Part 10 stream whose data set is byte for
// byte what was sent, arriving as it is sent, never held whole) are what is checked.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import dimse from 'dcmjs-dimse';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance } from '../../../bench/generate.ts';
import { startDimseServer, type DimseIngest, type DimseServer } from '../../../src/shell/dimse/scp.ts';
import { IMPLEMENTATION_CLASS_UID } from '../../../src/shell/dimse/file-meta.ts';
import { requireFreeSpace } from '../../support/disk.ts';
import { DCMTK_ENV, ECHOSCU, STORESCU, bytesRead, dataSetOffset, runTool, startTool, storescu as storescuTo, type ToolResult } from '../../support/dcmtk.ts';
import { captureLogs, type CapturedLogs } from '../../support/logs.ts';
import { PYDICOM_DATA, requirePydicom } from '../../support/pydicom.ts';

function storescu(port: number, files: string[], extra: string[] = []): Promise<ToolResult> {
  return storescuTo(port, files, extra, AE);
}

const MiB = 2 ** 20;
const haveDcmtk = existsSync(STORESCU) && existsSync(ECHOSCU);
const AE = 'VAULTTEST';
const TEST_FILES = join(PYDICOM_DATA, 'test_files');

/** ~300 MiB: 600 frames of 512x512x16 bit. */
const LARGE_FRAMES = 600;
/** ~24 MiB. */
const MEDIUM_FRAMES = 48;
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

// One pydicom file per transfer syntax family, with the storescu option that proposes the file's
// own syntax (storescu otherwise proposes uncompressed ones and would have to decompress).
// `unchanged`: storescu sends the file's data set exactly as stored. The others it re-encodes on
// the way (drops DataSetTrailingPadding, deflates anew, pads odd JPEG items), so for all of
// them dcmtk's own storescp in bit-preserving mode is the referee of what was on the wire.
const SYNTAX_CASES = [
  { file: 'SC_rgb_small_odd.dcm', option: '-xe', ts: '1.2.840.10008.1.2.1', unchanged: true },
  { file: 'MR_small_implicit.dcm', option: '-xi', ts: '1.2.840.10008.1.2', unchanged: true },
  { file: 'MR_small_bigendian.dcm', option: '-xb', ts: '1.2.840.10008.1.2.2', unchanged: true },
  { file: 'SC_rgb_jpeg_dcmtk.dcm', option: '-xy', ts: '1.2.840.10008.1.2.4.50', unchanged: true },
  { file: 'SC_rgb_jpeg_gdcm.dcm', option: '-xs', ts: '1.2.840.10008.1.2.4.70', unchanged: true },
  { file: 'GDCMJ2K_TextGBR.dcm', option: '-xv', ts: '1.2.840.10008.1.2.4.90', unchanged: true },
  { file: 'JPEG2000.dcm', option: '-xw', ts: '1.2.840.10008.1.2.4.91', unchanged: false },
  { file: 'SC_rgb_rle.dcm', option: '-xr', ts: '1.2.840.10008.1.2.5', unchanged: true },
  { file: 'CT_small.dcm', option: '-xe', ts: '1.2.840.10008.1.2.1', unchanged: false },
  { file: 'image_dfl.dcm', option: '-xd', ts: '1.2.840.10008.1.2.1.99', unchanged: false },
] as const;

// ---------------------------------------------------------------------------------------------
// The test ingest: each instance to a file, with its chunks counted and timed.

interface Received {
  path: string;
  callingAeTitle: string;
  chunks: number;
  bytes: number;
  firstChunkAt: number;
  lastChunkAt: number;
  outcome: 'pending' | 'stored' | 'failed' | 'aborted' | 'error';
  signalAborted: boolean;
  settled: Promise<void>;
}

type Mode =
  | {
      kind: 'store';
      /** Stop reading for `ms` once `after` bytes are in, calling `atStart` and `atEnd` around the pause. */
      pause?: { after: number; ms: number; atStart?: () => void; atEnd?: () => void };
      onBytes?: { at: number; reached: () => void };
    }
  | { kind: 'fail-at-once' | 'fail-after-header'; dimseStatus: number; comment: string };

class FileIngest implements DimseIngest {
  readonly received: Received[] = [];
  mode: Mode = { kind: 'store' };
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
  }

  store(part10: AsyncIterable<Uint8Array>, context: { callingAeTitle: string; signal: AbortSignal }): ReturnType<DimseIngest['store']> {
    let settle!: () => void;
    const rec: Received = {
      path: join(this.#dir, `received-${this.received.length}.dcm`),
      callingAeTitle: context.callingAeTitle,
      chunks: 0,
      bytes: 0,
      firstChunkAt: 0,
      lastChunkAt: 0,
      outcome: 'pending',
      signalAborted: false,
      settled: new Promise((resolve) => (settle = resolve)),
    };
    this.received.push(rec);
    const result = this.#store(rec, this.mode, part10, context.signal);
    void result.then(
      () => settle(),
      () => settle(),
    );
    return result;
  }

  async #store(rec: Received, mode: Mode, part10: AsyncIterable<Uint8Array>, signal: AbortSignal): ReturnType<DimseIngest['store']> {
    if (mode.kind === 'fail-at-once') {
      rec.outcome = 'failed';
      return { status: 'failed', dimseStatus: mode.dimseStatus, comment: mode.comment };
    }
    const out = createWriteStream(rec.path, { highWaterMark: MiB });
    // Writes still queued when an abort destroys the file stream fail; the abort is what counts.
    out.on('error', () => {});
    const failing = mode.kind === 'fail-after-header' ? mode : undefined;
    const storing = mode.kind === 'store' ? mode : undefined;
    let paused = false;
    try {
      for await (const chunk of part10) {
        const now = performance.now();
        if (rec.chunks === 0) rec.firstChunkAt = now;
        rec.lastChunkAt = now;
        rec.chunks++;
        rec.bytes += chunk.length;
        if (!out.write(chunk)) await once(out, 'drain', { signal });
        if (failing) {
          rec.outcome = 'failed';
          return { status: 'failed', dimseStatus: failing.dimseStatus, comment: failing.comment };
        }
        if (storing?.onBytes && rec.bytes >= storing.onBytes.at) storing.onBytes.reached();
        const pause = storing?.pause;
        if (pause && !paused && rec.bytes >= pause.after) {
          paused = true;
          pause.atStart?.();
          await sleep(pause.ms);
          pause.atEnd?.();
        }
      }
      out.end();
      await once(out, 'finish');
      rec.outcome = 'stored';
      return { status: 'stored' };
    } catch (err) {
      rec.signalAborted = signal.aborted;
      rec.outcome = signal.aborted ? 'aborted' : 'error';
      throw err;
    } finally {
      if (!out.writableFinished) out.destroy();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

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

function dataSetOf(path: string): Buffer {
  const buf = readFileSync(path);
  return buf.subarray(dataSetOffset(buf));
}

/** pydicom's reading of files, as an independent referee: [SOPInstanceUID, TransferSyntaxUID, Implementation Class UID]. */
function pydicomReadSync(paths: string[]): Array<[string, string, string]> {
  const script = `
import pydicom, json, sys
out = []
for p in sys.argv[1:]:
    ds = pydicom.dcmread(p)
    ds.PixelData if 'PixelData' in ds else None
    out.append([str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID), str(ds.file_meta.get('ImplementationClassUID', ''))])
print(json.dumps(out))
`;
  const r = spawnSync('/usr/bin/python3', ['-c', script, ...paths], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pydicom could not read the files: ${r.stderr}`);
  return JSON.parse(r.stdout) as Array<[string, string, string]>;
}

// A full GC on demand, to measure what is held rather than what awaits collection.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function memoryInUse(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

async function writeInstance(inst: GeneratedInstance, path: string): Promise<void> {
  await pipeline(Readable.from(inst.open()), createWriteStream(path));
}

// A valid Part 10 file with big Pixel Data, written by pydicom (header) and streamed (pixels, random).
// Not bench/generate.ts's instances: those hold undefined-length sequences, which storescu
// re-encodes with explicit lengths on the way, so what arrives could not equal the file.
const BIG_FILE_SCRIPT = `
import io, os, struct, sys
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
path, frames, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
SC = '1.2.840.10008.5.1.4.1.1.7.3'  # Multi-frame Grayscale Word Secondary Capture
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = SC
meta.MediaStorageSOPInstanceUID = generate_uid()
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset()
ds.file_meta = meta
ds.is_little_endian = True
ds.is_implicit_VR = False
ds.SOPClassUID = SC
ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = generate_uid()
ds.SeriesInstanceUID = generate_uid()
ds.PatientName = 'Large^Instance'
ds.PatientID = 'DIMSE-LARGE'
ds.Modality = 'OT'
ds.ConversionType = 'WSD'
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = 'MONOCHROME2'
ds.NumberOfFrames = frames
ds.Rows = rows
ds.Columns = cols
ds.BitsAllocated = 16
ds.BitsStored = 16
ds.HighBit = 15
ds.PixelRepresentation = 0
head = io.BytesIO()
pydicom.dcmwrite(head, ds, write_like_original=False)
length = frames * rows * cols * 2
with open(path, 'wb') as f:
    f.write(head.getvalue())
    f.write(struct.pack('<HH2sHI', 0x7FE0, 0x0010, b'OW', 0, length))
    left = length
    while left:
        n = min(left, 4 << 20)
        f.write(os.urandom(n))
        left -= n
`;

function writeBigFile(path: string, frames: number): void {
  const r = spawnSync('/usr/bin/python3', ['-c', BIG_FILE_SCRIPT, path, String(frames), '512', '512'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`could not write ${path}: ${r.stderr}`);
}

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

/** A port nothing listens on right now, for dcmtk's storescp (which cannot be told to pick one). */
async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

// ---------------------------------------------------------------------------------------------

// dcmtk and pydicom come from test/services/setup.sh; without them this suite fails, saying so.
requirePydicom();
if (!haveDcmtk) throw new Error(`dcmtk's ${STORESCU} and ${ECHOSCU} are missing: run test/services/setup.sh as root`);

describe('DIMSE Storage SCP with dcmtk storescu/echoscu', () => {
  let dir: string;
  let ingest: FileIngest;
  let logs: CapturedLogs;
  let server: DimseServer;
  let large: string;
  let largeSize: number;
  let medium: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dimse-scp-'));
    // The large instance, its received copy and a few small ones.
    await requireFreeSpace(dir, 800 * MiB, 'the DIMSE large-instance test');
    large = join(dir, 'large.dcm');
    writeBigFile(large, LARGE_FRAMES);
    largeSize = (await stat(large)).size;
    medium = join(dir, 'medium.dcm');
    writeBigFile(medium, MEDIUM_FRAMES);

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

  it('answers C-ECHO, and refuses an association calling another AE title', async () => {
    const ok = await runTool(ECHOSCU, ['-v', '-aec', AE, '127.0.0.1', String(server.port)]);
    expect(ok.code, ok.output).toBe(0);
    expect(ok.output).toMatch(/Received Echo Response \(Success\)/);

    const wrong = await runTool(ECHOSCU, ['-v', '-aec', 'SOMEONEELSE', '127.0.0.1', String(server.port)]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.output).toMatch(/Called AE Title Not Recognized/i);
  });

  it('refuses a calling AE title not in the allowed list at association, storing nothing', async () => {
    const guarded = await startDimseServer({ port: 0, aeTitle: AE, allowedCallingAeTitles: ['MODALITY1'], logger: logs.logger, ingest });
    try {
      const before = ingest.received.length;
      const allowed = await runTool(ECHOSCU, ['-v', '-aet', 'MODALITY1', '-aec', AE, '127.0.0.1', String(guarded.port)]);
      expect(allowed.code, allowed.output).toBe(0);

      const echo = await runTool(ECHOSCU, ['-v', '-aet', 'INTRUDER', '-aec', AE, '127.0.0.1', String(guarded.port)]);
      expect(echo.code).not.toBe(0);
      expect(echo.output).toMatch(/Association Rejected/);
      expect(echo.output).toMatch(/Calling AE Title Not Recognized/i);

      const store = await runTool(STORESCU, ['-v', '-aet', 'INTRUDER', '-aec', AE, '127.0.0.1', String(guarded.port), join(TEST_FILES, 'CT_small.dcm')]);
      expect(store.code).not.toBe(0);
      expect(store.output).toMatch(/Calling AE Title Not Recognized/i);
      expect(ingest.received.length).toBe(before);
    } finally {
      await guarded.close();
    }
  });

  it('stores each transfer syntax as sent: a Part 10 stream with our File Meta and the data set byte for byte', async () => {
    // dcmtk's own SCP, bit-preserving, receives the same sends: it shows what was on the wire.
    const refDir = join(dir, 'storescp');
    await mkdir(refDir);
    const refPort = await freePort();
    const referee = spawn('/usr/bin/storescp', ['+B', '+xa', '-od', refDir, '-fe', '.dcm', '-uf', String(refPort)], { stdio: 'ignore', env: DCMTK_ENV });
    try {
      await sleep(300);
      const got: Array<{ c: (typeof SYNTAX_CASES)[number]; rec: Received; original: string; ref: string }> = [];
      for (const c of SYNTAX_CASES) {
        const file = join(TEST_FILES, c.file);
        const before = ingest.received.length;
        const sent = await storescu(server.port, [file], [c.option]);
        expect(sent.code, `${c.file}\n${sent.output}`).toBe(0);
        expect(sent.output).toMatch(/Received Store Response \(Success\)/);
        expect(sent.output, `${c.file} was sent without conversion`).not.toMatch(/Converting transfer syntax: (.+) -> (?!\1)/);
        expect(ingest.received.length).toBe(before + 1);
        const rec = ingest.received[before]!;
        expect(rec.outcome).toBe('stored');

        const refSent = await runTool(STORESCU, ['-v', c.option, '127.0.0.1', String(refPort), file]);
        expect(refSent.code, refSent.output).toBe(0);
        // storescp names files by SOP Instance UID, and two cases share one: set each aside.
        const [written] = readdirSync(refDir);
        expect(written, `storescp's copy of ${c.file}`).toBeDefined();
        const ref = join(dir, `referee-${got.length}.dcm`);
        await rename(join(refDir, written!), ref);
        got.push({ c, rec, original: file, ref });
      }

      const parsed = pydicomReadSync(got.map((g) => g.rec.path));
      const originals = pydicomReadSync(got.map((g) => g.original));
      for (const [i, g] of got.entries()) {
        const ours = dataSetOf(g.rec.path);
        // Meta as built by the SCP, read by pydicom: same instance, the accepted syntax, our implementation.
        expect(parsed[i]![0], g.c.file).toBe(originals[i]![0]);
        expect(parsed[i]![1], g.c.file).toBe(g.c.ts);
        expect(parsed[i]![2]).toBe(IMPLEMENTATION_CLASS_UID);
        // What dcmtk's bit-preserving SCP received for the same send.
        expect(ours.equals(dataSetOf(g.ref)), `${g.c.file}: data set as on the wire`).toBe(true);
        if (g.c.unchanged) expect(ours.equals(dataSetOf(g.original)), `${g.c.file}: data set as in the original file`).toBe(true);
        expect(g.rec.callingAeTitle).toBe('STORESCU');
      }
    } finally {
      referee.kill('SIGTERM');
      await once(referee, 'close');
    }
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

  it("maps the ingest's failure to the C-STORE status storescu reports, with its comment", async () => {
    ingest.mode = { kind: 'fail-after-header', dimseStatus: 0xa700, comment: 'out of resources (test)' };
    const refused = await runTool(STORESCU, ['-d', '-aec', AE, '127.0.0.1', String(server.port), join(TEST_FILES, 'CT_small.dcm')]);
    expect(refused.code).not.toBe(0);
    expect(refused.output).toMatch(/DIMSE Status\s*: 0xa700/);
    expect(refused.output).toContain('out of resources (test)');

    // A failure before reading anything: the rest of a 24 MiB data set is drained, then answered.
    ingest.mode = { kind: 'fail-at-once', dimseStatus: 0xc000, comment: 'cannot understand (test)' };
    const failed = await storescu(server.port, [medium]);
    expect(failed.code).not.toBe(0);
    expect(failed.output).toMatch(/Received Store Response \(Error: CannotUnderstand\)/);

    ingest.mode = { kind: 'fail-after-header', dimseStatus: 0xa900, comment: 'data set does not match SOP class' };
    const mismatch = await storescu(server.port, [join(TEST_FILES, 'MR_small_bigendian.dcm')], ['-xb']);
    expect(mismatch.code).not.toBe(0);
    expect(mismatch.output).toMatch(/Received Store Response \(Error: DataSetDoesNotMatchSOPClass\)/);
  });

  it('stores many small instances over one association (and logs no patient data)', async () => {
    const smallDir = join(dir, 'small');
    await mkdir(smallDir);
    const study = planStudy({ kind: 'single', instances: 300, rows: 256, columns: 256, seed: 13 });
    for (const [i, inst] of study.instances.entries()) await writeInstance(inst, join(smallDir, `${i}.dcm`));
    const before = ingest.received.length;
    const t0 = performance.now();
    const sent = await runTool(STORESCU, ['-aec', AE, '+sd', '127.0.0.1', String(server.port), smallDir]);
    const seconds = (performance.now() - t0) / 1000;
    expect(sent.code, sent.output).toBe(0);
    const recs = ingest.received.slice(before);
    expect(recs).toHaveLength(300);
    expect(recs.every((r) => r.outcome === 'stored')).toBe(true);
    console.log(
      `DIMSE small instances: 300 x ${(study.instances[0]!.size / 1024).toFixed(0)} KiB in ${seconds.toFixed(2)} s = ${(300 / seconds).toFixed(0)} inst/s`,
    );

    // Neither patient identity nor instance UIDs reach the log.
    const logged = JSON.stringify(logs.lines);
    expect(logged).not.toContain(study.patientId);
    expect(logged).not.toContain(study.instances[0]!.sopInstanceUID);
    expect(logged).not.toContain(study.studyInstanceUID);
  });
});
