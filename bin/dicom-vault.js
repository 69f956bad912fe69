#!/usr/bin/env node
// Entry point of the `dicom-vault` command. The node is TypeScript run by Node's own type
// stripping, so it needs a Node that satisfies package.json's `engines.node` (the one place that
// states the minimum): the one pinned in devDependencies (npm package `node`). Started by an older
// Node (a global install, a PATH without node_modules/.bin, the system Node 20), re-run ourselves
// on the pinned one instead of failing later with an obscure syntax or API error. This part must
// load on any Node >= 18, and before node_modules exists (hence the dynamic import).
import { spawn } from 'node:child_process';
import os from 'node:os';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';

const wanted = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).engines.node;
// Only the one function: the whole of semver costs twice the load time, paid on every start.
const satisfies = (await import('semver/functions/satisfies.js').catch(() => undefined))?.default;
if (satisfies === undefined || !satisfies(process.version, wanted)) {
  const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  // Already on the pinned Node (compared as real paths: node_modules may be a symlink) and it does
  // not satisfy engines: say so rather than loop.
  if (satisfies === undefined || !existsSync(pinned) || realpathSync(process.execPath) === realpathSync(pinned)) {
    process.stderr.write(
      `dicom-vault needs Node ${wanted} (this is ${process.version}); run \`npm ci\` to install the pinned runtime.\n`,
    );
    process.exit(1);
  }
  // The pinned Node runs as our child (Node < 23 cannot exec in place). A process manager signals
  // this PID: SIGTERM and SIGHUP are passed on, and SIGINT too unless it came from a terminal (which
  // sends it to the child as well). Should this process die without passing anything on (SIGKILL),
  // the kernel sends the child SIGTERM (util-linux setpriv's parent-death signal), so it stops
  // cleanly and takes its embedded chain with it.
  const setpriv = process.platform === 'linux' ? ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) : undefined;
  const args = process.argv.slice(1);
  const child = setpriv === undefined ? spawn(pinned, args, { stdio: 'inherit' }) : spawn(setpriv, ['--pdeathsig', 'TERM', '--', pinned, ...args], { stdio: 'inherit' });
  for (const signal of ['SIGTERM', 'SIGHUP', 'SIGINT']) {
    process.on(signal, () => {
      if (signal === 'SIGINT' && process.stdin.isTTY) return;
      child.kill(signal);
    });
  }
  const [code, signal] = await new Promise((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  process.exit(code ?? (signal === null ? 1 : 128 + (os.constants.signals[signal] ?? 0)));
}

// Runtime settings the node runs with unless told otherwise (measured with `npm run bench`):
// --max-semi-space-size=1 (MiB): with V8's default young generation (32 MiB semi-spaces on this
//   kind of machine) a 1 GiB STOW started ~60 full mark-compacts of the main heap (a third of
//   the node's CPU, V8's helper threads included); with 1 MiB semi-spaces it starts 2, for a few
//   hundred cheap scavenges, and RSS is ~30 MiB lower. Block data lives off-heap.
// MALLOC_ARENA_MAX=1: block buffers are allocated on one thread (a crypto worker) and freed on
//   another (the main thread's GC); with glibc's per-thread arenas the freed memory sat in
//   several arenas at once. One arena: ~15 MiB lower peak RSS, no measurable CPU cost (the
//   allocations are few and large).
// UV_THREADPOOL_SIZE=16: libuv's pool (4 threads unless told) runs every file call, and an fsync
//   waits for the device to flush its cache (on these VMs, the host's fsync of the disk image):
//   the flush after 16 small instances held all 4 threads while the next instances' writes queued
//   behind it. 1,000 small instances, alternating fresh nodes: 257 / 215 / 241 inst/s with 4
//   threads, 270 / 262 / 318 with 16 (idle threads cost ~100 KiB each).
// Not set: --heap-growing-percent=50 (the old generation grows to 1.5x what survived the last
//   full collection, V8 allows up to 4x). It keeps peak RSS flat with study size (16 GiB study:
//   158 MiB ingesting, 225 MiB retrieving, against 185 and 263 MiB without it), but the extra
//   full collections cost retrieval of huge instances ~30% (340 -> 250 MB/s, 1.7 s more node
//   CPU per GiB). A deployment that prefers flat memory can start the node with it:
//   `node --heap-growing-percent=50 bin/dicom-vault.js serve` (V8 refuses it in NODE_OPTIONS).
// All must be set before the process starts, so it re-executes itself with them: execve keeps
// the PID (service managers, tests and benchmarks that watch or signal it are unaffected). A
// flag given on the command line or in NODE_OPTIONS, or a MALLOC_ARENA_MAX or UV_THREADPOOL_SIZE
// in the environment, is respected as is.
const V8_FLAGS = ['--max-semi-space-size=1'];
const ENV = { MALLOC_ARENA_MAX: '1', UV_THREADPOOL_SIZE: '16' };
const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
const flags = V8_FLAGS.filter((flag) => !given.some((a) => a.startsWith(flag.split('=')[0])));
const env = Object.entries(ENV).filter(([name]) => process.env[name] === undefined);
if (typeof process.execve === 'function' && (flags.length > 0 || env.length > 0)) {
  process.execve(process.execPath, [process.execPath, ...flags, ...process.execArgv, ...process.argv.slice(1)], {
    ...process.env,
    ...Object.fromEntries(env),
  });
}

// Caches compiled code, and the type-stripped sources, in the OS temp dir (or NODE_COMPILE_CACHE):
// a warm start then never loads Node's TypeScript stripper (a WebAssembly module), which saves
// ~25 MiB of RSS for the life of the process and startup time. A failure to cache is harmless.
module.enableCompileCache?.();
await import('../src/shell/cli.ts');
