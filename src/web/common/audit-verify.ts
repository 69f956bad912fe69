// The patient's audit log, checked where the patient is: in the browser, with nothing but Web APIs
// (fetch, WebCrypto's SHA-256 and Ed25519), the node's public API and a chain's JSON-RPC. The node's
// word is not taken for anything: every entry's leaf is hashed again and its inclusion proof
// followed to the head it names; the head's signature is checked under the key the patient pinned;
// the anchored head's receipt is followed into the anchoring batch and the batch's root looked up
// on the chain (the transaction, its event, the contract's record, the block); and the latest head
// must extend the anchored one (consistency proof), or the node is showing two histories.
//
// The node-side modules this mirrors (src/audit/entry.ts parseLeaf, anchor/merkle.ts,
// src/audit/tree.ts verifyConsistency, src/audit/head.ts, anchor/receipt.ts,
// anchor/verify-receipt.ts) hash with node:crypto synchronously and read with Buffer and viem;
// WebCrypto's digest is asynchronous, so the few functions are written again here over
// Uint8Array. test/integration/web/audit-verify.test.ts checks them against those modules (the
// same roots, CIDs, selectors, development accounts and contract code).
//
// JSON-RPC is written by hand, not with viem: six read-only calls (eth_chainId,
// eth_getBlockByNumber, eth_getTransactionReceipt, eth_getCode, eth_call, eth_blockNumber) and one
// ABI-encoded argument. Measured with rolldown (minified): viem's createPublicClient with those
// calls bundles to 183 KB (58 KB gzipped); its tree-shakable createClient + viem/actions to 21 KB
// (6.4 KB gzipped), as much as this whole module, for what is here some sixty lines.
//
// Browser code: no node: imports, no Buffer. It also runs under Node 24, which has the same APIs.

/** What each entry came to. */
export type EntryStatus = 'verified' | 'pending-anchor' | 'failed';
/** The log as a whole: `warning` as soon as one thing failed (an entry, a head, the key, the anchor). */
export type LogStatus = 'verified' | 'pending-anchor' | 'warning';

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

export interface VerifyAuditOptions {
  /** The node's origin (the page's own: location.origin). */
  baseUrl: string;
  /** The patient's session token. */
  token: string;
  /** The node's audit key (SPKI DER, base64) as the patient pinned it; absent on first use. */
  nodeKey?: string;
  /**
   * The keys that seal the patient's entries (subject → raw AES-256 key, base64), when the page
   * holds them. With a subject's key each entry is opened here and its details compared with what
   * the node showed; without it the details are the node's word (the proofs cover the ciphertext).
   */
  subjectKeys?: Record<string, string>;
  chain: {
    /** JSON-RPC endpoint of the anchoring chain, reachable from the browser (CORS). */
    rpcUrl: string;
    /** The pinned chain and contract; without it the receipt's own are taken and the result says "unpinned". */
    pin?: ChainPin;
  };
  /** Filters of GET /api/patient/audit. */
  query?: { grantee?: string; study?: string; limit?: number; before?: number };
  /** Default globalThis.fetch. */
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
  /** Seconds since the epoch (tests); default Date.now(). */
  now?: () => number;
}

export interface EntryResult {
  index: number;
  time: string;
  subject: string;
  /** The details as the node opened them; null when the patient's key was destroyed (erasure) or the entry does not open. */
  record: Record<string, unknown> | null;
  /** True when the details were opened in the browser under the patient's key and match the node's; false when they are the node's word. */
  detailsVerified: boolean;
  status: EntryStatus;
  /** Why, in words a patient can read. */
  reason: string;
  /** Size of the head the entry was proven into. */
  head?: number;
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

export interface AuditVerification {
  status: LogStatus;
  /** One line for the page's banner. */
  summary: string;
  /** The key the node serves (SPKI DER, base64): what the page pins on first use. */
  nodeKey: string;
  /** True when no key was pinned and the served one was used. */
  firstUse: boolean;
  /** Set when the served key is not the pinned one. */
  keyMismatch?: { pinned: string; served: string };
  entries: EntryResult[];
  /** The head the entries were proven into. */
  head?: { size: number; time: string; cid: string; signatureValid: boolean };
  anchor?: AnchorResult;
  /** What failed beyond single entries (key, heads, consistency), in words. */
  problems: string[];
}

// ---------------------------------------------------------------------------------------------
// Bytes, base64, hex, CIDs

const enc = new TextEncoder();

/** Standard or URL-safe base64, padded or not; undefined when not base64. */
export function fromBase64(s: string): Uint8Array | undefined {
  if (typeof s !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(s)) return undefined;
  const std = s.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
  if (std.length % 4 === 1) return undefined;
  try {
    const bin = atob(std + '='.repeat((4 - (std.length % 4)) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

export function toHex(b: Uint8Array): string {
  let s = '0x';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

function fromHex(h: string): Uint8Array | undefined {
  if (typeof h !== 'string' || !/^0x([0-9a-fA-F]{2})*$/.test(h)) return undefined;
  const out = new Uint8Array((h.length - 2) / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(h.slice(2 + 2 * i, 4 + 2 * i), 16);
  return out;
}

function same(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

const sameHex = (a: string | undefined, b: string | undefined): boolean => a !== undefined && b !== undefined && a.toLowerCase() === b.toLowerCase();

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', concat(...parts)));
}

/** CIDv1, raw codec (0x55), sha2-256 multihash: the bytes a head is anchored as (src/audit/head.ts headCid). */
export async function headCidBytes(body: string): Promise<Uint8Array> {
  return concat(Uint8Array.of(0x01, 0x55, 0x12, 0x20), await sha256(enc.encode(body)));
}

/** A CID's text: multibase "b", RFC 4648 base32, lower case, unpadded (as multiformats prints CIDv1). */
export function cidText(bytes: Uint8Array): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let out = 'b';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

// ---------------------------------------------------------------------------------------------
// RFC 9162 hashing (anchor/merkle.ts, src/audit/tree.ts)

export const leafHash = (data: Uint8Array): Promise<Uint8Array> => sha256(Uint8Array.of(0x00), data);
const nodeHash = (l: Uint8Array, r: Uint8Array): Promise<Uint8Array> => sha256(Uint8Array.of(0x01), l, r);

/** An anchoring batch's tree head: SHA-256(0x02 || size u64 BE || MTH) (anchor/merkle.ts treeHead). */
export function treeHead(size: number, mth: Uint8Array): Promise<Uint8Array> {
  const n = new Uint8Array(8);
  new DataView(n.buffer).setBigUint64(0, BigInt(size));
  return sha256(Uint8Array.of(0x02), n, mth);
}

/** RFC 9162 §2.1.3.2: the root `path` leads to from `leaf` (a leaf hash) at `index` of `size`; undefined when the path cannot belong there. */
export async function rootFromInclusionPath(leaf: Uint8Array, index: number, size: number, path: readonly Uint8Array[]): Promise<Uint8Array | undefined> {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return undefined;
  // Plain numbers, not bit operators: those truncate to 32 bits.
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (p.length !== 32 || sn === 0) return undefined;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn /= 2;
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : undefined;
}

/** RFC 9162 §2.1.4.2: the tree of `first` leaves (firstRoot) is a prefix of the tree of `second` (secondRoot). */
export async function verifyConsistency(
  first: number,
  second: number,
  proof: readonly Uint8Array[],
  firstRoot: Uint8Array,
  secondRoot: Uint8Array,
): Promise<boolean> {
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second) return false;
  if (proof.some((p) => p.length !== 32)) return false;
  if (first === second) return proof.length === 0 && same(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0;
  if (proof.length === 0) return false;
  const path = Number.isInteger(Math.log2(first)) ? [firstRoot, ...proof] : [...proof];
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && same(fr, firstRoot) && same(sr, secondRoot);
}

// ---------------------------------------------------------------------------------------------
// Entries and heads (src/audit/entry.ts, src/audit/head.ts)

/** The clear header of a version 1 leaf; undefined when the bytes are not one. */
export function parseLeafHeader(leaf: Uint8Array): { index: number; time: number; subject: string; prev: Uint8Array } | undefined {
  if (leaf.length < 18 || leaf[0] !== 1) return undefined;
  const len = leaf[17]!;
  const ivAt = 18 + len + 32;
  if (len === 0 || leaf.length < ivAt + 12 + 16) return undefined;
  const view = new DataView(leaf.buffer, leaf.byteOffset, leaf.byteLength);
  const index = view.getBigUint64(1);
  const time = view.getBigUint64(9);
  if (index > BigInt(Number.MAX_SAFE_INTEGER) || time > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return { index: Number(index), time: Number(time), subject: String.fromCharCode(...leaf.subarray(18, 18 + len)), prev: leaf.subarray(18 + len, ivAt) };
}

/** JSON with object keys sorted: the same details compare equal whatever order the node wrote them in. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

/**
 * Opens a leaf's details under the subject's key (AES-256-GCM, the clear header as additional
 * data: src/audit/entry.ts openLeaf); undefined when the key does not open it.
 */
export async function openLeafDetails(leaf: Uint8Array, rawKey: Uint8Array): Promise<Record<string, unknown> | undefined> {
  const header = parseLeafHeader(leaf);
  if (header === undefined) return undefined;
  const at = 18 + header.subject.length + 32;
  try {
    const key = await crypto.subtle.importKey('raw', concat(rawKey), { name: 'AES-GCM' }, false, ['decrypt']);
    const clear = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: concat(leaf.subarray(at, at + 12)), additionalData: concat(leaf.subarray(0, at)), tagLength: 128 },
      key,
      concat(leaf.subarray(at + 12)),
    );
    return JSON.parse(new TextDecoder().decode(clear)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

const HEAD_PREFIX = 'dicom-vault audit log ';

/** A head's signed body, parsed; undefined when it is not one. */
export function parseHeadBody(body: string): { size: number; root: Uint8Array; time: string; prevSize: number } | undefined {
  const lines = body.split('\n');
  if (lines.length !== 6 || lines[5] !== '' || !lines[0]!.startsWith(HEAD_PREFIX)) return undefined;
  const size = Number(lines[1]);
  const root = fromBase64(lines[2]!);
  const prevSize = Number(lines[4]!.split(' ')[0]);
  if (!Number.isSafeInteger(size) || size < 0 || root?.length !== 32 || !Number.isSafeInteger(prevSize) || Number.isNaN(Date.parse(lines[3]!)))
    return undefined;
  return { size, root, time: lines[3]!, prevSize };
}

/** WebCrypto's key type (named through the API: the project's tsconfig has no DOM library). */
type WebKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

async function importNodeKey(spkiBase64: string): Promise<WebKey | undefined> {
  const der = fromBase64(spkiBase64);
  if (der === undefined) return undefined;
  try {
    return await crypto.subtle.importKey('spki', concat(der), { name: 'Ed25519' }, false, ['verify']);
  } catch {
    return undefined;
  }
}

async function signedBy(key: WebKey | undefined, body: string, signature: string): Promise<boolean> {
  const sig = fromBase64(signature);
  if (key === undefined || sig === undefined) return false;
  try {
    return await crypto.subtle.verify({ name: 'Ed25519' }, key, concat(sig), enc.encode(body));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The chain (anchor/verify-receipt.ts, over raw JSON-RPC)

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

type Fetch = NonNullable<VerifyAuditOptions['fetch']>;

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
  chain: VerifyAuditOptions['chain'],
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

// ---------------------------------------------------------------------------------------------
// The patient's log

interface HeadView {
  size: number;
  root: string;
  time: string;
  cid: string;
  body: string;
  signature: string;
  receipt: unknown;
}
interface HeadCheck {
  view: HeadView;
  root: Uint8Array | undefined;
  problem?: string;
  anchor?: AnchorResult;
}
interface EntryView {
  index: number;
  time: string;
  subject: string;
  record: Record<string, unknown> | null;
  leaf: string;
  head?: number;
  proof?: string[];
}

/**
 * Fetches the patient's audit entries and checks every one of them, the head they prove into, its
 * anchor on the chain, and that the node's latest head extends the anchored one. Never throws for
 * what the node or the chain answered: a failure is a result (status `warning`, with reasons).
 * Throws only when the node cannot be asked at all (network, or the session refused).
 */
export async function verifyPatientAudit(o: VerifyAuditOptions): Promise<AuditVerification> {
  const fetchFn: Fetch = o.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const now = o.now ?? (() => Math.floor(Date.now() / 1000));
  const base = o.baseUrl.replace(/\/+$/, '');
  const getJson = async <T>(path: string, auth: boolean): Promise<{ status: number; body: T }> => {
    const res = await fetchFn(`${base}${path}`, { headers: { accept: 'application/json', ...(auth ? { authorization: `Bearer ${o.token}` } : {}) } });
    return { status: res.status, body: (await res.json().catch(() => undefined)) as T };
  };

  const problems: string[] = [];
  const served = await getJson<{ publicKey: string }>('/api/audit/key', false);
  if (served.status !== 200 || typeof served.body?.publicKey !== 'string') throw new Error(`the node did not give its audit key (HTTP ${served.status})`);
  const servedKey = served.body.publicKey;
  const pinnedKey = o.nodeKey ?? servedKey;
  let keyMismatch: AuditVerification['keyMismatch'];
  if (o.nodeKey !== undefined && !same(fromBase64(o.nodeKey), fromBase64(servedKey))) {
    keyMismatch = { pinned: o.nodeKey, served: servedKey };
    problems.push("the node's audit key is not the one you pinned: its log cannot be trusted until you know why (a new node, or an impostor)");
  }
  const key = await importNodeKey(pinnedKey);
  if (key === undefined) problems.push('the pinned audit key is not an Ed25519 public key');

  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) q.set(k, String(v));
  const listed = await getJson<{ entries: EntryView[]; heads: HeadView[] }>(`/api/patient/audit${q.size > 0 ? `?${q}` : ''}`, true);
  if (listed.status !== 200) throw new Error(`the node refused the audit log (HTTP ${listed.status})`);
  const { entries, heads } = listed.body;

  // -- the head(s) the entries prove into: signed under the pinned key, fields = signed body ----
  const checkHead = async (h: HeadView): Promise<HeadCheck> => {
    const parsed = parseHeadBody(h.body);
    let problem: string | undefined;
    if (!(await signedBy(key, h.body, h.signature))) problem = `the head of ${h.size} entries is not signed by the node's pinned key`;
    else if (parsed === undefined || parsed.size !== h.size || !same(parsed.root, fromBase64(h.root)) || parsed.time !== h.time)
      problem = `the head of ${h.size} entries is not what its signature covers`;
    else if (h.cid !== cidText(await headCidBytes(h.body))) problem = `the head of ${h.size} entries is anchored under a CID that is not its own`;
    if (problem !== undefined) problems.push(problem);
    return { view: h, root: parsed?.root, ...(problem !== undefined ? { problem } : {}) };
  };
  const anchorOf = async (hc: HeadCheck): Promise<void> => {
    if (hc.problem !== undefined || hc.view.receipt === null || hc.view.receipt === undefined) return;
    hc.anchor = await verifyHeadAnchor(hc.view, hc.view.receipt, o.chain, fetchFn, now);
    if (hc.anchor.status === 'failed') problems.push(`the anchor of the head of ${hc.view.size} entries: ${hc.anchor.reason}`);
  };
  const headChecks = new Map<number, HeadCheck>();
  for (const h of heads) {
    const hc = await checkHead(h);
    await anchorOf(hc);
    headChecks.set(h.size, hc);
  }
  const shown = heads[0] === undefined ? undefined : headChecks.get(heads[0].size);

  // -- when the head shown is not anchored yet (the newest entries came after the last anchor; the
  // patient's own last read of the log is one), the latest anchored head still covers the older
  // entries: the node names it for the oldest entry shown (GET /api/patient/audit/{index} proves
  // into the latest anchored head that covers it). A consistency proof from it to the head shown
  // makes every entry below its size an entry of the anchored head too.
  let bridge: HeadCheck | undefined;
  const underShown = shown === undefined ? [] : entries.filter((e) => e.head === shown.view.size).map((e) => e.index);
  if (shown !== undefined && shown.problem === undefined && shown.anchor === undefined && shown.root !== undefined && underShown.length > 0) {
    const one = await getJson<{ head?: HeadView }>(`/api/patient/audit/${Math.min(...underShown)}`, true);
    const h = one.body?.head;
    if (one.status === 200 && h !== undefined && h.size < shown.view.size && h.receipt !== null && h.receipt !== undefined) {
      const hc = await checkHead(h);
      if (hc.problem === undefined && hc.root !== undefined) {
        await anchorOf(hc);
        const c = await getJson<{ proof: string[] }>(`/api/audit/consistency?first=${h.size}&second=${shown.view.size}`, false);
        const proof = (c.body?.proof ?? []).map((p) => fromBase64(p) ?? new Uint8Array());
        if (c.status === 200 && (await verifyConsistency(h.size, shown.view.size, proof, hc.root, shown.root))) bridge = hc;
        else
          problems.push(
            `the head of ${shown.view.size} entries does not extend the anchored head of ${h.size}: the log was rewritten, or it shows different histories to different readers`,
          );
      }
    }
  }

  // -- no split view: the node's latest head extends the anchored one -----------------------------
  const anchoredHead = shown?.anchor !== undefined ? shown : bridge;
  if (anchoredHead?.anchor?.status === 'verified' && anchoredHead.root !== undefined) {
    const latest = await getJson<HeadView>('/api/audit/head', false);
    if (latest.status === 200 && latest.body.size > anchoredHead.view.size) {
      const l = latest.body;
      const lp = parseHeadBody(l.body);
      const c = await getJson<{ proof: string[] }>(`/api/audit/consistency?first=${anchoredHead.view.size}&second=${l.size}`, false);
      const proof = (c.body?.proof ?? []).map((p) => fromBase64(p) ?? new Uint8Array());
      if (!(await signedBy(key, l.body, l.signature)) || lp === undefined || lp.size !== l.size)
        problems.push(`the node's latest head (${l.size} entries) is not signed by the pinned key`);
      else if (c.status !== 200 || !(await verifyConsistency(anchoredHead.view.size, l.size, proof, anchoredHead.root, lp.root)))
        problems.push(
          `the node's latest head (${l.size} entries) does not extend the anchored head of ${anchoredHead.view.size}: the log was rewritten, or it shows different histories to different readers`,
        );
    }
  }

  // -- each entry: its own header, its proof into its head, its link to the entry before ----------
  const leaves = new Map<number, Uint8Array>();
  for (const e of entries) {
    const leaf = fromBase64(e.leaf);
    if (leaf !== undefined) leaves.set(e.index, leaf);
  }
  const results: EntryResult[] = [];
  for (const e of entries) {
    let record = e.record ?? null;
    let detailsVerified = false;
    const out = (status: EntryStatus, reason: string): EntryResult => ({
      index: e.index,
      time: e.time,
      subject: e.subject,
      record,
      detailsVerified,
      status,
      reason,
      ...(e.head !== undefined ? { head: e.head } : {}),
    });
    const leaf = leaves.get(e.index);
    const header = leaf === undefined ? undefined : parseLeafHeader(leaf);
    if (leaf === undefined || header === undefined) {
      results.push(out('failed', `entry ${e.index} is not a well-formed entry: it was changed`));
      continue;
    }
    if (header.index !== e.index || header.time !== Date.parse(e.time) || header.subject !== e.subject) {
      results.push(
        out(
          'failed',
          `entry ${e.index} is not where or when the node says (it was written as entry ${header.index} at ${new Date(header.time).toISOString()})`,
        ),
      );
      continue;
    }
    // The details: opened here when the page holds the subject's key, else the node's word.
    const subjectKey = o.subjectKeys?.[e.subject];
    if (subjectKey !== undefined) {
      const opened = await openLeafDetails(leaf, fromBase64(subjectKey) ?? new Uint8Array());
      if (opened === undefined) {
        results.push(out('failed', `entry ${e.index} does not open under your key: it was changed`));
        continue;
      }
      if (record !== null && canonical(opened) !== canonical(record)) {
        record = opened;
        results.push(out('failed', `the node showed details for entry ${e.index} that are not what the entry holds (shown here: what it holds)`));
        continue;
      }
      record = opened;
      detailsVerified = true;
    }
    const hc = e.head === undefined ? undefined : headChecks.get(e.head);
    if (hc === undefined || e.proof === undefined) {
      // No head covers it yet: only its link to the entry before can be checked. (With a proof the
      // head commits to the leaf itself, and a changed neighbour fails its own proof.)
      const before = leaves.get(e.index - 1);
      if (before !== undefined && !same(header.prev, await leafHash(before)))
        results.push(out('failed', `entry ${e.index} was written after a different entry ${e.index - 1} than the one shown: one of the two was changed`));
      else results.push(out('pending-anchor', `entry ${e.index} is not in a signed head yet`));
      continue;
    }
    if (hc.problem !== undefined) {
      results.push(out('failed', hc.problem));
      continue;
    }
    const proof = e.proof.map((p) => fromBase64(p) ?? new Uint8Array());
    const root = await rootFromInclusionPath(await leafHash(leaf), e.index, hc.view.size, proof);
    if (root === undefined || !same(root, hc.root)) {
      results.push(out('failed', `entry ${e.index} was changed: it no longer hashes into the signed head of ${hc.view.size} entries`));
      continue;
    }
    if (keyMismatch !== undefined) {
      results.push(out('failed', 'the head is signed by a key that is not the one you pinned'));
      continue;
    }
    const viaBridge = hc.anchor === undefined && bridge !== undefined && hc === shown && e.index < bridge.view.size;
    const a = viaBridge ? bridge!.anchor : hc.anchor;
    const where = viaBridge
      ? `in the head of ${hc.view.size} entries, which extends the anchored head of ${bridge!.view.size}`
      : `in the head of ${hc.view.size} entries`;
    if (a === undefined) results.push(out('pending-anchor', `in the signed head of ${hc.view.size} entries; its anchor on the chain is pending`));
    else if (a.status === 'failed') results.push(out('failed', `the anchor of its head does not hold: ${a.reason}`));
    else if (a.status === 'pending') results.push(out('pending-anchor', `${where}; ${a.reason}`));
    else results.push(out('verified', `${where}, ${a.reason}`));
  }

  const failed = results.filter((r) => r.status === 'failed').length;
  const pending = results.filter((r) => r.status === 'pending-anchor').length;
  const status: LogStatus = failed > 0 || problems.length > 0 ? 'warning' : pending > 0 ? 'pending-anchor' : 'verified';
  const summary =
    status === 'warning'
      ? `Warning: ${failed > 0 ? `${failed} of ${results.length} entries failed verification` : 'the log failed verification'}${problems[0] !== undefined ? ` (${problems[0]})` : ''}`
      : status === 'pending-anchor'
        ? `${results.length - pending} of ${results.length} entries verified; ${pending} wait for their anchor on the chain`
        : `All ${results.length} entries verified in this browser against the node's pinned key and the chain`;
  const anchor = shown?.anchor ?? bridge?.anchor;
  return {
    status,
    summary,
    nodeKey: servedKey,
    firstUse: o.nodeKey === undefined,
    ...(keyMismatch !== undefined ? { keyMismatch } : {}),
    entries: results,
    ...(shown !== undefined
      ? {
          head: {
            size: shown.view.size,
            time: shown.view.time,
            cid: shown.view.cid,
            signatureValid: shown.problem === undefined || !shown.problem.includes('not signed'),
          },
        }
      : {}),
    ...(anchor !== undefined ? { anchor } : {}),
    problems,
  };
}
