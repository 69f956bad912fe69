// Sends every access as a DICOM PS3.15 audit message to the hospital's audit record repository,
// as IHE ATNA (ITI-20, Record Audit Event) asks: RFC 5424 syslog messages over TLS (RFC 5425,
// octet-counting framing) or UDP (RFC 5426, one message per datagram).
// Never in the way of a request: record() only queues (bounded, by an estimate of bytes); the
// messages are built and written later, off the request path. When the repository is slow or
// gone, the queue fills and new events are dropped and counted (stats().dropped, and a warning
// in the node's log at most every few seconds), never buffered without bound. A lost TLS
// connection is reconnected with backoff; what was queued meanwhile is sent then. Syslog has no
// acknowledgement: messages in the socket's buffer when a connection breaks are lost unseen, as
// with every RFC 5425 sender.
// Hand-written rather than with an npm syslog client: the maintained ones (e.g. syslog-client)
// write RFC 5425 frames without backpressure or a bounded queue, and the framing is one line.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { Gauge, type Registry } from 'prom-client';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { AuditEvent, AuditSink } from '../access/policy.ts';
import { VaultError } from '../core/errors.ts';
import type { AuditPatient, AuditSource } from './event-kind.ts';
import { toPs315 } from './ps315.ts';

export interface SyslogTarget {
  transport: 'udp' | 'tls';
  host: string;
  port: number;
}

/** `udp://host:port` or `tls://host:port` (default port 514 for UDP, 6514 for TLS, as RFC 5426 and 5425 assign). */
export function parseSyslogTarget(raw: string): SyslogTarget {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new VaultError('CONFIG_INVALID', `--audit-syslog must be udp://host:port or tls://host:port (got "${raw}")`);
  }
  const transport = url.protocol === 'udp:' ? 'udp' : url.protocol === 'tls:' ? 'tls' : undefined;
  if (transport === undefined || url.hostname === '' || (url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.username !== '') {
    throw new VaultError('CONFIG_INVALID', `--audit-syslog must be udp://host:port or tls://host:port (got "${raw}")`);
  }
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { transport, host, port: url.port === '' ? (transport === 'udp' ? 514 : 6514) : Number(url.port) };
}

export interface SyslogSinkOptions {
  target: SyslogTarget;
  /** TLS: the repository's CA (PEM); absent: the system's CAs. */
  ca?: string | Buffer;
  /** TLS: the node's own certificate and key (PEM) for mutual authentication, as ATNA's Secure Node asks. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The node, as AuditSourceID and network access point. */
  source: AuditSource;
  /** The patient of a study, when the catalog knows it (called off the request path). */
  patientOf?: (studyInstanceUID: string) => AuditPatient | undefined;
  /** Queue bound, bytes (estimated before the message is built). Default 8 MiB. */
  maxQueueBytes?: number;
  /** Reconnect delay bounds, ms. Default 200 and 30,000. */
  reconnect?: { minMs: number; maxMs: number };
  /** Warnings (drops, lost connections). */
  logger?: { warn(obj: object, msg: string): void };
}

export interface SyslogStats {
  /** Events waiting to be sent. */
  queued: number;
  /** Messages handed to the socket. */
  sent: number;
  /** Events dropped: the queue was full, the message could not be built or sent. */
  dropped: number;
  /** TLS: connected now (UDP: always true). */
  connected: boolean;
}

export const DEFAULT_AUDIT_QUEUE_BYTES = 8 * 1024 * 1024;
/** RFC 5424 PRI for IHE ATNA: facility 10 (security/authorization), severity 5 (notice). */
const PRI = 10 * 8 + 5;
const APP_NAME = 'dicom-vault';
/** IHE ITI TF-2 3.20.4.2: the MSGID of an RFC 3881 / DICOM audit message. */
const MSG_ID = 'IHE+RFC-3881';
/** The largest UDP payload over IPv4; a longer message cannot go as one datagram. */
const MAX_DATAGRAM = 65_507;
/** How often a run of drops is reported in the log, ms. */
const DROP_REPORT_MS = 10_000;
/** How often failed connection attempts are reported in the log, ms. */
const CONNECTION_REPORT_MS = 60_000;
/** A connection that lasted this long resets the reconnect delay, ms. */
const STABLE_CONNECTION_MS = 5_000;
/** What an event weighs in the queue beyond its URL (its message is ~1.5 KiB). */
const EVENT_OVERHEAD = 2_048;

/** RFC 5424 HOSTNAME and APP-NAME: printable US-ASCII without spaces, at most 255 characters. */
function headerField(s: string): string {
  const clean = s.replace(/[^\x21-\x7e]/g, '').slice(0, 255);
  return clean === '' ? '-' : clean;
}

/** One RFC 5424 message: header, no structured data, the XML as a UTF-8 MSG (with its BOM). */
export function syslogMessage(xml: string, time: string, host: string): Buffer {
  return Buffer.from(`<${PRI}>1 ${time} ${headerField(host)} ${APP_NAME} ${process.pid} ${MSG_ID} - \uFEFF${xml}`, 'utf8');
}

export class SyslogAuditSink implements AuditSink {
  readonly #o: SyslogSinkOptions;
  readonly #maxBytes: number;
  #queue: Array<{ event: AuditEvent; weight: number }> = [];
  #head = 0;
  #queuedBytes = 0;
  #sent = 0;
  #dropped = 0;
  #droppedReported = 0;
  #lastDropReport = 0;
  #scheduled = false;
  #closed = false;
  #udp: UdpSocket | undefined;
  #udpInFlight = 0;
  #tls: TLSSocket | undefined;
  #tlsReady = false;
  #tlsBlocked = false;
  #backoff: number;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #connectedAt = 0;
  #connectionFailures = 0;
  #lastConnectionReport = 0;

  constructor(options: SyslogSinkOptions) {
    this.#o = options;
    this.#maxBytes = options.maxQueueBytes ?? DEFAULT_AUDIT_QUEUE_BYTES;
    this.#backoff = options.reconnect?.minMs ?? 200;
    if (options.target.transport === 'udp') {
      this.#udp = createSocket(isIP(options.target.host) === 6 ? 'udp6' : 'udp4');
      // ICMP port unreachable and the like: the datagram is lost; nothing waits on it.
      this.#udp.on('error', (err) => this.#o.logger?.warn({ err }, 'audit syslog (UDP) socket error'));
      this.#udp.unref();
    } else {
      this.#connect();
    }
  }

  record(event: AuditEvent): void {
    if (this.#closed) return;
    const weight = EVENT_OVERHEAD + event.url.length * 2;
    if (this.#queuedBytes + weight > this.#maxBytes) {
      this.#drop(1);
      return;
    }
    this.#queue.push({ event, weight });
    this.#queuedBytes += weight;
    this.#schedule();
  }

  stats(): SyslogStats {
    return {
      queued: this.#queue.length - this.#head,
      sent: this.#sent,
      dropped: this.#dropped,
      connected: this.#o.target.transport === 'udp' || this.#tlsReady,
    };
  }

  /** Resolves when everything queued has left for the network (true), or after `timeoutMs` (false). */
  async flush(timeoutMs = 2_000): Promise<boolean> {
    // Polled: a socket says 'drain' only after a write it refused, not whenever its buffer empties.
    const until = Date.now() + timeoutMs;
    while (!this.#isIdle()) {
      if (Date.now() >= until) return false;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return true;
  }

  /** Sends what is queued (waiting at most `timeoutMs`), then closes the connection; later events are ignored. */
  async close(timeoutMs = 2_000): Promise<void> {
    if (this.#closed) return;
    await this.flush(timeoutMs);
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    const left = this.#queue.length - this.#head;
    if (left > 0) this.#drop(left);
    this.#queue = [];
    this.#head = 0;
    this.#udp?.close();
    const tls = this.#tls;
    this.#tls = undefined;
    if (tls !== undefined && !tls.destroyed) {
      await new Promise<void>((resolve) => {
        tls.once('close', () => resolve());
        tls.end();
        setTimeout(() => tls.destroy(), 1_000).unref();
      });
    }
  }

  #isIdle(): boolean {
    return this.#queue.length === this.#head && this.#udpInFlight === 0 && (this.#tls === undefined || this.#tls.writableLength === 0);
  }

  #drop(n: number): void {
    this.#dropped += n;
    const now = Date.now();
    if (now - this.#lastDropReport >= DROP_REPORT_MS) {
      this.#o.logger?.warn(
        {
          dropped: this.#dropped - this.#droppedReported,
          droppedTotal: this.#dropped,
          target: `${this.#o.target.transport}://${this.#o.target.host}:${this.#o.target.port}`,
        },
        'audit messages dropped: the audit repository does not keep up or is unreachable',
      );
      this.#lastDropReport = now;
      this.#droppedReported = this.#dropped;
    }
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  #shift(): AuditEvent | undefined {
    if (this.#head === this.#queue.length) return undefined;
    const item = this.#queue[this.#head]!;
    this.#queue[this.#head] = undefined as never;
    this.#head++;
    this.#queuedBytes -= item.weight;
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return item.event;
  }

  #message(event: AuditEvent): Buffer | undefined {
    try {
      const study = event.resource.studyInstanceUID;
      const patient = study === undefined ? undefined : this.#o.patientOf?.(study);
      return syslogMessage(toPs315(event, this.#o.source, patient), event.time, this.#o.source.host);
    } catch (err) {
      this.#o.logger?.warn({ err }, 'audit message could not be built');
      return undefined;
    }
  }

  /** Moves queued events to the socket, a batch at a time, as far as the socket takes them. */
  #pump(): void {
    if (this.#closed) return;
    const started = performance.now();
    if (this.#udp !== undefined) {
      // A bound on datagrams in flight keeps the socket's own queue (and memory) small.
      while (this.#udpInFlight < 64) {
        const event = this.#shift();
        if (event === undefined) break;
        const msg = this.#message(event);
        if (msg === undefined || msg.length > MAX_DATAGRAM) {
          this.#drop(1);
          continue;
        }
        this.#udpInFlight++;
        this.#udp.send(msg, this.#o.target.port, this.#o.target.host, (err) => {
          this.#udpInFlight--;
          if (err) this.#drop(1);
          else this.#sent++;
          if (this.#queue.length > this.#head) this.#schedule();
        });
        // Yield to requests after a few ms of building messages.
        if (performance.now() - started > 5) break;
      }
      if (this.#queue.length > this.#head && this.#udpInFlight < 64) this.#schedule();
      return;
    }
    const tls = this.#tls;
    if (tls === undefined || !this.#tlsReady || this.#tlsBlocked) return;
    for (;;) {
      const event = this.#shift();
      if (event === undefined) break;
      const msg = this.#message(event);
      if (msg === undefined) {
        this.#drop(1);
        continue;
      }
      this.#sent++;
      // RFC 5425 4.3: MSG-LEN SP SYSLOG-MSG, the length in octets.
      const more = tls.write(Buffer.concat([Buffer.from(`${msg.length} `), msg]));
      if (!more) {
        this.#tlsBlocked = true;
        tls.once('drain', () => {
          this.#tlsBlocked = false;
          this.#schedule();
        });
        return;
      }
      if (performance.now() - started > 5) {
        this.#schedule();
        return;
      }
    }
  }

  #connect(): void {
    if (this.#closed) return;
    const { host, port } = this.#o.target;
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      ...(this.#o.ca !== undefined ? { ca: this.#o.ca } : {}),
      ...(this.#o.cert !== undefined ? { cert: this.#o.cert } : {}),
      ...(this.#o.key !== undefined ? { key: this.#o.key } : {}),
    });
    this.#tls = socket;
    socket.setNoDelay(true);
    socket.on('secureConnect', () => {
      this.#tlsReady = true;
      this.#tlsBlocked = false;
      this.#connectedAt = Date.now();
      this.#schedule();
    });
    // The repository sends nothing on this connection; reading keeps a close from it noticed.
    socket.on('data', () => {});
    socket.on('error', (err) => {
      if (this.#closed) return;
      // One warning per CONNECTION_REPORT_MS at most, with the count: a repository that is down
      // for an hour is one line every few minutes, not one per attempt.
      this.#connectionFailures++;
      const now = Date.now();
      if (now - this.#lastConnectionReport >= CONNECTION_REPORT_MS) {
        this.#o.logger?.warn({ err, target: `tls://${host}:${port}`, failures: this.#connectionFailures }, 'audit syslog connection failed; reconnecting');
        this.#lastConnectionReport = now;
        this.#connectionFailures = 0;
      }
    });
    socket.on('close', () => {
      if (this.#tls !== socket) return;
      this.#tlsReady = false;
      this.#tls = undefined;
      if (this.#closed) return;
      // The delay starts over only after a connection that lasted: a repository that accepts and
      // then closes at once (a refused client certificate under TLS 1.3) is retried with backoff.
      if (this.#connectedAt > 0 && Date.now() - this.#connectedAt >= STABLE_CONNECTION_MS) this.#backoff = this.#o.reconnect?.minMs ?? 200;
      this.#connectedAt = 0;
      const delay = this.#backoff;
      this.#backoff = Math.min(this.#backoff * 2, this.#o.reconnect?.maxMs ?? 30_000);
      this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
      this.#reconnectTimer.unref();
    });
  }
}

/** The sink's counts on the node's /metrics: what an operator alerts on when the repository falls behind. */
export function registerSyslogMetrics(sink: SyslogAuditSink, registry: Registry): void {
  new Gauge({
    name: 'dicomvault_audit_syslog_messages',
    help: 'Audit messages for the audit repository (--audit-syslog), by state: queued now; sent and dropped since start',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const s = sink.stats();
      this.set({ state: 'queued' }, s.queued);
      this.set({ state: 'sent' }, s.sent);
      this.set({ state: 'dropped' }, s.dropped);
    },
  });
  new Gauge({
    name: 'dicomvault_audit_syslog_connected',
    help: 'Whether the TLS connection to the audit repository is up (1; UDP: always 1)',
    registers: [registry],
    collect() {
      this.set(sink.stats().connected ? 1 : 0);
    },
  });
}
