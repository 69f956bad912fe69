// Signs `anchor(root)` with the node's key and broadcasts it. The signed transaction is handed to
// `onSigned` before it leaves the process, so a crash between signing and broadcasting can
// never lose track of a transaction that might be mined.
import { BaseError, ContractFunctionRevertedError, encodeFunctionData, keccak256, type Address, type Hex } from 'viem';
import { sendRawTransaction } from 'viem/actions';
import { VaultError } from '../../src/core/errors.ts';
import { anchorAbi } from '../contract/abi.ts';
import { toChainError, type ChainClient } from './client.ts';
import { estimateFees, replacementFees, type Fees } from './fees.ts';

export interface SendAnchorTransactionParameters {
  client: ChainClient;
  contract: Address;
  /** Batch root, bytes32 hex. */
  root: Hex;
  /** Chain id to sign for (EIP-155 replay protection). */
  chainId: number;
  /** Nonce to use (a replacement reuses its predecessor's); default the account's next pending nonce. */
  nonce?: number;
  /** Fees of the transaction this one replaces: the new fees bump them. */
  replaces?: Fees;
  /** Receives the signed transaction before it is broadcast; persist it there. */
  onSigned(tx: SignedAnchorTransaction): void;
}

export interface SignedAnchorTransaction {
  txHash: Hex;
  nonce: number;
  fees: Fees;
  gas: bigint;
  /** Chain head when signed. */
  headBlock: number;
}

export type SendAnchorTransactionReturnType =
  | { status: 'sent'; tx: SignedAnchorTransaction }
  /** The contract already holds this root (anchored by an earlier transaction, ours or not). */
  | { status: 'already-anchored' };

/** CONFIG_INVALID without a signer; CHAIN_UNAVAILABLE / CHAIN_ERROR from the chain (also after onSigned). */
export type SendAnchorTransactionErrorType = VaultError;

export async function sendAnchorTransaction(p: SendAnchorTransactionParameters): Promise<SendAnchorTransactionReturnType> {
  const account = p.client.account;
  if (!account) throw new VaultError('CONFIG_INVALID', 'anchoring needs a signer key');
  const data = encodeFunctionData({ abi: anchorAbi, functionName: 'anchor', args: [p.root] });
  let signed: SignedAnchorTransaction;
  let raw: Hex;
  try {
    let gas: bigint;
    try {
      gas = await p.client.public.estimateContractGas({
        address: p.contract,
        abi: anchorAbi,
        functionName: 'anchor',
        args: [p.root],
        account: account.address,
        blockTag: 'latest',
      });
    } catch (err) {
      const reverted = err instanceof BaseError ? err.walk((e) => e instanceof ContractFunctionRevertedError) : null;
      if (reverted instanceof ContractFunctionRevertedError && reverted.data?.errorName === 'AlreadyAnchored') return { status: 'already-anchored' };
      throw err;
    }
    const [headBlock, nonce, current] = await Promise.all([
      p.client.public.getBlockNumber({ cacheTime: 0 }),
      p.nonce ?? p.client.public.getTransactionCount({ address: account.address, blockTag: 'pending' }),
      estimateFees(p.client.public),
    ]);
    const fees = p.replaces ? replacementFees(p.replaces, current) : current;
    // A margin over the estimate: storage costs can shift between estimate and inclusion.
    const gasLimit = (gas * 5n) / 4n;
    raw = await account.signTransaction(
      fees.maxPriorityFeePerGas === null
        ? { type: 'legacy', chainId: p.chainId, nonce, gas: gasLimit, gasPrice: fees.maxFeePerGas, to: p.contract, data }
        : {
            type: 'eip1559',
            chainId: p.chainId,
            nonce,
            gas: gasLimit,
            maxFeePerGas: fees.maxFeePerGas,
            maxPriorityFeePerGas: fees.maxPriorityFeePerGas,
            to: p.contract,
            data,
          },
    );
    signed = { txHash: keccak256(raw), nonce, fees, gas: gasLimit, headBlock: Number(headBlock) };
  } catch (err) {
    throw toChainError(err, 'preparing the anchor transaction');
  }
  p.onSigned(signed);
  try {
    await sendRawTransaction(p.client.public, { serializedTransaction: raw });
  } catch (err) {
    // "already known": a resend of what the pool holds; it counts as sent.
    if (!(err instanceof BaseError && /already known/i.test(err.details ?? err.message))) throw toChainError(err, `broadcasting ${signed.txHash}`);
  }
  return { status: 'sent', tx: signed };
}
