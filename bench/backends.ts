// Ingest and retrieval of one large study on each block backend (fs, ipfs, s3), through the HTTP
// API of a real node process, in one run so that the ratios to fs compare like with like. The S3
// backend runs against the local Swift s3api server of the test suites (test/services/s3-swift),
// started here if needed with a base directory of its own (its own daemons on free ports, which
// a test suite stopping its Swift does not touch), in a fresh bucket. `benchBackends` is what `npm run bench` calls; run this file
// directly for the backends alone:
//
//   node bench/backends.ts [--size GIB] [--backends fs,ipfs,s3] [--concurrency N]
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { createAgent, stow, wado } from './client.ts';
import { planStudy } from './generate.ts';
import { serveNode } from './node-process.ts';
import { startRssSampler } from './rss.ts';
import type { ScratchSpace } from './scratch.ts';

export type Backend = 'fs' | 'ipfs' | 's3';
export const BACKENDS: readonly Backend[] = ['fs', 'ipfs', 's3'];

export interface BackendBenchOptions {
  /** Study size in GiB (multi-frame Enhanced MR instances). Default 1. */
  gib?: number;
  /** Default all three, fs first (the reference). */
  backends?: readonly Backend[];
  /** STOW requests in flight (one instance per request). Default 1. */
  concurrency?: number;
  /** S3-compatible endpoint; default: the local Swift, started if it is not running. */
  s3Endpoint?: string;
  /** Where the nodes' data directories go (the disk under test). Default the OS temp directory. */
  workDir?: string;
  /** Where each node's data goes when it is done; default: removed at once. */
  scratch?: ScratchSpace;
  log?: (line: string) => void;
}

export interface BackendBenchRow {
  backend: Backend;
  operation: 'ingest (STOW)' | 'retrieve (WADO study)';
  bytes: number;
  seconds: number;
  MBps: number;
  /** This backend's MB/s over fs's for the same operation (fs must be in the run). */
  ratioToFs: number | null;
  nodePeakRssMiB: number;
  nodeCpuSeconds: number | null;
  ok: boolean;
  note?: string;
}

/**
 * The repository's Swift scripts (test/support/s3.ts runs the same). A path to a service's shell
 * scripts, not a module import: the benchmark imports no test code.
 */
const SWIFT = join(import.meta.dirname, '..', 'test', 'services', 's3-swift');
/** start.sh keeps its daemons, data and chosen ports (`ports`) here; not the test suites' directory. */
const SWIFT_BASE_DIR = process.env.DICOM_VAULT_BENCH_SWIFT_DIR ?? join(tmpdir(), 'dicom-vault-bench-swift');
const SWIFT_CREDENTIALS = { accessKeyId: 'test:tester', secretAccessKey: 'testing' };

const round = (n: number, d = 1): number => Math.round(n * 10 ** d) / 10 ** d;

export async function benchBackends(options: BackendBenchOptions = {}): Promise<BackendBenchRow[]> {
  const gib = options.gib ?? 1;
  const concurrency = options.concurrency ?? 1;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const study = planStudy({ kind: 'multiframe', totalBytes: Math.round(gib * 2 ** 30), seed: 7 });
  const rows: BackendBenchRow[] = [];
  for (const backend of options.backends ?? BACKENDS) {
    const env = backend === 's3' ? await s3Environment(options.s3Endpoint, log) : {};
    const dataDir = await mkdtemp(join(options.workDir ?? tmpdir(), `dicom-vault-bench-${backend}-`));
    const node = await serveNode(dataDir, ['--store', backend], env);
    const agent = createAgent();
    try {
      log(`${backend}: STOW ${study.instances.length} instances, ${round(study.totalBytes / 2 ** 30, 2)} GiB`);
      let sampler = startRssSampler(node.pid);
      const ing = await stow({ baseUrl: node.url, study, perRequest: 1, concurrency, agent });
      let rss = sampler.stop();
      rows.push({
        backend,
        operation: 'ingest (STOW)',
        bytes: ing.bytes,
        seconds: round(ing.seconds, 2),
        MBps: round(ing.bytes / 1e6 / ing.seconds),
        ratioToFs: null,
        nodePeakRssMiB: rss.peakRssMiB,
        nodeCpuSeconds: rss.cpuSeconds,
        ok: ing.failures.length === 0 && ing.stored === study.instances.length,
        ...(ing.failures.length > 0 ? { note: ing.failures.slice(0, 2).join('; ') } : {}),
      });
      log(`${backend}: WADO the study back`);
      sampler = startRssSampler(node.pid);
      // Not hashed by the client (it would be the bottleneck); correctness is the tests' job.
      const ret = await wado({ baseUrl: node.url, studyInstanceUID: study.studyInstanceUID, expect: study, verify: false });
      rss = sampler.stop();
      rows.push({
        backend,
        operation: 'retrieve (WADO study)',
        bytes: ret.partBytes,
        seconds: round(ret.seconds, 2),
        MBps: round(ret.partBytes / 1e6 / ret.seconds),
        ratioToFs: null,
        nodePeakRssMiB: rss.peakRssMiB,
        nodeCpuSeconds: rss.cpuSeconds,
        ok: ret.status === 200 && ret.parts === study.instances.length && ret.partBytes === study.totalBytes,
        ...(ret.mismatches.length > 0 ? { note: ret.mismatches.slice(0, 2).join('; ') } : {}),
      });
    } finally {
      agent.destroy();
      await node.stop();
      if (options.scratch) await options.scratch.release(dataDir);
      else await rm(dataDir, { recursive: true, force: true });
    }
  }
  for (const row of rows) {
    const fs = rows.find((r) => r.backend === 'fs' && r.operation === row.operation);
    row.ratioToFs = fs ? round(row.MBps / fs.MBps, 2) : null;
  }
  return rows;
}

/**
 * The environment of a node on the S3 store: starts the local Swift when it is the target, and
 * makes a fresh bucket.
 */
export async function s3Environment(endpoint: string | undefined, log: (line: string) => void): Promise<Record<string, string>> {
  let target = endpoint;
  if (target === undefined) {
    log(`s3: starting the local Swift s3api server (test/services/s3-swift/start.sh ${SWIFT_BASE_DIR}; returns at once when it runs)`);
    await promisify(execFile)('bash', [join(SWIFT, 'start.sh'), SWIFT_BASE_DIR], { timeout: 300_000 });
    target = `http://127.0.0.1:${swiftPort(await readFile(join(SWIFT_BASE_DIR, 'ports'), 'utf8'))}`;
  }
  const bucket = `dv-bench-${Date.now().toString(36)}`;
  const client = new S3Client({
    endpoint: target,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: SWIFT_CREDENTIALS,
    requestChecksumCalculation: 'WHEN_REQUIRED',
  });
  // The Swift proxy answers its healthcheck a moment before its back-end servers accept writes.
  for (let attempt = 1; ; attempt++) {
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      break;
    } catch (err) {
      if (attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  client.destroy();
  return {
    DICOM_VAULT_S3_ENDPOINT: target,
    DICOM_VAULT_S3_BUCKET: bucket,
    DICOM_VAULT_S3_CHECKSUMS: 'when_required',
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: SWIFT_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: SWIFT_CREDENTIALS.secretAccessKey,
  };
}

/** The S3 port start.sh chose, from its `ports` file (shell assignments: PORT=...). */
export function swiftPort(ports: string): number {
  const m = /^PORT=(\d+)$/m.exec(ports);
  if (!m) throw new Error(`no PORT=... in ${join(SWIFT_BASE_DIR, 'ports')}`);
  return Number(m[1]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1' },
      backends: { type: 'string', default: BACKENDS.join(',') },
      concurrency: { type: 'string', default: '1' },
    },
  });
  const rows = await benchBackends({
    gib: Number(values.size),
    backends: values.backends!.split(',') as Backend[],
    concurrency: Number(values.concurrency),
  });
  console.table(rows.map(({ note: _note, ...r }) => r));
  if (rows.some((r) => !r.ok)) process.exitCode = 1;
}
