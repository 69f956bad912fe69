// Orthanc (Debian's packages) as the peer the benchmark compares against, started as a plain
// background process with its own config and empty storage, as the Orthanc peer's own control
// script does: no systemd, no auth, DIMSE off unless `config`
// turns it on (the dimse scenario), the GDCM plugin only when asked (the decode one), fsync per file
// (SyncStorageArea, Orthanc's default, so a stored answer means durable as ours does).
//
//   node bench/orthanc.ts [WORKDIR]    starts it, prints its URL, stops it on Ctrl-C
//
// Orthanc 1.10 has no bind-address option: it listens on all interfaces and refuses non-loopback
// clients (RemoteAccessAllowed false). Its STOW-RS holds the whole request body in memory, so
// push it per instance or per 100 instances, never a whole study per request.
import { execFile, spawn } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const ORTHANC_BIN = '/usr/sbin/Orthanc';
/** Orthanc's usual HTTP port; another free port is taken when it is busy. */
export const DEFAULT_ORTHANC_PORT = 8042;
/** How long Orthanc may take to answer /system after start (it creates its SQLite index). */
export const DEFAULT_ORTHANC_START_TIMEOUT_MS = 30_000;
/**
 * Thread stack size Orthanc runs with when the GDCM plugin is loaded, KiB. Debian's GDCM 3.0.21
 * decoding a 512 x 512 JPEG 2000 instance of 30 or 100 frames overflowed the default 8 MiB stack of
 * Orthanc's HTTP worker threads on the second request for it (a segfault in libgdcmMSFF, dmesg;
 * Orthanc gone); with 64 MiB, 100 frames went through again and again. Threads take their stack
 * size from RLIMIT_STACK, set here before Orthanc starts. Address space only: RSS is unchanged.
 */
export const GDCM_STACK_KIB = 128 * 1024;
/** How long stop() waits after SIGTERM before SIGKILL. */
export const DEFAULT_ORTHANC_STOP_TIMEOUT_MS = 30_000;

export interface OrthancOptions {
  /** Default 8042, or any free port when 8042 is taken. */
  port?: number;
  /** Keep the storage of an earlier run in workDir/db (default false: empty storage). */
  keepStorage?: boolean;
  /** Install `orthanc orthanc-dicomweb` with apt-get when missing (default true; needs root). */
  install?: boolean;
  startTimeoutMs?: number;
  log?: (line: string) => void;
  /**
   * More configuration, merged over orthancConfig's (DicomWeb one level deep): e.g. DicomWeb.Servers
   * to make Orthanc a DICOMweb client of the node, or DicomServerEnabled and DicomPort for DIMSE.
   */
  config?: Record<string, unknown>;
  /**
   * Debian's GDCM plugin (package orthanc-gdcm): Orthanc's own DCMTK does not read JPEG 2000,
   * GDCM does. Loaded after the DICOMweb plugin; installed with apt-get when missing and `install`.
   */
  gdcm?: boolean;
}

export interface RunningOrthanc {
  /** DICOMweb base, e.g. http://127.0.0.1:8042/dicom-web */
  url: string;
  /** Orthanc's own REST root, e.g. http://127.0.0.1:8042 */
  restUrl: string;
  pid: number;
  port: number;
  /** e.g. "1.10.1" */
  version: string;
  /** e.g. "1.7" (the DICOMweb plugin) */
  dicomWebVersion: string;
  storageDir: string;
  /** SIGTERM to this PID only (SIGKILL after 30 s); resolves once it has exited. */
  stop(): Promise<void>;
}

export async function startOrthanc(workDir: string, opts: OrthancOptions = {}): Promise<RunningOrthanc> {
  const log = opts.log ?? (() => {});
  const work = resolve(workDir);
  const packages = ['orthanc-dicomweb', ...(opts.gdcm === true ? ['orthanc-gdcm'] : [])];
  if (opts.install !== false) await ensureInstalled(packages, log);
  if (!existsSync(ORTHANC_BIN)) throw new Error(`${ORTHANC_BIN} not found: apt-get install orthanc ${packages.join(' ')}`);
  const plugin = await dicomWebPlugin();
  const gdcm = opts.gdcm === true ? await packagePlugin('orthanc-gdcm', 'libOrthancGdcm') : undefined;
  const port = opts.port ?? ((await portFree(DEFAULT_ORTHANC_PORT)) ? DEFAULT_ORTHANC_PORT : await freePort());

  const db = join(work, 'db');
  const logDir = join(work, 'log');
  if (opts.keepStorage !== true) await rm(db, { recursive: true, force: true });
  await mkdir(db, { recursive: true });
  await mkdir(logDir, { recursive: true });
  const configPath = join(work, 'orthanc.json');
  const base = orthancConfig({ storageDir: db, plugin, port });
  const extra = opts.config ?? {};
  const config = {
    ...base,
    ...extra,
    Plugins: [...(base.Plugins as string[]), ...(gdcm ? [gdcm] : [])],
    DicomWeb: { ...(base.DicomWeb as object), ...((extra.DicomWeb as object | undefined) ?? {}) },
  };
  await writeFile(configPath, JSON.stringify(config, null, 2));

  const out = openSync(join(logDir, 'stdout.txt'), 'a');
  const args = [`--logdir=${logDir}`, configPath];
  // The shell execs Orthanc: the PID is Orthanc's, as the benchmark's RSS and CPU figures need.
  const child = gdcm
    ? spawn('/bin/sh', ['-c', `ulimit -s ${GDCM_STACK_KIB} && exec "$0" "$@"`, ORTHANC_BIN, ...args], { stdio: ['ignore', out, out] })
    : spawn(ORTHANC_BIN, args, { stdio: ['ignore', out, out] });
  closeSync(out);
  const pid = child.pid;
  if (pid === undefined) throw new Error('Orthanc did not start (no PID)');
  let exited = false;
  const exit = new Promise<void>((res) =>
    child.once('exit', () => {
      exited = true;
      res();
    }),
  );
  child.once('error', () => {}); // a spawn error also ends in 'exit' or is caught by the wait below

  const stop = async (): Promise<void> => {
    if (exited) return;
    signal(pid, 'SIGTERM');
    const timer = setTimeout(() => {
      if (!exited) signal(pid, 'SIGKILL');
    }, DEFAULT_ORTHANC_STOP_TIMEOUT_MS);
    await exit;
    clearTimeout(timer);
  };

  const restUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.startTimeoutMs ?? DEFAULT_ORTHANC_START_TIMEOUT_MS);
  for (;;) {
    if (exited) throw new Error(`Orthanc exited at start; see ${logDir}: ${await tail(join(logDir, 'stdout.txt'))}`);
    try {
      const system = await getJson(`${restUrl}/system`);
      const plugins = await getJson(`${restUrl}/plugins/dicom-web`).catch(() => ({}));
      const version = String((system as { Version?: unknown }).Version ?? 'unknown');
      const dicomWebVersion = String((plugins as { Version?: unknown }).Version ?? 'unknown');
      log(`Orthanc ${version} (DICOMweb ${dicomWebVersion}) PID ${pid} on ${restUrl}, storage ${db}`);
      return { url: `${restUrl}/dicom-web`, restUrl, pid, port, version, dicomWebVersion, storageDir: db, stop };
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`Orthanc did not answer within ${opts.startTimeoutMs ?? DEFAULT_ORTHANC_START_TIMEOUT_MS} ms; see ${logDir}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function orthancConfig(o: { storageDir: string; plugin: string; port: number }): Record<string, unknown> & { DicomWeb: Record<string, unknown> } {
  return {
    Name: 'dicom-vault-bench-peer',
    StorageDirectory: o.storageDir,
    IndexDirectory: o.storageDir,
    StorageCompression: false,
    // Orthanc's default, written out because it is what makes the comparison fair: fsync per file.
    SyncStorageArea: true,
    Plugins: [o.plugin],
    HttpServerEnabled: true,
    HttpPort: o.port,
    RemoteAccessAllowed: false,
    AuthenticationEnabled: false,
    RegisteredUsers: {},
    DicomServerEnabled: false,
    SaveJobs: false,
    StableAge: 60,
    HttpRequestTimeout: 600,
    DicomWeb: {
      Enable: true,
      Root: '/dicom-web/',
      EnableWado: false,
      Host: `127.0.0.1:${o.port}`,
      Ssl: false,
    },
  };
}

async function ensureInstalled(packages: readonly string[], log: (line: string) => void): Promise<void> {
  let have = existsSync(ORTHANC_BIN);
  for (const p of packages) have &&= await dpkgInstalled(p);
  if (have) return;
  log(`installing orthanc ${packages.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): Promise<unknown> => run('apt-get', ['install', '-y', '--no-install-recommends', 'orthanc', ...packages], { env, maxBuffer: 64 << 20 });
  try {
    await install();
  } catch {
    // Usually stale or missing package lists.
    await run('apt-get', ['update'], { env, maxBuffer: 64 << 20 });
    await install();
  }
  // The package's postinst may start the system service (policy-rc.d usually denies it here); a
  // service on 8042 only moves us to another port, and we never stop what we did not start.
}

async function dpkgInstalled(pkg: string): Promise<boolean> {
  try {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: ${Status} is dpkg-query's own format field, not a JS placeholder
    const { stdout } = await run('dpkg-query', ['-W', '-f=${Status}', pkg]);
    return stdout.includes('install ok installed');
  } catch {
    return false;
  }
}

function dicomWebPlugin(): Promise<string> {
  return packagePlugin('orthanc-dicomweb', 'libOrthancDicomWeb');
}

/** The shared library `name`.so of a Debian package, e.g. libOrthancGdcm of orthanc-gdcm. */
async function packagePlugin(pkg: string, name: string): Promise<string> {
  const { stdout } = await run('dpkg', ['-L', pkg]);
  const files = stdout.split('\n').filter((f) => new RegExp(`/${name}\\.so(\\.[\\d.]+)?$`).test(f));
  const plugin = files.find((f) => f.endsWith('.so')) ?? files[0];
  if (plugin === undefined) throw new Error(`the plugin ${name}.so is not in dpkg -L ${pkg}`);
  return plugin;
}

/** Signals our child; ESRCH means it has exited and its 'exit' event is on its way. */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ESRCH') throw err;
  }
}

function portFree(port: number): Promise<boolean> {
  // Orthanc binds all interfaces, so test the wildcard address, not only loopback.
  return new Promise((res) => {
    const s = net.createServer();
    s.once('error', () => res(false));
    s.listen(port, () => s.close(() => res(true)));
  });
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => res(port));
    });
  });
}

async function getJson(url: string): Promise<unknown> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

async function tail(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).slice(-1500);
  } catch {
    return '';
  }
}

if (import.meta.main) {
  const o = await startOrthanc(process.argv[2] ?? join(process.env.TMPDIR ?? '/tmp', 'dicom-vault-orthanc'), {
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${o.url}\n`);
  const done = (): void => void o.stop().then(() => process.exit(0));
  process.once('SIGINT', done);
  process.once('SIGTERM', done);
}
