// Blocks in an IPFS repo, so that a study's DAG is an ordinary IPFS DAG: pinned, garbage-
// collectable, exportable as a CAR file and, when networking is on, fetchable by peers.
//
// Layout of the repo directory (as helia laid it out, so repos written before stay valid):
//   <path>/blocks/     the blocks, in the fs backend's durable on-disk format (FsBlockStore)
//   <path>/datastore/  pins (in helia's format: ipfs/pins.ts) and the peer key, datastore-fs
//
// Offline by default: no libp2p is loaded, so no socket can be opened. `network: true` starts a
// libp2p node for servers with bitswap over the same blocks (ipfs/network.ts, imported only then).
//
// Choices and why:
// - No `helia` package. Its node, even the offline `createHeliaLight`, comes from a module that
//   imports helia's networked defaults, and its dependency tree (helia -> @helia/libp2p ->
//   @libp2p/webrtc -> react-native-webrtc -> react-native) installed React Native, Metro and
//   Babel (250 MB of the 831 MB node_modules) and node-datachannel, a native addon, which
//   importing helia loaded (2.4 s) although the node is offline by default. What this store used
//   of helia is small: a blockstore (FsBlockStore already), pins (ipfs/pins.ts, in helia's
//   datastore format) and, networked, libp2p and bitswap, taken from their own packages. Bitswap
//   (@helia/bitswap) declares @helia/libp2p for one TypeScript type only; package.json's
//   "overrides" point that dependency at @helia/interface, so it installs nothing more.
// - The blockstore handed to bitswap is an adapter over FsBlockStore rather than blockstore-fs,
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
// - UnixFS (@helia/unixfs) is not used: the DAG is dag-cbor nodes over encrypted raw leaves, not
//   UnixFS (UnixFS would expose file names and sizes, and its `cat` of 1 GiB held ~1.4 GiB of
//   memory here). Reads go block by block through the instance reader, bounded by its read-ahead.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as dagCbor from '@ipld/dag-cbor';
import { FsDatastore } from 'datastore-fs';
import type { Blockstore, InputPair, Pair } from 'interface-blockstore';
import type { Libp2p } from 'libp2p';
import type { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { VaultError, isVaultError } from '../src/core/errors.ts';
import { abortError, throwIfAborted } from '../src/core/abort.ts';
import { childLinks, isStudyManifest } from '../src/format/dag.ts';
import type { AbortOptions, BlockStore, PutOptions } from './block-store.ts';
import { FsBlockStore } from './fs.ts';
import type { IpfsNetwork } from './ipfs/network.ts';
import { Pins, type PinWalker } from './ipfs/pins.ts';

/** How long a get waits for a block missing here to come from the network (network: true). */
export const DEFAULT_IPFS_FETCH_TIMEOUT_MS = 60_000;

/** helia's TCP listen addresses: every interface, a port the system picks. */
export const DEFAULT_IPFS_LISTEN: readonly string[] = ['/ip4/0.0.0.0/tcp/0', '/ip6/::/tcp/0'];

/** helia's bootstrap peers (kubo's list, from @helia/libp2p). */
export const DEFAULT_IPFS_BOOTSTRAP: readonly string[] = [
  '/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN',
  '/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb',
  '/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt',
  '/dnsaddr/va1.bootstrap.libp2p.io/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8',
  '/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ',
];

export interface IpfsBlockStoreOptions {
  /** Repo directory (blocks/ and datastore/ below it); created if missing. Required. */
  path: string;
  /**
   * Join the libp2p network (bitswap, the DHT): peers can fetch our blocks and missing blocks are
   * looked for on the network. Default false: fully offline, no socket.
   */
  network?: boolean;
  /** With `network`: multiaddrs to listen on. Default DEFAULT_IPFS_LISTEN (TCP, every interface, any port). */
  listen?: readonly string[];
  /** With `network`: peers dialled to join the network. Default DEFAULT_IPFS_BOOTSTRAP (public IPFS bootstrap nodes); [] for none. */
  bootstrap?: readonly string[];
  /** With `network`: ms a get waits for a block missing here to come from peers. Default DEFAULT_IPFS_FETCH_TIMEOUT_MS (60 s). */
  fetchTimeoutMs?: number;
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
  readonly path: string;
  readonly network: boolean;
  /** The libp2p node with `network`; undefined offline, where libp2p is not even loaded. */
  readonly libp2p: Libp2p | undefined;
  readonly #blocks: FsBlockStore;
  readonly #datastore: FsDatastore;
  readonly #pins: Pins;
  readonly #net: IpfsNetwork | undefined;
  readonly #fetchTimeoutMs: number;

  private constructor(path: string, blocks: FsBlockStore, datastore: FsDatastore, pins: Pins, net: IpfsNetwork | undefined, fetchTimeoutMs: number) {
    this.path = path;
    this.network = net !== undefined;
    this.libp2p = net?.libp2p;
    this.#blocks = blocks;
    this.#datastore = datastore;
    this.#pins = pins;
    this.#net = net;
    this.#fetchTimeoutMs = fetchTimeoutMs;
  }

  /** Opens (creating) the repo and, with `network`, starts libp2p. CONFIG_INVALID / STORE_UNAVAILABLE as FsBlockStore. */
  static async open(options: IpfsBlockStoreOptions): Promise<IpfsBlockStore> {
    if (typeof options.path !== 'string' || options.path === '') {
      throw new VaultError('CONFIG_INVALID', 'IpfsBlockStore: path must be a non-empty string');
    }
    const fetchTimeoutMs = options.fetchTimeoutMs ?? DEFAULT_IPFS_FETCH_TIMEOUT_MS;
    if (!Number.isInteger(fetchTimeoutMs) || fetchTimeoutMs < 1)
      throw new VaultError('CONFIG_INVALID', `IpfsBlockStore: fetchTimeoutMs must be a positive integer (got ${fetchTimeoutMs})`);
    const blocks = await FsBlockStore.open({ path: join(options.path, 'blocks') });
    const datastorePath = join(options.path, 'datastore');
    const datastore = new FsDatastore(datastorePath);
    try {
      await mkdir(datastorePath, { recursive: true });
      await datastore.open();
      // The walker reads through the store being made (network-aware, as helia's did): bound below.
      let store: IpfsBlockStore | undefined;
      const pins = await Pins.open(
        datastore,
        studyWalker((cid, o) => store!.get(cid, o)),
      );
      let net: IpfsNetwork | undefined;
      if (options.network === true) {
        // Only here is libp2p loaded and started: listening, dialling the bootstrap peers.
        const { startNetwork } = await import('./ipfs/network.ts');
        try {
          net = await startNetwork(datastore, new FsBlockstoreAdapter(blocks), {
            listen: options.listen ?? DEFAULT_IPFS_LISTEN,
            bootstrap: options.bootstrap ?? DEFAULT_IPFS_BOOTSTRAP,
          });
        } catch (err) {
          throw new VaultError(
            'STORE_UNAVAILABLE',
            `cannot start the IPFS network node for ${options.path}: ${errName(err)}: ${err instanceof Error ? err.message : ''}`,
            { cause: err },
          );
        }
      }
      store = new IpfsBlockStore(options.path, blocks, datastore, pins, net, fetchTimeoutMs);
      return store;
    } catch (err) {
      await datastore.close().catch(() => undefined);
      await blocks.close().catch(() => undefined);
      if (err instanceof VaultError) throw err;
      throw new VaultError('STORE_UNAVAILABLE', `cannot open the IPFS datastore at ${datastorePath}`, { cause: err });
    }
  }

  /**
   * Stores the block; a study manifest is then pinned (see the module comment). A block already
   * stored gets a new file time (FsBlockStore.put), so gc treats it as just written. Networked,
   * peers that asked for it are sent it.
   */
  async put(cid: CID, bytes: Uint8Array, options: PutOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    await this.#blocks.put(cid, bytes, options);
    if (this.#net !== undefined) await rethrow(() => this.#net!.announce(cid), 'put', cid, options.signal);
    if (isManifestBlock(cid, bytes)) await this.pin(cid, options);
  }

  /**
   * The block from the repo; networked, a block missing here is fetched from peers (for at most
   * `fetchTimeoutMs`), checked against its CID and stored. BLOCK_NOT_FOUND if absent.
   */
  async get(cid: CID, options: AbortOptions = {}): Promise<Uint8Array> {
    try {
      return await this.#blocks.get(cid, options);
    } catch (err) {
      if (this.#net === undefined || !isVaultError(err, 'BLOCK_NOT_FOUND')) throw err;
    }
    const deadline = AbortSignal.timeout(this.#fetchTimeoutMs);
    const signal = options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline]);
    let bytes: Uint8Array;
    try {
      bytes = await this.#net.fetch(cid, signal);
    } catch (err) {
      if (options.signal?.aborted === true) throw abortError(options.signal);
      if (isVaultError(err)) throw err;
      const reason = deadline.aborted
        ? `not found here nor on the network within ${this.#fetchTimeoutMs} ms`
        : `not found here, and fetching it failed: ${errName(err)}`;
      throw new VaultError('BLOCK_NOT_FOUND', `block ${cid} ${reason}`, { cause: err, details: { cid: cid.toString() } });
    }
    await this.#blocks.put(cid, bytes, options);
    await rethrow(() => this.#net!.announce(cid), 'get', cid, options.signal);
    return bytes;
  }

  has(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    return this.#blocks.has(cid, options);
  }

  /** Removes the block, unpinning it first if it is a pinned study root. */
  async delete(cid: CID, options: AbortOptions = {}): Promise<void> {
    throwIfAborted(options.signal);
    if (cid.code === dagCbor.code) await this.unpin(cid, options);
    await this.#blocks.delete(cid, options);
  }

  flush(options: AbortOptions = {}): Promise<void> {
    return this.#blocks.flush(options);
  }

  list(options: AbortOptions = {}): AsyncIterable<CID> {
    return this.#blocks.list(options);
  }

  /** Pins `root` (a study manifest): it, its added instance nodes and their chunks. Idempotent. */
  async pin(root: CID, options: AbortOptions = {}): Promise<void> {
    await rethrow(() => this.#pins.add(root, signalOf(options)), 'pin', root, options.signal);
  }

  /** Removes the pin of `root`, if any. Its blocks become collectable unless pinned otherwise. */
  async unpin(root: CID, options: AbortOptions = {}): Promise<void> {
    await rethrow(() => this.#pins.rm(root, signalOf(options)), 'unpin', root, options.signal);
  }

  isPinnedRoot(root: CID, options: AbortOptions = {}): Promise<boolean> {
    return rethrow(() => this.#pins.isPinnedRoot(root, signalOf(options)), 'check pin', root, options.signal);
  }

  /** Whether the block is covered by some pin. */
  isPinned(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    return rethrow(() => this.#pins.isPinned(cid, signalOf(options)), 'check pin', cid, options.signal);
  }

  /** Every pinned root (one per stored study version). */
  pinnedRoots(options: AbortOptions = {}): AsyncGenerator<CID> {
    return this.#pins.roots(signalOf(options));
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
      const info = await this.#blocks.blockInfo(cid, signalOf(options));
      if (info === undefined) continue; // gone since it was listed (a failed ingest cleaning up)
      if (info.writtenMs >= cutoffMs) {
        report.young++;
        continue;
      }
      await this.#blocks.delete(cid, signalOf(options));
      report.deleted++;
      report.deletedBytes += info.size;
    }
    return report;
  }

  /** Stops the network node (if any), then closes the datastore and the blocks (flushing them). */
  async close(): Promise<void> {
    await this.#net?.stop();
    await this.#datastore.close();
    await this.#blocks.close();
  }
}

/**
 * interface-blockstore over FsBlockStore, for bitswap, which serves peers from it (see the module
 * comment for why not blockstore-fs). Block bytes are single pieces: blocks are at most a chunk
 * (1 MiB by default).
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
    // Bytes are read only if the consumer iterates them.
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
 * The pin walker for study manifests: the manifest, the instance nodes it adds and their chunks,
 * each block read through `read` before it is yielded (a missing one stops the pin, named). Raw
 * leaves are yielded without being read; `prev` is not followed (see the module comment). Other
 * dag-cbor nodes are walked by all their links; a block of another codec is pinned itself only
 * (a dicom-vault DAG has none).
 */
export function studyWalker(read: (cid: CID, options: AbortOptions) => Promise<Uint8Array>): PinWalker {
  return async function* walk(root: CID, options: AbortOptions): AsyncGenerator<CID> {
    const stack: CID[] = [root];
    while (stack.length > 0) {
      const cid = stack.pop()!;
      throwIfAborted(options.signal);
      if (cid.code === raw.code) {
        yield cid;
        continue;
      }
      let bytes: Uint8Array;
      try {
        bytes = await read(cid, options);
      } catch (err) {
        // Named here, where the child is known: pin() would otherwise blame the root.
        throw toVaultError(err, 'get', cid, options.signal);
      }
      yield cid;
      if (cid.code !== dagCbor.code) continue;
      for (const child of childLinks(dagCbor.decode(bytes)).reverse()) stack.push(child);
    }
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
  if (isVaultError(err)) return err; // from FsBlockStore or the network fetch, already precise
  if (signal?.aborted === true) return abortError(signal);
  const details = { cid: cid.toString() };
  const name = errName(err);
  // The datastore's "absent" answer (interface-store's NotFoundError); anything else is the store's failure.
  if (op === 'get' && name === 'NotFoundError') {
    return new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found`, { cause: err, details });
  }
  return new VaultError('STORE_UNAVAILABLE', `IPFS ${op} of block ${cid} failed: ${name}`, { cause: err, details });
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
