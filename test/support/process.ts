// Runs the real `dicom-vault` command as a child process.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, serveNode, type ServedNode } from '../../bench/node-process.ts';
import { IDENTITY_DB_FILE, SqliteIdentityStore } from '../../src/identity/store.ts';
import { registerToken } from './auth.ts';
import { TEST_USER } from './node.ts';

export { exited as killed } from '../../bench/node-process.ts';

/**
 * `dicom-vault serve` in its own process, with identity on: the test account is made in its data
 * directory first (as an operator would with `dicom-vault user add`), and requests to it carry
 * its token (auth.ts).
 */
export async function serve(dataDir: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ServedNode & { token: string }> {
  const token = prepareTester(dataDir);
  const node = await serveNode(dataDir, extraArgs, env, { open: false });
  registerToken(node.url, token);
  return { ...node, token };
}

/**
 * Makes the test account in `dataDir` (as an operator would with `dicom-vault user add`) before a
 * node is started there some other way; returns its token, to register once the node's URL is known.
 */
export function prepareTester(dataDir: string): string {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const identity = SqliteIdentityStore.open(join(dataDir, IDENTITY_DB_FILE));
  try {
    return identity.user(TEST_USER) === undefined ? identity.addUser(TEST_USER, ['ingest', 'staff', 'admin']).token : identity.issueToken('user', TEST_USER);
  } finally {
    identity.close();
  }
}

export function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}
