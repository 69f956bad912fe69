// The command line of `npm run bench`: parsed and validated once, into plain typed options with
// named defaults, before anything starts. Kept apart from run.ts so that it can be tested without
// starting a node.
import { tmpdir } from 'node:os';
import { parseArgs } from 'node:util';
// A type import only: backends.ts loads the S3 SDK, which parsing arguments does not need.
import type { Backend } from './backends.ts';

export type Scenario = 'huge' | 'small' | 'concurrent' | 'dimse' | 'decode' | 'auth' | 'viewer' | 'audit' | 'soak';
/** Every scenario, in run order. */
export const SCENARIOS: readonly Scenario[] = ['huge', 'small', 'concurrent', 'dimse', 'decode', 'auth', 'viewer', 'audit', 'soak'];
/** What `--scenario all` (the default) runs: the soak lasts half an hour and runs only when named. */
export const ALL_SCENARIOS: readonly Scenario[] = ['huge', 'small', 'concurrent', 'dimse', 'decode', 'auth', 'viewer', 'audit'];
export type Peer = 'orthanc';
/** The block stores (as bench/backends.ts BACKENDS), fs first. */
export const STORES: readonly Backend[] = ['fs', 'ipfs', 's3'];

/** Study sizes of the huge scenario, GiB (the 1, 4 and 16). */
export const DEFAULT_SIZES_GIB: readonly number[] = [1, 4, 16];
/** Instance counts of the small scenario (the range: 1,000 to 10,000). */
export const DEFAULT_INSTANCES: readonly number[] = [1_000, 10_000];
/** Instances per STOW request for small instances (what the Orthanc reference runs used). */
export const DEFAULT_PER_REQUEST = 100;
/** PACS clients pushing at once in the concurrent scenario. */
export const DEFAULT_CONCURRENCY = 4;
/**
 * Largest instance of the huge scenario, GiB: a study is cut into at least 4 instances, and into
 * more when they would be larger than this. 1 GiB is the largest instance Orthanc was seen to
 * take (a probe of growing instances against Debian's Orthanc 1.10: 3.1 GiB RSS at 1 GiB).
 */
export const DEFAULT_MAX_INSTANCE_GIB = 1;
/** Size factor of the machine-limit measurements (bench/limits.ts). */
export const DEFAULT_LIMITS_GIB = 1;
/**
 * Runs of each scenario of small instances, each on a fresh node (and a fresh peer). Such a run
 * lasts seconds, and on these VMs the same code ran at 240-416 inst/s minutes apart: one run is a
 * sample of the VM's speed as much as of the node's. Huge scenarios (minutes each) run once.
 */
export const DEFAULT_REPEAT = 3;
/** dcmtk's C-STORE client, the DIMSE scenario's PACS (Debian package dcmtk). */
export const DEFAULT_STORESCU = '/usr/bin/storescu';
/** Frames per instance of the decode scenario (512 x 512, 12 bits stored in 16). */
export const DEFAULT_DECODE_FRAMES = 100;
/** Instances per transfer syntax of the decode scenario. */
export const DEFAULT_DECODE_INSTANCES = 4;
/** Frame requests in flight in the decode scenario: one per core of these 2-core VMs. */
export const DEFAULT_DECODE_CONCURRENCY = 2;
/** Length of the soak, minutes. */
export const DEFAULT_SOAK_MINUTES = 30;
/**
 * DICOM MB/s the soak's uploading clients aim at together. A soak is about staying up and
 * correct under a steady mix, not about peak rate; at 10 MB/s half an hour stores ~18 GB.
 */
export const DEFAULT_SOAK_INGEST_MBPS = 10;
/** Instances of the granted series in the auth scenario (the 1,000). */
export const DEFAULT_AUTH_INSTANCES = 1_000;
/** Rounds of the auth scenario: an open node, then a node with identity on (the order alternating). */
export const DEFAULT_AUTH_ROUNDS = 3;
/** Revocations the auth scenario times through the node's API, and as many with the CLI. */
export const DEFAULT_AUTH_REVOCATIONS = 3;
/** Instances of the series the viewer scenario opens (issue 27: a 500-instance CT series). */
export const DEFAULT_VIEWER_INSTANCES = 500;
/** Rounds of the viewer scenario: each system started on its stored data, the order alternating. */
export const DEFAULT_VIEWER_ROUNDS = 3;
/** Openings of the series per system and round in the viewer scenario. */
export const DEFAULT_VIEWER_OPENINGS = 3;
/** The largest instance count the generator packs into its pixel patterns. */
const MAX_INSTANCES = 2 ** 24;

export interface BenchOptions {
  scenarios: Scenario[];
  /** Huge scenario: one study per size, GiB. */
  sizesGiB: number[];
  /** Small scenario: one study per count. */
  instances: number[];
  /** Instances per STOW request, small instances (huge ones go one per request). */
  perRequest: number;
  /** Block store of the node in the scenarios. */
  store: Backend;
  /** The backends comparison (bench/backends.ts); null: not run. */
  backends: Backend[] | null;
  /** PACS clients pushing (and viewers fetching) at once in the concurrent scenario. */
  concurrency: number;
  maxInstanceGiB: number;
  peer: Peer | null;
  /** Runs of each scenario of small instances; the median one is reported (DEFAULT_REPEAT). */
  repeat: number;
  /** Measure the machine's limits first (bench/limits.ts). */
  limits: boolean;
  limitsGiB: number;
  /** The anchoring benchmark (bench/anchor.ts). */
  anchor: boolean;
  /** The erasure benchmark (bench/erasure.ts): a patient of --sizes' first GiB, and one of 10,000 instances. */
  erasure: boolean;
  /** JSON results; the chart, report and scale files are written next to it. undefined: bench/out/results-<time>.json */
  out: string | undefined;
  /** Where data directories and scratch files go (the filesystem under test). */
  workDir: string;
  keep: boolean;
  /** Directory for V8 CPU profiles of the node processes. */
  cpuProf: string | undefined;
  /** dcmtk's storescu (the DIMSE scenario). */
  storescu: string;
  decodeFrames: number;
  decodeInstances: number;
  decodeConcurrency: number;
  soakMinutes: number;
  soakIngestMBps: number;
  /** The auth scenario: instances of the granted series, rounds of open and identity nodes, revocations timed per path. */
  authInstances: number;
  authRounds: number;
  authRevocations: number;
  /** The viewer scenario: instances of the series, rounds, openings per system and round. */
  viewerInstances: number;
  viewerRounds: number;
  viewerOpenings: number;
  help: boolean;
}

export const HELP = `npm run bench -- [options]

Scenarios (each on a fresh node with an empty data directory, then on a fresh peer):
  --scenario LIST        huge,small,concurrent,dimse,decode,auth,viewer,audit,soak | all | none (default all:
                         every one but soak)
                           huge:       a few multi-frame instances (Enhanced MR, 512x512x16 bit
                                       frames; at least 4 per study, at most --max-instance-gib each),
                                       one instance per STOW request; frame latency inside one
                           small:      many single-frame MR instances (512x512x16 bit, ~525 KB),
                                       --per-request per STOW request
                           concurrent: --concurrency PACS clients at once, each pushing its own
                                       study (one of the first --instances, and one of the first
                                       --size), then as many viewers fetching them back at once
                           dimse:      C-STORE ingest with dcmtk's storescu (one association per
                                       study, every file of it): the first --instances study,
                                       the first --size study, and --concurrency storescu at once
                                       each with its own small study; files are written to the
                                       work dir first, not timed
                           decode:     frames of JPEG 2000 and JPEG-LS lossless multi-frame
                                       instances fetched decoded (WADO-RS frames, transfer-syntax
                                       1.2.840.10008.1.2.1): all frames of an instance per
                                       request, then one frame per request
                           auth:       identity off (--open) and on, same data, nodes alternating:
                                       QIDO, one frame and the metadata of a --auth-instances
                                       series as staff and as a grantee under a series grant the
                                       patient signed; revocation during a running WADO stream,
                                       through the node's API and with the CLI
                           viewer:     OHIF opening a --viewer-instances series: study QIDO,
                                       series QIDO, series metadata, then every frame over 6
                                       keep-alive connections, the middle image first and its
                                       neighbours outward; time to the first image and to the
                                       whole series, node with identity and audit log on
                           audit:      the audit log: entries appended per second, QIDO and frame
                                       latency with the log off and on (nodes side by side, in
                                       each design), proof sizes, gas per anchored head (anvil)
                           soak:       one node under a mixed load for --soak-minutes: STOW of
                                       small and huge instances, QIDO, WADO of studies and frames,
                                       malformed and abandoned uploads; every stored study
                                       verified at the end (dicom-vault verify, WADO sha256)
  --size LIST            huge study sizes in GiB (default ${DEFAULT_SIZES_GIB.join(',')}; fractions work: 0.25)
  --instances LIST       small study sizes in instances (default ${DEFAULT_INSTANCES.join(',')})
  --per-request N        instances per STOW request for small instances (default ${DEFAULT_PER_REQUEST})
  --concurrency N        PACS clients in the concurrent scenario (default ${DEFAULT_CONCURRENCY})
  --max-instance-gib N   largest huge instance (default ${DEFAULT_MAX_INSTANCE_GIB})
  --repeat N             runs of each scenario of small instances (seconds each), every one on a
                         fresh node and a fresh peer, alternating; the run with the median ingest
                         rate is reported and every run's rate is listed (default ${DEFAULT_REPEAT}).
                         Huge scenarios run once
  --storescu PATH        dcmtk's storescu for the dimse scenario (default ${DEFAULT_STORESCU}); run
                         with TCP_NODELAY=1 (Debian's build otherwise waits on Nagle per instance)
  --decode-frames N      frames per instance in the decode scenario (default ${DEFAULT_DECODE_FRAMES})
  --decode-instances N   instances per transfer syntax in the decode scenario (default ${DEFAULT_DECODE_INSTANCES})
  --decode-concurrency N frame requests in flight in the decode scenario (default ${DEFAULT_DECODE_CONCURRENCY})
  --auth-instances N     instances of the granted series in the auth scenario (default ${DEFAULT_AUTH_INSTANCES})
  --auth-rounds N        rounds of an open node and a node with identity (default ${DEFAULT_AUTH_ROUNDS})
  --auth-revocations N   revocations timed through the node's API, and as many with the CLI
                         (default ${DEFAULT_AUTH_REVOCATIONS}; 0: none)
  --viewer-instances N   instances of the series the viewer scenario opens (default ${DEFAULT_VIEWER_INSTANCES})
  --viewer-rounds N      rounds of the viewer scenario, each system restarted (default ${DEFAULT_VIEWER_ROUNDS})
  --viewer-openings N    openings of the series per system and round (default ${DEFAULT_VIEWER_OPENINGS})
  --soak-minutes N       length of the soak (default ${DEFAULT_SOAK_MINUTES}; 2 for a check)
  --soak-ingest-mbps N   DICOM MB/s the soak's uploaders aim at together (default ${DEFAULT_SOAK_INGEST_MBPS})

Systems:
  --store fs|ipfs|s3     block store of the node (default fs; s3 starts the local Swift)
  --peer orthanc         the same studies pushed to and fetched from Orthanc's DICOMweb (its DIMSE
                         SCP in the dimse scenario, its GDCM plugin decoding in the decode one),
                         a fresh Orthanc per scenario (installed with apt-get when missing; needs
                         root). The soak has no peer
  --backends [LIST]      also ingest and retrieve the first --size study on each block store
                         (default fs,ipfs,s3)
  --anchor               also the anchoring benchmark (gas per batch and per study, receipts)
  --erasure              also the erasure benchmark (a patient of the first --size GiB, and one of
                         10,000 instances: until keys are gone, until blocks are freed), then
                         the portability one (export and import of that patient, against cp)

Limits and output:
  --limits / --no-limits measure the machine's limits first (default on): crypto, disk, loopback
  --limits-gib N         size factor of the limit measurements (default ${DEFAULT_LIMITS_GIB})
  --out FILE             JSON results (default bench/out/results-<time>.json); the chart (.svg),
                         report (.md) and scale projection (.scale.md) go next to it
  --work-dir DIR         data directories and scratch files (default ${tmpdir()}): the disk under test
  --keep                 keep the data directories
  --cpu-prof DIR         a V8 CPU profile of each node process into DIR
  -h, --help             this text

A quick run: npm run bench -- --size 0.25 --instances 200 --concurrency 2 --limits-gib 0.25
A soak check: npm run bench -- --scenario soak --soak-minutes 2 --no-limits
`;

export class BenchUsageError extends Error {
  override readonly name = 'BenchUsageError';
}

/** Parses `npm run bench -- ...` arguments; throws BenchUsageError with a reason. */
export function parseBenchArgs(argv: readonly string[]): BenchOptions {
  const { values } = parseOptions(argv);
  const peer = values.peer;
  if (peer !== undefined && peer !== 'orthanc') throw new BenchUsageError(`--peer: only orthanc is supported, got "${peer}"`);
  return {
    scenarios: parseScenarios(values.scenario),
    sizesGiB: list('--size', values.size, (v) => v > 0 && v <= 1024, 'a size in GiB above 0 (at most 1024)'),
    instances: list(
      '--instances',
      values.instances,
      (v) => Number.isSafeInteger(v) && v >= 1 && v <= MAX_INSTANCES,
      `a whole number from 1 to ${MAX_INSTANCES}`,
    ),
    perRequest: one('--per-request', values['per-request'], (v) => Number.isSafeInteger(v) && v >= 1, 'a whole number >= 1'),
    store: backend('--store', values.store),
    backends: values.backends === undefined ? null : unique(values.backends.split(',').map((b) => backend('--backends', b.trim()))),
    concurrency: one('--concurrency', values.concurrency, (v) => Number.isSafeInteger(v) && v >= 1 && v <= 64, 'a whole number from 1 to 64'),
    // 4 GiB is where OW's 32-bit length ends.
    maxInstanceGiB: one('--max-instance-gib', values['max-instance-gib'], (v) => v > 0 && v < 4, 'a size in GiB above 0 and below 4'),
    peer: peer ?? null,
    repeat: one('--repeat', values.repeat, (v) => Number.isSafeInteger(v) && v >= 1 && v <= 20, 'a whole number from 1 to 20'),
    limits: values.limits,
    limitsGiB: one('--limits-gib', values['limits-gib'], (v) => v > 0 && v <= 64, 'a size factor above 0 (at most 64)'),
    anchor: values.anchor,
    erasure: values.erasure,
    out: values.out,
    workDir: values['work-dir'],
    keep: values.keep,
    cpuProf: values['cpu-prof'],
    storescu: values.storescu,
    decodeFrames: one('--decode-frames', values['decode-frames'], (v) => Number.isSafeInteger(v) && v >= 1 && v <= 10_000, 'a whole number from 1 to 10000'),
    decodeInstances: one(
      '--decode-instances',
      values['decode-instances'],
      (v) => Number.isSafeInteger(v) && v >= 1 && v <= 1000,
      'a whole number from 1 to 1000',
    ),
    decodeConcurrency: one(
      '--decode-concurrency',
      values['decode-concurrency'],
      (v) => Number.isSafeInteger(v) && v >= 1 && v <= 64,
      'a whole number from 1 to 64',
    ),
    soakMinutes: one('--soak-minutes', values['soak-minutes'], (v) => v >= 0.5 && v <= 7 * 24 * 60, 'a number of minutes from 0.5 to 10080 (a week)'),
    soakIngestMBps: one('--soak-ingest-mbps', values['soak-ingest-mbps'], (v) => v > 0 && v <= 10_000, 'a rate in MB/s above 0'),
    authInstances: one(
      '--auth-instances',
      values['auth-instances'],
      (v) => Number.isSafeInteger(v) && v >= 1 && v <= 100_000,
      'a whole number from 1 to 100000',
    ),
    authRounds: one('--auth-rounds', values['auth-rounds'], (v) => Number.isSafeInteger(v) && v >= 1 && v <= 20, 'a whole number from 1 to 20'),
    authRevocations: one('--auth-revocations', values['auth-revocations'], (v) => Number.isSafeInteger(v) && v >= 0 && v <= 50, 'a whole number from 0 to 50'),
    viewerInstances: one(
      '--viewer-instances',
      values['viewer-instances'],
      (v) => Number.isSafeInteger(v) && v >= 1 && v <= 100_000,
      'a whole number from 1 to 100000',
    ),
    viewerRounds: one('--viewer-rounds', values['viewer-rounds'], (v) => Number.isSafeInteger(v) && v >= 1 && v <= 20, 'a whole number from 1 to 20'),
    viewerOpenings: one('--viewer-openings', values['viewer-openings'], (v) => Number.isSafeInteger(v) && v >= 1 && v <= 50, 'a whole number from 1 to 50'),
    help: values.help,
  };
}

/** node:util's parseArgs over the bench's options; a parse error becomes a BenchUsageError. */
function parseOptions(argv: readonly string[]) {
  try {
    return parseArgs({
      args: withBackendsDefault(argv),
      allowNegative: true,
      strict: true,
      options: {
        scenario: { type: 'string', default: 'all' },
        size: { type: 'string', default: DEFAULT_SIZES_GIB.join(',') },
        instances: { type: 'string', default: DEFAULT_INSTANCES.join(',') },
        'per-request': { type: 'string', default: String(DEFAULT_PER_REQUEST) },
        concurrency: { type: 'string', default: String(DEFAULT_CONCURRENCY) },
        'max-instance-gib': { type: 'string', default: String(DEFAULT_MAX_INSTANCE_GIB) },
        repeat: { type: 'string', default: String(DEFAULT_REPEAT) },
        store: { type: 'string', default: 'fs' },
        peer: { type: 'string' },
        backends: { type: 'string' },
        anchor: { type: 'boolean', default: false },
        erasure: { type: 'boolean', default: false },
        limits: { type: 'boolean', default: true },
        'limits-gib': { type: 'string', default: String(DEFAULT_LIMITS_GIB) },
        out: { type: 'string' },
        'work-dir': { type: 'string', default: tmpdir() },
        keep: { type: 'boolean', default: false },
        'cpu-prof': { type: 'string' },
        storescu: { type: 'string', default: DEFAULT_STORESCU },
        'decode-frames': { type: 'string', default: String(DEFAULT_DECODE_FRAMES) },
        'decode-instances': { type: 'string', default: String(DEFAULT_DECODE_INSTANCES) },
        'decode-concurrency': { type: 'string', default: String(DEFAULT_DECODE_CONCURRENCY) },
        'soak-minutes': { type: 'string', default: String(DEFAULT_SOAK_MINUTES) },
        'soak-ingest-mbps': { type: 'string', default: String(DEFAULT_SOAK_INGEST_MBPS) },
        'auth-instances': { type: 'string', default: String(DEFAULT_AUTH_INSTANCES) },
        'auth-rounds': { type: 'string', default: String(DEFAULT_AUTH_ROUNDS) },
        'auth-revocations': { type: 'string', default: String(DEFAULT_AUTH_REVOCATIONS) },
        'viewer-instances': { type: 'string', default: String(DEFAULT_VIEWER_INSTANCES) },
        'viewer-rounds': { type: 'string', default: String(DEFAULT_VIEWER_ROUNDS) },
        'viewer-openings': { type: 'string', default: String(DEFAULT_VIEWER_OPENINGS) },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new BenchUsageError((err as Error).message, { cause: err });
  }
}

/** `--backends` alone (last, or before another option) means all of them. */
export function withBackendsDefault(argv: readonly string[]): string[] {
  const out = [...argv];
  for (let i = 0; i < out.length; i++) {
    if (out[i] !== '--backends') continue;
    const next = out[i + 1];
    if (next === undefined || next.startsWith('-')) out.splice(i + 1, 0, STORES.join(','));
  }
  return out;
}

function parseScenarios(value: string): Scenario[] {
  if (value === 'all') return [...ALL_SCENARIOS];
  if (value === 'none') return [];
  const names = unique(value.split(',').map((s) => s.trim()));
  for (const n of names) {
    if (!(SCENARIOS as readonly string[]).includes(n)) {
      throw new BenchUsageError(`--scenario: unknown scenario "${n}" (${SCENARIOS.join(', ')}, all or none)`);
    }
  }
  // In the order of SCENARIOS, whatever order they were given in.
  return SCENARIOS.filter((s) => names.includes(s));
}

function backend(flag: string, value: string): Backend {
  if (!(STORES as readonly string[]).includes(value)) throw new BenchUsageError(`${flag}: unknown block store "${value}" (${STORES.join(', ')})`);
  return value as Backend;
}

function one(flag: string, value: string, ok: (v: number) => boolean, want: string): number {
  const v = value.trim() === '' ? NaN : Number(value);
  if (!Number.isFinite(v) || !ok(v)) throw new BenchUsageError(`${flag}: "${value}" is not ${want}`);
  return v;
}

/** A comma-separated list, in the order given, without repeats. */
function list(flag: string, value: string, ok: (v: number) => boolean, want: string): number[] {
  const items = value.split(',');
  if (items.length === 0) throw new BenchUsageError(`${flag}: empty list`);
  return unique(items.map((item) => one(flag, item, ok, want)));
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}
