// Real local EVM nodes for the anchor suites.
//
// - useSharedChain(): the one anvil of the test run, started by vitest's globalSetup
//   (global-setup.ts) and handed over by `inject('anvil')`. Suites run in parallel on it, so each
//   deploys its own DicomVaultAnchor and signs with accounts of its own (fresh keys funded with
//   anvil_setBalance): no two suites ever share a nonce or a contract. Nothing on it may be
//   stopped, rewound, or mined by hand: the type offers no test client.
// - startTestChain(): a private anvil for a suite that stages what public chains do with
//   anvil's test RPC (mine, automine off, snapshot/revert, drop) or stops the chain.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestClient, http, parseEther, type Address, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { inject } from 'vitest';
import { startAnvil, type AnvilOptions, type AnvilProcess } from '../../anchor/anvil.ts';
import { createChainClient, type ChainClient } from '../../anchor/chain/client.ts';
import { deployAnchorContract } from '../../anchor/chain/deploy-contract.ts';

/** Signing accounts per suite; tests pick them by index so that concurrent signers never share a nonce. */
export const TEST_ACCOUNTS = 10;
const FUNDS = parseEther('1000');

export interface TestChain {
  rpcUrl: string;
  chainId: number;
  /** DicomVaultAnchor, deployed by this suite's account 0. */
  contract: Address;
  /** A client signing with this suite's account `index` (0 to TEST_ACCOUNTS - 1). */
  client(index: number): ChainClient;
  /** A 0600 key file holding account `index`'s key. */
  keyFile(index: number): Promise<string>;
  /** Releases what the suite holds (a private chain: stops it). */
  stop(): Promise<void>;
}

/** A chain of the suite's own, with anvil's test RPC to stage reorgs, drops and outages. */
export interface PrivateTestChain extends TestChain {
  anvil: AnvilProcess;
  test: ReturnType<typeof createTestClient<'anvil', ReturnType<typeof http>>>;
}

/** The run's shared anvil (see the module comment). */
export async function useSharedChain(): Promise<TestChain> {
  const shared = inject('anvil');
  if (shared === null) throw new Error('no anvil binary for this platform: the anchor suites need one (npm ci installs @foundry-rs/anvil-*)');
  const { test: _test, ...chain } = await prepare(shared.rpcUrl, async () => undefined);
  return chain;
}

export async function startTestChain(
  options: Pick<AnvilOptions, 'chainId' | 'statePath' | 'genesisTimestamp'> & { port?: number } = {},
): Promise<PrivateTestChain> {
  const anvil = await startAnvil({ port: options.port ?? 0, ...options });
  try {
    return { anvil, ...(await prepare(anvil.rpcUrl, () => anvil.stop())) };
  } catch (err) {
    await anvil.stop();
    throw err;
  }
}

async function prepare(rpcUrl: string, release: () => Promise<void>): Promise<Omit<PrivateTestChain, 'anvil'>> {
  const test = createTestClient({ mode: 'anvil', transport: http(rpcUrl) });
  const accounts: PrivateKeyAccount[] = [];
  const keys: Hex[] = [];
  for (let i = 0; i < TEST_ACCOUNTS; i++) {
    const key = generatePrivateKey();
    keys.push(key);
    accounts.push(privateKeyToAccount(key));
  }
  await Promise.all(accounts.map((a) => test.setBalance({ address: a.address, value: FUNDS })));
  const client = (index: number): ChainClient => {
    const account = accounts[index];
    if (account === undefined) throw new Error(`test account ${index} out of range (0-${TEST_ACCOUNTS - 1})`);
    return createChainClient({ rpcUrl, account });
  };
  const deployed = await deployAnchorContract({ client: client(0) });
  const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-chain-'));
  return {
    rpcUrl,
    chainId: deployed.chainId,
    contract: deployed.address,
    client,
    test,
    async keyFile(index) {
      const key = keys[index];
      if (key === undefined) throw new Error(`test account ${index} out of range (0-${TEST_ACCOUNTS - 1})`);
      const path = join(dir, `key-${index}`);
      await writeFile(path, `${key}\n`, { mode: 0o600 });
      await chmod(path, 0o600);
      return path;
    },
    async stop() {
      await release();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
