// A browser's connections to one origin, for the viewer scenario: at most `sockets` (6, as
// Chromium and Firefox open per host over HTTP/1.1) persistent connections, requests queued in the
// order they were made and each sent on the first connection free, one at a time (no pipelining).
//
// Why not node:http's keep-alive Agent: its sockets allocate a fresh 64 KiB buffer per read, which
// cost the client 3.5 CPU-s per GiB received (lean-get.ts measured it), CPU the server under test
// shares on these 2-core machines; a viewer opening reads a quarter of a GiB. This reads each
// connection into one reused buffer and parses the responses with lean-get.ts's ResponseParser,
// which lean-get itself cannot do for us: it closes the connection after every response.
import net from 'node:net';
import { type LeanGetHandlers, LeanHttpError, type LeanResponse, READ_BUFFER_BYTES, ResponseParser } from './lean-get.ts';

/** Connections a browser opens to one host over HTTP/1.1. */
export const BROWSER_SOCKETS = 6;

export interface PooledResponse extends LeanResponse {
  bodyBytes: number;
  /** Request handed to a connection => response head / first body byte / last byte (ms). */
  headersMs: number;
  ttfbMs: number;
  ms: number;
  /** Request made => request sent (waiting for a free connection), ms. */
  queuedMs: number;
}

interface Pending {
  path: string;
  headers: Record<string, string>;
  handlers: LeanGetHandlers;
  made: number;
  resolve(r: PooledResponse): void;
  reject(err: unknown): void;
}

export class KeepAlivePool {
  readonly #host: string;
  readonly #port: number;
  readonly #hostHeader: string;
  readonly #queue: Pending[] = [];
  readonly #idle: Connection[] = [];
  readonly #all: Connection[] = [];
  readonly #sockets: number;
  #closed = false;
  /** TCP connections opened over the pool's life (a server closing idle ones makes this grow). */
  connectionsOpened = 0;

  constructor(origin: URL, sockets = BROWSER_SOCKETS) {
    if (origin.protocol !== 'http:') throw new RangeError(`only http: origins, got ${origin.protocol}`);
    if (!Number.isSafeInteger(sockets) || sockets < 1) throw new RangeError('sockets must be >= 1');
    this.#host = origin.hostname.replace(/^\[(.*)\]$/, '$1');
    this.#port = Number(origin.port || 80);
    this.#hostHeader = origin.host;
    this.#sockets = sockets;
  }

  /** GET `path` (with its query) when a connection is free; the body goes to `handlers.onBody`. */
  get(path: string, headers: Record<string, string>, handlers: LeanGetHandlers): Promise<PooledResponse> {
    if (this.#closed) return Promise.reject(new Error('pool closed'));
    return new Promise((resolve, reject) => {
      this.#queue.push({ path, headers, handlers, made: performance.now(), resolve, reject });
      this.#dispatch();
    });
  }

  /** Closes every connection; queued requests fail. */
  close(): void {
    this.#closed = true;
    for (const p of this.#queue.splice(0)) p.reject(new Error('pool closed'));
    for (const c of this.#all) c.destroy();
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      let c = this.#idle.shift();
      if (c === undefined) {
        if (this.#all.length >= this.#sockets) return;
        c = new Connection(this.#host, this.#port, () => this.connectionsOpened++);
        this.#all.push(c);
      }
      const p = this.#queue.shift()!;
      const conn = c;
      conn.send(p, this.#hostHeader).then(
        (r) => {
          p.resolve(r);
          this.#release(conn);
        },
        (err) => {
          p.reject(err);
          this.#release(conn);
        },
      );
    }
  }

  #release(c: Connection): void {
    if (this.#closed) return;
    this.#idle.push(c);
    this.#dispatch();
  }
}

/** One HTTP/1.1 connection, reopened when the server closed it; one request at a time. */
class Connection {
  readonly #host: string;
  readonly #port: number;
  readonly #opened: () => void;
  #socket: net.Socket | undefined;
  /** The request on the wire: its parser and how to settle it. */
  #current: { parser: ResponseParser; done(err?: unknown): void } | undefined;
  readonly #buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

  constructor(host: string, port: number, opened: () => void) {
    this.#host = host;
    this.#port = port;
    this.#opened = opened;
  }

  destroy(): void {
    this.#socket?.destroy();
    this.#socket = undefined;
  }

  async send(p: Pending, hostHeader: string): Promise<PooledResponse> {
    const reused = this.#socket !== undefined;
    try {
      return await this.#attempt(p, hostHeader);
    } catch (err) {
      // A server may close an idle keep-alive connection just as a request goes out on it
      // (its keep-alive timeout): nothing was answered, so the request is sent once more on a
      // fresh connection, as browsers do.
      if (reused && err instanceof StaleConnection) return this.#attempt(p, hostHeader);
      throw err;
    }
  }

  #attempt(p: Pending, hostHeader: string): Promise<PooledResponse> {
    const socket = this.#socket ?? this.#connect();
    const sent = performance.now();
    const out = { headersMs: NaN, ttfbMs: NaN };
    const parser = new ResponseParser({
      onHead: (res) => {
        out.headersMs = performance.now() - sent;
        p.handlers.onHead?.(res);
      },
      onBody: (chunk) => {
        if (Number.isNaN(out.ttfbMs)) out.ttfbMs = performance.now() - sent;
        p.handlers.onBody(chunk);
      },
    });
    return new Promise<PooledResponse>((resolve, reject) => {
      this.#current = {
        parser,
        done: (err) => {
          this.#current = undefined;
          if (err !== undefined) {
            this.destroy();
            reject(err);
            return;
          }
          const res = parser.response!;
          // The server said it closes the connection (or speaks HTTP/1.0 framing by close).
          if (/(^|,)\s*close\s*(,|$)/i.test(res.headers.connection ?? '')) this.destroy();
          resolve({ ...res, bodyBytes: parser.bodyBytes, ...out, ms: performance.now() - sent, queuedMs: sent - p.made });
        },
      };
      const lines = [`GET ${p.path} HTTP/1.1`, `Host: ${hostHeader}`, 'Connection: keep-alive'];
      for (const [k, v] of Object.entries(p.headers)) lines.push(`${k}: ${v}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
    });
  }

  #connect(): net.Socket {
    this.#opened();
    const socket = net.connect({
      host: this.#host,
      port: this.#port,
      onread: {
        buffer: this.#buffer,
        callback: (n: number, buf: Uint8Array): boolean => {
          // A connection already given up (its events may still come) speaks for no request.
          if (this.#socket !== socket) return false;
          const cur = this.#current;
          if (cur === undefined) {
            // Bytes nobody asked for: the connection cannot be trusted any more.
            socket.destroy();
            return false;
          }
          try {
            cur.parser.push(buf.subarray(0, n) as Buffer);
          } catch (err) {
            cur.done(err);
            return false;
          }
          if (cur.parser.done) cur.done();
          return true;
        },
      },
    });
    socket.setNoDelay(true);
    const gone = (err?: Error): void => {
      if (this.#socket !== socket) return;
      this.#socket = undefined;
      const cur = this.#current;
      if (cur === undefined) return;
      if (cur.parser.response === undefined) {
        cur.done(new StaleConnection(err?.message ?? 'connection closed before a response'));
        return;
      }
      try {
        cur.parser.end(); // a body framed by the connection's end
        cur.done();
      } catch (e) {
        cur.done(e);
      }
    };
    socket.on('error', (err) => gone(err));
    socket.on('end', () => gone());
    socket.on('close', () => gone());
    this.#socket = socket;
    return socket;
  }
}

class StaleConnection extends LeanHttpError {}
