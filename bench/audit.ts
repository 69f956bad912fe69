// Audit log benchmark (issue 24): entries appended per second with heads signed, the wait of a
// request for its entry to be on disk (what the access seam adds before serving), QIDO and frame
// latencies with the log off and on (in each design, nodes side by side), proof sizes, bytes of
// log per access, and gas per anchored head (anvil). `npm run bench -- --scenario audit` runs it
// all (runAuditBench) and keeps the figures with the other results. Real parts: SQLite audit.db (WAL, synchronous=FULL) in a temp
// directory, AES-256-GCM sealing, Ed25519 heads.
//
//   node bench/audit.ts [--entries 20000] [--runs 3] [--part all|append|latency|proofs|gas] [--concurrency 1]
//
// Proof sizes: measured on a real log at 10^3 entries; at 10^6 and 10^9 they follow from the
// tree's shape alone (an RFC 9162 proof's length depends only on the index and the sizes), so
// they are computed exactly over a tree whose nodes are all one dummy hash: no log of that size
// is built.
import { randomBytes } from 'node:crypto';
import { CID } from 'multiformats/cid';
import { bytesToHex, formatEther, parseGwei } from 'viem';
import { mnemonicToAccount } from 'viem/accounts';
import { startAnvil } from '../anchor/anvil.ts';
import { createChainClient } from '../anchor/chain/client.ts';
import { deployAnchorContract } from '../anchor/chain/deploy-contract.ts';
import { sendAnchorTransaction } from '../anchor/chain/send-anchor-transaction.ts';
import { MerkleTree } from '../anchor/merkle.ts';
import { encodeNode } from '../src/format/dag.ts';
import { DEFAULT_BENCH_GAS_PRICE_GWEI } from './anchor.ts';

/** anvil's well-known development mnemonic: a private chain started for the benchmark only. */
const DEV_MNEMONIC = 'test test test test test test test test test test test junk';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { planStudy } from './generate.ts';
import { resolveNodeOptions } from '../src/shell/config.ts';
import { createLogger, logAuditSink } from '../src/shell/log.ts';
import { startNode } from '../src/shell/server.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { AuditRecord } from '../src/audit/entry.ts';
import { HeadSigner } from '../src/audit/head.ts';
import { AuditLog } from '../src/audit/log.ts';
import { SqliteAuditLogStore } from '../src/audit/store.ts';
import { SqliteAuditKeyStore } from '../src/audit/subject-keys.ts';
import { consistencyProof, HASH_SIZE, inclusionProof } from '../src/audit/tree.ts';

const { values } = import.meta.main
  ? parseArgs({
      options: {
        entries: { type: 'string', default: '20000' },
        runs: { type: 'string', default: '3' },
        part: { type: 'string', default: 'all' },
        concurrency: { type: 'string', default: '1' },
      },
    })
  : { values: { entries: '20000', runs: '3', part: 'all', concurrency: '1' } };
/** all, or one of append, latency, proofs (each well under a minute). */
const PART = values.part;
const ENTRIES = Number(values.entries);
const RUNS = Number(values.runs);
/** Latency part: requests sent to a node at once (a viewer asks for about 6). */
const CONCURRENCY = Number(values.concurrency);

const APPEND_CASES = [
  ['heads every 2 s (the default), 100 requests per turn', 2_000, 200],
  ['a head after every batch, 100 requests per turn', 0, 200],
  ['a head after every batch, 10 requests per turn', 0, 20],
] as const;

/** What an access through the seam records: the entry before serving, and how it ended. */
function accessPair(i: number): [AuditRecord, AuditRecord] {
  const study = `2.25.${100000000000 + (i % 5000)}`;
  const access: AuditRecord = {
    kind: 'access',
    who: { id: 'user:dr.smith', roles: ['grantee'], method: 'token', name: 'dr.smith' },
    what: { action: 'retrieve', study, series: `${study}.1`, instance: `${study}.1.${i % 300}`, dataType: 'frames' },
    where: { address: '10.1.2.3', method: 'GET', url: `/dicom-web/studies/${study}/series/${study}.1/instances/${study}.1.${i % 300}/frames/1` },
    why: 'grant 6f1c2a8e-4b7d-4f0e-9a61-2c3d4e5f6a7b',
  };
  return [access, { ...access, kind: 'outcome', what: { ...access.what, status: 200, bytes: 524_800, complete: true }, ref: i }];
}

function open(dir: string, headIntervalMs: number) {
  const store = SqliteAuditLogStore.open(join(dir, 'audit.db'));
  const keys = SqliteAuditKeyStore.open(join(dir, 'audit-keys.db'), randomBytes(32));
  const log = new AuditLog({ store, keys, signer: HeadSigner.loadOrCreate(join(dir, 'audit-signing.key')), origin: 'bench' }, { headIntervalMs });
  const subjects = Array.from({ length: 50 }, (_, p) => keys.subjectFor({ id: `PAT-${p}`, issuer: null }));
  return {
    store,
    keys,
    log,
    subjects,
    close() {
      log.close();
      store.close();
      keys.close();
    },
  };
}

function stats(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s.at(-1)! };
}

/** Entries/s appending `ENTRIES` entries as a busy node does: many requests per event-loop turn. */
async function appendRate(headIntervalMs: number, concurrency: number, entries = ENTRIES): Promise<{ rate: number; heads: number; bytesPerAccess: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'dv-bench-audit-'));
  const o = open(dir, headIntervalMs);
  try {
    const started = performance.now();
    for (let i = 0; i < entries; i += concurrency) {
      const waits: Promise<number>[] = [];
      for (let j = i; j < Math.min(entries, i + concurrency); j += 2) {
        const [a, b] = accessPair(j);
        waits.push(o.log.append(a, o.subjects[j % 50]));
        o.log.note(b, o.subjects[j % 50]);
      }
      await Promise.all(waits);
    }
    o.log.flush();
    o.log.signHead();
    const s = performance.now() - started;
    const heads = o.store.heads().length;
    o.close();
    const bytes = ['audit.db', 'audit.db-wal'].reduce((n, f) => n + (statSafe(join(dir, f)) ?? 0), 0);
    return { rate: entries / (s / 1000), heads, bytesPerAccess: bytes / (entries / 2) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function statSafe(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch {
    return undefined;
  }
}

/** The wait of one request for its entry to be on disk, alone (one fsync each) and among 50 at once. */
async function admitLatency(concurrency: number, rounds = 200): Promise<{ median: number; p99: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'dv-bench-audit-'));
  const o = open(dir, 2_000);
  const waits: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      await Promise.all(
        Array.from({ length: concurrency }, async (_, k) => {
          const t = performance.now();
          await o.log.append(accessPair(r * concurrency + k)[0], o.subjects[k % 50]);
          waits.push(performance.now() - t);
        }),
      );
    }
  } finally {
    o.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const s = waits.sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, p99: s[Math.floor(s.length * 0.99)]! };
}

/** Proof sizes over the shape of a tree of n leaves (all nodes one dummy hash): exact lengths, no log built. */
function proofShape(n: number): { inclusionMax: number; inclusionMean: number; consistencyMax: number } {
  const dummy = new Uint8Array(HASH_SIZE);
  const read = () => dummy;
  const samples = [0, 1, n - 1, n - 2, Math.floor(n / 2), Math.floor(n / 3), ...Array.from({ length: 200 }, () => Math.floor(Math.random() * n))].filter(
    (i) => i >= 0 && i < n,
  );
  const inc = samples.map((i) => inclusionProof(read, i, n).length);
  const cons = [1, 2, Math.floor(n / 2), n - 1, Math.floor(n / 3) * 2 + 1, ...Array.from({ length: 100 }, () => 1 + Math.floor(Math.random() * (n - 1)))]
    .filter((m) => m >= 1 && m < n)
    .map((m) => consistencyProof(read, m, n).length);
  return {
    inclusionMax: Math.max(...inc) * HASH_SIZE,
    inclusionMean: (inc.reduce((a, b) => a + b, 0) / inc.length) * HASH_SIZE,
    consistencyMax: Math.max(...cons) * HASH_SIZE,
  };
}

/** The same at 10^3 on a real log: the proofs the node serves. */
async function proofReal(n: number): Promise<{ inclusionMax: number; consistencyMax: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'dv-bench-audit-'));
  const o = open(dir, 2_000);
  try {
    await Promise.all(Array.from({ length: n }, (_, i) => o.log.append(accessPair(i)[0])));
    let inc = 0;
    let cons = 0;
    for (let i = 0; i < n; i++) inc = Math.max(inc, o.log.inclusion(i, n).length);
    for (let m = 1; m < n; m++) cons = Math.max(cons, o.log.consistency(m, n).length);
    return { inclusionMax: inc * HASH_SIZE, consistencyMax: cons * HASH_SIZE };
  } finally {
    o.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A node variant in the latency comparison. */
export interface LatencyVariant {
  label: string;
  /** false: the access seam only logs (no audit log). */
  audit: boolean;
  sync?: 'full' | 'normal';
  /** true: entries committed by the writer thread (--audit-writer thread); else on the main thread. */
  writerThread?: boolean;
}

export const LATENCY_VARIANTS: readonly LatencyVariant[] = [
  { label: 'off', audit: false },
  { label: 'normal, main thread', audit: true, sync: 'normal' },
  { label: 'normal, writer thread', audit: true, sync: 'normal', writerThread: true },
  { label: 'full, main thread', audit: true, sync: 'full' },
  { label: 'full, writer thread', audit: true, sync: 'full', writerThread: true },
];

export interface LatencyFigures {
  variant: LatencyVariant;
  qido: number;
  frame: number;
  /** This variant's median over the `off` variant's, per round: median, min, max. */
  qidoRatio: { median: number; min: number; max: number };
  frameRatio: { median: number; min: number; max: number };
}

/**
 * QIDO and frame latencies of nodes with the audit log off and on in several designs, all
 * running at once on the same study: requests go to each node in turn (one at a time, the order
 * rotated each time), so every variant meets the same load on this shared machine. Ratios are
 * taken per round (each round `perRound` requests to each node) against the `off` node, and
 * reported as their median and spread over the rounds. `concurrency`: requests sent to a node at
 * once each time (each one's latency is a sample).
 */
export async function latencyOnOff(
  variants: readonly LatencyVariant[] = LATENCY_VARIANTS,
  rounds = 8,
  perRound = 30,
  concurrency = 1,
): Promise<LatencyFigures[]> {
  const study = planStudy({ kind: 'single', instances: 1, rows: 512, columns: 512, seed: 2424, patientId: 'BENCH-AUDIT' });
  const inst = study.instances[0]!;
  const chunks: Buffer[] = [];
  for await (const c of inst.open()) chunks.push(c);
  const boundary = 'b-audit-bench';
  const body = Buffer.concat([Buffer.from(`--${boundary}\r\ncontent-type: application/dicom\r\n\r\n`), ...chunks, Buffer.from(`\r\n--${boundary}--\r\n`)]);
  const logger = createLogger('silent');
  const dirs: string[] = [];
  const nodes: Array<{ node: Awaited<ReturnType<typeof startNode>>; token: string }> = [];
  const time = async (url: string, token: string, accept: string): Promise<number> => {
    const t = performance.now();
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${url} answered ${res.status}`);
    return performance.now() - t;
  };
  const samples = variants.map(() => ({ qido: [] as number[][], frame: [] as number[][] }));
  try {
    for (const v of variants) {
      const dir = mkdtempSync(join(tmpdir(), 'dv-bench-audit-node-'));
      dirs.push(dir);
      const options = resolveNodeOptions({ port: '0', 'data-dir': dir, 'dimse-port': 'off', 'audit-sync': v.sync ?? 'normal' }, {});
      const audit = { ...options.audit!, writerThread: v.writerThread === true };
      const node = await startNode({ ...options, audit, port: 0 }, logger, v.audit ? {} : { audit: logAuditSink(logger) });
      const token = node.vault.identity.addUser('bench', ['staff', 'ingest']).token;
      nodes.push({ node, token });
      const stowed = await fetch(`${node.url}/studies`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
          accept: 'application/dicom+json',
        },
        body,
      });
      if (stowed.status !== 200) throw new Error(`STOW answered ${stowed.status}`);
    }
    const urls = nodes.map(({ node }) => ({
      qido: `${node.url}/studies?PatientID=BENCH-AUDIT`,
      frame: `${node.url}/studies/${study.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}/frames/1`,
    }));
    const FRAME = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';
    for (const [k, u] of urls.entries()) {
      await time(u.qido, nodes[k]!.token, 'application/dicom+json'); // warm
      await time(u.frame, nodes[k]!.token, FRAME);
    }
    for (let r = 0; r < rounds; r++) {
      for (const s of samples) {
        s.qido.push([]);
        s.frame.push([]);
      }
      for (let i = 0; i < perRound; i++) {
        for (let j = 0; j < variants.length; j++) {
          const k = (i + j) % variants.length;
          samples[k]!.qido[r]!.push(
            ...(await Promise.all(Array.from({ length: concurrency }, () => time(urls[k]!.qido, nodes[k]!.token, 'application/dicom+json')))),
          );
        }
        for (let j = 0; j < variants.length; j++) {
          const k = (i + j) % variants.length;
          samples[k]!.frame[r]!.push(...(await Promise.all(Array.from({ length: concurrency }, () => time(urls[k]!.frame, nodes[k]!.token, FRAME)))));
        }
      }
    }
  } finally {
    for (const { node } of nodes) await node.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  const med = (xs: number[]) => stats(xs).median;
  const base = variants.findIndex((v) => !v.audit);
  return variants.map((variant, k) => {
    const ratio = (kind: 'qido' | 'frame') => stats(samples[k]![kind].map((round, r) => med(round) / med(samples[base]![kind][r]!)));
    return {
      variant,
      qido: med(samples[k]!.qido.flat()),
      frame: med(samples[k]!.frame.flat()),
      qidoRatio: ratio('qido'),
      frameRatio: ratio('frame'),
    };
  });
}

/**
 * Gas per anchored head: the audit log's head rides as one more leaf in a batch of study roots, so
 * the same batch is sent twice on a private anvil, without the head's leaf and with it, and the
 * difference is what the head costs. The transaction carries only the batch's 32-byte root, so
 * the difference is expected to be nil (or the few gas a root's zero bytes save in calldata).
 */
export async function headGas(batchSizes: readonly number[] = [1, 100, 1_000], gasPriceGwei = DEFAULT_BENCH_GAS_PRICE_GWEI): Promise<AuditGasRow[]> {
  const anvil = await startAnvil({ port: 0 });
  const dir = mkdtempSync(join(tmpdir(), 'dv-bench-audit-gas-'));
  try {
    const client = createChainClient({ rpcUrl: anvil.rpcUrl, account: mnemonicToAccount(DEV_MNEMONIC, { addressIndex: 0 }) });
    const { address: contract, chainId } = await deployAnchorContract({ client });
    // A real signed head of a real log: its CID is the leaf the anchor service adds.
    const o = open(dir, 0);
    await Promise.all(Array.from({ length: 10 }, (_, i) => o.log.append(accessPair(i)[0])));
    const head = o.store.latestHead()!;
    o.close();
    const gasOf = async (leaves: Uint8Array[]): Promise<number> => {
      const sent = await sendAnchorTransaction({ client, chainId, contract, root: bytesToHex(MerkleTree.fromLeaves(leaves).head), onSigned: () => undefined });
      if (sent.status !== 'sent') throw new Error('fresh root reported as anchored');
      return Number((await client.public.waitForTransactionReceipt({ hash: sent.tx.txHash })).gasUsed);
    };
    const rows: AuditGasRow[] = [];
    for (const size of batchSizes) {
      const without: number[] = [];
      const withHead: number[] = [];
      // Three batches each way: a root's zero bytes vary the calldata gas by a few units.
      for (let k = 0; k < 3; k++) {
        const roots = Array.from({ length: size }, (_, i) => encodeNode({ audit: i, salt: randomBytes(16) }).cid.bytes);
        without.push(await gasOf(roots));
        withHead.push(await gasOf([...roots, CID.parse(head.cid).bytes]));
      }
      const perHead = stats(withHead).median - stats(without).median;
      rows.push({
        batchSize: size,
        gasWithout: stats(without),
        gasWithHead: stats(withHead),
        gasPerHead: perHead,
        costPerHead: formatEther(BigInt(Math.max(0, perHead)) * parseGwei(gasPriceGwei)),
      });
    }
    return rows;
  } finally {
    await anvil.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface AuditGasRow {
  /** Study roots in the batch (the head is one more leaf). */
  batchSize: number;
  gasWithout: { median: number; min: number; max: number };
  gasWithHead: { median: number; min: number; max: number };
  /** Median with the head minus median without. */
  gasPerHead: number;
  /** gasPerHead at the stated gas price, in ETH. */
  costPerHead: string;
}

export interface AuditBenchResult {
  entries: number;
  runs: number;
  append: Array<{ label: string; rate: { median: number; min: number; max: number }; heads: number; bytesPerAccess: number }>;
  admit: Array<{ concurrency: number; median: number; p99: number }>;
  latency: LatencyFigures[];
  proofs: { real1000: { inclusionMax: number; consistencyMax: number }; shape: Array<{ n: number; inclusionMax: number; consistencyMax: number }> };
  gasPriceGwei: string;
  gas: AuditGasRow[];
  targets: { appendAtLeast5000: boolean; qidoWithin1_1: boolean };
}

/** The whole audit benchmark (npm run bench -- --scenario audit): each part as the script runs it. */
export async function runAuditBench(
  options: { entries?: number; runs?: number; rounds?: number; perRound?: number; gasPriceGwei?: string; log?: (line: string) => void } = {},
): Promise<AuditBenchResult> {
  const entries = options.entries ?? 20_000;
  const runs = options.runs ?? 3;
  const log = options.log ?? (() => undefined);
  const append: AuditBenchResult['append'] = [];
  for (const [label, interval, concurrency] of APPEND_CASES) {
    const rs: Array<{ rate: number; heads: number; bytesPerAccess: number }> = [];
    for (let r = 0; r < runs; r++) rs.push(await appendRate(interval, concurrency, entries));
    append.push({ label, rate: stats(rs.map((x) => x.rate)), heads: rs[0]!.heads, bytesPerAccess: stats(rs.map((x) => x.bytesPerAccess)).median });
    log(`append, ${label}: ${Math.round(append.at(-1)!.rate.median)} entries/s`);
  }
  const admit: AuditBenchResult['admit'] = [];
  for (const c of [1, 50]) admit.push({ concurrency: c, ...(await admitLatency(c)) });
  log('latency of nodes side by side');
  const latency = await latencyOnOff(LATENCY_VARIANTS, options.rounds ?? 6, options.perRound ?? 20);
  const real1000 = await proofReal(1_000);
  const shape = [1_000, 1_000_000, 1_000_000_000].map((n) => ({ n, ...proofShape(n) }));
  log('gas per anchored head on anvil');
  const gasPriceGwei = options.gasPriceGwei ?? DEFAULT_BENCH_GAS_PRICE_GWEI;
  const gas = await headGas(undefined, gasPriceGwei);
  const best = latency.filter((l) => l.variant.audit && l.variant.sync === 'normal');
  return {
    entries,
    runs,
    append,
    admit,
    latency,
    proofs: { real1000, shape },
    gasPriceGwei,
    gas,
    targets: { appendAtLeast5000: append[0]!.rate.median >= 5_000, qidoWithin1_1: best.some((l) => l.qidoRatio.median <= 1.1) },
  };
}

const r2 = (x: { median: number; min: number; max: number }) => `x${x.median.toFixed(2)} (${x.min.toFixed(2)}–${x.max.toFixed(2)})`;

/** The audit benchmark as Markdown, for the report. */
export function auditMarkdown(r: AuditBenchResult): string {
  const lines = [
    `Appends (${r.runs} runs of ${r.entries} entries, SQLite WAL synchronous=FULL, heads signed):`,
    '',
    '| case | entries/s (median, min–max) | heads | log bytes per access |',
    '|---|---|---|---|',
    ...r.append.map(
      (a) =>
        `| ${a.label} | ${Math.round(a.rate.median)} (${Math.round(a.rate.min)}–${Math.round(a.rate.max)}) | ${a.heads} | ${Math.round(a.bytesPerAccess)} |`,
    ),
    '',
    ...r.admit.map((a) => `Wait for an access entry on disk, ${a.concurrency} at once: median ${a.median.toFixed(2)} ms, p99 ${a.p99.toFixed(2)} ms.`),
    '',
    'Latency, nodes side by side on the same study, requests to each in turn; ratio to the node without the log per round (median, min–max over rounds):',
    '',
    '| audit log | QIDO ms | QIDO ratio | frame ms | frame ratio |',
    '|---|---|---|---|---|',
    ...r.latency.map((l) => `| ${l.variant.label} | ${l.qido.toFixed(2)} | ${r2(l.qidoRatio)} | ${l.frame.toFixed(2)} | ${r2(l.frameRatio)} |`),
    '',
    `Proofs: at 10^3 on a real log inclusion ≤ ${r.proofs.real1000.inclusionMax} B, consistency ≤ ${r.proofs.real1000.consistencyMax} B; from the tree's shape ${r.proofs.shape.map((p) => `10^${Math.round(Math.log10(p.n))}: ${p.inclusionMax} B / ${p.consistencyMax} B`).join(', ')}.`,
    '',
    `Gas per anchored head (anvil, the same batch of study roots sent without and with the head's leaf, 3 each; gas price ${r.gasPriceGwei} gwei):`,
    '',
    '| study roots | gas without | gas with the head | per head | cost per head (ETH) |',
    '|---|---|---|---|---|',
    ...r.gas.map(
      (g) =>
        `| ${g.batchSize} | ${g.gasWithout.median} (${g.gasWithout.min}–${g.gasWithout.max}) | ${g.gasWithHead.median} (${g.gasWithHead.min}–${g.gasWithHead.max}) | ${g.gasPerHead} | ${g.costPerHead} |`,
    ),
    '',
    `Targets: ≥ 5,000 entries/s ${r.targets.appendAtLeast5000 ? 'MET' : 'MISSED'}; QIDO with the log at most x1.1 ${r.targets.qidoWithin1_1 ? 'MET' : 'MISSED'}.`,
  ];
  return `${lines.join('\n')}\n`;
}

// Run as a script (bench/run.ts imports the functions above).
if (import.meta.main) {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`audit log benchmark: ${ENTRIES} entries per run (an access is 2 entries), ${RUNS} runs, SQLite WAL synchronous=FULL in ${tmpdir()}`);
  if (PART === 'all' || PART === 'append') {
    for (const [label, interval, concurrency] of APPEND_CASES) {
      const runs: Array<{ rate: number; heads: number; bytesPerAccess: number }> = [];
      for (let r = 0; r < RUNS; r++) runs.push(await appendRate(interval, concurrency));
      const rate = stats(runs.map((x) => x.rate));
      const bpa = stats(runs.map((x) => x.bytesPerAccess));
      out(
        `append, ${label}: ${Math.round(rate.median)} entries/s (min ${Math.round(rate.min)}, max ${Math.round(rate.max)}), ${runs[0]!.heads} heads signed; log bytes per access ${Math.round(bpa.median)} (min ${Math.round(bpa.min)}, max ${Math.round(bpa.max)})`,
      );
    }
    for (const c of [1, 50]) {
      const l = await admitLatency(c);
      out(`wait for an access entry to be on disk, ${c} at once: median ${l.median.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms`);
    }
  }
  if (PART === 'all' || PART === 'latency') {
    out(`latency of nodes running side by side, ${CONCURRENCY} request(s) at once to each in turn; ratio to \`off\` per round (median, min-max over rounds):`);
    for (const f of await latencyOnOff(LATENCY_VARIANTS, 8, 30, CONCURRENCY)) {
      const r = (x: { median: number; min: number; max: number }) => `x${x.median.toFixed(2)} (${x.min.toFixed(2)}-${x.max.toFixed(2)})`;
      out(`  ${f.variant.label}: QIDO ${f.qido.toFixed(2)} ms ${r(f.qidoRatio)}, frame ${f.frame.toFixed(2)} ms ${r(f.frameRatio)}`);
    }
  }
  if (PART === 'all' || PART === 'gas') {
    for (const g of await headGas()) {
      out(
        `gas, ${g.batchSize} study roots: ${g.gasWithout.median} without the head's leaf, ${g.gasWithHead.median} with it: ${g.gasPerHead} per anchored head (${g.costPerHead} ETH at ${DEFAULT_BENCH_GAS_PRICE_GWEI} gwei)`,
      );
    }
  }
  if (PART === 'all' || PART === 'proofs') {
    const real = await proofReal(1_000);
    out(`proofs at 10^3 (real log): inclusion max ${real.inclusionMax} B, consistency max ${real.consistencyMax} B`);
    for (const n of [1_000, 1_000_000, 1_000_000_000]) {
      const p = proofShape(n);
      out(
        `proofs at 10^${Math.round(Math.log10(n))} (from the tree's shape): inclusion max ${p.inclusionMax} B (mean ${Math.round(p.inclusionMean)} B), consistency max ${p.consistencyMax} B`,
      );
    }
  }
}
