// The machine's own limits, measured in the same run as the benchmarks they bound: one core of
// AES-256-GCM and SHA-256 through node:crypto, disk writes with fsync (one big file, and 1 MiB
// files the way the fs block store writes them), sequential reads, and loopback HTTP to a sink in
// another process. Every figure is the median of a few runs, in MB/s (10^6 bytes per second).
// The same limits the Orthanc peer's own benchmark scripts measure, minus `openssl speed` and `dd`
// (Node's figures are the ones our node can reach), in about 30-60 s at the default size.
//
//   node bench/limits.ts [--gib 1] [--runs 3] [--work-dir DIR]
import { spawn } from 'node:child_process';
import { createCipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm } from 'node:fs/promises';
import http from 'node:http';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MAX_BLOCKS_IN_FLIGHT } from '../ingest/instance.ts';
import { allocateAligned, copyInto } from '../src/core/aligned-memory.ts';

const MiB = 1 << 20;
/** Scales every measurement; 1 takes about 30-60 s on a 2-core VM. */
export const DEFAULT_LIMITS_GIB = 1;
/** Runs per figure (at least 5 plus an untimed warm-up for the crypto loops); the median is reported. */
export const DEFAULT_LIMITS_RUNS = 3;
/** Blocks the ingest keeps in flight. */
export const STORE_WRITES_IN_FLIGHT = DEFAULT_MAX_BLOCKS_IN_FLIGHT;
/** Shard directories the 1 MiB-file test spreads over (like the fs store's base32 prefixes). */
const SHARDS = 64;

export interface LimitFigure {
  /** Median of `runs`, MB/s (10^6 bytes/s). */
  MBps: number;
  /** Each timed run, MB/s. */
  runs: number[];
  /** Bytes per run. */
  bytes: number;
  description: string;
}

export interface MachineLimits {
  measuredAt: string;
  /** Wall time of the whole measurement. */
  seconds: number;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; kernel: string; node: string; openssl: string };
  /** 1, 5 and 15 min load averages: other jobs on the machine lower every figure. */
  loadavg: { before: number[]; after: number[] };
  workDir: string;
  figures: {
    aesGcm: LimitFigure;
    sha256: LimitFigure;
    aesGcmThenSha256: LimitFigure;
    perChunkGcmSha256: LimitFigure;
    ingestCrypto: LimitFigure;
    diskWriteFdatasync: LimitFigure;
    diskWrite1MiBFiles: LimitFigure;
    diskWrite1MiBFilesParallel: LimitFigure;
    diskReadDirect: LimitFigure;
    diskReadCached: LimitFigure;
    loopbackHttp: LimitFigure;
  };
  /** The floor of any request's latency: an empty request and answer over loopback keep-alive HTTP. */
  roundTrip: RoundTripFigure;
}

export interface RoundTripFigure {
  medianMs: number;
  p99Ms: number;
  n: number;
  description: string;
}

/** Requests timed for the round-trip floor. */
export const ROUND_TRIPS = 1000;

export type LimitName = keyof MachineLimits['figures'];

export interface MeasureLimitsOptions {
  /** Scratch directory on the filesystem under test (the node's data directory's). Files are removed. */
  workDir: string;
  /** Size factor: GiB for disk and HTTP runs, a quarter of it for crypto and 1 MiB files. Default 1. */
  gib?: number;
  /** Default 3. */
  runs?: number;
  log?: (line: string) => void;
}

export async function measureLimits(opts: MeasureLimitsOptions): Promise<MachineLimits> {
  const gib = opts.gib ?? DEFAULT_LIMITS_GIB;
  const runs = opts.runs ?? DEFAULT_LIMITS_RUNS;
  if (!(gib > 0) || !Number.isSafeInteger(runs) || runs < 1) throw new RangeError('gib must be > 0 and runs >= 1');
  const log = opts.log ?? (() => {});
  const started = performance.now();
  const before = loadavg();
  const bigMiB = Math.max(16, Math.round(gib * 1024));
  const smallMiB = Math.max(16, Math.round(gib * 256));
  const pool = randomPool();

  await mkdir(opts.workDir, { recursive: true });
  const dir = await mkdtemp(join(opts.workDir, 'limits-'));
  try {
    const cryptoFigure = (name: string, description: string, loop: (n: number) => void): LimitFigure => {
      loop(Math.min(smallMiB, 64)); // warm-up: JIT and OpenSSL contexts
      const r: number[] = [];
      // Cheap (a fraction of a second each) and the most disturbed by other jobs: a few more runs.
      for (let i = 0; i < Math.max(runs, 5); i++) {
        const t0 = performance.now();
        loop(smallMiB);
        r.push(mbps(smallMiB * MiB, performance.now() - t0));
      }
      log(`${name}: ${fmt(r)}`);
      return figure(r, smallMiB * MiB, description);
    };
    const key = randomBytes(32);
    const aesGcm = cryptoFigure('AES-256-GCM', 'one core, node:crypto createCipheriv aes-256-gcm, one message, 1 MiB update() calls', (n) => {
      const c = createCipheriv('aes-256-gcm', key, randomBytes(12));
      for (let i = 0; i < n; i++) c.update(pool[i & 15]!);
      c.final();
    });
    const sha256 = cryptoFigure('SHA-256', 'one core, node:crypto createHash sha256, 1 MiB update() calls', (n) => {
      const h = createHash('sha256');
      for (let i = 0; i < n; i++) h.update(pool[i & 15]!);
      h.digest();
    });
    const aesGcmThenSha256 = cryptoFigure('GCM then SHA', 'one core, one pass: AES-256-GCM, then SHA-256 of the ciphertext, one message', (n) => {
      const c = createCipheriv('aes-256-gcm', key, randomBytes(12));
      const h = createHash('sha256');
      for (let i = 0; i < n; i++) h.update(c.update(pool[i & 15]!));
      c.final();
      h.digest();
    });
    const perChunkGcmSha256 = cryptoFigure(
      'per-chunk GCM+SHA',
      'one core: every 1 MiB chunk its own GCM message (nonce = index, tag appended) and its own SHA-256 (the CID), as src/format/seal.ts',
      (n) => {
        for (let i = 0; i < n; i++) sealAndAddress(key, i, pool[i & 15]!);
      },
    );
    const ingestCrypto = cryptoFigure(
      'ingest crypto',
      'one core: per-chunk GCM+SHA plus the SHA-256 of the plaintext instance (all the hashing and encryption ingest does per byte)',
      (n) => {
        const k = Buffer.from(hkdfSync('sha256', key, randomBytes(16), 'dicom-vault/v1/derived-key', 32));
        const whole = createHash('sha256');
        for (let i = 0; i < n; i++) {
          const p = pool[i & 15]!;
          whole.update(p);
          sealAndAddress(k, i, p);
        }
        whole.digest();
      },
    );

    // A new file each run, the earlier ones kept until the end: on this VM's virtual disk, blocks
    // the filesystem has just freed are rewritten 3-5x faster than fresh ones, and ingest writes
    // fresh ones.
    let big = '';
    const writes: number[] = [];
    for (let i = 0; i < runs; i++) {
      big = join(dir, `sequential-${i}.bin`);
      const t0 = performance.now();
      await writeFile(big, bigMiB, pool, i * bigMiB);
      writes.push(mbps(bigMiB * MiB, performance.now() - t0));
    }
    log(`disk write + fdatasync: ${fmt(writes)}`);
    const diskWriteFdatasync = figure(
      writes,
      bigMiB * MiB,
      `a new ${bigMiB} MiB file of random data per run (earlier runs kept: fresh blocks), 1 MiB writes, fdatasync at the end`,
    );

    const reads: number[] = [];
    let direct = true;
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const res = readFileDirect(big);
      direct &&= res.direct;
      reads.push(mbps(res.bytes, performance.now() - t0));
    }
    log(`disk read (${direct ? 'O_DIRECT' : 'page cache: O_DIRECT refused'}): ${fmt(reads)}`);
    const diskReadDirect = figure(
      reads,
      bigMiB * MiB,
      direct
        ? 'sequential 1 MiB reads with O_DIRECT (uncached: dropping the page cache needs privileges the VM may not grant)'
        : 'sequential 1 MiB reads; the filesystem refused O_DIRECT, so this is the page cache',
    );
    const cached: number[] = [];
    await readFileCached(big); // bring it in
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const bytes = await readFileCached(big);
      cached.push(mbps(bytes, performance.now() - t0));
    }
    log(`read from page cache: ${fmt(cached)}`);
    const diskReadCached = figure(cached, bigMiB * MiB, 'the same file read again through the page cache (where retrieval right after ingest reads from)');
    for (let i = 0; i < runs; i++) await rm(join(dir, `sequential-${i}.bin`), { force: true });

    const oneAtATime: number[] = [];
    const parallel: number[] = [];
    for (let i = 0; i < runs; i++) {
      for (const [inFlight, out] of [
        [1, oneAtATime],
        [STORE_WRITES_IN_FLIGHT, parallel],
      ] as const) {
        const files = join(dir, `files-${inFlight}-${i}`);
        await mkdir(files);
        const t0 = performance.now();
        await writeBlockFiles(files, smallMiB, inFlight, pool);
        out.push(mbps(smallMiB * MiB, performance.now() - t0));
        await rm(files, { recursive: true, force: true });
      }
    }
    log(`1 MiB files, fsync each: ${fmt(oneAtATime)}; ${STORE_WRITES_IN_FLIGHT} in flight: ${fmt(parallel)}`);
    const blockDescription = 'temp file, O_DIRECT write from aligned memory, fdatasync, rename, fsync of its directory, as storage/fs.ts puts a block';
    const diskWrite1MiBFiles = figure(oneAtATime, smallMiB * MiB, `${smallMiB} files of 1 MiB, one at a time: ${blockDescription}`);
    const diskWrite1MiBFilesParallel = figure(
      parallel,
      smallMiB * MiB,
      `the same with ${STORE_WRITES_IN_FLIGHT} files in flight (ingest's write window), over ${SHARDS} directories`,
    );

    const { runs: http, roundTripsMs } = await loopbackHttp(bigMiB, runs);
    log(`loopback HTTP: ${fmt(http)}`);
    const sortedTrips = [...roundTripsMs].sort((a, b) => a - b);
    const roundTrip: RoundTripFigure = {
      medianMs: round(median(sortedTrips), 3),
      p99Ms: round(sortedTrips[Math.max(0, Math.ceil(0.99 * sortedTrips.length) - 1)] ?? NaN, 3),
      n: sortedTrips.length,
      description: `${sortedTrips.length} empty GET requests, one at a time, over one keep-alive connection to the same sink`,
    };
    log(`loopback round trip: median ${roundTrip.medianMs} ms, p99 ${roundTrip.p99Ms} ms`);
    const loopbackHttpFigure = figure(
      http,
      bigMiB * MiB,
      `${bigMiB} MiB POST over 127.0.0.1 from this process (one 1 MiB buffer, drain-driven) to a node:http sink in a child process`,
    );

    const cpu = cpus();
    return {
      measuredAt: new Date().toISOString(),
      seconds: round((performance.now() - started) / 1000, 1),
      machine: {
        cpus: cpu.length,
        cpuModel: cpu[0]?.model.trim() ?? 'unknown',
        memoryGiB: round(totalmem() / 2 ** 30, 1),
        kernel: release(),
        node: process.version,
        openssl: process.versions.openssl ?? 'unknown',
      },
      loadavg: { before: before.map((x) => round(x, 2)), after: loadavg().map((x) => round(x, 2)) },
      workDir: opts.workDir,
      figures: {
        aesGcm,
        sha256,
        aesGcmThenSha256,
        perChunkGcmSha256,
        ingestCrypto,
        diskWriteFdatasync,
        diskWrite1MiBFiles,
        diskWrite1MiBFilesParallel,
        diskReadDirect,
        diskReadCached,
        loopbackHttp: loopbackHttpFigure,
      },
      roundTrip,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The ceiling ingest runs against: the lower of one core's ingest crypto and the disk as the fs
 * store writes it (1 MiB files with fsync, ingest's write window). Ingest pipelines the two, so
 * the lower one bounds it.
 */
export function ingestLimit(limits: MachineLimits): { MBps: number; name: LimitName } {
  const f = limits.figures;
  return f.ingestCrypto.MBps <= f.diskWrite1MiBFilesParallel.MBps
    ? { MBps: f.ingestCrypto.MBps, name: 'ingestCrypto' }
    : { MBps: f.diskWrite1MiBFilesParallel.MBps, name: 'diskWrite1MiBFilesParallel' };
}

/** Short labels, in report order. */
export const LIMIT_LABELS: Record<LimitName, string> = {
  aesGcm: 'AES-256-GCM, 1 core',
  sha256: 'SHA-256, 1 core',
  aesGcmThenSha256: 'GCM then SHA-256, 1 core',
  perChunkGcmSha256: 'per-chunk GCM + SHA-256 (CID), 1 core',
  ingestCrypto: 'ingest crypto (GCM + CID + plaintext SHA), 1 core',
  diskWriteFdatasync: 'disk: sequential write + fdatasync',
  diskWrite1MiBFiles: 'disk: 1 MiB files, fsync each',
  diskWrite1MiBFilesParallel: `disk: 1 MiB files, fsync each, ${STORE_WRITES_IN_FLIGHT} in flight`,
  diskReadDirect: 'disk: sequential read (O_DIRECT)',
  diskReadCached: 'read from page cache',
  loopbackHttp: 'loopback HTTP (node:http)',
};

/** Markdown table of the limits. */
export function limitsTable(limits: MachineLimits): string {
  const lines = ['| limit | MB/s | runs | how |', '|---|---:|---|---|'];
  for (const [name, label] of Object.entries(LIMIT_LABELS) as Array<[LimitName, string]>) {
    const f = limits.figures[name];
    lines.push(`| ${label} | ${Math.round(f.MBps)} | ${f.runs.map((r) => Math.round(r)).join(', ')} | ${f.description} |`);
  }
  // Older results (before the round trip was measured) have none.
  const t = limits.roundTrip as RoundTripFigure | undefined;
  if (t) lines.push(`| loopback HTTP round trip, ms (median / p99) | ${t.medianMs} / ${t.p99Ms} | ${t.n} requests | ${t.description} |`);
  return lines.join('\n');
}

// ---------- pieces ----------

/** 16 distinct random 1 MiB buffers, cycled: random so nothing compresses, several so no cache line stays hot. */
function randomPool(): Buffer[] {
  return Array.from({ length: 16 }, () => randomBytes(MiB));
}

function sealAndAddress(key: Buffer, index: number, plaintext: Buffer): Buffer {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64BE(BigInt(index), 4);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const head = c.update(plaintext);
  const tail = c.final();
  const out = Buffer.allocUnsafe(head.length + tail.length + 16);
  head.copy(out, 0);
  tail.copy(out, head.length);
  c.getAuthTag().copy(out, head.length + tail.length);
  return createHash('sha256').update(out).digest();
}

/** Stamps a counter into a pool buffer so every MiB written differs (a virtual disk may dedup). */
function stamped(pool: Buffer[], n: number): Buffer {
  const b = pool[n & 15]!;
  b.writeDoubleLE(n, 0);
  return b;
}

async function writeFile(path: string, mib: number, pool: Buffer[], first: number): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    for (let i = 0; i < mib; i++) await fh.write(stamped(pool, first + i));
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

async function writeBlockFiles(dir: string, count: number, inFlight: number, pool: Buffer[]): Promise<void> {
  for (let s = 0; s < SHARDS; s++) await mkdir(join(dir, String(s)));
  // One aligned 1 MiB buffer per write in flight, as the ingest's slots are.
  const buffers = allocateAligned(inFlight, MiB);
  let next = 0;
  const one = async (i: number, data: Buffer): Promise<void> => {
    const shard = join(dir, String(i % SHARDS));
    const tmp = join(shard, `.${i}.tmp`);
    copyInto(data, stamped(pool, 1e6 + i), 0);
    const fh = await openForBlock(tmp);
    try {
      await fh.write(data);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(shard, `${i}.data`));
    const d = await open(shard, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  };
  const worker = async (data: Buffer): Promise<void> => {
    while (next < count) await one(next++, data);
  };
  await Promise.all(buffers.map(worker));
}

/** A new file opened with O_DIRECT as the fs store writes blocks, or buffered where that is refused. */
async function openForBlock(path: string): Promise<Awaited<ReturnType<typeof open>>> {
  try {
    return await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_DIRECT);
  } catch (err) {
    if ((err as { code?: string }).code !== 'EINVAL') throw err;
    return open(path, 'wx');
  }
}

/** Reads the file with O_DIRECT into aligned memory; plain reads where O_DIRECT is refused (old tmpfs). */
function readFileDirect(path: string): { bytes: number; direct: boolean } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
  } catch {
    return { bytes: readAllSync(path, Buffer.allocUnsafe(MiB)), direct: false };
  }
  try {
    const [view] = allocateAligned(1, MiB) as [Buffer];
    let total = 0;
    for (;;) {
      const n = readSync(fd, view, 0, MiB, total);
      if (n === 0) break;
      total += n;
    }
    return { bytes: total, direct: true };
  } finally {
    closeSync(fd);
  }
}

function readAllSync(path: string, buf: Buffer): number {
  const fd = openSync(path, 'r');
  try {
    let total = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, total);
      if (n === 0) return total;
      total += n;
    }
  } finally {
    closeSync(fd);
  }
}

async function readFileCached(path: string): Promise<number> {
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(MiB);
  try {
    let total = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, MiB, total);
      if (bytesRead === 0) return total;
      total += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

// The sink runs in its own process so that client and server each get a core, as with a real
// node; it only counts bytes. Plain JS for `node -e` (type stripping does not apply to -e).
const SINK_SOURCE = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  let n = 0;
  req.on('data', (c) => { n += c.length; });
  req.on('end', () => res.end(JSON.stringify({ bytes: n })));
});
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
process.on('SIGTERM', () => process.exit(0));
`;

async function loopbackHttp(mib: number, runs: number): Promise<{ runs: number[]; roundTripsMs: number[] }> {
  const child = spawn(process.execPath, ['-e', SINK_SOURCE], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /^(\d+)\n/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', (code) => reject(new Error(`HTTP sink exited (${code}) before listening`)));
      child.once('error', reject);
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const buf = randomBytes(MiB);
    const out: number[] = [];
    try {
      for (let r = 0; r < runs; r++) {
        const t0 = performance.now();
        const got = await post(port, agent, buf, mib);
        const ms = performance.now() - t0;
        if (got !== mib * MiB) throw new Error(`HTTP sink counted ${got} bytes, sent ${mib * MiB}`);
        out.push(mbps(got, ms));
      }
      const trips: number[] = [];
      for (let i = 0; i < ROUND_TRIPS; i++) {
        const t0 = performance.now();
        await emptyGet(port, agent);
        trips.push(performance.now() - t0);
      }
      return { runs: out, roundTripsMs: trips };
    } finally {
      agent.destroy();
    }
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await gone;
    }
  }
}

function post(port: number, agent: http.Agent, buf: Buffer, mib: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/',
        agent,
        headers: { 'content-type': 'application/octet-stream', 'content-length': mib * MiB },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => {
          try {
            resolve((JSON.parse(body) as { bytes: number }).bytes);
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    let left = mib;
    const pump = (): void => {
      while (left > 0) {
        left--;
        if (!req.write(buf)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

function emptyGet(port: number, agent: http.Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'GET', path: '/', agent }, (res) => {
      res.resume();
      res.on('end', resolve);
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function figure(runs: number[], bytes: number, description: string): LimitFigure {
  return { MBps: round(median(runs), 0), runs: runs.map((r) => round(r, 0)), bytes, description };
}

function round(n: number, digits: number): number {
  return Math.round(n * 10 ** digits) / 10 ** digits;
}

function fmt(runs: number[]): string {
  return `${Math.round(median(runs))} MB/s (runs ${runs.map((r) => Math.round(r)).join(', ')})`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      gib: { type: 'string', default: String(DEFAULT_LIMITS_GIB) },
      runs: { type: 'string', default: String(DEFAULT_LIMITS_RUNS) },
      'work-dir': { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const workDir = values['work-dir'] ?? join(tmpdir(), 'dicom-vault-limits');
  const limits = await measureLimits({
    workDir,
    gib: Number(values.gib),
    runs: Number(values.runs),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  if (values.json) process.stdout.write(`${JSON.stringify(limits, null, 2)}\n`);
  else {
    process.stdout.write(
      `${limits.machine.cpus} x ${limits.machine.cpuModel}, ${limits.machine.memoryGiB} GiB, Node ${limits.machine.node}, ` +
        `load ${limits.loadavg.before.join(' ')} -> ${limits.loadavg.after.join(' ')}, ${limits.seconds} s\n\n${limitsTable(limits)}\n`,
    );
  }
}
