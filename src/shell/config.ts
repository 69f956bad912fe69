// The node's configuration: typed, with every default named, validated once at start-up from
// command-line flags and DICOM_VAULT_* environment variables (flags win).
import { resolve } from 'node:path';
import { VaultError } from '../core/errors.ts';
import { trustList, validatePublicUrl } from './dicomweb/public-url.ts';
import { DEFAULT_AE_TITLE, DEFAULT_DIMSE_PORT } from './dimse/scp.ts';
import {
  DEFAULT_HEADERS_TIMEOUT_S,
  DEFAULT_IDLE_TIMEOUT_S,
  DEFAULT_KEEP_ALIVE_TIMEOUT_S,
  DEFAULT_MAX_INGESTS,
  DEFAULT_MAX_INGESTS_PER_CLIENT,
  DEFAULT_MIN_BODY_RATE,
  type LimitOptions,
} from './limits.ts';
import { DEFAULT_CHUNK_SIZE } from '../format/dag.ts';
import { ANCHOR_FLAGS, resolveAnchorConfig, type AnchorConfig } from '../../anchor/config.ts';
import { parseSyslogTarget, type SyslogTarget } from '../audit/syslog.ts';
import { DEFAULT_OIDC_ALGORITHMS, DEFAULT_OIDC_CLOCK_TOLERANCE_S, DEFAULT_OIDC_ROLE_CLAIM, resolveOidcOptions, type OidcOptions } from '../identity/oidc.ts';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 8080;
/** Relative to the working directory. */
export const DEFAULT_DATA_DIR = './data';
export const DEFAULT_LOG_LEVEL = 'info';
/** pino's levels; anything else would make pino throw at start-up with no hint of the option. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** Path prefix of the DICOMweb services. */
export const DICOMWEB_PREFIX = '/dicom-web';

import { isStoreKind, resolveBlockStoreConfig, type BlockStoreConfig, type StoreKind } from '../../storage/open.ts';
export type { BlockStoreConfig, StoreKind };

export interface NodeOptions {
  /** Interface to listen on. Default DEFAULT_HOST (loopback only). */
  host: string;
  /** TCP port. Default DEFAULT_PORT (8080); 0 picks a free one. */
  port: number;
  /** Holds blocks, catalog, keys. Default DEFAULT_DATA_DIR. */
  dataDir: string;
  /** Block backend. Default 'fs'. */
  store: StoreKind;
  /** The backend's settings: its directory, or for s3 DICOM_VAULT_S3_* and AWS_* (storage/open.ts). */
  blockStore: BlockStoreConfig;
  /** Plaintext bytes per chunk. Default 1 MiB. */
  chunkSize: number;
  /** pino level. Default 'info'. */
  logLevel: string;
  /** Anchoring of study roots on a chain (anchor/config.ts); absent means none. */
  anchor?: AnchorConfig;
  /** Serve without identity: development on loopback only (refused elsewhere). Default false. */
  open: boolean;
  /** HTTPS with this certificate and key (PEM files). Default: plain HTTP. */
  tls?: { certFile: string; keyFile: string };
  /** Base of the URLs the node hands out (RetrieveURL, BulkDataURI). Default: from each request. */
  publicUrl?: string;
  /** Reverse proxies (addresses, CIDR blocks) whose Forwarded / X-Forwarded-* headers are believed. Default none. */
  trustedProxies: string[];
  /** Concurrency limits and timeouts (limits.ts). */
  limits: LimitOptions;
  /** The DIMSE Storage SCP (C-STORE, C-ECHO); absent when turned off (--dimse-port off). */
  dimse?: DimseOptions;
  /** A hospital's OpenID provider whose JWTs are taken as bearer tokens (src/identity/oidc.ts); absent: none. */
  oidc?: OidcOptions;
  /** The doctor's page's public client at that provider (sign-in with authorization code + PKCE); absent: token sign-in only. */
  oidcClientId?: string;
  /** The hospital's audit record repository (IHE ATNA): PS3.15 messages over syslog; absent: none. */
  auditSyslog?: AuditSyslogOptions;
  /** The audit log (src/audit): ms between signed heads while entries arrive (0: after every batch). Default 2,000. */
  audit?: {
    headIntervalMs: number;
    /** normal: an entry is in the OS before the access is served (survives the process being killed); full: on the disk (survives power loss), at a cost per request. Default normal. */
    sync?: 'full' | 'normal';
    /** Extra PRAGMAs for audit.db; tests bound it (max_page_count) to meet a full disk. */
    storePragmas?: readonly string[];
    /** true: a writer thread seals and commits entries (src/audit/writer.ts); false: the main thread does. Default false (--audit-writer main). */
    writerThread?: boolean;
  };
}

export interface AuditSyslogOptions {
  target: SyslogTarget;
  /** TLS: PEM files of the repository's CA, and of the node's own certificate and key (mutual TLS). */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** AuditSourceID: the node's name in the repository. Default: the host name. */
  sourceId?: string;
  /** AuditEnterpriseSiteID: the hospital or department. */
  siteId?: string;
}

export interface DimseOptions {
  /** TCP port. Default DEFAULT_DIMSE_PORT (11112); 0 picks a free one. */
  port: number;
  /** The node's AE title. Default DEFAULT_AE_TITLE. */
  aeTitle: string;
  /** Calling AE titles allowed to associate; empty: any. Default empty. */
  allowedCallingAeTitles: string[];
}

/** One command-line flag: its environment variable, its value's name, what it does, its default as shown in --help. */
export interface FlagSpec {
  env: string;
  arg: string;
  help: string;
  default?: string;
  /** A switch without a value (`--open`); its variable is on when 1 or true. */
  boolean?: true;
}

export const FLAGS = {
  host: { env: 'DICOM_VAULT_HOST', arg: 'address', help: 'interface to listen on', default: DEFAULT_HOST },
  port: { env: 'DICOM_VAULT_PORT', arg: 'port', help: 'TCP port of DICOMweb (0: any free port)', default: String(DEFAULT_PORT) },
  'data-dir': {
    env: 'DICOM_VAULT_DATA_DIR',
    arg: 'dir',
    help: 'data directory: blocks (fs), catalog, keys, anchor state, embedded chain',
    default: DEFAULT_DATA_DIR,
  },
  store: { env: 'DICOM_VAULT_STORE', arg: 'kind', help: 'block store: fs, ipfs or s3 (s3 reads DICOM_VAULT_S3_* and AWS_*)', default: 'fs' },
  'chunk-size': { env: 'DICOM_VAULT_CHUNK_SIZE', arg: 'bytes', help: 'plaintext bytes per chunk', default: '1048576' },
  'log-level': { env: 'DICOM_VAULT_LOG_LEVEL', arg: 'level', help: `pino log level: ${LOG_LEVELS.join(', ')}`, default: DEFAULT_LOG_LEVEL },
  open: {
    env: 'DICOM_VAULT_OPEN',
    arg: '',
    boolean: true,
    help: 'development only: serve without identity (anyone on loopback reads and writes everything); refused on any other address',
  },
  'tls-cert': { env: 'DICOM_VAULT_TLS_CERT', arg: 'file', help: 'PEM certificate (chain) to serve HTTPS with; with --tls-key' },
  'tls-key': { env: 'DICOM_VAULT_TLS_KEY', arg: 'file', help: 'PEM private key of --tls-cert' },
  'public-url': {
    env: 'DICOM_VAULT_PUBLIC_URL',
    arg: 'url',
    help: 'base of the URLs the node hands out (RetrieveURL, BulkDataURI), e.g. https://pacs.example.org; default: from each request',
  },
  'trusted-proxies': {
    env: 'DICOM_VAULT_TRUSTED_PROXIES',
    arg: 'list',
    help: 'comma-separated addresses or CIDR blocks of reverse proxies whose Forwarded / X-Forwarded-* headers are believed',
    default: 'none',
  },
  'dimse-port': {
    env: 'DICOM_VAULT_DIMSE_PORT',
    arg: 'port',
    help: 'TCP port of the DIMSE Storage SCP (C-STORE, C-ECHO) on --host; off: none',
    default: String(DEFAULT_DIMSE_PORT),
  },
  'ae-title': { env: 'DICOM_VAULT_AE_TITLE', arg: 'title', help: "the node's DIMSE AE title", default: DEFAULT_AE_TITLE },
  'max-ingests': {
    env: 'DICOM_VAULT_MAX_INGESTS',
    arg: 'n',
    help: 'ingests (STOW requests, C-STOREs) in flight at once; more get 503 with Retry-After',
    default: String(DEFAULT_MAX_INGESTS),
  },
  'max-ingests-per-client': {
    env: 'DICOM_VAULT_MAX_INGESTS_PER_CLIENT',
    arg: 'n',
    help: 'ingests in flight at once from one client address',
    default: String(DEFAULT_MAX_INGESTS_PER_CLIENT),
  },
  'idle-timeout': {
    env: 'DICOM_VAULT_IDLE_TIMEOUT',
    arg: 'seconds',
    help: 'a connection that moves no byte for this long is cut off (an upload or download that stalls)',
    default: String(DEFAULT_IDLE_TIMEOUT_S),
  },
  'min-body-rate': {
    env: 'DICOM_VAULT_MIN_BODY_RATE',
    arg: 'bytes/s',
    help: 'a request body slower than this over an idle-timeout window is cut off (trickling clients)',
    default: String(DEFAULT_MIN_BODY_RATE),
  },
  'headers-timeout': {
    env: 'DICOM_VAULT_HEADERS_TIMEOUT',
    arg: 'seconds',
    help: "seconds a client may take to send a request's headers",
    default: String(DEFAULT_HEADERS_TIMEOUT_S),
  },
  'keep-alive-timeout': {
    env: 'DICOM_VAULT_KEEP_ALIVE_TIMEOUT',
    arg: 'seconds',
    help: 'seconds an idle keep-alive connection stays open',
    default: String(DEFAULT_KEEP_ALIVE_TIMEOUT_S),
  },
  'allowed-aes': { env: 'DICOM_VAULT_ALLOWED_AES', arg: 'list', help: 'comma-separated calling AE titles allowed to associate over DIMSE', default: 'any' },
  'oidc-issuer': {
    env: 'DICOM_VAULT_OIDC_ISSUER',
    arg: 'url',
    help: `OpenID provider whose JWTs are taken as bearer tokens (discovery at <url>/.well-known/openid-configuration; signatures ${DEFAULT_OIDC_ALGORITHMS.join(', ')} against its JWKS; ${DEFAULT_OIDC_CLOCK_TOLERANCE_S} s clock tolerance); https, http only on loopback`,
    default: 'none',
  },
  'oidc-audience': {
    env: 'DICOM_VAULT_OIDC_AUDIENCE',
    arg: 'aud',
    help: "the audience (aud) the provider's tokens for this node carry; required with --oidc-issuer",
  },
  'oidc-role-claim': {
    env: 'DICOM_VAULT_OIDC_ROLE_CLAIM',
    arg: 'claim',
    help: "token claim holding the caller's roles or groups; a dotted path reaches into objects (realm_access.roles)",
    default: DEFAULT_OIDC_ROLE_CLAIM,
  },
  'oidc-roles': {
    env: 'DICOM_VAULT_OIDC_ROLES',
    arg: 'mapping',
    help: 'node roles from claim values, role=value,value;role=value (e.g. staff=radiologist,clinician;admin=pacs-admin); a caller with none is a grantee',
    default: 'none',
  },
  'oidc-client-id': {
    env: 'DICOM_VAULT_OIDC_CLIENT_ID',
    arg: 'id',
    help: "the doctor's page's client at the OpenID provider (public: authorization code with PKCE, redirect URI <node>/doctor/); none: doctors sign in with a token only",
    default: 'none',
  },
  'audit-syslog': {
    env: 'DICOM_VAULT_AUDIT_SYSLOG',
    arg: 'url',
    help: "the hospital's audit record repository: every access as a DICOM PS3.15 audit message over syslog, tls://host:port (RFC 5425) or udp://host:port (RFC 5426)",
    default: 'none',
  },
  'audit-syslog-ca': {
    env: 'DICOM_VAULT_AUDIT_SYSLOG_CA',
    arg: 'file',
    help: "PEM CA certificate(s) the repository's TLS certificate must chain to; default: the system's",
  },
  'audit-syslog-cert': {
    env: 'DICOM_VAULT_AUDIT_SYSLOG_CERT',
    arg: 'file',
    help: "the node's PEM client certificate for the repository (mutual TLS); with --audit-syslog-key",
  },
  'audit-syslog-key': { env: 'DICOM_VAULT_AUDIT_SYSLOG_KEY', arg: 'file', help: 'PEM private key of --audit-syslog-cert' },
  'audit-source-id': { env: 'DICOM_VAULT_AUDIT_SOURCE_ID', arg: 'name', help: "the node's AuditSourceID in audit messages", default: 'the host name' },
  'audit-site-id': { env: 'DICOM_VAULT_AUDIT_SITE_ID', arg: 'name', help: 'AuditEnterpriseSiteID in audit messages: the hospital or department' },
  'audit-head-interval': {
    env: 'DICOM_VAULT_AUDIT_HEAD_INTERVAL',
    arg: 'ms',
    help: 'the audit log signs a tree head at least this often while entries arrive (0: after every batch)',
    default: '2000',
  },
  'audit-sync': {
    env: 'DICOM_VAULT_AUDIT_SYNC',
    arg: 'mode',
    help: 'normal: an access is recorded in the OS before it is served (no access is lost if the node is killed); full: fsynced first (none lost on power loss either), at about one disk sync per request',
    default: 'normal',
  },
  'audit-writer': {
    env: 'DICOM_VAULT_AUDIT_WRITER',
    arg: 'where',
    help: "main: the audit log commits on the node's main thread (measured faster on a busy machine); thread: a writer thread commits while the request is handled, grouping commits",
    default: 'main',
  },
  ...ANCHOR_FLAGS,
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;

function int(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw)) throw new VaultError('CONFIG_INVALID', `--${name} must be a whole number (got "${raw}")`);
  const n = Number(raw);
  if (n < min || n > max) throw new VaultError('CONFIG_INVALID', `--${name} must be between ${min} and ${max} (got ${n})`);
  return n;
}

/**
 * Builds NodeOptions from parsed flags and the environment; throws CONFIG_INVALID with a reason.
 * An empty value counts as unset (as in anchor/config.ts): `DICOM_VAULT_HOST=` must not turn
 * into host '' (every interface) nor `DICOM_VAULT_DATA_DIR=` into the working directory.
 */
export function resolveNodeOptions(flags: Partial<Record<FlagName, string>>, env: NodeJS.ProcessEnv = process.env): NodeOptions {
  const set = (v: string | undefined): string | undefined => (v === '' ? undefined : v);
  const get = (name: FlagName): string | undefined => set(flags[name]) ?? set(env[FLAGS[name].env]);
  const store = get('store') ?? 'fs';
  if (!isStoreKind(store)) throw new VaultError('CONFIG_INVALID', `--store must be fs, ipfs or s3 (got "${store}")`);
  const chunkRaw = get('chunk-size');
  const logLevel = get('log-level') ?? DEFAULT_LOG_LEVEL;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new VaultError('CONFIG_INVALID', `--log-level must be one of ${LOG_LEVELS.join(', ')} (got "${logLevel}")`);
  }
  return {
    host: get('host') ?? DEFAULT_HOST,
    port: get('port') === undefined ? DEFAULT_PORT : int('port', get('port')!, 0, 65535),
    dataDir: resolve(get('data-dir') ?? DEFAULT_DATA_DIR),
    store,
    blockStore: resolveBlockStoreConfig(store, resolve(get('data-dir') ?? DEFAULT_DATA_DIR), env),
    chunkSize: chunkRaw === undefined ? DEFAULT_CHUNK_SIZE : int('chunk-size', chunkRaw, 4096, 64 * 1024 * 1024),
    logLevel,
    anchor: resolveAnchorConfig(get),
    open: resolveOpen(get('open'), get('host') ?? DEFAULT_HOST),
    ...resolveTls(get('tls-cert'), get('tls-key')),
    ...(get('public-url') !== undefined ? { publicUrl: validatePublicUrl(get('public-url')!) } : {}),
    trustedProxies: get('trusted-proxies') === 'none' ? [] : checkedProxies(list(get('trusted-proxies'))),
    ...resolveDimse(get),
    ...resolveOidc(get),
    ...resolveAuditSyslog(get),
    ...resolveAudit(get),
    limits: {
      maxIngests: get('max-ingests') === undefined ? DEFAULT_MAX_INGESTS : int('max-ingests', get('max-ingests')!, 1, 10_000),
      maxIngestsPerClient:
        get('max-ingests-per-client') === undefined ? DEFAULT_MAX_INGESTS_PER_CLIENT : int('max-ingests-per-client', get('max-ingests-per-client')!, 1, 10_000),
      idleTimeoutS: get('idle-timeout') === undefined ? DEFAULT_IDLE_TIMEOUT_S : int('idle-timeout', get('idle-timeout')!, 1, 24 * 3600),
      minBodyRate: get('min-body-rate') === undefined ? DEFAULT_MIN_BODY_RATE : int('min-body-rate', get('min-body-rate')!, 0, 1024 ** 3),
      headersTimeoutS: get('headers-timeout') === undefined ? DEFAULT_HEADERS_TIMEOUT_S : int('headers-timeout', get('headers-timeout')!, 1, 3600),
      keepAliveTimeoutS:
        get('keep-alive-timeout') === undefined ? DEFAULT_KEEP_ALIVE_TIMEOUT_S : int('keep-alive-timeout', get('keep-alive-timeout')!, 1, 3600),
    },
  };
}

function resolveAudit(get: (name: FlagName) => string | undefined): { audit?: NonNullable<NodeOptions['audit']> } {
  const interval = get('audit-head-interval');
  const sync = get('audit-sync');
  const writer = get('audit-writer');
  if (interval === undefined && sync === undefined && writer === undefined) return {};
  if (sync !== undefined && sync !== 'full' && sync !== 'normal') throw new VaultError('CONFIG_INVALID', `--audit-sync must be full or normal (got "${sync}")`);
  if (writer !== undefined && writer !== 'main' && writer !== 'thread')
    throw new VaultError('CONFIG_INVALID', `--audit-writer must be main or thread (got "${writer}")`);
  return {
    audit: {
      headIntervalMs: interval === undefined ? 2_000 : int('audit-head-interval', interval, 0, 3_600_000),
      ...(sync !== undefined ? { sync } : {}),
      ...(writer !== undefined ? { writerThread: writer === 'thread' } : {}),
    },
  };
}

function list(raw: string | undefined): string[] {
  return (raw ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** AE titles: 1-16 characters of the default repertoire, no backslash or control characters (PS3.5 6.2, AE). */
const AE_TITLE = /^[\x20-\x5b\x5d-\x7e]{1,16}$/;

function resolveDimse(get: (name: FlagName) => string | undefined): { dimse?: DimseOptions } {
  const port = get('dimse-port');
  if (port === 'off') return {};
  const aeTitle = (get('ae-title') ?? DEFAULT_AE_TITLE).trim();
  const allowed = get('allowed-aes') === 'any' ? [] : list(get('allowed-aes'));
  for (const ae of [aeTitle, ...allowed]) {
    if (!AE_TITLE.test(ae) || ae.trim() === '') throw new VaultError('CONFIG_INVALID', `"${ae}" is not an AE title (1-16 printable characters, no backslash)`);
  }
  return { dimse: { port: port === undefined ? DEFAULT_DIMSE_PORT : int('dimse-port', port, 0, 65535), aeTitle, allowedCallingAeTitles: allowed } };
}

function resolveOidc(get: (name: FlagName) => string | undefined): { oidc?: OidcOptions; oidcClientId?: string } {
  const issuer = get('oidc-issuer');
  const oidc = resolveOidcOptions({
    issuer: issuer === 'none' ? undefined : issuer,
    audience: get('oidc-audience'),
    roleClaim: get('oidc-role-claim'),
    roles: get('oidc-roles'),
  });
  const clientId = get('oidc-client-id');
  if (clientId === undefined || clientId === 'none') return oidc === undefined ? {} : { oidc };
  if (oidc === undefined) throw new VaultError('CONFIG_INVALID', '--oidc-client-id needs --oidc-issuer');
  return { oidc, oidcClientId: clientId };
}

function resolveAuditSyslog(get: (name: FlagName) => string | undefined): { auditSyslog?: AuditSyslogOptions } {
  const raw = get('audit-syslog');
  const tlsFiles = (['audit-syslog-ca', 'audit-syslog-cert', 'audit-syslog-key'] as const).filter((f) => get(f) !== undefined);
  if (raw === undefined || raw === 'none') {
    if (tlsFiles.length > 0) throw new VaultError('CONFIG_INVALID', `--${tlsFiles[0]} needs --audit-syslog tls://host:port`);
    return {};
  }
  const target = parseSyslogTarget(raw);
  if (target.transport === 'udp' && tlsFiles.length > 0) throw new VaultError('CONFIG_INVALID', `--${tlsFiles[0]} goes with a tls:// repository, not ${raw}`);
  const cert = get('audit-syslog-cert');
  const key = get('audit-syslog-key');
  if ((cert === undefined) !== (key === undefined)) throw new VaultError('CONFIG_INVALID', '--audit-syslog-cert and --audit-syslog-key go together');
  const ca = get('audit-syslog-ca');
  const sourceId = get('audit-source-id');
  const siteId = get('audit-site-id');
  return {
    auditSyslog: {
      target,
      ...(ca !== undefined ? { caFile: resolve(ca) } : {}),
      ...(cert !== undefined && key !== undefined ? { certFile: resolve(cert), keyFile: resolve(key) } : {}),
      ...(sourceId !== undefined ? { sourceId } : {}),
      ...(siteId !== undefined ? { siteId } : {}),
    },
  };
}

function checkedProxies(entries: string[]): string[] {
  trustList(entries); // CONFIG_INVALID naming a bad entry
  return entries;
}

function resolveOpen(raw: string | undefined, host: string): boolean {
  if (raw === undefined || raw === '0' || raw === 'false') return false;
  if (raw !== '1' && raw !== 'true') throw new VaultError('CONFIG_INVALID', `DICOM_VAULT_OPEN must be 1 or 0 (got "${raw}")`);
  if (!isLoopbackHost(host)) {
    throw new VaultError(
      'CONFIG_INVALID',
      `--open serves everyone without identity: it is refused on ${host}; bind 127.0.0.1, or run with identity (the default)`,
    );
  }
  return true;
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function resolveTls(cert: string | undefined, key: string | undefined): { tls?: { certFile: string; keyFile: string } } {
  if (cert === undefined && key === undefined) return {};
  if (cert === undefined || key === undefined) throw new VaultError('CONFIG_INVALID', '--tls-cert and --tls-key go together');
  return { tls: { certFile: resolve(cert), keyFile: resolve(key) } };
}
