// Chooses the block backend from one setting: `--store fs|ipfs|s3` (DICOM_VAULT_STORE), with the
// backend's own settings from the environment. Ingest and retrieval only ever see a BlockStore.
//
// The IPFS and S3 backends are imported on demand, so a node on local disk never loads helia,
// libp2p or the AWS SDK.
import { join } from 'node:path';
import { VaultError } from '../src/core/errors.ts';
import type { BlockStore } from './block-store.ts';
import type { FsBlockStoreOptions } from './fs.ts';
import type { IpfsBlockStoreOptions } from './ipfs.ts';
import type { S3BlockStoreOptions, S3ChecksumMode } from './s3/store.ts';

export const STORE_KINDS = ['fs', 'ipfs', 's3'] as const;
export type StoreKind = (typeof STORE_KINDS)[number];

/** Below the data directory: where the fs backend keeps blocks and the IPFS backend its repo. */
export const FS_BLOCKS_DIR = 'blocks';
export const IPFS_REPO_DIR = 'ipfs';
/** In the data directory: the S3 backend's index of which pack object holds each block. */
export const S3_INDEX_FILE = 's3-index.db';

export type BlockStoreConfig =
  | { kind: 'fs'; fs: FsBlockStoreOptions }
  | { kind: 'ipfs'; ipfs: IpfsBlockStoreOptions }
  | { kind: 's3'; s3: S3BlockStoreOptions };

/**
 * The environment variables read for each backend (besides DICOM_VAULT_STORE). The AWS SDK's own
 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION,
 * AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, ...) apply as usual.
 */
export const STORE_ENV = {
  s3: {
    DICOM_VAULT_S3_BUCKET: 'bucket holding the blocks (required; it must exist)',
    DICOM_VAULT_S3_ENDPOINT: 'endpoint URL of an S3-compatible server (default: AWS S3)',
    DICOM_VAULT_S3_PREFIX: 'key prefix of block objects (default blocks/)',
    DICOM_VAULT_S3_REGION: 'region (default: AWS_REGION, AWS_DEFAULT_REGION, then the profile)',
    DICOM_VAULT_S3_FORCE_PATH_STYLE: 'true|false: path-style URLs (default true when an endpoint is set, else false)',
    DICOM_VAULT_S3_CHECKSUMS: 'when_supported|when_required (default when_supported; Swift, Ceph RGW and some MinIO need when_required)',
    DICOM_VAULT_S3_MAX_ATTEMPTS: 'attempts per request, with backoff (default 4)',
    DICOM_VAULT_S3_REQUEST_TIMEOUT_MS: 'milliseconds per attempt (default 30000)',
    DICOM_VAULT_S3_OPERATION_TIMEOUT_MS: 'milliseconds per block operation, retries included (default 120000)',
    DICOM_VAULT_S3_PACK_BYTES: 'bytes of blocks packed into one object, indexed in <data-dir>/s3-index.db (default 8388608 = 8 MiB; 0: one object per block)',
    DICOM_VAULT_S3_READ_SPAN: 'bytes one ranged GET of a pack covers: the block asked for and those after it (default 4194304 = 4 MiB; 0: one block per GET)',
  },
  ipfs: {
    DICOM_VAULT_IPFS_NETWORK: 'true|false: join the public libp2p network (default false: offline)',
    DICOM_VAULT_IPFS_LISTEN: 'with the network: comma-separated multiaddrs to listen on (default /ip4/0.0.0.0/tcp/0,/ip6/::/tcp/0)',
    DICOM_VAULT_IPFS_BOOTSTRAP: 'with the network: comma-separated multiaddrs of bootstrap peers, or none (default: the public IPFS bootstrap nodes)',
  },
} as const;

export function isStoreKind(value: string): value is StoreKind {
  return (STORE_KINDS as readonly string[]).includes(value);
}

/**
 * The backend's configuration from `kind`, the data directory and the environment. Throws
 * CONFIG_INVALID naming the variable at fault. Nothing is contacted here: `openBlockStore`
 * does that, at start-up.
 */
export function resolveBlockStoreConfig(kind: string, dataDir: string, env: NodeJS.ProcessEnv = process.env): BlockStoreConfig {
  switch (kind) {
    case 'fs':
      return { kind, fs: { path: join(dataDir, FS_BLOCKS_DIR) } };
    case 'ipfs':
      return { kind, ipfs: resolveIpfs(env, dataDir) };
    case 's3':
      return { kind, s3: resolveS3(env, dataDir) };
    default:
      throw new VaultError('CONFIG_INVALID', `--store must be one of ${STORE_KINDS.join(', ')} (got "${kind}")`);
  }
}

function resolveIpfs(env: NodeJS.ProcessEnv, dataDir: string): IpfsBlockStoreOptions {
  const options: IpfsBlockStoreOptions = { path: join(dataDir, IPFS_REPO_DIR), network: bool(env, 'DICOM_VAULT_IPFS_NETWORK') ?? false };
  const listen = list(env, 'DICOM_VAULT_IPFS_LISTEN');
  if (listen !== undefined) options.listen = listen;
  const bootstrap = list(env, 'DICOM_VAULT_IPFS_BOOTSTRAP');
  if (bootstrap !== undefined) options.bootstrap = bootstrap.length === 1 && bootstrap[0] === 'none' ? [] : bootstrap;
  return options;
}

function resolveS3(env: NodeJS.ProcessEnv, dataDir: string): S3BlockStoreOptions {
  const bucket = env.DICOM_VAULT_S3_BUCKET;
  if (bucket === undefined || bucket === '') {
    throw new VaultError('CONFIG_INVALID', '--store s3 needs DICOM_VAULT_S3_BUCKET (the bucket must exist)');
  }
  const endpoint = nonEmpty(env.DICOM_VAULT_S3_ENDPOINT);
  const options: S3BlockStoreOptions = {
    bucket,
    forcePathStyle: bool(env, 'DICOM_VAULT_S3_FORCE_PATH_STYLE') ?? endpoint !== undefined,
    // Always, even with packing off: packs written earlier stay readable.
    indexPath: join(dataDir, S3_INDEX_FILE),
  };
  if (endpoint !== undefined) options.endpoint = endpoint;
  const prefix = env.DICOM_VAULT_S3_PREFIX;
  if (prefix !== undefined) options.prefix = prefix;
  const region = nonEmpty(env.DICOM_VAULT_S3_REGION) ?? nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION);
  if (region !== undefined) options.region = region;
  const checksums = nonEmpty(env.DICOM_VAULT_S3_CHECKSUMS);
  if (checksums !== undefined) {
    if (checksums !== 'when_supported' && checksums !== 'when_required') {
      throw new VaultError('CONFIG_INVALID', `DICOM_VAULT_S3_CHECKSUMS must be when_supported or when_required (got "${checksums}")`);
    }
    options.checksums = checksums satisfies S3ChecksumMode;
  }
  const maxAttempts = int(env, 'DICOM_VAULT_S3_MAX_ATTEMPTS');
  if (maxAttempts !== undefined) options.maxAttempts = maxAttempts;
  const requestTimeoutMs = int(env, 'DICOM_VAULT_S3_REQUEST_TIMEOUT_MS');
  if (requestTimeoutMs !== undefined) options.requestTimeoutMs = requestTimeoutMs;
  const operationTimeoutMs = int(env, 'DICOM_VAULT_S3_OPERATION_TIMEOUT_MS');
  if (operationTimeoutMs !== undefined) options.operationTimeoutMs = operationTimeoutMs;
  const packBytes = int(env, 'DICOM_VAULT_S3_PACK_BYTES');
  if (packBytes !== undefined) options.packBytes = packBytes;
  const readSpan = int(env, 'DICOM_VAULT_S3_READ_SPAN');
  if (readSpan !== undefined) options.readSpan = readSpan;
  // Taken from the environment given (not only process.env) so a test or an embedding program
  // can configure a store without touching the process's environment. Without them the SDK's
  // default chain (profiles, SSO, web identity, instance role) applies.
  const accessKeyId = nonEmpty(env.AWS_ACCESS_KEY_ID);
  const secretAccessKey = nonEmpty(env.AWS_SECRET_ACCESS_KEY);
  if (accessKeyId !== undefined && secretAccessKey !== undefined) {
    const sessionToken = nonEmpty(env.AWS_SESSION_TOKEN);
    options.credentials = { accessKeyId, secretAccessKey, ...(sessionToken === undefined ? {} : { sessionToken }) };
  } else if (accessKeyId !== undefined || secretAccessKey !== undefined) {
    throw new VaultError('CONFIG_INVALID', 'AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together');
  }
  return options;
}

/** Opens (and for S3, checks) the configured backend. Errors as each backend's `open`. */
export async function openBlockStore(config: BlockStoreConfig): Promise<BlockStore> {
  switch (config.kind) {
    case 'fs': {
      const { FsBlockStore } = await import('./fs.ts');
      return FsBlockStore.open(config.fs);
    }
    case 'ipfs': {
      const { IpfsBlockStore } = await import('./ipfs.ts');
      return IpfsBlockStore.open(config.ipfs);
    }
    case 's3': {
      const { S3BlockStore } = await import('./s3/store.ts');
      return S3BlockStore.open(config.s3);
    }
  }
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function bool(env: NodeJS.ProcessEnv, name: string): boolean | undefined {
  const raw = nonEmpty(env[name])?.toLowerCase();
  if (raw === undefined) return undefined;
  if (raw === 'true' || raw === '1' || raw === 'yes') return true;
  if (raw === 'false' || raw === '0' || raw === 'no') return false;
  throw new VaultError('CONFIG_INVALID', `${name} must be true or false (got "${env[name]}")`);
}

/** A comma-separated list (multiaddrs: they contain no comma); undefined when unset. */
function list(env: NodeJS.ProcessEnv, name: string): string[] | undefined {
  const raw = nonEmpty(env[name]);
  if (raw === undefined) return undefined;
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (items.length === 0) throw new VaultError('CONFIG_INVALID', `${name} must list at least one multiaddr (got "${raw}")`);
  return items;
}

function int(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = nonEmpty(env[name]);
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw)) throw new VaultError('CONFIG_INVALID', `${name} must be a whole number (got "${raw}")`);
  return Number(raw);
}
