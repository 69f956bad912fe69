// Checks an anchor receipt with nothing but a chain's JSON-RPC and the verifier's trust pins
// (trust.ts): no node, no data directory, no keys. Every check is named, and a receipt edited in
// one field fails the check named for that field (the transaction on chain is the reference the
// other fields are compared against):
//
//   format     the JSON is a dicom-vault-receipt/4, /3, /2 or /1 (the failing field is named)
//   cid        (optional) the receipt is for the root the caller expects
//   inclusion  cid (with salt, version 3), index, size and path lead to root (RFC 9162 inclusion proof, then the tree head)
//   chainId    the trust file pins the receipt's chain, and the RPC serves it
//   genesis    the RPC's block 0 is the pinned genesis (not a chain started anew under the same id)
//   contract   the pinned contract is the receipt's; DicomVaultAnchor's code is there now and was
//              at the anchoring block; the transaction anchored there
//   root       the contract recorded `root`, and the transaction anchored that root (version 4
//              has no root field: the root is computed, so a root the chain lacks fails `inclusion`)
//   tx         the transaction exists, succeeded and emitted Anchored(root)
//   block      the transaction is in block `block`
//   blockHash  block `block` on the canonical chain has hash `blockHash`
//   time       the contract and the block both say `time`; the block is not dated before its
//              parent (a clock set back) nor after the verifier's clock
//   attest     (receipt version 2) a receipt saying `chain` is not on a development chain
//
// Then, apart from the checks: who vouches for the anchor (a development chain or a public
// development key make it self-attested: dev-chain.ts), and finality: the block must be at or
// below the chain's `finalized` block, or, where the chain has no such tag, have a stated depth
// of confirmations; the verifier can wait for either.
import { BaseError, BlockNotFoundError, bytesToHex, getAddress, parseEventLogs, RpcRequestError, type Address, type Hex, type TransactionReceipt } from 'viem';
import { VaultError, isVaultError } from '../src/core/errors.ts';
import { anchorAbi, anchorArtifact } from './contract/abi.ts';
import { toChainError, type ChainClient } from './chain/client.ts';
import { getReceipt } from './chain/find-anchoring.ts';
import { devAccountIndex, devChainReason } from './dev-chain.ts';
import { leafHash, rootFromInclusionPath, treeHead } from './merkle.ts';
import { parseCidText, parseReceipt, receiptLeafData, type Receipt } from './receipt.ts';
import type { TrustAnchor } from './trust.ts';

export type ReceiptCheckName = 'format' | 'cid' | 'inclusion' | 'chainId' | 'genesis' | 'contract' | 'root' | 'tx' | 'block' | 'blockHash' | 'time' | 'attest';

/** A block dated later than the verifier's clock by more than this is refused, seconds. */
export const FUTURE_TOLERANCE_S = 15 * 60;
/** How often to look again while waiting for finality, ms. */
export const DEFAULT_FINALITY_POLL_MS = 2_000;

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
  /**
   * The chains and contracts the verifier accepts (its trust file). Without it the receipt's own
   * chain and contract are taken, and the verdict is at best `unpinned`.
   */
  trust?: readonly TrustAnchor[];
  finality?: {
    /** Confirmations to require where the chain has no `finalized` tag (else the pin's `confirmations`). */
    depth?: number;
    /** Wait up to this long for finality, ms. Default 0: say "not final" at once. */
    waitMs?: number;
    /** Look again this often while waiting, ms. Default DEFAULT_FINALITY_POLL_MS. */
    pollMs?: number;
    /** Told each time the verifier looked and the block was not final yet. */
    onWait?(finality: Finality): void;
  };
  /** The verifier's clock, seconds since the epoch (tests). Default Date.now(). */
  now?: () => number;
}

/** How the verifier decided whether the anchoring block is final. */
export interface Finality {
  /**
   * finalized: the chain's `finalized` block tag; depth: a stated number of confirmations (the
   * chain has no such tag); none: the chain has no tag and no depth was stated; not-enforced: a
   * self-attested chain, whose operator can rewrite any block, final or not.
   */
  rule: 'finalized' | 'depth' | 'none' | 'not-enforced';
  final: boolean;
  /** The chain's finalized block number (rule finalized). */
  finalizedBlock?: number;
  /** Confirmations required (rule depth). */
  depth?: number;
  /** Blocks on top of and including the anchoring block. */
  confirmations: number;
  message: string;
}

/**
 * holds: every check passed against a pinned chain, and the block is final; the time is vouched
 * for by that chain. self-attested: consistent, but on a development chain or signed with a
 * public development key: it proves nothing to anyone but the operator. not-final: holds so far,
 * but the block is not final yet. unpinned: consistent with the chain the receipt itself names
 * (no trust pins given). fails: a check failed.
 */
export type Verdict = 'holds' | 'self-attested' | 'not-final' | 'unpinned' | 'fails';

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
  verdict: Verdict;
  /** The trust pin the receipt was checked against; absent when unpinned or not pinned. */
  pinned?: TrustAnchor;
  /** Why the anchor is self-attested, in words; empty when it is not. */
  selfAttested: string[];
  /** Whether the receipt's time is vouched for by anyone but the node's operator (verdict holds). */
  timeVouched: boolean;
  /** Finality of the anchoring block, once the checks passed. */
  finality?: Finality;
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
  result(extra: Partial<Omit<VerifyReceiptReturnType, 'ok' | 'checks' | 'failed'>> = {}): VerifyReceiptReturnType {
    const failed = this.list.filter((c) => !c.ok).map((c) => c.check);
    const selfAttested = extra.selfAttested ?? [];
    const verdict: Verdict =
      failed.length > 0
        ? 'fails'
        : selfAttested.length > 0
          ? 'self-attested'
          : extra.pinned === undefined
            ? 'unpinned'
            : extra.finality?.final
              ? 'holds'
              : 'not-final';
    return { ok: failed.length === 0, checks: this.list, failed, ...extra, verdict, selfAttested, timeVouched: verdict === 'holds' };
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
  checks.pass('format', `a dicom-vault-receipt/${r.version ?? 2}`);
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
  // Self-attestation as the receipt's own fields show it; the transaction's signer is added below.
  const selfAttested: string[] = [];
  const chainReason = devChainReason(r.chainId);
  if (chainReason) selfAttested.push(chainReason);
  if (r.attest === 'self-attested') selfAttested.push('the receipt says it is self-attested');

  if (p.expectedCid !== undefined) {
    let expected: string;
    try {
      expected = parseCidText(p.expectedCid).toString();
    } catch (cause) {
      throw new VaultError('BAD_REQUEST', `expected root "${p.expectedCid}" is not a CID`, { cause });
    }
    if (expected === r.cid.toString()) checks.pass('cid', `receipt is for ${expected}`);
    else checks.fail('cid', `receipt is for ${r.cid}, not for the expected root ${expected}`);
  }

  // Version 3: the leaf is the salted commitment to the CID (commitment.ts); before, the CID itself.
  const mth = rootFromInclusionPath(leafHash(receiptLeafData(r)), r.index, r.size, r.path);
  const computedHex = mth === undefined ? undefined : bytesToHex(treeHead(r.size, mth));

  // The pin: the verifier's own word on which chain and contract count, never the receipt's.
  let pinned: TrustAnchor | undefined;
  if (p.trust !== undefined) {
    const onChain = p.trust.filter((t) => t.chainId === r.chainId);
    if (onChain.length === 0) {
      checks.fail(
        'chainId',
        `receipt is for chain ${r.chainId}, which the trust file does not pin (it pins chain ${[...new Set(p.trust.map((t) => t.chainId))].join(', ')})`,
      );
      checkInclusion();
      return checks.result({ anchor, selfAttested });
    }
    pinned = onChain.find((t) => same(t.contract, r.contract));
    if (!pinned) {
      checks.fail(
        'contract',
        `receipt names contract ${r.contract}; the trust file pins ${onChain.map((t) => t.contract).join(', ')} on chain ${r.chainId} (the same code at another address is not the pinned contract)`,
      );
    }
  }

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
    return checks.result({ anchor, selfAttested, ...(pinned ? { pinned } : {}) });
  }
  checks.pass('chainId', p.trust === undefined ? `chain ${chainId} (as the receipt names it: no trust pins given)` : `chain ${chainId}, pinned`);

  // genesis: the same chain id on a chain started anew (a back-dated genesis among others) is
  // another chain; nothing on it says anything about the pinned one.
  const pinnedGenesis = pinned?.genesisHash ?? p.trust?.find((t) => t.chainId === chainId)?.genesisHash;
  if (pinnedGenesis !== undefined) {
    const genesis = await call('reading the genesis block', () => pub.getBlock({ blockNumber: 0n }));
    if (!same(genesis.hash, pinnedGenesis)) {
      checks.fail(
        'genesis',
        `the RPC's chain ${chainId} begins with block ${genesis.hash} (dated ${new Date(Number(genesis.timestamp) * 1000).toISOString()}), ` +
          `the trust file pins ${pinnedGenesis}: another chain under the same id (started anew, perhaps with a back-dated genesis)`,
      );
      checkInclusion();
      return checks.result({ anchor, selfAttested, ...(pinned ? { pinned } : {}) });
    }
    checks.pass('genesis', `block 0 is the pinned ${genesis.hash}`);
  }

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
  if (tx) {
    const dev = devAccountIndex(tx.from);
    if (dev >= 0)
      selfAttested.push(`the anchoring transaction was signed by public development account #${dev} (${getAddress(tx.from)}), which anyone can sign with`);
  }

  // contract: the DicomVaultAnchor is there, and the transaction anchored at it.
  if (!isAnchorContract) checks.fail('contract', `no DicomVaultAnchor contract at ${r.contract} on chain ${chainId}`);
  if (tx && here.length === 0 && events.some((e) => same(e.root, r.root))) {
    checks.fail(
      'contract',
      `transaction ${r.txHash} anchored the root at ${events.map((e) => e.contract).join(', ')}, not at the receipt's contract ${r.contract}`,
    );
  }
  // The code as it was when the transaction ran: code swapped in for the anchoring and swapped
  // back (anvil_setCode) shows here. An RPC without that block's state (pruned) cannot say.
  let codeThen = '';
  if (isAnchorContract && tx && txAnchors) {
    const atBlock = await codeAt(r.contract, tx.blockNumber);
    if (atBlock === null) codeThen = ` (the code at block ${tx.blockNumber} is not available from this RPC)`;
    else if (atBlock === undefined || !same(atBlock, anchorArtifact().deployedBytecode))
      checks.fail('contract', `the code at ${r.contract} in block ${tx.blockNumber}, when the root was anchored, was not DicomVaultAnchor's (it was replaced)`);
  }
  if (!checks.failed('contract')) checks.pass('contract', `DicomVaultAnchor at ${r.contract}${pinned ? ', pinned' : ''}${codeThen}`);

  // root: recorded by the contract. If not, and the transaction anchored another root there,
  // the receipt's root is what changed.
  // Version 4 writes no root: the one checked here is computed from cid, salt, index, size and
  // path, so a root the chain lacks means one of those was changed.
  const computedOnly = r.version === 4;
  const lacking = computedOnly ? 'inclusion' : 'root';
  const lackingWhy = computedOnly ? `cid, salt, index, size and path lead to root ${r.root}, ` : '';
  if (recordedAt === 0n && !checks.failed('contract'))
    checks.fail(lacking, `${lackingWhy}contract ${r.contract} has no record of ${computedOnly ? 'it: one of them was changed' : `root ${r.root}`}`);
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
    checks.fail(lacking, `${lackingWhy}transaction ${r.txHash} anchored root ${here.map((e) => e.root).join(', ')}, not the receipt's root ${r.root}`);
  } else if (txAnchors) checks.pass('tx', `transaction ${r.txHash} anchored the root at ${r.contract}`);

  // block and blockHash: against the transaction's block when the transaction is the receipt's,
  // else against the block the receipt names (so a wrong tx does not also fail these).
  const txBlock = tx && txAnchors ? Number(tx.blockNumber) : r.blockNumber;
  if (tx && txAnchors && txBlock !== r.blockNumber) checks.fail('block', `transaction ${r.txHash} is in block ${txBlock}, the receipt says ${r.blockNumber}`);
  const block = await blockAt(txBlock);
  let confirmations: number | undefined;
  if (!block) checks.fail('block', `chain ${chainId} has no block ${txBlock}`);
  else {
    if (!checks.failed('block')) checks.pass('block', `block ${txBlock}`);
    if (!same(block.hash, r.blockHash))
      checks.fail('blockHash', `block ${txBlock} has hash ${block.hash} on the canonical chain, the receipt says ${r.blockHash}`);
    else checks.pass('blockHash', `canonical block ${block.hash}`);
    if (Number(block.timestamp) !== r.time) checks.fail('time', `block ${txBlock} has time ${block.timestamp}, the receipt says ${r.time}`);
    // A chain's clock never runs back and never runs ahead of the world's: a block dated before
    // its parent had its clock set back (evm_setTime on a development chain), one dated after
    // the verifier's clock had it set forward. Equal times are allowed (some L2s seal several
    // blocks in one second).
    if (txBlock > 0) {
      const parent = await blockAt(txBlock - 1);
      if (parent && block.timestamp < parent.timestamp)
        checks.fail('time', `block ${txBlock} is dated ${iso(block.timestamp)}, before its parent (${iso(parent.timestamp)}): the chain's clock was set back`);
    }
    const now = p.now?.() ?? Math.floor(Date.now() / 1000);
    if (Number(block.timestamp) > now + FUTURE_TOLERANCE_S)
      checks.fail(
        'time',
        `block ${txBlock} is dated ${iso(block.timestamp)}, later than this verifier's clock (${iso(now)}): the chain's clock was set forward`,
      );
    if (!checks.failed('time')) checks.pass('time', iso(r.time));
    const head = await call('reading the chain head', () => pub.getBlockNumber({ cacheTime: 0 }));
    confirmations = Number(head) - txBlock + 1;
  }
  checkInclusion();

  // attest: a receipt may say "chain" only where nothing marks the anchor as self-attested.
  const marks = selfAttested.filter((s) => !s.startsWith('the receipt says'));
  if (r.attest === 'chain' && marks.length > 0) checks.fail('attest', `the receipt says "chain", but ${marks.join('; ')}`);
  else if (r.attest !== undefined) checks.pass('attest', r.attest);

  const extra = { anchor, selfAttested, ...(pinned ? { pinned } : {}), ...(confirmations === undefined ? {} : { confirmations }) };
  if (checks.list.some((c) => !c.ok) || confirmations === undefined) return checks.result(extra);
  const finality = await awaitFinality(txBlock, r.blockHash, selfAttested.length > 0);
  return checks.result({ ...extra, confirmations: finality.confirmations, finality });

  function checkInclusion(): void {
    if (computedHex !== undefined && same(computedHex, r.root)) {
      checks.pass('inclusion', `leaf ${r.index} of ${r.size} leads to the root in ${r.path.length} steps`);
    } else if (computedHex !== undefined && txRoot !== undefined && same(computedHex, txRoot)) {
      // The proof leads to the root the transaction anchored: only the root field was changed.
      checks.fail('root', `the receipt's root ${r.root} is not the root ${computedHex} its leaf and path lead to`);
    } else if (mth === undefined) {
      checks.fail('inclusion', `a path of ${r.path.length} hashes cannot belong to leaf ${r.index} of a tree of ${r.size}: index, size or path was changed`);
    } else {
      checks.fail('inclusion', `cid, salt, index, size and path lead to ${computedHex}, not to the root ${r.root}: one of them was changed`);
    }
  }

  async function blockAt(n: number) {
    return call('reading the block', async () => {
      try {
        return await pub.getBlock({ blockNumber: BigInt(n) });
      } catch (err) {
        if (err instanceof BlockNotFoundError) return undefined;
        throw err;
      }
    });
  }

  /** The code at `address` after block `n`; null when the RPC cannot answer for that block. */
  async function codeAt(address: Address, n: bigint): Promise<Hex | undefined | null> {
    try {
      return await pub.getCode({ address, blockNumber: n });
    } catch (err) {
      if (isRpcRefusal(err)) return null;
      throw toChainError(err, 'reading the contract code at the anchoring block');
    }
  }

  /** The chain's finalized block number; undefined when the chain has no `finalized` tag. */
  async function finalizedBlock(): Promise<number | undefined> {
    try {
      return Number((await pub.getBlock({ blockTag: 'finalized' })).number);
    } catch (err) {
      if (err instanceof BlockNotFoundError || isUnknownTag(err)) return undefined;
      throw toChainError(err, 'reading the finalized block');
    }
  }

  async function finalityNow(n: number, selfAttestedChain: boolean): Promise<Finality> {
    const head = Number(await call('reading the chain head', () => pub.getBlockNumber({ cacheTime: 0 })));
    const confirmations = head - n + 1;
    if (selfAttestedChain)
      return {
        rule: 'not-enforced',
        final: false,
        confirmations,
        message: `not enforced: on a self-attested chain the operator can rewrite any block, final or not`,
      };
    const finalized = await finalizedBlock();
    if (finalized !== undefined) {
      return n <= finalized
        ? {
            rule: 'finalized',
            final: true,
            finalizedBlock: finalized,
            confirmations,
            message: `block ${n} is finalized (the chain's finalized block is ${finalized})`,
          }
        : {
            rule: 'finalized',
            final: false,
            finalizedBlock: finalized,
            confirmations,
            message: `block ${n} is not finalized yet (the chain's finalized block is ${finalized}, ${n - finalized} blocks to go)`,
          };
    }
    const depth = p.finality?.depth ?? pinned?.confirmations;
    if (depth === undefined)
      return {
        rule: 'none',
        final: false,
        confirmations,
        message: `the chain has no finalized block tag and no confirmation depth was stated (--depth, or "confirmations" in the trust file); ${confirmations} confirmations so far`,
      };
    return {
      rule: 'depth',
      final: confirmations >= depth,
      depth,
      confirmations,
      message: `${confirmations} of ${depth} confirmations (the stated depth: the chain has no finalized block tag)`,
    };
  }

  async function awaitFinality(n: number, hash: Hex, selfAttestedChain: boolean): Promise<Finality> {
    let f = await finalityNow(n, selfAttestedChain);
    if (f.final || f.rule === 'not-enforced' || f.rule === 'none') return f;
    const deadline = Date.now() + (p.finality?.waitMs ?? 0);
    while (!f.final && Date.now() < deadline) {
      p.finality?.onWait?.(f);
      await new Promise((resolve) => setTimeout(resolve, Math.min(p.finality?.pollMs ?? DEFAULT_FINALITY_POLL_MS, Math.max(0, deadline - Date.now()))));
      f = await finalityNow(n, false);
    }
    if (f.final) {
      // The block may have been reorganised away while we waited: it must still be canonical.
      const b = await blockAt(n);
      if (!b || !same(b.hash, hash)) checks.fail('blockHash', `block ${n} was replaced while waiting for finality (now ${b?.hash ?? 'none'})`);
    }
    return f;
  }
}

const iso = (t: number | bigint): string => new Date(Number(t) * 1000).toISOString();

/**
 * The RPC does not know the `finalized` tag: invalid params or an unknown method (how geth before
 * the merge, Besu/Quorum consortium chains and others refuse it), or a message naming the tag.
 * Other JSON-RPC errors (a rate limit, say) are failures to answer, not "no tag".
 */
function isUnknownTag(err: unknown): boolean {
  if (!(err instanceof BaseError)) return false;
  const rpc = err.walk((e) => e instanceof RpcRequestError);
  if (!(rpc instanceof RpcRequestError)) return false;
  return rpc.code === -32602 || rpc.code === -32601 || /finalized|block tag|unknown block|invalid block/i.test(rpc.details ?? '');
}

/** The RPC answered with a JSON-RPC error (an unknown tag, a pruned state), rather than failing to answer. */
function isRpcRefusal(err: unknown): boolean {
  return err instanceof BaseError && err.walk((e) => e instanceof RpcRequestError) !== null;
}
