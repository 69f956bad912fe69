// Writes multipart/related response bodies part by part, streaming each part's bytes.
import { randomBytes } from 'node:crypto';

export interface OutgoingPart {
  contentType: string;
  /** Extra part headers, e.g. Content-Location. */
  headers?: Record<string, string>;
  body: AsyncIterable<Uint8Array>;
}

export function newBoundary(): string {
  return `dicom-vault-${randomBytes(12).toString('hex')}`;
}

export function multipartContentType(boundary: string, type: string, extra: Record<string, string> = {}): string {
  const params = Object.entries(extra)
    .map(([k, v]) => `; ${k}=${v}`)
    .join('');
  return `multipart/related; type="${type}"${params}; boundary=${boundary}`;
}

/** The body: `--b CRLF headers CRLF CRLF bytes CRLF --b ... CRLF --b-- CRLF`. */
export async function* multipartBody(boundary: string, parts: AsyncIterable<OutgoingPart>): AsyncGenerator<Uint8Array> {
  let first = true;
  for await (const part of parts) {
    const headers = Object.entries({ 'Content-Type': part.contentType, ...part.headers })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    yield Buffer.from(`${first ? '' : '\r\n'}--${boundary}\r\n${headers}\r\n`);
    first = false;
    yield* part.body;
  }
  yield Buffer.from(`${first ? '' : '\r\n'}--${boundary}--\r\n`);
}
