// Blocks in an IPFS node (helia), so that a study's DAG is an ordinary IPFS DAG: pinned, garbage-
// collectable, exportable as a CAR file and, when networking is configured, fetchable by peers.
//
// Layout of the repo directory:
//   <path>/blocks/     the blocks, in the fs backend's durable on-disk format (FsBlockStore)
//   <path>/datastore/  helia's datastore (pins), datastore-fs
//
// Offline by default: the node is helia's "light" node, which has no libp2p, no bitswap and no
// HTTP gateways, so it cannot open a socket. `network: true` builds the full helia node (libp2p,
// bitswap, delegated routing) over the same blockstore and datastore.
//
// Choices and why:
// - The blockstore handed to helia is an adapter over FsBlockStore rather than blockstore-fs,
//   which turns every read error into NotFoundError(String(err)) and never fsyncs: a study
//   acknowledged by STOW must survive a crash, and an unreadable disk must not read as absent.
// - Pins: every study manifest put here is pinned, with a walker that pins the manifest, the
//   instance nodes it adds and their chunks, but neither reads raw leaves (they have no links)
//   nor descends into `prev` (the previous version is pinned itself). helia's default walker
//   would read every chunk of the whole history on each new version: O(study size) per STOW.
//   A study stays protected while all its version roots are pinned; history is append-only,
//   so they are never unpinned except when a manifest is deleted (a failed commit).
// - Garbage collection (`gc`) is helia's rule (delete what no pin covers) made safe to run beside
//   ingest in another process: an ingest's blocks are unpinned until its version commits, so gc
//   only collects unpinned blocks older than a grace period, by file time. A put of a block
//   that is already stored freshens that time (as git does for its loose objects), so blocks
//   left by an earlier failed ingest or import and written again count as new. Study roots the
//   catalog knows are pinned again before the sweep, should a pin have been lost.
// - @helia/unixfs is not used: the DAG is dag-cbor nodes over encrypted raw leaves, not UnixFS
//   (UnixFS would expose file names and sizes, and its `cat` of 1 GiB held ~1.4 GiB of memory
//   here). Reads go block by block through the instance reader, bounded by its read-ahead.
import { mkdir, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import * as dagCbor from '@ipld/dag-cbor';
import type { Helia } from '@helia/interface';
import type { GraphNode, GraphWalker, GraphWalkerComponents } from '@helia/interface';
import { FsDatastore } from 'datastore-fs';
import type { Blockstore, InputPair, Pair } from 'interface-blockstore';
import { base32 } from 'multiformats/bases/base32';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { VaultError, isVaultError } from '../src/core/errors.ts';
import { abortError, throwIfAborted } from '../src/core/abort.ts';
import { childLinks, isStudyManifest } from '../src/format/dag.ts';
import type { AbortOptions, BlockStore, PutOptions } from './block-store.ts';
import { FsBlockStore } from './fs.ts';

export interface IpfsBlockStoreOptions {
  /** Repo directory (blocks/ and datastore/ below it); created if missing. Required. */
  path: string;
  /**
   * Join the libp2p network (bitswap, DHT, delegated routing): peers can fetch our blocks and
   * missing blocks are looked for on the network. Default false: fully offline, no socket.
   */
  network?: boolean;
}

export interface GcOptions extends AbortOptions {
  /** Unpinned blocks written (or written again) less than this many seconds ago are kept (gc's default: src/maintenance/gc.ts). */
  graceS: number;
  /**
   * Study roots that must survive (the catalog's study versions). Each is pinned before the
   * sweep if it is not; one that cannot be pinned (a block of it is missing) stops gc before it
   * deletes anything. Default: none (the pins alone decide).
   */
  keep?: Iterable<CID> | AsyncIterable<CID>;
  /** The current time, ms since the epoch. Default Date.now(). */
  now?: number;
}

export interface GcReport {
  /** Blocks looked at. */
  blocks: number;
  /** Kept because a pin covers them. */
  pinned: number;
  /** Kept although unpinned: younger than the grace period (an ingest may still be writing its study). */
  young: number;
  /** Deleted, and their bytes. */
  deleted: number;
  deletedBytes: number;
  /** Roots of `keep` that were not pinned and were pinned again. */
  repinned: string[];
  /** Pinned roots that are not in `keep` (kept: e.g. imported without their key, or committing right now). */
  otherPins: number;
}

export class IpfsBlockStore implements BlockStore {
  readonly helia: Helia;
  readonly path: string;
  readonly network: boolean;
  readonly #blocks: FsBlockStore;
  readonly #datastore: FsDatastore;

  private constructor(helia: Helia, path: string, network: boolean, blocks: FsBlockStore, datastore: FsDatastore) {
    this.helia = helia;
    this.path = path;
    this.network = network;
    this.#blocks = blocks;
    this.#datastore = datastore;
  }

  /** Opens (creating) the repo and starts helia. CONFIG_INVALID / STORE_UNAVAILABLE as FsBlockStore. */
  static async open(options: IpfsBlockStoreOptions): Promise<IpfsBlockStore> {
    if (typeof options.path !== 'string' || options.path === '') {
      throw new VaultError('CONFIG_INVALID', 'IpfsBlockStore: path must be a non-empty string');
    }
    const network = options.network ?? false;
    const blocks = await FsBlockStore.open({ path: join(options.path, 'blocks') });
    const datastorePath = join(options.path, 'datastore');
    const datastore = new FsDatastore(datastorePath);
    try {
      await mkdir(datastorePath, { recursive: true });
      await datastore.open();
    } catch (err) {
      throw new VaultError('STORE_UNAVAILABLE', `cannot open the IPFS datastore at ${datastorePath}`, { cause: err });
    }
    const blockstore = new FsBlockstoreAdapter(blocks);
    const init = { blockstore, datastore, codecs: [dagCbor] };
    let helia: Helia;
    if (network) {
      // Only here is libp2p loaded and started: listening, dialling bootstrap peers.
      const { createHelia } = await import('helia');
      helia = await createHelia(init);
    } else {
      const { createHeliaLight } = await import('helia');
      helia = createHeliaLight(init);
    }
    try {
      await helia.start();
    } catch (err) {
      await datastore.close().catch(() => undefined);
      throw new VaultError('STORE_UNAVAILABLE', `cannot start the IPFS node at ${options.path}`, { cause: err });
    }
    return new IpfsBlockStore(helia, options.path, network, blocks, datastore);
  }

  /**
   * Stores the block; a study manifest is then pinned (see the module comment). A block already
   * stored has its file time freshened first, so gc treats it as just written (helia's put
   * skips existing blocks without touching them).
   */
  async put(cid: CID, bytes: Uint8Array, options: PutOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    await rethrow(() => freshen(this.#blockFile(cid)), 'put', cid, options.signal);
    await rethrow(() => this.helia.blockstore.put(cid, bytes, options), 'put', cid, options.signal);
    if (isManifestBlock(cid, bytes)) await this.pin(cid, options);
  }

  async get(cid: CID, options: AbortOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    return rethrow(
      async () => {
        const pieces: Uint8Array[] = [];
        // offline: a missing block is reported at once instead of being looked for on the network.
        for await (const piece of this.helia.blockstore.get(cid, { ...signalOf(options), offline: !this.network })) pieces.push(piece);
        return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
      },
      'get',
      cid,
      options.signal,
    );
  }

  async has(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    throwIfAborted(options.signal);
    return rethrow(() => this.helia.blockstore.has(cid, signalOf(options)), 'check', cid, options.signal);
  }

  /** Removes the block, unpinning it first if it is a pinned study root. */
  async delete(cid: CID, options: AbortOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    if (cid.code === dagCbor.code) await this.unpin(cid, options);
    await rethrow(() => this.helia.blockstore.delete(cid, signalOf(options)), 'delete', cid, options.signal);
  }

  flush(options: AbortOptions = {}): Promise<void> {
    return this.#blocks.flush(options);
  }

  list(options: AbortOptions = {}): AsyncIterable<CID> {
    return this.#blocks.list(options);
  }

  /** Pins `root` (a study manifest): it, its added instance nodes and their chunks. Idempotent. */
  async pin(root: CID, options: AbortOptions = {}): Promise<void> {
    if (await this.isPinnedRoot(root, options)) return;
    try {
      // helia hands these options on to the walker's blockstore.get, where `offline` (as in get()
      // above) reports a missing block instead of failing for want of block brokers.
      const walk = { ...signalOf(options), walker: studyWalker, offline: !this.network };
      for await (const _ of this.helia.pins.add(root, walk)) {
        // drained: each yield is one block marked as pinned
      }
    } catch (err) {
      if (errName(err) === 'AlreadyPinnedError') return; // a concurrent put of the same manifest
      throw toVaultError(err, 'pin', root, options.signal);
    }
  }

  /** Removes the pin of `root`, if any. Its blocks become collectable unless pinned otherwise. */
  async unpin(root: CID, options: AbortOptions = {}): Promise<void> {
    if (!(await this.isPinnedRoot(root, options))) return;
    try {
      const walk = { ...signalOf(options), walker: studyWalker, offline: !this.network }; // as in pin()
      for await (const _ of this.helia.pins.rm(root, walk)) {
        // drained
      }
    } catch (err) {
      if (errName(err) === 'NotFoundError') return;
      throw toVaultError(err, 'unpin', root, options.signal);
    }
  }

  async isPinnedRoot(root: CID, options: AbortOptions = {}): Promise<boolean> {
    try {
      await this.helia.pins.get(root, signalOf(options));
      return true;
    } catch (err) {
      if (errName(err) === 'NotFoundError') return false;
      throw toVaultError(err, 'check pin', root, options.signal);
    }
  }

  /** Whether the block is covered by some pin. */
  isPinned(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    return this.helia.pins.isPinned(cid, signalOf(options));
  }

  /** Every pinned root (one per stored study version). */
  async *pinnedRoots(options: AbortOptions = {}): AsyncGenerator<CID> {
    for await (const pin of this.helia.pins.ls(signalOf(options))) yield pin.cid;
  }

  /**
   * Deletes every block that no pin covers and that was last written more than `graceS` ago.
   * Safe beside ingest in this or another process as long as every ingest commits within the
   * grace period (gc's default: DEFAULT_GRACE_S in src/maintenance/gc.ts). Not helia's gc, which deletes every unpinned block,
   * an in-flight ingest's too, and holds helia's write lock (stalling every put) for the whole
   * sweep. Residual race, as in git: a block older than the grace period written again in the
   * instant between gc's check of it and its deletion is lost to that writer.
   * CONFIG_INVALID for a bad grace; BLOCK_NOT_FOUND / STORE_UNAVAILABLE (nothing deleted yet)
   * when a root of `keep` cannot be pinned; STORE_UNAVAILABLE from the disk.
   */
  async gc(options: GcOptions): Promise<GcReport> {
    const { signal } = options;
    const { graceS } = options;
    if (!Number.isFinite(graceS) || graceS < 0) throw new VaultError('CONFIG_INVALID', `gc grace must be a non-negative number of seconds (got ${graceS})`);
    const cutoffMs = (options.now ?? Date.now()) - graceS * 1000;
    const report: GcReport = { blocks: 0, pinned: 0, young: 0, deleted: 0, deletedBytes: 0, repinned: [], otherPins: 0 };

    const kept = new Set<string>();
    for await (const root of options.keep ?? []) {
      throwIfAborted(signal);
      kept.add(root.toString());
      if (await this.isPinnedRoot(root, signalOf(options))) continue;
      try {
        await this.pin(root, signalOf(options));
      } catch (err) {
        const code = isVaultError(err, 'BLOCK_NOT_FOUND') ? 'BLOCK_NOT_FOUND' : 'STORE_UNAVAILABLE';
        throw new VaultError(code, `gc stopped before deleting anything: study root ${root} is not pinned and cannot be pinned (run verify on its study)`, {
          cause: err,
          details: { cid: root.toString() },
        });
      }
      report.repinned.push(root.toString());
    }
    for await (const root of this.pinnedRoots(signalOf(options))) if (!kept.has(root.toString())) report.otherPins++;

    for await (const cid of this.#blocks.list(signalOf(options))) {
      throwIfAborted(signal);
      report.blocks++;
      if (await this.isPinned(cid, signalOf(options))) {
        report.pinned++;
        continue;
      }
      const file = this.#blockFile(cid);
      const stats = await rethrow(() => stat(file).catch(ifMissing(undefined)), 'check', cid, signal);
      if (stats === undefined) {
        // Gone since it was listed (a failed ingest cleaning up), or not where it should be.
        if (await this.#blocks.has(cid, signalOf(options))) throw new VaultError('INTERNAL', `gc: block ${cid} is not at ${file}`);
        continue;
      }
      if (stats.mtimeMs >= cutoffMs) {
        report.young++;
        continue;
      }
      await this.#blocks.delete(cid, signalOf(options));
      report.deleted++;
      report.deletedBytes += stats.size;
    }
    return report;
  }

  /** The file of a block in the blocks/ FsBlockStore: its layout (shard = the characters before the last; test/ipfs-store.test.ts relies on it too). */
  #blockFile(cid: CID): string {
    const name = base32.encode(cid.bytes);
    return join(this.#blocks.path, name.slice(-1 - this.#blocks.shardPrefixLength, -1), `${name}.data`);
  }

  async close(): Promise<void> {
    await this.helia.stop();
    await this.#datastore.close();
    await this.#blocks.close();
  }
}

/**
 * interface-blockstore over FsBlockStore (see the module comment for why not blockstore-fs). Block
 * bytes are single pieces: blocks are at most a chunk (1 MiB by default).
 */
export class FsBlockstoreAdapter implements Blockstore {
  readonly #store: FsBlockStore;

  constructor(store: FsBlockStore) {
    this.#store = store;
  }

  has(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    return this.#store.has(cid, options);
  }

  async put(cid: CID, value: Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<CID> {
    const bytes = value instanceof Uint8Array ? value : await collect(value);
    await this.#store.put(cid, bytes, { ...signalOf(options), ...(options.durable === undefined ? {} : { durable: options.durable }) });
    return cid;
  }

  async *putMany(source: Iterable<InputPair> | AsyncIterable<InputPair>, options: PutOptions = {}): AsyncGenerator<CID> {
    for await (const { cid, bytes } of source) yield this.put(cid, bytes, options);
  }

  async *get(cid: CID, options: AbortOptions = {}): AsyncGenerator<Uint8Array> {
    yield await this.#store.get(cid, options);
  }

  async *getMany(source: Iterable<CID> | AsyncIterable<CID>, options: AbortOptions = {}): AsyncGenerator<Pair> {
    for await (const cid of source) yield { cid, bytes: this.get(cid, options) };
  }

  async *getAll(options: AbortOptions = {}): AsyncGenerator<Pair> {
    // Bytes are read only if the consumer iterates them (gc does not).
    for await (const cid of this.#store.list(options)) yield { cid, bytes: this.get(cid, options) };
  }

  delete(cid: CID, options: AbortOptions = {}): Promise<void> {
    return this.#store.delete(cid, options);
  }

  async *deleteMany(source: Iterable<CID> | AsyncIterable<CID>, options: AbortOptions = {}): AsyncGenerator<CID> {
    for await (const cid of source) {
      await this.#store.delete(cid, options);
      yield cid;
    }
  }
}

/**
 * The pin walker for study manifests: the manifest, the instance nodes it adds and their chunks.
 * Raw leaves are yielded without being read; `prev` is not followed (see the module comment).
 * Nodes that are not dicom-vault nodes are walked by all their links.
 */
export function studyWalker(components: GraphWalkerComponents): GraphWalker {
  return {
    async *walk<T>(root: CID, options: AbortOptions = {}): AsyncGenerator<GraphNode<T>> {
      const stack: Array<{ cid: CID; depth: number; path: CID[] }> = [{ cid: root, depth: 0, path: [root] }];
      while (stack.length > 0) {
        const { cid, depth, path } = stack.pop()!;
        throwIfAborted(options.signal);
        if (cid.code === raw.code) {
          yield { block: { cid } as unknown as GraphNode<T>['block'], depth, path };
          continue;
        }
        const pieces: Uint8Array[] = [];
        try {
          for await (const piece of components.blockstore.get(cid, options)) pieces.push(piece);
        } catch (err) {
          // Named here, where the child is known: pin() would otherwise blame the root.
          throw toVaultError(err, 'get', cid, options.signal);
        }
        const bytes = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
        const codec = await components.getCodec(cid.code);
        const value = codec.decode(bytes) as Record<string, unknown>;
        yield { block: { cid, bytes, value } as unknown as GraphNode<T>['block'], depth, path };
        for (const child of childLinks(value).reverse()) stack.push({ cid: child, depth: depth + 1, path: [...path, child] });
      }
    },
  };
}

/** Whether a block is a dicom-vault study manifest; decoded only when it is dag-cbor. */
function isManifestBlock(cid: CID, bytes: Uint8Array): boolean {
  if (cid.code !== dagCbor.code) return false;
  try {
    return isStudyManifest(dagCbor.decode(bytes));
  } catch {
    return false;
  }
}

async function rethrow<T>(fn: () => T | Promise<T>, op: string, cid: CID, signal: AbortSignal | undefined): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toVaultError(err, op, cid, signal);
  }
}

function toVaultError(err: unknown, op: string, cid: CID, signal: AbortSignal | undefined): VaultError {
  if (isVaultError(err)) return err; // from FsBlockStore, already precise
  if (signal?.aborted === true) return abortError(signal);
  const details = { cid: cid.toString() };
  const name = errName(err);
  // helia's own "absent" answers; anything else it throws is the store's failure.
  if (op === 'get' && (name === 'BlockNotFoundWhileOfflineError' || name === 'NotFoundError' || name === 'LoadBlockFailedError')) {
    return new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found`, { cause: err, details });
  }
  return new VaultError('STORE_UNAVAILABLE', `IPFS ${op} of block ${cid} failed: ${name}`, { cause: err, details });
}

/** Sets a stored block's file time to now; a block not stored yet is left to the put. */
async function freshen(file: string): Promise<void> {
  const now = new Date();
  await utimes(file, now, now).catch(ifMissing(undefined));
}

function ifMissing<T>(value: T): (err: unknown) => T {
  return (err) => {
    if (typeof err === 'object' && err !== null && 'code' in err && err.code === 'ENOENT') return value;
    throw err;
  };
}

function errName(err: unknown): string {
  return err instanceof Error ? err.name : 'unknown error';
}

function signalOf(options: AbortOptions): AbortOptions {
  return options.signal === undefined ? {} : { signal: options.signal };
}

async function collect(source: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const pieces: Uint8Array[] = [];
  for await (const piece of source) pieces.push(piece);
  return Buffer.concat(pieces);
}
