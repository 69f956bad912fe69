// The embedded default, as `npm start` runs it: `dicom-vault serve` starts a real anvil on the
// chain port, deploys the contract once, anchors there, and keeps the chain in the data
// directory, so receipts still verify after a restart and with the node stopped.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { killed, run, serve } from '../../support/process.ts';
import type { ServedNode as Served } from '../../../bench/node-process.ts';
import { stow } from '../../support/dicomweb.ts';

const dirs: string[] = [];
const children: Served[] = [];
afterAll(async () => {
  for (const c of children) {
    c.child.kill('SIGTERM');
    await killed(c.child);
  }
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function stop(served: Served): Promise<void> {
  served.child.kill('SIGTERM');
  await killed(served.child);
  expect(served.child.exitCode).toBe(0);
}

/** Asks for the receipt until it is issued (bounded; asserts nothing about time). */
async function receiptOf(url: string): Promise<unknown> {
  for (let i = 0; i < 300; i++) {
    const res = await fetch(url);
    if (res.status === 200) return res.json();
    expect(res.status).toBe(202);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no receipt at ${url}`);
}

describe('embedded chain (the default)', () => {
  it('serves with a local chain and no set-up, and its receipts outlive a restart', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-embedded-'));
    dirs.push(dataDir);
    const port = await freePort();
    const env = { DICOM_VAULT_CHAIN: '', DICOM_VAULT_CHAIN_PORT: String(port), DICOM_VAULT_ANCHOR_INTERVAL: '0' };
    const s = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: 301 });
    const chunks: Buffer[] = [];
    for await (const c of s.instances[0]!.open()) chunks.push(c);

    const first = await serve(dataDir, [], env);
    children.push(first);
    expect((await stow(first.url, [Buffer.concat(chunks)])).status).toBe(200);
    const receipt = await receiptOf(`${first.url}/studies/${s.studyInstanceUID}/receipt`);
    const file = join(dataDir, 'receipt.json');
    await writeFile(file, JSON.stringify(receipt));
    const rpc = `http://127.0.0.1:${port}`;
    // The node's own pin of its embedded chain, with the warning that it is a development chain.
    const pinned = await run(['anchor', 'trust-file', '--data-dir', dataDir], env);
    expect(pinned.code, pinned.stderr).toBe(0);
    expect(pinned.stderr).toMatch(/warning: this pins a development chain/);
    const trust = join(dataDir, 'trust.json');
    await writeFile(trust, pinned.stdout);
    const holds = await run(['verify-receipt', file, '--rpc', rpc, '--trust', trust]);
    expect(holds.code, holds.stdout + holds.stderr).toBe(5);
    expect(holds.stdout).toMatch(/^SELF-ATTESTED: .* on chain 31337 /m);
    await stop(first);

    // The chain lives in the data directory.
    expect(existsSync(join(dataDir, 'chain', 'anvil-state.json'))).toBe(true);
    const contract = JSON.parse(await readFile(join(dataDir, 'chain', 'contract.json'), 'utf8'));

    // With the node stopped, `verify` loads the chain from its state file, read-only.
    const offline = await run(['verify', s.studyInstanceUID, '--data-dir', dataDir], env);
    expect(offline.code, offline.stdout + offline.stderr).toBe(0);
    expect(offline.stdout).toMatch(/receipt holds \(SELF-ATTESTED: chain id 31337 is the development chain id of anvil and hardhat; .*not vouched for/);

    // Restarted: same chain, same contract (not deployed again), same receipt, still holding.
    const second = await serve(dataDir, [], env);
    children.push(second);
    expect(await receiptOf(`${second.url}/studies/${s.studyInstanceUID}/receipt`)).toEqual(receipt);
    expect(JSON.parse(await readFile(join(dataDir, 'chain', 'contract.json'), 'utf8'))).toEqual(contract);
    const again = await run(['verify-receipt', file, '--rpc', rpc, '--trust', trust]);
    expect(again.code, again.stdout).toBe(5);
    await stop(second);
  });
});
