// `dicom-vault serve`: opens the data directory and serves DICOMweb until told to stop.
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { VaultError } from '../core/errors.ts';
import { PatientControlPolicy } from '../access/patient-control.ts';
import { GrantWatch } from '../access/grant-watch.ts';
import { createOidcVerifier } from '../identity/oidc.ts';
import { webauthnRpOf } from './api/patient.ts';
import type { Logger } from 'pino';
import { openPolicy, type AccessPolicy, type AuditSink } from '../access/policy.ts';
import { logAuditSink } from './log.ts';
import { accessAuditSink, auditContext, auditHeadLeaf, StudyPatients } from './audit.ts';
import { auditApi } from './api/audit.ts';
import type { DimseIngest } from './dimse/scp.ts';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { identity } from 'multiformats/hashes/identity';
import { createChainClient } from '../../anchor/chain/client.ts';
import { buildApp, type ReadinessCheck } from './app.ts';
import { checkViewerInstalled } from './viewer.ts';
import { PublicUrls } from './dicomweb/public-url.ts';
import { NodeMetrics } from './metrics.ts';
import { IngestLimiter } from './limits.ts';
import { dimseIngest } from './dimse/ingest.ts';
import { startDimseServer, type DimseServer } from './dimse/scp.ts';
import { DICOMWEB_PREFIX, type NodeOptions } from './config.ts';
import { openVault, type Vault } from './vault.ts';
import { PatientExports } from './patient-export.ts';
import { createLogger } from './log.ts';
import { nodeTrustAnchor, startAnchoring, type Anchoring } from '../../anchor/anchoring.ts';
import type { AnchorConfig } from '../../anchor/config.ts';
import type { AnchorServiceOptions } from '../../anchor/service.ts';
import { sharedCryptoPool } from '../format/crypto-pool.ts';
import { hostname } from 'node:os';
import { composeSinks } from '../audit/compose.ts';
import { catalogPatients } from '../audit/patients.ts';
import type { AuditSource } from '../audit/event-kind.ts';
import { registerSyslogMetrics, SyslogAuditSink } from '../audit/syslog.ts';
import { csrfGuard, loadBundles, type PageChain, webPages } from './web.ts';

export interface RunningNode {
  /** The DIMSE Storage SCP, when it runs: its port. */
  dimse?: { port: number };
  vault: Vault;
  app: FastifyInstance;
  /** e.g. http://127.0.0.1:8080/dicom-web */
  url: string;
  /** Study root anchoring, when the node runs it. */
  anchoring?: Anchoring;
  /** The audit repository's syslog sink (--audit-syslog), when configured: its stats() count what was sent and dropped. */
  auditSyslog?: SyslogAuditSink;
  close(): Promise<void>;
}

export interface StartNodeExtras {
  /** Anchor study roots as options.anchor says (`dicom-vault serve` does). Default false: tests and embedders opt in. */
  anchoring?: boolean;
  /** Anchor service tuning (tests). */
  anchorService?: AnchorServiceOptions;
  /** Who may do what (src/access/policy.ts). Default: patient control (tokens, roles, grants), or with options.open the open policy. */
  access?: AccessPolicy;
  /** Where every access is recorded. Default: the audit log (src/shell/audit.ts), and a line in the node's log. */
  audit?: AuditSink;
}

export async function startNode(options: NodeOptions, logger: Logger = createLogger(options.logLevel), extras: StartNodeExtras = {}): Promise<RunningNode> {
  // The pages (src/shell/web.ts) go with the patient API: checked first, a missing build stops the start before anything opens.
  const pages = options.open ? undefined : loadBundles();
  // The doctor's viewer is installed with the node (npm ci), never fetched at run time: missing, the node does not start.
  if (!options.open) checkViewerInstalled();
  const vault = await openVault(options, logger);
  let anchoring: Anchoring | undefined;
  if (extras.anchoring && options.anchor && options.anchor.mode !== 'none') {
    try {
      anchoring = await startAnchoring({
        config: options.anchor,
        dataDir: options.dataDir,
        catalog: vault.catalog,
        // The audit log's latest head rides in batches of study roots that have room: no transaction of its own.
        extraLeaf: auditHeadLeaf(vault.audit.store),
        logger,
        saltOf: (study) => vault.keys.anchorSalt(study),
        ...(extras.anchorService ? { service: extras.anchorService } : {}),
      });
    } catch (err) {
      await vault.close();
      throw err;
    }
  }
  const metrics = new NodeMetrics(
    anchoring === undefined
      ? undefined
      : {
          depth: () => {
            const stats = anchoring.state.stats();
            return { queued: stats.leaves.pending, submitted: stats.leaves.submitted };
          },
        },
  );
  const ingests = new IngestLimiter(options.limits.maxIngests, options.limits.maxIngestsPerClient);
  const urls = new PublicUrls(DICOMWEB_PREFIX, { ...(options.publicUrl ? { publicUrl: options.publicUrl } : {}), trustedProxies: options.trustedProxies });
  let tls: { cert: Buffer; key: Buffer } | undefined;
  try {
    tls = options.tls === undefined ? undefined : { cert: readFileSync(options.tls.certFile), key: readFileSync(options.tls.keyFile) };
  } catch (cause) {
    await anchoring?.close();
    await vault.close();
    throw new VaultError('CONFIG_INVALID', `cannot read --tls-cert or --tls-key: ${(cause as Error).message}`, { cause });
  }
  let auditSyslog: SyslogAuditSink | undefined;
  try {
    auditSyslog = options.auditSyslog === undefined ? undefined : openAuditSyslog(options.auditSyslog, vault, logger);
    if (auditSyslog !== undefined) registerSyslogMetrics(auditSyslog, metrics.registry);
  } catch (err) {
    metrics.close();
    await anchoring?.close();
    await vault.close();
    throw err;
  }
  const secure = (request: FastifyRequest): boolean => secureTransport(request, urls);
  // Passkeys need a secure context: the public URL's, or, for `npm start` on this machine (a loopback
  // address, a fixed port), http://localhost:PORT, which browsers treat as one.
  const loopbackHost = options.host === 'localhost' || options.host === '::1' || options.host.startsWith('127.');
  const webauthn = webauthnRpOf(options.publicUrl ?? (loopbackHost && options.port !== 0 ? `http://localhost:${options.port}` : undefined));
  const oidc = options.oidc === undefined ? undefined : createOidcVerifier(options.oidc);
  // A wrong issuer shows at start, in the log; the node serves local tokens meanwhile and asks again at the next JWT.
  oidc?.discover().catch((err: unknown) => logger.warn({ err, issuer: options.oidc?.issuer }, 'OpenID provider not reachable yet'));
  const policy = options.open
    ? undefined
    : new PatientControlPolicy({ identity: vault.identity, grants: vault.grants, secureTransport: secure, ...(oidc !== undefined ? { oidc } : {}) });
  const access = extras.access ?? policy ?? openPolicy;
  const grantWatch = new GrantWatch(vault.grants);
  // Patients' exports for another provider (GDPR Art. 20): prepared in the background.
  const patientExports = policy === undefined ? undefined : new PatientExports(vault);
  const app = buildApp({
    logger,
    ...(tls === undefined ? {} : { tls }),
    limits: options.limits,
    ingests,
    urls,
    metrics,
    readiness: readinessChecks(vault, anchoring),
    store: vault.store,
    keys: vault.keys,
    catalog: vault.catalog,
    writer: vault.writer,
    chunkSize: options.chunkSize,
    access,
    grantWatch,
    audit: composeSinks(
      [
        ...(extras.audit !== undefined
          ? [extras.audit]
          : [
              accessAuditSink({ audit: vault.audit, patients: new StudyPatients(vault.catalog), identity: vault.identity, grants: vault.grants }),
              logAuditSink(logger),
            ]),
        ...(auditSyslog ? [auditSyslog] : []),
      ],
      (err) => logger.error({ err }, 'an audit sink failed'),
    ),
    ...(policy === undefined
      ? {}
      : {
          viewer:
            options.oidc !== undefined && options.oidcClientId !== undefined
              ? { oidc: { issuer: options.oidc.issuer, clientId: options.oidcClientId, audience: options.oidc.audience } }
              : {},
          patientApi: {
            identity: vault.identity,
            grants: vault.grants,
            identify: (request: FastifyRequest) => policy.identify(request),
            secureTransport: secure,
            ...(webauthn !== undefined ? { webauthn } : {}),
            ...(options.publicUrl !== undefined ? { publicUrl: options.publicUrl } : {}),
            audit: auditApi({
              audit: vault.audit,
              identity: vault.identity,
              identify: (request: FastifyRequest) => policy.identify(request),
              ...(anchoring ? { receipts: anchoring.state } : {}),
              source: auditSourceOf(options.auditSyslog),
              patientOf: catalogPatients(vault.catalog),
            }),
            erasure: {
              service: vault.erasure,
              catalog: vault.catalog,
              ...(anchoring ? { receiptOf: (cid: string) => anchoring.state.receipt(cid) } : {}),
            },
            ...(patientExports ? { exports: patientExports } : {}),
          },
        }),
    ...(anchoring ? { receipts: { state: anchoring.state, requiredConfirmations: anchoring.service.requiredConfirmations } } : {}),
  });
  if (pages !== undefined) {
    app.addHook('onRequest', csrfGuard(options.publicUrl));
    const chain = anchoring === undefined || options.anchor === undefined ? undefined : await pageChain(options.anchor, anchoring.rpcUrl, options.dataDir);
    void app.register(
      webPages({
        bundles: pages,
        secureTransport: secure,
        ...(options.publicUrl !== undefined ? { publicUrl: options.publicUrl } : {}),
        ...(chain !== undefined ? { chain } : {}),
      }),
    );
  }
  // The patient API's refusals (a session that fails to open, a request without a patient
  // session) are audit facts too; the DICOMweb seam records its own.
  app.addHook('onError', async (request, _reply, error) => {
    request.auditReason = error.message;
  });
  app.addHook('onResponse', async (request, reply) => {
    if (!request.url.startsWith('/api/') || (reply.statusCode !== 401 && reply.statusCode !== 403)) return;
    const route = request.routeOptions.url ?? request.url.split('?')[0]!;
    vault.audit.log.note({
      kind: 'refused',
      who: { id: request.principal?.id ?? 'unidentified' },
      what: { action: `${request.method} ${route}`, status: reply.statusCode },
      where: { address: request.ip, method: request.method, url: route },
      ...(request.auditReason !== undefined ? { why: request.auditReason } : {}),
    });
  });
  // The crypto workers start now, not on the first request that needs them (a WADO's first
  // byte after a start waited ~150 ms for them).
  sharedCryptoPool().warm();
  try {
    await app.listen({ host: options.host, port: options.port });
  } catch (err) {
    grantWatch.close();
    metrics.close();
    await auditSyslog?.close();
    await anchoring?.close();
    await vault.close();
    throw err;
  }
  let dimse: DimseServer | undefined;
  if (options.dimse !== undefined) {
    try {
      dimse = await startDimseServer({
        host: options.host,
        port: options.dimse.port,
        aeTitle: options.dimse.aeTitle,
        ...(options.dimse.allowedCallingAeTitles.length > 0 ? { allowedCallingAeTitles: options.dimse.allowedCallingAeTitles } : {}),
        logger,
        ingest: auditedDimse(dimseIngest(vault, options.chunkSize, { ingests, metrics })),
      });
    } catch (err) {
      await app.close();
      grantWatch.close();
      metrics.close();
      await auditSyslog?.close();
      await anchoring?.close();
      await vault.close();
      throw err;
    }
  }
  if (options.open) {
    logger.warn({ host: options.host }, 'OPEN MODE (--open): every DICOMweb route answers anyone on this machine without identity; for development only');
  } else if (vault.identity.users().length === 0) {
    // A first start: say how to get in rather than leave the operator with 401s.
    logger.warn(
      `no accounts yet: every DICOMweb request needs a bearer token; make one with \`npx dicom-vault user add NAME --role staff,ingest --data-dir ${options.dataDir}\``,
    );
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const scheme = tls === undefined ? 'http' : 'https';
  return {
    vault,
    app,
    url: `${scheme}://${host}:${port}${DICOMWEB_PREFIX}`,
    ...(anchoring ? { anchoring } : {}),
    ...(auditSyslog ? { auditSyslog } : {}),
    ...(dimse ? { dimse: { port: dimse.port } } : {}),
    async close() {
      // New work stops on both doors at once; what is in flight finishes (or is broken off by
      // the caller's timeout) before the stores close.
      await Promise.all([app.close(), dimse?.close()]);
      await patientExports?.close();
      grantWatch.close();
      metrics.close();
      // After the last request closed: its audit message is queued, and goes out before the stores close.
      await auditSyslog?.close();
      await anchoring?.close();
      await vault.close();
    },
  };
}

/** The node as audit records name it (--audit-source-id, default the host name; --audit-site-id): the syslog messages and the BALP export alike. */
function auditSourceOf(o: Pick<NonNullable<NodeOptions['auditSyslog']>, 'sourceId' | 'siteId'> | undefined): AuditSource {
  const host = hostname();
  return { sourceId: o?.sourceId ?? host, host, ...(o?.siteId !== undefined ? { enterpriseSiteId: o.siteId } : {}) };
}

/** The syslog sink of --audit-syslog; CONFIG_INVALID when its PEM files cannot be read. */
function openAuditSyslog(o: NonNullable<NodeOptions['auditSyslog']>, vault: Vault, logger: Logger): SyslogAuditSink {
  let pem: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  try {
    pem = {
      ...(o.caFile !== undefined ? { ca: readFileSync(o.caFile) } : {}),
      ...(o.certFile !== undefined ? { cert: readFileSync(o.certFile) } : {}),
      ...(o.keyFile !== undefined ? { key: readFileSync(o.keyFile) } : {}),
    };
  } catch (cause) {
    throw new VaultError('CONFIG_INVALID', `cannot read --audit-syslog-ca, -cert or -key: ${(cause as Error).message}`, { cause });
  }
  return new SyslogAuditSink({
    target: o.target,
    ...pem,
    source: auditSourceOf(o),
    patientOf: catalogPatients(vault.catalog),
    logger: logger.child({ component: 'audit-syslog' }),
  });
}

/** C-STOREs run in the audit context of their calling AE title: the study versions they make name it. */
function auditedDimse(inner: DimseIngest): DimseIngest {
  return {
    store: (part10, o) => auditContext.run({ who: { id: `ae:${o.callingAeTitle}`, method: 'dimse' }, source: 'dimse' }, () => inner.store(part10, o)),
  };
}

/** A CID no store holds (the identity of zero bytes as a raw block): asking for it touches the store and nothing else. */
const PROBE_CID = CID.createV1(raw.code, identity.digest(new Uint8Array(0)));

/** What /readyz checks: the catalog answers, the block store answers, the chain (when anchoring) answers. */
function readinessChecks(vault: Vault, anchoring: Anchoring | undefined): ReadinessCheck[] {
  const checks: ReadinessCheck[] = [
    { name: 'catalog', check: async () => void vault.catalog.latestVersion('0') },
    { name: 'store', check: async (signal) => void (await vault.store.has(PROBE_CID, { signal })) },
  ];
  if (anchoring !== undefined) {
    const client = createChainClient({ rpcUrl: anchoring.rpcUrl });
    checks.push({
      name: 'chain',
      check: async (signal) => {
        await Promise.race([
          client.public.getBlockNumber({ cacheTime: 0 }),
          new Promise((_, reject) =>
            signal.addEventListener('abort', () => reject(new Error(`no answer from ${anchoring.rpcUrl} within the timeout`)), { once: true }),
          ),
        ]);
      },
    });
  }
  return checks;
}

/**
 * Whether a bearer token may come over this request's connection: TLS; a loopback peer (nothing
 * crosses a network); or a trusted proxy that says the client reached it over HTTPS.
 */
function secureTransport(request: FastifyRequest, urls: PublicUrls): boolean {
  const socket = request.raw.socket as { encrypted?: boolean; remoteAddress?: string };
  if (socket.encrypted === true) return true;
  const peer = socket.remoteAddress ?? '';
  if (peer === '::1' || peer.startsWith('127.') || peer.startsWith('::ffff:127.')) return true;
  if (!urls.trusts(peer)) return false;
  const forwarded = /proto=("?)https\1/i.test(String(request.headers.forwarded ?? ''));
  const xfp =
    String(request.headers['x-forwarded-proto'] ?? '')
      .split(',')[0]
      ?.trim()
      .toLowerCase() === 'https';
  return forwarded || xfp;
}

/**
 * The chain patients' browsers check the audit log's anchors on (src/shell/web.ts, /web/chain.json):
 * --browser-chain-rpc, else the embedded chain's own RPC (on loopback: a browser on this machine
 * reaches it), never an external chain's configured URL, which may carry an API key. The pin is the
 * one `anchor trust-file` prints, without asking the chain (the page pins it on first use).
 */
async function pageChain(config: AnchorConfig, nodeRpcUrl: string, dataDir: string): Promise<PageChain | undefined> {
  const rpcUrl = config.browserRpcUrl ?? (config.mode === 'embedded' ? nodeRpcUrl : undefined);
  if (rpcUrl === undefined) return undefined;
  const pin = await nodeTrustAnchor(config, dataDir);
  return {
    rpcUrl,
    ...(pin !== undefined
      ? {
          pin: {
            chainId: pin.chainId,
            contract: pin.contract,
            ...(pin.genesisHash !== undefined ? { genesisHash: pin.genesisHash } : {}),
            ...(pin.confirmations !== undefined ? { confirmations: pin.confirmations } : {}),
          },
        }
      : {}),
  };
}
