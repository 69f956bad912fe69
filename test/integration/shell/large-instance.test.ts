// A multi-frame instance of just over 4 GiB (2^32 bytes) through a real node process, as a PACS
// and a viewer use it: pushed in one streamed STOW request, retrieved byte-exact by WADO, and
// frames read by offset, including ones past 2^32, reading only the chunks that hold them. The
// node's peak RSS over all of it stays under 256 MiB. The bytes come from the generator on the
// fly: nothing of this size is ever held in this process's memory either.
//
// The scanner test below follows the same bytes in-process, where memory and offsets can be
// checked without the node.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stow, wado, wadoFrames } from '../../../bench/client.ts';
import { planStudy } from '../../../bench/generate.ts';
import type { ServedNode } from '../../../bench/node-process.ts';
import { readProcMemory, startRssSampler, type RssSampler } from '../../../bench/rss.ts';
import { DicomScanner } from '../../../src/dicom/scanner.ts';
import { requireFreeSpace } from '../../support/disk.ts';
import { serve } from '../../support/process.ts';
import { ioDuring } from '../../support/proc-io.ts';

const MiB = 2 ** 20;
const TWO_POW_32 = 2 ** 32;
/** The node's peak RSS allowed over the whole test (issue 2: "under 256 MiB at 4 GiB"). */
const MAX_NODE_RSS = 256 * MiB;
/**
 * Bytes the node may read for one frame request: the frame's one or two 1 MiB chunks, the
 * instance node (~150 KiB of chunk links) and the catalog row. A whole-instance read is 4 GiB.
 */
const MAX_FRAME_READ = 16 * MiB;

// 8,191 frames of 512x512x16 bit: Pixel Data just under the 32-bit length limit, and the ~1.3 MB
// of per-frame functional groups before it push the Part 10 bytes past 2^32. Frame 8,190 then
// straddles byte 2^32 (and the chunk boundary there); frame 8,191 lies wholly beyond it.
const study = planStudy({ kind: 'multiframe', instances: 1, frames: 8191, rows: 512, columns: 512, seed: 3 });
const inst = study.instances[0]!;
const frameStart = (n: number): number => inst.pixelDataOffset + (n - 1) * inst.frameBytes;
const STRADDLING = Math.floor((TWO_POW_32 - inst.pixelDataOffset) / inst.frameBytes) + 1;
const BEYOND = STRADDLING + 1;

// Generous for this 2-core machine shared with others: ingest ~200 MB/s (22 s), WADO with the
// client's hashing ~300 MB/s (15 s), the expected hash ~3 s.
const STEP_TIMEOUT_MS = 150_000;

describe('a 4 GiB multi-frame instance through a real node', () => {
  let dataDir: string | undefined;
  let node: (ServedNode & { token: string }) | undefined;
  const token = (): string => node!.token;
  let rss: RssSampler | undefined;
  const figures: Record<string, number | string | null> = {};

  beforeAll(async () => {
    await requireFreeSpace(tmpdir(), inst.size, 'the 4 GiB instance test');
    dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-4gib-'));
    node = await serve(dataDir);
    rss = startRssSampler(node.pid);
  });

  afterAll(async () => {
    if (rss) {
      try {
        rss.stop();
      } catch {
        // stopped by the last test
      }
    }
    await node?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    console.info('4 GiB instance figures:', JSON.stringify(figures));
  });

  it('has the shape the test needs: more than 2^32 bytes, frames past 2^32', () => {
    expect(inst.size).toBeGreaterThan(TWO_POW_32);
    expect(BEYOND).toBe(inst.numberOfFrames);
    expect(frameStart(STRADDLING)).toBeLessThan(TWO_POW_32);
    expect(frameStart(STRADDLING) + inst.frameBytes).toBeGreaterThan(TWO_POW_32);
    expect(frameStart(BEYOND)).toBeGreaterThan(TWO_POW_32);
  });

  it(
    'is stored by one STOW request streamed from the generator',
    async () => {
      const r = await stow({ baseUrl: node!.url, study, perRequest: 1, concurrency: 1 });
      expect(r.failures).toEqual([]);
      expect(r.requests).toBe(1);
      expect(r.statusCounts).toEqual({ '200': 1 });
      expect(r.stored).toBe(1);
      expect(r.bytes).toBe(inst.size);
      figures.ingestSeconds = round(r.seconds);
      figures.ingestMBps = round(inst.size / r.seconds / 1e6);
      figures.peakRssAfterIngestMiB = round(readProcMemory(node!.pid).hwmBytes / MiB);
    },
    STEP_TIMEOUT_MS,
  );

  it(
    'comes back byte for byte with transfer-syntax=*, and the read covers the whole instance',
    async () => {
      // Hashed from the generator before the request, so it does not compete with the node.
      const expected = await inst.sha256();
      const { result: r, io } = await ioDuring(node!.pid, () =>
        wado({ baseUrl: node!.url, studyInstanceUID: study.studyInstanceUID, expect: study, authorization: token() }),
      );
      expect(r.mismatches).toEqual([]);
      expect(r.ok).toBe(true);
      expect(r.parts).toBe(1);
      expect(r.partBytes).toBe(inst.size);
      // Sanity check of the I/O measure the frame test relies on: a whole read shows all 4 GiB.
      expect(io.rchar).toBeGreaterThanOrEqual(inst.size);
      figures.sha256 = expected;
      figures.wadoSeconds = round(r.seconds);
      figures.wadoMBps = round(r.partBytes / r.seconds / 1e6);
      figures.wadoTtfbMs = round(r.ttfbMs);
      figures.wadoReadMiB = round(io.rchar / MiB);
    },
    STEP_TIMEOUT_MS,
  );

  for (const [label, n] of [
    ['frame 500', 500],
    ['the frame that straddles byte 2^32', STRADDLING],
    ['the last frame, wholly past byte 2^32', BEYOND],
  ] as const) {
    it(
      `serves ${label} (frame ${n}) exactly, reading only the chunks that hold it`,
      async () => {
        const { result: r, io } = await ioDuring(node!.pid, () =>
          wadoFrames(node!.url, study.studyInstanceUID, inst.seriesInstanceUID, inst.sopInstanceUID, [n], { expect: inst, authorization: token() }),
        );
        expect(r.mismatches).toEqual([]);
        expect(r.ok).toBe(true);
        expect(r.parts).toBe(1);
        expect(io.rchar).toBeLessThan(MAX_FRAME_READ);
        figures[`frame${n}ReadKiB`] = round(io.rchar / 1024);
        figures[`frame${n}Ms`] = round(r.ms);
      },
      STEP_TIMEOUT_MS,
    );
  }

  it('kept the node under 256 MiB of RSS throughout', () => {
    const report = rss!.stop();
    figures.peakRssMiB = report.peakRssMiB;
    figures.hwmMiB = report.hwmMiB;
    figures.rssSamples = report.samples;
    figures.nodeCpuSeconds = report.cpuSeconds;
    // VmHWM (the kernel's exact peak since the sampler's reset) when the reset was permitted;
    // the polled peak always.
    expect(report.peakRssMiB * MiB).toBeLessThan(MAX_NODE_RSS);
    if (report.hwmMiB !== null) expect(report.hwmMiB * MiB).toBeLessThan(MAX_NODE_RSS);
  });
});

describe('a 4 GiB instance in the scanner alone', () => {
  it(
    'is scanned as a stream with exact frame offsets past 2^32 and bounded memory',
    async () => {
      const scanner = new DicomScanner();
      const rssBefore = process.memoryUsage().rss;
      let peak = rssBefore;
      let n = 0;
      for await (const chunk of inst.open()) {
        scanner.push(chunk);
        if (++n % 256 === 0) peak = Math.max(peak, process.memoryUsage().rss);
      }
      const scanned = scanner.end();
      expect(scanned.size).toBe(inst.size);
      expect(scanned.layout.frames).toHaveLength(inst.numberOfFrames);
      const last = scanned.layout.frames[inst.numberOfFrames - 1]![0]!;
      expect(last.length).toBe(inst.frameBytes);
      expect(last.offset).toBe(frameStart(BEYOND));
      expect(last.offset).toBeGreaterThan(TWO_POW_32);
      expect(last.offset + last.length).toBe(inst.size);
      // Bounded: a small fraction of the 4 GiB passed through. The generator's chunks are garbage
      // V8 collects at its own pace in this process, so the margin is wider than the node's 256 MiB.
      expect(peak - rssBefore).toBeLessThan(384 * MiB);
    },
    STEP_TIMEOUT_MS,
  );
});

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
