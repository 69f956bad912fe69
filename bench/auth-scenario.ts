// The `auth` scenario of `npm run bench` (issue 23): what identity and the patient's grants cost
// per request, and how fast a revocation takes effect. One data directory, one data set; nodes
// alternate between identity off (`--open`, loopback only) and on, round after round, so that a
// slow minute of this shared VM falls on both. With identity on, a staff account (every study) and
// a grantee (one series, under a grant the patient signed with a key file) call in turn.
//
// Timed, per mode: a QIDO study search, one frame of one instance (a different instance each
// time, checked against the generated frame), and the metadata of the granted series (1,000
// instances by default). Reported: median and p95 of each, and against the open node the added
// median (ms) and the ratio of medians with 95% bootstrap intervals and the per-round ratios.
//
// Revocation: a grantee reads the granted series over WADO-RS at a viewer's pace; the patient
// revokes the grant through the node's patient API (a session opened with the key file) or with
// `dicom-vault patient revoke` in its own process; timed from the revocation to the client
// seeing its stream end, and to the first request of a poller (every POLL_MS) refused.
//
// The accounts, the patient's enrollment, key file and first grant are made with the CLI, as an
// operator and a patient would (`user add`, `patient enroll`, `patient register`, `patient grant`).
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { readKeyFile, signSession, signStatement, type KeyFile } from '../src/grants/signing.ts';
import { createAgent, qido, stow, wadoFrames } from './client.ts';
import type { TargetCheck } from './figures.ts';
import { percentile } from './figures.ts';
import { planStudy, type GeneratedStudy } from './generate.ts';
import { BIN, serveNode, type ServedNode } from './node-process.ts';
import { formatNumber, markdownTable } from './report.ts';
import { MAX_METADATA_BYTES } from './scenarios.ts';
import type { ScratchSpace } from './scratch.ts';

export const AUTH_MODES = ['open', 'staff', 'grantee'] as const;
export type AuthMode = (typeof AUTH_MODES)[number];
export const AUTH_OPS = ['qido', 'frame', 'metadata'] as const;
export type AuthOp = (typeof AUTH_OPS)[number];
const OP_LABEL: Record<AuthOp, string> = {
  qido: 'QIDO /studies?PatientID=',
  frame: 'one frame (WADO-RS frames)',
  metadata: 'series metadata',
};

/** Timed requests per round, mode and operation. */
export const AUTH_SAMPLES: Record<AuthOp, number> = { qido: 60, frame: 40, metadata: 10 };
/** Untimed requests of each operation and mode at the start of each node (JIT, caches). */
const WARMUP = 5;
/** The viewer's pace while a revocation comes: bytes per second read from the stream. */
export const STREAM_BYTES_PER_SECOND = 8e6;
/** The poller's interval, ms: its first refused request bounds "the next request refused". */
export const POLL_MS = 10;
/** A stream not cut within this long after its revocation counts as not cut. */
const CUT_TIMEOUT_MS = 10_000;
const BOOTSTRAP_ITERATIONS = 2_000;

const PATIENT = 'BENCH-AUTH-1';
const OTHER_PATIENT = 'BENCH-AUTH-2';
const STAFF = 'bench.staff';
const GRANTEE = 'bench.grantee';
const STREAMER = 'bench.stream';
const DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*';

export interface AuthOptions {
  instances: number;
  rounds: number;
  revocations: number;
  store: string;
  env: NodeJS.ProcessEnv;
  workDir: string;
  scratch: ScratchSpace;
  keep: boolean;
  log: (line: string) => void;
  /** Timed requests per round (default AUTH_SAMPLES). */
  samples?: Partial<Record<AuthOp, number>>;
  /** The viewer's pace (default STREAM_BYTES_PER_SECOND): the series must outlast a CLI process's start at it. */
  streamBytesPerSecond?: number;
}

export interface AuthLatency {
  median: number;
  p95: number;
  n: number;
  /** The median of each round. */
  roundMedians: number[];
  failures: number;
}

export interface AuthComparison {
  op: AuthOp;
  mode: Exclude<AuthMode, 'open'>;
  /** median(mode) - median(open), ms, and its 95% bootstrap interval. */
  addedMs: number;
  addedInterval: [number, number];
  /** median(mode) / median(open), and its 95% bootstrap interval. */
  ratio: number;
  ratioInterval: [number, number];
  /** The ratio of medians within each round. */
  roundRatios: number[];
}

export interface RevocationTrial {
  via: 'node' | 'cli';
  /** Revocation to the node closing the stream (its audit record of the response, not complete), ms; null: none seen. */
  nodeCutMs: number | null;
  /** Revocation to the client seeing the stream end, ms; null: not cut within CUT_TIMEOUT_MS. */
  cutMs: number | null;
  /** Revocation to the first refused (404) answer of the poller, ms. */
  refusedMs: number | null;
  /** Revocation to its acknowledgement: the API's answer, or the CLI's exit. */
  ackMs: number;
  /** The CLI process from spawn to exit, ms (cli only). */
  cliMs?: number;
  /** Bytes the client still received after the revocation (what the kernel's buffers held, and what the node sent). */
  bytesAfter: number;
  /** Requests sent after the revocation was acknowledged that were still answered 200: must be 0. */
  allowedAfterAck: number;
  complete: boolean;
  error?: string;
}

export interface AuthResult {
  instances: number;
  seriesBytes: number;
  rounds: number;
  latencies: Record<AuthOp, Record<AuthMode, AuthLatency>>;
  comparisons: AuthComparison[];
  revocations: RevocationTrial[];
  streamBytesPerSecond: number;
  pollMs: number;
  seconds: number;
  errors: string[];
}

// ---------- statistics ----------

/** A small seeded PRNG (mulberry32): the bootstrap gives the same intervals for the same samples. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function resampledMedian(xs: readonly number[], rnd: () => number, scratch: number[]): number {
  for (let i = 0; i < xs.length; i++) scratch[i] = xs[Math.floor(rnd() * xs.length)]!;
  return percentile(scratch, 50);
}

/**
 * Added median and ratio of medians of `a` over `base`, each with a 95% percentile-bootstrap
 * interval (both samples resampled independently).
 */
export function compareMedians(
  a: readonly number[],
  base: readonly number[],
  iterations = BOOTSTRAP_ITERATIONS,
): { added: number; addedInterval: [number, number]; ratio: number; ratioInterval: [number, number] } {
  if (a.length === 0 || base.length === 0) return { added: NaN, addedInterval: [NaN, NaN], ratio: NaN, ratioInterval: [NaN, NaN] };
  const ma = percentile(a, 50);
  const mb = percentile(base, 50);
  const rnd = prng(0x5eed);
  const sa = new Array<number>(a.length);
  const sb = new Array<number>(base.length);
  const added: number[] = [];
  const ratio: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const x = resampledMedian(a, rnd, sa);
    const y = resampledMedian(base, rnd, sb);
    added.push(x - y);
    ratio.push(x / y);
  }
  return {
    added: ma - mb,
    addedInterval: [percentile(added, 2.5), percentile(added, 97.5)],
    ratio: ma / mb,
    ratioInterval: [percentile(ratio, 2.5), percentile(ratio, 97.5)],
  };
}

const r2 = (n: number): number => Math.round(n * 100) / 100;
const r3 = (n: number): number => Math.round(n * 1000) / 1000;

export function summarizeAuth(samples: number[][], failures: number): AuthLatency {
  const all = samples.flat();
  return {
    median: r2(percentile(all, 50)),
    p95: r2(percentile(all, 95)),
    n: all.length,
    roundMedians: samples.map((s) => r2(percentile(s, 50))),
    failures,
  };
}

// ---------- the scenario ----------

/** The CLI, as an operator or a patient runs it on the node's data directory. */
function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { DICOM_VAULT_CHAIN: 'none', DICOM_VAULT_DIMSE_PORT: 'off', ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr, ms: performance.now() - t0 }));
  });
}

async function cliJson<T>(args: string[], env: NodeJS.ProcessEnv): Promise<T> {
  const r = await cli([...args, '--json'], env);
  if (r.code !== 0) throw new Error(`dicom-vault ${args.slice(0, 2).join(' ')} exited ${r.code}: ${r.stderr.trim().slice(0, 300)}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as T;
}

interface Setup {
  tokens: { staff: string; grantee: string; streamer: string };
  keyFile: string;
  key: KeyFile;
}

export async function runAuthScenario(o: AuthOptions): Promise<AuthResult> {
  const { log } = o;
  const started = performance.now();
  const samples = { ...AUTH_SAMPLES, ...o.samples };
  const dataDir = await mkdtemp(join(o.workDir, 'dicom-vault-bench-auth-'));
  const keyDir = await mkdtemp(join(o.workDir, 'dicom-vault-bench-auth-patient-'));
  const nodeFlags = ['--data-dir', dataDir, '--store', o.store];
  const errors: string[] = [];
  const times: Record<AuthOp, Record<AuthMode, number[][]>> = {
    qido: { open: [], staff: [], grantee: [] },
    frame: { open: [], staff: [], grantee: [] },
    metadata: { open: [], staff: [], grantee: [] },
  };
  const failed: Record<AuthOp, Record<AuthMode, number>> = {
    qido: { open: 0, staff: 0, grantee: 0 },
    frame: { open: 0, staff: 0, grantee: 0 },
    metadata: { open: 0, staff: 0, grantee: 0 },
  };
  const failureNotes: string[] = [];
  // The granted series of PATIENT's study, a second series of the same study the grant leaves out,
  // and another patient's study: the grantee's searches and counts have something to filter.
  const series = planStudy({ kind: 'single', instances: o.instances, seed: 400, patientId: PATIENT });
  const sibling = planStudy({ kind: 'single', instances: 20, seed: 401, patientId: PATIENT, studyInstanceUID: series.studyInstanceUID });
  const other = planStudy({ kind: 'single', instances: 20, seed: 402, patientId: OTHER_PATIENT });
  let setup: Setup | undefined;
  const revocations: RevocationTrial[] = [];
  try {
    for (let round = 0; round < o.rounds; round++) {
      // The open node first in even rounds, the node with identity first in odd ones; the data
      // is stored by the first (open) node, the accounts are made before the first identity node.
      const order: Array<'open' | 'identity'> = round % 2 === 0 ? ['open', 'identity'] : ['identity', 'open'];
      for (const kind of order) {
        const node = await serveNode(dataDir, ['--store', o.store], o.env, { open: kind === 'open' });
        try {
          if (round === 0 && kind === 'open') {
            log(`auth: STOW ${formatNumber(series.totalBytes / 2 ** 20)} MiB (${o.instances} + 40 instances) to an open node`);
            const agent = createAgent(4);
            try {
              for (const s of [series, sibling, other]) {
                const r = await stow({ baseUrl: node.url, study: s, perRequest: 100, concurrency: 1, agent });
                if (r.stored !== s.instances.length) throw new Error(`STOW stored ${r.stored} of ${s.instances.length}: ${r.failures.slice(0, 2).join('; ')}`);
              }
            } finally {
              agent.destroy();
            }
          }
          if (kind === 'identity' && setup === undefined) setup = await makeAccounts(o, nodeFlags, keyDir, series);
          log(`auth: round ${round + 1} of ${o.rounds}, identity ${kind === 'open' ? 'off (--open)' : 'on (staff, grantee)'}`);
          const modes: AuthMode[] = kind === 'open' ? ['open'] : ['staff', 'grantee'];
          await sampleRound(node, series, modes, setup, samples, times, failed, failureNotes);
        } finally {
          await node.stop();
        }
      }
    }
    if (o.revocations > 0 && setup !== undefined) {
      // A node of its own, logging its audit records (info): the moment it closed a cut response.
      const audit = new AuditLines();
      const node = await serveNode(dataDir, ['--store', o.store], o.env, { open: false, logLevel: 'info', onLog: (c) => audit.push(c) });
      try {
        revocations.push(...(await revocationTrials(node, o, nodeFlags, series, setup, audit)));
      } finally {
        await node.stop();
      }
    }
  } catch (err) {
    errors.push(err instanceof Error ? err.message : String(err));
    log(`auth: ${errors.at(-1)}`);
  } finally {
    if (!o.keep) {
      await o.scratch.release(dataDir);
      await o.scratch.release(keyDir);
    }
  }
  errors.push(...failureNotes.slice(0, 5));
  const latencies = {} as AuthResult['latencies'];
  const comparisons: AuthComparison[] = [];
  for (const op of AUTH_OPS) {
    latencies[op] = {} as Record<AuthMode, AuthLatency>;
    for (const mode of AUTH_MODES) latencies[op][mode] = summarizeAuth(times[op][mode], failed[op][mode]);
    for (const mode of ['staff', 'grantee'] as const) {
      const c = compareMedians(times[op][mode].flat(), times[op].open.flat());
      comparisons.push({
        op,
        mode,
        addedMs: r3(c.added),
        addedInterval: [r3(c.addedInterval[0]), r3(c.addedInterval[1])],
        ratio: r3(c.ratio),
        ratioInterval: [r3(c.ratioInterval[0]), r3(c.ratioInterval[1])],
        roundRatios: times[op][mode].map((s, i) => r3(percentile(s, 50) / percentile(times[op].open[i] ?? [], 50))),
      });
    }
  }
  return {
    instances: o.instances,
    seriesBytes: series.totalBytes,
    rounds: o.rounds,
    latencies,
    comparisons,
    revocations,
    streamBytesPerSecond: o.streamBytesPerSecond ?? STREAM_BYTES_PER_SECOND,
    pollMs: POLL_MS,
    seconds: Math.round((performance.now() - started) / 100) / 10,
    errors,
  };
}

/** Accounts and the first grant, with the CLI on the data directory (the open node has stored the data). */
async function makeAccounts(o: AuthOptions, nodeFlags: string[], keyDir: string, series: GeneratedStudy): Promise<Setup> {
  o.log('auth: accounts, enrollment, key file and a series grant with the CLI');
  const user = async (name: string, role: string): Promise<string> =>
    (await cliJson<{ token: string }>(['user', 'add', name, '--role', role, ...nodeFlags], o.env)).token;
  const staff = await user(STAFF, 'staff');
  const grantee = await user(GRANTEE, 'grantee');
  const streamer = await user(STREAMER, 'grantee');
  const { code } = await cliJson<{ code: string }>(['patient', 'enroll', '--patient-id', PATIENT, ...nodeFlags], o.env);
  // The patient's key file lives apart from the node's data directory, as on the patient's own machine.
  const keyFile = join(keyDir, 'patient.key');
  await cliJson(['patient', 'register', '--code', code, '--key-file', keyFile, ...nodeFlags], o.env);
  await cliJson(
    ['patient', 'grant', '--key-file', keyFile, '--to', GRANTEE, '--series', `${series.studyInstanceUID}/${series.seriesInstanceUID}`, ...nodeFlags],
    o.env,
  );
  return { tokens: { staff, grantee, streamer }, keyFile, key: readKeyFile(keyFile) };
}

/** One round of one node: warm-up, then each operation, the modes taking turns request by request. */
async function sampleRound(
  node: ServedNode,
  series: GeneratedStudy,
  modes: AuthMode[],
  setup: Setup | undefined,
  samples: Record<AuthOp, number>,
  times: Record<AuthOp, Record<AuthMode, number[][]>>,
  failed: Record<AuthOp, Record<AuthMode, number>>,
  notes: string[],
): Promise<void> {
  const agent = createAgent(4);
  const token = (mode: AuthMode): { authorization?: string } =>
    mode === 'open' ? {} : { authorization: mode === 'staff' ? setup!.tokens.staff : setup!.tokens.grantee };
  const n = series.instances.length;
  let frameCursor = 0;
  const once = async (op: AuthOp, mode: AuthMode): Promise<{ ms: number; ok: boolean; note: string }> => {
    if (op === 'qido') {
      const r = await qido(node.url, `/studies?PatientID=${PATIENT}`, { agent, ...token(mode) });
      return { ms: r.ms, ok: r.status === 200 && r.results === 1, note: `QIDO: HTTP ${r.status}, ${r.results} studies` };
    }
    if (op === 'metadata') {
      const r = await qido(node.url, `/studies/${series.studyInstanceUID}/series/${series.seriesInstanceUID}/metadata`, {
        agent,
        maxResponseBytes: MAX_METADATA_BYTES,
        ...token(mode),
      });
      return { ms: r.ms, ok: r.status === 200 && r.results === n, note: `metadata: HTTP ${r.status}, ${r.results} instances` };
    }
    // Instances in a fixed scattered order, the same in every round and mode.
    const inst = series.instances[(frameCursor++ * 7919) % n]!;
    const r = await wadoFrames(node.url, series.studyInstanceUID, series.seriesInstanceUID, inst.sopInstanceUID, [1], { expect: inst, ...token(mode) });
    return { ms: r.ms, ok: r.ok, note: `frame: HTTP ${r.status} ${r.mismatches.slice(0, 1).join('')}` };
  };
  try {
    for (const op of AUTH_OPS) {
      for (let i = 0; i < WARMUP; i++) for (const mode of modes) await once(op, mode);
      frameCursor = 0;
      const round: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m, []]));
      for (let i = 0; i < samples[op]; i++) {
        // Staff and grantee take turns, each first every other time.
        for (const mode of i % 2 === 0 ? modes : [...modes].reverse()) {
          const r = await once(op, mode);
          if (r.ok) round[mode]!.push(r.ms);
          else {
            failed[op][mode]++;
            if (notes.length < 5) notes.push(`${mode}, ${op}: ${r.note}`);
          }
        }
      }
      for (const mode of modes) times[op][mode].push(round[mode]!);
    }
  } finally {
    agent.destroy();
  }
}

// ---------- revocation ----------

interface Stream {
  firstBytes: Promise<void>;
  ended: Promise<{ at: number; complete: boolean }>;
  bytes: () => number;
  destroy: () => void;
}

/** Reads `url` at about `bytesPerSecond`; `ended` resolves (Date.now()) when the response ends or breaks. */
function slowStream(url: string, token: string, bytesPerSecond: number): Stream {
  let bytes = 0;
  let req: http.ClientRequest | undefined;
  let resolveFirst!: () => void;
  let rejectFirst!: (e: Error) => void;
  const firstBytes = new Promise<void>((res, rej) => {
    resolveFirst = res;
    rejectFirst = rej;
  });
  const ended = new Promise<{ at: number; complete: boolean }>((resolve) => {
    req = http.get(url, { agent: false, headers: { accept: DICOM_ACCEPT, authorization: `Bearer ${token}` } }, (res) => {
      if (res.statusCode !== 200) rejectFirst(new Error(`stream: HTTP ${res.statusCode}`));
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        resolveFirst();
        res.pause();
        setTimeout(() => res.resume(), (chunk.length / bytesPerSecond) * 1000);
      });
      res.on('close', () => resolve({ at: Date.now(), complete: res.complete }));
      res.on('error', () => {});
    });
    req.on('error', (e) => {
      rejectFirst(e);
      resolve({ at: Date.now(), complete: false });
    });
  });
  firstBytes.catch(() => {});
  return { firstBytes, ended, bytes: () => bytes, destroy: () => req?.destroy() };
}

interface Poller {
  stop: () => Promise<void>;
  /** Answers: when sent and answered (Date.now()), and the status. */
  answers: Array<{ sent: number; at: number; status: number }>;
}

/** GETs `url` as `token` one after another, POLL_MS apart, until stopped. */
function poll(url: string, token: string): Poller {
  const answers: Poller['answers'] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const sent = Date.now();
      try {
        const res = await fetch(url, { headers: { accept: 'application/dicom+json', authorization: `Bearer ${token}` } });
        await res.arrayBuffer();
        answers.push({ sent, at: Date.now(), status: res.status });
      } catch {
        answers.push({ sent, at: Date.now(), status: 0 });
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  })();
  return {
    answers,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/** A patient session through the node's API: the challenge signed with the key file. */
async function patientSession(api: string, key: KeyFile): Promise<string> {
  const c = (await (await fetch(`${api}/patient/session/challenge`, { method: 'POST' })).json()) as { challenge: string };
  const res = await fetch(`${api}/patient/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ account: key.account, keyId: key.keyId, challenge: c.challenge, signature: signSession(key.node!, c.challenge, key) }),
  });
  if (res.status !== 200) throw new Error(`patient session: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
  return ((await res.json()) as { token: string }).token;
}

/** A grant to the streamer (search, view, download of the series), drafted by the node and signed here with the key file. */
async function streamGrant(api: string, session: string, key: KeyFile, series: GeneratedStudy): Promise<string> {
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${session}` };
  const draft = await fetch(`${api}/patient/grants/draft`, {
    method: 'POST',
    headers,
    body: JSON.stringify({
      to: `user:${STREAMER}`,
      series: [{ study: series.studyInstanceUID, series: series.seriesInstanceUID }],
      actions: ['search', 'view', 'download'],
      until: '+1h',
    }),
  });
  if (draft.status !== 200) throw new Error(`grant draft: HTTP ${draft.status} ${(await draft.text()).slice(0, 200)}`);
  const { statement } = (await draft.json()) as { statement: Parameters<typeof signStatement>[0] };
  const add = await fetch(`${api}/patient/grants`, { method: 'POST', headers, body: JSON.stringify({ statement, proof: signStatement(statement, key) }) });
  if (add.status !== 201) throw new Error(`grant: HTTP ${add.status} ${(await add.text()).slice(0, 200)}`);
  return statement.id;
}

/**
 * The node's audit records of streams (GET of a whole series) it closed before their end, from its
 * log lines (pino JSON on stdout; UIDs in URLs are tagged, so a series retrieval is known by its shape).
 */
class AuditLines {
  #rest = '';
  readonly cuts: number[] = [];
  push(chunk: string): void {
    const lines = (this.#rest + chunk).split('\n');
    this.#rest = lines.pop()!;
    for (const line of lines) {
      if (!line.includes('"audit"')) continue;
      try {
        const e = JSON.parse(line) as { time: number; audit?: { method?: string; url?: string; complete?: boolean } };
        if (e.audit?.method === 'GET' && e.audit.complete === false && /\/series\/[^/?]+$/.test(e.audit.url ?? '')) this.cuts.push(e.time);
      } catch {
        // not a JSON line
      }
    }
  }
}

async function revocationTrials(
  node: ServedNode,
  o: AuthOptions,
  nodeFlags: string[],
  series: GeneratedStudy,
  setup: Setup,
  audit: AuditLines,
): Promise<RevocationTrial[]> {
  const api = `${new URL(node.url).origin}/api`;
  const session = await patientSession(api, setup.key);
  const seriesUrl = `${node.url}/studies/${series.studyInstanceUID}/series/${series.seriesInstanceUID}`;
  const probeUrl = `${seriesUrl}/instances/${series.instances[0]!.sopInstanceUID}/metadata`;
  const pace = o.streamBytesPerSecond ?? STREAM_BYTES_PER_SECOND;
  const trials: RevocationTrial[] = [];
  for (let i = 0; i < 2 * o.revocations; i++) {
    const via: RevocationTrial['via'] = i % 2 === 0 ? 'node' : 'cli';
    o.log(`auth: revocation ${Math.floor(i / 2) + 1} of ${o.revocations} ${via === 'node' ? "through the node's API" : 'with the CLI'}`);
    let stream: Stream | undefined;
    let poller: Poller | undefined;
    try {
      const id = await streamGrant(api, session, setup.key, series);
      stream = slowStream(seriesUrl, setup.tokens.streamer, pace);
      await stream.firstBytes;
      poller = poll(probeUrl, setup.tokens.streamer);
      await new Promise((r) => setTimeout(r, 300));
      let revokedAt: number;
      let ackAt: number;
      let bytesAtRevoke: number;
      let cliMs: number | undefined;
      if (via === 'node') {
        revokedAt = Date.now();
        bytesAtRevoke = stream.bytes();
        const res = await fetch(`${api}/patient/grants/${id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${session}` } });
        await res.arrayBuffer();
        ackAt = Date.now();
        if (res.status !== 200) throw new Error(`revoke: HTTP ${res.status}`);
      } else {
        const r = await cli(['patient', 'revoke', id, '--key-file', setup.keyFile, ...nodeFlags, '--json'], o.env);
        ackAt = Date.now();
        cliMs = r.ms;
        if (r.code !== 0) throw new Error(`dicom-vault patient revoke exited ${r.code}: ${r.stderr.slice(0, 200)}`);
        // The moment the CLI wrote the revocation (this machine's clock, as Date.now()).
        revokedAt = Date.parse((JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { revokedAt: string }).revokedAt);
        bytesAtRevoke = NaN;
      }
      const cut = await Promise.race([stream.ended, new Promise<null>((r) => setTimeout(() => r(null), CUT_TIMEOUT_MS))]);
      // Some more answers after the cut, so that "the next request" is seen even when the cut came first.
      const until = Date.now() + 200;
      while (Date.now() < until && !poller.answers.some((a) => a.sent >= revokedAt && a.status === 404)) await new Promise((r) => setTimeout(r, POLL_MS));
      await poller.stop();
      const refused = poller.answers.find((a) => a.at >= revokedAt && a.status === 404);
      // The audit record is written as the response closes; give the log a moment to arrive.
      for (let k = 0; k < 50 && !audit.cuts.some((t) => t >= revokedAt); k++) await new Promise((r) => setTimeout(r, 20));
      const nodeCut = audit.cuts.find((t) => t >= revokedAt);
      trials.push({
        via,
        nodeCutMs: nodeCut === undefined ? null : nodeCut - revokedAt,
        cutMs: cut === null ? null : Math.max(0, cut.at - revokedAt),
        refusedMs: refused === undefined ? null : refused.at - revokedAt,
        ackMs: ackAt - revokedAt,
        ...(cliMs !== undefined ? { cliMs: Math.round(cliMs) } : {}),
        // The CLI's moment of revocation is known only afterwards: the bytes then are estimated from the pace.
        bytesAfter:
          cut === null ? NaN : Number.isNaN(bytesAtRevoke) ? Math.max(0, Math.round(((cut.at - revokedAt) / 1000) * pace)) : stream.bytes() - bytesAtRevoke,
        allowedAfterAck: poller.answers.filter((a) => a.sent > ackAt && a.status === 200).length,
        complete: cut?.complete ?? false,
      });
    } catch (err) {
      trials.push({
        via,
        nodeCutMs: null,
        cutMs: null,
        refusedMs: null,
        ackMs: NaN,
        bytesAfter: NaN,
        allowedAfterAck: 0,
        complete: false,
        error: err instanceof Error ? err.message : String(err),
      });
    } finally {
      stream?.destroy();
      await poller?.stop();
    }
  }
  return trials;
}

// ---------- report ----------

const ms = (v: number): string => (Number.isFinite(v) ? formatNumber(v) : 'n/a');
const interval = (x: [number, number], digits: number): string => `${x[0].toFixed(digits)} to ${x[1].toFixed(digits)}`;

/** Medians of a trial field over the trials of one path, with min and max. */
function spread(xs: Array<number | null>): string {
  const v = xs.filter((x): x is number => x !== null && Number.isFinite(x));
  if (v.length === 0) return 'n/a';
  return `${ms(percentile(v, 50))} (${ms(Math.min(...v))}–${ms(Math.max(...v))})`;
}

export function authFailed(r: AuthResult): boolean {
  const anyFailed = AUTH_OPS.some((op) => AUTH_MODES.some((m) => r.latencies[op][m].failures > 0 || r.latencies[op][m].n === 0));
  return r.errors.length > 0 || anyFailed || r.revocations.some((t) => t.error !== undefined || t.cutMs === null || t.complete || t.allowedAfterAck > 0);
}

/** The issue's targets: identity adds under 1 ms median; series metadata under a series grant ≤ 1.2× open; a cut within a second. */
export function authTargets(r: AuthResult): TargetCheck[] {
  const scenario = `auth (${r.instances.toLocaleString('en-US')}-instance series)`;
  const out: TargetCheck[] = [];
  for (const c of r.comparisons) {
    out.push({
      target: `identity adds < 1 ms median: ${OP_LABEL[c.op]}, ${c.mode}`,
      scenario,
      measured: `${c.addedMs >= 0 ? '+' : ''}${c.addedMs.toFixed(2)} ms (95% interval ${interval(c.addedInterval, 2)})`,
      met: Number.isFinite(c.addedMs) ? c.addedMs < 1 : null,
    });
  }
  const meta = r.comparisons.find((c) => c.op === 'metadata' && c.mode === 'grantee');
  if (meta) {
    out.push({
      target: 'series metadata under a series grant ≤ 1.2× open',
      scenario,
      measured: `${meta.ratio.toFixed(2)}× (95% interval ${interval(meta.ratioInterval, 2)}; rounds ${meta.roundRatios.map((x) => x.toFixed(2)).join(' / ')})`,
      met: Number.isFinite(meta.ratio) ? meta.ratio <= 1.2 : null,
    });
  }
  for (const via of ['node', 'cli'] as const) {
    const t = r.revocations.filter((x) => x.via === via);
    if (t.length === 0) continue;
    const worst = Math.max(...t.map((x) => (x.nodeCutMs === null ? Infinity : x.nodeCutMs)));
    out.push({
      target: `revocation (${via === 'node' ? "node's API" : 'CLI'}) cuts a running stream within 1 s (the node's close)`,
      scenario,
      measured: `slowest ${Number.isFinite(worst) ? `${formatNumber(worst)} ms` : 'not cut'} of ${t.length}`,
      met: worst < 1_000,
    });
  }
  return out;
}

export function authMarkdown(r: AuthResult): string {
  const out: string[] = [];
  out.push(
    `One data directory: a study of ${r.instances.toLocaleString('en-US')} + 20 single-frame MR instances (${formatNumber(r.seriesBytes / 2 ** 20)} MiB in the granted series) ` +
      `and another patient's study of 20. ${r.rounds} rounds, each an open node (\`--open\`) and a node with identity on, the order alternating; ` +
      'with identity on, a staff token and a grantee (one series, under a grant the patient signed with a key file) take turns request by request. ' +
      `${r.seconds} s in all.`,
    '',
  );
  const rows: string[][] = [];
  for (const op of AUTH_OPS) {
    for (const mode of AUTH_MODES) {
      const l = r.latencies[op][mode];
      const c = r.comparisons.find((x) => x.op === op && x.mode === mode);
      rows.push([
        OP_LABEL[op],
        mode === 'open' ? 'identity off' : mode,
        ms(l.median),
        ms(l.p95),
        l.roundMedians.map(ms).join(' / '),
        c ? `${c.addedMs >= 0 ? '+' : ''}${c.addedMs.toFixed(2)} (${interval(c.addedInterval, 2)})` : '',
        c ? `${c.ratio.toFixed(2)}× (${interval(c.ratioInterval, 2)}; rounds ${c.roundRatios.map((x) => x.toFixed(2)).join(' / ')})` : '',
        `${l.n}${l.failures > 0 ? `, ${l.failures} FAILED` : ''}`,
      ]);
    }
  }
  out.push(
    markdownTable(
      ['request', 'caller', 'median ms', 'p95 ms', 'round medians ms', 'added median ms (95% interval)', 'ratio to open (95% interval; per round)', 'samples'],
      rows,
      ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'right'],
    ),
    '',
  );
  out.push(
    'Intervals: percentile bootstrap of the medians (both samples resampled, 2,000 times). Frames: frame 1 of a different instance each time, ' +
      'one connection per request, checked against the generated frame.',
    '',
  );
  if (r.revocations.length > 0) {
    const paths = (['node', 'cli'] as const).filter((v) => r.revocations.some((t) => t.via === v));
    out.push(
      markdownTable(
        [
          'revoked',
          'trials',
          'to the node cutting the stream, ms',
          'to the client seeing it cut, ms',
          'to the next request refused, ms',
          'to the acknowledgement, ms',
          'bytes after the revocation',
          'allowed after ack',
        ],
        paths.map((via) => {
          const t = r.revocations.filter((x) => x.via === via);
          const errs = t.filter((x) => x.error !== undefined).length;
          return [
            via === 'node' ? "through the node's patient API" : '`dicom-vault patient revoke` (its own process)',
            `${t.length}${errs > 0 ? ` (${errs} FAILED)` : ''}`,
            spread(t.map((x) => x.nodeCutMs)),
            spread(t.map((x) => x.cutMs)),
            spread(t.map((x) => x.refusedMs)),
            `${spread(t.map((x) => x.ackMs))}${via === 'cli' ? `; the process ran ${spread(t.map((x) => x.cliMs ?? null))}` : ''}`,
            spread(t.map((x) => x.bytesAfter)),
            String(t.reduce((a, x) => a + x.allowedAfterAck, 0)),
          ];
        }),
        ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
      ),
      '',
      `Median (min–max), on a node of its own that logs its audit records (info level) after the rounds above. A grantee reads the granted series (WADO-RS, whole instances) at ${formatNumber(r.streamBytesPerSecond / 1e6)} MB/s; ` +
        `a poller asks for one instance's metadata every ${r.pollMs} ms. Timed from the revocation (the API request sent; for the CLI, the time it wrote ` +
        'in the grant) to the node closing the stream (the time of its audit record of that response, not complete), to the client seeing its stream end (after reading what the kernel had buffered: "bytes after"; the CLI\'s estimated from the pace) ' +
        'and to the first refused (404) answer.',
      '',
    );
    for (const t of r.revocations.filter((x) => x.error !== undefined).slice(0, 3)) out.push(`- revocation via ${t.via} failed: ${t.error}`);
  }
  if (r.errors.length > 0) out.push(...r.errors.map((e) => `- error: ${e}`), '');
  return out.join('\n');
}
