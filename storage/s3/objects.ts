// Objects of their own (a block unpacked, a block of at least the multipart threshold, a pack):
// a single PutObject or GetObject, or from the multipart threshold on a multipart upload and
// parallel ranged reads of `partSize` bytes, `partConcurrency` at once.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { destroyBody, readBodyInto } from './body.ts';
import type { S3Calls } from './client.ts';
import { mapLimit } from './map-limit.ts';

/** How objects are cut into parts (validated options). */
export interface PartSizes {
  multipartThreshold: number;
  partSize: number;
  partConcurrency: number;
}

/** One object: a single PutObject, or a multipart upload from the multipart threshold on. */
export async function putObject(calls: S3Calls, parts: PartSizes, key: string, body: Uint8Array, abortSignal: AbortSignal): Promise<void> {
  if (body.byteLength >= parts.multipartThreshold) {
    await putMultipart(calls, parts, key, body, abortSignal);
    return;
  }
  await calls.client.send(
    new PutObjectCommand({ Bucket: calls.bucket, Key: key, Body: body, ContentLength: body.byteLength, ContentType: 'application/octet-stream' }),
    { abortSignal },
  );
}

/** A whole object into a new buffer the caller owns; from the multipart threshold on as parallel ranges. */
export async function getObject(calls: S3Calls, parts: PartSizes, key: string, abortSignal: AbortSignal): Promise<Uint8Array> {
  const res = await calls.client.send(new GetObjectCommand({ Bucket: calls.bucket, Key: key }), { abortSignal });
  const length = res.ContentLength;
  if (length === undefined) throw new Error('GetObject response has no Content-Length');
  if (length >= parts.multipartThreshold) {
    // Large block: drop this response's body and read it as parallel ranges instead.
    destroyBody(res.Body);
    return getRanged(calls, parts, key, length, res.ETag, abortSignal);
  }
  const out = new Uint8Array(length);
  await readBodyInto(res.Body, out, 0, length, abortSignal);
  return out;
}

async function putMultipart(calls: S3Calls, parts: PartSizes, key: string, bytes: Uint8Array, abortSignal: AbortSignal): Promise<void> {
  const created = await calls.client.send(new CreateMultipartUploadCommand({ Bucket: calls.bucket, Key: key, ContentType: 'application/octet-stream' }), {
    abortSignal,
  });
  const uploadId = created.UploadId;
  if (uploadId === undefined) throw new Error('CreateMultipartUpload returned no UploadId');
  try {
    const count = Math.ceil(bytes.byteLength / parts.partSize);
    const uploaded = await mapLimit(count, parts.partConcurrency, async (i) => {
      const body = bytes.subarray(i * parts.partSize, Math.min(bytes.byteLength, (i + 1) * parts.partSize));
      const res = await calls.client.send(
        new UploadPartCommand({ Bucket: calls.bucket, Key: key, UploadId: uploadId, PartNumber: i + 1, Body: body, ContentLength: body.byteLength }),
        { abortSignal },
      );
      return { PartNumber: i + 1, ETag: res.ETag };
    });
    await calls.client.send(new CompleteMultipartUploadCommand({ Bucket: calls.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: uploaded } }), {
      abortSignal,
    });
  } catch (err) {
    // Best effort, without the (possibly aborted) signal: left alone, the parts are billed
    // until a lifecycle rule removes them. The original error is the one to report.
    await calls.client
      .send(new AbortMultipartUploadCommand({ Bucket: calls.bucket, Key: key, UploadId: uploadId }), {
        abortSignal: AbortSignal.timeout(calls.operationTimeoutMs),
      })
      .catch(() => undefined);
    throw err;
  }
}

async function getRanged(
  calls: S3Calls,
  parts: PartSizes,
  key: string,
  length: number,
  etag: string | undefined,
  abortSignal: AbortSignal,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  const count = Math.ceil(length / parts.partSize);
  await mapLimit(count, parts.partConcurrency, async (i) => {
    const start = i * parts.partSize;
    const end = Math.min(length, start + parts.partSize) - 1;
    // IfMatch: a block object never changes, but if something rewrote it meanwhile, the
    // parts must not come from two different objects.
    const res = await calls.client.send(
      new GetObjectCommand({ Bucket: calls.bucket, Key: key, Range: `bytes=${start}-${end}`, ...(etag === undefined ? {} : { IfMatch: etag }) }),
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
