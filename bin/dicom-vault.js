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
    process.stderr.write(`dicom-vault needs Node ${wanted} (this is ${process.version}); run \`npm ci\` to install the pinned runtime.\n`);
    process.exit(1);
  }
  // The pinned Node runs as our child (Node < 23 cannot exec in place). A process manager signals
  // this PID: SIGTERM and SIGHUP are passed on, and SIGINT too unless it came from a terminal (which
  // sends it to the child as well). Should this process die without passing anything on (SIGKILL),
  // the kernel sends the child SIGTERM (util-linux setpriv's parent-death signal), so it stops
  // cleanly and takes its embedded chain with it.
  const setpriv = process.platform === 'linux' ? ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) : undefined;
  const args = process.argv.slice(1);
  const child =
    setpriv === undefined ? spawn(pinned, args, { stdio: 'inherit' }) : spawn(setpriv, ['--pdeathsig', 'TERM', '--', pinned, ...args], { stdio: 'inherit' });
  for (const signal of ['SIGTERM', 'SIGHUP', 'SIGINT']) {
    process.on(signal, () => {
      if (signal === 'SIGINT' && process.stdin.isTTY) return;
      child.kill(signal);
    });
  }
  const [code, signal] = await new Promise((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  process.exit(code ?? (signal === null ? 1 : 128 + (os.constants.signals[signal] ?? 0)));
}

// Runtime settings the node runs with unless told otherwise: --max-semi-space-size=1 (fewer full
// collections while block data streams through), MALLOC_ARENA_MAX=1 (freed block memory in one
// arena), UV_THREADPOOL_SIZE=16 (fsyncs do not hold every file call). Why, with the measurements:
// src/shell/README.md. All must be set before the process starts, so it re-executes itself with
// them: execve keeps the PID. A flag given on the command line or in NODE_OPTIONS, or a
// MALLOC_ARENA_MAX or UV_THREADPOOL_SIZE in the environment, is respected as is.
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
