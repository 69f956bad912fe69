// Pins of the IPFS backend, kept in helia's own datastore format (helia 7, src/pins.ts and
// src/datastore-version.ts), so that a repo pinned while this node ran helia keeps its pins and
// helia could open a repo written now:
//   /version                             "1"
//   /pin/<root CID, v1, base36>          cbor { depth, metadata }
//   /pinned-block/<multihash, base36>    cbor { pinCount, pinnedBy: [root CID bytes] }
// A block is pinned while it has a /pinned-block/ record. Written here rather than taken from
// helia, whose package also holds its networked node and so installs React Native (see
// storage/ipfs.ts). Two things differ from helia, both fixes: unpinning removes the root from a
// block's `pinnedBy` (helia's filter kept only that root), and the read-modify-write of a block's
// record is serialized per block, so two roots pinned at once that share a block both count.
import * as cborg from 'cborg';
import { Key, type Datastore } from 'interface-datastore';
import { base36 } from 'multiformats/bases/base36';
import { CID } from 'multiformats/cid';
import { VaultError } from '../../src/core/errors.ts';
import type { AbortOptions } from '../block-store.ts';

const PIN_PREFIX = '/pin/';
const BLOCK_PREFIX = '/pinned-block/';
const VERSION_KEY = new Key('/version');
const VERSION = 1;

/** The blocks a pin of `root` covers, root included (the store's study walker). */
export type PinWalker = (root: CID, options: AbortOptions) => AsyncIterable<CID>;

interface PinnedBlock {
  pinCount: number;
  pinnedBy: Uint8Array[];
}

export class Pins {
  readonly #datastore: Datastore;
  readonly #walk: PinWalker;
  /** Updates of a block's record under way, by key: the next one waits for them. */
  readonly #updating = new Map<string, Promise<void>>();

  private constructor(datastore: Datastore, walk: PinWalker) {
    this.#datastore = datastore;
    this.#walk = walk;
  }

  /** The pins of an open datastore; CONFIG_INVALID if it has another format version than helia's 1. */
  static async open(datastore: Datastore, walk: PinWalker): Promise<Pins> {
    if (!(await datastore.has(VERSION_KEY))) {
      await datastore.put(VERSION_KEY, new TextEncoder().encode(String(VERSION)));
    } else {
      const version = new TextDecoder().decode(await datastore.get(VERSION_KEY));
      if (Number.parseInt(version, 10) !== VERSION) {
        throw new VaultError('CONFIG_INVALID', `the IPFS datastore has format version ${JSON.stringify(version)}, not ${VERSION}: it needs a migration`);
      }
    }
    return new Pins(datastore, walk);
  }

  /**
   * Pins `root` and every block the walker yields for it. Resolves false, changing nothing, if
   * `root` is pinned already. The root's own record is written last: a walk cut short (a block
   * missing) leaves it unpinned, and pinning it again counts no block twice.
   */
  async add(root: CID, options: AbortOptions = {}): Promise<boolean> {
    const pinKey = pinKeyOf(root);
    if (await this.#datastore.has(pinKey, options)) return false;
    for await (const cid of this.#walk(root, options)) {
      await this.#update(
        cid,
        (block) => {
          if (block.pinnedBy.some((by) => bytesEqual(by, root.bytes))) return false;
          block.pinCount++;
          block.pinnedBy.push(root.bytes);
          return true;
        },
        options,
      );
    }
    // helia's record: depth Infinity (the walker decides what a pin covers), no metadata.
    await this.#datastore.put(pinKey, cborg.encode({ depth: Infinity, metadata: {} }), options);
    return true;
  }

  /** Unpins `root` and the blocks the walker yields for it; false if it was not pinned. */
  async rm(root: CID, options: AbortOptions = {}): Promise<boolean> {
    const pinKey = pinKeyOf(root);
    if (!(await this.#datastore.has(pinKey, options))) return false;
    await this.#datastore.delete(pinKey, options);
    for await (const cid of this.#walk(root, options)) {
      await this.#update(
        cid,
        (block) => {
          const before = block.pinnedBy.length;
          block.pinnedBy = block.pinnedBy.filter((by) => !bytesEqual(by, root.bytes));
          if (block.pinnedBy.length === before && block.pinCount <= before) return false; // not pinned by root
          block.pinCount = Math.max(0, block.pinCount - 1);
          return true;
        },
        options,
      );
    }
    return true;
  }

  /** Whether `root` is pinned itself (a pin's root), not only covered by another pin. */
  async isPinnedRoot(root: CID, options: AbortOptions = {}): Promise<boolean> {
    return await this.#datastore.has(pinKeyOf(root), options);
  }

  /** Whether some pin covers the block. */
  async isPinned(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    return await this.#datastore.has(blockKeyOf(cid), options);
  }

  /** Every pinned root. */
  async *roots(options: AbortOptions = {}): AsyncGenerator<CID> {
    for await (const key of this.#datastore.queryKeys({ prefix: PIN_PREFIX }, options)) {
      yield CID.parse(key.toString().slice(PIN_PREFIX.length), base36);
    }
  }

  /** Reads, changes (when `change` returns true) and writes a block's record, one update per block at a time. */
  async #update(cid: CID, change: (block: PinnedBlock) => boolean, options: AbortOptions): Promise<void> {
    const key = blockKeyOf(cid);
    const name = key.toString();
    const run = (this.#updating.get(name) ?? Promise.resolve()).then(() => this.#updateNow(key, change, options));
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.#updating.set(name, settled);
    try {
      await run;
    } finally {
      if (this.#updating.get(name) === settled) this.#updating.delete(name);
    }
  }

  async #updateNow(key: Key, change: (block: PinnedBlock) => boolean, options: AbortOptions): Promise<void> {
    let block: PinnedBlock = { pinCount: 0, pinnedBy: [] };
    try {
      block = cborg.decode(await this.#datastore.get(key, options)) as PinnedBlock;
    } catch (err) {
      if (!(err instanceof Error) || err.name !== 'NotFoundError') throw err;
    }
    if (!change(block)) return;
    if (block.pinCount === 0) await this.#datastore.delete(key, options);
    else await this.#datastore.put(key, cborg.encode(block), options);
  }
}

function pinKeyOf(root: CID): Key {
  return new Key(`${PIN_PREFIX}${(root.version === 0 ? root.toV1() : root).toString(base36)}`);
}

function blockKeyOf(cid: CID): Key {
  return new Key(`${BLOCK_PREFIX}${base36.encode(cid.multihash.bytes)}`);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}
