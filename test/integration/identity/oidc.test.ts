// A hospital's OpenID provider as a source of callers (src/identity/oidc.ts), against a real one:
// panva's oidc-provider in a child process (test/support/oidc-provider.ts), tokens got from it over
// HTTP with the client_credentials grant, one audience per resource indicator. A good token
// becomes a principal with the mapped roles; every attack on the token is refused with
// UNAUTHORIZED and a reason that names it; a provider that rotates its key is followed.
import { createPublicKey } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyRequest } from 'fastify';
import { base64url, decodeJwt, decodeProtectedHeader, generateKeyPair, type JWK, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PatientControlPolicy, type PatientControlDeps } from '../../../src/access/patient-control.ts';
import { VaultError } from '../../../src/core/errors.ts';
import { createOidcVerifier, type OidcOptions, type OidcVerifier, parseRoleMapping } from '../../../src/identity/oidc.ts';
import { SqliteIdentityStore } from '../../../src/identity/store.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { type ProviderConfig, startProvider, type TestProvider } from '../../support/oidc-provider.ts';

const NODE = 'https://pacs-a.hospital.example/dicom-web';
const OTHER_NODE = 'https://pacs-b.hospital.example/dicom-web';
const SHORT_LIVED = 'https://short.hospital.example/';
const SYMMETRIC = 'https://hmac.hospital.example/';
const MAPPING = 'staff=radiologist,clinician;admin=pacs-admin';

const CONFIG: ProviderConfig = {
  clients: [
    {
      id: 'dr-grey',
      secret: 'dr-grey-secret-dr-grey-secret-dr-grey',
      claims: { roles: ['radiologist'], name: 'Dr Meredith Grey', realm_access: { roles: ['pacs-admin'] } },
    },
    { id: 'ops', secret: 'ops-secret-ops-secret-ops-secret-ops', claims: { roles: ['pacs-admin', 'clinician'], preferred_username: 'ops.on.call' } },
    { id: 'visitor', secret: 'visitor-secret-visitor-secret-visitor', claims: { roles: ['nurse'] } },
    { id: 'postdated', secret: 'postdated-secret-postdated-secret-x', notBeforeInS: 600 },
    { id: 'forever', secret: 'forever-secret-forever-secret-forever', drop: ['exp'] },
    { id: 'nobody', secret: 'nobody-secret-nobody-secret-nobody-x', drop: ['sub'] },
    { id: 'logout', secret: 'logout-secret-logout-secret-logout-x', header: { typ: 'logout+jwt' } },
    { id: 'plain', secret: 'plain-secret-plain-secret-plain-secr', header: { typ: 'JWT' } },
  ],
  resources: {
    [NODE]: {},
    [OTHER_NODE]: {},
    // 2 s: iat and exp are whole seconds, so a 1 s token can be expired the moment it arrives.
    [SHORT_LIVED]: { ttlS: 2 },
    [SYMMETRIC]: { alg: 'HS256', secret: 'a-shared-secret-of-thirty-two-bytes!' },
  },
};

/** The refusal a caller gets: UNAUTHORIZED, 401, an RFC 6750 challenge, and the reason. */
async function refusal(p: Promise<unknown>): Promise<string> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, 'the token was accepted').toBeInstanceOf(VaultError);
  const v = err as VaultError;
  expect(v.code, v.message).toBe('UNAUTHORIZED');
  expect(v.status).toBe(401);
  expect(v.details?.wwwAuthenticate).toMatch(/^Bearer realm="dicom-vault", error="invalid_token", error_description="[\x20-\x7e]+"$/);
  return v.message;
}

function withPayload(token: string, change: (p: Record<string, unknown>) => void): string {
  const [h, p, s] = token.split('.') as [string, string, string];
  const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as Record<string, unknown>;
  change(payload);
  return `${h}.${base64url.encode(JSON.stringify(payload))}.${s}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('OpenID provider tokens', () => {
  let idp: TestProvider;
  let otherIdp: TestProvider;
  let verifier: OidcVerifier;
  const verifierFor = (o: Partial<OidcOptions> = {}) => createOidcVerifier({ issuer: idp.issuer, audience: NODE, roles: parseRoleMapping(MAPPING), ...o });

  beforeAll(async () => {
    [idp, otherIdp] = await Promise.all([startProvider(CONFIG), startProvider(CONFIG)]);
    verifier = verifierFor();
  });
  afterAll(async () => {
    await Promise.all([idp?.stop(), otherIdp?.stop()]);
  });

  it('turns a good token into a principal with the mapped roles', async () => {
    // Built from the node's own flags, as the node does.
    const options = resolveNodeOptions({ 'oidc-issuer': idp.issuer, 'oidc-audience': NODE, 'oidc-roles': MAPPING }, {}).oidc!;
    const fromFlags = createOidcVerifier(options);
    expect(await fromFlags.verify(await idp.token('dr-grey', NODE))).toEqual({
      id: `oidc:${idp.issuer}#dr-grey`,
      roles: ['staff'],
      method: 'oidc',
      name: 'Dr Meredith Grey',
    });
    expect(await fromFlags.verify(await idp.token('ops', NODE))).toEqual({
      id: `oidc:${idp.issuer}#ops`,
      roles: ['staff', 'admin'],
      method: 'oidc',
      name: 'ops.on.call',
    });
    // Authenticated, but none of the mapped values: a grantee, who sees what patients granted it.
    expect(await fromFlags.verify(await idp.token('visitor', NODE))).toEqual({ id: `oidc:${idp.issuer}#visitor`, roles: ['grantee'], method: 'oidc' });
    // Keycloak keeps realm roles in realm_access.roles.
    const keycloak = verifierFor({ roleClaim: 'realm_access.roles' });
    expect((await keycloak.verify(await idp.token('dr-grey', NODE))).roles).toEqual(['admin']);
  });

  it('is what the access policy asks for a JWT, beside the local tokens', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dv-oidc-'));
    const identity = SqliteIdentityStore.open(join(dir, 'identity.db'));
    try {
      const oidc: PatientControlDeps['oidc'] = verifier;
      const policy = new PatientControlPolicy({ identity, oidc, secureTransport: () => true });
      const request = (token: string) => ({ headers: { authorization: `Bearer ${token}` } }) as unknown as FastifyRequest;
      const { token: local } = identity.addUser('archivist', ['admin']);
      expect(await policy.identify(request(local))).toMatchObject({ id: 'user:archivist', method: 'token' });
      const doctor = await policy.identify(request(await idp.token('dr-grey', NODE)));
      expect(doctor).toMatchObject({ id: `oidc:${idp.issuer}#dr-grey`, roles: ['staff'] });
      expect(await policy.authorize(doctor, { action: 'retrieve', level: 'study', studyInstanceUID: '1.2.3', dataType: 'dicom' })).toMatchObject({
        allowed: true,
        basis: 'staff policy',
      });
      const visitor = await policy.identify(request(await idp.token('visitor', NODE)));
      // No grant names it: allowed to ask, with nothing in scope (what it cannot see reads as unknown).
      expect(await policy.authorize(visitor, { action: 'search', level: 'studies' })).toMatchObject({ allowed: true, scope: { clauses: [] } });
      expect(await policy.authorize(visitor, { action: 'store', level: 'studies' })).toMatchObject({ allowed: false });
    } finally {
      identity.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a token of another issuer, even one that claims ours', async () => {
    const foreign = await otherIdp.token('dr-grey', NODE);
    expect(await refusal(verifier.verify(foreign))).toBe(`the token was issued by ${otherIdp.issuer}, not by ${idp.issuer}`);
    // Its iss rewritten to ours: its key is not in our provider's key set.
    const disguised = withPayload(foreign, (p) => (p.iss = idp.issuer));
    expect(await refusal(verifier.verify(disguised))).toMatch(/^no key of the provider's key set matches the token \(kid rsa-/);
  });

  it('refuses a token for another audience: another node of the same provider', async () => {
    expect(await refusal(verifier.verify(await idp.token('dr-grey', OTHER_NODE)))).toBe(
      `the token is for another audience (${OTHER_NODE}), not this node (${NODE})`,
    );
  });

  it('refuses an expired token: after its lifetime, and beyond the clock tolerance', async () => {
    const short = await idp.token('dr-grey', SHORT_LIVED);
    const strict = verifierFor({ audience: SHORT_LIVED, clockToleranceS: 0 });
    expect((await strict.verify(short)).id).toBe(`oidc:${idp.issuer}#dr-grey`);
    const { exp } = decodeJwt(short);
    await sleep(exp! * 1000 - Date.now() + 50);
    expect(await refusal(strict.verify(short))).toBe(`the token has expired (exp ${new Date(exp! * 1000).toISOString()})`);

    // The default tolerance is 30 s of drift between the provider's clock and the node's.
    const token = await idp.token('dr-grey', NODE);
    const exp2 = decodeJwt(token).exp! * 1000;
    expect((await verifierFor({ now: () => new Date(exp2 + 29_000) }).verify(token)).roles).toEqual(['staff']);
    expect(await refusal(verifierFor({ now: () => new Date(exp2 + 31_000) }).verify(token))).toMatch(/^the token has expired/);
  });

  it('refuses a token not valid yet: nbf ahead, or issued in the future', async () => {
    const postdated = await idp.token('postdated', NODE);
    expect(await refusal(verifier.verify(postdated))).toBe(`the token is not valid yet (nbf ${new Date(decodeJwt(postdated).nbf! * 1000).toISOString()})`);
    // The node's clock two minutes behind the provider's.
    const token = await idp.token('dr-grey', NODE);
    const behind = verifierFor({ now: () => new Date(Date.now() - 120_000) });
    expect(await refusal(behind.verify(token))).toMatch(/^the token is not valid yet: issued at .*, in the future/);
  });

  it('refuses a token that never expires, names nobody, or is not an access token', async () => {
    const forever = await idp.token('forever', NODE);
    expect(decodeJwt(forever).exp).toBeUndefined();
    expect(await refusal(verifier.verify(forever))).toBe('the token has no "exp" claim');
    expect(await refusal(verifier.verify(await idp.token('nobody', NODE)))).toBe('the token has no "sub" claim');
    expect(await refusal(verifier.verify(await idp.token('logout', NODE)))).toBe('a token of type logout+jwt is not an access token');
    // The generic type many providers put on access tokens is taken.
    expect((await verifier.verify(await idp.token('plain', NODE))).id).toBe(`oidc:${idp.issuer}#plain`);
  });

  it('refuses alg none', async () => {
    const claims = decodeJwt(await idp.token('dr-grey', NODE));
    const unsigned = new UnsecuredJWT({ ...claims, roles: ['radiologist'] }).encode();
    expect(unsigned.split('.')).toHaveLength(3);
    expect(await refusal(verifier.verify(unsigned))).toBe("the token's algorithm none is not allowed (allowed: RS256, PS256, ES256, EdDSA)");
  });

  it('refuses a token signed with a key the provider does not publish', async () => {
    const claims = decodeJwt(await idp.token('dr-grey', NODE));
    const { privateKey } = await generateKeyPair('RS256');
    // The provider's own kid on it: the key is found, the signature does not verify.
    const sameKid = await new SignJWT({ ...claims, roles: ['pacs-admin'] }).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: idp.kid }).sign(privateKey);
    expect(await refusal(verifier.verify(sameKid))).toBe(
      'the signature does not verify: the token was altered, or signed with a key the provider does not publish',
    );
    const ownKid = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'RS256', kid: 'attacker-key' }).sign(privateKey);
    expect(await refusal(verifier.verify(ownKid))).toBe("no key of the provider's key set matches the token (kid attacker-key)");
  });

  it('refuses a tampered token', async () => {
    const token = await idp.token('visitor', NODE);
    for (const change of [
      (p: Record<string, unknown>) => (p.roles = ['pacs-admin']),
      (p: Record<string, unknown>) => (p.sub = 'dr-grey'),
      (p: Record<string, unknown>) => (p.exp = (p.exp as number) + 86_400),
    ]) {
      expect(await refusal(verifier.verify(withPayload(token, change)))).toMatch(/^the signature does not verify/);
    }
    const [h, p, s] = token.split('.') as [string, string, string];
    const flipped = `${h}.${p}.${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`;
    expect(await refusal(verifier.verify(flipped))).toMatch(/^the signature does not verify/);
    expect(await refusal(verifier.verify(`${h}.${p}`))).toBe('the token is not a well-formed JWT');
  });

  it('refuses HS256 with the public key as the secret, and any algorithm not allowed', async () => {
    const token = await idp.token('dr-grey', NODE);
    // The attacker's part: the provider's public key from its JWKS, as anyone can fetch it.
    const meta = (await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json()) as { jwks_uri: string };
    const { keys } = (await (await fetch(meta.jwks_uri)).json()) as { keys: JWK[] };
    const jwk = keys.find((k) => k.kid === decodeProtectedHeader(token).kid)!;
    const pem = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string;
    for (const secret of [pem, JSON.stringify(jwk), jwk.n!]) {
      const forged = await new SignJWT({ ...decodeJwt(token), roles: ['pacs-admin'] })
        .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: jwk.kid! })
        .sign(new TextEncoder().encode(secret));
      expect(await refusal(verifier.verify(forged))).toBe("the token's algorithm HS256 is not allowed (allowed: RS256, PS256, ES256, EdDSA)");
    }
    // A token the provider itself signed with a shared secret (HS256) is no better.
    const hmac = await idp.token('dr-grey', SYMMETRIC);
    expect(decodeProtectedHeader(hmac).alg).toBe('HS256');
    expect(await refusal(verifierFor({ audience: SYMMETRIC }).verify(hmac))).toMatch(/^the token's algorithm HS256 is not allowed/);
    // Nor a good RS256 token where the operator allows only ES256.
    expect(await refusal(verifierFor({ algorithms: ['ES256'] }).verify(token))).toBe("the token's algorithm RS256 is not allowed (allowed: ES256)");
  });

  it('refuses a token bound to a DPoP key, presented as a bearer token', async () => {
    const bound = await idp.token('dr-grey', NODE, { dpop: true });
    expect(decodeJwt(bound).cnf).toHaveProperty('jkt');
    expect(await refusal(verifier.verify(bound))).toMatch(/^the token is bound to a key \(cnf/);
  });

  it('follows a key rotation once the key set may be fetched again', async () => {
    const cooldownMs = 4000;
    const rotating = verifierFor({ jwksCooldownMs: cooldownMs });
    const before = await idp.token('ops', NODE);
    await rotating.verify(before); // fetches the key set
    const fetchedAt = Date.now();
    const oldKid = idp.kid;
    const newKid = await idp.rotate();
    expect(newKid).not.toBe(oldKid);
    const after = await idp.token('ops', NODE);
    expect(decodeProtectedHeader(after).kid).toBe(newKid);
    // Within the cooldown an unknown kid causes no fetch (a stream of made-up kids cannot make
    // the node hammer the provider): the new key is not known yet.
    expect(Date.now() - fetchedAt).toBeLessThan(cooldownMs);
    expect(await refusal(rotating.verify(after))).toBe(`no key of the provider's key set matches the token (kid ${newKid})`);
    await sleep(fetchedAt + cooldownMs + 100 - Date.now());
    expect((await rotating.verify(after)).roles).toEqual(['staff', 'admin']);
    // The old key stays published: tokens signed before the rotation still verify.
    expect((await rotating.verify(before)).id).toBe(`oidc:${idp.issuer}#ops`);
  });

  it('says IDP_UNAVAILABLE (503), not UNAUTHORIZED, when the provider cannot be reached or is not the issuer', async () => {
    const gone = await startProvider({ clients: CONFIG.clients.slice(0, 1), resources: { [NODE]: {} } });
    const token = await gone.token('dr-grey', NODE);
    await gone.stop();
    const err = await createOidcVerifier({ issuer: gone.issuer, audience: NODE, timeoutMs: 2000 })
      .verify(token)
      .catch((e: unknown) => e as VaultError);
    expect(err).toMatchObject({ code: 'IDP_UNAVAILABLE', status: 503 });
    expect((err as VaultError).message).toMatch(
      /^the OpenID discovery document http:\/\/127\.0\.0\.1:\d+\/\.well-known\/openid-configuration could not be read/,
    );
    // Discovery names another issuer than the one configured (here one slash apart).
    await expect(createOidcVerifier({ issuer: `${idp.issuer}/`, audience: NODE }).discover()).rejects.toMatchObject({
      code: 'IDP_UNAVAILABLE',
      message: `the OpenID provider at ${idp.issuer}/.well-known/openid-configuration names its issuer ${idp.issuer}, not ${idp.issuer}/`,
    });
  });
});
