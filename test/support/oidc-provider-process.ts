// A real OpenID provider (panva's oidc-provider) in its own process, started by
// test/support/oidc-provider.ts: a hospital's identity provider as the node sees it. It issues
// RFC 9068 JWT access tokens with the client_credentials grant, one audience per resource
// indicator, and publishes its discovery document and JWKS over HTTP on a free loopback port.
// A client with redirect URIs is a public one for a browser page instead: the authorization code
// grant with PKCE, its user signing in on the provider's development login and consent pages (any
// login name is an account, whose `sub` it is).
//
// Rotation ('rotate' over IPC): a new signing key is put first in the JWKS, the old one stays for
// verification; oidc-provider reads its keys once at construction, so a new Provider instance
// with the new key set takes over the same listening socket (same issuer, same port).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import Provider, { errors } from 'oidc-provider';

export interface ProviderClient {
  id: string;
  secret: string;
  /** Claims added to every access token of this client (roles, name, realm_access, ...). */
  claims?: Record<string, unknown>;
  /** Adds `nbf` this many seconds after issuance: a postdated token. */
  notBeforeInS?: number;
  /** Claims the provider would set, left out of this client's tokens (`exp`: a token that never expires). */
  drop?: string[];
  /** JWS header fields over the provider's own (`typ`). */
  header?: Record<string, string>;
  /** A public browser client (authorization code + PKCE, no secret) with these redirect URIs. */
  redirectUris?: string[];
}

export interface ProviderResource {
  /** Access token lifetime, seconds. Default 300. */
  ttlS?: number;
  /** JWS algorithm of this resource's tokens. Default RS256 (the provider's own key). */
  alg?: 'RS256' | 'PS256' | 'HS256';
  /** HS256: the shared secret the provider signs with. */
  secret?: string;
}

export interface ProviderConfig {
  clients: ProviderClient[];
  /** Resource indicator (the audience of its tokens) → its settings. */
  resources: Record<string, ProviderResource>;
}

export type ToParent = { type: 'ready'; issuer: string; kid: string } | { type: 'rotated'; kid: string };
export type FromParent = { type: 'rotate' };

const config = JSON.parse(process.argv[2] ?? '{}') as ProviderConfig;
const clients = new Map(config.clients.map((c) => [c.id, c]));

async function signingKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: `rsa-${crypto.randomUUID()}`, use: 'sig' };
}

function provider(issuer: string, keys: JWK[]): Provider {
  return new Provider(issuer, {
    clients: config.clients.map((c) =>
      c.redirectUris === undefined
        ? { client_id: c.id, client_secret: c.secret, grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'dicomweb' }
        : {
            client_id: c.id,
            token_endpoint_auth_method: 'none',
            grant_types: ['authorization_code'],
            response_types: ['code'],
            redirect_uris: c.redirectUris,
            scope: 'openid dicomweb',
          },
    ),
    jwks: { keys: keys as never },
    scopes: ['openid', 'dicomweb'],
    findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
    ttl: { ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300 },
    cookies: { keys: ['test-only-cookie-key'] },
    features: {
      devInteractions: { enabled: config.clients.some((c) => c.redirectUris !== undefined) },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, indicator) => {
          const rs = config.resources[indicator];
          if (rs === undefined) throw new errors.InvalidTarget();
          const alg = rs.alg ?? 'RS256';
          return {
            scope: 'dicomweb',
            audience: indicator,
            accessTokenTTL: rs.ttlS ?? 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: alg === 'HS256' ? { alg, key: Buffer.from(rs.secret ?? '') } : { alg } },
          };
        },
      },
    },
    formats: {
      customizers: {
        jwt: (_ctx, token, jwt) => {
          const c = clients.get(token.clientId ?? '');
          for (const claim of c?.drop ?? []) delete jwt.payload[claim];
          if (c?.header !== undefined) jwt.header = { ...jwt.header, ...c.header };
        },
      },
    },
    extraTokenClaims: (_ctx, token) => {
      const c = clients.get(token.clientId ?? '');
      if (c === undefined) return undefined;
      return { ...c.claims, ...(c.notBeforeInS !== undefined ? { nbf: Math.floor(Date.now() / 1000) + c.notBeforeInS } : {}) };
    },
  });
}

let keys = [await signingKey()];
let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(503).end();
const server = createServer((req, res) => handler(req, res));
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
handler = provider(issuer, keys).callback();

const send = (m: ToParent): void => void process.send?.(m);
process.on('message', async (m: FromParent) => {
  if (m.type !== 'rotate') return;
  keys = [await signingKey(), ...keys];
  handler = provider(issuer, keys).callback();
  send({ type: 'rotated', kid: keys[0]!.kid! });
});
// The parent going away (a crashed test run) must not leave the provider behind.
process.on('disconnect', () => process.exit(0));
send({ type: 'ready', issuer, kid: keys[0]!.kid! });
