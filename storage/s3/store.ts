// Blocks in any S3-compatible object store (AWS S3, Ceph RGW, Swift s3api, MinIO, R2), packed:
// blocks are gathered into pack objects of about 8 MiB (`<prefix>packs/<id>`, format in
// pack-format.ts) and found through a local SQLite index (pack-index.ts), because a store that
// pays per request (Swift's Python proxy, S3's request pricing, signing, TLS) moves far more
// bytes per second in a few large objects than in many 1 MiB ones. Writes are batched in the
// background (pack-writer.ts); reads fetch the following blocks of a pack in the same ranged
// GET (span-reader.ts). With `packBytes: 0` each block is its own object `<prefix><CID>`, as
// before packing; that layout is also where a block not in the index is looked for, so stores
// written either way stay readable.
//
// Every S3 write is atomic (a reader sees a whole object or a 404) and every object is written
// once: content addressing makes single-block objects idempotent, and a pack has a fresh id. The
// index gets a pack's rows only after its upload succeeded, so a crash leaves at worst an orphan
// pack (garbage), never an index row pointing nowhere. The index can be rebuilt from the packs'
// own headers (rebuildIndex, `dicom-vault reindex`); gc runs that first, so orphans are collected,
// and compacts the packs it leaves at most half live (compact).
//
// Errors: only a 404 NoSuchKey is "absent" (for a packed block: its pack is missing). A 403, a
// missing bucket, a 5xx after the retries, a timeout or a refused connection is
// STORE_UNAVAILABLE with the SDK's error as `cause`. Retries (with exponential backoff and
// jitter, longer for throttling) are the SDK's standard strategy; every call also has an overall
// deadline so that a slow server fails a request within a bound.
//
// This file is the block store itself (put, get, has, delete, list over the writer, the index and
// the span reader). Beside it: options.ts (options, defaults, validation), client.ts (the SDK
// client, its middleware, its errors in the catalogue's terms), objects.ts (single and multipart
// objects), body.ts (response bodies into buffers), rebuild.ts (index rebuild), compaction.ts.
import type http from 'node:http';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { CID } from 'multiformats/cid';
import { VaultError, isVaultError } from '../../src/core/errors.ts';
import { abortError, throwIfAborted } from '../../src/core/abort.ts';
import type { AbortOptions, BlockStore, PutOptions } from '../block-store.ts';
import { destroyBody, readBodyIntoTargets } from './body.ts';
import { callFailure, checkBucket, createClient, errorMessage, httpStatus, probeWrite, runCall, type Operation, type S3Calls, type Subject } from './client.ts';
import { type CompactOptions, compactPacks, type CompactReport } from './compaction.ts';
import { getObject, putObject, type PartSizes } from './objects.ts';
import { PACKS_DIR, newPackId, validate, type S3BlockStoreOptions, type Validated } from './options.ts';
import { PackIndex } from './pack-index.ts';
import { PackWriter } from './pack-writer.ts';
import { rebuildIndex, type IndexRebuildReport } from './rebuild.ts';
import { SpanReader, type SpanTarget } from './span-reader.ts';

// The store's public API, wherever each piece lives now.
export {
  DEFAULT_PACK_BYTES,
  DEFAULT_PACK_UPLOADS,
  DEFAULT_READ_CACHE_BYTES,
  DEFAULT_READ_SPAN,
  DEFAULT_S3_CONNECT_TIMEOUT_MS,
  DEFAULT_S3_MAX_ATTEMPTS,
  DEFAULT_S3_MAX_SOCKETS,
  DEFAULT_S3_MULTIPART_THRESHOLD,
  DEFAULT_S3_OPERATION_TIMEOUT_MS,
  DEFAULT_S3_PART_CONCURRENCY,
  DEFAULT_S3_PART_SIZE,
  DEFAULT_S3_PREFIX,
  DEFAULT_S3_REGION,
  DEFAULT_S3_REQUEST_TIMEOUT_MS,
  type S3BlockStoreOptions,
  type S3ChecksumMode,
} from './options.ts';
export { DEFAULT_COMPACT_MAX_LIVE, type CompactReport } from './compaction.ts';
export type { IndexRebuildReport } from './rebuild.ts';

/** Where a block is: a pack and a byte range in it, or its own object. */
export interface S3BlockLocation {
  key: string;
  range?: { start: number; size: number };
}

/** A ranged read of a pack failed; `timedOut` when the operation deadline cut it off. */
class RangeReadFailure extends Error {
  readonly timedOut: boolean;
  constructor(cause: unknown, timedOut: boolean) {
    super('ranged read of a pack failed', { cause });
    this.timedOut = timedOut;
  }
}

export class S3BlockStore implements BlockStore {
  readonly bucket: string;
  readonly prefix: string;
  readonly client: S3Client;
  readonly #agent: http.Agent;
  /** The bucket's calls, for the functions beside this file (runCall, rebuild, objects). */
  readonly #calls: S3Calls;
  readonly #parts: PartSizes;
  /** Present when an index path was given: packed blocks are read (and, with a writer, written). */
  readonly #index: PackIndex | undefined;
  readonly #spans: SpanReader | undefined;
  /** Present when packing is on (packBytes > 0). */
  readonly #writer: PackWriter | undefined;
  /** Background deletions of pack objects nothing refers to; close stops them. */
  readonly #cleanups = new Set<Promise<void>>();
  readonly #closing = new AbortController();
  #closed = false;

  private constructor(client: S3Client, agent: http.Agent, index: PackIndex | undefined, o: Validated) {
    this.client = client;
    this.#agent = agent;
    this.bucket = o.bucket;
    this.prefix = o.prefix;
    this.#calls = { client, bucket: o.bucket, prefix: o.prefix, operationTimeoutMs: o.operationTimeoutMs, packKey: (id) => this.packKey(id) };
    this.#parts = { multipartThreshold: o.multipartThreshold, partSize: o.partSize, partConcurrency: o.partConcurrency };
    this.#index = index;
    if (index !== undefined) {
      this.#spans = new SpanReader(
        { readSpan: o.readSpan, cacheBytes: o.readCacheBytes },
        {
          following: (pack, start, limit) => index.following(pack, start, limit),
          adjacentPack: (pack, direction) => index.adjacentPack(pack, direction),
          read: (pack, start, end, targets, signal) => this.#readPackRange(pack, start, end, targets, signal),
        },
      );
    }
    if (index !== undefined && o.packBytes > 0) {
      this.#writer = new PackWriter(
        { packBytes: o.packBytes, packUploads: o.packUploads },
        {
          newId: newPackId,
          upload: (id, body, signal) => this.#uploadPack(id, body, signal),
          land: (id, bytes, blocks) => index.land(id, bytes, blocks),
          discard: (id) => this.#background(this.#deleteObject(this.packKey(id), this.#closing.signal)),
          indexed: (cid) => index.touch(cid),
          describe: (err, cid, pack) => blockNotStored(err, cid, pack),
        },
      );
    }
  }

  /**
   * Connects and checks the bucket before any block is stored. Throws CONFIG_INVALID for bad
   * options, missing credentials, a missing bucket, refused access (wrong key or secret, no
   * permission) or an index that cannot be opened, and STORE_UNAVAILABLE when the endpoint
   * cannot be reached or keeps failing.
   */
  static async open(options: S3BlockStoreOptions): Promise<S3BlockStore> {
    const o = validate(options);
    const index = o.indexPath === undefined ? undefined : PackIndex.open(o.indexPath);
    const { client, agent } = createClient(o);
    const store = new S3BlockStore(client, agent, index, o);
    try {
      await checkBucket(store.#calls, o.endpoint ?? `AWS S3 (${o.region ?? 'default region'})`);
      if (o.probeWrite) await probeWrite(store.#calls);
    } catch (err) {
      await store.close().catch(() => undefined);
      throw err;
    }
    // Packs whose blocks were all deleted but whose object a failed DeleteObject left behind.
    if (index !== undefined) store.#background(store.#sweepDeadPacks());
    return store;
  }

  /**
   * Packed (the default): copies the block into the pending pack; resolves once it is readable,
   * or with `durable` (the default) once its pack is uploaded and indexed. The caller may reuse
   * `bytes` once this settles. Unpacked, or a block of at least `multipartThreshold`: uploads it
   * as its own object. Does not hash `bytes` (ingest has just computed the CID from them); reads
   * are verified.
   */
  async put(cid: CID, bytes: Uint8Array, options: PutOptions = {}): Promise<void> {
    if (this.#writer !== undefined && bytes.byteLength < this.#parts.multipartThreshold) {
      if (this.#closed) throw closedError();
      await this.#writer.put(cid, bytes, options);
      return;
    }
    const key = this.key(cid);
    await this.#run('put', { cid }, options.signal, (abortSignal) => putObject(this.#calls, this.#parts, key, bytes, abortSignal));
  }

  /**
   * The block from the read-ahead cache, the pending packs, its pack (a ranged GET that also
   * reads the blocks after it), or its own object, in that order. The caller owns the buffer.
   */
  async get(cid: CID, options: AbortOptions = {}): Promise<Uint8Array> {
    const { signal } = options;
    if (signal?.aborted === true) throw abortError(signal);
    const cached = this.#spans?.take(cid.bytes) ?? this.#writer?.read(cid);
    if (cached !== undefined) return cached;
    const packed = this.#index?.lookup(cid);
    if (packed !== undefined) {
      try {
        return await this.#spans!.get(packed, signal);
      } catch (err) {
        const timedOut = err instanceof RangeReadFailure && err.timedOut;
        const failure = callFailure(this.#calls, err instanceof RangeReadFailure ? err.cause : err, 'get', { cid, pack: packed.pack }, signal, timedOut);
        // Compaction moved the block (and deleted its old pack) since it was looked up: read it where it is now.
        if (isVaultError(failure, 'BLOCK_NOT_FOUND') && this.#moved(cid, packed.pack)) return this.get(cid, options);
        throw failure;
      }
    }
    const key = this.key(cid);
    return this.#run('get', { cid }, signal, (abortSignal) => getObject(this.#calls, this.#parts, key, abortSignal));
  }

  /**
   * Pending blocks are present; an indexed block is present if its pack object is (a HEAD, so a
   * deleted or forbidden pack is reported as such); any other block if its own object is.
   */
  async has(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    const { signal } = options;
    if (signal?.aborted === true) throw abortError(signal);
    if (this.#writer?.has(cid) === true) return true;
    const packed = this.#index?.lookup(cid);
    const key = packed === undefined ? this.key(cid) : this.packKey(packed.pack);
    return this.#run('check', packed === undefined ? { cid } : { cid, pack: packed.pack }, signal, async (abortSignal) => {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal });
        return true;
      } catch (err) {
        // A HEAD response has no body, so 404 is all there is; 403 stays an error (below).
        if (httpStatus(err) === 404) return packed !== undefined && this.#moved(cid, packed.pack) ? this.has(cid, options) : false;
        throw err;
      }
    });
  }

  /** Whether the index now places `cid` in a pack other than `pack` (compaction moved it). */
  #moved(cid: CID, pack: string): boolean {
    const now = this.#index?.lookup(cid);
    return now !== undefined && now.pack !== pack;
  }

  /**
   * Removes the block wherever it is: pending (it is left out of its pack), in flight (not
   * indexed when its pack lands), indexed (the pack's object is deleted with its last live
   * block; gc compacts packs left mostly dead), and its own object, if any. Idempotent.
   */
  async delete(cid: CID, options: AbortOptions = {}): Promise<void> {
    const { signal } = options;
    if (signal?.aborted === true) throw abortError(signal);
    this.#spans?.forget(cid.bytes);
    this.#writer?.delete(cid);
    const removed = this.#index?.remove(cid);
    if (removed !== undefined && removed.live === 0) await this.#deleteDeadPack(removed.pack);
    // An object of its own may exist too (written unpacked, or by a store without packing).
    const key = this.key(cid);
    await this.#run('delete', { cid }, signal, async (abortSignal) => {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal });
    });
  }

  /**
   * Seals the pending pack and resolves once every block put before is uploaded and indexed.
   * Rejects with STORE_UNAVAILABLE (cause: the upload's error) while a block put before this
   * flush is tracked as not stored, i.e. until it is deleted or put again. Unpacked, every put
   * is durable already.
   */
  async flush(options: AbortOptions = {}): Promise<void> {
    if (options.signal?.aborted === true) throw abortError(options.signal);
    await this.#writer?.flush(options);
  }

  /**
   * Every block: pending, indexed, then objects of their own (foreign keys, not a CID, and
   * packs are skipped), each CID once. Only the pending blocks listed are remembered (a few
   * packs' worth: they may land while the index is listed); an object is skipped when the index
   * has its CID. A set of every CID listed would cost about 1.5 KB a block (CID strings are
   * built by concatenation), 1.5 GB for a bucket of a million.
   */
  async *list(options: AbortOptions = {}): AsyncGenerator<CID> {
    const { signal } = options;
    if (signal?.aborted === true) throw abortError(signal);
    const pending = new Set<string>();
    for (const cid of this.#writer?.cids() ?? []) {
      const key = cid.toString();
      if (pending.has(key)) continue;
      pending.add(key);
      yield cid;
    }
    const listed = (cid: CID): boolean => pending.size > 0 && pending.has(cid.toString());
    let n = 0;
    for (const cid of this.#index?.cids() ?? []) {
      if (++n % 1000 === 0) throwIfAborted(signal);
      if (!listed(cid)) yield cid;
    }
    let token: string | undefined;
    do {
      const page = await this.#run('list', {}, signal, (abortSignal) =>
        this.client.send(
          // The delimiter keeps the packs (one level down) out of the listing.
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, Delimiter: '/', ...(token === undefined ? {} : { ContinuationToken: token }) }),
          { abortSignal },
        ),
      );
      for (const object of page.Contents ?? []) {
        const cid = parseKey(object.Key, this.prefix);
        if (cid !== undefined && this.#index?.lookup(cid) === undefined && !listed(cid)) yield cid;
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /** Adds every pack in the bucket that the index lacks, from the packs' own headers: see rebuild.ts. Deletes nothing. */
  async rebuildIndex(options: AbortOptions = {}): Promise<IndexRebuildReport> {
    if (this.#index === undefined) throw new VaultError('CONFIG_INVALID', 'this S3 store has no pack index to rebuild (no index path)');
    return rebuildIndex(this.#calls, this.#index, options.signal);
  }

  /** Pack objects the index knows, and their bytes (gc reports them before and after). */
  packTotals(): { packs: number; bytes: number } {
    if (this.#index === undefined) throw new VaultError('CONFIG_INVALID', 'this S3 store has no pack index (no index path)');
    return this.#index.totals();
  }

  /**
   * Rewrites every pack whose live blocks fill at most `maxLiveFraction` of it (default half), or
   * with `holed` every pack that lost a block (erasure), with only its live blocks, re-hashed, and
   * deletes the old pack: see compaction.ts.
   */
  async compact(options: CompactOptions = {}): Promise<CompactReport> {
    const index = this.#index;
    if (index === undefined) throw new VaultError('CONFIG_INVALID', 'compaction needs the pack index (no index path)');
    const host = {
      index,
      store: this,
      closing: this.#closing.signal,
      packKey: (id: string) => this.packKey(id),
      uploadPack: (id: string, body: Uint8Array, signal: AbortSignal) => this.#uploadPack(id, body, signal),
      deleteObject: (key: string, signal?: AbortSignal) => this.#deleteObject(key, signal),
      deleteDeadPack: (pack: string, signal?: AbortSignal) => this.#deleteDeadPack(pack, signal),
    };
    return compactPacks(host, options);
  }

  /**
   * Size and last write (ms since the epoch) of a block, for gc: a pending block is new; a packed
   * one has its pack's landing or its last touch (PackIndex.written); an object of its own, its
   * LastModified. undefined when it is not stored. (A pending block's size is not looked up: 0.)
   */
  async blockInfo(cid: CID, options: AbortOptions = {}): Promise<{ size: number; writtenMs: number } | undefined> {
    if (this.#writer?.has(cid) === true) return { size: 0, writtenMs: Date.now() };
    const packed = this.#index?.written(cid);
    if (packed !== undefined) return packed;
    return this.#run('check', { cid }, options.signal, async (abortSignal) => {
      try {
        const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(cid) }), { abortSignal });
        return { size: head.ContentLength ?? 0, writtenMs: head.LastModified?.getTime() ?? Date.now() };
      } catch (err) {
        if (httpStatus(err) === 404) return undefined;
        throw err;
      }
    });
  }

  /**
   * Uploads what is pending (a clean shutdown loses no block put with `durable: false`), then
   * closes the index and the sockets. Rejects, after closing, if that last flush failed. Calls
   * still running fail.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let failure: unknown;
    try {
      await this.#writer?.flush();
    } catch (err) {
      failure = err;
    }
    // Best-effort deletions of garbage must not hold a shutdown up: what they leave is an orphan
    // pack (or a dead one, swept at the next open).
    this.#closing.abort();
    await Promise.allSettled([...this.#cleanups]);
    this.client.destroy();
    this.#agent.destroy();
    this.#index?.close();
    if (failure !== undefined) throw failure;
  }

  /** The object key of a block stored as its own object. */
  key(cid: CID): string {
    return `${this.prefix}${cid.toString()}`;
  }

  /** The object key of a pack. */
  packKey(id: string): string {
    return `${this.prefix}${PACKS_DIR}${id}`;
  }

  /**
   * Where the index says a block is: its pack's key and byte range, else the key of the
   * block's own object (which may or may not exist). Pending blocks are not located. For tests
   * and tools.
   */
  locate(cid: CID): S3BlockLocation {
    const packed = this.#index?.lookup(cid);
    if (packed === undefined) return { key: this.key(cid) };
    return { key: this.packKey(packed.pack), range: { start: packed.start, size: packed.size } };
  }

  /** Counters for tests and metrics: ranged pack reads issued, and the writer's queues. */
  get stats(): { packReads: number; cachedBytes: number; pending: number; uploading: number; failed: number } {
    const w = this.#writer?.stats;
    return {
      packReads: this.#spans?.reads ?? 0,
      cachedBytes: this.#spans?.cachedBytes ?? 0,
      pending: w?.pending ?? 0,
      uploading: (w?.uploading ?? 0) + (w?.queued ?? 0),
      failed: w?.failed ?? 0,
    };
  }

  /** One call with the caller's signal and the overall deadline, its errors the catalogue's (client.ts runCall). */
  #run<T>(op: Operation, subject: Subject, signal: AbortSignal | undefined, fn: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    return runCall(this.#calls, op, subject, signal, fn);
  }

  async #uploadPack(id: string, body: Uint8Array, signal: AbortSignal): Promise<void> {
    const key = this.packKey(id);
    await this.#run('put', { pack: id }, signal, (abortSignal) => putObject(this.#calls, this.#parts, key, body, abortSignal));
  }

  /** Bytes [start, end) of a pack, streamed into the targets' buffers. */
  async #readPackRange(pack: string, start: number, end: number, targets: readonly SpanTarget[], signal: AbortSignal): Promise<void> {
    const deadline = AbortSignal.timeout(this.#calls.operationTimeoutMs);
    const abortSignal = AbortSignal.any([signal, deadline]);
    const Key = this.packKey(pack);
    try {
      if (end === start) {
        // Only empty blocks: nothing to read, but the pack must still be there.
        await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal });
        return;
      }
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range: `bytes=${start}-${end - 1}` }), { abortSignal });
      if (res.ContentLength !== end - start) {
        destroyBody(res.Body);
        throw new Error(`ranged GET of bytes ${start}-${end - 1} of ${Key} returned ${res.ContentLength} bytes`);
      }
      await readBodyIntoTargets(res.Body, start, end, targets, abortSignal);
    } catch (err) {
      throw new RangeReadFailure(err, deadline.aborted);
    }
  }

  async #deleteObject(key: string, signal?: AbortSignal): Promise<void> {
    await this.#run('delete', {}, signal, async (abortSignal) => {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal });
    });
  }

  /**
   * Deletes the object of a pack with no live block, then its row. If the delete fails the row
   * stays (live = 0) and the next open tries again: the block itself is gone either way.
   */
  async #deleteDeadPack(pack: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.#deleteObject(this.packKey(pack), signal);
      this.#index!.dropPack(pack);
    } catch {
      // Retried by #sweepDeadPacks on the next open.
    }
  }

  async #sweepDeadPacks(): Promise<void> {
    for (const pack of this.#index!.deadPacks()) {
      if (this.#closing.signal.aborted) return;
      await this.#deleteDeadPack(pack, this.#closing.signal);
    }
  }

  #background(work: Promise<void>): void {
    const tracked = work.catch(() => undefined).finally(() => this.#cleanups.delete(tracked));
    this.#cleanups.add(tracked);
  }
}

function closedError(): VaultError {
  return new VaultError('STORE_UNAVAILABLE', 'the S3 block store is closed');
}

/** What a put or flush reports for one block of a pack whose upload (or indexing) failed. */
function blockNotStored(err: unknown, cid: CID, pack: string): VaultError {
  const inner = err instanceof VaultError ? err : undefined;
  const reason = inner?.message ?? errorMessage(err);
  return new VaultError(inner?.code === 'ABORTED' ? 'ABORTED' : 'STORE_UNAVAILABLE', `block ${cid} was not stored: ${reason}`, {
    cause: err,
    details: { ...inner?.details, cid: cid.toString(), pack },
  });
}

function parseKey(key: string | undefined, prefix: string): CID | undefined {
  if (key === undefined || !key.startsWith(prefix)) return undefined;
  const name = key.slice(prefix.length);
  if (name.includes('/')) return undefined;
  try {
    return CID.parse(name);
  } catch {
    return undefined;
  }
}
