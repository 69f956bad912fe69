// The one interface every block backend implements (fs, IPFS, S3). Modelled on
// interface-blockstore, with its lessons: every call takes a signal, not-found is distinct from
// every other failure, writes are atomic and idempotent, and a block read back is re-hashed
// before it is trusted (see `verified.ts`).
import type { CID } from 'multiformats/cid';

export interface AbortOptions {
  signal?: AbortSignal;
}

export interface PutOptions extends AbortOptions {
  /**
   * Make the block durable before resolving (fsync for fs). A STOW answer means durable, so
   * ingest sets this; callers that sync in bulk later may pass false. Default: true.
   */
  durable?: boolean;
}

export interface BlockStore {
  /** Stores `bytes` under `cid`. Idempotent: putting an existing block is a no-op success. */
  put(cid: CID, bytes: Uint8Array, options?: PutOptions): Promise<void>;
  /**
   * The block's bytes exactly as stored, NOT yet verified against `cid`. Throws
   * VaultError('BLOCK_NOT_FOUND') when absent and other codes for anything else.
   */
  get(cid: CID, options?: AbortOptions): Promise<Uint8Array>;
  /**
   * Optional: reads the block, NOT yet verified, into the start of `target` instead of a new
   * buffer, and resolves with its length; resolves undefined (reading nothing) when the block is
   * longer than `target`. Errors as `get`. For readers that reuse buffers (a WADO response), so
   * that a GiB retrieved does not allocate a GiB for the garbage collector to find. Bytes of
   * `target` past the block's length may be overwritten (a direct read fills whole 4 KiB blocks).
   */
  getInto?(cid: CID, target: Uint8Array, options?: AbortOptions): Promise<number | undefined>;
  has(cid: CID, options?: AbortOptions): Promise<boolean>;
  /** Removes the block; removing an absent block is a no-op. */
  delete(cid: CID, options?: AbortOptions): Promise<void>;
  /**
   * Makes every block put since the last call with `durable: false` durable. Backends whose
   * puts are always durable resolve at once.
   */
  flush?(options?: AbortOptions): Promise<void>;
  /** Every CID stored (for garbage collection and verification tools). */
  list?(options?: AbortOptions): AsyncIterable<CID>;
  close?(): Promise<void>;
}
