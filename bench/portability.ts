// The portability benchmark (issue 25): export and import throughput of a patient with one large
// study (--gib), as one sealed patient archive (src/transfer/patient-archive.ts), against plain
// `cp` of the same archive file in the same run: what moving the bytes costs on this disk, beside
// what the export (every block read back and verified, then written) and the import (the file read
// twice: checked whole first, then stored; every instance decrypted and re-scanned to rebuild the
// catalog; the audit proofs checked) add to it. In process (openVault, ingest, StudyWriter) on the
// fs store, so the figures are the archive's, not HTTP's.
//
// cp writes without fsync, like the export (the archive is renamed into place, not synced); the
// import's block store is flushed (fsync) before the catalog takes the studies, as every import is.
// All three read a file the page cache may hold: the figures are the software's more than the disk's.
//
//   node bench/portability.ts [--gib 1] [--json]   (npm run bench -- --erasure runs it too)
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { ingestInstance, keysOncePerStudy } from '../ingest/instance.ts';
import { resolveNodeOptions } from '../src/shell/config.ts';
import { createLogger } from '../src/shell/log.ts';
import { exportPatient } from '../src/shell/patient-export.ts';
import { patientEvidenceCheck } from '../src/shell/patient-import.ts';
import { openVault } from '../src/shell/vault.ts';
import { loadOrCreateTransportKey, TRANSPORT_KEY_FILE } from '../src/transfer/car.ts';
import { importPatientArchive } from '../src/transfer/patient-archive.ts';
import { planStudy } from './generate.ts';

export interface PortabilityBenchRow {
  what: string;
  instances: number;
  /** The study's DICOM bytes. */
  studyBytes: number;
  /** The archive file's size: what the three figures below move. */
  archiveBytes: number;
  blocks: number;
  exportMs: number;
  importMs: number;
  cpMs: number;
  exportMBps: number;
  importMBps: number;
  cpMBps: number;
  /** Audit inclusion proofs the import checked. */
  proofsChecked: number;
  ingestMs: number;
}

const PATIENT = 'BENCH-PORT';
/** Instances committed per study version while the patient is stored. */
const COMMIT_EVERY = 200;

const mbps = (bytes: number, ms: number): number => Math.round((bytes / 1e6 / (ms / 1000)) * 10) / 10;

export async function runPortabilityBench(options: { gib?: number; workDir?: string } = {}): Promise<PortabilityBenchRow> {
  const gib = options.gib ?? 1;
  const work = await mkdtemp(join(options.workDir ?? tmpdir(), 'dicom-vault-portability-bench-'));
  try {
    const aOptions = resolveNodeOptions({ 'data-dir': join(work, 'a') }, {});
    const bOptions = resolveNodeOptions({ 'data-dir': join(work, 'b') }, {});
    const a = await openVault(aOptions, createLogger('silent'));
    const b = await openVault(bOptions, createLogger('silent'));
    try {
      // 16 MiB instances (2048 x 4096, 16 bits): 64 of them per GiB, as the erasure benchmark's.
      const study = planStudy({ kind: 'single', instances: Math.max(1, Math.round(gib * 64)), rows: 2048, columns: 4096, seed: 2520, patientId: PATIENT });
      const keys = keysOncePerStudy(a.keys);
      const ingestStart = performance.now();
      let batch = [];
      for (const inst of study.instances) {
        batch.push(await ingestInstance(inst.open(), { store: a.store, keys }));
        if (batch.length === COMMIT_EVERY) {
          await a.writer.commit(study.studyInstanceUID, batch);
          batch = [];
        }
      }
      if (batch.length > 0) await a.writer.commit(study.studyInstanceUID, batch);
      const ingestMs = performance.now() - ingestStart;

      const transportKey = loadOrCreateTransportKey(join(bOptions.dataDir, TRANSPORT_KEY_FILE));
      const archive = join(work, 'patient.car');
      let t = performance.now();
      const exported = await exportPatient(a, { id: PATIENT, issuer: null }, transportKey.publicKey, archive, 'bench');
      const exportMs = performance.now() - t;
      const archiveBytes = (await stat(archive)).size;

      const copy = join(work, 'patient-copy.car');
      t = performance.now();
      await promisify(execFile)('cp', [archive, copy]);
      const cpMs = performance.now() - t;
      await rm(copy);

      const evidence = await patientEvidenceCheck(bOptions);
      t = performance.now();
      const imported = await importPatientArchive(
        { store: b.store, catalog: b.catalog, keys: b.keys, transportKey, checkEvidence: evidence.check },
        archive,
      ).finally(() => evidence.close());
      const importMs = performance.now() - t;
      if (imported.studies[0]?.instances !== study.instances.length)
        throw new Error(`imported ${imported.studies[0]?.instances ?? 0} instances, not ${study.instances.length}`);
      const audit = (imported.verified as { audit: { proofs: number } }).audit;
      return {
        what: `${gib} GiB`,
        instances: study.instances.length,
        studyBytes: study.totalBytes,
        archiveBytes,
        blocks: exported.blocks,
        exportMs: Math.round(exportMs),
        importMs: Math.round(importMs),
        cpMs: Math.round(cpMs),
        exportMBps: mbps(archiveBytes, exportMs),
        importMBps: mbps(archiveBytes, importMs),
        cpMBps: mbps(archiveBytes, cpMs),
        proofsChecked: audit.proofs,
        ingestMs: Math.round(ingestMs),
      };
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export function formatPortabilityBench(r: PortabilityBenchRow): string {
  return [
    'portability of a patient (one sealed archive, fs store, in process): export and import against cp of the same file',
    `${r.what}: ${r.instances} instances, archive ${(r.archiveBytes / 1e6).toFixed(0)} MB in ${r.blocks} blocks`,
    `  export  ${`${r.exportMs} ms`.padStart(9)}  ${`${r.exportMBps} MB/s`.padStart(12)}`,
    `  import  ${`${r.importMs} ms`.padStart(9)}  ${`${r.importMBps} MB/s`.padStart(12)}  (${r.proofsChecked} audit proofs checked)`,
    `  cp      ${`${r.cpMs} ms`.padStart(9)}  ${`${r.cpMBps} MB/s`.padStart(12)}`,
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { gib: { type: 'string' }, json: { type: 'boolean' } } });
  const row = await runPortabilityBench(values.gib !== undefined ? { gib: Number(values.gib) } : {});
  process.stdout.write(`${values.json ? JSON.stringify(row, null, 2) : formatPortabilityBench(row)}\n`);
}
