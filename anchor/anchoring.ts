// Anchoring as part of a running node: the embedded chain (anvil started here, contract deployed
// once and remembered in the data directory) or an external one, the anchor state, the service.
// Also opens a read-only view of the node's chain for `verify` when the node is not running.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Address, Hex } from 'viem';
import { VaultError } from '../src/core/errors.ts';
import type { Catalog } from '../src/catalog/catalog.ts';
import { anchorArtifact } from './contract/abi.ts';
import { ANVIL_CHAIN_ID, ANVIL_DEV_KEY, startAnvil, type AnvilProcess } from './anvil.ts';
import { accountFromKey, createChainClient, hasCode, readKeyFile, toChainError, type ChainClient } from './chain/client.ts';
import { deployAnchorContract } from './chain/deploy-contract.ts';
import type { AnchorConfig } from './config.ts';
import { assertSignerAllowed, devChainReason } from './dev-chain.ts';
import { AnchorService, type AnchorServiceDeps, type AnchorServiceOptions } from './service.ts';
import { ANCHOR_DB_FILE, AnchorState } from './state.ts';
import type { SaltLookup } from './commitment.ts';
import { KEY_DB_FILE, SqliteKeyRows } from '../src/format/keys.ts';
import { trustAnchorOf, type TrustAnchor } from './trust.ts';

/** The embedded chain's pid file, beside its state (anvil.ts). */
export const ANVIL_PID_FILE = 'anvil.pid';
/** Directory in the data directory for the embedded chain. */
export const CHAIN_DIR = 'chain';
export const ANVIL_STATE_FILE = 'anvil-state.json';
/** Where the embedded chain's contract deployment is remembered. */
export const CONTRACT_FILE = 'contract.json';

export interface ContractRecord {
  chainId: number;
  address: Address;
  /** Hash of block 0: tells a restarted chain from a new one (whose contract may sit at the same address). */
  genesisHash: Hex;
  deployTx: Hex;
  deployBlock: number;
}

export interface Anchoring {
  state: AnchorState;
  service: AnchorService;
  chainId: number;
  contract: Address;
  rpcUrl: string;
  /** The embedded chain, when the node runs one. */
  anvil: AnvilProcess | undefined;
  /** Why this node's anchors are self-attested (a development chain), in words; undefined when they are not. */
  selfAttested: string | undefined;
  close(): Promise<void>;
}

export interface StartAnchoringParameters {
  config: AnchorConfig;
  dataDir: string;
  catalog: Pick<Catalog, 'pendingAnchors' | 'markAnchored'>;
  logger: Logger;
  /** Service tuning beyond the config (tests). */
  service?: AnchorServiceOptions;
  /** One more leaf for every batch, beyond its cap of roots (AnchorServiceDeps.extraLeaf: the audit log's head). */
  extraLeaf?: AnchorServiceDeps['extraLeaf'];
  /** The studies' anchor salts (the vault's key store): roots are anchored as salted commitments. */
  saltOf?: SaltLookup;
}

export function openAnchorState(dataDir: string, saltOf?: SaltLookup): AnchorState {
  return AnchorState.open({ path: join(dataDir, ANCHOR_DB_FILE), ...(saltOf ? { saltOf } : {}) });
}

/**
 * The anchor state of a data directory for a tool beside the node (receipts, status, verify),
 * with the salts read from keys.db's rows (no key is unwrapped: no master key needed).
 */
export function openAnchorStateWithSalts(dataDir: string): AnchorState {
  const keysPath = join(dataDir, KEY_DB_FILE);
  if (!existsSync(keysPath)) return openAnchorState(dataDir);
  const rows = new SqliteKeyRows(keysPath);
  try {
    return AnchorState.open({
      path: join(dataDir, ANCHOR_DB_FILE),
      saltOf: (study) => rows.studyKey(study)?.anchorSalt ?? undefined,
      onClose: () => rows.close(),
    });
  } catch (err) {
    rows.close();
    throw err;
  }
}

function readContractRecord(dataDir: string): ContractRecord | undefined {
  const path = join(dataDir, CHAIN_DIR, CONTRACT_FILE);
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as ContractRecord;
  } catch (cause) {
    throw new VaultError('CONFIG_INVALID', `${path} is not readable JSON`, { cause });
  }
}

function writeContractRecord(dataDir: string, record: ContractRecord): void {
  const path = join(dataDir, CHAIN_DIR, CONTRACT_FILE);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/** The embedded chain's contract: the remembered one when it is still there, else deployed now. */
async function embeddedContract(client: ChainClient, dataDir: string, log: Logger): Promise<Address> {
  try {
    const genesis = (await client.public.getBlock({ blockNumber: 0n })).hash;
    const known = readContractRecord(dataDir);
    if (known && known.genesisHash === genesis && (await hasCode(client, known.address, anchorArtifact().deployedBytecode))) return known.address;
    if (known) {
      log.error(
        { previousGenesis: known.genesisHash, genesis },
        'the embedded chain state was lost (its state file is gone or new): receipts issued before name blocks this chain does not have; deploying the contract again',
      );
    }
    const deployed = await deployAnchorContract({ client });
    writeContractRecord(dataDir, {
      chainId: deployed.chainId,
      address: deployed.address,
      genesisHash: genesis,
      deployTx: deployed.txHash,
      deployBlock: deployed.blockNumber,
    });
    log.info({ contract: deployed.address, tx: deployed.txHash }, 'anchoring contract deployed on the embedded chain');
    return deployed.address;
  } catch (err) {
    throw toChainError(err, 'preparing the embedded chain');
  }
}

/** Starts anchoring for a node (never when config.mode is 'none'). */
export async function startAnchoring(p: StartAnchoringParameters): Promise<Anchoring> {
  const log = p.logger.child({ component: 'anchor' });
  const { config } = p;
  if (config.mode === 'none') throw new VaultError('INTERNAL', 'anchoring is disabled');
  let anvil: AnvilProcess | undefined;
  let client: ChainClient;
  let contract: Address;
  let chainId: number;
  if (config.mode === 'embedded') {
    const dir = join(p.dataDir, CHAIN_DIR);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    anvil = await startAnvil({ port: config.chainPort, statePath: join(dir, ANVIL_STATE_FILE), pidFile: join(dir, ANVIL_PID_FILE) });
    try {
      client = createChainClient({ rpcUrl: anvil.rpcUrl, account: accountFromKey(ANVIL_DEV_KEY) });
      contract = await embeddedContract(client, p.dataDir, log);
      chainId = ANVIL_CHAIN_ID;
    } catch (err) {
      await anvil.stop();
      throw err;
    }
    log.info({ rpc: anvil.rpcUrl, contract }, 'embedded chain running');
  } else {
    if (config.keyFile === undefined)
      throw new VaultError('CONFIG_INVALID', 'anchoring on an external chain needs --chain-key-file (the signer of anchor transactions)');
    if (config.contract === undefined)
      throw new VaultError('CONFIG_INVALID', 'anchoring on an external chain needs --contract: deploy one with `dicom-vault deploy-contract`');
    const account = readKeyFile(config.keyFile);
    client = createChainClient({ rpcUrl: config.rpcUrl!, account });
    contract = config.contract;
    // A public development key may sign only on a local development chain. Checked against the
    // stated --chain-id at once, and against the chain the RPC serves whenever it answers.
    if (config.chainId !== undefined) assertSignerAllowed(account.address, config.chainId, 'anchoring');
    if (config.chainId !== undefined) chainId = config.chainId;
    else {
      try {
        chainId = await client.public.getChainId();
      } catch (err) {
        throw new VaultError('CHAIN_UNAVAILABLE', `cannot learn the chain id from ${config.rpcUrl}: pass --chain-id to start while it is unreachable`, {
          cause: err,
        });
      }
    }
  }
  if (client.account) {
    const served = await client.public.getChainId().catch(() => undefined);
    if (served !== undefined) assertSignerAllowed(client.account.address, served, 'anchoring');
  }
  const selfAttested = config.mode === 'embedded' ? `the node's own embedded chain (${devChainReason(chainId)})` : devChainReason(chainId);
  if (selfAttested !== undefined)
    log.warn(
      { chainId },
      `anchoring on a development chain: receipts are self-attested (${selfAttested}); they prove nothing to anyone but this node's operator. Anchor on a chain others run with --chain-rpc`,
    );
  const state = openAnchorState(p.dataDir, p.saltOf);
  const service = new AnchorService(
    { state, catalog: p.catalog, client, chainId, contract, logger: p.logger, ...(p.extraLeaf !== undefined ? { extraLeaf: p.extraLeaf } : {}) },
    { batchMaxLeaves: config.batchMaxLeaves, batchIntervalS: config.batchIntervalS, confirmations: config.confirmations, ...p.service },
  );
  service.start();
  return {
    state,
    service,
    chainId,
    contract,
    rpcUrl: client.rpcUrl,
    anvil,
    selfAttested,
    async close() {
      await service.stop();
      state.close();
      await anvil?.stop();
    },
  };
}

export interface ChainReader {
  client: ChainClient;
  close(): Promise<void>;
}

/**
 * A read-only connection to the node's chain for checks run beside (or without) a running node:
 * the external RPC; or the embedded chain's port when the node is up; or, when it is not, a
 * private anvil loaded from the state file (never written back).
 */
export async function openChainReader(config: AnchorConfig, dataDir: string): Promise<ChainReader | undefined> {
  if (config.mode === 'none') return undefined;
  if (config.mode === 'external') return { client: createChainClient({ rpcUrl: config.rpcUrl! }), close: async () => undefined };
  const record = readContractRecord(dataDir);
  const running = createChainClient({ rpcUrl: `http://127.0.0.1:${config.chainPort}`, timeoutMs: 2_000 });
  try {
    const genesis = (await running.public.getBlock({ blockNumber: 0n })).hash;
    // Only the node's own chain: another anvil on the port would vouch for nothing.
    if (record && genesis === record.genesisHash) return { client: running, close: async () => undefined };
  } catch {
    // the node is not running: load its state file below
  }
  const statePath = join(dataDir, CHAIN_DIR, ANVIL_STATE_FILE);
  if (!existsSync(statePath)) return undefined;
  const anvil = await startAnvil({ port: 0, loadStateOnly: statePath });
  return { client: createChainClient({ rpcUrl: anvil.rpcUrl }), close: () => anvil.stop() };
}

/**
 * What this node anchors to, as a trust pin: for the node's own `verify` (no chain asked: the
 * embedded chain's record, or the configured --chain-id and --contract), or, with `withGenesis`,
 * for `anchor trust-file` (the external chain's genesis read from its RPC). Undefined when the
 * node does not know enough (anchoring off, no record yet, external without --contract).
 */
export async function nodeTrustAnchor(config: AnchorConfig, dataDir: string, withGenesis = false): Promise<TrustAnchor | undefined> {
  if (config.mode === 'none') return undefined;
  if (config.mode === 'embedded') {
    const record = readContractRecord(dataDir);
    if (!record) return undefined;
    return { chainId: record.chainId, genesisHash: record.genesisHash, contract: record.address, label: "this node's embedded development chain" };
  }
  if (config.contract === undefined) return undefined;
  if (!withGenesis) return config.chainId === undefined ? undefined : { chainId: config.chainId, contract: config.contract };
  const pin = await trustAnchorOf(createChainClient({ rpcUrl: config.rpcUrl! }), config.contract, { confirmations: config.confirmations });
  if (config.chainId !== undefined && pin.chainId !== config.chainId)
    throw new VaultError('CONFIG_INVALID', `the RPC serves chain ${pin.chainId}, not --chain-id ${config.chainId}`);
  return pin;
}
