// A hospital's OpenID provider as a source of callers: its JWTs (RFC 9068 access tokens, or any
// JWT it signs for this node's audience) are accepted as bearer tokens beside the node's own.
//
// Checked with panva's `jose`: the signature against the provider's JWKS (found through its
// discovery document, fetched once; the key set cached and refetched by jose when a token names a
// key it does not have, at most once per cooldown), the algorithm against an allow-list of
// asymmetric ones (never `none`, never HS*: an HMAC "signed" with the public key is refused before
// any key is looked up), the issuer, the audience (a token for another node is refused), `exp` and
// `nbf` with a clock tolerance (default 30 s, for the drift between the provider's clock and the
// node's), and a `sub`. A token bound to a key (`cnf`: DPoP, mTLS) is refused: its proof of
// possession cannot be checked on a bearer request, and taking it without would undo the binding.
//
// Every refusal is an UNAUTHORIZED with the RFC 6750 challenge, naming why. A provider that cannot
// be reached (discovery, JWKS) is IDP_UNAVAILABLE (503): that is no fault of the caller's token,
// and a 401 would send clients to log in again in a loop.
//
// Roles: a claim (default `roles`; a dotted path such as `realm_access.roles` for Keycloak) is
// mapped to node roles by the operator (`staff=radiologist,clinician;admin=pacs-admin`). A caller
// with none of the mapped values is a `grantee`: it sees what patients granted `oidc:<issuer>#<sub>`.
import { decodeJwt, decodeProtectedHeader, errors, type JWTPayload, type JWTVerifyGetKey, jwtVerify, createRemoteJWKSet } from 'jose';
import { VaultError } from '../core/errors.ts';
import { unauthorized } from './challenge.ts';
import type { Principal, Role } from './principal.ts';

/** Asymmetric algorithms only: a symmetric one would let anyone holding the "key" (the JWKS is public) sign. */
export const DEFAULT_OIDC_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA'] as const;
const ASYMMETRIC = /^(RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$/;
/** Seconds of drift allowed between the provider's clock and the node's, on exp, nbf and iat. */
export const DEFAULT_OIDC_CLOCK_TOLERANCE_S = 30;
export const DEFAULT_OIDC_ROLE_CLAIM = 'roles';
/** Roles a provider may give. `patient` comes from a patient account bound to Patient IDs, never from a claim. */
export const OIDC_ROLES = ['ingest', 'staff', 'admin', 'grantee'] as const satisfies readonly Role[];
type OidcRole = (typeof OIDC_ROLES)[number];

/** Node role → the claim values that give it. */
export type RoleMapping = Readonly<Partial<Record<OidcRole, readonly string[]>>>;

export interface OidcOptions {
  /** The provider's issuer identifier, exactly as in its tokens' `iss`; https (http only on loopback). */
  issuer: string;
  /** The `aud` this node's tokens carry (its identifier at the provider). */
  audience: string;
  /** The claim holding the caller's roles or groups; a dotted path reaches into objects. Default `roles`. */
  roleClaim?: string;
  /** Default: none (every caller a grantee). */
  roles?: RoleMapping;
  /** Default DEFAULT_OIDC_ALGORITHMS. */
  algorithms?: readonly string[];
  /** Default DEFAULT_OIDC_CLOCK_TOLERANCE_S. */
  clockToleranceS?: number;
  /** Least time between two JWKS fetches caused by an unknown key (jose's cooldown). Default 30 s. */
  jwksCooldownMs?: number;
  /** Timeout of each request to the provider. Default 5 s. */
  timeoutMs?: number;
  now?: () => Date;
}

export interface OidcVerifier {
  readonly issuer: string;
  /** The caller a token names, or UNAUTHORIZED (why), or IDP_UNAVAILABLE. */
  verify(token: string): Promise<Principal>;
  /** Fetches the discovery document now (at start-up, to report a wrong issuer early); verify() does it anyway. */
  discover(): Promise<void>;
}

export function createOidcVerifier(options: OidcOptions): OidcVerifier {
  const issuer = checkedIssuer(options.issuer);
  const audience = options.audience;
  if (typeof audience !== 'string' || audience === '') throw new VaultError('CONFIG_INVALID', 'an OpenID audience is required');
  const algorithms = checkedAlgorithms(options.algorithms ?? DEFAULT_OIDC_ALGORITHMS);
  const tolerance = options.clockToleranceS ?? DEFAULT_OIDC_CLOCK_TOLERANCE_S;
  if (!Number.isFinite(tolerance) || tolerance < 0 || tolerance > 600)
    throw new VaultError('CONFIG_INVALID', `an OpenID clock tolerance of ${tolerance} s is not 0 to 600 s`);
  const roleClaim = options.roleClaim ?? DEFAULT_OIDC_ROLE_CLAIM;
  const mapping = options.roles ?? {};
  const timeoutMs = options.timeoutMs ?? 5000;
  const now = options.now ?? (() => new Date());

  // Discovery is fetched once; a failure is not kept, so the next token tries again.
  let keys: Promise<JWTVerifyGetKey> | undefined;
  const keySet = (): Promise<JWTVerifyGetKey> => {
    keys ??= discoverKeys(issuer, timeoutMs, options.jwksCooldownMs).catch((err: unknown) => {
      keys = undefined;
      throw err;
    });
    return keys;
  };

  return {
    issuer,
    async discover() {
      await keySet();
    },
    async verify(token) {
      let header: ReturnType<typeof decodeProtectedHeader>;
      let unverified: JWTPayload;
      try {
        header = decodeProtectedHeader(token);
        unverified = decodeJwt(token);
      } catch {
        throw unauthorized('the token is not a well-formed JWT');
      }
      // Checked before any key is looked up: a token that cannot pass costs no request to the provider.
      const alg = header.alg;
      if (typeof alg !== 'string' || !algorithms.includes(alg)) {
        throw unauthorized(`the token's algorithm ${shown(alg)} is not allowed (allowed: ${algorithms.join(', ')})`);
      }
      const typ = typeOf(header.typ);
      if (typ !== undefined && !ACCESS_TOKEN_TYPES.has(typ)) throw unauthorized(`a token of type ${shown(header.typ)} is not an access token`);
      if (unverified.iss !== issuer) throw unauthorized(`the token was issued by ${shown(unverified.iss)}, not by ${issuer}`);

      const getKey = await keySet();
      const at = now();
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, getKey, {
          issuer,
          audience,
          algorithms: [...algorithms],
          clockTolerance: tolerance,
          currentDate: at,
          requiredClaims: ['exp', 'sub'],
        }));
      } catch (err) {
        throw refusal(err, header.kid, audience);
      }
      // jose checks iat only together with maxTokenAge; a token issued in the future (beyond the
      // tolerance) is as not-yet-valid as one whose nbf is.
      const nowS = Math.floor(at.getTime() / 1000);
      if (typeof payload.iat === 'number' && payload.iat > nowS + tolerance) {
        throw unauthorized(`the token is not valid yet: issued at ${isoOf(payload.iat)}, in the future (clock skew?)`);
      }
      if (payload.cnf !== undefined) throw unauthorized('the token is bound to a key (cnf: DPoP or mTLS); its proof of possession is not taken here');
      const sub = payload.sub;
      if (typeof sub !== 'string' || sub === '' || sub.length > 255) throw unauthorized('the token has no valid "sub" claim');
      const name = [payload.name, payload.preferred_username].find((v): v is string => typeof v === 'string' && v.trim() !== '');
      return {
        id: `oidc:${issuer}#${sub}`,
        roles: rolesFromClaims(payload, roleClaim, mapping),
        method: 'oidc',
        ...(name !== undefined ? { name: name.trim().slice(0, 200) } : {}),
      };
    },
  };
}

/** RFC 9068 `at+jwt`, or the generic `JWT` many providers put on access tokens; not another explicitly typed JWT (logout+jwt, dpop+jwt, ...: RFC 8725 section 3.11). */
const ACCESS_TOKEN_TYPES = new Set(['jwt', 'at+jwt']);

/** A JWS `typ`, lower case, without the `application/` it may be written with (RFC 7515 section 4.1.9). */
function typeOf(typ: unknown): string | undefined {
  if (typ === undefined) return undefined;
  const t = String(typ).toLowerCase();
  return t.startsWith('application/') ? t.slice('application/'.length) : t;
}

/** The node roles a token's claims give: every role one of whose values the claim holds; none: grantee. */
export function rolesFromClaims(payload: Readonly<Record<string, unknown>>, claim: string, mapping: RoleMapping): Role[] {
  const raw = claimAt(payload, claim);
  const values = new Set(typeof raw === 'string' ? [raw] : Array.isArray(raw) ? raw.filter((v): v is string => typeof v === 'string') : []);
  const roles = OIDC_ROLES.filter((role) => (mapping[role] ?? []).some((v) => values.has(v)));
  return roles.length > 0 ? roles : ['grantee'];
}

/**
 * A claim by name; when no claim has that very name, a dotted path into nested objects
 * (`realm_access.roles`). The whole name first: providers such as Auth0 require namespaced claims
 * that are URLs, with dots in them.
 */
export function claimAt(payload: Readonly<Record<string, unknown>>, name: string): unknown {
  if (Object.hasOwn(payload, name)) return payload[name];
  let v: unknown = payload;
  for (const part of name.split('.')) {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, part)) return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

/** `staff=radiologist,clinician;admin=pacs-admin` (or `none`) → the mapping; CONFIG_INVALID naming what is wrong. */
export function parseRoleMapping(text: string): RoleMapping {
  const out: Partial<Record<OidcRole, string[]>> = {};
  if (text.trim() === 'none') return out;
  for (const entry of text.split(';').map((e) => e.trim())) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    const role = entry.slice(0, eq).trim();
    const values = entry
      .slice(eq + 1)
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v !== '');
    if (eq < 0 || values.length === 0) throw new VaultError('CONFIG_INVALID', `--oidc-roles: "${entry}" is not role=value[,value...]`);
    if (role === 'patient')
      throw new VaultError('CONFIG_INVALID', '--oidc-roles: patient comes from a patient account bound to Patient IDs, not from an identity provider');
    if (!(OIDC_ROLES as readonly string[]).includes(role)) {
      throw new VaultError('CONFIG_INVALID', `--oidc-roles: "${role}" is not a role an identity provider may give (${OIDC_ROLES.join(', ')})`);
    }
    out[role as OidcRole] = [...(out[role as OidcRole] ?? []), ...values];
  }
  return out;
}

/** The --oidc-* flags as OidcOptions (undefined without --oidc-issuer); CONFIG_INVALID naming what is wrong. */
export function resolveOidcOptions(flags: {
  issuer?: string | undefined;
  audience?: string | undefined;
  roleClaim?: string | undefined;
  roles?: string | undefined;
}): OidcOptions | undefined {
  if (flags.issuer === undefined) {
    const stray = (['audience', 'roleClaim', 'roles'] as const).find((k) => flags[k] !== undefined && !(k === 'roles' && flags.roles?.trim() === 'none'));
    if (stray !== undefined) throw new VaultError('CONFIG_INVALID', `--oidc-${stray === 'roleClaim' ? 'role-claim' : stray} needs --oidc-issuer`);
    return undefined;
  }
  if (flags.audience === undefined) {
    throw new VaultError(
      'CONFIG_INVALID',
      '--oidc-audience is required with --oidc-issuer: without it, any token the provider signs for any application would be taken',
    );
  }
  const roleClaim = flags.roleClaim ?? DEFAULT_OIDC_ROLE_CLAIM;
  if (roleClaim.split('.').some((p) => p === '')) throw new VaultError('CONFIG_INVALID', `--oidc-role-claim "${roleClaim}" is not a claim name or dotted path`);
  return { issuer: checkedIssuer(flags.issuer), audience: flags.audience, roleClaim, roles: parseRoleMapping(flags.roles ?? 'none') };
}

function checkedIssuer(issuer: string): string {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new VaultError('CONFIG_INVALID', `--oidc-issuer "${issuer}" is not a URL`);
  }
  // OpenID Connect Discovery 1.0 section 2: https, no query, no fragment. Plain http is let through
  // on loopback only (a provider beside the node, and the tests).
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new VaultError('CONFIG_INVALID', `--oidc-issuer "${issuer}" must have no query, fragment or credentials`);
  }
  if (!secureUrl(url)) throw new VaultError('CONFIG_INVALID', `--oidc-issuer "${issuer}" must be https (http only on loopback)`);
  return issuer;
}

/** https, or http on loopback: what an OpenID issuer may be (for --oidc-issuer and for grants to its subjects). */
export function secureUrl(url: URL): boolean {
  if (url.protocol === 'https:') return true;
  return url.protocol === 'http:' && (url.hostname === 'localhost' || url.hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(url.hostname));
}

function checkedAlgorithms(algorithms: readonly string[]): readonly string[] {
  const bad = algorithms.find((a) => !ASYMMETRIC.test(a));
  if (bad !== undefined) throw new VaultError('CONFIG_INVALID', `JWS algorithm ${bad} may not be allowed for OpenID tokens (asymmetric ones only)`);
  if (algorithms.length === 0) throw new VaultError('CONFIG_INVALID', 'no JWS algorithm allowed for OpenID tokens');
  return algorithms;
}

/**
 * Discovery by hand (a GET and two fields): jose does not do discovery, and openid-client, which
 * does, is a relying party's client (sessions, grants), not what a resource server needs.
 */
async function discoverKeys(issuer: string, timeoutMs: number, cooldownMs: number | undefined): Promise<JWTVerifyGetKey> {
  const where = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  let metadata: unknown;
  try {
    // No redirects: the document names the key set every signature is checked against.
    const res = await fetch(where, { redirect: 'error', headers: { accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
    if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
    metadata = await res.json();
  } catch (err) {
    throw unavailable(`the OpenID discovery document ${where} could not be read (${(err as Error).message})`, err);
  }
  const m = (metadata ?? {}) as { issuer?: unknown; jwks_uri?: unknown };
  // Section 4.3: the document's issuer must be the configured one exactly, or its keys are another's.
  if (m.issuer !== issuer) throw unavailable(`the OpenID provider at ${where} names its issuer ${shown(m.issuer)}, not ${issuer}`);
  let jwksUri: URL;
  try {
    jwksUri = new URL(String(m.jwks_uri));
  } catch {
    throw unavailable(`the OpenID discovery document ${where} has no valid jwks_uri`);
  }
  if (!secureUrl(jwksUri)) throw unavailable(`the OpenID provider's jwks_uri ${jwksUri.href} is not https`);
  const remote = createRemoteJWKSet(jwksUri, { timeoutDuration: timeoutMs, ...(cooldownMs !== undefined ? { cooldownDuration: cooldownMs } : {}) });
  // A key set that cannot be fetched is the provider's trouble; no key matching is the token's.
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      throw unavailable(`the OpenID provider's key set ${jwksUri.href} could not be read (${(err as Error).message})`, err);
    }
  };
}

function unavailable(reason: string, cause?: unknown): VaultError {
  return new VaultError('IDP_UNAVAILABLE', reason, cause === undefined ? {} : { cause });
}

/** jose's refusal → UNAUTHORIZED naming why. */
function refusal(err: unknown, kid: string | undefined, audience: string): VaultError {
  if (err instanceof VaultError) return err;
  if (err instanceof errors.JWKSNoMatchingKey) return unauthorized(`no key of the provider's key set matches the token (kid ${shown(kid)})`);
  if (err instanceof errors.JWKSMultipleMatchingKeys) return unauthorized("the token names no key (kid) and several of the provider's keys could fit");
  if (err instanceof errors.JWSSignatureVerificationFailed)
    return unauthorized('the signature does not verify: the token was altered, or signed with a key the provider does not publish');
  if (err instanceof errors.JOSEAlgNotAllowed) return unauthorized("the token's algorithm is not allowed");
  if (err instanceof errors.JWTExpired) return unauthorized(`the token has expired (exp ${isoOf(err.payload.exp)})`);
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return unauthorized(`the token has no "${err.claim}" claim`);
    if (err.claim === 'aud') return unauthorized(`the token is for another audience (${shown(err.payload.aud)}), not this node (${audience})`);
    if (err.claim === 'nbf') return unauthorized(`the token is not valid yet (nbf ${isoOf(err.payload.nbf)})`);
    if (err.claim === 'iss') return unauthorized(`the token was issued by ${shown(err.payload.iss)}`);
    return unauthorized(`the token's "${err.claim}" claim is not valid`);
  }
  if (err instanceof errors.JOSEError) return unauthorized(`the token is not valid (${err.message})`);
  throw err;
}

/** A value from an unverified token, fit to quote in a reason: printable ASCII, short. */
function shown(v: unknown): string {
  const s = v === undefined ? 'none' : typeof v === 'string' ? v : JSON.stringify(v);
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 100 ? `${clean.slice(0, 100)}...` : clean;
}

function isoOf(epochS: unknown): string {
  return typeof epochS === 'number' && Number.isFinite(epochS) ? new Date(epochS * 1000).toISOString() : shown(epochS);
}
