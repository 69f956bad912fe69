// Where a batch root was anchored: through one of our transactions (any resend may be the one
// mined), or, when the contract holds the root but none of ours did it, through whichever
// transaction emitted its event (someone copied the root from the mempool, say). Answers only
// from what the chain shows now, so a block reorganised away is no longer found.
import { parseEventLogs, TransactionReceiptNotFoundError, type Address, type Hex, type TransactionReceipt } from 'viem';
import { anchorAbi } from '../contract/abi.ts';
import { toChainError, type ChainClient } from './client.ts';
import type { VaultError } from '../../src/core/errors.ts';

export interface FindAnchoringParameters {
  client: ChainClient;
  contract: Address;
  root: Hex;
  /** Our transactions for this root, any order. */
  txHashes: readonly Hex[];
  /** Look for other senders' events from this block on. Default 0. */
  fromBlock?: number;
}

export interface Anchoring {
  txHash: Hex;
  blockNumber: number;
  blockHash: Hex;
  /** Block timestamp, seconds since the epoch: what the contract recorded. */
  blockTime: number;
  /** Blocks on top of and including the block, at the head seen. */
  confirmations: number;
  /** The transaction was not one of ours. */
  foreign: boolean;
}

export type FindAnchoringReturnType = Anchoring | undefined;

/** CHAIN_UNAVAILABLE / CHAIN_ERROR. */
export type FindAnchoringErrorType = VaultError;

/** True when `receipt` succeeded and emitted Anchored(root) from `contract`. */
export function receiptAnchors(receipt: TransactionReceipt, contract: Address, root: Hex): boolean {
  if (receipt.status !== 'success') return false;
  const events = parseEventLogs({ abi: anchorAbi, eventName: 'Anchored', logs: receipt.logs, strict: true });
  return events.some((e) => e.address.toLowerCase() === contract.toLowerCase() && e.args.root.toLowerCase() === root.toLowerCase());
}

/** The transaction's receipt, or undefined while it is not in a canonical block. */
export async function getReceipt(client: ChainClient, hash: Hex): Promise<TransactionReceipt | undefined> {
  try {
    return await client.public.getTransactionReceipt({ hash });
  } catch (err) {
    if (err instanceof TransactionReceiptNotFoundError) return undefined;
    throw err;
  }
}

export async function findAnchoring(p: FindAnchoringParameters): Promise<FindAnchoringReturnType> {
  try {
    const head = Number(await p.client.public.getBlockNumber({ cacheTime: 0 }));
    const found = async (txHash: Hex, blockNumber: bigint, foreign: boolean): Promise<Anchoring> => {
      const block = await p.client.public.getBlock({ blockNumber });
      return {
        txHash,
        blockNumber: Number(blockNumber),
        blockHash: block.hash,
        blockTime: Number(block.timestamp),
        confirmations: head - Number(blockNumber) + 1,
        foreign,
      };
    };
    for (const hash of p.txHashes) {
      const receipt = await getReceipt(p.client, hash);
      if (receipt && receiptAnchors(receipt, p.contract, p.root)) return await found(hash, receipt.blockNumber, false);
    }
    const at = await p.client.public.readContract({ address: p.contract, abi: anchorAbi, functionName: 'anchoredAt', args: [p.root] });
    if (at === 0n) return undefined;
    const logs = await p.client.public.getContractEvents({
      address: p.contract,
      abi: anchorAbi,
      eventName: 'Anchored',
      args: { root: p.root },
      fromBlock: BigInt(p.fromBlock ?? 0),
      toBlock: 'latest',
      strict: true,
    });
    const first = logs[0];
    if (!first) return undefined;
    return await found(first.transactionHash, first.blockNumber, true);
  } catch (err) {
    throw toChainError(err, 'looking up the anchoring of a batch root');
  }
}
