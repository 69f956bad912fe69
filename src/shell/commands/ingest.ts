// `dicom-vault ingest <file|dir>...`: stores DICOM files (folders are walked) through the same
// ingest session as STOW. On a terminal, a progress bar with total, rate and ETA; otherwise a plain
// line every few seconds.
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { ingestFiles, type FileIngestProgress } from '../../../ingest/files.ts';
import { createLogger } from '../log.ts';
import { openVault } from '../vault.ts';
import { EXIT, mb, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

/** Seconds between progress lines when stderr is not a terminal. */
const PLAIN_PROGRESS_EVERY_S = 5;

export function ingestCommand(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('ingest')
      .description('store DICOM files; folders are walked (DICOMDIR files are reported, not stored)')
      .argument('<paths...>', 'files or folders')
      .option('--json', 'print the report as JSON'),
  ).action(async (paths: string[], opts: { json?: boolean }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    const vault = await openVault(options, createLogger('warn'));
    const started = performance.now();
    const progress = progressReporter(process.stderr.isTTY === true, started, io);
    try {
      const result = await ingestFiles(
        paths,
        { ...vault, writer: vault.writer },
        { chunkSize: options.chunkSize, countFirst: true, onProgress: progress.update },
      );
      progress.stop();
      const s = (performance.now() - started) / 1000;
      const duplicates = result.stored.filter((i) => i.duplicate).length;
      if (opts.json) io.out(JSON.stringify({ ...result, seconds: s }, null, 2));
      else {
        for (const f of result.failures) io.err(`refused ${f.label}: ${f.code}: ${f.reason}`);
        for (const d of result.dicomdirs) io.err(`skipped ${d}: a DICOMDIR (a media directory, not an instance)`);
        io.out(
          `${result.files} files: ${result.stored.length - duplicates} stored, ${duplicates} already stored, ${result.failures.length} refused` +
            `${result.dicomdirs.length > 0 ? `, ${result.dicomdirs.length} DICOMDIR` : ''}; ${mb(result.bytes)} MB in ${s.toFixed(1)} s; ` +
            `studies: ${result.studies.join(', ') || 'none'}`,
        );
      }
      process.exitCode = result.failures.length > 0 ? EXIT.PROBLEMS : EXIT.OK;
    } finally {
      progress.stop();
      await vault.close();
    }
  });
}

interface ProgressReporter {
  update(p: FileIngestProgress): void;
  stop(): void;
}

function progressReporter(tty: boolean, started: number, io: Io): ProgressReporter {
  const rate = (bytes: number): string => `${mb(bytes / Math.max(0.001, (performance.now() - started) / 1000))} MB/s`;
  if (tty) {
    const bar = new cliProgress.SingleBar(
      { format: '{bar} {percentage}% | {value}/{total} files | {mb} MB | {rate} | ETA {eta_formatted} | {failed} refused', etaBuffer: 50, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(p) {
        // ETA and percentage by bytes would be truer for mixed sizes; files are what people count.
        const payload = { mb: mb(p.bytes), rate: rate(p.bytes), failed: p.failed };
        if (!started) {
          bar.start(p.totalFiles ?? 0, p.files, payload);
          started = true;
        } else bar.update(p.files, payload);
      },
      stop() {
        if (started) bar.stop();
        started = false;
      },
    };
  }
  let last = 0;
  return {
    update(p) {
      const now = performance.now();
      if (now - last < PLAIN_PROGRESS_EVERY_S * 1000 && p.files !== p.totalFiles) return;
      last = now;
      const total = p.totalBytes ?? 0;
      const elapsed = (now - started) / 1000;
      const eta = p.bytes > 0 && total > p.bytes ? `, ETA ${Math.round((elapsed * (total - p.bytes)) / p.bytes)} s` : '';
      io.err(`${p.files}/${p.totalFiles ?? '?'} files, ${mb(p.bytes)}/${mb(total)} MB, ${rate(p.bytes)}${eta}, ${p.failed} refused`);
    },
    stop() {},
  };
}
