// Stopping the node as a process manager does: SIGTERM or SIGINT to `npm start`, to the bin, or to
// the node process. New work stops, a STOW in flight finishes (or is broken off once the shutdown
// timeout is up), and every process of the tree, the embedded chain included, is gone: checked
// by PID, not by name.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { BIN } from '../../../bench/node-process.ts';
import { freePort } from '../../../bench/orthanc.ts';
import { bytesOf } from '../../support/generated.ts';
import { multipartBody } from '../../support/dicomweb.ts';
import { registerToken } from '../../support/auth.ts';
import { prepareTester } from '../../support/process.ts';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** Every live descendant of `pid` (and `pid`), from /proc. */
function tree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z') continue;
      const ppid = Number(fields[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(e)]);
    } catch {
      // gone meanwhile
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]!) ?? []));
  return out.filter(alive);
}

function alive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

interface Started {
  child: ChildProcess;
  url: string;
  stderr: () => string;
}

/** Starts the node the way `how` says, with the embedded chain on a free port; resolves once it serves. */
/** Debian's own Node (18 on bookworm, 20 here): older than engines.node, so the bin re-runs itself on the pinned one. */
const SYSTEM_NODE = '/usr/bin/node';

async function start(how: 'npm start' | 'bin' | 'system node', dataDir: string, extra: string[] = []): Promise<Started> {
  const env = {
    ...process.env,
    DICOM_VAULT_DATA_DIR: dataDir,
    DICOM_VAULT_PORT: '0',
    DICOM_VAULT_CHAIN: 'embedded',
    DICOM_VAULT_CHAIN_PORT: String(await freePort()),
    DICOM_VAULT_DIMSE_PORT: '0',
    DICOM_VAULT_LOG_LEVEL: 'warn',
  };
  const token = prepareTester(dataDir);
  const child =
    how === 'npm start'
      ? spawn('npm', ['start', '--silent', '--', ...extra], { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn(how === 'system node' ? SYSTEM_NODE : process.execPath, [BIN, 'serve', ...extra], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  for (const end = Date.now() + 60_000; Date.now() < end; ) {
    const m = /serving (http:\/\/\S+)/.exec(err);
    if (m) {
      registerToken(m[1]!, token);
      return { child, url: m[1]!, stderr: () => err };
    }
    if (child.exitCode !== null) throw new Error(`exited: ${err}`);
    await sleep(50);
  }
  throw new Error(`did not serve: ${err}`);
}

async function allGone(pids: number[], withinMs: number): Promise<number[]> {
  for (const end = Date.now() + withinMs; Date.now() < end; ) {
    if (pids.every((p) => !alive(p))) return [];
    await sleep(50);
  }
  return pids.filter(alive);
}

/** A STOW whose body the test sends; resolves with the status, or the error when the connection broke. */
function slowStow(url: string, boundary: string): { write: (b: Buffer) => void; end: (b?: Buffer) => void; done: Promise<number | string> } {
  const u = new URL(`${url}/studies`);
  const req = request({
    host: u.hostname,
    port: u.port,
    path: u.pathname,
    method: 'POST',
    headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, 'transfer-encoding': 'chunked' },
  });
  const done = new Promise<number | string>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', (e) => resolve(e.message));
  });
  return { write: (b) => void req.write(b), end: (b) => void (b ? req.end(b) : req.end()), done };
}

describe('stopping the node by signal', () => {
  let dir: string;
  let body: Buffer;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dv-signals-'));
    const s = planStudy({ kind: 'single', instances: 3, rows: 128, columns: 128, seed: 8801 });
    body = multipartBody(await Promise.all(s.instances.map(bytesOf)), 'sig');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  for (const [how, signal, target] of [
    ['npm start', 'SIGTERM', 'npm'],
    ['npm start', 'SIGINT', 'npm'],
    ['bin', 'SIGTERM', 'node'],
    ['bin', 'SIGINT', 'node'],
    ['npm start', 'SIGTERM', 'node'],
  ] as const) {
    it(`${signal} to ${target} (started by ${how}): the STOW in flight finishes, nothing is left running`, async () => {
      const node = await start(how, dir);
      const pids = tree(node.child.pid!);
      expect(pids.length, 'node and its chain (and npm)').toBeGreaterThanOrEqual(how === 'npm start' ? 3 : 2);
      const nodePid = how === 'npm start' ? pids[1]! : node.child.pid!;
      const stowing = slowStow(node.url, 'sig');
      stowing.write(body.subarray(0, body.length >> 1));
      await sleep(200);
      process.kill(target === 'npm' ? node.child.pid! : nodePid, signal);
      await sleep(300);
      // New connections are refused (or answered 503) once it is stopping.
      const late = await fetch(`${new URL(node.url).origin}/healthz`).then(
        (r) => r.status,
        () => 'refused',
      );
      expect([503, 'refused']).toContain(late);
      stowing.end(body.subarray(body.length >> 1));
      expect(await stowing.done).toBe(200);
      expect(await allGone(pids, 15_000), 'processes left running').toEqual([]);
    }, 90_000);
  }

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`${signal} to the bin started by an older Node (which runs the pinned one as its child): nothing is left running`, async () => {
      const node = await start('system node', dir);
      const pids = tree(node.child.pid!);
      expect(pids.length, 'the old Node, the pinned one and the chain').toBeGreaterThanOrEqual(3);
      process.kill(node.child.pid!, signal);
      expect(await allGone(pids, 15_000), 'processes left running').toEqual([]);
    }, 90_000);
  }

  it('breaks off a STOW that does not finish within the shutdown timeout, and still leaves nothing running', async () => {
    const node = await start('bin', dir, ['--shutdown-timeout', '2']);
    const pids = tree(node.child.pid!);
    const stowing = slowStow(node.url, 'sig');
    stowing.write(body.subarray(0, 1000));
    await sleep(200);
    const t = performance.now();
    process.kill(node.child.pid!, 'SIGTERM');
    const outcome = await stowing.done;
    expect(typeof outcome === 'string' || outcome >= 400).toBe(true);
    expect(await allGone(pids, 15_000)).toEqual([]);
    expect(performance.now() - t).toBeLessThan(10_000);
  }, 60_000);
});
