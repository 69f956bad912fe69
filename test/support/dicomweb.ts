// A small DICOMweb client for the tests: builds STOW bodies and splits multipart responses.
// Deliberately independent of the node's own multipart code, so the two check each other.
import { randomBytes } from 'node:crypto';
import http from 'node:http';

export interface StowResult {
  status: number;
  body: Record<string, { vr: string; Value?: any[] }>;
  headers: Headers;
}

export function multipartBody(parts: Uint8Array[], boundary: string, contentType = 'application/dicom'): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: ${contentType}\r\n\r\n`), Buffer.from(p), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

export async function stow(baseUrl: string, parts: Uint8Array[], opts: { study?: string } = {}): Promise<StowResult> {
  const boundary = `b-${randomBytes(8).toString('hex')}`;
  const res = await fetch(`${baseUrl}/studies${opts.study ? `/${opts.study}` : ''}`, {
    method: 'POST',
    headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, accept: 'application/dicom+json' },
    body: multipartBody(parts, boundary),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : {}, headers: res.headers };
}

export async function postRaw(baseUrl: string, path: string, contentType: string | undefined, body: Uint8Array): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = {};
  if (contentType !== undefined) headers['content-type'] = contentType;
  const res = await fetch(`${baseUrl}${path}`, { method: 'POST', headers, body });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

export interface ResponsePart {
  headers: Record<string, string>;
  body: Buffer;
}

export function splitMultipart(body: Buffer, contentType: string): ResponsePart[] {
  const m = /boundary="?([^";]+)"?/i.exec(contentType);
  if (!m) throw new Error(`no boundary in ${contentType}`);
  const delim = Buffer.from(`--${m[1]}`);
  const parts: ResponsePart[] = [];
  let pos = body.indexOf(delim);
  if (pos !== 0) throw new Error('body does not start with the boundary');
  for (;;) {
    pos += delim.length;
    if (body.subarray(pos, pos + 2).toString() === '--') return parts;
    const headerEnd = body.indexOf('\r\n\r\n', pos);
    const headers: Record<string, string> = {};
    for (const line of body
      .subarray(pos + 2, headerEnd)
      .toString()
      .split('\r\n')) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delim]), headerEnd + 4);
    if (next < 0) throw new Error('unterminated part');
    parts.push({ headers, body: body.subarray(headerEnd + 4, next) });
    pos = next + 2;
  }
}

export async function retrieve(
  url: string,
  accept = 'multipart/related; type="application/dicom"; transfer-syntax=*',
): Promise<{ status: number; parts: ResponsePart[]; contentType: string; raw: Buffer }> {
  const res = await fetch(url, { headers: { accept } });
  const raw = Buffer.from(await res.arrayBuffer());
  const contentType = res.headers.get('content-type') ?? '';
  const parts = res.status === 200 && contentType.startsWith('multipart/') ? splitMultipart(raw, contentType) : [];
  return { status: res.status, parts, contentType, raw };
}

export function uidsIn(seq: { Value?: any[] } | undefined, tag = '00081155'): string[] {
  return (seq?.Value ?? []).map((item: any) => item[tag]?.Value?.[0]);
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Every byte received, also when the connection broke off. */
  body: Buffer;
  /** False when the connection ended before the response did (a broken-off stream). */
  complete: boolean;
}

/** A GET that keeps whatever arrived before a broken connection (fetch would throw it away). */
export function getRaw(url: string, accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', () => undefined); // 'aborted' after a broken connection: seen as !complete
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete }));
    });
    req.on('error', reject);
  });
}

/** The failures of a STOW response body: each FailedSOPSequence item's code, PS3.4 status and full reason (the node's private block). */
export function failuresIn(body: any): Array<{ sopInstanceUID?: string; status: number; code: string; reason: string }> {
  const items: any[] = body?.['00081198']?.Value ?? [];
  return items.map((i) => ({
    ...(i['00081155'] ? { sopInstanceUID: i['00081155'].Value[0] } : {}),
    status: i['00081197']?.Value?.[0],
    code: i['00091002']?.Value?.[0],
    reason: i['00091001']?.Value?.[0],
  }));
}
