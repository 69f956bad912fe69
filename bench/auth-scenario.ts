import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { readKeyFile } from '../src/grants/signing.ts';
import { createAgent, qido, stow, wadoFrames } from './client.ts';
import { percentile } from './figures.ts';
import { planStudy, type GeneratedStudy } from './generate.ts';
import { serveNode, type ServedNode } from './node-process.ts';
import { formatNumber } from './report.ts';
import { MAX_METADATA_BYTES } from './scenarios.ts';
import {
  AUTH_MODES,
  AUTH_OPS,
  AUTH_SAMPLES,
  compareMedians,
  GRANTEE,
  OTHER_PATIENT,
  PATIENT,
  POLL_MS,
  r3,
  STAFF,
  STREAM_BYTES_PER_SECOND,
  STREAMER,
  summarizeAuth,
  WARMUP,
  type Setup,
  type AuthComparison,
  type AuthLatency,
  type AuthMode,
  type AuthOp,
  type AuthOptions,
  type AuthResult,
  type RevocationTrial,
} from './auth-report.ts';
import { AuditLines, cliJson, revocationTrials } from './auth-revocation.ts';

// ---------- the scenario ----------

/** The CLI, as an operator or a patient runs it on the node's data directory. */

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
