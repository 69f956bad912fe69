// The HTTP plumbing under the DICOMweb benchmark client (client.ts, client-stow.ts): the keep-alive
// agents, bounded response bodies, the bearer header, endpoint URLs, a GET with one retry on a
// stale keep-alive socket, and error descriptions. Apart from client.ts because both the STOW and
// the WADO/QIDO halves use it.
import http from 'node:http';
import type { IncomingMessage } from 'node:http';

/** Largest STOW/QIDO response body read, in bytes; beyond it the response counts as failed. */
export const DEFAULT_MAX_RESPONSE_BYTES = 16 << 20;

export function createAgent(maxSockets = 64): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets });
}

let sharedAgent: http.Agent | undefined;
/** Used when no `agent` is passed; its idle sockets do not keep the process alive. */
export function defaultAgent(): http.Agent {
  sharedAgent ??= createAgent();
  return sharedAgent;
}

export async function readBody(res: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      res.destroy();
      throw new Error(`response body exceeds ${limit} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks, n);
}

/** The Authorization header of a bearer token; none without a token (a node run with --open). */
export function bearer(token: string | undefined): Record<string, string> {
  return token === undefined ? {} : { Authorization: `Bearer ${token}` };
}

export function endpoint(baseUrl: string, path: string): URL {
  const base = new URL(baseUrl);
  if (base.protocol !== 'http:') throw new RangeError(`only http: base URLs are supported, got ${base.protocol}`);
  const q = path.indexOf('?');
  base.pathname = base.pathname.replace(/\/+$/, '') + (q < 0 ? path : path.slice(0, q));
  base.search = q < 0 ? '' : path.slice(q);
  return base;
}

/**
 * A server may close an idle keep-alive socket just as the agent hands it out again (its
 * keep-alive timeout); the request then fails before any response. Node's documented remedy
 * (`request.reusedSocket`) is one retry.
 */
export function isStaleSocket(req: http.ClientRequest, err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE');
}

export async function get(
  url: URL,
  headers: Record<string, string>,
  opts: { signal?: AbortSignal; agent?: http.Agent },
  retried = false,
): Promise<IncomingMessage> {
  const req = http.request(url, {
    method: 'GET',
    agent: opts.agent ?? defaultAgent(),
    headers,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  try {
    return await new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
      req.end();
    });
  } catch (err) {
    if (!retried && !opts.signal?.aborted && isStaleSocket(req, err)) return get(url, headers, opts, true);
    throw err;
  }
}

export function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
