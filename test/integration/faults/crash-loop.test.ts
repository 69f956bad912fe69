// SIGKILL of a node with its embedded chain, again and again, as a crash or an OOM killer would:
// the chain dies with the node every time, each restart finds its port free (or takes over a
// chain of its own left running), and serves the study it had, byte for byte.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { freePort } from '../../../bench/orthanc.ts';
import { resolveAnvilBinary } from '../../../anchor/anvil.ts';
import { bytesOf } from '../../support/generated.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { serve, killed } from '../../support/process.ts';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '); // a zombie is gone too
  } catch {
    return false;
  }
}

async function gone(pid: number, withinMs: number): Promise<boolean> {
  for (const end = Date.now() + withinMs; Date.now() < end; ) {
    if (!alive(pid)) return true;
    await sleep(50);
  }
  return !alive(pid);
}

describe('SIGKILL with the embedded chain on', () => {
  let dir: string;
  let chainPort: number;
  const study = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed: 7701 });
  let parts: Buffer[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dv-crash-loop-'));
    chainPort = await freePort();
    parts = await Promise.all(study.instances.map(bytesOf));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const start = () => serve(dir, ['--chain', 'embedded', '--chain-port', String(chainPort)], { DICOM_VAULT_CHAIN: 'embedded' });

  it('restarts five times in a row, each time with the chain gone and the study served', async () => {
    let node = await start();
    expect((await stow(node.url, parts)).status).toBe(200);
    for (let round = 1; round <= 5; round++) {
      const anvilPid = Number(readFileSync(join(dir, 'chain', 'anvil.pid'), 'utf8'));
      expect(alive(anvilPid), `round ${round}: the chain runs`).toBe(true);
      node.child.kill('SIGKILL');
      await killed(node.child);
      expect(await gone(anvilPid, 5_000), `round ${round}: the chain died with the node`).toBe(true);
      node = await start();
      const back = await retrieve(`${node.url}/studies/${study.studyInstanceUID}`);
      expect(back.status, `round ${round}`).toBe(200);
      expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual(parts.map((p) => p.toString('base64')).sort());
    }
    await node.stop();
  }, 240_000);

  it('takes over a chain of its own left running from an earlier start (no parent-death signal)', async () => {
    // What a machine without setpriv, or a chain started by the earlier release, leaves behind:
    // anvil on the chain port with the node's state file, named in the pid file, its node gone.
    const anvil = spawn(
      resolveAnvilBinary()!,
      ['--host', '127.0.0.1', '--port', String(chainPort), '--chain-id', '31337', '--state', join(dir, 'chain', 'anvil-state.json'), '--state-interval', '1'],
      {
        stdio: 'ignore',
        detached: true,
      },
    );
    await writeFile(join(dir, 'chain', 'anvil.pid'), `${anvil.pid}\n`);
    for (let i = 0; i < 100 && !(await listening(chainPort)); i++) await sleep(100);
    expect(await listening(chainPort)).toBe(true);
    const node = await start();
    try {
      expect(await gone(anvil.pid!, 10_000), 'the stale chain was stopped').toBe(true);
      const back = await retrieve(`${node.url}/studies/${study.studyInstanceUID}`);
      expect(back.status).toBe(200);
      expect(existsSync(join(dir, 'chain', 'anvil.pid'))).toBe(true);
      expect(Number(readFileSync(join(dir, 'chain', 'anvil.pid'), 'utf8'))).not.toBe(anvil.pid);
    } finally {
      await node.stop();
    }
  }, 120_000);
});

async function listening(port: number): Promise<boolean> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
      signal: AbortSignal.timeout(1000),
    });
    return r.ok;
  } catch {
    return false;
  }
}
