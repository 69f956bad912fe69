// Audit log benchmark (issue 24): entries appended per second with heads signed, the wait of a
// request for its entry to be on disk (what the access seam adds before serving), proof sizes,
// and bytes of log per access. Real parts: SQLite audit.db (WAL, synchronous=FULL) in a temp
// directory, AES-256-GCM sealing, Ed25519 heads.
//
//   node bench/audit.ts [--entries 20000] [--runs 3] [--part all|append|latency|proofs]
//
// Proof sizes: measured on a real log at 10^3 entries; at 10^6 and 10^9 they follow from the
// tree's shape alone (an RFC 9162 proof's length depends only on the index and the sizes), so
// they are computed exactly over a tree whose nodes are all one dummy hash: no log of that size
// is built.
import { randomBytes } from 'node:crypto';
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

const { values } = parseArgs({
  options: { entries: { type: 'string', default: '20000' }, runs: { type: 'string', default: '3' }, part: { type: 'string', default: 'all' } },
});
/** all, or one of append, latency, proofs (each well under a minute). */
const PART = values.part;
const ENTRIES = Number(values.entries);
const RUNS = Number(values.runs);

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
async function appendRate(headIntervalMs: number, concurrency: number): Promise<{ rate: number; heads: number; bytesPerAccess: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'dv-bench-audit-'));
  const o = open(dir, headIntervalMs);
  try {
    const started = performance.now();
    for (let i = 0; i < ENTRIES; i += concurrency) {
      const waits: Promise<number>[] = [];
      for (let j = i; j < Math.min(ENTRIES, i + concurrency); j += 2) {
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
    return { rate: ENTRIES / (s / 1000), heads, bytesPerAccess: bytes / (ENTRIES / 2) };
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

/**
 * QIDO and frame latencies of one node with the audit log on (every access on disk before it is
 * served) and off (accesses only logged), in alternating rounds on the same study, sequential
 * requests, median of each.
 */
async function latencyOnOff(sync: 'full' | 'normal', rounds = 6, perRound = 40): Promise<{ qido: [number, number]; frame: [number, number] }> {
  const dir = mkdtempSync(join(tmpdir(), 'dv-bench-audit-node-'));
  const options = resolveNodeOptions({ port: '0', 'data-dir': dir, 'dimse-port': 'off', 'audit-sync': sync }, {});
  const logger = createLogger('silent');
  const off = await startNode({ ...options, port: 0 }, logger, { audit: logAuditSink(logger) });
  const token = off.vault.identity.addUser('bench', ['staff', 'ingest']).token;
  const study = planStudy({ kind: 'single', instances: 1, rows: 512, columns: 512, seed: 2424, patientId: 'BENCH-AUDIT' });
  const inst = study.instances[0]!;
  const chunks: Buffer[] = [];
  for await (const c of inst.open()) chunks.push(c);
  const boundary = 'b-audit-bench';
  const body = Buffer.concat([Buffer.from(`--${boundary}\r\ncontent-type: application/dicom\r\n\r\n`), ...chunks, Buffer.from(`\r\n--${boundary}--\r\n`)]);
  const stowed = await fetch(`${off.url}/studies`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
      accept: 'application/dicom+json',
    },
    body,
  });
  if (stowed.status !== 200) throw new Error(`STOW answered ${stowed.status}`);
  await off.close();
  const offAgain = async () => startNode({ ...options, port: 0 }, logger, { audit: logAuditSink(logger) });
  const time = async (url: string, accept: string): Promise<number> => {
    const t = performance.now();
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${url} answered ${res.status}`);
    return performance.now() - t;
  };
  const samples = { qido: [[], []] as number[][], frame: [[], []] as number[][] };
  try {
    for (let r = 0; r < rounds; r++) {
      for (const [k, start] of [
        [0, () => startNode({ ...options, port: 0 }, logger)],
        [1, offAgain],
      ] as const) {
        const node = await start();
        try {
          const qido = `${node.url}/studies?PatientID=BENCH-AUDIT`;
          const frame = `${node.url}/studies/${study.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}/frames/1`;
          await time(qido, 'application/dicom+json'); // warm
          for (let i = 0; i < perRound; i++) {
            samples.qido[k]!.push(await time(qido, 'application/dicom+json'));
            samples.frame[k]!.push(await time(frame, 'multipart/related; type="application/octet-stream"; transfer-syntax=*'));
          }
        } finally {
          await node.close();
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const med = (xs: number[]) => stats(xs).median;
  return { qido: [med(samples.qido[0]!), med(samples.qido[1]!)], frame: [med(samples.frame[0]!), med(samples.frame[1]!)] };
}

const out = (s: string) => process.stdout.write(`${s}\n`);
out(`audit log benchmark: ${ENTRIES} entries per run (an access is 2 entries), ${RUNS} runs, SQLite WAL synchronous=FULL in ${tmpdir()}`);
if (PART === 'all' || PART === 'append') {
  for (const [label, interval, concurrency] of [
    ['heads every 2 s (the default), 100 requests per turn', 2_000, 200],
    ['a head after every batch, 100 requests per turn', 0, 200],
    ['a head after every batch, 10 requests per turn', 0, 20],
  ] as const) {
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
  for (const sync of ['normal', 'full'] as const) {
    const lat = await latencyOnOff(sync);
    out(
      `latency, audit log on (--audit-sync ${sync}) vs off (same node, alternating rounds, medians): QIDO ${lat.qido[0].toFixed(2)} vs ${lat.qido[1].toFixed(2)} ms (x${(lat.qido[0] / lat.qido[1]).toFixed(2)}), frame ${lat.frame[0].toFixed(2)} vs ${lat.frame[1].toFixed(2)} ms (x${(lat.frame[0] / lat.frame[1]).toFixed(2)})`,
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
