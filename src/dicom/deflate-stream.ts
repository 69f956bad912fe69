// The raw-deflate streams of Deflated Explicit VR Little Endian, inflated and deflated as they
// stream (node:zlib), with zlib's failures told as DICOM errors. Apart from transcode.ts because
// the deflated-instance reader (deflated.ts) inflates too, and needs nothing of the transcoder.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { VaultError, isVaultError } from '../core/errors.ts';

/** The raw-deflate stream of a Deflated Explicit VR LE data set, inflated as it streams. */
export async function* inflate(compressed: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const inflater = zlib.createInflateRaw();
  const feeding = pipeline(Readable.from(compressed), inflater);
  // Errors reach the consumer through the iteration below; this only avoids an unhandled rejection.
  feeding.catch(() => {});
  try {
    for await (const chunk of inflater) yield chunk as Buffer;
    await feeding;
  } catch (err) {
    if (isVaultError(err)) throw err;
    const code = (err as { code?: string }).code;
    if (code === 'Z_BUF_ERROR') throw new VaultError('DICOM_TRUNCATED', 'deflated data set ends before its deflate stream does', { cause: err });
    throw new VaultError('DICOM_MALFORMED', 'deflated data set is corrupt', { cause: err });
  } finally {
    inflater.destroy();
  }
}

export async function* deflate(data: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const deflater = zlib.createDeflateRaw();
  const feeding = pipeline(Readable.from(data), deflater);
  // Errors reach the consumer through the iteration below; this only avoids an unhandled rejection.
  feeding.catch(() => {});
  try {
    for await (const chunk of deflater) yield chunk as Buffer;
    await feeding;
  } finally {
    deflater.destroy();
  }
}
