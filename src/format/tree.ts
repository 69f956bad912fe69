// A balanced tree of link nodes: how an instance lists its chunks, and a version its added
// instances, without a block that grows with them (format 2, dag.ts).
//
//   top links (in the instance node or manifest itself, at most `fanout`)
//     └─ link node {type: 'dicom-vault/links@1', links: [...]}     depth levels of these
//          └─ ...
//               └─ leaves (chunks: raw blocks; instances: instance nodes)
//
// Every link node holds exactly `fanout` links except those on the right edge, so leaf i is found
// by arithmetic (no sizes per link, unlike UnixFS's blocksizes): at level l (leaves are level 0)
// the node holding it is number floor(i / fanout^l) of its level. A reader fetches only the nodes
// on the path to the leaves it wants, a few per level; a writer keeps one pending list per level,
// so memory is fanout x depth links whatever the count.
//
// Why dag-cbor and not UnixFS (dag-pb): the leaves are AES-GCM ciphertext with tags, so a UnixFS
// file would `ipfs cat` to ciphertext, of no use to anyone; the nodes above need typed fields
// (chunk size, salt, sealed envelope) that dag-pb has no place for but an opaque Data field; and
// the rest of the DAG is dag-cbor already, which Kubo pins, exports (`ipfs dag export`) and walks
// like dag-pb. With fixed fanout the arithmetic above replaces UnixFS's per-link sizes.
//
// Fanout 1024 by default: a link node of 1,024 raw CIDv1s is 42 KiB (under IPFS's 1 MiB block
// size by far, and what a frame read costs per level), and 2 levels under the instance node list
// 2^30 chunks (1 PiB at 1 MiB). Instances of up to 1,024 chunks (1 GiB) have no link node at all,
// so small instances cost no extra block. Each node records its fanout (tests use small ones).
import { createHash } from 'node:crypto';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { sha256 } from 'multiformats/hashes/sha2';
import { VaultError, isVaultError } from '../core/errors.ts';

export const LINK_NODE_TYPE = 'dicom-vault/links@1';
/** Links per node (link nodes, and the top list in an instance node or manifest). */
export const DEFAULT_FANOUT = 1024;
/** Largest fanout a node may declare: 16,384 links of 41 bytes are 656 KiB, under 1 MiB. */
export const MAX_FANOUT = 16_384;

export interface EncodedNode {
  cid: CID;
  bytes: Uint8Array;
}

/** CIDv1 dag-cbor sha2-256, hashed synchronously (node:crypto) on the ingest path. */
export function encodeNode(node: unknown): EncodedNode {
  const bytes = dagCbor.encode(node);
  const digest = createHash('sha256').update(bytes).digest();
  return { cid: CID.createV1(dagCbor.code, Digest.create(sha256.code, digest)), bytes };
}

export interface LinkNode {
  type: typeof LINK_NODE_TYPE;
  links: CID[];
}

function encodeLinkNode(links: CID[]): EncodedNode {
  const node: LinkNode = { type: LINK_NODE_TYPE, links };
  return encodeNode(node);
}

export function checkFanout(fanout: number): number {
  if (!Number.isInteger(fanout) || fanout < 2 || fanout > MAX_FANOUT) {
    throw new VaultError('CONFIG_INVALID', `tree fanout must be an integer from 2 to ${MAX_FANOUT} (got ${fanout})`);
  }
  return fanout;
}

/** What a finished tree is: the top links (at most fanout) and the levels of link nodes under them. */
export interface TreeTop {
  depth: number;
  count: number;
  links: CID[];
}

/**
 * Builds the tree as leaves arrive, in order. `push` and `finish` return the link nodes that
 * became complete (the caller writes them); nothing kept grows with the count. A node is closed
 * when the link after its last arrives, so the tree is no deeper than the count needs.
 */
export class LinkTreeBuilder {
  readonly fanout: number;
  /** Pending links per level (0: leaves). */
  readonly #levels: CID[][] = [[]];
  #count = 0;

  constructor(fanout = DEFAULT_FANOUT) {
    this.fanout = checkFanout(fanout);
  }

  get count(): number {
    return this.#count;
  }

  push(leaf: CID): EncodedNode[] {
    this.#count++;
    const out: EncodedNode[] = [];
    this.#add(0, leaf, out);
    return out;
  }

  #add(level: number, cid: CID, out: EncodedNode[]): void {
    if (this.#levels[level] === undefined) this.#levels[level] = [];
    if (this.#levels[level].length === this.fanout) {
      const node = encodeLinkNode(this.#levels[level]);
      out.push(node);
      this.#levels[level] = [];
      this.#add(level + 1, node.cid, out);
    }
    this.#levels[level].push(cid);
  }

  /** Closes every pending node below the top; the builder is done. */
  finish(): TreeTop & { nodes: EncodedNode[] } {
    const nodes: EncodedNode[] = [];
    for (let level = 0; level < this.#levels.length - 1; level++) {
      const node = encodeLinkNode(this.#levels[level]!);
      nodes.push(node);
      this.#levels[level] = [];
      this.#add(level + 1, node.cid, nodes);
    }
    const depth = this.#levels.length - 1;
    return { depth, count: this.#count, links: this.#levels[depth]!, nodes };
  }

  /** What is held now, with each link's level (0: a leaf). */
  pending(): Array<{ cid: CID; level: number }> {
    return this.#levels.flatMap((links, level) => links.map((cid) => ({ cid, level })));
  }
}

/** Link nodes a reader keeps per level: the branch it reads and the one before (read-ahead crosses branches). */
const CACHED_PER_LEVEL = 2;

export interface LinkTreeOptions {
  fanout: number;
  depth: number;
  count: number;
  /** The top links. */
  links: CID[];
  /** Codec every leaf must have (raw for chunks, dag-cbor for instance nodes). */
  leafCodec: number;
  /** Reads a block, verified against its CID (getVerified). */
  read(cid: CID): Promise<Uint8Array>;
  /** Named in errors: 'instance <cid>', 'manifest <cid>'. */
  what: string;
  /** Called once for each link node read (exports copy them, verify counts them). */
  onNode?(cid: CID, bytes: Uint8Array): void;
}

/**
 * Reads a tree by branch: leaf(i) fetches only the link nodes on i's path (each once while it is
 * the branch being read), never the whole list. A link node missing or not what it must be fails
 * the leaves under it, with its CID named and `details.firstLeaf`/`endLeaf` saying which.
 */
export class LinkTree {
  readonly #o: LinkTreeOptions;
  /** Per level (index level - 1): node number -> its links. */
  readonly #cache: Array<Map<number, Promise<CID[]>>>;
  /** Link nodes read so far. */
  nodeReads = 0;

  constructor(options: LinkTreeOptions) {
    const { fanout, depth, count, links, what } = options;
    const span = fanout ** depth;
    const topLength = count === 0 ? 0 : Math.ceil(count / span);
    if (
      !Number.isInteger(fanout) ||
      fanout < 2 ||
      !Number.isInteger(depth) ||
      depth < 0 ||
      !Number.isSafeInteger(count) ||
      count < 0 ||
      links.length !== topLength ||
      links.length > fanout ||
      (depth > 0 && count <= span) ||
      links.some((l) => l.code !== (depth === 0 ? options.leafCodec : dagCbor.code))
    ) {
      throw new VaultError(
        'BLOCK_CORRUPT',
        `${what}: its tree of links (fanout ${fanout}, depth ${depth}, ${count} leaves, ${links.length} top links) is not well formed`,
      );
    }
    this.#o = options;
    this.#cache = Array.from({ length: depth }, () => new Map());
  }

  get count(): number {
    return this.#o.count;
  }

  /** The CID of leaf `index`. */
  async leaf(index: number): Promise<CID> {
    const { fanout, depth, count, links } = this.#o;
    if (!Number.isInteger(index) || index < 0 || index >= count) throw new VaultError('INSTANCE_CORRUPT', `${this.#o.what} has no leaf ${index}`);
    let current = links;
    let offset = Math.floor(index / fanout ** depth);
    for (let level = depth; level >= 1; level--) {
      const cid = current[offset]!;
      current = await this.#node(level, Math.floor(index / fanout ** level), cid);
      offset = Math.floor(index / fanout ** (level - 1)) % fanout;
    }
    return current[offset]!;
  }

  /** Leaves `from` (inclusive) to `to` (exclusive), in order; each link node on the way is read once. */
  async *leaves(from = 0, to = this.#o.count): AsyncGenerator<{ index: number; cid: CID }> {
    for (let index = from; index < to; index++) yield { index, cid: await this.leaf(index) };
  }

  /**
   * Link node number `n` of `level` (its children are of level - 1), read and checked: its type,
   * how many links it must hold where it stands, their codec.
   */
  #node(level: number, n: number, cid: CID): Promise<CID[]> {
    const cache = this.#cache[level - 1]!;
    const cached = cache.get(n);
    if (cached !== undefined) return cached;
    const p = this.#readNode(level, n, cid);
    cache.set(n, p);
    if (cache.size > CACHED_PER_LEVEL) cache.delete(cache.keys().next().value!);
    p.catch(() => cache.get(n) === p && cache.delete(n)); // a failed read is retried by the next caller
    return p;
  }

  async #readNode(level: number, n: number, cid: CID): Promise<CID[]> {
    const { fanout, count, what } = this.#o;
    const below = fanout ** (level - 1); // leaves under each of its links
    const firstLeaf = n * fanout * below;
    const endLeaf = Math.min(count, firstLeaf + fanout * below);
    const where = `link node ${cid} of ${what} (leaves ${firstLeaf}-${endLeaf - 1})`;
    const details = { cid: cid.toString(), firstLeaf, endLeaf };
    let bytes: Uint8Array;
    try {
      bytes = await this.#o.read(cid);
    } catch (err) {
      if (!isVaultError(err)) throw err;
      throw new VaultError(err.code, `${where}: ${err.message}`, { cause: err, details: { ...err.details, ...details } });
    }
    this.nodeReads++;
    let value: Partial<LinkNode>;
    try {
      value = dagCbor.decode(bytes) as Partial<LinkNode>;
    } catch (cause) {
      throw new VaultError('BLOCK_CORRUPT', `${where} is not valid dag-cbor`, { cause, details });
    }
    const expected = Math.ceil((endLeaf - firstLeaf) / below);
    const childCodec = level === 1 ? this.#o.leafCodec : dagCbor.code;
    const links = Array.isArray(value.links) ? value.links.map((l) => CID.asCID(l)) : [];
    if (value.type !== LINK_NODE_TYPE || links.length !== expected || links.some((l) => l === null || l.code !== childCodec)) {
      throw new VaultError('BLOCK_CORRUPT', `${where} is not the link node its place in the tree needs`, { details });
    }
    this.#o.onNode?.(cid, bytes);
    return links as CID[];
  }
}

/** The leaf codec of an instance's chunk tree. */
export const CHUNK_CODEC = raw.code;
/** The leaf codec of a manifest's instance tree. */
export const INSTANCE_CODEC = dagCbor.code;
