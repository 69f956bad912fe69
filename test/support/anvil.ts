// A real local EVM node for an anchor suite: one anvil process per test file (port chosen by
// anvil), the anchoring contract deployed from the committed artifact, and anvil's test RPC
// (mine, automine, snapshot/revert, drop) to stage what public chains do: reorgs, dropped and
// replaced transactions, outages.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestClient, http, toHex, type Address, type Hex } from 'viem';
import { mnemonicToAccount, type HDAccount } from 'viem/accounts';
import { startAnvil, type AnvilOptions, type AnvilProcess } from '../../anchor/anvil.ts';
import { createChainClient, type ChainClient } from '../../anchor/chain/client.ts';
import { deployAnchorContract } from '../../anchor/chain/deploy-contract.ts';

/** anvil's public dev mnemonic: ten funded accounts, a different one per test so nonces never clash. */
const DEV_MNEMONIC = 'test test test test test test test test test test test junk';

export function devAccount(index: number): HDAccount {
  return mnemonicToAccount(DEV_MNEMONIC, { addressIndex: index });
}

export function devKey(index: number): Hex {
  return toHex(devAccount(index).getHdKey().privateKey!);
}

export interface TestChain {
  anvil: AnvilProcess;
  rpcUrl: string;
  chainId: number;
  /** DicomVaultAnchor deployed by account 0. */
  contract: Address;
  /** A client signing with dev account `index`. */
  client(index: number): ChainClient;
  test: ReturnType<typeof createTestClient<'anvil', ReturnType<typeof http>>>;
  /** A 0600 key file holding dev account `index`'s key. */
  keyFile(index: number): Promise<string>;
  stop(): Promise<void>;
}

export async function startTestChain(options: Pick<AnvilOptions, 'chainId' | 'statePath'> & { port?: number } = {}): Promise<TestChain> {
  const anvil = await startAnvil({ port: options.port ?? 0, ...options });
  const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-chain-'));
  const client = (index: number): ChainClient => createChainClient({ rpcUrl: anvil.rpcUrl, account: devAccount(index) });
  const deployed = await deployAnchorContract({ client: client(0) });
  return {
    anvil,
    rpcUrl: anvil.rpcUrl,
    chainId: deployed.chainId,
    contract: deployed.address,
    client,
    test: createTestClient({ mode: 'anvil', transport: http(anvil.rpcUrl) }),
    async keyFile(index) {
      const path = join(dir, `key-${index}`);
      await writeFile(path, devKey(index) + '\n', { mode: 0o600 });
      await chmod(path, 0o600);
      return path;
    },
    async stop() {
      await anvil.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
