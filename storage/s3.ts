// Blocks in any S3-compatible object store (AWS S3, Ceph RGW, Swift s3api, MinIO, R2): one object
// per block at `<prefix><CID base32>`. Content addressing makes every write idempotent (a
// re-put writes identical bytes) and S3's PUT is atomic, so there are no temp objects, no
// renames and no locks: a reader sees the whole block or a 404.
//
// Throughput comes from concurrency, not from this module: ingest keeps several block puts in
// flight per instance and the reader reads ahead, and this store gives them a keep-alive socket
// pool wide enough to run them in parallel. Blocks larger than `multipartThreshold` (a chunk size
// configured far above the default 1 MiB) go up as a multipart upload with parallel parts and
// come back with parallel ranged GETs.
//
// Errors: only a 404 NoSuchKey is "absent". A 403, a missing bucket, a 5xx after the retries, a
// timeout or a refused connection is STORE_UNAVAILABLE with the SDK's error as `cause`. Retries
// (with exponential backoff and jitter, longer for throttling) are the SDK's standard strategy;
// every call also has an overall deadline so that a slow server fails a request within a bound.
import http from 'node:http';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
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
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { CID } from 'multiformats/cid';
import { VaultError, abortError } from '../src/errors.ts';
import type { AbortOptions, BlockStore, PutOptions } from './block-store.ts';

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
}

type Operation = 'put' | 'get' | 'check' | 'delete' | 'list';

export class S3BlockStore implements BlockStore {
  readonly bucket: string;
  readonly prefix: string;
  readonly client: S3Client;
  readonly #agent: http.Agent;
  readonly #operationTimeoutMs: number;
  readonly #multipartThreshold: number;
  readonly #partSize: number;
  readonly #partConcurrency: number;

  private constructor(client: S3Client, agent: http.Agent, bucket: string, prefix: string, o: Required<Pick<S3BlockStoreOptions, 'operationTimeoutMs' | 'multipartThreshold' | 'partSize' | 'partConcurrency'>>) {
    this.client = client;
    this.#agent = agent;
    this.bucket = bucket;
    this.prefix = prefix;
    this.#operationTimeoutMs = o.operationTimeoutMs;
    this.#multipartThreshold = o.multipartThreshold;
    this.#partSize = o.partSize;
    this.#partConcurrency = o.partConcurrency;
  }

  /**
   * Connects and checks the bucket before any block is stored. Throws CONFIG_INVALID for bad
   * options, missing credentials, a missing bucket or refused access (wrong key or secret, no
   * permission), and STORE_UNAVAILABLE when the endpoint cannot be reached or keeps failing.
   */
  static async open(options: S3BlockStoreOptions): Promise<S3BlockStore> {
    const o = validate(options);
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
    const store = new S3BlockStore(client, agent, o.bucket, o.prefix, o);
    try {
      await store.#checkBucket(o.endpoint ?? `AWS S3 (${o.region ?? 'default region'})`);
      if (o.probeWrite) await store.#probeWrite();
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  /** Does not hash `bytes` (ingest has just computed the CID from them); reads are verified. */
  async put(cid: CID, bytes: Uint8Array, options: PutOptions = {}): Promise<void> {
    const key = this.key(cid);
    await this.#run('put', cid, options.signal, async (abortSignal) => {
      if (bytes.byteLength >= this.#multipartThreshold) {
        await this.#putMultipart(key, bytes, abortSignal);
        return;
      }
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: bytes, ContentLength: bytes.byteLength, ContentType: 'application/octet-stream' }),
        { abortSignal },
      );
    });
  }

  async get(cid: CID, options: AbortOptions = {}): Promise<Uint8Array> {
    const key = this.key(cid);
    return this.#run('get', cid, options.signal, async (abortSignal) => {
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

  async has(cid: CID, options: AbortOptions = {}): Promise<boolean> {
    const key = this.key(cid);
    return this.#run('check', cid, options.signal, async (abortSignal) => {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal });
        return true;
      } catch (err) {
        // A HEAD response has no body, so 404 is all there is; 403 stays an error (below).
        if (httpStatus(err) === 404) return false;
        throw err;
      }
    });
  }

  /** Idempotent: S3 answers 204 whether or not the object existed. */
  async delete(cid: CID, options: AbortOptions = {}): Promise<void> {
    const key = this.key(cid);
    await this.#run('delete', cid, options.signal, async (abortSignal) => {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal });
    });
  }

  /** Every block under the prefix; foreign keys (not a CID) are skipped. */
  async *list(options: AbortOptions = {}): AsyncGenerator<CID> {
    let token: string | undefined;
    do {
      const page = await this.#run('list', undefined, options.signal, (abortSignal) =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, ...(token === undefined ? {} : { ContinuationToken: token }) }),
          { abortSignal },
        ),
      );
      for (const object of page.Contents ?? []) {
        const cid = parseKey(object.Key, this.prefix);
        if (cid !== undefined) yield cid;
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /** Closes the idle sockets. Calls still running fail. */
  async close(): Promise<void> {
    this.client.destroy();
    this.#agent.destroy();
  }

  /** The object key of a block. */
  key(cid: CID): string {
    return `${this.prefix}${cid.toString()}`;
  }

  /**
   * Runs one store call with the caller's signal and the overall deadline, and turns whatever
   * it throws into the catalogue's errors.
   */
  async #run<T>(op: Operation, cid: CID | undefined, signal: AbortSignal | undefined, fn: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    if (signal?.aborted === true) throw abortError(signal);
    const deadline = AbortSignal.timeout(this.#operationTimeoutMs);
    const abortSignal = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
    try {
      return await fn(abortSignal);
    } catch (err) {
      throw this.#failure(err, op, cid, signal, deadline);
    }
  }

  #failure(err: unknown, op: Operation, cid: CID | undefined, signal: AbortSignal | undefined, deadline: AbortSignal): VaultError {
    if (err instanceof VaultError) return err;
    if (signal?.aborted === true) return abortError(signal);
    const what = cid === undefined ? `${op} in s3://${this.bucket}/${this.prefix}` : `${op} block ${cid}`;
    const details: Record<string, unknown> = { bucket: this.bucket };
    if (cid !== undefined) details.cid = cid.toString();
    if (deadline.aborted) {
      return new VaultError('STORE_UNAVAILABLE', `S3 ${what}: no answer within ${this.#operationTimeoutMs} ms`, { cause: err, details });
    }
    const status = httpStatus(err);
    const code = s3Code(err);
    if (status !== undefined) details.status = status;
    if (code !== undefined) details.s3Code = code;
    // Only the server saying this key does not exist means a missing block; a 404 for the
    // bucket (NoSuchBucket) or any other status is the store's failure.
    if (op === 'get' && status === 404 && code === 'NoSuchKey') {
      return new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found`, { cause: err, details });
    }
    const reason = [status, code ?? errorName(err)].filter((v) => v !== undefined).join(' ');
    return new VaultError('STORE_UNAVAILABLE', `S3 ${what} failed: ${reason}`, { cause: err, details });
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
    await this.#run('put', undefined, undefined, async (abortSignal) => {
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

function validate(options: S3BlockStoreOptions): S3BlockStoreOptions & Required<Pick<S3BlockStoreOptions, 'prefix' | 'maxAttempts' | 'connectTimeoutMs' | 'requestTimeoutMs' | 'operationTimeoutMs' | 'maxSockets' | 'multipartThreshold' | 'partSize' | 'partConcurrency' | 'probeWrite' | 'forcePathStyle' | 'checksums'>> {
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
  };
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
