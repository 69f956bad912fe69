// The anchor receipt of one study version: the proof that its root CID was in a Merkle batch
// whose root a given chain recorded in a given block. Format "dicom-vault-receipt/4" (the leaf is
// the salted commitment of commitment.ts, the receipt carries the salt; the batch root is not
// written but computed from the leaf and its path, the CID is base64url), written for every
// version anchored since salted anchors; "/2" (the leaf is the bare root CID) is still written for
// versions queued before; "/3" (as 4, with `root` and a base32 CID), "/2" and "/1" (without
// `attest`) are still read. Described in anchor/README.md; this module is its only reader and writer.
//
// The JSON is compact on purpose: at 10,000 studies per batch the inclusion path alone is 14
// hashes (448 bytes), and the receipt must stay under 1 KiB. So every 32-byte hash is unpadded
// base64url (as JOSE and COSE's JSON forms do), the path is its hashes concatenated, and the keys
// are short. The contract stays a checksummed hex address, as every Ethereum tool shows it.
import { base64url as base64urlCodec } from 'multiformats/bases/base64';
import { CID } from 'multiformats/cid';
import { bytesToHex, getAddress, isAddress, type Address, type Hex } from 'viem';
import { VaultError } from '../src/core/errors.ts';
import { isDevChainId } from './dev-chain.ts';
import { ANCHOR_SALT_SIZE, anchorCommitment } from './commitment.ts';
import { HASH_SIZE, leafHash, rootFromInclusionPath, treeHead } from './merkle.ts';

/** The format the node writes: a salted commitment as the leaf, the root computed, not written. */
export const RECEIPT_TYPE = 'dicom-vault-receipt/4';
/** As 4 with the batch root written out and the CID in base32 (releases before format 4): still read. */
export const RECEIPT_TYPE_V3 = 'dicom-vault-receipt/3';
/** The bare root CID as the leaf (versions queued before salted anchors): still written for them, and read. */
export const RECEIPT_TYPE_V2 = 'dicom-vault-receipt/2';
/** The first format (no `attest`): still read and verified. */
export const RECEIPT_TYPE_V1 = 'dicom-vault-receipt/1';

/**
 * Who vouches for the anchor: `self-attested` when it sits on a local development chain (the
 * node's own embedded anvil, or any chain with a development chain id: dev-chain.ts), where the
 * operator can rewrite blocks and times at will; `chain` otherwise (whether that chain deserves
 * trust is the verifier's call: its trust file).
 */
export type Attestation = 'self-attested' | 'chain';

/** The attestation a receipt on `chainId` carries. */
export function attestationOf(chainId: number): Attestation {
  return isDevChainId(chainId) ? 'self-attested' : 'chain';
}

/** The receipt as JSON: what `dicom-vault receipt` prints and the HTTP route returns. */
export interface ReceiptJson {
  /** Format and version. */
  v: typeof RECEIPT_TYPE | typeof RECEIPT_TYPE_V3 | typeof RECEIPT_TYPE_V2 | typeof RECEIPT_TYPE_V1;
  /** (version 2) Who vouches for the anchor: `self-attested` on a development chain. */
  attest?: Attestation;
  /** The study version's root CID (CIDv1 dag-cbor sha2-256; base64url multibase in version 4, base32 before); the Merkle leaf's data in versions 1 and 2. */
  cid: string;
  /** (versions 3, 4) The study's anchor salt, base64url (32 bytes): the leaf's data is anchorCommitment(salt, cid). */
  salt?: string;
  /** Leaf index in the batch, from 0. */
  index: number;
  /** Leaves in the batch (RFC 9162 tree_size). */
  size: number;
  /** RFC 9162 inclusion path, leaf to root: 32-byte SHA-256 hashes concatenated, base64url. */
  path: string;
  /**
   * The batch's tree head, SHA-256(0x02 || size as uint64 BE || Merkle root): the bytes32 on chain,
   * base64url. Not in version 4: there it is computed from the leaf, index, size and path.
   */
  root?: string;
  /** EIP-155 chain id. */
  chainId: number;
  /** Anchoring contract, EIP-55 checksummed hex. */
  contract: Address;
  /** Hash of the transaction that anchored the root, base64url. */
  tx: string;
  /** Number of the block holding that transaction. */
  block: number;
  /** Hash of that block, base64url. */
  blockHash: string;
  /** The block's timestamp, seconds since the epoch (the contract's anchoredAt(root)). */
  time: number;
}

/** The receipt with its fields decoded, as the verifier works with them. */
export interface Receipt {
  /** Format version read (encodeReceipt writes 4 with a salt, else 2). */
  version?: 1 | 2 | 3 | 4;
  /** As the receipt says (version 2); encodeReceipt derives it from chainId when absent. */
  attest?: Attestation;
  cid: CID;
  /** (versions 3, 4) The anchor salt: the leaf is the commitment to `cid` under it. */
  salt?: Uint8Array;
  index: number;
  size: number;
  path: Uint8Array[];
  root: Hex;
  chainId: number;
  contract: Address;
  txHash: Hex;
  blockNumber: number;
  blockHash: Hex;
  time: number;
}

const FIELDS = ['v', 'attest', 'cid', 'salt', 'index', 'size', 'path', 'root', 'chainId', 'contract', 'tx', 'block', 'blockHash', 'time'] as const;
export type ReceiptField = (typeof FIELDS)[number];

export function toBase64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

export function hexToBase64url(hex: Hex): string {
  return Buffer.from(hex.slice(2), 'hex').toString('base64url');
}

/**
 * Encodes a decoded receipt as its JSON form: format 4 with a salt, else 2. Format 4 leaves out
 * the root (the verifier computes it from the leaf and path; it must be the root given here) and
 * writes the CID as base64url multibase (49 characters, not 59): 63 bytes fewer than format 3.
 */
export function encodeReceipt(r: Receipt): ReceiptJson {
  if (r.salt !== undefined) {
    const mth = rootFromInclusionPath(leafHash(receiptLeafData(r)), r.index, r.size, r.path);
    if (mth === undefined || bytesToHex(treeHead(r.size, mth)) !== r.root.toLowerCase())
      throw new VaultError('INTERNAL', `the inclusion path of leaf ${r.index} of ${r.size} does not lead to root ${r.root}`);
  }
  return {
    v: r.salt === undefined ? RECEIPT_TYPE_V2 : RECEIPT_TYPE,
    attest: r.attest ?? attestationOf(r.chainId),
    cid: r.salt === undefined ? r.cid.toString() : r.cid.toString(base64urlCodec),
    ...(r.salt === undefined ? {} : { salt: toBase64url(r.salt) }),
    index: r.index,
    size: r.size,
    path: toBase64url(Buffer.concat(r.path)),
    ...(r.salt === undefined ? { root: hexToBase64url(r.root) } : {}),
    chainId: r.chainId,
    contract: getAddress(r.contract),
    tx: hexToBase64url(r.txHash),
    block: r.blockNumber,
    blockHash: hexToBase64url(r.blockHash),
    time: r.time,
  };
}

/** A CID as a person passes it: base32 ("b…", as the node names roots) or base64url ("u…", as format 4 writes it). */
export function parseCidText(text: string): CID {
  return text.startsWith('u') ? CID.parse(text, base64urlCodec) : CID.parse(text);
}

/** Bytes of the receipt as served and printed (compact JSON, UTF-8). */
export function receiptBytes(r: ReceiptJson): number {
  return Buffer.byteLength(JSON.stringify(r));
}

function malformed(field: ReceiptField | 'receipt', reason: string): VaultError {
  return new VaultError('RECEIPT_MALFORMED', `receipt field "${field}": ${reason}`, { details: { field } });
}

/** Strict base64url: Buffer's decoder skips foreign characters, so a round trip must match. */
function base64url(field: ReceiptField, value: unknown, bytes?: number): Buffer {
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]*$/.test(value)) throw malformed(field, 'not base64url');
  const decoded = Buffer.from(value, 'base64url');
  if (decoded.toString('base64url') !== value) throw malformed(field, 'not canonical unpadded base64url');
  if (bytes !== undefined && decoded.length !== bytes) throw malformed(field, `must encode ${bytes} bytes (got ${decoded.length})`);
  return decoded;
}

function count(field: ReceiptField, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) throw malformed(field, `must be a whole number >= ${min}`);
  return value;
}

/**
 * Reads a receipt (parsed JSON or its text). Throws RECEIPT_MALFORMED naming the first field
 * that is missing, unknown or of the wrong form; says nothing about whether the receipt holds.
 */
export function parseReceipt(input: unknown): Receipt {
  let json = input;
  if (typeof input === 'string') {
    try {
      json = JSON.parse(input);
    } catch (cause) {
      throw new VaultError('RECEIPT_MALFORMED', 'receipt is not JSON', { cause, details: { field: 'receipt' } });
    }
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw malformed('receipt', 'must be a JSON object');
  const o = json as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(FIELDS as readonly string[]).includes(key))
      throw new VaultError('RECEIPT_MALFORMED', `receipt has an unknown field "${key}"`, { details: { field: key } });
  }
  if (o.v !== RECEIPT_TYPE && o.v !== RECEIPT_TYPE_V3 && o.v !== RECEIPT_TYPE_V2 && o.v !== RECEIPT_TYPE_V1)
    throw malformed('v', `must be "${RECEIPT_TYPE}", "${RECEIPT_TYPE_V3}", "${RECEIPT_TYPE_V2}" or "${RECEIPT_TYPE_V1}" (got ${JSON.stringify(o.v)})`);
  const version = o.v === RECEIPT_TYPE ? 4 : o.v === RECEIPT_TYPE_V3 ? 3 : o.v === RECEIPT_TYPE_V2 ? 2 : 1;
  let salt: Uint8Array | undefined;
  if (version >= 3) salt = base64url('salt', o.salt, ANCHOR_SALT_SIZE);
  else if ('salt' in o)
    throw new VaultError('RECEIPT_MALFORMED', `receipt has an unknown field "salt" (not in ${String(o.v)})`, { details: { field: 'salt' } });
  let attest: Attestation | undefined;
  if (version === 1) {
    if ('attest' in o)
      throw new VaultError('RECEIPT_MALFORMED', `receipt has an unknown field "attest" (not in ${RECEIPT_TYPE_V1})`, { details: { field: 'attest' } });
  } else if (o.attest === 'self-attested' || o.attest === 'chain') attest = o.attest;
  else throw malformed('attest', `must be "self-attested" or "chain" (got ${JSON.stringify(o.attest)})`);
  let cid: CID;
  try {
    if (typeof o.cid !== 'string') throw new TypeError('not a string');
    // Version 4 writes base64url multibase ("u…"), earlier ones base32 ("b…"); each reads only its own.
    cid = version === 4 ? CID.parse(o.cid, base64urlCodec) : CID.parse(o.cid);
    if ((version === 4 ? cid.toString(base64urlCodec) : cid.toString()) !== o.cid) throw new TypeError('not in the canonical form of this format');
  } catch (cause) {
    throw new VaultError('RECEIPT_MALFORMED', 'receipt field "cid": not a CID', { cause, details: { field: 'cid' } });
  }
  const index = count('index', o.index, 0);
  const size = count('size', o.size, 1);
  const pathBytes = base64url('path', o.path);
  if (pathBytes.length % HASH_SIZE !== 0) throw malformed('path', `length ${pathBytes.length} is not a multiple of ${HASH_SIZE}`);
  const path: Uint8Array[] = [];
  for (let i = 0; i < pathBytes.length; i += HASH_SIZE) path.push(pathBytes.subarray(i, i + HASH_SIZE));
  let root: Hex;
  if (version === 4) {
    if ('root' in o)
      throw new VaultError('RECEIPT_MALFORMED', `receipt has an unknown field "root" (not in ${RECEIPT_TYPE}: it is computed)`, { details: { field: 'root' } });
    const mth = rootFromInclusionPath(leafHash(receiptLeafData({ cid, ...(salt ? { salt } : {}) })), index, size, path);
    // A path that cannot belong to the leaf (index, size or path edited) leads nowhere: the zero
    // root, which no batch has; the verifier names it in its inclusion check.
    root = mth === undefined ? `0x${'00'.repeat(HASH_SIZE)}` : bytesToHex(treeHead(size, mth));
  } else root = `0x${base64url('root', o.root, HASH_SIZE).toString('hex')}` as Hex;
  const chainId = count('chainId', o.chainId, 1);
  if (typeof o.contract !== 'string' || !isAddress(o.contract, { strict: false })) throw malformed('contract', 'not an address');
  // A mixed-case address must carry a valid EIP-55 checksum: an edited character is caught here.
  if (o.contract !== o.contract.toLowerCase() && !isAddress(o.contract, { strict: true })) throw malformed('contract', 'EIP-55 checksum does not match');
  const contract = getAddress(o.contract);
  const txHash = `0x${base64url('tx', o.tx, HASH_SIZE).toString('hex')}` as Hex;
  const blockNumber = count('block', o.block, 0);
  const blockHash = `0x${base64url('blockHash', o.blockHash, HASH_SIZE).toString('hex')}` as Hex;
  const time = count('time', o.time, 1);
  return {
    version,
    ...(attest ? { attest } : {}),
    cid,
    ...(salt ? { salt } : {}),
    index,
    size,
    path,
    root,
    chainId,
    contract,
    txHash,
    blockNumber,
    blockHash,
    time,
  };
}

/** The Merkle leaf's data of a receipt: the salted commitment (versions 3, 4), else the root CID's bytes. */
export function receiptLeafData(r: Pick<Receipt, 'cid' | 'salt'>): Uint8Array {
  return r.salt === undefined ? r.cid.bytes : anchorCommitment(r.salt, r.cid);
}
