// A GET whose response body is read into one reused buffer, for the retrieval benchmarks: the
// client shares the machine's two cores with the server under test, so every CPU-second it
// spends is one the server does not get.
//
// Why not node:http: its socket allocates a fresh 64 KiB ArrayBuffer for every read, and V8 runs
// a full GC every few tens of MiB of them. Measured on 1 GiB of WADO: http.request cost the
// client 3.5 CPU-s (0.8 of them GC, 0.6 the parser), which held the server to ~250 MB/s there.
// Here the socket reads into one buffer (net.Socket `onread`), which node:http cannot use (its
// parser listens for 'data' events, which `onread` replaces). Node has no response parser to
// reuse (llhttp is internal; undici's copies every chunk out of its wasm memory), so the little
// HTTP/1.1 this needs is parsed here: a status line, headers, and a body framed by
// Content-Length, chunked transfer coding, or the connection's end. One request per connection
// (`Connection: close`).
import net from 'node:net';

/** Bytes each socket read fills at most; also what `onBody` sees at most at once. */
export const READ_BUFFER_BYTES = 256 << 10;
/** Largest response head (status line and headers). */
export const MAX_HEAD_BYTES = 64 << 10;

export interface LeanResponse {
  status: number;
  /** Header names lower-cased; repeated headers joined with ", ". */
  headers: Record<string, string>;
}

export interface LeanGetHandlers {
  /** The response head has arrived (before any body byte). */
  onHead?(res: LeanResponse): void;
  /**
   * Body bytes, de-chunked, in order. `chunk` is a view of the reused read buffer: valid only
   * during the call (copy what must be kept).
   */
  onBody(chunk: Buffer): void;
}

export class LeanHttpError extends Error {
  override readonly name = 'LeanHttpError';
}

/**
 * GET `url` (http: only) with `headers`; resolves once the whole body was passed to `onBody`
 * (and the connection closed), with the head and the body's byte count. Rejects on a socket
 * error, a malformed or truncated response, or `signal`.
 */
export function leanGet(
  url: URL,
  headers: Record<string, string>,
  handlers: LeanGetHandlers,
  options: { signal?: AbortSignal } = {},
): Promise<LeanResponse & { bodyBytes: number }> {
  if (url.protocol !== 'http:') return Promise.reject(new RangeError(`only http: URLs, got ${url.protocol}`));
  const { signal } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const parser = new ResponseParser(handlers);
    let settled = false;
    const finish = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err !== undefined) reject(err);
      else resolve({ ...parser.response!, bodyBytes: parser.bodyBytes });
    };
    const onAbort = (): void => finish(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });

    const socket = net.connect({
      host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: Number(url.port || 80),
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
        callback(n: number, buf: Uint8Array): boolean {
          try {
            parser.push(buf.subarray(0, n) as Buffer);
          } catch (err) {
            finish(err);
            return false;
          }
          if (parser.done) finish();
          return true;
        },
      },
    });
    socket.setNoDelay(true);
    socket.once('error', (err) => finish(err));
    socket.once('end', () => {
      try {
        parser.end();
        finish();
      } catch (err) {
        finish(err);
      }
    });
    socket.once('close', () => finish(new LeanHttpError('connection closed before the response ended')));
    const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, 'Connection: close'];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  });
}

const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

/** HTTP/1.1 response framing (RFC 9112 sections 4 to 7), push-driven; the body goes to `onBody`. */
export class ResponseParser {
  response: LeanResponse | undefined;
  bodyBytes = 0;
  readonly #handlers: LeanGetHandlers;
  #state: 'head' | 'length' | 'close' | 'chunkSize' | 'chunkData' | 'chunkDataEnd' | 'trailers' | 'done' = 'head';
  /** Bytes of a head, chunk-size line or trailer section being collected. */
  #acc = Buffer.alloc(0);
  /** Body bytes still due (Content-Length, or the current chunk). */
  #remaining = 0;
  /** Bytes of the CRLF after a chunk's data seen so far. */
  #crlfSeen = 0;

  constructor(handlers: LeanGetHandlers) {
    this.#handlers = handlers;
  }

  get done(): boolean {
    return this.#state === 'done';
  }

  push(data: Buffer): void {
    let o = 0;
    while (o < data.length && this.#state !== 'done') {
      switch (this.#state) {
        case 'head': {
          const taken = this.#collect(data, o, HEAD_END, MAX_HEAD_BYTES, 'response head');
          if (taken < 0) return;
          o = taken;
          this.#startBody(this.#acc.toString('latin1', 0, this.#acc.length - HEAD_END.length));
          break;
        }
        case 'length':
          o = this.#counted(data, o, 'done');
          break;
        case 'close':
          this.#body(data.subarray(o));
          o = data.length;
          break;
        case 'chunkSize': {
          const taken = this.#collect(data, o, CRLF, 1024, 'chunk size line');
          if (taken < 0) return;
          o = taken;
          const line = this.#acc.toString('latin1', 0, this.#acc.length - 2);
          const m = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(line);
          if (m === null) throw new LeanHttpError(`bad chunk size line ${JSON.stringify(line.slice(0, 40))}`);
          this.#remaining = parseInt(m[1]!, 16);
          this.#acc = Buffer.alloc(0);
          this.#state = this.#remaining === 0 ? 'trailers' : 'chunkData';
          break;
        }
        case 'chunkData':
          o = this.#counted(data, o, 'chunkDataEnd');
          break;
        case 'chunkDataEnd': {
          // The CRLF after a chunk's data, byte by byte.
          if (data[o] !== (this.#crlfSeen === 0 ? 0x0d : 0x0a)) throw new LeanHttpError('chunk data not followed by CRLF');
          o++;
          if (++this.#crlfSeen === 2) {
            this.#crlfSeen = 0;
            this.#state = 'chunkSize';
          }
          break;
        }
        case 'trailers': {
          // Trailer lines (rarely any) up to an empty line.
          const taken = this.#collect(data, o, CRLF, MAX_HEAD_BYTES, 'trailer line');
          if (taken < 0) return;
          o = taken;
          if (this.#acc.length === 2) this.#state = 'done';
          this.#acc = Buffer.alloc(0);
          break;
        }
      }
    }
  }

  /** The connection ended: complete only if the body's framing says so (or it runs to the end). */
  end(): void {
    if (this.#state === 'close') this.#state = 'done';
    if (this.#state !== 'done')
      throw new LeanHttpError(`response truncated (${this.#state === 'head' ? 'in its head' : `${this.bodyBytes} body bytes received`})`);
  }

  /** Passes on up to #remaining body bytes from data[o..]; moves to `then` once none remain. Returns the new offset. */
  #counted(data: Buffer, o: number, then: 'done' | 'chunkDataEnd'): number {
    const n = Math.min(this.#remaining, data.length - o);
    this.#body(data.subarray(o, o + n));
    this.#remaining -= n;
    if (this.#remaining === 0) this.#state = then;
    return o + n;
  }

  #body(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.bodyBytes += chunk.length;
    this.#handlers.onBody(chunk);
  }

  /**
   * Appends data[o..] to #acc up to and including `terminator`; returns the offset after it, or
   * -1 when `data` ended first (everything was taken).
   */
  #collect(data: Buffer, o: number, terminator: Buffer, max: number, what: string): number {
    const before = this.#acc.length;
    // Search from just before the new bytes, so a terminator split across reads is found.
    this.#acc = Buffer.concat([this.#acc, data.subarray(o, o + max + terminator.length - before)]);
    const i = this.#acc.indexOf(terminator, Math.max(0, before - terminator.length + 1));
    if (i < 0) {
      if (this.#acc.length > max) throw new LeanHttpError(`${what} exceeds ${max} bytes`);
      return -1;
    }
    const end = i + terminator.length;
    const taken = o + end - before;
    this.#acc = this.#acc.subarray(0, end);
    return taken;
  }

  #startBody(head: string): void {
    const [statusLine, ...lines] = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine ?? '');
    if (m === null) throw new LeanHttpError(`bad status line ${JSON.stringify((statusLine ?? '').slice(0, 60))}`);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw new LeanHttpError(`bad header line ${JSON.stringify(line.slice(0, 60))}`);
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    const status = Number(m[1]);
    this.response = { status, headers };
    this.#acc = Buffer.alloc(0);
    this.#handlers.onHead?.(this.response);
    const coding = headers['transfer-encoding']?.toLowerCase();
    if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
      this.#state = 'done';
    } else if (coding !== undefined) {
      if (!/(^|,)\s*chunked\s*$/.test(coding)) throw new LeanHttpError(`unsupported Transfer-Encoding ${coding}`);
      this.#state = 'chunkSize';
    } else if (headers['content-length'] !== undefined) {
      const length = headers['content-length'];
      if (!/^\d{1,15}$/.test(length)) throw new LeanHttpError(`bad Content-Length ${JSON.stringify(length)}`);
      this.#remaining = Number(length);
      this.#state = this.#remaining === 0 ? 'done' : 'length';
    } else {
      this.#state = 'close';
    }
  }
}
