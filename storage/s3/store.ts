// Blocks in any S3-compatible object store (AWS S3, Ceph RGW, Swift s3api, MinIO, R2), packed:
// blocks are gathered into pack objects of about 8 MiB (`<prefix>packs/<id>`, format in
// pack-format.ts) and found through a local SQLite index (s3-pack-index.ts), because a store that
// pays per request (Swift's Python proxy, S3's request pricing, signing, TLS) moves far more
// bytes per second in a few large objects than in many 1 MiB ones. Writes are batched in the
// background (s3-pack-writer.ts); reads fetch the following blocks of a pack in the same ranged
// GET (s3-span-reader.ts). With `packBytes: 0` each block is its own object `<prefix><CID>`, as
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
import http from 'node:http';
import https from 'node:https';
import { randomBytes, randomUUID } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider, BuildMiddleware } from '@smithy/types';
import type { ServiceInputTypes, ServiceOutputTypes } from '@aws-sdk/client-s3';
import { CID } from 'multiformats/cid';
import { VaultError, isVaultError } from '../../src/core/errors.ts';
import { abortError, throwIfAborted } from '../../src/core/abort.ts';
import type { AbortOptions, BlockStore, PutOptions } from '../block-store.ts';
import { DEFAULT_HEADER_RESERVE, PACK_PREAMBLE_BYTES, buildPack, decodePackHeader, packDataStart } from './pack-format.ts';
import { PackIndex, landedBlocks, type LandedBlock } from './pack-index.ts';
import { DEFAULT_PACK_BYTES, DEFAULT_PACK_UPLOADS, PackWriter } from './pack-writer.ts';
import { getVerified } from '../verified.ts';
import { DEFAULT_READ_CACHE_BYTES, DEFAULT_READ_SPAN, SpanReader, type SpanTarget } from './span-reader.ts';

export { DEFAULT_PACK_BYTES, DEFAULT_PACK_UPLOADS, DEFAULT_READ_CACHE_BYTES, DEFAULT_READ_SPAN };

export const DEFAULT_S3_PREFIX = 'blocks/';
export const DEFAULT_S3_REGION = 'us-east-1';
/** Attempts per request, the first included (SDK standard retry mode). */
export const DEFAULT_S3_MAX_ATTEMPTS = 4;
/** Milliseconds to establish a TCP (and TLS) connection. */
export const DEFAULT_S3_CONNECT_TIMEOUT_MS = 5_000;
/** Milliseconds one attempt (request sent to response read) may take. */
export const DEFAULT_S3_REQUEST_TIMEOUT_MS = 30_000;
/** Milliseconds one store call may take, all attempts and backoff included. */
export const DEFAULT_S3_OPERATION_TIMEOUT_MS = 120_000;
/** Sockets kept open to the endpoint; bounds the requests in flight. */
export const DEFAULT_S3_MAX_SOCKETS = 64;
/** Blocks of at least this many bytes use multipart upload and ranged reads. 16 MiB. */
export const DEFAULT_S3_MULTIPART_THRESHOLD = 16 * 1024 * 1024;
/** Part size of multipart uploads and ranged reads. 8 MiB (S3's minimum part is 5 MiB). */
export const DEFAULT_S3_PART_SIZE = 8 * 1024 * 1024;
/** Parts of one block uploaded or read at once. */
export const DEFAULT_S3_PART_CONCURRENCY = 4;
const MIN_PART_SIZE = 5 * 1024 * 1024;
/** Pack objects live under `<prefix>packs/`; block objects are `<prefix><CID>`, with no '/'. */
const PACKS_DIR = 'packs/';

/**
 * When the SDK adds checksums. 'when_supported' (the SDK's default) adds CRC32 checksums to every
 * upload and checks them on download; AWS S3 wants that. Many S3-compatible servers (Swift's
 * s3api, older Ceph RGW, some MinIO versions) reject the SDK's checksummed aws-chunked uploads
 * (501 NotImplemented): use 'when_required' for them. Blocks are re-hashed against their CID on
 * every read either way, so this only changes where corruption in transit is caught.
 */
export type S3ChecksumMode = 'when_supported' | 'when_required';

export interface S3BlockStoreOptions {
  /** Bucket holding the blocks. It must exist: the store never creates buckets. Required. */
  bucket: string;
  /** Key prefix of every block object. Default DEFAULT_S3_PREFIX ('blocks/'); '' for none. */
  prefix?: string;
  /** Endpoint URL, e.g. http://127.0.0.1:9000. Default: AWS S3 for the region. */
  endpoint?: string;
  /** Default: the SDK's (AWS_REGION, then the profile's region), else 'us-east-1'. */
  region?: string;
  /** Path-style URLs (endpoint/bucket/key) instead of virtual hosts. Default false. */
  forcePathStyle?: boolean;
  /** Default 'when_supported'. See S3ChecksumMode. */
  checksums?: S3ChecksumMode;
  /**
   * Default: the SDK's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN),
   * then AWS_PROFILE in ~/.aws/credentials and ~/.aws/config (SSO, assume-role, process), then
   * web identity and the instance or container role.
   */
  credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /** Default DEFAULT_S3_MAX_ATTEMPTS (4). */
  maxAttempts?: number;
  /** Default DEFAULT_S3_CONNECT_TIMEOUT_MS (5 s). */
  connectTimeoutMs?: number;
  /** Default DEFAULT_S3_REQUEST_TIMEOUT_MS (30 s). */
  requestTimeoutMs?: number;
  /** Default DEFAULT_S3_OPERATION_TIMEOUT_MS (120 s). */
  operationTimeoutMs?: number;
  /** Default DEFAULT_S3_MAX_SOCKETS (64). */
  maxSockets?: number;
  /** Default DEFAULT_S3_MULTIPART_THRESHOLD (16 MiB). */
  multipartThreshold?: number;
  /** Default DEFAULT_S3_PART_SIZE (8 MiB). At least 5 MiB. */
  partSize?: number;
  /** Default DEFAULT_S3_PART_CONCURRENCY (4). */
  partConcurrency?: number;
  /**
   * On open, write and delete a small probe object, so that read-only credentials fail at
   * start-up rather than at the first STOW. Default true.
   */
  probeWrite?: boolean;
  /**
   * The local pack index (SQLite file, created if missing), e.g. `<data-dir>/s3-index.db`.
   * Required unless `packBytes` is 0. Without it only single-block objects are read. It belongs
   * with this bucket and prefix: the blocks in packs can only be found through it.
   */
  indexPath?: string;
  /**
   * Bytes of blocks gathered into one pack object before it is uploaded. Default
   * DEFAULT_PACK_BYTES (8 MiB). 0: one object per block (packs already indexed stay readable).
   * Blocks of at least `multipartThreshold` are always objects of their own.
   */
  packBytes?: number;
  /** Pack uploads in flight at once; more puts wait. Default DEFAULT_PACK_UPLOADS (4). */
  packUploads?: number;
  /** Bytes one ranged GET of a pack covers (the block asked for and the ones after it). Default DEFAULT_READ_SPAN (4 MiB); 0: one block per GET. */
  readSpan?: number;
  /** Bytes of blocks read ahead that are kept until asked for. Default DEFAULT_READ_CACHE_BYTES (32 MiB). */
  readCacheBytes?: number;
}

/** Where a block is: a pack and a byte range in it, or its own object. */
export interface S3BlockLocation {
  key: string;
  range?: { start: number; size: number };
}

type Operation = 'put' | 'get' | 'check' | 'delete' | 'list';

/** What S3BlockStore.rebuildIndex found under `<prefix>packs/`. */
export interface IndexRebuildReport {
  /** Objects under `<prefix>packs/`. */
  objects: number;
  /** Packs the index had already (left as they were). */
  known: number;
  /** Packs read and indexed now, and the blocks they brought. */
  indexed: number;
  blocks: number;
  /** Packs whose every block the index had in another pack (left in the bucket: garbage). */
  redundant: number;
  /** Listed, but deleted before they were read. */
  gone: number;
  /** Objects that are not readable packs, with the reason. Left in the bucket, not indexed. */
  unreadable: Array<{ key: string; reason: string }>;
}

/** What S3BlockStore.compact did. */
export interface CompactReport {
  /** Packs rewritten, the live blocks moved out of them, and the packs' bytes before and after. */
  packs: number;
  blocks: number;
  bytesBefore: number;
  bytesAfter: number;
  /** Packs left as they were because a live block could not be read intact (verify names it). */
  skipped: Array<{ key: string; reason: string }>;
}

/** Compaction rewrites a pack once its live blocks fill at most this fraction of it. */
export const DEFAULT_COMPACT_MAX_LIVE = 0.5;

/** Packs whose heads rebuildIndex reads at once. */
const REBUILD_CONCURRENCY = 8;

/** What a call was about, for its error message and details. */
interface Subject {
  cid?: CID;
  pack?: string;
}

/** A ranged read of a pack failed; `timedOut` when the operation deadline cut it off. */
class RangeReadFailure extends Error {
  readonly timedOut: boolean;
  constructor(cause: unknown, timedOut: boolean) {
    super('ranged read of a pack failed', { cause });
    this.timedOut = timedOut;
  }
}

type Validated = ReturnType<typeof validate>;

export class S3BlockStore implements BlockStore {
  readonly bucket: string;
  readonly prefix: string;
  readonly client: S3Client;
  readonly #agent: http.Agent;
  readonly #operationTimeoutMs: number;
  readonly #multipartThreshold: number;
  readonly #partSize: number;
  readonly #partConcurrency: number;
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
    this.#operationTimeoutMs = o.operationTimeoutMs;
    this.#multipartThreshold = o.multipartThreshold;
    this.#partSize = o.partSize;
    this.#partConcurrency = o.partConcurrency;
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
    const agentOptions = { keepAlive: true, maxSockets: o.maxSockets };
    const agent = o.endpoint?.startsWith('http://') === true ? new http.Agent(agentOptions) : new https.Agent(agentOptions);
    const config: S3ClientConfig = {
      forcePathStyle: o.forcePathStyle,
      maxAttempts: o.maxAttempts,
      retryMode: 'standard',
      requestChecksumCalculation: o.checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
      responseChecksumValidation: o.checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
      requestHandler: new NodeHttpHandler({
        connectionTimeout: o.connectTimeoutMs,
        requestTimeout: o.requestTimeoutMs,
        throwOnRequestTimeout: true,
        httpAgent: agent,
        httpsAgent: agent as https.Agent,
      }),
    };
    if (o.endpoint !== undefined) config.endpoint = o.endpoint;
    if (o.region !== undefined) config.region = o.region;
    if (o.credentials !== undefined) config.credentials = o.credentials;
    const client = new S3Client(config);
    client.middlewareStack.add(payloadHashOffThread, { step: 'build', name: 'dicomVaultPayloadHash' });
    const store = new S3BlockStore(client, agent, index, o);
    try {
      await store.#checkBucket(o.endpoint ?? `AWS S3 (${o.region ?? 'default region'})`);
      if (o.probeWrite) await store.#probeWrite();
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
    if (this.#writer !== undefined && bytes.byteLength < this.#multipartThreshold) {
      if (this.#closed) throw closedError();
      await this.#writer.put(cid, bytes, options);
      return;
    }
    const key = this.key(cid);
    await this.#run('put', { cid }, options.signal, (abortSignal) => this.#putBody(key, bytes, abortSignal));
  }

  /** One object: a single PutObject, or a multipart upload from the multipart threshold on. */
  async #putBody(key: string, body: Uint8Array, abortSignal: AbortSignal): Promise<void> {
    if (body.byteLength >= this.#multipartThreshold) {
      await this.#putMultipart(key, body, abortSignal);
      return;
    }
    await this.client.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.byteLength, ContentType: 'application/octet-stream' }),
      { abortSignal },
    );
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
        const failure = this.#failure(err instanceof RangeReadFailure ? err.cause : err, 'get', { cid, pack: packed.pack }, signal, timedOut);
        // Compaction moved the block (and deleted its old pack) since it was looked up: read it where it is now.
        if (isVaultError(failure, 'BLOCK_NOT_FOUND') && this.#moved(cid, packed.pack)) return this.get(cid, options);
        throw failure;
      }
    }
    const key = this.key(cid);
    return this.#run('get', { cid }, signal, async (abortSignal) => {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal });
      const length = res.ContentLength;
      if (length === undefined) throw new Error('GetObject response has no Content-Length');
      if (length >= this.#multipartThreshold) {
        // Large block: drop this response's body and read it as parallel ranges instead.
        destroyBody(res.Body);
        return this.#getRanged(key, length, res.ETag, abortSignal);
      }
      const out = new Uint8Array(length);
      await readBodyInto(res.Body, out, 0, length, abortSignal);
      return out;
    });
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

  /**
   * Adds to the index every pack in the bucket that it lacks, from the pack's own header (one
   * ranged GET of its head, two when the header outgrew the room the writer keeps for it): after
   * the index file was lost, or restored from a backup older than the bucket. Packs indexed
   * already are left as they are, so it can run again, and beside a serving node: a pack it finds
   * between its upload and its writer's landing is counted once by both (PackIndex.land).
   *
   * It brings back what the headers list and the index had dropped: blocks deleted after their
   * pack landed, and orphan packs (uploaded, never indexed). Neither is referenced by a study, so
   * both are garbage that is readable again, not a wrong answer (storage/README.md, "Index
   * rebuild", names the one race left). Nothing is deleted. An object that is not a readable
   * pack is reported and skipped; a store failure stops the rebuild (what was indexed stays:
   * running it again goes on from there).
   */
  async rebuildIndex(options: AbortOptions = {}): Promise<IndexRebuildReport> {
    const { signal } = options;
    const index = this.#index;
    if (index === undefined) throw new VaultError('CONFIG_INVALID', 'this S3 store has no pack index to rebuild (no index path)');
    const report: IndexRebuildReport = { objects: 0, known: 0, indexed: 0, blocks: 0, redundant: 0, gone: 0, unreadable: [] };
    const packsPrefix = this.packKey('');
    let token: string | undefined;
    do {
      const page = await this.#run('list', {}, signal, (abortSignal) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: packsPrefix, ...(token === undefined ? {} : { ContinuationToken: token }) }), { abortSignal }),
      );
      const objects = page.Contents ?? [];
      report.objects += objects.length;
      await mapLimit(objects.length, REBUILD_CONCURRENCY, async (i) => {
        const key = objects[i]!.Key!;
        const id = key.slice(packsPrefix.length);
        if (index.hasPack(id)) {
          report.known++;
          return;
        }
        const size = objects[i]!.Size ?? 0;
        let landed: LandedBlock[];
        try {
          landed = await this.#readPackEntries(id, size, signal);
        } catch (err) {
          if (isVaultError(err, 'BLOCK_NOT_FOUND')) report.gone++;
          else if (isVaultError(err, 'BLOCK_CORRUPT')) report.unreadable.push({ key, reason: err.message });
          else throw err;
          return;
        }
        const live = index.land(id, size, landed, objects[i]!.LastModified?.getTime() ?? Date.now());
        if (live === 0) report.redundant++;
        else {
          report.indexed++;
          report.blocks += live;
        }
      });
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    report.unreadable.sort((a, b) => (a.key < b.key ? -1 : 1));
    return report;
  }

  /** Pack objects the index knows, and their bytes (gc reports them before and after). */
  packTotals(): { packs: number; bytes: number } {
    if (this.#index === undefined) throw new VaultError('CONFIG_INVALID', 'this S3 store has no pack index (no index path)');
    return this.#index.totals();
  }

  /**
   * Rewrites every pack whose live blocks fill at most `maxLiveFraction` of it (default half):
   * its live blocks are read and re-hashed, uploaded as a new pack, the index points them there
   * (one transaction; a block deleted meanwhile stays deleted), and the old pack object is
   * deleted. A reader that looked a block up before the move and finds the old pack gone looks
   * again (get, has). The new pack keeps the old one's landing time, so gc's grace is unchanged
   * for what it holds. A pack with a block that cannot be read intact is left for verify to name.
   */
  async compact(options: AbortOptions & { maxLiveFraction?: number } = {}): Promise<CompactReport> {
    const { signal } = options;
    const index = this.#index;
    if (index === undefined) throw new VaultError('CONFIG_INVALID', 'compaction needs the pack index (no index path)');
    const report: CompactReport = { packs: 0, blocks: 0, bytesBefore: 0, bytesAfter: 0, skipped: [] };
    for (const sparse of index.sparsePacks(options.maxLiveFraction ?? DEFAULT_COMPACT_MAX_LIVE)) {
      throwIfAborted(signal);
      const rows = index.following(sparse.id, 0, Number.MAX_SAFE_INTEGER);
      let blocks: Array<{ cid: CID; bytes: Uint8Array }>;
      try {
        blocks = [];
        for (const row of rows) {
          const cid = CID.decode(row.cid);
          blocks.push({ cid, bytes: await getVerified(this, cid, options) });
        }
      } catch (err) {
        if (!isVaultError(err, 'BLOCK_CORRUPT') && !isVaultError(err, 'BLOCK_NOT_FOUND')) throw err;
        report.skipped.push({ key: this.packKey(sparse.id), reason: err.message });
        continue;
      }
      const { body, entries, dataStart } = buildPack(blocks);
      const id = newPackId();
      await this.#uploadPack(id, body, signal ?? this.#closing.signal);
      const landed = landedBlocks(entries, dataStart);
      const { moved, fromLive } = index.repoint(sparse.id, id, body.byteLength, sparse.created, landed);
      if (moved === 0) await this.#deleteObject(this.packKey(id), signal).catch(() => undefined); // all deleted meanwhile: garbage
      if (fromLive === 0) await this.#deleteDeadPack(sparse.id, signal);
      report.packs++;
      report.blocks += moved;
      report.bytesBefore += sparse.bytes;
      report.bytesAfter += (moved > 0 ? body.byteLength : 0) + (fromLive > 0 ? sparse.bytes : 0);
    }
    report.skipped.sort((a, b) => (a.key < b.key ? -1 : 1));
    return report;
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

  /** Where a pack's header says its blocks are. BLOCK_CORRUPT if it is not a pack, BLOCK_NOT_FOUND if it is gone. */
  async #readPackEntries(id: string, size: number, signal: AbortSignal | undefined): Promise<LandedBlock[]> {
    const key = this.packKey(id);
    if (size < PACK_PREAMBLE_BYTES) throw new VaultError('BLOCK_CORRUPT', `${key}: only ${size} bytes, not a pack`);
    let head = await this.#readHead(id, Math.min(size, PACK_PREAMBLE_BYTES + DEFAULT_HEADER_RESERVE), signal);
    const dataStart = packDataStart(head, key);
    if (dataStart > size) throw new VaultError('BLOCK_CORRUPT', `${key}: its header of ${dataStart} bytes runs past its ${size} bytes`);
    if (dataStart > head.byteLength) head = await this.#readHead(id, dataStart, signal);
    const { entries } = decodePackHeader(head.subarray(0, dataStart), size - dataStart, key);
    return landedBlocks(entries, dataStart);
  }

  /** The first `bytes` bytes of a pack. */
  async #readHead(id: string, bytes: number, signal: AbortSignal | undefined): Promise<Uint8Array> {
    return this.#run('get', { pack: id }, signal, async (abortSignal) => {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.packKey(id), Range: `bytes=0-${bytes - 1}` }), { abortSignal });
      const body = await res.Body!.transformToByteArray();
      if (body.byteLength !== bytes) throw new VaultError('BLOCK_CORRUPT', `${this.packKey(id)}: asked for its first ${bytes} bytes, got ${body.byteLength}`);
      return body;
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

  /**
   * Runs one store call with the caller's signal and the overall deadline, and turns whatever
   * it throws into the catalogue's errors.
   */
  async #run<T>(op: Operation, subject: Subject, signal: AbortSignal | undefined, fn: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    if (signal?.aborted === true) throw abortError(signal);
    const deadline = AbortSignal.timeout(this.#operationTimeoutMs);
    const abortSignal = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
    try {
      return await fn(abortSignal);
    } catch (err) {
      throw this.#failure(err, op, subject, signal, deadline.aborted);
    }
  }

  #failure(err: unknown, op: Operation, subject: Subject, signal: AbortSignal | undefined, timedOut: boolean): VaultError {
    if (err instanceof VaultError) return err;
    if (signal?.aborted === true) return abortError(signal);
    const { cid, pack } = subject;
    const what = cid !== undefined ? `${op} block ${cid}` : pack !== undefined ? `${op} pack ${this.packKey(pack)}` : `${op} in s3://${this.bucket}/${this.prefix}`;
    const details: Record<string, unknown> = { bucket: this.bucket };
    if (cid !== undefined) details.cid = cid.toString();
    if (pack !== undefined) details.pack = pack;
    if (timedOut) {
      return new VaultError('STORE_UNAVAILABLE', `S3 ${what}: no answer within ${this.#operationTimeoutMs} ms`, { cause: err, details });
    }
    const status = httpStatus(err);
    const code = s3Code(err);
    if (status !== undefined) details.status = status;
    if (code !== undefined) details.s3Code = code;
    // Only the server saying this key does not exist means a missing block; a 404 for the
    // bucket (NoSuchBucket) or any other status is the store's failure. (A zero-length packed
    // block is checked with a HEAD, whose 404 has no code.)
    if (op === 'get' && status === 404 && (code === 'NoSuchKey' || (pack !== undefined && code === 'NotFound'))) {
      const where = pack === undefined ? '' : ` (its pack ${this.packKey(pack)} is missing)`;
      return new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found${where}`, { cause: err, details });
    }
    const reason = [status, code ?? errorName(err)].filter((v) => v !== undefined).join(' ');
    return new VaultError('STORE_UNAVAILABLE', `S3 ${what} failed: ${reason}`, { cause: err, details });
  }

  async #uploadPack(id: string, body: Uint8Array, signal: AbortSignal): Promise<void> {
    const key = this.packKey(id);
    await this.#run('put', { pack: id }, signal, (abortSignal) => this.#putBody(key, body, abortSignal));
  }

  /** Bytes [start, end) of a pack, streamed into the targets' buffers. */
  async #readPackRange(pack: string, start: number, end: number, targets: readonly SpanTarget[], signal: AbortSignal): Promise<void> {
    const deadline = AbortSignal.timeout(this.#operationTimeoutMs);
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

  async #checkBucket(where: string): Promise<void> {
    const deadline = AbortSignal.timeout(this.#operationTimeoutMs);
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: deadline });
    } catch (err) {
      const status = httpStatus(err);
      const details = { bucket: this.bucket, endpoint: where, ...(status === undefined ? {} : { status }) };
      if (status === 404) {
        throw new VaultError('CONFIG_INVALID', `S3 bucket "${this.bucket}" does not exist at ${where}`, { cause: err, details });
      }
      if (status === 403 || status === 401) {
        throw new VaultError(
          'CONFIG_INVALID',
          `S3 refused access to bucket "${this.bucket}" at ${where} (${status}): check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and the bucket's policy`,
          { cause: err, details },
        );
      }
      if (errorName(err) === 'CredentialsProviderError') {
        throw new VaultError('CONFIG_INVALID', `no S3 credentials found: ${errorMessage(err)}`, { cause: err, details });
      }
      if (status === 301 || status === 400) {
        throw new VaultError('CONFIG_INVALID', `S3 bucket "${this.bucket}" at ${where} answered ${status}: check the region and path-style settings`, { cause: err, details });
      }
      const reason = deadline.aborted ? `no answer within ${this.#operationTimeoutMs} ms` : [status, s3Code(err) ?? errorName(err)].filter((v) => v !== undefined).join(' ');
      throw new VaultError('STORE_UNAVAILABLE', `cannot reach S3 bucket "${this.bucket}" at ${where}: ${reason}`, { cause: err, details });
    }
  }

  async #probeWrite(): Promise<void> {
    const key = `${this.prefix}.write-probe-${randomUUID()}`;
    await this.#run('put', {}, undefined, async (abortSignal) => {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: new Uint8Array(0), ContentLength: 0 }), { abortSignal });
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal });
    }).catch((err: unknown) => {
      const status = err instanceof VaultError ? err.details?.status : undefined;
      if (status === 403) {
        throw new VaultError('CONFIG_INVALID', `S3 bucket "${this.bucket}" is readable but refuses writes (403): the credentials lack s3:PutObject or s3:DeleteObject`, {
          cause: err,
          details: { bucket: this.bucket, status },
        });
      }
      throw err;
    });
  }

  async #putMultipart(key: string, bytes: Uint8Array, abortSignal: AbortSignal): Promise<void> {
    const created = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: 'application/octet-stream' }), { abortSignal });
    const uploadId = created.UploadId;
    if (uploadId === undefined) throw new Error('CreateMultipartUpload returned no UploadId');
    try {
      const count = Math.ceil(bytes.byteLength / this.#partSize);
      const parts = await mapLimit(count, this.#partConcurrency, async (i) => {
        const body = bytes.subarray(i * this.#partSize, Math.min(bytes.byteLength, (i + 1) * this.#partSize));
        const res = await this.client.send(
          new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: i + 1, Body: body, ContentLength: body.byteLength }),
          { abortSignal },
        );
        return { PartNumber: i + 1, ETag: res.ETag };
      });
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
        { abortSignal },
      );
    } catch (err) {
      // Best effort, without the (possibly aborted) signal: left alone, the parts are billed
      // until a lifecycle rule removes them. The original error is the one to report.
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }), { abortSignal: AbortSignal.timeout(this.#operationTimeoutMs) }).catch(() => undefined);
      throw err;
    }
  }

  async #getRanged(key: string, length: number, etag: string | undefined, abortSignal: AbortSignal): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    const count = Math.ceil(length / this.#partSize);
    await mapLimit(count, this.#partConcurrency, async (i) => {
      const start = i * this.#partSize;
      const end = Math.min(length, start + this.#partSize) - 1;
      // IfMatch: a block object never changes, but if something rewrote it meanwhile, the
      // parts must not come from two different objects.
      const res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end}`, ...(etag === undefined ? {} : { IfMatch: etag }) }),
        { abortSignal },
      );
      if (res.ContentLength !== end - start + 1) {
        destroyBody(res.Body);
        throw new Error(`ranged GET of bytes ${start}-${end} returned ${res.ContentLength} bytes`);
      }
      await readBodyInto(res.Body, out, start, end + 1, abortSignal);
      return undefined;
    });
    return out;
  }
}

function validate(options: S3BlockStoreOptions) {
  const invalid = (reason: string): VaultError => new VaultError('CONFIG_INVALID', `S3 store: ${reason}`);
  if (typeof options.bucket !== 'string' || !/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(options.bucket)) {
    throw invalid(`bucket must be a bucket name (got ${JSON.stringify(options.bucket)})`);
  }
  if (options.endpoint !== undefined) {
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch (cause) {
      throw new VaultError('CONFIG_INVALID', `S3 store: endpoint is not a URL: ${options.endpoint}`, { cause });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(`endpoint must be http(s) (got ${options.endpoint})`);
  }
  const prefix = options.prefix ?? DEFAULT_S3_PREFIX;
  if (prefix.startsWith('/')) throw invalid('prefix must not start with "/"');
  const checksums = options.checksums ?? 'when_supported';
  if (checksums !== 'when_supported' && checksums !== 'when_required') throw invalid(`checksums must be when_supported or when_required (got ${String(checksums)})`);
  const int = (name: string, value: number | undefined, fallback: number, min: number, max: number): number => {
    const v = value ?? fallback;
    if (!Number.isInteger(v) || v < min || v > max) throw invalid(`${name} must be an integer from ${min} to ${max} (got ${v})`);
    return v;
  };
  const partSize = int('partSize', options.partSize, DEFAULT_S3_PART_SIZE, MIN_PART_SIZE, 5 * 1024 ** 3);
  const packBytes = int('packBytes', options.packBytes, DEFAULT_PACK_BYTES, 0, 1024 ** 3);
  const indexPath = options.indexPath;
  if (indexPath !== undefined && (typeof indexPath !== 'string' || indexPath === '')) throw invalid('indexPath must be a file path');
  if (packBytes > 0 && indexPath === undefined) {
    throw invalid('packing blocks (packBytes > 0, the default) needs indexPath, the local index of the packs; set packBytes to 0 for one object per block');
  }
  return {
    ...options,
    prefix,
    checksums,
    forcePathStyle: options.forcePathStyle ?? false,
    probeWrite: options.probeWrite ?? true,
    maxAttempts: int('maxAttempts', options.maxAttempts, DEFAULT_S3_MAX_ATTEMPTS, 1, 20),
    connectTimeoutMs: int('connectTimeoutMs', options.connectTimeoutMs, DEFAULT_S3_CONNECT_TIMEOUT_MS, 1, 600_000),
    requestTimeoutMs: int('requestTimeoutMs', options.requestTimeoutMs, DEFAULT_S3_REQUEST_TIMEOUT_MS, 1, 3_600_000),
    operationTimeoutMs: int('operationTimeoutMs', options.operationTimeoutMs, DEFAULT_S3_OPERATION_TIMEOUT_MS, 1, 24 * 3_600_000),
    maxSockets: int('maxSockets', options.maxSockets, DEFAULT_S3_MAX_SOCKETS, 1, 4096),
    multipartThreshold: int('multipartThreshold', options.multipartThreshold, DEFAULT_S3_MULTIPART_THRESHOLD, partSize, 5 * 1024 ** 3),
    partSize,
    partConcurrency: int('partConcurrency', options.partConcurrency, DEFAULT_S3_PART_CONCURRENCY, 1, 64),
    indexPath,
    packBytes,
    packUploads: int('packUploads', options.packUploads, DEFAULT_PACK_UPLOADS, 1, 64),
    readSpan: int('readSpan', options.readSpan, DEFAULT_READ_SPAN, 0, 1024 ** 3),
    readCacheBytes: int('readCacheBytes', options.readCacheBytes, DEFAULT_READ_CACHE_BYTES, 0, 16 * 1024 ** 3),
  };
}

/** `p-<ms, base36, fixed width>-<64 random bits>`: listed in time order, unique without coordination. */
function newPackId(): string {
  return `p-${Date.now().toString(36).padStart(9, '0')}-${randomBytes(8).toString('hex')}`;
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

/**
 * Streams a ranged response body covering [start, end) of an object into the targets' own
 * buffers (bytes between targets are skipped). A body that ends early or runs long is an error.
 */
async function readBodyIntoTargets(body: unknown, start: number, end: number, targets: readonly SpanTarget[], signal: AbortSignal): Promise<void> {
  if (body === undefined || body === null) throw new Error('response has no body');
  let at = start;
  let t = 0;
  try {
    for await (const piece of body as AsyncIterable<Uint8Array>) {
      if (at + piece.byteLength > end) throw new Error('response body is longer than its Content-Length');
      let p = 0;
      while (p < piece.byteLength) {
        while (t < targets.length && targets[t]!.start + targets[t]!.size <= at) t++;
        const target = targets[t];
        if (target === undefined) {
          at += piece.byteLength - p;
          break;
        }
        if (at < target.start) {
          const skip = Math.min(target.start - at, piece.byteLength - p);
          p += skip;
          at += skip;
          continue;
        }
        const n = Math.min(target.start + target.size - at, piece.byteLength - p);
        target.out.set(piece.subarray(p, p + n), at - target.start);
        p += n;
        at += n;
      }
    }
  } catch (err) {
    destroyBody(body);
    if (signal.aborted) throw signal.reason;
    throw err;
  }
  if (at !== end) throw new Error(`response body ended after ${at - start} of ${end - start} bytes`);
}

/**
 * Copies a response body into `out` at `offset`, streaming (no concatenation). A body that ends
 * early or runs long is an error: a truncated block must never pass for a stored one.
 */
async function readBodyInto(body: unknown, out: Uint8Array, offset: number, end: number, signal: AbortSignal): Promise<void> {
  if (body === undefined || body === null) {
    if (offset === end) return;
    throw new Error('response has no body');
  }
  let at = offset;
  try {
    for await (const piece of body as AsyncIterable<Uint8Array>) {
      if (at + piece.byteLength > end) throw new Error('response body is longer than its Content-Length');
      out.set(piece, at);
      at += piece.byteLength;
    }
  } catch (err) {
    destroyBody(body);
    if (signal.aborted) throw signal.reason;
    throw err;
  }
  if (at !== end) throw new Error(`response body ended after ${at - offset} of ${end - offset} bytes`);
}

/**
 * Sets the SigV4 payload hash (x-amz-content-sha256, which the server checks against the body)
 * of every request with an in-memory body (PutObject, UploadPart), computed on libuv's thread
 * pool by WebCrypto; the SDK would hash the body on the main thread: 1.6 of the node's 8.4 CPU-s
 * per GiB ingested (profiled, 1 GiB study, packed). The signer uses a header already set as is
 * (@smithy/signature-v4 getPayloadHash); streamed bodies and headers set by the SDK's own
 * checksum middleware are left alone. Runs once per call (the build step comes before retries),
 * and WebCrypto copies the bytes first, so a pack buffer reused later is safe.
 */
const payloadHashOffThread: BuildMiddleware<ServiceInputTypes, ServiceOutputTypes> = (next) => async (args) => {
  const { request } = args as { request?: { headers?: Record<string, string>; body?: unknown } };
  const body = request?.body;
  if (request?.headers !== undefined && body instanceof Uint8Array && request.headers['x-amz-content-sha256'] === undefined) {
    request.headers['x-amz-content-sha256'] = Buffer.from(await crypto.subtle.digest('SHA-256', body)).toString('hex');
  }
  return next(args);
};

function destroyBody(body: unknown): void {
  if (body !== null && typeof body === 'object' && 'destroy' in body && typeof body.destroy === 'function') body.destroy();
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

function httpStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null || !('$metadata' in err)) return undefined;
  const meta = err.$metadata as { httpStatusCode?: unknown } | undefined;
  return typeof meta?.httpStatusCode === 'number' ? meta.httpStatusCode : undefined;
}

/** The S3 error code (NoSuchKey, AccessDenied, SlowDown...), when the server sent one. */
function s3Code(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = 'Code' in err && typeof err.Code === 'string' ? err.Code : undefined;
  if (code !== undefined) return code;
  return httpStatus(err) !== undefined && err instanceof Error ? err.name : undefined;
}

function errorName(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? err.name : 'unknown error';
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : 'unknown error';
}

/** Runs fn(0..count-1) with at most `limit` running; the first failure rejects (after all settle). */
async function mapLimit<T>(count: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const results = new Array<T>(count);
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < count) {
      const i = next++;
      try {
        results[i] = await fn(i);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  if (failure !== undefined) throw failure.err;
  return results;
}
