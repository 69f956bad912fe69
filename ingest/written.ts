// The blocks an ingest wrote, recorded as it writes them, so that an ingest that fails, or an
// instance that is not kept, is deleted without reading anything back from the store. Reading
// link nodes back to find the chunks (format 2's first discard path) failed exactly when it
// mattered: during a store outage, and on S3 the pack writer then kept the blocks as failed and
// every later flush failed with them.
//
// Each CID is kept as its 36 bytes (CIDv1, one-byte codec, sha2-256) in segments that grow from
// 8 records to 2,048 (72 KiB), not as CID objects: 36 bytes per block written, so 36 KiB per GiB
// at 1 MiB chunks (link nodes add one record per 1,024 chunks), 36 MiB for a TiB instance. It
// lives as long as the request that wrote the blocks (an instance's until its version commits or
// it is discarded). A CID of another length (no block of ours) is kept as an object.
import { CID } from 'multiformats/cid';
import type { BlockStore } from '../storage/block-store.ts';

const RECORD = 36;
const FIRST_SEGMENT = 8;
const MAX_SEGMENT = 2048;
/** Deletes in flight at once while discarding (each may wait for a file system's sync or a request). */
export const DISCARD_CONCURRENCY = 16;

export class WrittenBlocks {
  readonly #segments: Uint8Array[] = [];
  /** Records used in the last segment. */
  #fill = 0;
  #count = 0;
  readonly #other: CID[] = [];

  add(cid: CID): void {
    this.#count++;
    const bytes = cid.bytes;
    if (bytes.byteLength !== RECORD) {
      this.#other.push(cid);
      return;
    }
    let last = this.#segments.at(-1);
    if (last === undefined || this.#fill * RECORD === last.byteLength) {
      const records = last === undefined ? FIRST_SEGMENT : Math.min(MAX_SEGMENT, (last.byteLength / RECORD) * 2);
      last = new Uint8Array(records * RECORD);
      this.#segments.push(last);
      this.#fill = 0;
    }
    last.set(bytes, this.#fill++ * RECORD);
  }

  /** Blocks recorded (a block put twice counts twice). */
  get count(): number {
    return this.#count;
  }

  /** Bytes held by the records (segments as allocated). */
  get heldBytes(): number {
    return this.#segments.reduce((n, s) => n + s.byteLength, 0) + this.#other.length * RECORD;
  }

  *cids(): Generator<CID> {
    for (let s = 0; s < this.#segments.length; s++) {
      const segment = this.#segments[s]!;
      const records = s === this.#segments.length - 1 ? this.#fill : segment.byteLength / RECORD;
      for (let r = 0; r < records; r++) yield CID.decode(segment.subarray(r * RECORD, (r + 1) * RECORD));
    }
    yield* this.#other;
  }
}

/**
 * Deletes every block recorded in `lists`, DISCARD_CONCURRENCY at a time. Never reads the store;
 * a delete that fails (a block already gone, a store down) is passed over: what it leaves is
 * unreferenced, and gc collects it.
 */
export async function deleteWritten(store: Pick<BlockStore, 'delete'>, lists: Iterable<WrittenBlocks>): Promise<void> {
  const all = (function* () {
    for (const list of lists) yield* list.cids();
  })();
  const worker = async (): Promise<void> => {
    for (let next = all.next(); next.done !== true; next = all.next()) await store.delete(next.value).catch(() => undefined);
  };
  await Promise.all(Array.from({ length: DISCARD_CONCURRENCY }, worker));
}
