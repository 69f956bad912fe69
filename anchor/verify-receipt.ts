// Checks an anchor receipt with nothing but a chain's JSON-RPC: no node, no data directory, no
// keys. Every check is named, and a receipt edited in one field fails the check named for that
// field (the transaction on chain is the reference the other fields are compared against):
//
//   format     the JSON is a dicom-vault-receipt/1 (the failing field is named)
//   cid        (optional) the receipt is for the root the caller expects
//   inclusion  cid, index, size and path lead to root (RFC 9162 inclusion proof, then the tree head)
//   chainId    the RPC serves the receipt's chain
//   contract   the DicomVaultAnchor contract is at `contract`, and the transaction anchored there
//   root       the contract recorded `root`, and the transaction anchored that root
//   tx         the transaction exists, succeeded and emitted Anchored(root)
//   block      the transaction is in block `block`
//   blockHash  block `block` on the canonical chain has hash `blockHash`
//   time       the contract and the block both say `time`
import { CID } from 'multiformats/cid';
import { BlockNotFoundError, bytesToHex, parseEventLogs, type Address, type Hex, type TransactionReceipt } from 'viem';
import { VaultError, isVaultError } from '../src/core/errors.ts';
import { anchorAbi, anchorArtifact } from './contract/abi.ts';
import { toChainError, type ChainClient } from './chain/client.ts';
import { getReceipt } from './chain/find-anchoring.ts';
import { leafHash, rootFromInclusionPath, treeHead } from './merkle.ts';
import { parseReceipt, type Receipt } from './receipt.ts';

export type ReceiptCheckName = 'format' | 'cid' | 'inclusion' | 'chainId' | 'contract' | 'root' | 'tx' | 'block' | 'blockHash' | 'time';

export interface ReceiptCheck {
  check: ReceiptCheckName;
  ok: boolean;
  message: string;
}

export interface VerifyReceiptParameters {
  /** The receipt: its JSON text or parsed JSON. */
  receipt: unknown;
  /** A read-only connection to the chain. */
  client: ChainClient;
  /** The study version root the receipt must be for (a node checking its own study). */
  expectedCid?: string;
}

export interface VerifyReceiptReturnType {
  ok: boolean;
  /** Every check made, in order; failed ones have ok false. */
  checks: ReceiptCheck[];
  /** Names of the failed checks. */
  failed: ReceiptCheckName[];
  /** Blocks on top of and including the anchoring block, when it was found. */
  confirmations?: number;
  /** The receipt's anchor in the form explorers show (hex), when it parsed. */
  anchor?: { chainId: number; contract: Address; txHash: Hex; blockNumber: number; blockHash: Hex; time: string; root: Hex; cid: string };
}

/** CHAIN_UNAVAILABLE when the chain cannot be asked (that is not a verdict on the receipt). */
export type VerifyReceiptErrorType = VaultError;

class Checks {
  readonly list: ReceiptCheck[] = [];
  pass(check: ReceiptCheckName, message: string): void {
    if (!this.list.some((c) => c.check === check)) this.list.push({ check, ok: true, message });
  }
  fail(check: ReceiptCheckName, message: string): void {
    const existing = this.list.find((c) => c.check === check);
    if (!existing) this.list.push({ check, ok: false, message });
    else if (existing.ok) Object.assign(existing, { ok: false, message });
    else if (!existing.message.includes(message)) existing.message += `; ${message}`;
  }
  failed(check: ReceiptCheckName): boolean {
    return this.list.some((c) => c.check === check && !c.ok);
  }
  result(extra: Omit<VerifyReceiptReturnType, 'ok' | 'checks' | 'failed'> = {}): VerifyReceiptReturnType {
    const failed = this.list.filter((c) => !c.ok).map((c) => c.check);
    return { ok: failed.length === 0, checks: this.list, failed, ...extra };
  }
}

const same = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

/** Anchored events in a transaction: which roots it anchored at which contracts. */
function anchoredIn(tx: TransactionReceipt): Array<{ contract: Address; root: Hex; timestamp: bigint }> {
  if (tx.status !== 'success') return [];
  return parseEventLogs({ abi: anchorAbi, eventName: 'Anchored', logs: tx.logs, strict: true }).map((e) => ({
    contract: e.address,
    root: e.args.root,
    timestamp: e.args.timestamp,
  }));
}

export async function verifyReceipt(p: VerifyReceiptParameters): Promise<VerifyReceiptReturnType> {
  const checks = new Checks();
  let r: Receipt;
  try {
    r = parseReceipt(p.receipt);
  } catch (err) {
    if (!isVaultError(err, 'RECEIPT_MALFORMED')) throw err;
    checks.fail('format', err.message);
    return checks.result();
  }
  checks.pass('format', 'a dicom-vault-receipt/1');
  const anchor = {
    chainId: r.chainId,
    contract: r.contract,
    txHash: r.txHash,
    blockNumber: r.blockNumber,
    blockHash: r.blockHash,
    time: new Date(r.time * 1000).toISOString(),
    root: r.root,
    cid: r.cid.toString(),
  };

  if (p.expectedCid !== undefined) {
    let expected: string;
    try {
      expected = CID.parse(p.expectedCid).toString();
    } catch (cause) {
      throw new VaultError('BAD_REQUEST', `expected root "${p.expectedCid}" is not a CID`, { cause });
    }
    if (expected === r.cid.toString()) checks.pass('cid', `receipt is for ${expected}`);
    else checks.fail('cid', `receipt is for ${r.cid}, not for the expected root ${expected}`);
  }

  const mth = rootFromInclusionPath(leafHash(r.cid.bytes), r.index, r.size, r.path);
  const computedHex = mth === undefined ? undefined : bytesToHex(treeHead(r.size, mth));

  const pub = p.client.public;
  const call = async <T>(doing: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw toChainError(err, doing);
    }
  };

  // chainId: a receipt from another chain says nothing about this one; stop here.
  const chainId = await call('reading the chain id', () => pub.getChainId());
  if (chainId !== r.chainId) {
    checks.fail('chainId', `receipt is for chain ${r.chainId}, the RPC serves chain ${chainId}`);
    checkInclusion();
    return checks.result({ anchor });
  }
  checks.pass('chainId', `chain ${chainId}`);

  // The transaction, and what the contract itself recorded.
  const tx = await call('reading the transaction receipt', () => getReceipt(p.client, r.txHash));
  const events = tx ? anchoredIn(tx) : [];
  const here = events.filter((e) => same(e.contract, r.contract));
  const txRoot = here.length === 1 ? here[0]!.root : undefined;
  const code = await call('reading the contract code', () => pub.getCode({ address: r.contract }));
  const isAnchorContract = code !== undefined && same(code, anchorArtifact().deployedBytecode);
  const recordedAt = isAnchorContract
    ? await call('reading anchoredAt', () => pub.readContract({ address: r.contract, abi: anchorAbi, functionName: 'anchoredAt', args: [r.root] }))
    : undefined;
  const txAnchors = here.some((e) => same(e.root, r.root));

  // contract: the DicomVaultAnchor is there, and the transaction anchored at it.
  if (!isAnchorContract) checks.fail('contract', `no DicomVaultAnchor contract at ${r.contract} on chain ${chainId}`);
  if (tx && here.length === 0 && events.some((e) => same(e.root, r.root))) {
    checks.fail(
      'contract',
      `transaction ${r.txHash} anchored the root at ${events.map((e) => e.contract).join(', ')}, not at the receipt's contract ${r.contract}`,
    );
  }
  if (!checks.failed('contract')) checks.pass('contract', `DicomVaultAnchor at ${r.contract}`);

  // root: recorded by the contract. If not, and the transaction anchored another root there,
  // the receipt's root is what changed.
  if (recordedAt === 0n && !checks.failed('contract')) checks.fail('root', `contract ${r.contract} has no record of root ${r.root}`);
  else if (recordedAt !== undefined && recordedAt > 0n) {
    checks.pass('root', 'recorded by the contract');
    if (recordedAt !== BigInt(r.time)) checks.fail('time', `the contract recorded the root at ${recordedAt}, the receipt says ${r.time}`);
  }

  // tx: exists, succeeded, emitted Anchored(root) at the contract.
  if (!tx) checks.fail('tx', `no transaction ${r.txHash} in a canonical block of chain ${chainId}`);
  else if (tx.status !== 'success') checks.fail('tx', `transaction ${r.txHash} reverted`);
  else if (events.length === 0) checks.fail('tx', `transaction ${r.txHash} anchored no root`);
  else if (!txAnchors && here.length > 0 && recordedAt !== undefined && recordedAt > 0n) {
    checks.fail('tx', `transaction ${r.txHash} anchored root ${here.map((e) => e.root).join(', ')}; the receipt's root was anchored by another transaction`);
  } else if (!txAnchors && here.length > 0) {
    checks.fail('root', `transaction ${r.txHash} anchored root ${here.map((e) => e.root).join(', ')}, not the receipt's root ${r.root}`);
  } else if (txAnchors) checks.pass('tx', `transaction ${r.txHash} anchored the root at ${r.contract}`);

  // block and blockHash: against the transaction's block when the transaction is the receipt's,
  // else against the block the receipt names (so a wrong tx does not also fail these).
  const txBlock = tx && txAnchors ? Number(tx.blockNumber) : r.blockNumber;
  if (tx && txAnchors && txBlock !== r.blockNumber) checks.fail('block', `transaction ${r.txHash} is in block ${txBlock}, the receipt says ${r.blockNumber}`);
  const block = await call('reading the block', async () => {
    try {
      return await pub.getBlock({ blockNumber: BigInt(txBlock) });
    } catch (err) {
      if (err instanceof BlockNotFoundError) return undefined;
      throw err;
    }
  });
  let confirmations: number | undefined;
  if (!block) checks.fail('block', `chain ${chainId} has no block ${txBlock}`);
  else {
    if (!checks.failed('block')) checks.pass('block', `block ${txBlock}`);
    if (!same(block.hash, r.blockHash))
      checks.fail('blockHash', `block ${txBlock} has hash ${block.hash} on the canonical chain, the receipt says ${r.blockHash}`);
    else checks.pass('blockHash', `canonical block ${block.hash}`);
    if (Number(block.timestamp) !== r.time) checks.fail('time', `block ${txBlock} has time ${block.timestamp}, the receipt says ${r.time}`);
    else if (!checks.failed('time')) checks.pass('time', new Date(r.time * 1000).toISOString());
    const head = await call('reading the chain head', () => pub.getBlockNumber({ cacheTime: 0 }));
    confirmations = Number(head) - txBlock + 1;
  }
  checkInclusion();
  return checks.result(confirmations === undefined ? { anchor } : { anchor, confirmations });

  function checkInclusion(): void {
    if (computedHex !== undefined && same(computedHex, r.root)) {
      checks.pass('inclusion', `leaf ${r.index} of ${r.size} leads to the root in ${r.path.length} steps`);
    } else if (computedHex !== undefined && txRoot !== undefined && same(computedHex, txRoot)) {
      // The proof leads to the root the transaction anchored: only the root field was changed.
      checks.fail('root', `the receipt's root ${r.root} is not the root ${computedHex} its leaf and path lead to`);
    } else if (mth === undefined) {
      checks.fail('inclusion', `a path of ${r.path.length} hashes cannot belong to leaf ${r.index} of a tree of ${r.size}: index, size or path was changed`);
    } else {
      checks.fail('inclusion', `cid, index, size and path lead to ${computedHex}, not to the root ${r.root}: one of them was changed`);
    }
  }
}
