// Reads that are re-hashed before they are trusted. Backends return bytes as stored (a disk,
// an IPFS peer or an S3 bucket may hand back anything); only these functions promise that the
// bytes are the block the CID names. Puts are not hashed: ingest computes each CID from the
// bytes it is about to put, so a second hash there would double the hot path's CPU for nothing.
import type { CID } from 'multiformats/cid';
import { VaultError, isVaultError } from '../src/core/errors.ts';
import type { AbortOptions, BlockStore, PutOptions } from './block-store.ts';
import { cidMatches } from './cid.ts';
import { publishBlockRejected, publishBlockVerified } from '../src/core/events.ts';

/**
 * The block's bytes, verified against `cid`. Throws VaultError('BLOCK_NOT_FOUND') when the
 * store has no such block, VaultError('BLOCK_CORRUPT') when its bytes do not hash to `cid`
 * (both with `details.cid`), and the store's own error otherwise.
 */
export async function getVerified(store: Pick<BlockStore, 'get'>, cid: CID, options: AbortOptions = {}): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await store.get(cid, options);
  } catch (err) {
    // Re-raised so every backend's not-found names the CID the same way.
    if (isVaultError(err, 'BLOCK_NOT_FOUND')) {
      publishBlockRejected(cid, 'missing');
      throw new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found`, { cause: err, details: { cid: cid.toString() } });
    }
    throw err;
  }
  if (!cidMatches(cid, bytes)) {
    publishBlockRejected(cid, 'corrupt');
    throw new VaultError('BLOCK_CORRUPT', `block ${cid} failed verification`, {
      details: { cid: cid.toString(), size: bytes.byteLength },
    });
  }
  publishBlockVerified(bytes.byteLength);
  return bytes;
}

/** Any BlockStore whose `get` verifies (see `getVerified`); every other call is passed through. */
export class VerifiedBlockStore implements BlockStore {
  readonly inner: BlockStore;
  /** Present only when the inner store can list, so callers can still tell. */
  readonly list?: (options?: AbortOptions) => AsyncIterable<CID>;

  constructor(inner: BlockStore) {
    this.inner = inner;
    const { list } = inner;
    if (list !== undefined) this.list = (options) => list.call(inner, options);
  }

  put(cid: CID, bytes: Uint8Array, options?: PutOptions): Promise<void> {
    return this.inner.put(cid, bytes, options);
  }

  get(cid: CID, options?: AbortOptions): Promise<Uint8Array> {
    return getVerified(this.inner, cid, options);
  }

  has(cid: CID, options?: AbortOptions): Promise<boolean> {
    return this.inner.has(cid, options);
  }

  delete(cid: CID, options?: AbortOptions): Promise<void> {
    return this.inner.delete(cid, options);
  }

  /** A store without `flush` has only durable puts, so there is nothing to do. */
  async flush(options?: AbortOptions): Promise<void> {
    await this.inner.flush?.(options);
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }
}
