// The S3 block store's side of the AWS SDK: the client it opens (its sockets, timeouts, retries
// and checksum mode), a middleware that hashes upload bodies off the main thread, and what the
// SDK's errors mean in the catalogue's terms (absent block, refused configuration, unavailable
// store). The store, the index rebuild and compaction all make their calls through runCall.
import http from 'node:http';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import { DeleteObjectCommand, HeadBucketCommand, PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import type { ServiceInputTypes, ServiceOutputTypes } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { BuildMiddleware } from '@smithy/types';
import type { CID } from 'multiformats/cid';
import { VaultError } from '../../src/core/errors.ts';
import { abortError } from '../../src/core/abort.ts';
import type { Validated } from './options.ts';

export type Operation = 'put' | 'get' | 'check' | 'delete' | 'list';

/** What a call was about, for its error message and details. */
export interface Subject {
  cid?: CID;
  pack?: string;
}

/** One bucket and prefix through one client, as the calls below need them. */
export interface S3Calls {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  readonly operationTimeoutMs: number;
  /** The object key of a pack. */
  packKey(id: string): string;
}

/** The client for validated options, over its own keep-alive agent (closed with it). */
export function createClient(o: Validated): { client: S3Client; agent: http.Agent } {
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
  return { client, agent };
}

/**
 * Runs one store call with the caller's signal and the overall deadline, and turns whatever
 * it throws into the catalogue's errors.
 */
export async function runCall<T>(
  calls: S3Calls,
  op: Operation,
  subject: Subject,
  signal: AbortSignal | undefined,
  fn: (abortSignal: AbortSignal) => Promise<T>,
): Promise<T> {
  if (signal?.aborted === true) throw abortError(signal);
  const deadline = AbortSignal.timeout(calls.operationTimeoutMs);
  const abortSignal = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
  try {
    return await fn(abortSignal);
  } catch (err) {
    throw callFailure(calls, err, op, subject, signal, deadline.aborted);
  }
}

/** What a failed call means: BLOCK_NOT_FOUND only for a missing key, else STORE_UNAVAILABLE (or the abort). */
export function callFailure(calls: S3Calls, err: unknown, op: Operation, subject: Subject, signal: AbortSignal | undefined, timedOut: boolean): VaultError {
  if (err instanceof VaultError) return err;
  if (signal?.aborted === true) return abortError(signal);
  const { cid, pack } = subject;
  const what =
    cid !== undefined ? `${op} block ${cid}` : pack !== undefined ? `${op} pack ${calls.packKey(pack)}` : `${op} in s3://${calls.bucket}/${calls.prefix}`;
  const details: Record<string, unknown> = { bucket: calls.bucket };
  if (cid !== undefined) details.cid = cid.toString();
  if (pack !== undefined) details.pack = pack;
  if (timedOut) {
    return new VaultError('STORE_UNAVAILABLE', `S3 ${what}: no answer within ${calls.operationTimeoutMs} ms`, { cause: err, details });
  }
  const status = httpStatus(err);
  const code = s3Code(err);
  if (status !== undefined) details.status = status;
  if (code !== undefined) details.s3Code = code;
  // Only the server saying this key does not exist means a missing block; a 404 for the
  // bucket (NoSuchBucket) or any other status is the store's failure. (A zero-length packed
  // block is checked with a HEAD, whose 404 has no code.)
  if (op === 'get' && status === 404 && (code === 'NoSuchKey' || (pack !== undefined && code === 'NotFound'))) {
    const where = pack === undefined ? '' : ` (its pack ${calls.packKey(pack)} is missing)`;
    return new VaultError('BLOCK_NOT_FOUND', `block ${cid} not found${where}`, { cause: err, details });
  }
  const reason = [status, code ?? errorName(err)].filter((v) => v !== undefined).join(' ');
  return new VaultError('STORE_UNAVAILABLE', `S3 ${what} failed: ${reason}`, { cause: err, details });
}

/**
 * Whether the bucket is there and ours to use, for open: CONFIG_INVALID when it is missing, access
 * is refused, no credentials are found or the region or addressing is wrong; STORE_UNAVAILABLE
 * when the endpoint cannot be reached.
 */
export async function checkBucket(calls: S3Calls, where: string): Promise<void> {
  const deadline = AbortSignal.timeout(calls.operationTimeoutMs);
  try {
    await calls.client.send(new HeadBucketCommand({ Bucket: calls.bucket }), { abortSignal: deadline });
  } catch (err) {
    const status = httpStatus(err);
    const details = { bucket: calls.bucket, endpoint: where, ...(status === undefined ? {} : { status }) };
    if (status === 404) {
      throw new VaultError('CONFIG_INVALID', `S3 bucket "${calls.bucket}" does not exist at ${where}`, { cause: err, details });
    }
    if (status === 403 || status === 401) {
      throw new VaultError(
        'CONFIG_INVALID',
        `S3 refused access to bucket "${calls.bucket}" at ${where} (${status}): check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and the bucket's policy`,
        { cause: err, details },
      );
    }
    if (errorName(err) === 'CredentialsProviderError') {
      throw new VaultError('CONFIG_INVALID', `no S3 credentials found: ${errorMessage(err)}`, { cause: err, details });
    }
    if (status === 301 || status === 400) {
      throw new VaultError('CONFIG_INVALID', `S3 bucket "${calls.bucket}" at ${where} answered ${status}: check the region and path-style settings`, {
        cause: err,
        details,
      });
    }
    const reason = deadline.aborted
      ? `no answer within ${calls.operationTimeoutMs} ms`
      : [status, s3Code(err) ?? errorName(err)].filter((v) => v !== undefined).join(' ');
    throw new VaultError('STORE_UNAVAILABLE', `cannot reach S3 bucket "${calls.bucket}" at ${where}: ${reason}`, { cause: err, details });
  }
}

/** Writes and deletes a small object: read-only credentials fail at open, not at the first STOW. */
export async function probeWrite(calls: S3Calls): Promise<void> {
  const key = `${calls.prefix}.write-probe-${randomUUID()}`;
  await runCall(calls, 'put', {}, undefined, async (abortSignal) => {
    await calls.client.send(new PutObjectCommand({ Bucket: calls.bucket, Key: key, Body: new Uint8Array(0), ContentLength: 0 }), { abortSignal });
    await calls.client.send(new DeleteObjectCommand({ Bucket: calls.bucket, Key: key }), { abortSignal });
  }).catch((err: unknown) => {
    const status = err instanceof VaultError ? err.details?.status : undefined;
    if (status === 403) {
      throw new VaultError(
        'CONFIG_INVALID',
        `S3 bucket "${calls.bucket}" is readable but refuses writes (403): the credentials lack s3:PutObject or s3:DeleteObject`,
        {
          cause: err,
          details: { bucket: calls.bucket, status },
        },
      );
    }
    throw err;
  });
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

export function httpStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null || !('$metadata' in err)) return undefined;
  const meta = err.$metadata as { httpStatusCode?: unknown } | undefined;
  return typeof meta?.httpStatusCode === 'number' ? meta.httpStatusCode : undefined;
}

/** The S3 error code (NoSuchKey, AccessDenied, SlowDown...), when the server sent one. */
export function s3Code(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = 'Code' in err && typeof err.Code === 'string' ? err.Code : undefined;
  if (code !== undefined) return code;
  return httpStatus(err) !== undefined && err instanceof Error ? err.name : undefined;
}

export function errorName(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? err.name : 'unknown error';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : 'unknown error';
}
