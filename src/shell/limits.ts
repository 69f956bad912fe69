// How much the node takes on at once, so that no client, and no crowd of them, can exhaust its
// memory or hold its sockets: concurrent ingests per node and per client (each holds a window of
// chunk buffers and a parsed header), and timeouts for connections that stop moving.
//
// Every limit has a DEFAULT_* here and a flag (config.ts); the README's Reliability section lists
// them.
import { VaultError } from '../core/errors.ts';

/** Ingests (STOW requests, C-STOREs) in flight at once on the node. Each holds up to 16 one-MiB chunk buffers. */
export const DEFAULT_MAX_INGESTS = 16;
/** Ingests in flight at once from one client address. */
export const DEFAULT_MAX_INGESTS_PER_CLIENT = 4;
/** Seconds a client asked to wait is told to wait (Retry-After) when a limit is reached. */
export const RETRY_AFTER_S = 5;
/** Seconds a connection may make no progress (no byte in or out) before it is cut off. */
export const DEFAULT_IDLE_TIMEOUT_S = 30;
/**
 * Bytes per second a request body must average, over each idle-timeout window in which the node
 * was waiting for it, to be kept (1 KiB/s). Without it, one byte every few seconds would hold a
 * connection and its buffers for ever without ever tripping the idle timeout.
 */
export const DEFAULT_MIN_BODY_RATE = 1024;
/** Seconds a client may take to send a request's headers. */
export const DEFAULT_HEADERS_TIMEOUT_S = 30;
/** Seconds an idle keep-alive connection is kept open between requests. */
export const DEFAULT_KEEP_ALIVE_TIMEOUT_S = 10;

export interface LimitOptions {
  maxIngests: number;
  maxIngestsPerClient: number;
  idleTimeoutS: number;
  /** Bytes per second a request body must average while the node waits for it. */
  minBodyRate: number;
  headersTimeoutS: number;
  keepAliveTimeoutS: number;
}

export const DEFAULT_LIMITS: LimitOptions = {
  maxIngests: DEFAULT_MAX_INGESTS,
  maxIngestsPerClient: DEFAULT_MAX_INGESTS_PER_CLIENT,
  idleTimeoutS: DEFAULT_IDLE_TIMEOUT_S,
  minBodyRate: DEFAULT_MIN_BODY_RATE,
  headersTimeoutS: DEFAULT_HEADERS_TIMEOUT_S,
  keepAliveTimeoutS: DEFAULT_KEEP_ALIVE_TIMEOUT_S,
};

/** Counts ingests in flight, for the node and for each client; a slot is taken or refused at once. */
export class IngestLimiter {
  readonly #max: number;
  readonly #perClient: number;
  readonly #byClient = new Map<string, number>();
  #total = 0;

  constructor(max: number, perClient: number) {
    this.#max = max;
    this.#perClient = perClient;
  }

  get inFlight(): number {
    return this.#total;
  }

  /** A release function, or the reason the ingest must wait. */
  acquire(client: string): { release: () => void } | { refused: string } {
    if (this.#total >= this.#max) return { refused: `the node is taking ${this.#max} ingests at once, its limit` };
    const mine = this.#byClient.get(client) ?? 0;
    if (mine >= this.#perClient) return { refused: `this client has ${this.#perClient} ingests in flight, the limit per client` };
    this.#total++;
    this.#byClient.set(client, mine + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#total--;
        const left = (this.#byClient.get(client) ?? 1) - 1;
        if (left === 0) this.#byClient.delete(client);
        else this.#byClient.set(client, left);
      },
    };
  }
}

/**
 * A request body that must keep moving: once per window (the idle timeout) the bytes that arrived
 * while the node was waiting for them are counted, and a body that sent fewer than
 * `minRate` bytes a second over a window in which the node mostly waited is cut off with
 * REQUEST_TIMEOUT. Time the node itself spends not reading (backpressure while it writes) does
 * not count against the client.
 */
export async function* keepMoving(
  body: AsyncIterable<Uint8Array>,
  windowS: number,
  minRate: number,
  onStall: (reason: string) => void,
): AsyncGenerator<Uint8Array> {
  const windowMs = windowS * 1000;
  let windowStart = performance.now();
  let waited = 0;
  let bytes = 0;
  const it = body[Symbol.asyncIterator]();
  for (;;) {
    const asked = performance.now();
    const next = await it.next();
    const now = performance.now();
    waited += now - asked;
    if (next.done === true) return;
    bytes += next.value.length;
    const elapsed = now - windowStart;
    if (elapsed >= windowMs) {
      if (waited >= 0.9 * elapsed && bytes < (minRate * elapsed) / 1000) {
        const reason = `the request body arrived at ${Math.round((bytes * 1000) / elapsed)} bytes/s over ${Math.round(elapsed / 1000)} s; this node needs at least ${minRate} bytes/s`;
        onStall(reason);
        throw new VaultError('REQUEST_TIMEOUT', reason);
      }
      windowStart = now;
      waited = 0;
      bytes = 0;
    }
    yield next.value;
  }
}
