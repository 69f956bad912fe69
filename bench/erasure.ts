// The erasure benchmark (issue 25): the time to erase a patient, until the keys are gone (from
// then on nothing of the patient can be decrypted anywhere) and until the blocks are freed, for
// a patient with one large study (--gib) and for one with many small instances (--instances).
// In process (openVault, ingest, StudyWriter, ErasureService) on the fs store, so the figures are
// the erasure's alone, not HTTP's.
//
//   node bench/erasure.ts [--gib 1] [--instances 10000] [--json]   (npm run bench -- --erasure runs it)
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { planStudy, type StudySpec } from './generate.ts';
import { ingestInstance, keysOncePerStudy } from '../ingest/instance.ts';
import { resolveNodeOptions } from '../src/shell/config.ts';
import { createLogger } from '../src/shell/log.ts';
import { openVault } from '../src/shell/vault.ts';

export interface ErasureBenchRow {
  what: string;
  instances: number;
  bytes: number;
  blocks: number;
  /** From the erasure's start until the keys and salts are destroyed (keys.db's WAL truncated). */
  keysGoneMs: number;
  /** ...until the catalog rows are purged. */
  catalogGoneMs: number;
  /** ...until every block is deleted (the erasure's end, certificate signed). */
  blocksFreedMs: number;
  ingestMs: number;
}

/** Instances committed per study version while the patient is stored. */
const COMMIT_EVERY = 200;

async function measure(what: string, spec: StudySpec, workDir: string): Promise<ErasureBenchRow> {
  const dataDir = await mkdtemp(join(workDir, 'dicom-vault-erasure-bench-'));
  const marks = new Map<string, number>();
  let t0 = 0;
  try {
    const vault = await openVault(resolveNodeOptions({ 'data-dir': dataDir }, {}), createLogger('silent'), {
      afterErasureStep: (step) => void marks.set(step, performance.now() - t0),
    });
    try {
      const study = planStudy({ ...spec, patientId: 'BENCH-ERASE' });
      const keys = keysOncePerStudy(vault.keys);
      const started = performance.now();
      let batch = [];
      for (const inst of study.instances) {
        batch.push(await ingestInstance(inst.open(), { store: vault.store, keys }));
        if (batch.length === COMMIT_EVERY) {
          await vault.writer.commit(study.studyInstanceUID, batch);
          batch = [];
        }
      }
      if (batch.length > 0) await vault.writer.commit(study.studyInstanceUID, batch);
      const ingestMs = performance.now() - started;
      t0 = performance.now();
      const cert = await vault.erasure.erase({ kind: 'patient', patientId: 'BENCH-ERASE' }, { requestedBy: 'bench' });
      const total = performance.now() - t0;
      return {
        what,
        instances: study.instances.length,
        bytes: study.totalBytes,
        blocks: cert.studies.reduce((n, s) => n + s.blocks, 0),
        keysGoneMs: Math.round(marks.get('keys') ?? Number.NaN),
        catalogGoneMs: Math.round(marks.get('catalog') ?? Number.NaN),
        blocksFreedMs: Math.round(total),
        ingestMs: Math.round(ingestMs),
      };
    } finally {
      await vault.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

export async function runErasureBench(options: { gib?: number; instances?: number; workDir?: string } = {}): Promise<ErasureBenchRow[]> {
  const workDir = options.workDir ?? tmpdir();
  const gib = options.gib ?? 1;
  const instances = options.instances ?? 10_000;
  return [
    // 16 MiB instances (2048 x 4096, 16 bits): 64 of them per GiB.
    await measure(`${gib} GiB`, { kind: 'single', instances: Math.max(1, Math.round(gib * 64)), rows: 2048, columns: 4096, seed: 25 }, workDir),
    await measure(`${instances} instances`, { kind: 'single', instances, rows: 64, columns: 64, seed: 26 }, workDir),
  ];
}

export function formatErasureBench(rows: readonly ErasureBenchRow[]): string {
  return [
    'erasure of a patient (fs store, in process): time from its start until the keys are gone, the catalog rows are gone, the blocks are freed',
    '              case  instances       MB   blocks  keys gone  catalog gone  blocks freed  (ingest)',
    ...rows.map(
      (r) =>
        `${r.what.padStart(18)}  ${String(r.instances).padStart(9)}  ${(r.bytes / 1e6).toFixed(0).padStart(7)}  ${String(r.blocks).padStart(7)}  ${`${r.keysGoneMs} ms`.padStart(9)}  ${`${r.catalogGoneMs} ms`.padStart(12)}  ${`${r.blocksFreedMs} ms`.padStart(12)}  (${r.ingestMs} ms)`,
    ),
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { gib: { type: 'string' }, instances: { type: 'string' }, json: { type: 'boolean' } } });
  const rows = await runErasureBench({
    ...(values.gib !== undefined ? { gib: Number(values.gib) } : {}),
    ...(values.instances !== undefined ? { instances: Number(values.instances) } : {}),
  });
  process.stdout.write(`${values.json ? JSON.stringify(rows, null, 2) : formatErasureBench(rows)}\n`);
}
