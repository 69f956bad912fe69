// A connection to one EVM JSON-RPC endpoint (the embedded anvil or any other chain) and the
// signer, if any. Only viem's public actions over HTTP plus a local account: transactions are
// signed here and sent raw, so the node never needs an unlocked account on the RPC side.
import { readFileSync, statSync } from 'node:fs';
import { BaseError, createPublicClient, http, HttpRequestError, TimeoutError, type Address, type Hex, type PublicClient } from 'viem';
import { privateKeyToAccount, type LocalAccount, type PrivateKeyAccount } from 'viem/accounts';
import { VaultError } from '../../src/core/errors.ts';

/** Timeout of one JSON-RPC request, in milliseconds. */
export const DEFAULT_RPC_TIMEOUT_MS = 10_000;

export interface ChainClientOptions {
  /** JSON-RPC URL (http or https). */
  rpcUrl: string;
  /** Signer for anchoring and deploying; none for read-only use (verification). */
  account?: LocalAccount;
  /** One request's timeout, ms. Default DEFAULT_RPC_TIMEOUT_MS. */
  timeoutMs?: number;
}

export interface ChainClient {
  rpcUrl: string;
  public: PublicClient;
  account: LocalAccount | undefined;
}

export function createChainClient(options: ChainClientOptions): ChainClient {
  let url: URL;
  try {
    url = new URL(options.rpcUrl);
  } catch (cause) {
    throw new VaultError('CONFIG_INVALID', `chain RPC "${options.rpcUrl}" is not a URL`, { cause });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new VaultError('CONFIG_INVALID', `chain RPC must be http(s) (got ${url.protocol})`);
  return {
    rpcUrl: options.rpcUrl,
    // No transport retries: the anchor service retries whole steps with its own backoff.
    public: createPublicClient({ transport: http(options.rpcUrl, { retryCount: 0, timeout: options.timeoutMs ?? DEFAULT_RPC_TIMEOUT_MS }) }),
    account: options.account,
  };
}

/** The signer's account from a private key: 0x-prefixed or bare hex. */
export function accountFromKey(key: string): PrivateKeyAccount {
  const hex = (key.trim().startsWith('0x') ? key.trim() : `0x${key.trim()}`) as Hex;
  if (!/^0x[0-9a-fA-F]{64}$/.test(hex)) throw new VaultError('CONFIG_INVALID', 'the signer key must be 32 bytes of hex');
  return privateKeyToAccount(hex);
}

/**
 * Reads a signer key file: one line of hex, readable by its owner only (like an ssh key), since
 * whoever holds it spends the account's funds.
 */
export function readKeyFile(path: string): PrivateKeyAccount {
  let text: string;
  try {
    if (process.platform !== 'win32' && (statSync(path).mode & 0o077) !== 0) {
      throw new VaultError('CONFIG_INVALID', `signer key file ${path} is readable by others: chmod 600 it`);
    }
    text = readFileSync(path, 'utf8');
  } catch (cause) {
    if (cause instanceof VaultError) throw cause;
    throw new VaultError('CONFIG_INVALID', `cannot read the signer key file ${path}`, { cause });
  }
  return accountFromKey(text);
}

/** A viem failure as a catalogue error: unreachable or timed out is CHAIN_UNAVAILABLE, the rest CHAIN_ERROR. */
export function toChainError(err: unknown, doing: string): VaultError {
  if (err instanceof VaultError) return err;
  const unreachable = err instanceof BaseError && err.walk((e) => e instanceof HttpRequestError || e instanceof TimeoutError) !== null;
  const reason = err instanceof BaseError ? err.shortMessage : err instanceof Error ? err.message : String(err);
  return new VaultError(unreachable ? 'CHAIN_UNAVAILABLE' : 'CHAIN_ERROR', `${doing}: ${reason}`, { cause: err });
}

/** True when the contract's runtime code at `address` is exactly `expected`. */
export async function hasCode(client: ChainClient, address: Address, expected: Hex): Promise<boolean> {
  const code = await client.public.getCode({ address });
  return code !== undefined && code.toLowerCase() === expected.toLowerCase();
}
