// `npm run bench`: streaming benchmarks over loopback against real server processes, side by
// side with Orthanc (--peer orthanc) and with this machine's limits measured in the same run.
// Studies are generated on the fly (bench/generate.ts): nothing large is written except the
// servers' own storage, which is removed after each scenario. `npm run bench -- --help` lists
// the options (bench/options.ts).
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { formatAnchorBench, runAnchorBench, type AnchorBenchResult } from './anchor.ts';
import { auditMarkdown, runAuditBench, type AuditBenchResult } from './audit.ts';
import { formatErasureBench, runErasureBench, type ErasureBenchRow } from './erasure.ts';
import { formatPortabilityBench, runPortabilityBench, type PortabilityBenchRow } from './portability.ts';
import { benchBackends, s3Environment, type BackendBenchRow } from './backends.ts';
import { renderChart } from './chart.ts';
import {
  chartLimits,
  chartRows,
  checkTargets,
  figureLimits,
  measuredScale,
  medianRun,
  OURS,
  ORTHANC,
  runFailed,
  scenarioFigures,
  type Figure,
  type HugeFootprint,
  type ScenarioResult,
  type SystemRun,
} from './figures.ts';
import { limitsTable, measureLimits, type MachineLimits } from './limits.ts';
import { serveNode } from './node-process.ts';
import { BenchUsageError, HELP, parseBenchArgs, type BenchOptions } from './options.ts';
import { authFailed, authMarkdown, authTargets, type AuthResult } from './auth-report.ts';
import { runAuthScenario } from './auth-scenario.ts';
import { decodeFigures, decodeTargets, runDecodeScenario, type DecodeResult } from './decode-scenario.ts';
import { dimseIngest, NODE_AE, ORTHANC_AE, writeStudyFiles } from './dimse.ts';
import { freePort, startOrthanc } from './orthanc.ts';
import { reportMarkdown, targetsTable } from './publish.ts';
import { formatNumber, ofLimit, ratioText } from './report.ts';
import { diskUsage, measureFootprint, measureHeldCidBytes, projectScale, scaleMarkdown, type Footprint, type MeasuredScale } from './scale.ts';
import { describe, exercise, planScenarios, scenarioHeader, type ScenarioPlan } from './scenarios.ts';
import { ScratchSpace } from './scratch.ts';
import { runSoak } from './soak.ts';
import { runViewerScenario, type ViewerResult } from './viewer.ts';
import { viewerFailed, viewerMarkdown, viewerTargets } from './viewer-report.ts';
import { soakMarkdown, soakTargets, type SoakResult } from './soak-report.ts';

const started = new Date();
const t0 = performance.now();
const log = (line: string): void => {
  process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(5)} s] ${line}\n`);
};

/** Finished scenarios' data: emptied at once, removed when the run is over (scratch.ts says why). */
const scratch = new ScratchSpace();

async function main(): Promise<void> {
  let o: BenchOptions;
  try {
    o = parseBenchArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof BenchUsageError)) throw err;
    process.stderr.write(`${err.message}\n\`npm run bench -- --help\` lists the options.\n`);
    process.exitCode = 2;
    return;
  }
  if (o.help) {
    process.stdout.write(HELP);
    return;
  }
  if (o.scenarios.includes('dimse') && !existsSync(o.storescu)) {
    process.stderr.write(`${o.storescu} not found: the dimse scenario needs dcmtk's storescu (apt-get install dcmtk, or --storescu PATH).\n`);
    process.exitCode = 2;
    return;
  }
  const workDir = resolve(o.workDir);
  await mkdir(workDir, { recursive: true });
  const loadBefore = loadavg();
  const machine = await describeMachine(workDir);
  log(`${machine}; load ${loadBefore.map((x) => x.toFixed(2)).join(' ')}`);

  // Limits first, while nothing else of ours runs; the same filesystem as the data directories.
  let limits: MachineLimits | null = null;
  if (o.limits) {
    log(`measuring the machine's limits (--limits-gib ${o.limitsGiB})`);
    limits = await measureLimits({ workDir, gib: o.limitsGiB, log: (l) => log(`limits: ${l}`) });
  }

  const plans = planScenarios(o);
  const results: ScenarioResult[] = [];
  const footprints = new Map<string, Footprint>();
  let peerName: string | null = null;
  for (const plan of plans) {
    log(`scenario ${plan.label}: ${plan.studies.length} × ${plan.studies[0]!.instances.length} instances`);
    // Scenarios of small instances last seconds: run again (alternating with the peer), report the median run.
    const repeat = plan.shape === 'small' ? o.repeat : 1;
    const ours: SystemRun[] = [];
    const peers: SystemRun[] = [];
    // storescu sends files: the DIMSE scenario's studies are written out first, once for every run of both systems.
    let files: { root: string; dirs: string[] } | undefined;
    if (plan.kind === 'dimse') {
      const root = await mkdtemp(join(workDir, `dicom-vault-bench-${plan.id}-files-`));
      const t = performance.now();
      files = { root, dirs: await writeStudyFiles(plan.studies, root) };
      log(`wrote the studies to ${root} in ${((performance.now() - t) / 1000).toFixed(1)} s (not timed)`);
    }
    try {
      for (let i = 0; i < repeat; i++) {
        if (repeat > 1) log(`run ${i + 1} of ${repeat}`);
        ours.push(await runOurs(plan, o, workDir, footprints, files?.dirs));
        if (o.peer === 'orthanc') peers.push(await runOrthanc(plan, workDir, o.keep, files?.dirs, o.storescu));
      }
    } finally {
      if (files && !o.keep) await scratch.release(files.root);
    }
    // A DIMSE scenario only ingests: no retrieval to miss.
    const retrieves = plan.kind !== 'dimse';
    const runs: SystemRun[] = [medianRun(ours, retrieves)];
    if (peers.length > 0) {
      const peer = medianRun(peers, retrieves);
      if (peer.detail !== '') peerName = peer.detail;
      runs.push(peer);
    }
    results.push({ ...scenarioHeader(plan), runs });
  }

  let decode: DecodeResult | null = null;
  if (o.scenarios.includes('decode')) {
    log(`scenario decode: ${o.decodeInstances} × ${o.decodeFrames} frames per transfer syntax`);
    try {
      // A fresh bucket for every node, as runOurs does.
      const env = async (): Promise<NodeJS.ProcessEnv> => (o.store === 's3' ? await s3Environment(undefined, (l) => log(`s3: ${l}`)) : {});
      decode = await runDecodeScenario({ o, env, workDir, scratch, log });
    } catch (err) {
      log(`decode failed: ${describe(err)}`);
      process.exitCode = 1;
    }
  }

  let auth: AuthResult | null = null;
  if (o.scenarios.includes('auth')) {
    log(`scenario auth: identity off and on, ${o.authRounds} rounds, a ${o.authInstances}-instance series, ${o.authRevocations} revocations each way`);
    try {
      const env = o.store === 's3' ? await s3Environment(undefined, (l) => log(`s3: ${l}`)) : {};
      auth = await runAuthScenario({
        instances: o.authInstances,
        rounds: o.authRounds,
        revocations: o.authRevocations,
        store: o.store,
        env,
        workDir,
        scratch,
        keep: o.keep,
        log,
      });
    } catch (err) {
      log(`auth failed: ${describe(err)}`);
      process.exitCode = 1;
    }
  }

  let viewer: ViewerResult | null = null;
  if (o.scenarios.includes('viewer')) {
    log(`scenario viewer: a ${o.viewerInstances}-instance series opened as OHIF does, ${o.viewerRounds} rounds of ${o.viewerOpenings} openings`);
    try {
      const env = o.store === 's3' ? await s3Environment(undefined, (l) => log(`s3: ${l}`)) : {};
      viewer = await runViewerScenario({
        instances: o.viewerInstances,
        rounds: o.viewerRounds,
        openings: o.viewerOpenings,
        peer: o.peer,
        store: o.store,
        env,
        workDir,
        scratch,
        keep: o.keep,
        ...(o.cpuProf === undefined ? {} : { cpuProf: o.cpuProf }),
        log,
      });
    } catch (err) {
      log(`viewer failed: ${describe(err)}`);
      process.exitCode = 1;
    }
    // The report's systems line names the peer even when no other scenario ran one.
    peerName ??= viewer?.systems[1]?.detail ?? null;
  }

  let audit: AuditBenchResult | null = null;
  if (o.scenarios.includes('audit')) {
    log('scenario audit: appends, latency with the log off and on (nodes side by side), proofs, gas per anchored head');
    try {
      audit = await runAuditBench({ log: (l) => log(`audit: ${l}`) });
    } catch (err) {
      log(`audit failed: ${describe(err)}`);
      process.exitCode = 1;
    }
  }

  let soak: SoakResult | null = null;
  if (o.scenarios.includes('soak')) {
    log(`scenario soak: ${o.soakMinutes} min at ${o.soakIngestMBps} MB/s of uploads, one node`);
    try {
      const env = o.store === 's3' ? await s3Environment(undefined, (l) => log(`s3: ${l}`)) : {};
      soak = await runSoak({ minutes: o.soakMinutes, ingestMBps: o.soakIngestMBps, store: o.store, env, workDir, scratch, keep: o.keep, log });
    } catch (err) {
      log(`soak failed: ${describe(err)}`);
      process.exitCode = 1;
    }
  }

  let backends: BackendBenchRow[] | null = null;
  if (o.backends) {
    log(`block stores ${o.backends.join(', ')}: ${o.sizesGiB[0]} GiB each`);
    try {
      backends = await benchBackends({ gib: o.sizesGiB[0]!, backends: o.backends, workDir, scratch, log: (l) => log(`backends: ${l}`) });
    } catch (err) {
      log(`backends failed: ${describe(err)}`);
      backends = [];
      process.exitCode = 1;
    }
  }
  let anchor: AnchorBenchResult | null = null;
  if (o.anchor) {
    log('anchoring on a local anvil');
    try {
      anchor = await runAnchorBench();
    } catch (err) {
      log(`anchoring failed: ${describe(err)}`);
      process.exitCode = 1;
    }
  }

  let erasure: ErasureBenchRow[] | null = null;
  let portability: PortabilityBenchRow | null = null;
  if (o.erasure) {
    log('erasure of a patient');
    try {
      erasure = await runErasureBench({ gib: o.sizesGiB[0]!, workDir });
      log('portability of a patient (export, import, cp)');
      portability = await runPortabilityBench({ gib: o.sizesGiB[0]!, workDir });
    } catch (err) {
      log(`erasure failed: ${describe(err)}`);
      process.exitCode = 1;
    }
  }

  // ---------- figures and files ----------
  const fl = limits ? figureLimits(limits) : null;
  const figures: Figure[] = [...results.flatMap((s) => scenarioFigures(s, fl)), ...(decode ? decodeFigures(decode, fl?.roundTripMs ?? null) : [])];
  const targets = [
    ...checkTargets(results, fl),
    ...(decode ? decodeTargets(decode) : []),
    ...(auth ? authTargets(auth) : []),
    ...(viewer ? viewerTargets(viewer) : []),
    ...(soak ? soakTargets(soak) : []),
  ];
  const scale = o.store === 'fs' ? scaleFrom(results, footprints) : null;
  const loadAfter = loadavg();

  const out = resolve(
    o.out ??
      join(
        'bench',
        'out',
        `results-${started
          .toISOString()
          .replaceAll(':', '-')
          .replace(/\.\d+Z$/, 'Z')}.json`,
      ),
  );
  const stem = out.replace(/\.json$/, '');
  const files = { json: out, chart: `${stem}.svg`, report: `${stem}.md`, scale: `${stem}.scale.md` };
  mkdirSync(dirname(out), { recursive: true });

  const oursDetail = `dicom-vault (${o.store} store)`;
  const notes = [...runNotes(o, results, limits, loadBefore, loadAfter), ...(decode ? decodeNotes(decode) : [])];
  const wroteChart = results.length > 0;
  if (wroteChart) {
    writeFileSync(
      files.chart,
      renderChart({
        title: o.peer ? 'dicom-vault and Orthanc, same run, same machine' : 'dicom-vault benchmark',
        machine,
        date: started.toISOString().slice(0, 10),
        systems: o.peer ? [OURS, ORTHANC] : [OURS],
        rows: chartRows(results),
        ...(limits ? { limits: chartLimits(limits) } : {}),
        notes: [`npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(), ...notes.slice(0, 2)],
      }),
    );
  }
  const scaleMd = scale ? scaleMarkdown(projectScale(scale)) : null;
  if (scaleMd) writeFileSync(files.scale, scaleMd);
  const report = reportMarkdown({
    started: started.toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine,
    load: { before: loadBefore.map((x) => round(x, 2)), after: loadAfter.map((x) => round(x, 2)) },
    limits,
    figures,
    targets,
    ours: oursDetail,
    peer: peerName,
    chart: wroteChart ? relative(dirname(files.report), files.chart) : null,
    backends,
    anchor,
    scale: scaleMd,
    soak: soak ? soakMarkdown(soak) : null,
    auth: auth ? authMarkdown(auth) : null,
    viewer: viewer ? viewerMarkdown(viewer) : null,
    notes,
  });
  writeFileSync(files.report, audit ? `${report.trimEnd()}\n\n#### Audit log\n\n${auditMarkdown(audit)}` : report);
  writeFileSync(
    files.json,
    JSON.stringify(
      {
        started: started.toISOString(),
        finished: new Date().toISOString(),
        command: process.argv.slice(2),
        options: o,
        machine: {
          description: machine,
          cpus: cpus().length,
          cpuModel: cpus()[0]?.model.trim(),
          memoryGiB: round(totalmem() / 2 ** 30, 1),
          node: process.version,
        },
        load: { before: loadBefore, after: loadAfter },
        limits,
        scenarios: results,
        decode,
        auth,
        viewer,
        audit,
        soak,
        figures,
        targets,
        backends,
        anchor,
        erasure,
        portability,
        scale: scale ? { measured: scale } : null,
        notes,
        files: { ...files, chart: wroteChart ? files.chart : null, scale: scaleMd ? files.scale : null },
      },
      null,
      2,
    ),
  );

  // ---------- console ----------
  if (limits) process.stdout.write(`\nLimits of this machine\n${limitsTable(limits)}\n\n`);
  if (figures.length > 0) console.table(figures.map(consoleRow(o.peer !== null)));
  if (targets.length > 0) process.stdout.write(`\nTargets\n${targetsTable(targets)}\n\n`);
  if (backends) console.table(backends.map(({ note: _note, ...b }) => b));
  if (anchor) process.stdout.write(`${formatAnchorBench(anchor)}\n`);
  if (erasure) process.stdout.write(`${formatErasureBench(erasure)}\n`);
  if (portability) process.stdout.write(`${formatPortabilityBench(portability)}\n`);
  if (auth) process.stdout.write(`\nAccess control (auth)\n${authMarkdown(auth)}\n`);
  if (viewer) process.stdout.write(`\nA viewer opening a series (viewer)\n${viewerMarkdown(viewer)}\n`);
  if (audit) process.stdout.write(`\nAudit log (audit)\n${auditMarkdown(audit)}\n`);
  if (soak) process.stdout.write(`\nSoak\n${soakMarkdown(soak)}\n`);
  for (const n of notes) process.stdout.write(`note: ${n}\n`);
  process.stdout.write(`\nresults: ${relative(process.cwd(), files.json)}\nreport:  ${relative(process.cwd(), files.report)}\n`);
  if (wroteChart) process.stdout.write(`chart:   ${relative(process.cwd(), files.chart)}\n`);
  if (scaleMd) process.stdout.write(`scale:   ${relative(process.cwd(), files.scale)}\n`);
  if (o.cpuProf !== undefined) process.stdout.write(`CPU profiles of the node processes: ${o.cpuProf}\n`);

  const oursFailed =
    results.some((s) => runFailed(s.runs[0]!, s.kind !== 'dimse')) ||
    (decode !== null && (decode.runs[0]!.errors.length > 0 || decode.runs[0]!.syntaxes.some((x) => !x.ok)));
  const soakFailed = soak !== null && soakTargets(soak).some((t) => t.met === false);
  if (
    oursFailed ||
    soakFailed ||
    (auth !== null && authFailed(auth)) ||
    (viewer !== null && viewerFailed(viewer)) ||
    backends?.some((b) => !b.ok) === true ||
    (o.anchor && anchor === null) ||
    (o.erasure && erasure === null)
  )
    process.exitCode = 1;
}

/**
 * A fresh node on an empty data directory; the data directory measured after it stops. With
 * `dimseDirs` (the dimse scenario), its Storage SCP on a free port takes the studies from storescu.
 */
async function runOurs(plan: ScenarioPlan, o: BenchOptions, workDir: string, footprints: Map<string, Footprint>, dimseDirs?: string[]): Promise<SystemRun> {
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
async function runOrthanc(plan: ScenarioPlan, workDir: string, keep: boolean, dimseDirs?: string[], storescu?: string): Promise<SystemRun> {
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

/** The scale projection's inputs from the fs footprints of this run; null without a huge study. */
function scaleFrom(results: ScenarioResult[], footprints: Map<string, Footprint>): MeasuredScale | null {
  const huge: HugeFootprint[] = [];
  for (const s of results) {
    const fp = footprints.get(s.id);
    const ing = s.runs[0]?.ingest;
    if (s.kind !== 'huge' || !fp || !ing?.ok || !s.frameSource) continue;
    huge.push({
      bytes: s.bytes,
      instances: s.instances,
      frames: s.instances * s.frameSource.numberOfFrames,
      peakRssMiB: ing.peakRssMiB,
      ingestMBps: ing.bytes / 1e6 / ing.seconds,
      footprint: fp,
    });
  }
  const small = results.filter((s) => s.kind === 'small' && footprints.has(s.id) && s.runs[0]?.ingest?.ok).sort((a, b) => b.instances - a.instances)[0];
  if (huge.length === 0) return null;
  log('measuring memory per chunk CID for the scale projection');
  return measuredScale({
    huge,
    ...(small ? { small: { instances: small.instances, footprint: footprints.get(small.id)! } } : {}),
    heldBytesPerChunk: measureHeldCidBytes(),
  });
}

function runNotes(o: BenchOptions, results: ScenarioResult[], limits: MachineLimits | null, before: number[], after: number[]): string[] {
  const notes: string[] = [];
  const cores = cpus().length;
  notes.push(
    `Load average ${before[0]!.toFixed(2)} before and ${after[0]!.toFixed(2)} after, on ${cores} cores: ` +
      `the client (generating and sending the studies) runs on the same cores as the server.`,
  );
  const clientCpu = results.reduce((a, s) => a + (s.runs[0]?.ingest?.clientCpuSeconds ?? 0), 0);
  const serverCpu = results.reduce((a, s) => a + (s.runs[0]?.ingest?.cpuSeconds ?? 0), 0);
  if (serverCpu > 0) notes.push(`During our ingests the client used ${clientCpu.toFixed(1)} CPU-s and the node ${serverCpu.toFixed(1)} CPU-s.`);
  if (limits) {
    notes.push(
      'Crypto limits are one core; the node seals and opens chunks on a pool of worker threads, so on 2 cores it can pass ' +
        'a one-core limit (the figure then reads above 100%).',
    );
  }
  if (results.some((s) => s.kind === 'dimse')) {
    notes.push(
      `DIMSE scenarios: dcmtk's storescu (${o.storescu}), one association per study carrying every file of it, run with TCP_NODELAY=1 ` +
        "(Debian's dcmtk otherwise leaves Nagle's algorithm on and each small C-STORE waits ~40 ms for a delayed ACK); the files were " +
        'written to the work dir before the clock started (read back from the page cache); success is the instances QIDO lists afterwards. ' +
        'Each SCP negotiates its own PDU size (the node 256 KiB, Orthanc its default 16 KiB); no retrieval is measured in these scenarios.',
    );
  }
  if (results.some((s) => s.kind !== 'dimse')) {
    notes.push('Retrieval runs right after ingest: blocks are read from the page cache where RAM holds them.');
    if (o.store === 's3') notes.push('Store s3: bytes stored are not measured (the blocks are in the S3 server); no scale projection (it reads the fs store).');
    if (o.store === 'ipfs')
      notes.push('Store ipfs: bytes stored are the whole data directory with its IPFS repository; no scale projection (it reads the fs store).');
  }
  for (const s of results) {
    const repeated = s.runs.filter((r) => r.repeats !== undefined);
    if (repeated.length > 0) {
      const list = (r: SystemRun): string =>
        `${r.repeats!.map((x) => (x.instancesPerSecond === null ? 'failed' : formatNumber(Math.round(x.instancesPerSecond)))).join(' / ')} inst/s for ${r.system}`;
      notes.push(
        `${s.label}: run ${repeated[0]!.repeats!.length} times, each on a fresh server${repeated.length > 1 ? ' (the two systems alternating)' : ''}: ` +
          `ingest ${repeated.map(list).join(', ')}; ` +
          'the tables show the run with the median ingest rate.',
      );
    }
    for (const r of s.runs) {
      const problems = [...r.errors, ...(r.ingest?.failures ?? []), ...(r.retrieve?.failures ?? [])];
      for (const q of [r.qido, r.seriesMetadata, r.frames]) if (q?.note) problems.push(q.note);
      if (problems.length > 0) notes.push(`${r.system}, ${s.label}: ${problems.slice(0, 3).join('; ')}`);
    }
  }
  return notes;
}

function decodeNotes(d: DecodeResult): string[] {
  const notes = [
    `Decode: the same JPEG 2000 and JPEG-LS lossless instances (Multi-frame Grayscale Word SC, ${d.size} × ${d.size}, 12 bits stored, a CT-like phantom, ` +
      `${d.syntaxes.map((x) => `${x.name} ${Math.round(x.encodedBytesPerFrame / 1000)} kB per frame`).join(', ')}) stored in each system, their frames asked for ` +
      'with WADO-RS frames and Accept multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1, a fresh server per syntax. ' +
      "Orthanc decodes through its DICOMweb plugin, JPEG 2000 with Debian's GDCM plugin and JPEG-LS with its built-in DCMTK (GDCM restricted to JPEG 2000: " +
      'with GDCM for JPEG-LS too, single-frame requests crashed Orthanc), and transcodes the whole instance for every request, so all frames of an ' +
      'instance per request is the pattern most favourable to it. Every decoded frame of one instance was checked byte for byte against the phantom before the timing. ' +
      `"Of the machine limit": the node's own decoders (DecodePool) in the benchmark process on the same frames.`,
  ];
  for (const r of d.runs) {
    for (const x of r.syntaxes) {
      const name = d.syntaxes.find((s) => s.transferSyntaxUID === x.transferSyntaxUID)?.name ?? x.transferSyntaxUID;
      if (x.repeats && x.repeats.length > 1) {
        notes.push(
          `Decode, ${name}, ${r.system}: ${x.repeats.map((v) => (v === null ? 'failed' : formatNumber(v))).join(' / ')} frames/s over ${x.repeats.length} runs (whole instance per request); the tables show the median run.`,
        );
      }
      if (x.failures.length > 0) notes.push(`${r.system}, decode ${name}: ${x.failures.slice(0, 3).join('; ')}`);
    }
    if (r.errors.length > 0) notes.push(`${r.system}, decode: ${r.errors.slice(0, 3).join('; ')}`);
  }
  return notes;
}

function consoleRow(withPeer: boolean): (f: Figure) => Record<string, string> {
  const show = (v: number | null | undefined, f: Figure): string =>
    v === null || v === undefined ? 'n/a' : f.digits !== undefined ? v.toFixed(f.digits) : formatNumber(v);
  return (f) => ({
    scenario: f.scenario,
    operation: f.operation,
    unit: f.unit,
    [OURS]: `${show(f.ours, f)}${f.ok === false ? ' FAILED' : ''}`,
    ...(withPeer ? { [ORTHANC]: `${show(f.peer, f)}${f.peerOk === false ? ' FAILED' : ''}`, ratio: ratioText(f) } : {}),
    'of limit': ofLimit(f),
  });
}

/** CPUs, RAM, the filesystem under test and Node, in one line. */
async function describeMachine(workDir: string): Promise<string> {
  let fs = '';
  try {
    const { stdout } = await promisify(execFile)('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '--target', workDir]);
    const [type, source] = stdout.trim().split(/\s+/);
    if (type) fs = `, work dir on ${type} (${source ?? '?'})`;
  } catch {
    // findmnt missing: the filesystem is left out
  }
  const cpu = cpus();
  return `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${round(totalmem() / 2 ** 30, 1)} GiB RAM${fs}, Node ${process.version}`;
}

function round(n: number, d: number): number {
  return Math.round(n * 10 ** d) / 10 ** d;
}

try {
  await main();
} finally {
  await scratch.removeAll();
}
