// `dicom-vault deploy-contract` as an operator runs it against an external chain (the run's
// shared anvil): the real CLI deploys DicomVaultAnchor, prints the flags to anchor there, and a
// node started with exactly those flags anchors a study whose receipt the standalone
// `verify-receipt` accepts, naming the deployed contract. Wrong input deploys nothing.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getAddress, type Address } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import type { ServedNode } from '../../../bench/node-process.ts';
import { anchorArtifact } from '../../../anchor/contract/abi.ts';
import { parseReceipt, type ReceiptJson } from '../../../anchor/receipt.ts';
import { useSharedChain, type TestChain } from '../../support/anvil.ts';
import { stow } from '../../support/dicomweb.ts';
import { run as runCli, serve } from '../../support/process.ts';

/** The CLI, clearing the suite-wide DICOM_VAULT_CHAIN=none so --chain-rpc applies. */
const run = (args: string[]): ReturnType<typeof runCli> => runCli(args, { DICOM_VAULT_CHAIN: '' });

let chain: TestChain;
const dirs: string[] = [];
const nodes: ServedNode[] = [];
beforeAll(async () => {
  chain = await useSharedChain();
});
afterAll(async () => {
  for (const n of nodes) await n.stop();
  await chain?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'dicom-vault-deploy-'));
  dirs.push(d);
  return d;
}

/** Asks for the receipt until it is issued (bounded; asserts nothing about time). */
async function receiptOf(url: string): Promise<ReceiptJson> {
  for (let i = 0; i < 300; i++) {
    const res = await fetch(url);
    if (res.status === 200) return (await res.json()) as ReceiptJson;
    expect(res.status).toBe(202);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no receipt at ${url}`);
}

describe('dicom-vault deploy-contract', () => {
  it('deploys the contract and prints the flags with which a node then anchors there, verifiably', async () => {
    const keyFile = await chain.keyFile(1);
    const deployer = chain.client(1).account!.address;
    const deployed = await run(['deploy-contract', '--chain-rpc', chain.rpcUrl, '--chain-key-file', keyFile, '--chain-id', String(chain.chainId)]);
    expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0);
    const line = /^deployed DicomVaultAnchor at (0x[0-9a-fA-F]{40}) on chain (\d+) \(tx (0x[0-9a-f]{64}), block (\d+), (\d+) gas\)$/m.exec(deployed.stdout);
    expect(line, deployed.stdout).not.toBeNull();
    const [, address, chainId, txHash] = line! as unknown as [string, Address, string, `0x${string}`];
    expect(Number(chainId)).toBe(chain.chainId);
    expect(address).toBe(getAddress(address)); // EIP-55, as --contract and receipts carry it

    // On chain: the deployer's transaction created exactly the committed runtime code there.
    const pub = chain.client(0).public;
    const tx = await pub.getTransactionReceipt({ hash: txHash });
    expect(tx).toMatchObject({ status: 'success', contractAddress: address.toLowerCase(), from: deployer.toLowerCase() });
    expect(await pub.getCode({ address })).toBe(anchorArtifact().deployedBytecode);

    // The printed flags, used verbatim, make a node anchor on that contract.
    const flags = /^anchor there with: (.+)$/m.exec(deployed.stdout)?.[1]?.split(' ') ?? [];
    expect(flags).toEqual(['--chain-rpc', chain.rpcUrl, '--chain-id', String(chain.chainId), '--chain-key-file', keyFile, '--contract', address]);
    const dataDir = await tempDir();
    const node = await serve(dataDir, [...flags, '--anchor-interval', '0', '--confirmations', '1'], { DICOM_VAULT_CHAIN: '' });
    nodes.push(node);
    const study = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: 401 });
    const chunks: Buffer[] = [];
    for await (const c of study.instances[0]!.open()) chunks.push(c);
    expect((await stow(node.url, [Buffer.concat(chunks)])).status).toBe(200);
    const receipt = await receiptOf(`${node.url}/studies/${study.studyInstanceUID}/receipt`);
    expect(receipt).toMatchObject({ chainId: chain.chainId, contract: address });

    // Checked with nothing but the receipt and the chain, and by the node's own `verify`.
    const file = join(dataDir, 'receipt.json');
    await writeFile(file, JSON.stringify(receipt));
    const pinned = await run(['anchor', 'trust-file', '--data-dir', dataDir, ...flags]);
    expect(pinned.code, pinned.stderr).toBe(0);
    expect(JSON.parse(pinned.stdout)).toMatchObject({ v: 'dicom-vault-trust/1', anchors: [{ chainId: chain.chainId, contract: address }] });
    const trust = join(dataDir, 'trust.json');
    await writeFile(trust, pinned.stdout);
    const holds = await run(['verify-receipt', file, '--rpc', chain.rpcUrl, '--trust', trust, '--cid', receipt.cid]);
    // The run's chain has anvil's chain id 31337: consistent, and labelled self-attested.
    expect(holds.code, holds.stdout + holds.stderr).toBe(5);
    expect(holds.stdout).toMatch(/^OK {4}contract/m);
    expect(holds.stdout).toContain(`SELF-ATTESTED: ${parseReceipt(receipt).cid} was anchored on chain ${chain.chainId} by contract ${address} `);
    const verified = await run(['verify', study.studyInstanceUID, '--data-dir', dataDir, ...flags]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/receipt holds/);
    await node.stop();
  });

  it('prints JSON with --json; each deployment is a new contract', async () => {
    const keyFile = await chain.keyFile(2);
    const args = ['deploy-contract', '--chain-rpc', chain.rpcUrl, '--chain-key-file', keyFile, '--json'];
    const first = await run(args);
    const second = await run(args);
    expect(first.code, first.stderr).toBe(0);
    expect(second.code, second.stderr).toBe(0);
    const a = JSON.parse(first.stdout) as { address: Address; chainId: number; txHash: string; blockNumber: number; gasUsed: string };
    const b = JSON.parse(second.stdout) as typeof a;
    expect(a).toMatchObject({ chainId: chain.chainId, address: expect.stringMatching(/^0x[0-9a-fA-F]{40}$/), gasUsed: expect.stringMatching(/^\d+$/) });
    expect(b.address).not.toBe(a.address);
    for (const d of [a, b]) expect(await chain.client(0).public.getCode({ address: d.address })).toBe(anchorArtifact().deployedBytecode);
  });

  it('deploys nothing when the chain id, the RPC or the key file is wrong', async () => {
    const keyFile = await chain.keyFile(3);
    const account = chain.client(3).account!.address;
    const nonce = (): Promise<number> => chain.client(0).public.getTransactionCount({ address: account, blockTag: 'pending' });
    const before = await nonce();

    const wrongChain = await run(['deploy-contract', '--chain-rpc', chain.rpcUrl, '--chain-key-file', keyFile, '--chain-id', '5']);
    expect(wrongChain.code).toBe(1);
    expect(wrongChain.stderr).toMatch(new RegExp(`CONFIG_INVALID: the RPC serves chain ${chain.chainId}, not --chain-id 5`));

    const noRpc = await run(['deploy-contract']);
    expect(noRpc.code).toBe(1);
    expect(noRpc.stderr).toMatch(/CONFIG_INVALID: deploy-contract needs --chain-rpc URL/);
    const keyOnly = await run(['deploy-contract', '--chain-key-file', keyFile]);
    expect(keyOnly.code).toBe(1);
    expect(keyOnly.stderr).toMatch(/CONFIG_INVALID: --chain-key-file applies to an external chain: give --chain-rpc too/);

    const noKey = await run(['deploy-contract', '--chain-rpc', chain.rpcUrl]);
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toMatch(/CONFIG_INVALID: deploy-contract needs --chain-key-file/);

    await chmod(keyFile, 0o644);
    const readable = await run(['deploy-contract', '--chain-rpc', chain.rpcUrl, '--chain-key-file', keyFile]);
    expect(readable.code).toBe(1);
    expect(readable.stderr).toMatch(/CONFIG_INVALID: signer key file \S+ is readable by others: chmod 600 it/);

    const unreachable = await run(['deploy-contract', '--chain-rpc', 'http://127.0.0.1:9', '--chain-key-file', await chain.keyFile(4)]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/CHAIN_UNAVAILABLE/);

    expect(await nonce()).toBe(before);
  });
});
