// What the DIMSE Storage SCP suites (test/integration/shell/dimse-*.test.ts) share: the test
// ingest, which streams each instance to a temp file and records when its chunks arrive; the
// sender's tools and AE title; and large Part 10 files written by pydicom.
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DimseIngest } from '../../src/shell/dimse/scp.ts';
import { ECHOSCU, STORESCU, storescu as storescuTo, type ToolResult } from './dcmtk.ts';
import { PYDICOM_DATA, requirePydicom } from './pydicom.ts';

export const MiB = 2 ** 20;
export const AE = 'VAULTTEST';
export const TEST_FILES = join(PYDICOM_DATA, 'test_files');

export function storescu(port: number, files: string[], extra: string[] = []): Promise<ToolResult> {
  return storescuTo(port, files, extra, AE);
}

/** dcmtk and pydicom come from test/services/setup.sh; without them these suites fail, saying so. */
export function requireDcmtkAndPydicom(): void {
  requirePydicom();
  if (!(existsSync(STORESCU) && existsSync(ECHOSCU))) throw new Error(`dcmtk's ${STORESCU} and ${ECHOSCU} are missing: run test/services/setup.sh as root`);
}

// ---------------------------------------------------------------------------------------------
// The test ingest: each instance to a file, with its chunks counted and timed.

export interface Received {
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

export class FileIngest implements DimseIngest {
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

export function writeBigFile(path: string, frames: number): void {
  const r = spawnSync('/usr/bin/python3', ['-c', BIG_FILE_SCRIPT, path, String(frames), '512', '512'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`could not write ${path}: ${r.stderr}`);
}
