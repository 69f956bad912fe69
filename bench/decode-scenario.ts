// The decode scenario of `npm run bench` (issue 20): how many compressed frames a viewer gets
// back decoded per second, from the node and from Orthanc in the same run. The same multi-frame
// JPEG 2000 and JPEG-LS lossless instances (bench/codec-study.ts) are stored in each, and their
// frames are asked for through WADO-RS frames with
//   Accept: multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1
// which both must answer with the frames decoded to native little endian. Orthanc does so through
// its DICOMweb plugin, which transcodes with Orthanc's core and Debian's GDCM plugin (DCMTK reads
// no JPEG 2000); of Orthanc's ways to decode, this is the fairest comparison: the same request,
// the same answer, the same client. Its `/instances/{id}/frames/{n}/image-uint16` answers a PNG
// (an encode on top of the decode, and another format to check), and `/modify` with Transcode
// answers a whole instance.
//
// Two access patterns, the same for both systems:
// - whole instance: all frames of one instance per request (where Orthanc's plugin transcodes the
//   whole instance once per request: the pattern most favourable to it). The issue's target.
// - one frame per request, as viewers fetch them, `--decode-concurrency` in flight, within a time
//   budget (Orthanc transcodes the whole instance for each).
// Every decoded frame is first checked byte for byte against the phantom it was encoded from, once,
// outside the timing; timed requests count parts and bytes. Beside them, the node's decoders alone
// (its DecodePool in this process, on the same frames) give the ceiling the endpoint runs into.
import { mkdtemp } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { DecodePool } from '../src/dicom/codecs/index.ts';
import { createAgent, stow, wadoFrames } from './client.ts';
import { buildCodecStudy, codecFrameInfo, DECODE_SYNTAXES, EXPLICIT_VR_LE, uploadStudy, type CodecInstance, type CodecStudy } from './codec-study.ts';
import { advantage, type FigureLimit } from './report.ts';
import { OURS, ORTHANC, peakRss, spreadFrames, summarize, type Figure, type LatencyResult, type TargetCheck } from './figures.ts';
import { serveNode } from './node-process.ts';
import type { BenchOptions } from './options.ts';
import { startOrthanc } from './orthanc.ts';
import { readCpuSeconds, startRssSampler } from './rss.ts';
import type { ScratchSpace } from './scratch.ts';

export const DECODE_ACCEPT = `multipart/related; type="application/octet-stream"; transfer-syntax=${EXPLICIT_VR_LE}`;
/** Time the one-frame-per-request pattern may take per system and syntax. */
export const ONE_FRAME_BUDGET_MS = 30_000;
/** One-frame requests made at most per system and syntax. */
export const ONE_FRAME_MAX_REQUESTS = 400;
/** Frames the decoders alone decode for their rate (all queued at once). */
const DECODER_LIMIT_FRAMES = 128;
const MAX_FAILURES_KEPT = 5;

/** One system, one transfer syntax. */
export interface DecodeSyntaxRun {
  transferSyntaxUID: string;
  /** The untimed check: every frame of the first instance equal to the phantom it encodes. */
  verified: boolean;
  /** All frames of an instance per request. */
  whole: DecodePass | null;
  /** One frame per request. */
  oneFrame: (DecodePass & { latency: LatencyResult }) | null;
  /** Server peak RSS over both passes. */
  peakRssMiB: number;
  ok: boolean;
  failures: string[];
  /** Every run's whole-instance frames/s in the order they ran (null: failed), when repeated. */
  repeats?: Array<number | null>;
}

export interface DecodePass {
  /** Decoded frames received. */
  frames: number;
  requests: number;
  seconds: number;
  /** Decoded bytes received (part bodies). */
  bytes: number;
  /** Server CPU seconds during the pass (null: it had exited). */
  cpuSeconds: number | null;
  ok: boolean;
}

export interface DecodeRun {
  system: string;
  detail: string;
  syntaxes: DecodeSyntaxRun[];
  errors: string[];
}

export interface DecodeResult {
  label: string;
  size: number;
  framesPerInstance: number;
  instancesPerSyntax: number;
  concurrency: number;
  syntaxes: Array<{
    transferSyntaxUID: string;
    name: string;
    /** Mean encoded bytes per frame; native frames are size * size * 2. */
    encodedBytesPerFrame: number;
    /** The node's DecodePool alone, in this process, on the same frames; null if it failed. */
    decoderFramesPerSecond: number | null;
    decoderWorkers: number;
  }>;
  /** Ours (each syntax from its median run), then the peer's. */
  runs: DecodeRun[];
}

export interface DecodeScenarioOptions {
  o: Pick<BenchOptions, 'decodeFrames' | 'decodeInstances' | 'decodeConcurrency' | 'repeat' | 'peer' | 'store' | 'keep'>;
  /** The environment of each node started, beyond the defaults (the S3 store's settings). */
  env?: () => Promise<NodeJS.ProcessEnv>;
  workDir: string;
  scratch: ScratchSpace;
  log: (line: string) => void;
}

export async function runDecodeScenario({ o, env = async () => ({}), workDir, scratch, log }: DecodeScenarioOptions): Promise<DecodeResult> {
  const syntaxes = Object.keys(DECODE_SYNTAXES);
  const filesDir = await mkdtemp(join(workDir, 'dicom-vault-bench-decode-files-'));
  try {
    const t = performance.now();
    const study = await buildCodecStudy({ dir: filesDir, syntaxes, instances: o.decodeInstances, frames: o.decodeFrames, seed: 1 });
    log(`decode: encoded ${o.decodeInstances} × ${o.decodeFrames} frames per syntax in ${((performance.now() - t) / 1000).toFixed(1)} s (not timed)`);
    const header: DecodeResult = {
      label: `decode: ${o.decodeInstances} × ${o.decodeFrames} frames of ${study.size} × ${study.size}, 12 bits`,
      size: study.size,
      framesPerInstance: o.decodeFrames,
      instancesPerSyntax: o.decodeInstances,
      concurrency: o.decodeConcurrency,
      syntaxes: [],
      runs: [],
    };
    for (const ts of syntaxes) {
      const of = study.instances.filter((i) => i.transferSyntaxUID === ts);
      const workers = availableParallelism();
      let rate: number | null = null;
      try {
        rate = await decoderRate(ts, study.samples[ts]!, study.size, workers);
      } catch (err) {
        log(`decode: the decoders alone failed on ${ts}: ${(err as Error).message}`);
      }
      header.syntaxes.push({
        transferSyntaxUID: ts,
        name: DECODE_SYNTAXES[ts]!,
        encodedBytesPerFrame: Math.round(of[0]!.encodedBytes / of[0]!.numberOfFrames),
        decoderFramesPerSecond: rate,
        decoderWorkers: workers,
      });
      log(`decode: ${DECODE_SYNTAXES[ts]}: the node's decoders alone ${rate === null ? 'failed' : `${rate.toFixed(0)} frames/s`} on ${workers} workers`);
    }
    const ours: DecodeRun[] = [];
    const peers: DecodeRun[] = [];
    for (let i = 0; i < o.repeat; i++) {
      if (o.repeat > 1) log(`decode: run ${i + 1} of ${o.repeat}`);
      ours.push(await oneSystem('ours', study, o, env, workDir, scratch, log));
      if (o.peer === 'orthanc') peers.push(await oneSystem('orthanc', study, o, env, workDir, scratch, log));
    }
    header.runs.push(medianDecodeRun(ours));
    if (peers.length > 0) header.runs.push(medianDecodeRun(peers));
    return header;
  } finally {
    if (!o.keep) await scratch.release(filesDir);
  }
}

/** Frames/s of a DecodePool of `workers` threads in this process, all frames queued at once, after a warm-up. */
async function decoderRate(ts: string, samples: Uint8Array[], size: number, workers: number): Promise<number> {
  const info = codecFrameInfo(size);
  const pool = new DecodePool({ workers, maxQueue: DECODER_LIMIT_FRAMES });
  try {
    await Promise.all(Array.from({ length: workers }, (_, i) => pool.decode(ts, samples[i % samples.length]!, info)));
    const t0 = performance.now();
    await Promise.all(Array.from({ length: DECODER_LIMIT_FRAMES }, (_, i) => pool.decode(ts, samples[i % samples.length]!, info)));
    return DECODER_LIMIT_FRAMES / ((performance.now() - t0) / 1000);
  } finally {
    await pool.close();
  }
}

interface Served {
  url: string;
  pid: number;
  detail: string;
  stop(): Promise<void>;
}

/**
 * One system through the scenario: for each syntax a fresh server (a crash decoding one syntax
 * must not take the other's figures with it), its instances stored, then decodeSyntax.
 */
async function oneSystem(
  which: 'ours' | 'orthanc',
  study: CodecStudy,
  o: DecodeScenarioOptions['o'],
  env: () => Promise<NodeJS.ProcessEnv>,
  workDir: string,
  scratch: ScratchSpace,
  log: (line: string) => void,
): Promise<DecodeRun> {
  const system = which === 'ours' ? OURS : ORTHANC;
  const run: DecodeRun = { system, detail: '', syntaxes: [], errors: [] };
  for (const ts of [...new Set(study.instances.map((i) => i.transferSyntaxUID))]) {
    const instances = study.instances.filter((i) => i.transferSyntaxUID === ts);
    const dir = await mkdtemp(join(workDir, which === 'ours' ? 'dicom-vault-bench-decode-' : 'orthanc-bench-decode-'));
    try {
      let served: Served;
      if (which === 'ours') {
        const node = await serveNode(dir, ['--store', o.store], await env());
        served = { url: node.url, pid: node.pid, detail: `dicom-vault, ${o.store} store`, stop: () => node.stop() };
      } else {
        const orthanc = await startOrthanc(dir, { gdcm: true, config: ORTHANC_DECODE_CONFIG, log: (l) => log(`orthanc: ${l}`) });
        served = {
          url: orthanc.url,
          pid: orthanc.pid,
          detail: `Orthanc ${orthanc.version} (DICOMweb plugin ${orthanc.dicomWebVersion}; GDCM plugin for JPEG 2000, DCMTK for the rest)`,
          stop: () => orthanc.stop(),
        };
      }
      run.detail = served.detail;
      try {
        const agent = createAgent();
        try {
          const up = await stow({ baseUrl: served.url, study: uploadStudy(study, instances), perRequest: 1, concurrency: 1, agent });
          if (up.failures.length > 0 || up.stored !== up.instances)
            throw new Error(`storing the ${DECODE_SYNTAXES[ts]} instances: ${up.failures.slice(0, 2).join('; ') || `${up.stored} of ${up.instances} stored`}`);
        } finally {
          agent.destroy();
        }
        log(`${system}: decode ${DECODE_SYNTAXES[ts]}`);
        const r = await decodeSyntax(served, study, instances, o.decodeConcurrency);
        if (!alive(served.pid)) r.failures.push(`${system} exited while its frames were being decoded`);
        run.syntaxes.push(r);
      } finally {
        await served.stop();
      }
    } catch (err) {
      log(`${system}: decode ${DECODE_SYNTAXES[ts]}: ${(err as Error).message}`);
      run.errors.push(`${DECODE_SYNTAXES[ts]}: ${(err as Error).message}`);
    } finally {
      if (!o.keep) await scratch.release(dir);
    }
  }
  return run;
}

/**
 * Orthanc's decoders: the GDCM plugin only for JPEG 2000 (its documented
 * RestrictTransferSyntaxes), Orthanc's built-in DCMTK for the rest, JPEG-LS included. With GDCM
 * for every syntax (Orthanc's default order), single-frame requests for JPEG-LS frames crashed
 * Orthanc within a few requests (a segfault in Debian's libgdcmMSFF 3.0.21, dmesg), as they still
 * do for JPEG 2000, which only GDCM reads here.
 */
export const ORTHANC_DECODE_CONFIG = {
  Gdcm: { Enable: true, RestrictTransferSyntaxes: ['1.2.840.10008.1.2.4.90', '1.2.840.10008.1.2.4.91', '1.2.840.10008.1.2.4.92', '1.2.840.10008.1.2.4.93'] },
};

function alive(pid: number): boolean {
  return cpuOf(pid) !== null;
}

async function decodeSyntax(served: Served, study: CodecStudy, instances: CodecInstance[], concurrency: number): Promise<DecodeSyntaxRun> {
  const ts = instances[0]!.transferSyntaxUID;
  const failures: string[] = [];
  const fail = (f: string): void => {
    if (failures.length < MAX_FAILURES_KEPT) failures.push(f);
  };
  // The first mismatch says it best (it carries the status and the start of a refusal's body).
  const why = (r: { status: number | undefined; mismatches: string[] }): string => (r.mismatches[0] ?? `HTTP ${r.status ?? 'no response'}`).slice(0, 300);
  const all = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);
  const fetch = (inst: CodecInstance, frames: number[], verify: boolean) =>
    wadoFrames(served.url, study.studyInstanceUID, inst.seriesInstanceUID, inst.sopInstanceUID, frames, {
      accept: DECODE_ACCEPT,
      ...(verify ? { expectSha256: frames.map((f) => inst.frameSha256[f - 1]!) } : {}),
    });

  // Correctness first, untimed: a fast wrong answer must not count.
  const first = instances[0]!;
  const check = await fetch(first, all(first.numberOfFrames), true);
  const verified = check.ok;
  if (!verified) fail(`check of the ${first.numberOfFrames} frames of the first instance: ${why(check)}`);

  const sampler = startRssSampler(served.pid);
  // Whole instance per request.
  let cpu0 = cpuOf(served.pid);
  let t0 = performance.now();
  let frames = 0;
  let bytes = 0;
  let wholeOk = true;
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, instances.length) }, async () => {
      while (next < instances.length) {
        const inst = instances[next++]!;
        const r = await fetch(inst, all(inst.numberOfFrames), false);
        const good = r.status === 200 && r.parts === inst.numberOfFrames && r.partBytes === inst.numberOfFrames * inst.frameBytes;
        if (good) {
          frames += r.parts;
          bytes += r.partBytes;
        } else {
          wholeOk = false;
          fail(`all ${inst.numberOfFrames} frames of instance ${inst.sopInstanceUID}: ${r.parts} parts, ${r.partBytes} bytes: ${why(r)}`);
        }
      }
    }),
  );
  const whole: DecodePass = {
    frames,
    requests: instances.length,
    seconds: (performance.now() - t0) / 1000,
    bytes,
    cpuSeconds: cpuSince(served.pid, cpu0),
    ok: wholeOk,
  };

  // One frame per request, spread over the instances and their frames, within a budget.
  const perInstance = spreadFrames(first.numberOfFrames, Math.ceil(ONE_FRAME_MAX_REQUESTS / instances.length));
  const picks = Array.from({ length: Math.min(ONE_FRAME_MAX_REQUESTS, perInstance.length * instances.length) }, (_, k) => ({
    inst: instances[k % instances.length]!,
    frame: perInstance[Math.floor(k / instances.length)]!,
  }));
  cpu0 = cpuOf(served.pid);
  t0 = performance.now();
  const ms: number[] = [];
  let oneGood = 0;
  let oneBytes = 0;
  let oneOk = true;
  next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      // At least a few samples, however slow; then stop once the budget is spent.
      while (next < picks.length && (ms.length < 3 * concurrency || performance.now() - t0 < ONE_FRAME_BUDGET_MS)) {
        const { inst, frame } = picks[next++]!;
        const r = await fetch(inst, [frame], true);
        ms.push(r.ms);
        if (r.ok) {
          oneGood++;
          oneBytes += r.partBytes;
        } else {
          oneOk = false;
          fail(`frame ${frame} of instance ${inst.sopInstanceUID}: ${why(r)}`);
        }
      }
    }),
  );
  const oneSeconds = (performance.now() - t0) / 1000;
  const rss = sampler.stop();
  const oneFrame = {
    frames: oneGood,
    requests: ms.length,
    seconds: oneSeconds,
    bytes: oneBytes,
    cpuSeconds: cpuSince(served.pid, cpu0),
    ok: oneOk,
    latency: { ...summarize(ms), ok: oneOk },
  };
  return { transferSyntaxUID: ts, verified, whole, oneFrame, peakRssMiB: peakRss(rss), ok: verified && wholeOk && oneOk, failures };
}

/** CPU seconds of the server so far; null once it has exited. */
function cpuOf(pid: number): number | null {
  try {
    return readCpuSeconds(pid);
  } catch {
    return null;
  }
}

function cpuSince(pid: number, start: number | null): number | null {
  const now = cpuOf(pid);
  return now === null || start === null ? null : Math.round((now - start) * 100) / 100;
}

// ---------- pure parts: median run, figures, targets ----------

/** Whole-instance frames/s of one syntax run; null when it failed. */
export function wholeRate(s: DecodeSyntaxRun | undefined): number | null {
  const w = s?.whole;
  return w?.ok && w.seconds > 0 ? w.frames / w.seconds : null;
}

/** One-frame-per-request frames/s; null when it failed. */
export function oneFrameRate(s: DecodeSyntaxRun | undefined): number | null {
  const w = s?.oneFrame;
  return w?.ok && w.seconds > 0 ? w.frames / w.seconds : null;
}

/**
 * The run to report of several: per syntax, the run with the median whole-instance rate (a
 * failed one instead, so no failure hides), with every run's rate in `repeats`.
 */
export function medianDecodeRun(runs: readonly DecodeRun[]): DecodeRun {
  if (runs.length === 0) throw new RangeError('no runs');
  if (runs.length === 1) return runs[0]!;
  const syntaxes = [...new Set(runs.flatMap((r) => r.syntaxes.map((s) => s.transferSyntaxUID)))];
  const chosen: DecodeSyntaxRun[] = [];
  for (const ts of syntaxes) {
    const of = runs.map((r) => r.syntaxes.find((s) => s.transferSyntaxUID === ts));
    const repeats = of.map((s) => (s?.ok ? wholeRate(s) : null));
    const failed = of.find((s) => s !== undefined && (!s.ok || wholeRate(s) === null));
    const present = of.filter((s): s is DecodeSyntaxRun => s !== undefined);
    const pick = failed ?? [...present].sort((a, b) => wholeRate(a)! - wholeRate(b)!)[Math.floor((present.length - 1) / 2)];
    if (pick) chosen.push({ ...pick, repeats });
  }
  const base = runs.find((r) => r.errors.length > 0) ?? runs[0]!;
  return { ...base, syntaxes: chosen, errors: runs.flatMap((r) => r.errors) };
}

/** The scenario's figures, one table per syntax: ours, Orthanc's, the ratio, the decoders' own rate. */
export function decodeFigures(r: DecodeResult, roundTripMs: number | null): Figure[] {
  const [ours, peer] = r.runs;
  if (!ours) return [];
  const out: Figure[] = [];
  for (const x of r.syntaxes) {
    const scenario = `${r.label}, ${x.name}`;
    const a = ours.syntaxes.find((s) => s.transferSyntaxUID === x.transferSyntaxUID);
    const b = peer?.syntaxes.find((s) => s.transferSyntaxUID === x.transferSyntaxUID);
    const decoders: FigureLimit | undefined =
      x.decoderFramesPerSecond === null ? undefined : { name: `the node's decoders alone, ${x.decoderWorkers} workers`, value: x.decoderFramesPerSecond };
    const push = (
      id: string,
      operation: string,
      unit: string,
      pick: (s: DecodeSyntaxRun | undefined) => number | null,
      o: { lowerIsBetter?: boolean; limit?: FigureLimit; ok?: (s: DecodeSyntaxRun | undefined) => boolean } = {},
    ): void => {
      const va = pick(a);
      const vb = peer ? pick(b) : undefined;
      if (va === null && (vb === null || vb === undefined)) return;
      const ok = o.ok ?? ((s: DecodeSyntaxRun | undefined) => s?.ok ?? false);
      const f: Figure = {
        id: `decode-${x.transferSyntaxUID}-${id}`,
        scenario,
        operation,
        unit,
        ours: va,
        ...(peer ? { peer: vb ?? null, peerOk: ok(b) } : {}),
        ...(o.lowerIsBetter ? { lowerIsBetter: true } : {}),
        ...(o.limit ? { limit: o.limit } : {}),
        ok: ok(a),
        ratio: null,
      };
      f.ratio = advantage(f);
      out.push(f);
    };
    const trip: FigureLimit | undefined = roundTripMs === null ? undefined : { name: 'empty loopback request', value: roundTripMs, kind: 'floor' };
    push('whole', `decoded frames, all ${r.framesPerInstance} of an instance per request`, 'frames/s', wholeRate, {
      ...(decoders ? { limit: decoders } : {}),
      ok: (s) => (s?.verified ?? false) && (s?.whole?.ok ?? false),
    });
    push('one', `decoded frames, one per request, ${r.concurrency} in flight`, 'frames/s', oneFrameRate, {
      ...(decoders ? { limit: decoders } : {}),
      ok: (s) => s?.oneFrame?.ok ?? false,
    });
    push('one-median', 'one decoded frame, median', 'ms', (s) => s?.oneFrame?.latency.median ?? null, {
      lowerIsBetter: true,
      ...(trip ? { limit: trip } : {}),
      ok: (s) => s?.oneFrame?.ok ?? false,
    });
    push('one-p99', 'one decoded frame, p99', 'ms', (s) => s?.oneFrame?.latency.p99 ?? null, {
      lowerIsBetter: true,
      ...(trip ? { limit: trip } : {}),
      ok: (s) => s?.oneFrame?.ok ?? false,
    });
    push('rss', 'server peak RSS while decoding', 'MiB', (s) => s?.peakRssMiB ?? null, { lowerIsBetter: true });
  }
  return out;
}

/** Issue 20: decoded frames/s at least Orthanc's (1×), whole instance per request, per syntax. */
export function decodeTargets(r: DecodeResult): TargetCheck[] {
  const [ours, peer] = r.runs;
  if (!ours || !peer) return [];
  return r.syntaxes.map((x) => {
    const a = wholeRate(ours.syntaxes.find((s) => s.transferSyntaxUID === x.transferSyntaxUID));
    const b = wholeRate(peer.syntaxes.find((s) => s.transferSyntaxUID === x.transferSyntaxUID));
    const ratio = a === null || b === null || !(b > 0) ? null : a / b;
    const fmt = (v: number): string => (v >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10));
    return {
      target: `decoded frames/s ≥ 1× ${peer.system}`,
      scenario: `${r.label}, ${x.name}`,
      measured: ratio === null ? (a === null ? 'not measured (ours failed)' : 'no peer figure') : `${ratio.toFixed(2)}× (${fmt(a!)} vs ${fmt(b!)} frames/s)`,
      met: ratio === null ? null : ratio >= 1,
    };
  });
}
