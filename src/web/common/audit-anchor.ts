// An anchored head of the audit log, checked on the chain from the browser: its receipt followed
// into the anchoring batch, and the batch's root looked up over the chain's JSON-RPC (the
// transaction, its event, the contract's record, the block, its finality): the checks of
// anchor/verify-receipt.ts (anchor/receipt.ts's receipts), by name. Apart from audit-verify.ts,
// which calls verifyHeadAnchor for each anchored head it is shown, because this is the only part
// that talks to the chain.
//
// JSON-RPC is written by hand, not with viem: six read-only calls (eth_chainId,
// eth_getBlockByNumber, eth_getTransactionReceipt, eth_getCode, eth_call, eth_blockNumber) and one
// ABI-encoded argument. Measured with rolldown (minified): viem's createPublicClient with those
// calls bundles to 183 KB (58 KB gzipped); its tree-shakable createClient + viem/actions to 21 KB
// (6.4 KB gzipped), as much as the whole verification, for what is here some sixty lines.
// test/integration/web/audit-verify.test.ts checks the constants below against the node's
// (selectors, development accounts and contract code).
//
// Browser code: no node: imports, no Buffer. It also runs under Node 24, which has the same APIs.

import { cidText, enc, fromBase64, fromHex, headCidBytes, leafHash, rootFromInclusionPath, same, sameHex, sha256, toHex, treeHead } from './audit-proofs.ts';

/** The chain and contract the patient accepts anchors on (a trust file's entry, anchor/trust.ts). */
export interface ChainPin {
  chainId: number;
  /** The DicomVaultAnchor contract, hex. */
  contract: string;
  /** Hash of block 0: tells the chain from another started anew under the same id. */
  genesisHash?: string;
  /** Confirmations to require where the chain has no `finalized` block tag. */
  confirmations?: number;
}

/** Where anchors are looked up (VerifyAuditOptions.chain). */
export interface AnchorChain {
  /** JSON-RPC endpoint of the anchoring chain, reachable from the browser (CORS). */
  rpcUrl: string;
  /** The pinned chain and contract; without it the receipt's own are taken and the result says "unpinned". */
  pin?: ChainPin;
}

export interface AnchorResult {
  status: 'verified' | 'pending' | 'failed';
  reason: string;
  /** Size of the anchored head. */
  head: number;
  chainId?: number;
  contract?: string;
  block?: number;
  /** The block's time, ISO 8601. */
  time?: string;
  /** Why the anchor proves nothing to anyone but the node's operator (a development chain or key); empty when nothing says so. */
  selfAttested: string[];
  /** False when no pin was given: the receipt's own chain and contract were taken. */
  pinned: boolean;
}

/** keccak256("anchoredAt(bytes32)")[0..4]: WebCrypto has no Keccak; the test derives it with viem. */
export const ANCHORED_AT_SELECTOR = '0x9591a610';
/** keccak256("Anchored(bytes32,uint256)"): topic 0 of the contract's event (derived in the test). */
export const ANCHORED_TOPIC = '0xfde54488b5523b3abf19b99976dd0e2c531fbcd233d0eb682c96c3a18cf6b3c1';
/** SHA-256 of DicomVaultAnchor's deployed bytecode (anchor/contract/DicomVaultAnchor.json), as bytes. */
export const ANCHOR_CODE_SHA256 = '0x6c08490d30553aa062eeb857e4a52369efa66c4776863ffed4763cd3917acaca';
/** Development chain ids (anchor/dev-chain.ts): anvil and hardhat, ganache and geth --dev. */
export const DEV_CHAIN_IDS: readonly number[] = [31337, 1337];
/** The public development accounts of the "test test ... junk" mnemonic (anchor/dev-chain.ts), lower case. */
export const DEV_ACCOUNTS: readonly string[] = [
  '0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266',
  '0x70997970c51812dc3a010c7d01b50e0d17dc79c8',
  '0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc',
  '0x90f79bf6eb2c4f870365e785982e1f101e93b906',
  '0x15d34aaf54267db7d7c367839aaf71a00a2c6a65',
  '0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc',
  '0x976ea74026e726554db657fa54763abd0c3a0aa9',
  '0x14dc79964da2c08b23698b3d3cc7ca32193d9955',
  '0x23618e81e3f5cdf7f54c3d65f7fbc0abf5b21e8f',
  '0xa0ee7a142d267c1f36714e4a8f75612f20a79720',
  '0xbcd4042de499d14e55001ccbb24a551f3b954096',
  '0x71be63f3384f5fb98995898a86b02fb2426c5788',
  '0xfabb0ac9d68b0b445fb7357272ff202c5651694a',
  '0x1cbd3b2770909d4e10f157cabc84c7264073c9ec',
  '0xdf3e18d64bc6a983f673ab319ccae4f1a57c7097',
  '0xcd3b766ccdd6ae721141f452c550ca635964ce71',
  '0x2546bcd3c84621e976d8185a91a922ae77ecec30',
  '0xbda5747bfd65f08deb54cb465eb87d40e51b197e',
  '0xdd2fd4581271e230360230f9337d5c0430bf44c0',
  '0x8626f6940e2eb28930efb4cef49b2d1f2c9c1199',
];
/** A block dated later than the verifier's clock by more than this is refused, seconds (as verify-receipt.ts). */
const FUTURE_TOLERANCE_S = 15 * 60;
const ANCHOR_COMMITMENT_DOMAIN = 'dicom-vault/anchor-commitment/v1';

/** A JSON-RPC error answer carries its code; a chain that could not be reached has none. */
class RpcError extends Error {
  readonly code: number | undefined;
  constructor(message: string, code?: number) {
    super(message);
    this.code = code;
  }
}

/** globalThis.fetch, or what stands for it (VerifyAuditOptions.fetch). */
export type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

function rpcClient(url: string, fetchFn: Fetch) {
  let id = 0;
  return async <T>(method: string, params: unknown[]): Promise<T> => {
    let res: Response;
    try {
      res = await fetchFn(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }),
      });
    } catch (err) {
      throw new RpcError(`the chain at ${url} cannot be reached (${err instanceof Error ? err.message : String(err)})`);
    }
    if (!res.ok) throw new RpcError(`the chain at ${url} answered HTTP ${res.status} to ${method}`);
    const body = (await res.json()) as { result?: T; error?: { code: number; message: string } };
    if (body.error !== undefined) throw new RpcError(`${method}: ${body.error.message}`, body.error.code);
    return body.result as T;
  };
}

interface RpcBlock {
  number: string;
  hash: string;
  parentHash: string;
  timestamp: string;
}
interface RpcReceipt {
  status: string;
  from: string;
  blockNumber: string;
  blockHash: string;
  logs: Array<{ address: string; topics: string[]; data: string; removed?: boolean }>;
}

const hexNumber = (n: number): string => `0x${n.toString(16)}`;
const iso = (seconds: number): string => new Date(seconds * 1000).toISOString();

/** The receipt as the node serves it (anchor/receipt.ts ReceiptJson), read strictly enough for the checks below. */
interface ReceiptView {
  v: string;
  cid: string;
  salt?: string;
  index: number;
  size: number;
  path: string;
  root: string;
  chainId: number;
  contract: string;
  tx: string;
  block: number;
  blockHash: string;
  time: number;
}

/**
 * Checks one anchored head's receipt: that the head's CID is a leaf of the batch whose root the
 * chain recorded, at the pinned chain and contract, in the block the receipt names, and whether
 * that block is final. The same checks as anchor/verify-receipt.ts, by name.
 */
export async function verifyHeadAnchor(
  head: { size: number; body: string },
  receipt: unknown,
  chain: AnchorChain,
  fetchFn: Fetch,
  now: () => number,
): Promise<AnchorResult> {
  const selfAttested: string[] = [];
  const pinned = chain.pin !== undefined;
  const base = { head: head.size, selfAttested, pinned };
  const fail = (reason: string, extra: Partial<AnchorResult> = {}): AnchorResult => ({ ...base, ...extra, status: 'failed', reason });
  const r = receipt as ReceiptView;
  if (
    typeof r !== 'object' ||
    r === null ||
    !['dicom-vault-receipt/1', 'dicom-vault-receipt/2', 'dicom-vault-receipt/3'].includes(r.v) ||
    !Number.isSafeInteger(r.index) ||
    !Number.isSafeInteger(r.size) ||
    !Number.isSafeInteger(r.chainId) ||
    !Number.isSafeInteger(r.block) ||
    !Number.isSafeInteger(r.time) ||
    typeof r.contract !== 'string'
  )
    return fail('the anchor receipt is not a dicom-vault receipt');
  const at = { chainId: r.chainId, contract: r.contract, block: r.block, time: iso(r.time) };

  // cid: the receipt is for this head (its body's CID), not another.
  const cidBytes = await headCidBytes(head.body);
  if (r.cid !== cidText(cidBytes)) return fail(`the anchor receipt is for ${r.cid}, not for this head (${cidText(cidBytes)})`, at);

  // inclusion: the head's CID (or its salted commitment, format 3) is a leaf of the batch whose tree head is `root`.
  let leafData: Uint8Array = cidBytes;
  if (r.v === 'dicom-vault-receipt/3') {
    const salt = fromBase64(r.salt ?? '');
    if (salt?.length !== 32) return fail('the anchor receipt has no valid salt', at);
    leafData = await sha256(enc.encode(ANCHOR_COMMITMENT_DOMAIN), Uint8Array.of(0), salt, cidBytes);
  }
  const pathBytes = fromBase64(r.path);
  const root = fromBase64(r.root);
  const txHash = fromBase64(r.tx);
  const blockHash = fromBase64(r.blockHash);
  if (pathBytes === undefined || pathBytes.length % 32 !== 0 || root?.length !== 32 || txHash?.length !== 32 || blockHash?.length !== 32)
    return fail('the anchor receipt is malformed (path, root, tx or blockHash)', at);
  const path: Uint8Array[] = [];
  for (let i = 0; i < pathBytes.length; i += 32) path.push(pathBytes.subarray(i, i + 32));
  const mth = await rootFromInclusionPath(await leafHash(leafData), r.index, r.size, path);
  if (mth === undefined || !same(await treeHead(r.size, mth), root))
    return fail(`the head is not in the anchored batch: its leaf and path do not lead to the batch root ${toHex(root)}`, at);

  // The pin: the patient's own word on which chain and contract count, never the receipt's.
  if (chain.pin !== undefined) {
    if (r.chainId !== chain.pin.chainId) return fail(`the anchor is on chain ${r.chainId}, not on the pinned chain ${chain.pin.chainId}`, at);
    if (!sameHex(r.contract, chain.pin.contract)) return fail(`the anchor is at contract ${r.contract}, not at the pinned ${chain.pin.contract}`, at);
  }
  const rootHex = toHex(root);
  const rpc = rpcClient(chain.rpcUrl, fetchFn);
  try {
    const chainId = Number(await rpc<string>('eth_chainId', []));
    if (chainId !== r.chainId) return fail(`the receipt is for chain ${r.chainId}, the RPC serves chain ${chainId}`, at);
    if (DEV_CHAIN_IDS.includes(chainId)) selfAttested.push(`chain ${chainId} is a local development chain, which its operator can rewrite`);
    if (chain.pin?.genesisHash !== undefined) {
      const genesis = await rpc<RpcBlock | null>('eth_getBlockByNumber', ['0x0', false]);
      if (!sameHex(genesis?.hash, chain.pin.genesisHash))
        return fail(`the chain's first block is ${genesis?.hash}, not the pinned ${chain.pin.genesisHash}: another chain under the same id`, at);
    }
    // contract: DicomVaultAnchor's code is there now and was when the root was anchored.
    const codeNow = fromHex(await rpc<string>('eth_getCode', [r.contract, 'latest']));
    if (codeNow === undefined || toHex(await sha256(codeNow)) !== ANCHOR_CODE_SHA256) return fail(`no DicomVaultAnchor contract at ${r.contract}`, at);
    // tx: exists, succeeded, emitted Anchored(root) at the contract.
    const tx = await rpc<RpcReceipt | null>('eth_getTransactionReceipt', [toHex(txHash)]);
    if (tx === null) return fail(`the anchoring transaction ${toHex(txHash)} is not on the chain`, at);
    if (tx.status !== '0x1') return fail(`the anchoring transaction ${toHex(txHash)} failed`, at);
    const anchored = tx.logs.some(
      (l) => l.removed !== true && sameHex(l.address, r.contract) && sameHex(l.topics[0], ANCHORED_TOPIC) && sameHex(l.topics[1], rootHex),
    );
    if (!anchored) return fail(`transaction ${toHex(txHash)} did not anchor the batch root ${rootHex} at ${r.contract}`, at);
    if (DEV_ACCOUNTS.includes(tx.from.toLowerCase()))
      selfAttested.push(`the anchor was signed with public development key ${tx.from}, which anyone can sign with`);
    // block and blockHash: the transaction's block is the receipt's, on the canonical chain.
    if (Number(tx.blockNumber) !== r.block || !sameHex(tx.blockHash, toHex(blockHash)))
      return fail(`the transaction is in block ${Number(tx.blockNumber)} (${tx.blockHash}), the receipt says ${r.block}`, at);
    const block = await rpc<RpcBlock | null>('eth_getBlockByNumber', [hexNumber(r.block), false]);
    if (block === null || !sameHex(block.hash, toHex(blockHash)))
      return fail(`block ${r.block} on the chain is not the receipt's (${block?.hash ?? 'none'})`, at);
    const codeThen = await rpc<string>('eth_getCode', [r.contract, hexNumber(r.block)]).catch((err: unknown) => {
      // A pruned node cannot answer for an old block (a JSON-RPC error): say nothing then.
      if (err instanceof RpcError && err.code !== undefined) return undefined;
      throw err;
    });
    if (codeThen !== undefined && toHex(await sha256(fromHex(codeThen) ?? new Uint8Array())) !== ANCHOR_CODE_SHA256)
      return fail(`the code at ${r.contract} was not DicomVaultAnchor's when the root was anchored`, at);
    // root and time: the contract itself recorded the root, at the block's time.
    // (At the latest block, as verify-receipt.ts reads it: a record is never changed once made, and
    // an RPC that prunes old state still answers.)
    const recorded = BigInt(await rpc<string>('eth_call', [{ to: r.contract, data: ANCHORED_AT_SELECTOR + rootHex.slice(2) }, 'latest']));
    if (recorded === 0n) return fail(`the contract has no record of the batch root ${rootHex}`, at);
    const blockTime = Number(block.timestamp);
    if (recorded !== BigInt(r.time) || blockTime !== r.time) return fail(`the chain dates the anchor ${iso(blockTime)}, the receipt says ${iso(r.time)}`, at);
    if (r.block > 0) {
      const parent = await rpc<RpcBlock | null>('eth_getBlockByNumber', [hexNumber(r.block - 1), false]);
      if (parent !== null && Number(parent.timestamp) > blockTime)
        return fail(`block ${r.block} is dated before its parent: the chain's clock was set back`, at);
    }
    if (blockTime > now() + FUTURE_TOLERANCE_S) return fail(`block ${r.block} is dated ${iso(blockTime)}, later than this device's clock`, at);

    // Finality: a development chain's operator can rewrite any block, final or not (not enforced).
    const when = `anchored in block ${r.block} of chain ${chainId} at ${iso(blockTime)}`;
    if (selfAttested.length > 0) return { ...base, ...at, status: 'verified', reason: `${when}; self-attested: ${selfAttested.join('; ')}` };
    const finalized = await rpc<RpcBlock | null>('eth_getBlockByNumber', ['finalized', false]).catch((err: unknown) => {
      if (err instanceof RpcError && err.code !== undefined) return null;
      throw err;
    });
    if (finalized !== null) {
      const f = Number(finalized.number);
      return f >= r.block
        ? { ...base, ...at, status: 'verified', reason: `${when}, finalized` }
        : { ...base, ...at, status: 'pending', reason: `${when}, not final yet (${r.block - f} blocks to go)` };
    }
    const depth = chain.pin?.confirmations;
    const confirmations = Number(await rpc<string>('eth_blockNumber', [])) - r.block + 1;
    if (depth === undefined)
      return { ...base, ...at, status: 'pending', reason: `${when}; the chain has no finalized block and no confirmation depth is pinned` };
    return confirmations >= depth
      ? { ...base, ...at, status: 'verified', reason: `${when}, ${confirmations} confirmations` }
      : { ...base, ...at, status: 'pending', reason: `${when}, ${confirmations} of ${depth} confirmations` };
  } catch (err) {
    // The chain did not answer: not evidence of tampering, but nothing is checked either.
    return { ...base, ...at, status: 'pending', reason: `the anchor could not be checked: ${err instanceof Error ? err.message : String(err)}` };
  }
}
