// Transaction fees: EIP-1559 where the chain has a base fee, legacy gasPrice where it has not
// (some consortium chains), and the bump a replacement needs to be accepted.
import { Eip1559FeesNotSupportedError, type PublicClient } from 'viem';

/** Fee values of one transaction; maxPriorityFeePerGas null for a legacy (gasPrice) transaction. */
export interface Fees {
  maxFeePerGas: bigint;
  maxPriorityFeePerGas: bigint | null;
}

/**
 * A replacement must raise both fees by at least 10% (geth's and anvil's rule); 12.5% plus one
 * wei clears it with rounding to spare.
 */
export const REPLACEMENT_BUMP_PERMILLE = 1125n;

export async function estimateFees(client: PublicClient): Promise<Fees> {
  try {
    const f = await client.estimateFeesPerGas({ type: 'eip1559', chain: null });
    return { maxFeePerGas: f.maxFeePerGas, maxPriorityFeePerGas: f.maxPriorityFeePerGas };
  } catch (err) {
    if (!(err instanceof Eip1559FeesNotSupportedError)) throw err;
    return { maxFeePerGas: await client.getGasPrice(), maxPriorityFeePerGas: null };
  }
}

const bump = (v: bigint): bigint => (v * REPLACEMENT_BUMP_PERMILLE) / 1000n + 1n;
const max = (a: bigint, b: bigint): bigint => (a > b ? a : b);

/** Fees for a transaction replacing one sent with `previous`: the current estimate or the bumped previous, whichever is higher. */
export function replacementFees(previous: Fees, current: Fees): Fees {
  return {
    maxFeePerGas: max(current.maxFeePerGas, bump(previous.maxFeePerGas)),
    maxPriorityFeePerGas:
      current.maxPriorityFeePerGas === null ? null : max(current.maxPriorityFeePerGas, bump(previous.maxPriorityFeePerGas ?? current.maxPriorityFeePerGas)),
  };
}
