import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import pkg from '../../../package.json' with { type: 'json' };

const BIN = new URL('../../../bin/dicom-vault.js', import.meta.url).pathname;

/** Starts `dicom-vault serve` and reads the process's own command line and environment once it listens. */
async function startedWith(env: Record<string, string>): Promise<{ argv: string[]; env: Map<string, string> }> {
  const dir = await mkdtemp(join(tmpdir(), 'dv-runtime-'));
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--data-dir', dir, '--log-level', 'info'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (/listening|Server listening/i.test(out)) resolve();
      });
      child.once('exit', (code) => reject(new Error(`exited with ${code}: ${out}`)));
    });
    const argv = (await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).split('\0');
    const environ = (await readFile(`/proc/${child.pid}/environ`, 'utf8')).split('\0').filter(Boolean);
    return { argv, env: new Map(environ.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])) };
  } finally {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

describe('runtime', () => {
  it('runs on the Node pinned in devDependencies, not the machine default', () => {
    expect(process.version).toBe(`v${pkg.devDependencies.node}`);
  });

  it('serves with its runtime settings (same PID), and keeps the ones an operator gave', async () => {
    const defaults = await startedWith({});
    expect(defaults.argv).toContain('--max-semi-space-size=1');
    expect(defaults.env.get('MALLOC_ARENA_MAX')).toBe('1');
    expect(defaults.env.get('UV_THREADPOOL_SIZE')).toBe('16');
    const given = await startedWith({ UV_THREADPOOL_SIZE: '6', MALLOC_ARENA_MAX: '2' });
    expect(given.env.get('UV_THREADPOOL_SIZE')).toBe('6');
    expect(given.env.get('MALLOC_ARENA_MAX')).toBe('2');
  });
});
