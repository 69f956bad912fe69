import { spawn, spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import pkg from '../../../package.json' with { type: 'json' };

const ROOT = new URL('../../../', import.meta.url).pathname;
const BIN = new URL('../../../bin/dicom-vault.js', import.meta.url).pathname;
const POSTINSTALL = new URL('../../../bin/postinstall.js', import.meta.url).pathname;

/** A project dir of its own with the given package.json and lockfile, using our node_modules. */
async function fakeProject(packageJson: object, lock: object = { lockfileVersion: 3, packages: { '': {} } }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dv-runtime-project-'));
  await mkdir(join(dir, 'bin'));
  await copyFile(BIN, join(dir, 'bin', 'dicom-vault.js'));
  await copyFile(POSTINSTALL, join(dir, 'bin', 'postinstall.js'));
  await writeFile(join(dir, 'package.json'), JSON.stringify(packageJson));
  await writeFile(join(dir, 'package-lock.json'), JSON.stringify(lock));
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

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

  it("refuses, naming package.json's engines.node, a Node it cannot replace by a newer one", async () => {
    const dir = await fakeProject({ type: 'module', engines: { node: '>=99' } });
    try {
      // The pinned Node itself is too old for these engines: an error, not a re-exec loop.
      const r = spawnSync(process.execPath, [join(dir, 'bin', 'dicom-vault.js'), '--help'], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`dicom-vault needs Node >=99 (this is ${process.version})`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('finds the install whole: every native package of this platform it asks for is there', () => {
    const r = spawnSync(process.execPath, [POSTINSTALL], { cwd: ROOT, encoding: 'utf8', env: { PATH: process.env.PATH ?? '' }, timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('fails an install that lacks a native package of this platform, or runs on a Node older than engines.node', async () => {
    const native = { version: '1.0.0', optional: true, os: [process.platform], cpu: [process.arch] };
    const dir = await fakeProject(
      { type: 'module', engines: { node: '>=22' }, optionalDependencies: { 'dv-missing-native': '1.0.0' } },
      { lockfileVersion: 3, packages: { '': { optionalDependencies: { 'dv-missing-native': '1.0.0' } }, 'node_modules/dv-missing-native': native } },
    );
    try {
      const env = { PATH: process.env.PATH ?? '' };
      const missing = spawnSync(process.execPath, [join(dir, 'bin', 'postinstall.js')], { encoding: 'utf8', env, timeout: 30_000 });
      expect(missing.status).toBe(1);
      expect(missing.stderr).toContain('npm left out dv-missing-native@1.0.0');
      await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'module', engines: { node: '>=99' }, devDependencies: { node: '99.0.0' } }));
      const old = spawnSync(process.execPath, [join(dir, 'bin', 'postinstall.js')], { encoding: 'utf8', env, timeout: 30_000 });
      expect(old.status).toBe(1);
      expect(old.stderr).toContain(`npm scripts would run on Node ${process.version}`);
      expect(old.stderr).toContain('needs Node >=99');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("CI runs exactly the README's test command", async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const quickStart = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('\n## ', readme.indexOf('## Quick start') + 1));
    const commands = [...quickStart.matchAll(/^```sh\n([\s\S]*?)^```/gm)][0]![1]!
      .split('\n')
      .map((line) => line.replace(/#.*$/, '').trim())
      .filter(Boolean);
    expect(commands).toEqual(['npm ci && npm start', 'test/services/setup.sh && npm test']);
    const ci = (await readFile(join(ROOT, '.ci', 'run'), 'utf8')).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
    expect(ci.at(-1)).toBe(commands[1]);
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
