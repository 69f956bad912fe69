// The trust file: what a verifier pins before it believes any receipt. A receipt names its chain
// and contract itself, so on its own it can name any chain (a copy started with a back-dated
// genesis, a chain of the operator's) and any contract (the same bytecode deployed anywhere).
// The verifier therefore holds a file, obtained from a source it trusts and not from the receipt,
// that names the chains and contracts it accepts. Format "dicom-vault-trust/1", described in
// anchor/README.md; this module is its only reader and writer.
//
//   {
//     "v": "dicom-vault-trust/1",
//     "anchors": [
//       { "chainId": 8453, "genesisHash": "0x…", "contract": "0x…", "confirmations": 12, "label": "…" }
//     ]
//   }
//
// Hex rather than the receipt's base64url: this file is written once and read by people, who
// compare the values against an explorer.
import { getAddress, isAddress, type Address, type Hex } from 'viem';
import { VaultError } from '../src/core/errors.ts';
import { toChainError, type ChainClient } from './chain/client.ts';
import { isDevChainId } from './dev-chain.ts';

export const TRUST_TYPE = 'dicom-vault-trust/1';

/** One pinned anchoring deployment: a chain (by id and first block) and the contract on it. */
export interface TrustAnchor {
  /** EIP-155 chain id. */
  chainId: number;
  /**
   * Hash of the chain's block 0. Tells the chain from any other with the same id: a fresh anvil
   * with a back-dated genesis, a consortium chain started again. Required in the file; absent
   * only when the node checks itself against a chain whose genesis it never recorded.
   */
  genesisHash?: Hex;
  /** The DicomVaultAnchor contract, EIP-55. The same bytecode anywhere else is refused. */
  contract: Address;
  /** Depth to require where the chain has no `finalized` block tag (the verifier's --depth wins). */
  confirmations?: number;
  /** Free text for people: which chain, who published this pin. */
  label?: string;
}

export interface TrustFile {
  v: typeof TRUST_TYPE;
  anchors: TrustAnchor[];
}

const ANCHOR_FIELDS = ['chainId', 'genesisHash', 'contract', 'confirmations', 'label'];

function invalid(reason: string): VaultError {
  return new VaultError('CONFIG_INVALID', `trust file: ${reason}`);
}

/** Reads a trust file (its text or parsed JSON); CONFIG_INVALID naming what is wrong. */
export function parseTrustFile(input: unknown): TrustFile {
  let json = input;
  if (typeof input === 'string') {
    try {
      json = JSON.parse(input);
    } catch (cause) {
      throw new VaultError('CONFIG_INVALID', 'trust file: not JSON', { cause });
    }
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw invalid('must be a JSON object');
  const o = json as Record<string, unknown>;
  for (const key of Object.keys(o)) if (key !== 'v' && key !== 'anchors') throw invalid(`unknown field "${key}"`);
  if (o.v !== TRUST_TYPE) throw invalid(`"v" must be "${TRUST_TYPE}" (got ${JSON.stringify(o.v)})`);
  if (!Array.isArray(o.anchors) || o.anchors.length === 0) throw invalid('"anchors" must be a non-empty list');
  const anchors = o.anchors.map((a: unknown, i): TrustAnchor => {
    const at = `anchors[${i}]`;
    if (typeof a !== 'object' || a === null || Array.isArray(a)) throw invalid(`${at} must be an object`);
    const e = a as Record<string, unknown>;
    for (const key of Object.keys(e)) if (!ANCHOR_FIELDS.includes(key)) throw invalid(`${at} has an unknown field "${key}"`);
    if (typeof e.chainId !== 'number' || !Number.isSafeInteger(e.chainId) || e.chainId < 1) throw invalid(`${at}.chainId must be a whole number >= 1`);
    if (typeof e.genesisHash !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(e.genesisHash)) throw invalid(`${at}.genesisHash must be a 32-byte 0x hex hash`);
    if (typeof e.contract !== 'string' || !isAddress(e.contract, { strict: false })) throw invalid(`${at}.contract is not an address`);
    if (e.contract !== e.contract.toLowerCase() && !isAddress(e.contract, { strict: true })) throw invalid(`${at}.contract: EIP-55 checksum does not match`);
    const entry: TrustAnchor = { chainId: e.chainId, genesisHash: e.genesisHash.toLowerCase() as Hex, contract: getAddress(e.contract) };
    if (e.confirmations !== undefined) {
      if (typeof e.confirmations !== 'number' || !Number.isSafeInteger(e.confirmations) || e.confirmations < 1)
        throw invalid(`${at}.confirmations must be a whole number >= 1`);
      entry.confirmations = e.confirmations;
    }
    if (e.label !== undefined) {
      if (typeof e.label !== 'string') throw invalid(`${at}.label must be a string`);
      entry.label = e.label;
    }
    return entry;
  });
  return { v: TRUST_TYPE, anchors };
}

/** The pin for the chain the client serves and `contract` on it (genesis read from the chain). */
export async function trustAnchorOf(client: ChainClient, contract: Address, extra: Pick<TrustAnchor, 'confirmations' | 'label'> = {}): Promise<TrustAnchor> {
  try {
    const [chainId, genesis] = await Promise.all([client.public.getChainId(), client.public.getBlock({ blockNumber: 0n })]);
    return { chainId, genesisHash: genesis.hash, contract: getAddress(contract), ...extra };
  } catch (err) {
    throw toChainError(err, 'reading the chain id and genesis block for the trust file');
  }
}

/** A trust file pinning `anchors`, as `dicom-vault anchor trust-file` prints it. */
export function encodeTrustFile(anchors: TrustAnchor[]): TrustFile {
  return {
    v: TRUST_TYPE,
    anchors: anchors.map((a) => ({
      chainId: a.chainId,
      ...(a.genesisHash ? { genesisHash: a.genesisHash } : {}),
      contract: getAddress(a.contract),
      ...(a.confirmations !== undefined ? { confirmations: a.confirmations } : {}),
      ...(a.label !== undefined ? { label: a.label } : {}),
    })),
  };
}

/** True when any pinned anchor is on a development chain (its receipts are self-attested). */
export function pinsDevChain(file: TrustFile): boolean {
  return file.anchors.some((a) => isDevChainId(a.chainId));
}
