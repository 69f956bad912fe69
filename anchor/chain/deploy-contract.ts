// Deploys the anchoring contract from the committed artifact and waits for it to be mined.
import { getAddress, getContractAddress, type Address, type Hex } from 'viem';
import { sendRawTransaction } from 'viem/actions';
import { VaultError } from '../../src/core/errors.ts';
import { anchorArtifact } from '../contract/abi.ts';
import { toChainError, type ChainClient } from './client.ts';
import { estimateFees } from './fees.ts';

/** How long to wait for the deployment to be mined, ms. */
export const DEFAULT_DEPLOY_TIMEOUT_MS = 120_000;

export interface DeployContractParameters {
  client: ChainClient;
  /** Wait for the receipt at most this long, ms. Default DEFAULT_DEPLOY_TIMEOUT_MS. */
  timeoutMs?: number;
}

export interface DeployContractReturnType {
  address: Address;
  chainId: number;
  txHash: Hex;
  blockNumber: number;
  gasUsed: bigint;
}

/** CONFIG_INVALID without a signer; CHAIN_UNAVAILABLE / CHAIN_ERROR from the chain. */
export type DeployContractErrorType = VaultError;

export async function deployAnchorContract({ client, timeoutMs = DEFAULT_DEPLOY_TIMEOUT_MS }: DeployContractParameters): Promise<DeployContractReturnType> {
  const account = client.account;
  if (!account) throw new VaultError('CONFIG_INVALID', 'deploying the contract needs a signer key');
  const { bytecode } = anchorArtifact();
  try {
    const chainId = await client.public.getChainId();
    const nonce = await client.public.getTransactionCount({ address: account.address, blockTag: 'pending' });
    const fees = await estimateFees(client.public);
    const gas = await client.public.estimateGas({ account: account.address, data: bytecode });
    const raw = await account.signTransaction(
      fees.maxPriorityFeePerGas === null
        ? { type: 'legacy', chainId, nonce, gas: (gas * 5n) / 4n, gasPrice: fees.maxFeePerGas, data: bytecode }
        : {
            type: 'eip1559',
            chainId,
            nonce,
            gas: (gas * 5n) / 4n,
            maxFeePerGas: fees.maxFeePerGas,
            maxPriorityFeePerGas: fees.maxPriorityFeePerGas,
            data: bytecode,
          },
    );
    const txHash = await sendRawTransaction(client.public, { serializedTransaction: raw });
    const receipt = await client.public.waitForTransactionReceipt({ hash: txHash, timeout: timeoutMs });
    if (receipt.status !== 'success') throw new VaultError('CHAIN_ERROR', `contract deployment ${txHash} reverted`);
    return {
      // EIP-55 checksummed, as receipts and --contract carry it (RPC receipts give lower case).
      address: getAddress(receipt.contractAddress ?? getContractAddress({ from: account.address, nonce: BigInt(nonce) })),
      chainId,
      txHash,
      blockNumber: Number(receipt.blockNumber),
      gasUsed: receipt.gasUsed,
    };
  } catch (err) {
    throw toChainError(err, 'deploying the anchoring contract');
  }
}
