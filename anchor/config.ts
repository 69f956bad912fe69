// Anchoring options: which chain, which signer and contract, how roots are batched. Typed and
// validated once at start-up with the rest of the node's configuration (src/shell/config.ts spreads
// ANCHOR_FLAGS into its FLAGS and calls resolveAnchorConfig).
import { isAddress, getAddress, type Address } from 'viem';
import { VaultError } from '../src/core/errors.ts';
import { DEFAULT_CHAIN_PORT } from './anvil.ts';
import { DEFAULT_BATCH_INTERVAL_S, DEFAULT_BATCH_MAX_LEAVES } from './service.ts';

/** Confirmations on the embedded chain: a single-node chain of our own cannot reorganise. */
export const DEFAULT_EMBEDDED_CONFIRMATIONS = 1;
/** Confirmations on an external chain (about 2.5 minutes on Ethereum, seconds on most L2s). */
export const DEFAULT_EXTERNAL_CONFIRMATIONS = 12;

export const ANCHOR_FLAGS = {
  chain: {
    env: 'DICOM_VAULT_CHAIN',
    arg: 'mode',
    help: 'anchoring: embedded (a local anvil the node runs) or none; --chain-rpc selects an external chain',
    default: 'embedded',
  },
  'chain-port': { env: 'DICOM_VAULT_CHAIN_PORT', arg: 'port', help: 'JSON-RPC port of the embedded chain on 127.0.0.1', default: String(DEFAULT_CHAIN_PORT) },
  'chain-rpc': {
    env: 'DICOM_VAULT_CHAIN_RPC',
    arg: 'url',
    help: 'JSON-RPC URL of an external EVM chain to anchor on instead (an L2, Ethereum, a consortium chain)',
  },
  'chain-id': { env: 'DICOM_VAULT_CHAIN_ID', arg: 'id', help: 'chain id the --chain-rpc endpoint must serve (checked before anchoring)' },
  'chain-key-file': { env: 'DICOM_VAULT_CHAIN_KEY_FILE', arg: 'file', help: "file with the signer's hex private key, mode 0600 (external chain)" },
  contract: { env: 'DICOM_VAULT_CONTRACT', arg: 'address', help: 'anchoring contract address on the external chain (see deploy-contract)' },
  'browser-chain-rpc': {
    env: 'DICOM_VAULT_BROWSER_CHAIN_RPC',
    arg: 'url',
    help: "JSON-RPC URL (CORS-enabled) that patients' browsers use to check the audit log's anchors; default: the embedded chain's, an external chain's never (its URL may carry an API key)",
  },
  'anchor-batch-size': {
    env: 'DICOM_VAULT_ANCHOR_BATCH_SIZE',
    arg: 'roots',
    help: 'roots per anchoring batch at most',
    default: String(DEFAULT_BATCH_MAX_LEAVES),
  },
  'anchor-interval': {
    env: 'DICOM_VAULT_ANCHOR_INTERVAL',
    arg: 'seconds',
    help: 'seconds a root waits at most before its batch closes',
    default: String(DEFAULT_BATCH_INTERVAL_S),
  },
  confirmations: {
    env: 'DICOM_VAULT_CONFIRMATIONS',
    arg: 'blocks',
    help: 'blocks until an anchor counts as confirmed',
    default: `${DEFAULT_EMBEDDED_CONFIRMATIONS} embedded, ${DEFAULT_EXTERNAL_CONFIRMATIONS} external`,
  },
} as const;

export type AnchorFlagName = keyof typeof ANCHOR_FLAGS;

export type ChainMode = 'embedded' | 'external' | 'none';

export interface AnchorConfig {
  /** embedded: anvil run by the node (default); external: --chain-rpc; none: no anchoring. */
  mode: ChainMode;
  /** Embedded chain's JSON-RPC port on 127.0.0.1. Default DEFAULT_CHAIN_PORT (8545). */
  chainPort: number;
  /** External chain's JSON-RPC URL. */
  rpcUrl?: string;
  /** Chain id the external RPC must serve; unchecked when absent. */
  chainId?: number;
  /** External chain: the signer's key file. */
  keyFile?: string;
  /** External chain: the anchoring contract. */
  contract?: Address;
  /** Roots per batch at most. Default DEFAULT_BATCH_MAX_LEAVES. */
  batchMaxLeaves: number;
  /** Seconds the oldest root waits at most before its batch closes. Default DEFAULT_BATCH_INTERVAL_S. */
  batchIntervalS: number;
  /** Blocks until confirmed. Default DEFAULT_EMBEDDED_CONFIRMATIONS or DEFAULT_EXTERNAL_CONFIRMATIONS. */
  confirmations: number;
  /** The RPC patients' browsers call to check anchors themselves (--browser-chain-rpc). */
  browserRpcUrl?: string;
}

function int(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw)) throw new VaultError('CONFIG_INVALID', `--${name} must be a whole number (got "${raw}")`);
  const n = Number(raw);
  if (n < min || n > max) throw new VaultError('CONFIG_INVALID', `--${name} must be between ${min} and ${max} (got ${n})`);
  return n;
}

/** Builds the anchoring options from flags (or their environment variables); throws CONFIG_INVALID with a reason. */
export function resolveAnchorConfig(get: (name: AnchorFlagName) => string | undefined): AnchorConfig {
  const rpcUrl = get('chain-rpc');
  // An empty value counts as unset (DICOM_VAULT_CHAIN= in a shell clears an inherited one).
  const chain = get('chain') || undefined;
  if (chain !== undefined && chain !== 'embedded' && chain !== 'none')
    throw new VaultError('CONFIG_INVALID', `--chain must be embedded or none (got "${chain}")`);
  if (chain === 'none' && rpcUrl !== undefined) throw new VaultError('CONFIG_INVALID', '--chain none and --chain-rpc contradict each other');
  const mode: ChainMode = rpcUrl !== undefined ? 'external' : (chain ?? 'embedded');
  const raw = (name: AnchorFlagName): string | undefined => get(name);
  const config: AnchorConfig = {
    mode,
    chainPort: raw('chain-port') === undefined ? DEFAULT_CHAIN_PORT : int('chain-port', raw('chain-port')!, 0, 65535),
    batchMaxLeaves: raw('anchor-batch-size') === undefined ? DEFAULT_BATCH_MAX_LEAVES : int('anchor-batch-size', raw('anchor-batch-size')!, 1, 1_000_000),
    batchIntervalS: raw('anchor-interval') === undefined ? DEFAULT_BATCH_INTERVAL_S : int('anchor-interval', raw('anchor-interval')!, 0, 7 * 24 * 3600),
    confirmations:
      raw('confirmations') === undefined
        ? mode === 'external'
          ? DEFAULT_EXTERNAL_CONFIRMATIONS
          : DEFAULT_EMBEDDED_CONFIRMATIONS
        : int('confirmations', raw('confirmations')!, 1, 10_000),
  };
  const browserRpc = get('browser-chain-rpc');
  if (browserRpc !== undefined) {
    if (mode === 'none') throw new VaultError('CONFIG_INVALID', '--browser-chain-rpc needs a chain: the node does not anchor (--chain none)');
    if (!URL.canParse(browserRpc) || !/^https?:$/.test(new URL(browserRpc).protocol))
      throw new VaultError('CONFIG_INVALID', `--browser-chain-rpc must be an http(s) URL (got "${browserRpc}")`);
    config.browserRpcUrl = browserRpc;
  }
  if (mode !== 'external') {
    for (const name of ['chain-id', 'chain-key-file', 'contract'] as const) {
      if (get(name) !== undefined) throw new VaultError('CONFIG_INVALID', `--${name} applies to an external chain: give --chain-rpc too`);
    }
    return config;
  }
  config.rpcUrl = rpcUrl!;
  const chainId = get('chain-id');
  if (chainId !== undefined) config.chainId = int('chain-id', chainId, 1, Number.MAX_SAFE_INTEGER);
  // Key and contract are required where they are used (anchoring, deploying), not here: a
  // read-only command (verify) needs neither.
  const keyFile = get('chain-key-file');
  if (keyFile !== undefined) config.keyFile = keyFile;
  const contract = get('contract');
  if (contract !== undefined) {
    if (!isAddress(contract, { strict: false })) throw new VaultError('CONFIG_INVALID', `--contract "${contract}" is not an address`);
    config.contract = getAddress(contract);
  }
  return config;
}
