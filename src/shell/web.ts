// The browser pages (src/web, bundled by `npm run build:web` into src/web/dist/<name>/) served by
// the node: the patient's page at `/`, and any other page at its own mount (`{ path: '/doctor',
// page: 'doctor' }`); each page's files at /web/<page>/<file>. Also the CSRF guard of every state-changing request.
//
// Files are read into memory once, at start: a page is three small files known then, so a static
// file plugin (and its path handling) would add a dependency for nothing; nothing outside the
// bundle's own folder can be named by a URL.
//
// Every page response carries a strict Content-Security-Policy (only the node's own scripts, styles
// and API; blob: images for thumbnails fetched with the bearer token; no inline code, no framing),
// nosniff, no Referer (a share link's code is in the fragment, and URLs name studies), and is refused
// over plain HTTP from the network, by the rule the bearer tokens follow (TLS, loopback, or a
// trusted proxy that received HTTPS): a page loaded in clear could be altered on the way and would
// then read the session it is given. With an https --public-url the browser is sent there instead.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { VaultError } from '../core/errors.ts';
import { SHARE_PATH } from './api/patient-common.ts';

const WEB_SOURCES = fileURLToPath(new URL('../web/', import.meta.url));
const WEB_DIST = fileURLToPath(new URL('../web/dist/', import.meta.url));

/** The page's CSP; `connect` adds origins the page may call besides the node (the chain's RPC). */
export function contentSecurityPolicy(connect: readonly string[] = []): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    ["connect-src 'self'", ...connect].join(' '),
    "font-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "object-src 'none'",
  ].join('; ');
}

export const CONTENT_SECURITY_POLICY = contentSecurityPolicy();

export const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
};

/** A page served at `path` (its index.html), from the bundle of src/web/<page>. */
export interface WebMount {
  path: string;
  page: string;
}

/** The node's pages. Another page is one more row (and its src/web/<page>/main.ts). SHARE_PATH: where share links land. */
export const DEFAULT_MOUNTS: readonly WebMount[] = [
  { path: '/', page: 'patient' },
  { path: SHARE_PATH, page: 'share' },
];

export interface WebDeps {
  mounts?: readonly WebMount[];
  /** The transport rule of bearer tokens (server.ts): TLS, loopback, or a trusted proxy that received HTTPS. */
  secureTransport(request: FastifyRequest): boolean;
  /** --public-url: where a browser that came over plain HTTP is sent when it is https. */
  publicUrl?: string;
  /** Default src/web/dist (tests may build elsewhere). */
  distDir?: string;
  /** Default src/web (the sources a bundle must not be older than). */
  sourceDir?: string;
  /** The bundles, loaded already (loadBundles: a node checks them before it opens anything). */
  bundles?: Bundles;
  /**
   * The chain the node anchors on, for the patient's browser to check the audit log's anchored
   * heads itself (src/web/common/audit-verify.ts): GET /web/chain.json gives it (the page pins it on
   * first use), and the pages' CSP lets them call its RPC. Absent: the node does not anchor.
   */
  chain?: PageChain;
}

/** What GET /web/chain.json answers: a JSON-RPC URL browsers can reach, and the trust pin (anchor/trust.ts). */
export interface PageChain {
  rpcUrl: string;
  pin?: { chainId: number; contract: string; genesisHash?: string; confirmations?: number };
}

export type Bundles = Map<string, Map<string, Asset>>;

/** Every mount's bundle (loadBundle), or the first one's error. */
export function loadBundles(mounts: readonly WebMount[] = DEFAULT_MOUNTS, distDir?: string, sourceDir?: string): Bundles {
  return new Map(mounts.map((m) => [m.page, loadBundle(m.page, distDir, sourceDir)]));
}

interface Asset {
  body: Buffer;
  type: string;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

function newestMtime(dir: string): number {
  let newest = 0;
  if (!existsSync(dir)) return newest;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/**
 * A page's bundle, read whole; CONFIG_INVALID naming `npm run build:web` when it is missing or
 * older than its sources (the page's folder and src/web/common), so a node never serves a page
 * that is not the code beside it.
 */
export function loadBundle(page: string, distDir = WEB_DIST, sourceDir = WEB_SOURCES): Map<string, Asset> {
  const dir = join(distDir, page);
  const main = join(dir, 'main.js');
  if (!existsSync(main) || !existsSync(join(dir, 'index.html'))) {
    throw new VaultError('CONFIG_INVALID', `the web page "${page}" is not built (no ${dir}): run \`npm run build:web\` (npm ci runs it too)`);
  }
  const built = statSync(main).mtimeMs;
  const sources = Math.max(newestMtime(join(sourceDir, page)), newestMtime(join(sourceDir, 'common')));
  if (sources > built) {
    throw new VaultError(
      'CONFIG_INVALID',
      `the web page "${page}" in ${dir} is older than its sources in src/web (built ${new Date(built).toISOString()}, sources changed ${new Date(sources).toISOString()}): run \`npm run build:web\``,
    );
  }
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    const ext = name.slice(name.lastIndexOf('.'));
    const type = TYPES[ext];
    if (type !== undefined && statSync(join(dir, name)).isFile()) assets.set(name, { body: readFileSync(join(dir, name)), type });
  }
  return assets;
}

/** Registers the pages at their mounts, and their files at /web/<page>/<file>. */
export function webPages(deps: WebDeps): FastifyPluginAsync {
  const mounts = deps.mounts ?? DEFAULT_MOUNTS;
  const bundles = deps.bundles ?? loadBundles(mounts, deps.distDir, deps.sourceDir);
  const httpsBase = deps.publicUrl?.startsWith('https:') ? deps.publicUrl.replace(/\/+$/, '') : undefined;

  const headers: Record<string, string> = {
    ...SECURITY_HEADERS,
    ...(deps.chain !== undefined ? { 'content-security-policy': contentSecurityPolicy([new URL(deps.chain.rpcUrl).origin]) } : {}),
  };
  const send = (reply: FastifyReply, asset: Asset, cache: string): FastifyReply => {
    for (const [k, v] of Object.entries(headers)) void reply.header(k, v);
    return reply.header('cache-control', cache).type(asset.type).send(asset.body);
  };

  return async (app: FastifyInstance) => {
    app.addHook('onRequest', async (request, reply) => {
      if (deps.secureTransport(request)) return;
      if (httpsBase !== undefined) return reply.redirect(`${httpsBase}${request.url}`, 308);
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) void reply.header(k, v);
      return reply
        .code(403)
        .type('text/plain; charset=utf-8')
        .send(
          'This page is served only over HTTPS (or on this machine itself): over plain HTTP anyone on the way could read or change it. ' +
            'Ask the operator for the https address of this node.\n',
        );
    });
    for (const mount of mounts) {
      const index = bundles.get(mount.page)!.get('index.html')!;
      // The page itself is checked again at each load (no-cache): a new build shows at once.
      app.get(mount.path, async (_request, reply) => send(reply, index, 'no-cache'));
    }
    app.get('/web/chain.json', async (_request, reply) => {
      if (deps.chain === undefined) throw new VaultError('ANCHOR_DISABLED', 'this node does not anchor: there is no chain to check its log against');
      return reply.header('cache-control', 'no-cache').send(deps.chain);
    });
    app.get<{ Params: { page: string; file: string } }>('/web/:page/:file', async (request, reply) => {
      const asset = bundles.get(request.params.page)?.get(request.params.file);
      if (asset === undefined) throw new VaultError('NOT_FOUND', 'no such file of a page');
      return send(reply, asset, 'no-cache');
    });
  };
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * CSRF guard, an onRequest hook for the root app: a state-changing request (the patient API's, and
 * STOW-RS too) that a browser says comes from another origin (Sec-Fetch-Site cross-site or
 * same-site, or an Origin that is neither the node's public URL nor the address it was sent to) is
 * refused, 403, naming why. The node takes bearer tokens only (no cookies), so a forged request
 * carries no credential anyway; this holds even if that ever changes. Requests without these
 * headers (curl, the CLI, a PACS) are no browser's.
 */
export function csrfGuard(publicUrl?: string): (request: FastifyRequest) => Promise<void> {
  const publicOrigin = publicUrl === undefined ? undefined : new URL(publicUrl).origin;
  return async (request) => {
    if (!STATE_CHANGING.has(request.method)) return;
    const site = request.headers['sec-fetch-site'];
    if (site === 'cross-site' || site === 'same-site') {
      throw new VaultError('FORBIDDEN', `cross-origin request refused (Sec-Fetch-Site: ${site}): this API changes state only for pages of this node`);
    }
    const origin = request.headers.origin;
    if (origin === undefined) return;
    if (origin === publicOrigin || origin === `${request.protocol}://${request.host}`) return;
    throw new VaultError('FORBIDDEN', `cross-origin request refused (Origin: ${origin.slice(0, 200)}): this API changes state only for pages of this node`);
  };
}
