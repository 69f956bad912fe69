// The embedded chain: a real local EVM node (Foundry's anvil, shipped as a binary inside an npm
// package) run as a child process. Its state (accounts, contract storage, blocks, receipts) is
// dumped to a file in the data directory every second and on exit, and loaded at the next
// start, so receipts issued on it keep verifying across restarts.
//
// The chain never outlives the node, whatever kills the node: anvil is started under util-linux's
// `setpriv --pdeathsig TERM` (the kernel sends it SIGTERM when the node's process ends, even by
// SIGKILL; TERM lets it write its state), and its PID is kept in a pid file beside its state, so a
// start that finds a chain of its own left running (no setpriv on this machine, or a chain started
// by an older release) stops it and starts afresh from the state file. Node cannot set a child's
// parent-death signal itself (prctl needs a native addon), and a process group would not help
// when the node itself is killed.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { VaultError } from '../src/core/errors.ts';

/** JSON-RPC port of the embedded chain. */
export const DEFAULT_CHAIN_PORT = 8545;
/** anvil's chain id. */
export const ANVIL_CHAIN_ID = 31337;
/** How often anvil writes its state file, in seconds: bounds what a crash of the node can lose. */
export const DEFAULT_STATE_INTERVAL_S = 1;
/** Wait for anvil to listen, in milliseconds. */
export const DEFAULT_START_TIMEOUT_MS = 20_000;
/**
 * anvil's first default dev account (from the public "test test ... junk" mnemonic). Fine for a
 * chain that only this node uses and that holds only hashes; never use it on a shared chain.
 */
export const ANVIL_DEV_KEY = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80' as const;

export interface AnvilOptions {
  /** TCP port on 127.0.0.1; 0 picks a free one. Default DEFAULT_CHAIN_PORT. */
  port?: number;
  /** State file: loaded at start when it exists, written every `stateIntervalS` and on exit. None: memory only. */
  statePath?: string;
  /** Seconds between state dumps. Default DEFAULT_STATE_INTERVAL_S. */
  stateIntervalS?: number;
  /** Load this state file but never write it (a read-only look at a node's chain). */
  loadStateOnly?: string;
  /** Chain id. Default ANVIL_CHAIN_ID. */
  chainId?: number;
  /** Seconds between blocks; default: a block per transaction (automine). */
  blockTime?: number;
  /** Timestamp of the genesis block, seconds (anvil --timestamp); default: now. Tests stage a back-dated chain with it. */
  genesisTimestamp?: number;
  /** anvil binary; default resolveAnvilBinary(). */
  binary?: string;
  /** Wait for the RPC to listen, ms. Default DEFAULT_START_TIMEOUT_MS. */
  startTimeoutMs?: number;
  /**
   * Pid file of this chain (mode 0600): a chain of ours still running from an earlier start (its
   * command line names the same state file) is stopped first. Default: none.
   */
  pidFile?: string;
}

export interface AnvilProcess {
  /** e.g. http://127.0.0.1:8545 */
  rpcUrl: string;
  port: number;
  child: ChildProcess;
  /** Resolves when the process has exited (after stop() or on its own). */
  exited: Promise<void>;
  /** SIGTERM (anvil then writes its state), SIGKILL if it has not exited after 10 s. */
  stop(): Promise<void>;
}

/**
 * The anvil binary: the platform package from npm (`@foundry-rs/anvil-<os>-<arch>`, an optional
 * dependency), else `anvil` on PATH; undefined when neither exists.
 */
export function resolveAnvilBinary(): string | undefined {
  const os = process.platform === 'win32' ? 'win32' : process.platform;
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const exe = process.platform === 'win32' ? 'anvil.exe' : 'anvil';
  try {
    const pkg = createRequire(import.meta.url).resolve(`@foundry-rs/anvil-${os}-${arch}/package.json`);
    const bin = join(dirname(pkg), 'bin', exe);
    if (existsSync(bin)) return bin;
  } catch {
    // not installed for this platform: look on PATH
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const bin = join(dir, exe);
    try {
      accessSync(bin, constants.X_OK);
      return bin;
    } catch {
      // not here
    }
  }
  return undefined;
}

export async function startAnvil(options: AnvilOptions = {}): Promise<AnvilProcess> {
  const binary = options.binary ?? resolveAnvilBinary();
  if (!binary) {
    throw new VaultError(
      'CONFIG_INVALID',
      `no anvil binary for ${process.platform}-${process.arch}: install Foundry's anvil (https://getfoundry.sh) on PATH, ` +
        'or point the node at another chain with --chain-rpc, or run without anchoring with --chain none',
    );
  }
  const args = ['--host', '127.0.0.1', '--port', String(options.port ?? DEFAULT_CHAIN_PORT), '--chain-id', String(options.chainId ?? ANVIL_CHAIN_ID)];
  if (options.statePath) args.push('--state', options.statePath, '--state-interval', String(options.stateIntervalS ?? DEFAULT_STATE_INTERVAL_S));
  else if (options.loadStateOnly) args.push('--load-state', options.loadStateOnly);
  if (options.blockTime !== undefined) args.push('--block-time', String(options.blockTime));
  if (options.genesisTimestamp !== undefined) args.push('--timestamp', String(options.genesisTimestamp));
  if (options.pidFile !== undefined) await stopStaleChain(options.pidFile, options.statePath);
  // Only the banner goes to stdout (with anvil's well-known dev keys): read for the port, never logged.
  const setpriv = pdeathsigWrapper();
  const child =
    setpriv === undefined
      ? spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(setpriv, ['--pdeathsig', 'TERM', '--', binary, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  if (options.pidFile !== undefined && child.pid !== undefined) writeFileSync(options.pidFile, `${child.pid}\n`, { mode: 0o600 });
  // Never outlive the node: a crashed node must not leave a chain holding its port. (SIGTERM
  // still lets anvil write its state; the interval dumps cover a SIGKILL of the node.)
  const killOnExit = (): void => void child.kill('SIGTERM');
  process.once('exit', killOnExit);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      process.off('exit', killOnExit);
      if (options.pidFile !== undefined) rmSync(options.pidFile, { force: true });
      resolve();
    }),
  );
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new VaultError('CHAIN_UNAVAILABLE', `anvil did not start within ${options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS} ms`));
    }, options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
    const onData = (d: Buffer): void => {
      output = (output + d.toString()).slice(-8192);
      const m = /Listening on [^\s:]+:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (cause) => {
      clearTimeout(timer);
      reject(new VaultError('CONFIG_INVALID', `cannot run anvil at ${binary}`, { cause }));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const inUse = /address already in use|Address already in use/i.test(output);
      reject(
        new VaultError(
          inUse ? 'CONFIG_INVALID' : 'CHAIN_UNAVAILABLE',
          inUse
            ? `chain port ${options.port ?? DEFAULT_CHAIN_PORT} is in use: pass another --chain-port, or --chain-rpc to use the node already there`
            : `anvil exited before listening (${signal ?? code}): ${output.trim().split('\n').slice(-3).join(' ')}`,
        ),
      );
    });
  });
  // Keep draining the pipes so anvil never blocks on a full one.
  child.stdout!.resume();
  child.stderr!.resume();
  return {
    rpcUrl: `http://127.0.0.1:${port}`,
    port,
    child,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** util-linux's setpriv (it execs the program, so the child's PID is anvil's), if this machine has it. */
function pdeathsigWrapper(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  for (const candidate of ['/usr/bin/setpriv', '/bin/setpriv']) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Stops the chain a pid file names if it is still running and is ours: an anvil whose command line
 * names `statePath` (a PID reused by another program is left alone). Waits for it to exit (TERM,
 * then KILL after 10 s), so its port and state file are free.
 */
async function stopStaleChain(pidFile: string, statePath: string | undefined): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return; // no pid file: nothing left running from an earlier start
  }
  const ours = (): boolean => {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return cmdline.some((a) => a.endsWith('anvil')) && (statePath === undefined || cmdline.includes(statePath));
    } catch {
      return false; // gone
    }
  };
  if (Number.isInteger(pid) && pid > 1 && ours()) {
    process.kill(pid, 'SIGTERM');
    for (let waited = 0; ours(); waited += 50) {
      if (waited === 10_000) process.kill(pid, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  rmSync(pidFile, { force: true });
}
