// The benchmark's two systems, each started fresh on empty storage for one run of a scenario: a
// dicom-vault node (runOurs) and Orthanc as the peer (runOrthanc), driven over DICOMweb
// (scenarios.ts exercise) or, in the dimse scenario, by storescu (dimse.ts). Apart from run.ts,
// which plans the scenarios and writes the results: these start, drive, measure and stop servers.
import { mkdirSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { s3Environment } from './backends.ts';
import { dimseIngest, NODE_AE, ORTHANC_AE } from './dimse.ts';
import { OURS, ORTHANC, type SystemRun } from './figures.ts';
import { serveNode } from './node-process.ts';
import type { BenchOptions } from './options.ts';
import { freePort, startOrthanc } from './orthanc.ts';
import { diskUsage, measureFootprint, type Footprint } from './scale.ts';
import { describe, exercise, type ScenarioPlan } from './scenarios.ts';
import type { ScratchSpace } from './scratch.ts';

/** What a run of a system uses of the benchmark run around it (run.ts owns both). */
export interface RunContext {
  log: (line: string) => void;
  /** Where a finished run's data directory is released. */
  scratch: ScratchSpace;
}

/**
 * A fresh node on an empty data directory; the data directory measured after it stops. With
 * `dimseDirs` (the dimse scenario), its Storage SCP on a free port takes the studies from storescu.
 */
export async function runOurs(
  plan: ScenarioPlan,
  o: BenchOptions,
  workDir: string,
  footprints: Map<string, Footprint>,
  { log, scratch }: RunContext,
  dimseDirs?: string[],
): Promise<SystemRun> {
  const dataDir = await mkdtemp(join(workDir, `dicom-vault-bench-${plan.id}-`));
  const env: NodeJS.ProcessEnv = {};
  if (o.store === 's3') Object.assign(env, await s3Environment(undefined, (l) => log(`s3: ${l}`)));
  // NODE_OPTIONS reaches the node process (bin/dicom-vault.js keeps the environment when it
  // re-executes itself); the profile is written when it exits after SIGTERM.
  if (o.cpuProf !== undefined) {
    mkdirSync(o.cpuProf, { recursive: true });
    env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${resolve(o.cpuProf)}`.trim();
  }
  const detail = `dicom-vault, ${o.store} store`;
  let run: SystemRun;
  try {
    const dimsePort = dimseDirs ? await freePort() : undefined;
    const dimseArgs = dimsePort === undefined ? [] : ['--dimse-port', String(dimsePort), '--ae-title', NODE_AE];
    const node = await serveNode(dataDir, ['--store', o.store, ...dimseArgs], env);
    try {
      run =
        dimseDirs && dimsePort !== undefined
          ? await dimseIngest(
              { system: OURS, detail, host: '127.0.0.1', port: dimsePort, calledAeTitle: NODE_AE, url: node.url, pid: node.pid },
              plan.studies,
              dimseDirs,
              { storescu: o.storescu, log },
            )
          : await exercise({ system: OURS, detail, url: node.url, pid: node.pid }, plan, log);
    } finally {
      await node.stop();
    }
    try {
      // S3 keeps the blocks elsewhere; the local directory would be only the catalog.
      if (o.store !== 's3') run.storedBytes = await diskUsage(dataDir);
      if (o.store === 'fs') footprints.set(plan.id, await measureFootprint(dataDir));
    } catch (err) {
      run.errors.push(`measuring the data directory: ${describe(err)}`);
    }
  } catch (err) {
    log(`dicom-vault: ${describe(err)}`);
    run ??= { system: OURS, detail, ingest: null, retrieve: null, qido: null, seriesMetadata: null, frames: null, storedBytes: null, errors: [] };
    run.errors.push(describe(err));
  } finally {
    if (!o.keep) await scratch.release(dataDir);
  }
  return run;
}

/**
 * A fresh Orthanc with empty storage for every scenario, as the reference runs did; with
 * `dimseDirs`, its own DIMSE SCP takes the studies from storescu.
 */
export async function runOrthanc(
  plan: ScenarioPlan,
  workDir: string,
  keep: boolean,
  { log, scratch }: RunContext,
  dimseDirs?: string[],
  storescu?: string,
): Promise<SystemRun> {
  // A directory of its own for every run: a repeat must not start on the last one's files.
  const dir = await mkdtemp(join(workDir, `orthanc-bench-${plan.id}-`));
  let run: SystemRun = {
    system: ORTHANC,
    detail: '',
    ingest: null,
    retrieve: null,
    qido: null,
    seriesMetadata: null,
    frames: null,
    storedBytes: null,
    errors: [],
  };
  try {
    const dimsePort = dimseDirs ? await freePort() : undefined;
    const orthanc = await startOrthanc(dir, {
      log: (l) => log(`orthanc: ${l}`),
      ...(dimsePort === undefined ? {} : { config: orthancDimseConfig(dimsePort) }),
    });
    const detail =
      dimsePort === undefined
        ? `Orthanc ${orthanc.version} (DICOMweb plugin ${orthanc.dicomWebVersion})`
        : `Orthanc ${orthanc.version} (its DIMSE SCP; DICOMweb plugin ${orthanc.dicomWebVersion} to count)`;
    try {
      run =
        dimseDirs && dimsePort !== undefined
          ? await dimseIngest(
              { system: ORTHANC, detail, host: '127.0.0.1', port: dimsePort, calledAeTitle: ORTHANC_AE, url: orthanc.url, pid: orthanc.pid },
              plan.studies,
              dimseDirs,
              { storescu: storescu!, log },
            )
          : await exercise({ system: ORTHANC, detail, url: orthanc.url, pid: orthanc.pid }, plan, log);
    } finally {
      await orthanc.stop();
    }
    run.storedBytes = await diskUsage(orthanc.storageDir);
  } catch (err) {
    log(`Orthanc: ${describe(err)}`);
    run.errors.push(describe(err));
  } finally {
    if (!keep) await scratch.release(dir);
  }
  return run;
}

/**
 * Orthanc's DIMSE SCP for the dimse scenario: on `port`, accepting storescu whatever it calls
 * itself (no modality is declared) and whatever AE title it calls; its other DICOM settings are
 * Orthanc 1.10's defaults (16 KiB PDUs, 4 DIMSE threads).
 */
function orthancDimseConfig(port: number): Record<string, unknown> {
  return {
    DicomServerEnabled: true,
    DicomAet: ORTHANC_AE,
    DicomPort: port,
    DicomCheckCalledAet: false,
    DicomAlwaysAllowStore: true,
    DicomAlwaysAllowEcho: true,
    DicomCheckModalityHost: false,
  };
}
