// Prometheus metrics at GET /metrics (prom-client): requests by route and status, bytes in and
// out, ingest and retrieval latency, blocks verified and verification failures, decode failures,
// the anchoring queue, and the process's own (memory, CPU, event loop). Counts that happen deep
// in the read path arrive as diagnostics-channel events (src/core/events.ts), so no part of the
// node imports a metrics singleton. One registry per app: several nodes in one process (tests)
// do not share counts.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { blockRejected, blockVerified, decodeFailed, type BlockRejectedEvent, type BlockVerifiedEvent, type DecodeFailedEvent } from '../core/events.ts';

/** What the anchoring gauges read when scraped; absent when the node does not anchor. */
export interface AnchorQueueSource {
  /** Roots committed but not yet anchored (waiting for a batch, or in one not yet confirmed). */
  depth(): { queued: number; submitted: number };
}

/** Latency buckets, seconds: from a QIDO of a millisecond to a TB-scale STOW. */
const SECONDS_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200];

export class NodeMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<'route' | 'method' | 'status'>;
  readonly #bytesIn: Counter<'route'>;
  readonly #bytesOut: Counter<'route'>;
  readonly #duration: Histogram<'action'>;
  readonly #blocksVerified: Counter;
  readonly #bytesVerified: Counter;
  readonly #verificationFailures: Counter<'reason'>;
  readonly #decodeFailures: Counter<'transfer_syntax'>;
  readonly #timeouts: Counter<'phase'>;
  readonly #busy: Counter<'door'>;
  readonly #onVerified = (m: unknown): void => {
    this.#blocksVerified.inc();
    this.#bytesVerified.inc((m as BlockVerifiedEvent).bytes);
  };
  readonly #onRejected = (m: unknown): void => void this.#verificationFailures.inc({ reason: (m as BlockRejectedEvent).reason });
  readonly #onDecodeFailed = (m: unknown): void => void this.#decodeFailures.inc({ transfer_syntax: (m as DecodeFailedEvent).transferSyntaxUID });

  constructor(anchor?: AnchorQueueSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'dicomvault_' });
    this.#requests = new Counter({
      name: 'dicomvault_http_requests_total',
      help: 'HTTP requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.#bytesIn = new Counter({
      name: 'dicomvault_http_received_bytes_total',
      help: 'Bytes received in HTTP requests (bodies and headers), by route',
      labelNames: ['route'],
      registers,
    });
    this.#bytesOut = new Counter({
      name: 'dicomvault_http_sent_bytes_total',
      help: 'Bytes sent in HTTP responses (bodies and headers), by route',
      labelNames: ['route'],
      registers,
    });
    this.#duration = new Histogram({
      name: 'dicomvault_request_duration_seconds',
      help: 'Time from a request to the end of its response, by action: store (ingest), retrieve, search, other',
      labelNames: ['action'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#blocksVerified = new Counter({
      name: 'dicomvault_blocks_verified_total',
      help: 'Stored blocks read and verified against their CID before use',
      registers,
    });
    this.#bytesVerified = new Counter({ name: 'dicomvault_verified_bytes_total', help: 'Bytes of the blocks verified', registers });
    this.#verificationFailures = new Counter({
      name: 'dicomvault_verification_failures_total',
      help: 'Stored blocks that failed verification (corrupt) or were missing where a version needs them',
      labelNames: ['reason'],
      registers,
    });
    this.#decodeFailures = new Counter({
      name: 'dicomvault_decode_failures_total',
      help: 'Compressed frames that could not be decoded, by transfer syntax',
      labelNames: ['transfer_syntax'],
      registers,
    });
    this.#timeouts = new Counter({
      name: 'dicomvault_connection_timeouts_total',
      help: 'Connections cut off by a timeout: idle (no byte moved), headers (sent too slowly), slow-body (a body below the minimum rate)',
      labelNames: ['phase'],
      registers,
    });
    this.#busy = new Counter({
      name: 'dicomvault_ingests_refused_busy_total',
      help: 'Ingests refused at a concurrency limit (503 / C-STORE 0xA700), by door',
      labelNames: ['door'],
      registers,
    });
    if (anchor !== undefined) {
      new Gauge({
        name: 'dicomvault_anchor_queue_depth',
        help: 'Study version roots committed and not yet anchored, by state (queued: waiting for a batch; submitted: in a batch not yet confirmed)',
        labelNames: ['state'],
        registers,
        collect() {
          const d = anchor.depth();
          this.set({ state: 'queued' }, d.queued);
          this.set({ state: 'submitted' }, d.submitted);
        },
      });
    }
    subscribe(blockVerified.name, this.#onVerified);
    subscribe(blockRejected.name, this.#onRejected);
    subscribe(decodeFailed.name, this.#onDecodeFailed);
  }

  /** Counts every request of `app` when its response closes (a response broken off counts too). */
  instrument(app: FastifyInstance): void {
    // A connection's bytes are counted against the request that ends while they were moved: a
    // small body is already read when its request begins, so counts taken at its start would miss it.
    const counted = new WeakMap<object, { read: number; written: number }>();
    app.addHook('onRequest', async (request, reply) => {
      const socket = request.raw.socket;
      const started = process.hrtime.bigint();
      reply.raw.once('close', () => {
        const route = request.routeOptions.url ?? 'unmatched';
        const action = (request.routeOptions.config as { access?: { action?: string } } | undefined)?.access?.action ?? 'other';
        const seen = counted.get(socket) ?? { read: 0, written: 0 };
        this.#requests.inc({ route, method: request.method, status: String(reply.raw.statusCode) });
        this.#bytesIn.inc({ route }, Math.max(0, socket.bytesRead - seen.read));
        this.#bytesOut.inc({ route }, Math.max(0, socket.bytesWritten - seen.written));
        counted.set(socket, { read: socket.bytesRead, written: socket.bytesWritten });
        this.#duration.observe({ action }, Number(process.hrtime.bigint() - started) / 1e9);
      });
    });
    app.get('/metrics', async (_request, reply) => reply.type(this.registry.contentType).send(await this.registry.metrics()));
  }

  countTimeout(phase: 'idle' | 'headers' | 'slow-body'): void {
    this.#timeouts.inc({ phase });
  }

  countBusy(door: 'stow' | 'dimse'): void {
    this.#busy.inc({ door });
  }

  close(): void {
    unsubscribe(blockVerified.name, this.#onVerified);
    unsubscribe(blockRejected.name, this.#onRejected);
    unsubscribe(decodeFailed.name, this.#onDecodeFailed);
    this.registry.clear();
  }
}
