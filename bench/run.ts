// `npm run bench`: streaming benchmarks over loopback against real server processes, side by
// side with Orthanc (--peer orthanc) and with this machine's limits measured in the same run.
// Studies are generated on the fly (bench/generate.ts): nothing large is written except the
// servers' own storage, which is removed after each scenario. `npm run bench -- --help` lists
// the options (bench/options.ts). The systems under test are started and measured in
// run-systems.ts; the report's notes and the console's rows are written in run-report.ts.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
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
  medianRun,
  OURS,
  ORTHANC,
  runFailed,
  scenarioFigures,
  type Figure,
  type ScenarioResult,
  type SystemRun,
} from './figures.ts';
import { limitsTable, measureLimits, type MachineLimits } from './limits.ts';
import { BenchUsageError, HELP, parseBenchArgs, type BenchOptions } from './options.ts';
import { authFailed, authMarkdown, authTargets, type AuthResult } from './auth-report.ts';
import { runAuthScenario } from './auth-scenario.ts';
import { decodeFigures, decodeTargets, runDecodeScenario, type DecodeResult } from './decode-scenario.ts';
import { writeStudyFiles } from './dimse.ts';
import { reportMarkdown, targetsTable } from './publish.ts';
import { consoleRow, decodeNotes, describeMachine, round, runNotes, scaleFrom } from './run-report.ts';
import { runOrthanc, runOurs } from './run-systems.ts';
import { projectScale, scaleMarkdown, type Footprint } from './scale.ts';
import { describe, planScenarios, scenarioHeader } from './scenarios.ts';
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
        ours.push(await runOurs(plan, o, workDir, footprints, { log, scratch }, files?.dirs));
        if (o.peer === 'orthanc') peers.push(await runOrthanc(plan, workDir, o.keep, { log, scratch }, files?.dirs, o.storescu));
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
    } catch (err) {
      log(`erasure failed: ${describe(err)}`);
      process.exitCode = 1;
    }
    log('portability of a patient (export, import, cp)');
    try {
      portability = await runPortabilityBench({ gib: o.sizesGiB[0]!, workDir });
    } catch (err) {
      log(`portability failed: ${describe(err)}`);
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
  const scale = o.store === 'fs' ? scaleFrom(results, footprints, log) : null;
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

try {
  await main();
} finally {
  await scratch.removeAll();
}
