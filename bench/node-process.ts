// Runs `dicom-vault serve` as its own process, so that its memory and CPU are measured apart
// from the client's (benchmarks) and so that it can be killed for real (crash tests).
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * The node run: this checkout's, or another's named by DICOM_VAULT_BENCH_BIN (its
 * bin/dicom-vault.js), to measure another build with this harness.
 */
export const BIN = process.env.DICOM_VAULT_BENCH_BIN ?? fileURLToPath(new URL('../bin/dicom-vault.js', import.meta.url));

export interface ServedNode {
  child: ChildProcess;
  /** e.g. http://127.0.0.1:43121/dicom-web */
  url: string;
  pid: number;
  /** With `inspect`: the node's inspector (bench/heap-probe.ts), `ws://127.0.0.1:PORT/UUID`. */
  inspectorUrl?: string;
  stop(): Promise<void>;
}

/**
 * Starts `dicom-vault serve` on a free port; resolves once it announces its URL. `open` (default
 * true): without identity, as the benchmark's scenarios measure the node (its cost of identity is
 * the `auth` scenario's figure); tests run with identity on (test/support/process.ts).
 * `logLevel` (default warn) and `onLog` (each chunk of its log, which the node writes to stdout):
 * the auth scenario reads the node's audit records. `inspect`: the node's inspector on a free
 * loopback port, for the soak's post-GC heap (bench/heap-probe.ts); off by default.
 */
export function serveNode(
  dataDir: string,
  extraArgs: string[] = [],
  env: NodeJS.ProcessEnv = {},
  { open = true, logLevel = 'warn', onLog, inspect = false }: { open?: boolean; logLevel?: string; onLog?: (chunk: string) => void; inspect?: boolean } = {},
): Promise<ServedNode> {
  const child = spawn(
    process.execPath,
    [
      ...(inspect ? ['--inspect=127.0.0.1:0'] : []),
      BIN,
      'serve',
      '--port',
      '0',
      '--data-dir',
      dataDir,
      '--log-level',
      logLevel,
      ...(open ? ['--open'] : []),
      ...extraArgs,
    ],
    {
      // No chain and no DIMSE unless asked for: anchoring has its own benchmark (bench/anchor.ts).
      env: { DICOM_VAULT_CHAIN: 'none', DICOM_VAULT_DIMSE_PORT: 'off', ...process.env, ...env },
      stdio: ['ignore', onLog ? 'pipe' : 'ignore', 'pipe'],
    },
  );
  child.stdout?.setEncoding('utf8').on('data', (d: string) => onLog?.(d));
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`node did not start within 60 s: ${err}`)), 60_000);
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.length > 64_000) err = err.slice(-32_000);
      const m = /serving (http:\/\/\S+)/.exec(err);
      if (m && child.pid !== undefined) {
        clearTimeout(timer);
        // The last one announced: bin/dicom-vault.js re-executes itself (execve), and the
        // process it became opened its own inspector.
        const inspector = [...err.slice(0, m.index).matchAll(/Debugger listening on (ws:\/\/\S+)/g)].at(-1)?.[1];
        resolve({ child, url: m[1]!, pid: child.pid, ...(inspector !== undefined ? { inspectorUrl: inspector } : {}), stop: () => stopProcess(child) });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`node exited (${code ?? signal}) before serving: ${err}`));
    });
  });
}

export function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
}

export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited(child);
  clearTimeout(timer);
}
