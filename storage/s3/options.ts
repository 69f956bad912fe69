// The S3 block store's options: their defaults, their validation (every bad value is
// CONFIG_INVALID before anything is opened), and where objects go in the bucket.
import { randomBytes } from 'node:crypto';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { VaultError } from '../../src/core/errors.ts';
import { DEFAULT_PACK_BYTES, DEFAULT_PACK_UPLOADS } from './pack-writer.ts';
import { DEFAULT_READ_CACHE_BYTES, DEFAULT_READ_SPAN } from './span-reader.ts';

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
export const PACKS_DIR = 'packs/';

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

/** The options with every default filled in, checked. */
export type Validated = ReturnType<typeof validate>;

export function validate(options: S3BlockStoreOptions) {
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
  if (checksums !== 'when_supported' && checksums !== 'when_required')
    throw invalid(`checksums must be when_supported or when_required (got ${String(checksums)})`);
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
export function newPackId(): string {
  return `p-${Date.now().toString(36).padStart(9, '0')}-${randomBytes(8).toString('hex')}`;
}
