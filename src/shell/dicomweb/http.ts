// Small HTTP helpers shared by the DICOMweb services.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { VaultError } from '../../core/errors.ts';

/**
 * Aborted when the client goes away before the exchange is complete, so that reads and writes
 * down to the block store stop too.
 */
export function requestSignal(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const abort = (): void => {
    if (!controller.signal.aborted) controller.abort(new VaultError('ABORTED', 'the client closed the connection'));
  };
  // A response closed already (the client left while the request waited before its handler)
  // fires no 'close' again: the signal is aborted at once.
  if (reply.raw.destroyed && !reply.raw.writableFinished) abort();
  request.raw.once('aborted', abort);
  // 'close' also follows a complete response; only a close before the end is an abort.
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort();
  });
  return controller.signal;
}

export interface MediaRange {
  type: string;
  params: Record<string, string>;
  q: number;
}

/** Parses an Accept header into media ranges, highest q first (stable for equal q). */
export function parseAccept(header: string | undefined): MediaRange[] {
  if (header === undefined || header.trim() === '') return [{ type: '*/*', params: {}, q: 1 }];
  const ranges: MediaRange[] = [];
  for (const raw of splitOutsideQuotes(header, ',')) {
    const [typePart, ...paramParts] = splitOutsideQuotes(raw, ';');
    const type = (typePart ?? '').trim().toLowerCase();
    if (!type) continue;
    const params: Record<string, string> = {};
    let q = 1;
    for (const p of paramParts) {
      const eq = p.indexOf('=');
      if (eq < 0) continue;
      const name = p.slice(0, eq).trim().toLowerCase();
      let value = p.slice(eq + 1).trim();
      if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1).replace(/\\(.)/g, '$1');
      if (name === 'q') {
        q = Number(value);
        if (!Number.isFinite(q) || q < 0 || q > 1) throw new VaultError('BAD_REQUEST', `invalid q value in Accept: ${value}`);
      } else params[name] = value;
    }
    ranges.push({ type, params, q });
  }
  return ranges.filter((r) => r.q > 0).sort((a, b) => b.q - a.q);
}

function splitOutsideQuotes(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '"' && s[i - 1] !== '\\') quoted = !quoted;
    if (c === sep && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/**
 * A DICOM JSON body as bytes: sent as a string, fastify would add "; charset=utf-8" to its type,
 * and clients that compare the type exactly (Python's dicomweb-client) would refuse it. JSON is
 * UTF-8 by definition (RFC 8259).
 */
export function dicomJson(text: string): Buffer {
  return Buffer.from(text, 'utf8');
}
