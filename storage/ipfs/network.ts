// The IPFS backend's network side, imported only when `network: true` (storage/ipfs.ts): a libp2p
// node for servers and bitswap over the store's blocks. Peers connected to this node can fetch its
// blocks (ciphertext), and a block missing here is looked for on the network.
//
// libp2p is configured for a server, from helia's own defaults (@helia/libp2p libp2pDefaults) less
// what a server does not need: TCP only (no WebRTC, WebSockets or circuit relay, which are for
// browsers and peers behind NAT), noise and yamux (not TLS or mplex), identify and ping (which
// the DHT needs), the amino DHT (kad-dht: finding the peers that have a block) and the bootstrap
// peers; no mDNS, UPnP, AutoNAT, AutoTLS or delegated HTTP routing. Like helia's node, blocks are
// not announced to the DHT; connected peers learn of them through bitswap.
//
// Bitswap is @helia/bitswap, attached through its `withBitswap` mixin to the small host object
// below (what a helia node gives its mixins). The peer identity is kept in the datastore as helia
// kept it (@libp2p/config loadOrCreateSelfKey), so a repo keeps its peer id.
import { withBitswap } from '@helia/bitswap';
import { bootstrap } from '@libp2p/bootstrap';
import { loadOrCreateSelfKey } from '@libp2p/config';
import { identify } from '@libp2p/identify';
import { kadDHT } from '@libp2p/kad-dht';
import { noise } from '@libp2p/noise';
import { ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import { yamux } from '@libp2p/yamux';
import type { Datastore } from 'interface-datastore';
import type { Blockstore } from 'interface-blockstore';
import { createLibp2p, type Libp2p } from 'libp2p';
import type { CID } from 'multiformats/cid';
import { sha256 } from 'multiformats/hashes/sha2';
import { VaultError } from '../../src/core/errors.ts';

export interface IpfsNetworkOptions {
  /** Multiaddrs to listen on. */
  listen: readonly string[];
  /** Peers dialled at start to join the network; none: only peers that dial us, or are dialled, are met. */
  bootstrap: readonly string[];
}

export interface IpfsNetwork {
  readonly libp2p: Libp2p;
  /** A block from the network (bitswap, re-hashed here too); rejects when `signal` aborts first. */
  fetch(cid: CID, signal: AbortSignal): Promise<Uint8Array>;
  /** Tells peers that want the block that it is here now. */
  announce(cid: CID): Promise<void>;
  stop(): Promise<void>;
}

/** What @helia/bitswap's BitswapBlockBroker is: the part used here. */
interface BlockBroker {
  name: string;
  retrieve(cid: CID, options: { signal: AbortSignal }): Promise<Uint8Array>;
  announce(cid: CID): Promise<void>;
  stop(): Promise<void>;
}

/** A helia mixin: @helia/bitswap's adds the bitswap broker when the node starts. */
interface Mixin {
  name: string;
  start?(host: unknown): Promise<void>;
}

/** Starts libp2p and bitswap over `blockstore`, the store's own blocks (served to peers as they are). */
export async function startNetwork(datastore: Datastore, blockstore: Blockstore, options: IpfsNetworkOptions): Promise<IpfsNetwork> {
  const libp2p = await createLibp2p({
    privateKey: await loadOrCreateSelfKey(datastore),
    datastore,
    addresses: { listen: [...options.listen] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: options.bootstrap.length > 0 ? [bootstrap({ list: [...options.bootstrap] })] : [],
    services: { identify: identify(), ping: ping(), dht: kadDHT() },
  });
  try {
    const broker = await startBitswap(libp2p, blockstore);
    return {
      libp2p,
      async fetch(cid, signal) {
        const bytes = await broker.retrieve(cid, { signal });
        const digest = await sha256.digest(bytes);
        if (cid.multihash.code !== sha256.code || Buffer.compare(digest.digest, cid.multihash.digest) !== 0) {
          throw new VaultError('BLOCK_CORRUPT', `block ${cid} from the network does not hash to its CID`, { details: { cid: cid.toString() } });
        }
        return bytes;
      },
      announce: (cid) => broker.announce(cid),
      async stop() {
        await broker.stop();
        await libp2p.stop();
      },
    };
  } catch (err) {
    await libp2p.stop();
    throw err;
  }
}

/**
 * Bitswap through @helia/bitswap's mixin, which expects a helia node: this host is what it reads
 * of one (its blocks, libp2p, routing to find providers, the hasher to check received blocks).
 */
async function startBitswap(libp2p: Libp2p, blockstore: Blockstore): Promise<BlockBroker> {
  const mixins: Mixin[] = [];
  const brokers: BlockBroker[] = [];
  const host = {
    status: 'starting',
    logger: libp2p.logger,
    blockstore,
    libp2p,
    routing: { findProviders: (cid: CID, options?: { signal?: AbortSignal }) => libp2p.contentRouting.findProviders(cid, options) },
    getHasher: async (code: number) => {
      if (code === sha256.code) return sha256;
      throw new VaultError('BLOCK_CORRUPT', `hash function 0x${code.toString(16)} is not supported (blocks are sha2-256)`);
    },
    addMixin: (mixin: Mixin) => void mixins.push(mixin),
    hasBlockBroker: (name: string) => brokers.some((b) => b.name === name),
    addBlockBroker: (broker: BlockBroker) => void brokers.push(broker),
  };
  // The host stands in for a HeliaWithLibp2p, whose type @helia/bitswap takes from @helia/libp2p
  // (not installed: storage/ipfs/helia-libp2p-types stands in for it, types only).
  withBitswap(host as never);
  for (const mixin of mixins) await mixin.start?.(host);
  const broker = brokers.find((b) => b.name === 'bitswap');
  if (broker === undefined) throw new VaultError('INTERNAL', '@helia/bitswap did not add its block broker');
  return broker;
}
