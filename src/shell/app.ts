// The HTTP app factory (separate from listen(), so tests and the CLI build it the same way). One
// error handler turns every thrown error into a response; one access hook checks and records
// every DICOMweb request; each DICOMweb service lives in its own file under dicomweb/. Beside
// DICOMweb: /healthz (alive), /readyz (catalog, block store and chain reachable) and /metrics.
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { type AccessPolicy, type AccessRouteConfig, type AuditEvent, type AuditSink, resourceOf } from '../access/policy.ts';
import { auditContext, whoOf } from './audit.ts';
import { admitted, admitWhileHandling } from './admitted.ts';
import { DICOMWEB_PREFIX } from './config.ts';
import { VaultError, isVaultError } from '../core/errors.ts';
import { qidoService, type QidoDeps } from './dicomweb/qido.ts';
import { stowService, type StowDeps } from './dicomweb/stow.ts';
import { wadoService, type WadoDeps } from './dicomweb/wado.ts';
import { renderedService } from './dicomweb/rendered.ts';
import { receiptService, type ReceiptDeps } from './dicomweb/receipt.ts';
import { PublicUrls } from './dicomweb/public-url.ts';
import type { NodeMetrics } from './metrics.ts';
import { REDACTING_SERIALIZERS } from './log.ts';
import type { GrantWatch } from '../access/grant-watch.ts';
import { patientApi, type PatientApiDeps } from './api/patient.ts';
import { viewer, type ViewerOptions } from './viewer.ts';
import { type DoctorOidc, doctorPage } from './doctor.ts';
import { DEFAULT_LIMITS, IngestLimiter, type LimitOptions } from './limits.ts';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';

export interface AppDeps extends QidoDeps {
  store: StowDeps['store'] & WadoDeps['store'];
  keys: StowDeps['keys'] & WadoDeps['keys'];
  catalog: QidoDeps['catalog'] & WadoDeps['catalog'] & ReceiptDeps['catalog'];
  writer: StowDeps['writer'];
  chunkSize: number;
  logger: Logger;
  access: AccessPolicy;
  audit: AuditSink;
  /** Anchor receipts (GET /studies/{study}/receipt); absent when the node does not anchor. */
  receipts?: ReceiptDeps['receipts'];
  /** Where the URLs the node hands out point (--public-url, trusted proxies). Default: from each request. */
  urls?: PublicUrls;
  /** Prometheus metrics at /metrics; absent: no /metrics. */
  metrics?: NodeMetrics;
  /** What /readyz checks, each with a name; a check throws (or times out) when its part is not ready. */
  readiness?: ReadinessCheck[];
  /** Concurrency limits and timeouts. Default DEFAULT_LIMITS. */
  limits?: LimitOptions;
  /** Ingest slots, shared with the DIMSE SCP. Default: one made from `limits`. */
  ingests?: IngestLimiter;
  /** HTTPS with this certificate and key; absent: plain HTTP. */
  tls?: { cert: Buffer; key: Buffer };
  /** Cuts responses that rest on a grant once it is revoked or ends (src/access/grant-watch.ts). */
  grantWatch?: Pick<GrantWatch, 'watch'>;
  /** The patients' API under /api (enrollment, keys, grants, share links, token exchange); absent: none (open mode). */
  patientApi?: PatientApiDeps;
  /** The doctor's page (/doctor/) and the OHIF Viewer (/viewer/); absent: neither (open mode). */
  viewer?: ViewerOptions & { doctorDir?: string; oidc?: DoctorOidc };
}

export interface ReadinessCheck {
  name: string;
  check(signal: AbortSignal): Promise<void>;
}

/** How long /readyz waits for one check, ms. */
export const READINESS_TIMEOUT_MS = 2_000;

declare module 'fastify' {
  interface FastifyRequest {
    principal?: import('../access/policy.ts').Principal;
    /** The access seam's decision for this request: what of the catalog it may see (routes pass `scope` down). */
    access?: import('../access/policy.ts').AccessDecision;
    /** Why identifying the caller failed (for the audit log). */
    auditReason?: string;
  }
}

export function buildApp(deps: AppDeps): FastifyInstance {
  const logger: FastifyBaseLogger = deps.logger.child({ component: 'http' }, { serializers: REDACTING_SERIALIZERS });
  const urls = deps.urls ?? new PublicUrls(DICOMWEB_PREFIX);
  const limits = deps.limits ?? DEFAULT_LIMITS;
  const ingests = deps.ingests ?? new IngestLimiter(limits.maxIngests, limits.maxIngestsPerClient);
  const app = Fastify({
    loggerInstance: logger,
    // Forwarding headers (and so request.ip) are believed from configured proxies only.
    trustProxy: (address: string) => urls.trusts(address),
    // Bodies of STOW requests are streamed by the service; nothing here buffers them.
    bodyLimit: 1024 * 1024,
    // A TB study takes hours: no limit on a whole request, but on a connection that stops moving
    // (the idle timeout below), and on headers that trickle in (slowloris).
    requestTimeout: 0,
    // fastify's connectionTimeout and keepAliveTimeout do not reach a server of our own making.
    serverFactory: (handler) => {
      const serverOptions = {
        headersTimeout: limits.headersTimeoutS * 1000,
        requestTimeout: 0,
        keepAliveTimeout: limits.keepAliveTimeoutS * 1000,
        // Node checks the headers timeout on this period (30 s unless told).
        connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutS * 500),
      };
      const server = deps.tls === undefined ? createServer(serverOptions, handler) : createHttpsServer({ ...serverOptions, ...deps.tls }, handler);
      server.setTimeout(limits.idleTimeoutS * 1000);
      return server;
    },
    return503OnClosing: true,
    // Frame lists (frames/1,2,3,...) and UID lists run long: find-my-way's 100 characters would
    // refuse a list of about 30 frames with 414.
    routerOptions: { maxParamLength: 16 * 1024 },
  });
  // A connection that moved no byte for the idle timeout: an upload or a download that stalled.
  app.server.on('timeout', (socket: Socket) => {
    deps.metrics?.countTimeout('idle');
    logger.warn({ remoteAddress: socket.remoteAddress, idleTimeoutS: limits.idleTimeoutS }, 'connection cut off: no progress within the idle timeout');
    socket.destroy();
  });
  app.server.on('clientError', (err: NodeJS.ErrnoException) => {
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') deps.metrics?.countTimeout('headers');
  });

  // STOW bodies are handed to the service as the raw request stream.
  app.addContentTypeParser(['multipart/related', 'application/dicom'], (_req, payload, done) => done(null, payload));

  app.setErrorHandler((err: FastifyError | VaultError | Error, request: FastifyRequest, reply: FastifyReply) => {
    const vault = toVaultError(err);
    if (reply.sent || reply.raw.headersSent) {
      // A streamed response is under way: the only honest signal left is a broken connection.
      request.log.error({ err, code: vault.code, details: vault.details }, 'response aborted after headers were sent');
      reply.raw.destroy(err);
      return;
    }
    if (vault.status >= 500) request.log.error({ err, code: vault.code, details: vault.details }, vault.message);
    else request.log.info({ code: vault.code, reason: vault.message }, 'request refused');
    const challenge = vault.details?.wwwAuthenticate;
    if (vault.code === 'UNAUTHORIZED') void reply.header('www-authenticate', typeof challenge === 'string' ? challenge : 'Bearer realm="dicom-vault"');
    void reply
      .code(vault.status)
      .type('application/json')
      .send({ code: vault.code, message: vault.message, ...(vault.details ? { details: vault.details } : {}) });
  });

  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ code: 'NOT_FOUND', message: `no route for ${request.method} ${request.url.split('?')[0]}` });
  });

  deps.metrics?.instrument(app);
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const results = await Promise.all(
      (deps.readiness ?? []).map(async ({ name, check }) => {
        try {
          await check(AbortSignal.timeout(READINESS_TIMEOUT_MS));
          return { name, ok: true };
        } catch (err) {
          return { name, ok: false, reason: err instanceof Error ? err.message : String(err) };
        }
      }),
    );
    const failed = results.filter((r) => !r.ok);
    return reply.code(failed.length === 0 ? 200 : 503).send({
      status: failed.length === 0 ? 'ready' : 'not ready',
      ...(failed.length > 0 ? { reason: failed.map((f) => `${f.name}: ${f.reason}`).join('; ') } : {}),
      checks: results,
    });
  });

  void app.register(
    async (scope) => {
      // The access seam: identify the caller, check the route's declared action against the
      // resource the URL names, record every access. Routes without a declaration are refused.
      scope.addHook('preHandler', async (request, reply) => {
        const declared = (request.routeOptions.config as Partial<AccessRouteConfig>).access;
        if (!declared) throw new VaultError('FORBIDDEN', 'route declares no access rule');
        let principal: import('../access/policy.ts').Principal;
        try {
          principal = await deps.access.identify(request);
        } catch (err) {
          // Recorded with the request: a failed identity's reason is an audit fact.
          request.auditReason = err instanceof Error ? err.message : String(err);
          throw err;
        }
        request.principal = principal;
        const resource = resourceOf(declared.action, request.params as Record<string, string>, declared.dataType);
        const decision = await deps.access.authorize(principal, resource);
        request.access = decision;
        if (!decision.allowed) throw new VaultError('FORBIDDEN', decision.reason ?? 'access not granted');
        // A client gone while it was identified has had its outcome recorded (on 'close'): an
        // access admitted now would have none, and is served to no one.
        if (reply.raw.destroyed) throw new VaultError('ABORTED', 'the client closed the connection before it was served');
        // Recorded on disk before a byte is served; a log that cannot be written refuses (503).
        // A read is handled while its entry is committed (src/shell/admitted.ts); a store waits
        // for it first, so nothing is stored by an access that was not recorded.
        if (deps.audit.admit !== undefined) {
          const admission = deps.audit.admit(auditEventOf(request, reply, declared));
          if (declared.action === 'store') await admission;
          else admitWhileHandling(request, admission, (status, bytes) => deps.audit.respond?.(request.id, status, bytes));
        }
        if (decision.grants !== undefined && decision.grants.length > 0) deps.grantWatch?.watch(decision.grants, reply);
      });
      // The response of an access admitted while handling starts once that access is on record.
      scope.addHook('onSend', async (request, reply, payload) => {
        try {
          await admitted(request, { status: reply.statusCode, payload });
        } catch (err) {
          if (payload !== null && typeof payload === 'object' && 'destroy' in payload && typeof payload.destroy === 'function') payload.destroy();
          throw err;
        }
        return payload;
      });
      // Who stores, for the study versions a STOW makes (src/shell/audit.ts): its handler runs in
      // that context.
      scope.addHook('onRoute', (route) => {
        if ((route.config as Partial<AccessRouteConfig> | undefined)?.access?.action !== 'store') return;
        const handler = route.handler;
        route.handler = function (this: FastifyInstance, request, reply) {
          const who = request.principal === undefined ? { id: 'unidentified' } : whoOf(request.principal);
          return auditContext.run({ who, source: 'stow', address: request.ip }, () => handler.call(this, request, reply));
        };
      });
      // Recorded when the response closes, not on fastify's onResponse: that needs 'finish', and
      // a response broken off mid-stream (a corrupt block, the client gone) never finishes.
      scope.addHook('onRequest', async (request, reply) => {
        const written = request.raw.socket?.bytesWritten ?? 0;
        reply.raw.once('close', () => {
          const declared = (request.routeOptions.config as Partial<AccessRouteConfig>).access;
          if (!declared) return;
          deps.audit.record({ ...auditEventOf(request, reply, declared), bytes: Math.max(0, (request.raw.socket?.bytesWritten ?? written) - written) });
        });
      });
      await scope.register(stowService({ ...deps, urls, ingests, limits }));
      await scope.register(qidoService(deps));
      await scope.register(wadoService({ ...deps, urls }));
      await scope.register(renderedService({ ...deps, urls }));
      await scope.register(receiptService({ catalog: deps.catalog, ...(deps.receipts ? { receipts: deps.receipts } : {}) }));
    },
    { prefix: DICOMWEB_PREFIX },
  );
  if (deps.patientApi !== undefined) void app.register(patientApi(deps.patientApi), { prefix: '/api' });
  if (deps.viewer !== undefined) {
    void app.register(viewer(deps.viewer));
    void app.register(
      doctorPage({
        ...(deps.viewer.doctorDir !== undefined ? { dir: deps.viewer.doctorDir } : {}),
        ...(deps.viewer.oidc !== undefined ? { oidc: deps.viewer.oidc } : {}),
      }),
    );
  }

  return app;
}

/** The access seam's record of a request as it stands. */
function auditEventOf(request: FastifyRequest, reply: FastifyReply, declared: AccessRouteConfig['access']): AuditEvent {
  const reason = request.auditReason ?? (request.access?.allowed === false ? request.access.reason : undefined);
  const grants = request.access?.grants?.map((g) => g.id);
  return {
    time: new Date().toISOString(),
    principal: request.principal ?? { id: 'unidentified', roles: [], method: 'none' },
    resource: resourceOf(declared.action, request.params as Record<string, string>, declared.dataType),
    method: request.method,
    url: request.url,
    status: reply.statusCode,
    complete: reply.raw.writableFinished,
    remoteAddress: request.ip,
    id: request.id,
    ...(request.access?.basis !== undefined ? { basis: request.access.basis } : {}),
    ...(reason !== undefined ? { reason } : {}),
    ...(grants !== undefined && grants.length > 0 ? { grants } : {}),
  };
}

/** Fastify's own errors (bad content type, malformed URL...) mapped into the catalogue. */
function toVaultError(err: FastifyError | VaultError | Error): VaultError {
  if (isVaultError(err)) return err;
  const code = (err as FastifyError).code;
  switch (code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new VaultError('UNSUPPORTED_MEDIA_TYPE', err.message, { cause: err });
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new VaultError('TOO_LARGE', err.message, { cause: err });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_BAD_URL':
    case 'FST_ERR_VALIDATION':
      return new VaultError('BAD_REQUEST', err.message, { cause: err });
  }
  const status = (err as FastifyError).statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return new VaultError('BAD_REQUEST', err.message, { cause: err });
  return new VaultError('INTERNAL', 'internal error', { cause: err });
}
