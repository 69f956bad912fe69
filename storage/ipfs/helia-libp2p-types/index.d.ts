// The one type @helia/bitswap takes from @helia/libp2p, as helia defines it: a Helia node with its
// libp2p (see package.json here, and storage/ipfs/network.ts, which builds such a host).
import type { Helia } from '@helia/interface';
import type { Libp2p } from '@libp2p/interface';

export interface HeliaWithLibp2p<T extends Libp2p = Libp2p> extends Helia {
  libp2p: T;
}
