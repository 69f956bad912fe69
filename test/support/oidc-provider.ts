// Starts a real OpenID provider (test/support/oidc-provider-process.ts, panva's oidc-provider) in
// a child process on a free loopback port, and gets tokens from it over HTTP the way a hospital's
// client would: client_credentials at the token endpoint named by its discovery document.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { FromParent, ProviderConfig, ToParent } from './oidc-provider-process.ts';

export type { ProviderClient, ProviderConfig, ProviderResource } from './oidc-provider-process.ts';

export interface TestProvider {
  issuer: string;
  /** kid of the key the provider signs with now. */
  kid: string;
  /** An access token for `resource` (its audience), by the client_credentials grant. */
  token(clientId: string, resource: string, options?: { dpop?: boolean }): Promise<string>;
  /** Puts a new signing key first in the JWKS (the old one stays); resolves with its kid. */
  rotate(): Promise<string>;
  stop(): Promise<void>;
}

const SCRIPT = new URL('./oidc-provider-process.ts', import.meta.url).pathname;

export async function startProvider(config: ProviderConfig): Promise<TestProvider> {
  // execArgv: [] so the child does not inherit the test runner's flags.
  // Its notices (the in-memory adapter is for development) are kept, and shown only if it dies.
  const child: ChildProcess = fork(SCRIPT, [JSON.stringify(config)], { execArgv: [], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  let output = '';
  const keep = (d: Buffer): void => {
    output = (output + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const next = async (type: ToParent['type']): Promise<ToParent> => {
    for (;;) {
      const [m] = (await Promise.race([
        once(child, 'message'),
        once(child, 'exit').then(([code]) => Promise.reject(new Error(`oidc-provider exited (${code}): ${output}`))),
      ])) as [ToParent];
      if (m.type === type) return m;
    }
  };
  const ready = await next('ready');
  const issuer = ready.type === 'ready' ? ready.issuer : '';
  const secrets = new Map(config.clients.map((c) => [c.id, c.secret]));
  let tokenEndpoint: string | undefined;

  const p: TestProvider = {
    issuer,
    kid: ready.kid,
    async token(clientId, resource, options = {}) {
      tokenEndpoint ??= ((await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()) as { token_endpoint: string }).token_endpoint;
      const headers: Record<string, string> = {
        authorization: `Basic ${Buffer.from(`${clientId}:${secrets.get(clientId)}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      };
      if (options.dpop === true) headers.dpop = await dpopProof(tokenEndpoint);
      const res = await fetch(tokenEndpoint, {
        method: 'POST',
        headers,
        body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope: 'dicomweb' }),
      });
      const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
      if (res.status !== 200 || body.access_token === undefined) throw new Error(`token endpoint: ${res.status} ${body.error}: ${body.error_description}`);
      return body.access_token;
    },
    async rotate() {
      child.send({ type: 'rotate' } satisfies FromParent);
      const m = await next('rotated');
      p.kid = m.kid;
      return m.kid;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
  return p;
}

/** A DPoP proof (RFC 9449) for a token request: the token the provider returns is bound to this key. */
async function dpopProof(htu: string): Promise<string> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return new SignJWT({ htm: 'POST', htu, jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(publicKey) })
    .setIssuedAt()
    .sign(privateKey);
}
