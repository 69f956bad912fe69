import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DecodePool } from '../../src/dicom/codecs/index.ts';
import { buildCodecStudy, codecFrameInfo, JPEG2000_LOSSLESS, JPEG_LS_LOSSLESS, phantomFrame, uploadStudy } from '../codec-study.ts';
import { decodeFigures, decodeTargets, medianDecodeRun, type DecodeResult, type DecodeRun, type DecodeSyntaxRun } from '../decode-scenario.ts';

const root = await mkdtemp(join(tmpdir(), 'dv-decode-'));
afterAll(() => rm(root, { recursive: true, force: true }));

describe("the decode scenario's instances", () => {
  it('are Part 10 files of encapsulated frames that decode to the phantom they were made from', async () => {
    const size = 64;
    const study = await buildCodecStudy({ dir: root, syntaxes: [JPEG2000_LOSSLESS, JPEG_LS_LOSSLESS], instances: 2, frames: 3, size, seed: 9 });
    expect(study.instances).toHaveLength(4);
    expect(new Set(study.instances.map((i) => i.sopInstanceUID)).size).toBe(4);
    // One series per syntax, one study.
    expect(new Set(study.instances.map((i) => i.seriesInstanceUID)).size).toBe(2);
    const pool = new DecodePool({ workers: 1 });
    try {
      for (const inst of study.instances) {
        const bytes = await readFile(inst.file);
        expect(bytes.length).toBe(inst.bytes);
        expect(bytes.toString('latin1', 128, 132)).toBe('DICM');
        expect(bytes.includes(Buffer.from(inst.transferSyntaxUID, 'latin1'))).toBe(true);
        expect(inst.frameBytes).toBe(size * size * 2);
        expect(inst.frameSha256).toHaveLength(3);
      }
      // Frames differ from one another, and the encoded ones decode to exactly the phantom.
      const first = study.instances[0]!;
      expect(new Set(first.frameSha256).size).toBe(3);
      for (const ts of [JPEG2000_LOSSLESS, JPEG_LS_LOSSLESS]) {
        for (const [n, encoded] of study.samples[ts]!.entries()) {
          const decoded = await pool.decode(ts, encoded, codecFrameInfo(size));
          const pixels = decoded.pixels;
          expect(createHash('sha256').update(pixels).digest('hex')).toBe(first.frameSha256[n]);
          expect(Buffer.from(pixels).equals(Buffer.from(phantomFrame(size, n)))).toBe(true);
        }
      }
    } finally {
      await pool.close();
    }
    // The STOW client reads them from their files, byte for byte.
    const up = uploadStudy(study, study.instances.slice(0, 2));
    expect(up.instances.map((i) => i.size)).toEqual(study.instances.slice(0, 2).map((i) => i.bytes));
    const chunks: Buffer[] = [];
    for await (const c of up.instances[1]!.open(100, 300)) chunks.push(c);
    expect(Buffer.concat(chunks).equals((await readFile(study.instances[1]!.file)).subarray(100, 300))).toBe(true);
    expect(await up.instances[0]!.sha256()).toBe(
      createHash('sha256')
        .update(await readFile(study.instances[0]!.file))
        .digest('hex'),
    );
  });
});

function syntaxRun(ts: string, wholeFps: number | null, o: Partial<DecodeSyntaxRun> = {}): DecodeSyntaxRun {
  return {
    transferSyntaxUID: ts,
    verified: true,
    whole:
      wholeFps === null
        ? { frames: 0, requests: 2, seconds: 1, bytes: 0, cpuSeconds: 1, ok: false }
        : { frames: 100, requests: 2, seconds: 100 / wholeFps, bytes: 100 * 524288, cpuSeconds: 1, ok: true },
    oneFrame: { frames: 20, requests: 20, seconds: 4, bytes: 20 * 524288, cpuSeconds: 1, ok: true, latency: { median: 50, p99: 90, n: 20, ok: true } },
    peakRssMiB: 300,
    ok: wholeFps !== null,
    failures: wholeFps === null ? ['HTTP 414'] : [],
    ...o,
  };
}
const run = (system: string, ...syntaxes: DecodeSyntaxRun[]): DecodeRun => ({ system, detail: '', syntaxes, errors: [] });

describe("the decode scenario's figures", () => {
  const result: DecodeResult = {
    label: 'decode: 2 × 50 frames of 512 × 512, 12 bits',
    size: 512,
    framesPerInstance: 50,
    instancesPerSyntax: 2,
    concurrency: 2,
    syntaxes: [
      { transferSyntaxUID: JPEG2000_LOSSLESS, name: 'JPEG 2000 lossless', encodedBytesPerFrame: 172_000, decoderFramesPerSecond: 20, decoderWorkers: 2 },
      { transferSyntaxUID: JPEG_LS_LOSSLESS, name: 'JPEG-LS lossless', encodedBytesPerFrame: 168_000, decoderFramesPerSecond: null, decoderWorkers: 2 },
    ],
    runs: [
      run('dicom-vault', syntaxRun(JPEG2000_LOSSLESS, 16), syntaxRun(JPEG_LS_LOSSLESS, 40)),
      run('Orthanc', syntaxRun(JPEG2000_LOSSLESS, 20), syntaxRun(JPEG_LS_LOSSLESS, 32)),
    ],
  };

  it('frames/s against Orthanc and against the decoders alone; latency and memory lower-is-better', () => {
    const f = decodeFigures(result, 0.2);
    const whole = f.find((x) => x.id === `decode-${JPEG2000_LOSSLESS}-whole`)!;
    expect(whole).toMatchObject({ unit: 'frames/s', ours: 16, peer: 20, ok: true, peerOk: true });
    expect(whole.ratio).toBeCloseTo(0.8);
    expect(whole.limit).toEqual({ name: "the node's decoders alone, 2 workers", value: 20 });
    expect(whole.scenario).toBe('decode: 2 × 50 frames of 512 × 512, 12 bits, JPEG 2000 lossless');
    // No decoder figure for JPEG-LS: no limit, the rest stays.
    expect(f.find((x) => x.id === `decode-${JPEG_LS_LOSSLESS}-whole`)!.limit).toBeUndefined();
    const median = f.find((x) => x.id === `decode-${JPEG_LS_LOSSLESS}-one-median`)!;
    expect(median).toMatchObject({ unit: 'ms', lowerIsBetter: true, ours: 50, peer: 50 });
    expect(f.filter((x) => x.scenario.endsWith('JPEG-LS lossless')).map((x) => x.unit)).toEqual(['frames/s', 'frames/s', 'ms', 'ms', 'MiB']);
  });

  it("the issue's target: whole-instance frames/s at least Orthanc's, per syntax", () => {
    expect(decodeTargets(result)).toEqual([
      {
        target: 'decoded frames/s ≥ 1× Orthanc',
        scenario: 'decode: 2 × 50 frames of 512 × 512, 12 bits, JPEG 2000 lossless',
        measured: '0.80× (16 vs 20 frames/s)',
        met: false,
      },
      {
        target: 'decoded frames/s ≥ 1× Orthanc',
        scenario: 'decode: 2 × 50 frames of 512 × 512, 12 bits, JPEG-LS lossless',
        measured: '1.25× (40 vs 32 frames/s)',
        met: true,
      },
    ]);
    const failed: DecodeResult = { ...result, runs: [run('dicom-vault', syntaxRun(JPEG2000_LOSSLESS, null)), result.runs[1]!] };
    expect(decodeTargets(failed)[0]).toMatchObject({ measured: 'not measured (ours failed)', met: null });
    expect(decodeTargets({ ...result, runs: [result.runs[0]!] })).toEqual([]);
    // A whole pass that failed is flagged in the figures rather than dropped.
    expect(decodeFigures(failed, null).find((x) => x.id === `decode-${JPEG2000_LOSSLESS}-whole`)).toMatchObject({ ours: null, ok: false, peer: 20 });
  });

  it('of repeated runs, each syntax from its median run, every rate listed, a failure never hidden', () => {
    const runs = [
      run('dicom-vault', syntaxRun(JPEG2000_LOSSLESS, 10), syntaxRun(JPEG_LS_LOSSLESS, 30)),
      run('dicom-vault', syntaxRun(JPEG2000_LOSSLESS, 30), syntaxRun(JPEG_LS_LOSSLESS, null)),
      run('dicom-vault', syntaxRun(JPEG2000_LOSSLESS, 20), syntaxRun(JPEG_LS_LOSSLESS, 50)),
    ];
    const m = medianDecodeRun(runs);
    const j2k = m.syntaxes.find((s) => s.transferSyntaxUID === JPEG2000_LOSSLESS)!;
    expect(j2k.whole!.frames / j2k.whole!.seconds).toBeCloseTo(20);
    expect(j2k.repeats!.map((v) => (v === null ? null : Math.round(v)))).toEqual([10, 30, 20]);
    const jls = m.syntaxes.find((s) => s.transferSyntaxUID === JPEG_LS_LOSSLESS)!;
    expect(jls.ok).toBe(false);
    expect(jls.repeats).toEqual([expect.closeTo(30), null, expect.closeTo(50)]);
    expect(medianDecodeRun([runs[0]!])).toBe(runs[0]);
  });
});
