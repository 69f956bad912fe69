// What run.ts writes beside the figures: the notes that go with them in the report (the machine's
// load, the CPU each side used, repeats and failures; the decode scenario's method), the console
// table's rows, the one-line machine description, and the scale projection's inputs taken from
// this run's footprints. Apart from run.ts, which runs the scenarios: these only read results.
import { execFile } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { promisify } from 'node:util';
import type { DecodeResult } from './decode-scenario.ts';
import { measuredScale, OURS, ORTHANC, type Figure, type HugeFootprint, type ScenarioResult, type SystemRun } from './figures.ts';
import type { MachineLimits } from './limits.ts';
import type { BenchOptions } from './options.ts';
import { formatNumber, ofLimit, ratioText } from './report.ts';
import { measureHeldCidBytes, type Footprint, type MeasuredScale } from './scale.ts';

/** The scale projection's inputs from the fs footprints of this run; null without a huge study. */
export function scaleFrom(results: ScenarioResult[], footprints: Map<string, Footprint>, log: (line: string) => void): MeasuredScale | null {
  const huge: HugeFootprint[] = [];
  for (const s of results) {
    const fp = footprints.get(s.id);
    const ing = s.runs[0]?.ingest;
    if (s.kind !== 'huge' || !fp || !ing?.ok || !s.frameSource) continue;
    huge.push({
      bytes: s.bytes,
      instances: s.instances,
      frames: s.instances * s.frameSource.numberOfFrames,
      peakRssMiB: ing.peakRssMiB,
      ingestMBps: ing.bytes / 1e6 / ing.seconds,
      footprint: fp,
    });
  }
  const small = results.filter((s) => s.kind === 'small' && footprints.has(s.id) && s.runs[0]?.ingest?.ok).sort((a, b) => b.instances - a.instances)[0];
  if (huge.length === 0) return null;
  log('measuring memory per chunk CID for the scale projection');
  return measuredScale({
    huge,
    ...(small ? { small: { instances: small.instances, footprint: footprints.get(small.id)! } } : {}),
    heldBytesPerChunk: measureHeldCidBytes(),
  });
}

export function runNotes(o: BenchOptions, results: ScenarioResult[], limits: MachineLimits | null, before: number[], after: number[]): string[] {
  const notes: string[] = [];
  const cores = cpus().length;
  notes.push(
    `Load average ${before[0]!.toFixed(2)} before and ${after[0]!.toFixed(2)} after, on ${cores} cores: ` +
      `the client (generating and sending the studies) runs on the same cores as the server.`,
  );
  const clientCpu = results.reduce((a, s) => a + (s.runs[0]?.ingest?.clientCpuSeconds ?? 0), 0);
  const serverCpu = results.reduce((a, s) => a + (s.runs[0]?.ingest?.cpuSeconds ?? 0), 0);
  if (serverCpu > 0) notes.push(`During our ingests the client used ${clientCpu.toFixed(1)} CPU-s and the node ${serverCpu.toFixed(1)} CPU-s.`);
  if (limits) {
    notes.push(
      'Crypto limits are one core; the node seals and opens chunks on a pool of worker threads, so on 2 cores it can pass ' +
        'a one-core limit (the figure then reads above 100%).',
    );
  }
  if (results.some((s) => s.kind === 'dimse')) {
    notes.push(
      `DIMSE scenarios: dcmtk's storescu (${o.storescu}), one association per study carrying every file of it, run with TCP_NODELAY=1 ` +
        "(Debian's dcmtk otherwise leaves Nagle's algorithm on and each small C-STORE waits ~40 ms for a delayed ACK); the files were " +
        'written to the work dir before the clock started (read back from the page cache); success is the instances QIDO lists afterwards. ' +
        'Each SCP negotiates its own PDU size (the node 256 KiB, Orthanc its default 16 KiB); no retrieval is measured in these scenarios.',
    );
  }
  if (results.some((s) => s.kind !== 'dimse')) {
    notes.push('Retrieval runs right after ingest: blocks are read from the page cache where RAM holds them.');
    if (o.store === 's3') notes.push('Store s3: bytes stored are not measured (the blocks are in the S3 server); no scale projection (it reads the fs store).');
    if (o.store === 'ipfs')
      notes.push('Store ipfs: bytes stored are the whole data directory with its IPFS repository; no scale projection (it reads the fs store).');
  }
  for (const s of results) {
    const repeated = s.runs.filter((r) => r.repeats !== undefined);
    if (repeated.length > 0) {
      const list = (r: SystemRun): string =>
        `${r.repeats!.map((x) => (x.instancesPerSecond === null ? 'failed' : formatNumber(Math.round(x.instancesPerSecond)))).join(' / ')} inst/s for ${r.system}`;
      notes.push(
        `${s.label}: run ${repeated[0]!.repeats!.length} times, each on a fresh server${repeated.length > 1 ? ' (the two systems alternating)' : ''}: ` +
          `ingest ${repeated.map(list).join(', ')}; ` +
          'the tables show the run with the median ingest rate.',
      );
    }
    for (const r of s.runs) {
      const problems = [...r.errors, ...(r.ingest?.failures ?? []), ...(r.retrieve?.failures ?? [])];
      for (const q of [r.qido, r.seriesMetadata, r.frames]) if (q?.note) problems.push(q.note);
      if (problems.length > 0) notes.push(`${r.system}, ${s.label}: ${problems.slice(0, 3).join('; ')}`);
    }
  }
  return notes;
}

export function decodeNotes(d: DecodeResult): string[] {
  const notes = [
    `Decode: the same JPEG 2000 and JPEG-LS lossless instances (Multi-frame Grayscale Word SC, ${d.size} × ${d.size}, 12 bits stored, a CT-like phantom, ` +
      `${d.syntaxes.map((x) => `${x.name} ${Math.round(x.encodedBytesPerFrame / 1000)} kB per frame`).join(', ')}) stored in each system, their frames asked for ` +
      'with WADO-RS frames and Accept multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1, a fresh server per syntax. ' +
      "Orthanc decodes through its DICOMweb plugin, JPEG 2000 with Debian's GDCM plugin and JPEG-LS with its built-in DCMTK (GDCM restricted to JPEG 2000: " +
      'with GDCM for JPEG-LS too, single-frame requests crashed Orthanc), and transcodes the whole instance for every request, so all frames of an ' +
      'instance per request is the pattern most favourable to it. Every decoded frame of one instance was checked byte for byte against the phantom before the timing. ' +
      `"Of the machine limit": the node's own decoders (DecodePool) in the benchmark process on the same frames.`,
  ];
  for (const r of d.runs) {
    for (const x of r.syntaxes) {
      const name = d.syntaxes.find((s) => s.transferSyntaxUID === x.transferSyntaxUID)?.name ?? x.transferSyntaxUID;
      if (x.repeats && x.repeats.length > 1) {
        notes.push(
          `Decode, ${name}, ${r.system}: ${x.repeats.map((v) => (v === null ? 'failed' : formatNumber(v))).join(' / ')} frames/s over ${x.repeats.length} runs (whole instance per request); the tables show the median run.`,
        );
      }
      if (x.failures.length > 0) notes.push(`${r.system}, decode ${name}: ${x.failures.slice(0, 3).join('; ')}`);
    }
    if (r.errors.length > 0) notes.push(`${r.system}, decode: ${r.errors.slice(0, 3).join('; ')}`);
  }
  return notes;
}

export function consoleRow(withPeer: boolean): (f: Figure) => Record<string, string> {
  const show = (v: number | null | undefined, f: Figure): string =>
    v === null || v === undefined ? 'n/a' : f.digits !== undefined ? v.toFixed(f.digits) : formatNumber(v);
  return (f) => ({
    scenario: f.scenario,
    operation: f.operation,
    unit: f.unit,
    [OURS]: `${show(f.ours, f)}${f.ok === false ? ' FAILED' : ''}`,
    ...(withPeer ? { [ORTHANC]: `${show(f.peer, f)}${f.peerOk === false ? ' FAILED' : ''}`, ratio: ratioText(f) } : {}),
    'of limit': ofLimit(f),
  });
}

/** CPUs, RAM, the filesystem under test and Node, in one line. */
export async function describeMachine(workDir: string): Promise<string> {
  let fs = '';
  try {
    const { stdout } = await promisify(execFile)('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '--target', workDir]);
    const [type, source] = stdout.trim().split(/\s+/);
    if (type) fs = `, work dir on ${type} (${source ?? '?'})`;
  } catch {
    // findmnt missing: the filesystem is left out
  }
  const cpu = cpus();
  return `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${round(totalmem() / 2 ** 30, 1)} GiB RAM${fs}, Node ${process.version}`;
}

export function round(n: number, d: number): number {
  return Math.round(n * 10 ** d) / 10 ** d;
}
