// The anchoring contract: the committed artifact is what its Solidity source compiles to, and on
// a real chain it records each root once, with its block time, and says so in an event.
import { readFileSync } from 'node:fs';
import { BaseError, ContractFunctionRevertedError, createWalletClient, http, parseEventLogs, type Hex } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACT_PATH, compileAnchorContract } from '../../../anchor/contract/compile.ts';
import { anchorAbi, anchorArtifact } from '../../../anchor/contract/abi.ts';
import { useSharedChain, type TestChain } from '../../support/anvil.ts';

describe('DicomVaultAnchor source and artifact', () => {
  it('the committed artifact is exactly what solc compiles from DicomVaultAnchor.sol', async () => {
    const compiled = await compileAnchorContract();
    const committed = JSON.parse(readFileSync(ARTIFACT_PATH, 'utf8'));
    expect(committed.sourceSha256).toBe(compiled.sourceSha256);
    expect(committed.bytecode).toBe(compiled.bytecode);
    expect(committed.deployedBytecode).toBe(compiled.deployedBytecode);
    expect(committed.abi).toEqual(compiled.abi);
    // The typed ABI the node uses is the compiled one.
    const norm = (abi: readonly unknown[]): unknown[] =>
      [...abi].map((e) => JSON.parse(JSON.stringify(e, Object.keys(e as object).sort()))).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    expect(norm(anchorAbi.map((e) => ({ ...e })))).toEqual(norm(compiled.abi));
  });

  it('a changed source no longer matches the artifact', async () => {
    const source = readFileSync(new URL('../../../anchor/contract/DicomVaultAnchor.sol', import.meta.url), 'utf8');
    const changed = await compileAnchorContract(source.replace('anchoredAt[root] = block.timestamp;', 'anchoredAt[root] = block.timestamp + 1;'));
    expect(changed.deployedBytecode).not.toBe(anchorArtifact().deployedBytecode);
  });
});

describe('DicomVaultAnchor on a real chain', () => {
  let chain: TestChain;
  beforeAll(async () => {
    chain = await useSharedChain();
  });
  afterAll(async () => chain?.stop());

  const root = `0x${'ab'.repeat(32)}` as Hex;

  it('records a root once with its block time and emits Anchored', async () => {
    const c = chain.client(1);
    const pub = c.public;
    expect(await pub.readContract({ address: chain.contract, abi: anchorAbi, functionName: 'anchoredAt', args: [root] })).toBe(0n);
    const wallet = createWalletClient({ account: c.account!, transport: http(chain.rpcUrl) });
    const hash = await wallet.writeContract({ address: chain.contract, abi: anchorAbi, functionName: 'anchor', args: [root], chain: null });
    const receipt = await pub.waitForTransactionReceipt({ hash });
    expect(receipt.status).toBe('success');
    const block = await pub.getBlock({ blockNumber: receipt.blockNumber });
    const events = parseEventLogs({ abi: anchorAbi, logs: receipt.logs, eventName: 'Anchored' });
    expect(events).toHaveLength(1);
    expect(events[0]!.args).toEqual({ root, timestamp: block.timestamp });
    expect(await pub.readContract({ address: chain.contract, abi: anchorAbi, functionName: 'anchoredAt', args: [root] })).toBe(block.timestamp);
    // One storage slot and one event: about 45k gas, whatever the batch behind the root.
    expect(receipt.gasUsed).toBeLessThan(50_000n);
  });

  it('refuses to anchor the same root again, keeping the first time', async () => {
    const c = chain.client(2);
    const err = await c.public
      .simulateContract({ address: chain.contract, abi: anchorAbi, functionName: 'anchor', args: [root], account: c.account! })
      .catch((e: unknown) => e);
    const reverted = err instanceof BaseError ? err.walk((e) => e instanceof ContractFunctionRevertedError) : null;
    expect(reverted).toBeInstanceOf(ContractFunctionRevertedError);
    expect((reverted as ContractFunctionRevertedError).data?.errorName).toBe('AlreadyAnchored');
  });
});
