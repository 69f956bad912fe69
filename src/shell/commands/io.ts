// What every command shares: where it writes, how its flags become NodeOptions, and the exit statuses.
import { Option, type Command } from 'commander';
import { FLAGS, resolveNodeOptions, type FlagName, type FlagSpec, type NodeOptions } from '../config.ts';

export interface Io {
  out(s: string): void;
  err(s: string): void;
}

export const stdio: Io = {
  out: (s) => void process.stdout.write(`${s}\n`),
  err: (s) => void process.stderr.write(`${s}\n`),
};

/** Exit statuses of every command. */
export const EXIT = {
  OK: 0,
  /** The command failed: a coded one-line reason is on stderr. */
  FAILED: 1,
  /** Usage: an unknown command or flag, a missing or invalid argument. */
  USAGE: 2,
  /** A check found problems (verify, verify-receipt, reindex), or ingest refused some files. */
  PROBLEMS: 3,
  /** Not yet: the version asked for is not anchored yet, or its anchor is not final yet. */
  PENDING: 4,
  /** verify-receipt: consistent with the chain, but the chain is a development chain (or the key a public one). */
  SELF_ATTESTED: 5,
} as const;

/** The node's flags (config.ts FLAGS) on a command: each with its environment variable and default in --help. */
export function withNodeFlags(cmd: Command, names: readonly FlagName[] = Object.keys(FLAGS) as FlagName[]): Command {
  for (const name of names) {
    const f: FlagSpec = FLAGS[name];
    // The default is shown, not applied here: config.ts applies defaults, so that a flag beats its
    // variable and an empty variable counts as unset.
    const help = f.default === undefined ? f.help : `${f.help} (default: ${f.default})`;
    cmd.addOption(new Option(f.boolean === true ? `--${name}` : `--${name} <${f.arg}>`, help).env(f.env));
  }
  return cmd;
}

/** NodeOptions from the flags given on the command line (variables and defaults: config.ts). */
export function nodeOptionsOf(cmd: Command, env: NodeJS.ProcessEnv = process.env): NodeOptions {
  const flags: Partial<Record<FlagName, string>> = {};
  const values = cmd.opts<Record<string, unknown>>();
  for (const name of Object.keys(FLAGS) as FlagName[]) {
    const key = camel(name);
    if (cmd.getOptionValueSource(key) !== 'cli') continue;
    if (typeof values[key] === 'string') flags[name] = values[key];
    else if (values[key] === true) flags[name] = '1';
  }
  return resolveNodeOptions(flags, env);
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function mb(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}
