// The patient API (issue 23): what the patient's web page and a share link's viewer call, under
// /api, documented as OpenAPI at GET /api/openapi.json (@fastify/swagger, from the route schemas,
// which also validate every body).
//
//   POST /api/patient/enrollment             use an enrollment code: a short session (and a key file's public key registered)
//   POST /api/patient/keys/options           WebAuthn registration options for a new passkey of the account
//   POST /api/patient/keys                   register a passkey (or a key file's public key)
//   POST /api/patient/session/challenge      a one-time challenge (and WebAuthn request options)
//   POST /api/patient/session                the challenge signed (key file or passkey) -> a session token dvp_...
//   DELETE /api/patient/session              end every session of the account
//   GET  /api/patient                        the account: node id, Patient IDs, keys
//   POST /api/patient/grants/draft           the statement to sign for a request, its challenge and WebAuthn options
//   POST /api/patient/grants                 add a grant: the statement and the patient's proof
//   GET  /api/patient/grants[/{id}]          grants and where each stands
//   POST /api/patient/grants/{id}/revoke     revoke at once
//   POST /api/patient/grants/{id}/links      a share link (single-use code, at most 10 minutes)
//   GET  /api/patient/grants/fhir, /{id}/fhir   FHIR R4 Consent(s)
//   POST /api/patient/erasure-requests       ask for the erasure of one study or of all (an operator approves or refuses)
//   GET  /api/patient/erasure-requests       the account's requests and where each stands
//   GET  /api/patient/erasure-requests/{id}/certificate   the signed erasure certificate, once done
//   GET  /api/patient/erasure-requests/{id}/receipt       the certificate's anchor receipt (202 while on its way)
//   POST /api/token                          RFC 8693 token exchange: a share code for a bearer token bound to its grant
//
// Patients authenticate with a bearer session token in the Authorization header, identified by the
// access seam's own identify() (src/access): no cookies anywhere, so a cross-site page cannot make
// the browser send a patient's credentials (no CSRF); /api/token takes a single-use code the
// attacker would need to hold already. Like bearer tokens, everything here is taken only over a
// secure transport (HTTPS, loopback, a trusted proxy).
//
// Register it on the app with `app.register(patientApi(deps), { prefix: '/api' })`.
import { randomBytes } from 'node:crypto';
import swagger from '@fastify/swagger';
import {
  type AuthenticationResponseJSON,
  generateAuthenticationOptions,
  generateRegistrationOptions,
  type RegistrationResponseJSON,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { AccessPolicy } from '../../access/policy.ts';
import { VaultError } from '../../core/errors.ts';
import { canonicalBytes, canonicalJson } from '../../grants/canonical.ts';
import { consentBundle, grantToConsent } from '../../grants/fhir.ts';
import { DATA_TYPES, GRANT_ACTIONS, GRANT_VERSION, type GrantRecord } from '../../grants/model.ts';
import type { GrantCheck, GrantService } from '../../grants/service.ts';
import {
  ed25519KeyId,
  ed25519PublicKey,
  ed25519Verifies,
  PASSKEY_ALGORITHMS,
  sessionPayload,
  statementChallenge,
  verifyAssertion,
  type WebAuthnRp,
} from '../../grants/signing.ts';
import { draftStatement, parseGrantee, parseUntil } from '../../grants/statement.ts';
import { SHARE_CODE_MAX_TTL_MS } from '../../grants/store.ts';
import type { IdentityStore } from '../../identity/store.ts';
import type { Catalog } from '../../catalog/catalog.ts';
import { certificateCid, type ErasureCertificate } from '../../erasure/certificate.ts';
import type { ErasureService } from '../../erasure/service.ts';
import type { ErasureRequest } from '../../erasure/store.ts';

/** A patient session lasts this long. 1 hour. */
export const DEFAULT_SESSION_TTL_MS = 3_600_000;
/** The session an enrollment code opens, for registering keys. 15 minutes. */
export const ENROLLMENT_SESSION_MS = 15 * 60_000;
/** A challenge (session, passkey registration) is answered within this long. 5 minutes. */
export const CHALLENGE_TTL_MS = 5 * 60_000;
/** Challenges outstanding at once, at most: beyond it the oldest go (they are cheap to ask for again). */
const MAX_CHALLENGES = 10_000;
/** Where a share link points: the viewer page; the code travels in the fragment, which no request line, log or Referer carries. */
export const SHARE_PATH = '/share';
export const SHARE_CODE_TOKEN_TYPE = 'urn:dicom-vault:params:share-code';
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export interface PatientApiDeps {
  identity: IdentityStore;
  grants: GrantService;
  /** The access seam's identify (PatientControlPolicy): who holds the bearer token. */
  identify: AccessPolicy['identify'];
  /** Whether the request came over TLS, loopback, or a trusted proxy that received it over HTTPS (as the policy's). */
  secureTransport(request: FastifyRequest): boolean;
  /** Passkeys' relying party (webauthnRpOf(--public-url)); absent: key files only. */
  webauthn?: WebAuthnRp & { rpName?: string };
  /** Base URL of share links (the node's public URL); default: from each request. */
  publicUrl?: string;
  sessionTtlMs?: number;
  now?: () => Date;
  /** Patients' erasure requests (issue 25); absent: those routes answer 404. */
  erasure?: {
    service: Pick<ErasureService, 'request' | 'store'>;
    catalog: Pick<Catalog, 'patientOf'>;
    /** The anchor receipt of a certificate's CID once confirmed; absent: the node does not anchor. */
    receiptOf?: (cid: string) => object | undefined;
  };
}

/** The passkeys' relying party from the node's public URL: its origin, and its host name as RP ID. WebAuthn needs a secure context: https, or http on localhost. */
export function webauthnRpOf(publicUrl: string | undefined): WebAuthnRp | undefined {
  if (publicUrl === undefined) return undefined;
  const url = new URL(publicUrl);
  if (url.protocol !== 'https:' && url.hostname !== 'localhost') return undefined;
  return { rpId: url.hostname, origins: [url.origin] };
}

/** A share link: the viewer page with the code in the fragment. */
export function shareUrl(base: string, code: string): string {
  return `${base.replace(/\/+$/, '')}${SHARE_PATH}#code=${encodeURIComponent(code)}`;
}

class Challenges {
  readonly #open = new Map<string, { purpose: string; expires: number }>();

  issue(purpose: string, now: number, bytes = randomBytes(32)): string {
    const challenge = bytes.toString('base64url');
    if (this.#open.size >= MAX_CHALLENGES) {
      for (const [k, v] of this.#open) if (v.expires <= now) this.#open.delete(k);
      while (this.#open.size >= MAX_CHALLENGES) this.#open.delete(this.#open.keys().next().value!);
    }
    this.#open.set(challenge, { purpose, expires: now + CHALLENGE_TTL_MS });
    return challenge;
  }

  /** Used up whether or not it was still good: a challenge is answered once. */
  take(challenge: string, purpose: string, now: number): boolean {
    const c = this.#open.get(challenge);
    if (c === undefined) return false;
    this.#open.delete(challenge);
    return c.purpose === purpose && c.expires > now;
  }
}

// ---- schemas (validation and the OpenAPI document) ----

const uid = { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)*$', maxLength: 64 } as const;
const patientRef = {
  type: 'object',
  required: ['id', 'issuer'],
  properties: { id: { type: 'string' }, issuer: { type: ['string', 'null'] } },
} as const;
const grantee = {
  type: 'object',
  required: ['kind'],
  description: "{kind:'user', id} a local account; {kind:'oidc', issuer, subject} an OpenID subject; {kind:'link'} whoever holds its share link",
  properties: { kind: { type: 'string', enum: ['user', 'oidc', 'link'] }, id: { type: 'string' }, issuer: { type: 'string' }, subject: { type: 'string' } },
} as const;
const statementSchema = {
  type: 'object',
  description: `The statement the patient signs (${GRANT_VERSION}); its RFC 8785 canonical JSON is what the signature covers.`,
  required: ['v', 'id', 'node', 'patient', 'patientIds', 'grantee', 'scope', 'dataTypes', 'actions', 'notBefore', 'notAfter', 'issuedAt'],
  properties: {
    v: { type: 'string', enum: [GRANT_VERSION] },
    id: { type: 'string', format: 'uuid' },
    node: { type: 'string', description: "the node's id (GET /api/patient)" },
    patient: { type: 'string', description: 'the patient account' },
    patientIds: { type: 'array', items: patientRef },
    grantee,
    scope: {
      type: 'object',
      properties: {
        studies: { type: 'array', items: uid },
        series: { type: 'array', items: { type: 'object', required: ['study', 'series'], properties: { study: uid, series: uid } } },
        modalities: { type: 'array', items: { type: 'string' } },
      },
    },
    dataTypes: { type: 'array', items: { type: 'string', enum: [...DATA_TYPES] } },
    actions: { type: 'array', items: { type: 'string', enum: [...GRANT_ACTIONS] } },
    notBefore: { type: 'string', description: 'UTC, to the second: 2027-03-01T12:00:00Z' },
    notAfter: { type: ['string', 'null'], description: 'UTC, to the second; null: until revoked' },
    issuedAt: { type: 'string' },
  },
} as const;
const proofSchema = {
  type: 'object',
  required: ['kind'],
  description:
    "ed25519: {kind, keyId, signature} the key file's Ed25519 signature (base64url) of the canonical statement; " +
    'webauthn: {kind, credentialId, authenticatorData, clientDataJSON, signature} (base64url) a passkey assertion whose challenge is base64url(SHA-256(canonical statement))',
  properties: {
    kind: { type: 'string', enum: ['ed25519', 'webauthn'] },
    keyId: { type: 'string' },
    signature: { type: 'string' },
    credentialId: { type: 'string' },
    authenticatorData: { type: 'string' },
    clientDataJSON: { type: 'string' },
  },
} as const;
const grantView = {
  type: 'object',
  additionalProperties: true,
  description: 'A grant: its statement, how it was signed, and where it stands now',
  properties: {
    statement: statementSchema,
    signedWith: { type: 'string', enum: ['ed25519', 'webauthn'] },
    status: { type: 'string', enum: ['active', 'pending', 'expired', 'revoked', 'invalid'] },
    reason: { type: 'string', description: 'invalid: why the grant is not enforced' },
    revokedAt: { type: ['string', 'null'] },
    revokedBy: { type: ['string', 'null'] },
  },
} as const;
const webauthnJson = {
  type: 'object',
  additionalProperties: true,
  required: ['id', 'rawId', 'response', 'type'],
  properties: { id: { type: 'string' }, rawId: { type: 'string' }, type: { type: 'string' }, response: { type: 'object', additionalProperties: true } },
} as const;
const anyObject = { type: 'object', additionalProperties: true } as const;
const error = { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } } } as const;
const errors = { 400: error, 401: error, 403: error, 404: error } as const;
const session = [{ patientSession: [] }];
const grantIdParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } } as const;

function view(r: GrantRecord & GrantCheck): object {
  return {
    statement: r.statement,
    signedWith: r.proof.kind,
    status: r.status,
    ...(r.reason !== undefined ? { reason: r.reason } : {}),
    revokedAt: r.revokedAt,
    revokedBy: r.revokedBy,
  };
}

function b64u(b: Uint8Array): string {
  return Buffer.from(b).toString('base64url');
}

export function patientApi(deps: PatientApiDeps): FastifyPluginAsync {
  const now = deps.now ?? (() => new Date());
  const challenges = new Challenges();
  const rp = deps.webauthn;

  return async (api: FastifyInstance) => {
    await api.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'dicom-vault patient API',
          version: '1',
          description: "Patients' control of who sees their imaging: enrollment, sessions, signed grants, share links, FHIR Consent export.",
        },
        components: {
          securitySchemes: {
            patientSession: { type: 'http', scheme: 'bearer', description: 'a patient session token (dvp_...) from POST /api/patient/session' },
          },
        },
      },
    });

    api.addHook('onRequest', async (request, reply) => {
      if (request.routeOptions.url?.endsWith('/openapi.json') || deps.secureTransport(request)) return;
      const why = 'the patient API is served only over HTTPS, on loopback, or through a trusted proxy that received the request over HTTPS';
      if (request.routeOptions.url?.endsWith('/token')) return oauthError(reply, 400, 'invalid_request', why);
      throw new VaultError('FORBIDDEN', why);
    });

    // RFC 6749 4.1.3 / 8693 2.1: the token request is a form. Parsed here (a few lines against a
    // plugin); a parameter given twice is refused, as RFC 6749 3.2 requires.
    api.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 8192 }, (_req, body, done) => {
      const params = new URLSearchParams(body as string);
      const out: Record<string, string> = {};
      for (const [k, v] of params) {
        if (k in out) return done(Object.assign(new Error(`the parameter ${k} is given more than once`), { statusCode: 400, oauth: true }), undefined);
        out[k] = v;
      }
      done(null, out);
    });

    const addKey = (account: string, key: NewKey): void => {
      if (deps.identity.patientKeys(account).some((k) => k.keyId === key.keyId)) throw new VaultError('CONFLICT', 'this key is registered already');
      try {
        deps.identity.addPatientKey(account, key);
      } catch (cause) {
        // The same key or passkey registered to another account (key ids and credential ids are unique).
        throw new VaultError('CONFLICT', 'this key is registered already', { cause });
      }
    };

    const patientOf = async (request: FastifyRequest): Promise<string> => {
      const principal = await deps.identify(request);
      if (principal.patientAccount === undefined) throw new VaultError('FORBIDDEN', 'a patient session is required (POST /api/patient/session)');
      return principal.patientAccount;
    };

    api.get('/openapi.json', { schema: { hide: true } }, async () => api.swagger());

    // ---- enrollment and keys ----

    api.post(
      '/patient/enrollment',
      {
        schema: {
          summary: "Use an enrollment code: opens a short session for registering keys, and registers a key file's public key if one is given",
          description: 'A passkey is then registered with POST /api/patient/keys/options and POST /api/patient/keys, under the session returned here.',
          tags: ['enrollment'],
          body: {
            type: 'object',
            required: ['code'],
            properties: { code: { type: 'string' }, publicKey: { type: 'string', description: "a key file's Ed25519 public key, SPKI PEM" } },
          },
          response: {
            201: {
              type: 'object',
              properties: {
                account: { type: 'string' },
                node: { type: 'string' },
                patientIds: { type: 'array', items: patientRef },
                keyId: { type: 'string' },
                token: { type: 'string', description: 'a patient session (dvp_...), short' },
                expiresAt: { type: 'string' },
              },
            },
            ...errors,
          },
        },
      },
      async (request, reply) => {
        const body = request.body as { code: string; publicKey?: string };
        // The key is checked before the code is used up: a malformed key does not spend it.
        const key = body.publicKey === undefined ? undefined : keyFileKey(body.publicKey);
        const t = now();
        const account = deps.identity.consumeEnrollment(body.code, t);
        if (account === undefined) throw new VaultError('BAD_REQUEST', 'the enrollment code is unknown, used or expired: ask the hospital for a new one');
        if (key !== undefined) addKey(account, key);
        const expiresAt = new Date(t.getTime() + ENROLLMENT_SESSION_MS);
        return reply.code(201).send({
          account,
          node: deps.grants.nodeId,
          patientIds: deps.identity.patientIds(account),
          ...(key !== undefined ? { keyId: key.keyId } : {}),
          token: deps.identity.issueToken('patient', account, expiresAt),
          expiresAt: expiresAt.toISOString(),
        });
      },
    );

    api.post(
      '/patient/keys/options',
      {
        schema: {
          summary: 'WebAuthn registration options for a new passkey of the account',
          tags: ['enrollment'],
          security: session,
          response: { 200: anyObject, ...errors },
        },
      },
      async (request) => {
        const account = await patientOf(request);
        if (rp === undefined) throw new VaultError('NOT_FOUND', 'passkeys are not configured on this node (it needs an https --public-url)');
        const challenge = challenges.issue(`register:${account}`, now().getTime());
        return generateRegistrationOptions({
          rpName: rp.rpName ?? 'dicom-vault',
          rpID: rp.rpId,
          userName: 'patient',
          userDisplayName: 'dicom-vault patient',
          // The user handle is the account: a discoverable passkey names it when it signs in.
          userID: Buffer.from(account, 'utf8'),
          challenge: Buffer.from(challenge, 'base64url'),
          attestationType: 'none',
          excludeCredentials: deps.identity
            .patientKeys(account)
            .filter((k) => k.credentialId !== undefined)
            .map((k) => ({ id: k.credentialId! })),
          authenticatorSelection: { residentKey: 'preferred', userVerification: 'required' },
          supportedAlgorithmIDs: [...PASSKEY_ALGORITHMS],
          timeout: CHALLENGE_TTL_MS,
        });
      },
    );

    api.post(
      '/patient/keys',
      {
        schema: {
          summary: "Register a key for the account: a passkey (the registration response to /keys/options) or a key file's Ed25519 public key",
          tags: ['enrollment'],
          security: session,
          body: {
            type: 'object',
            properties: {
              publicKey: { type: 'string', description: "a key file's Ed25519 public key, SPKI PEM" },
              webauthn: { ...webauthnJson, description: 'the RegistrationResponseJSON of navigator.credentials.create()' },
            },
          },
          response: { 201: { type: 'object', properties: { keyId: { type: 'string' }, kind: { type: 'string' } } }, ...errors },
        },
      },
      async (request, reply) => {
        const account = await patientOf(request);
        const body = request.body as { publicKey?: string; webauthn?: RegistrationResponseJSON };
        if ((body.publicKey === undefined) === (body.webauthn === undefined))
          throw new VaultError('BAD_REQUEST', 'give either publicKey (a key file) or webauthn (a passkey)');
        let key: NewKey;
        if (body.publicKey !== undefined) key = keyFileKey(body.publicKey);
        else {
          if (rp === undefined) throw new VaultError('NOT_FOUND', 'passkeys are not configured on this node');
          let result: Awaited<ReturnType<typeof verifyRegistrationResponse>>;
          try {
            result = await verifyRegistrationResponse({
              response: body.webauthn!,
              expectedChallenge: (c) => challenges.take(c, `register:${account}`, now().getTime()),
              expectedOrigin: [...rp.origins],
              expectedRPID: rp.rpId,
              requireUserVerification: true,
              supportedAlgorithmIDs: [...PASSKEY_ALGORITHMS],
            });
          } catch (err) {
            throw new VaultError('BAD_REQUEST', `the passkey registration was refused: ${(err as Error).message}`);
          }
          if (!result.verified) throw new VaultError('BAD_REQUEST', 'the passkey registration does not verify');
          const cred = result.registrationInfo.credential;
          key = { keyId: `webauthn:${cred.id}`, kind: 'webauthn', publicKey: b64u(cred.publicKey), credentialId: cred.id, counter: cred.counter };
        }
        addKey(account, key);
        return reply.code(201).send({ keyId: key.keyId, kind: key.kind });
      },
    );

    // ---- sessions ----

    api.post(
      '/patient/session/challenge',
      {
        schema: {
          summary: 'A one-time challenge to open a session: sign it with the key file, or answer the WebAuthn request options with a passkey',
          tags: ['session'],
          response: {
            200: {
              type: 'object',
              properties: {
                challenge: { type: 'string' },
                expiresAt: { type: 'string' },
                signThis: {
                  type: 'string',
                  description: "key files: the canonical JSON to sign with Ed25519 ({purpose:'dicom-vault-session/1', node, challenge})",
                },
                webauthn: anyObject,
              },
            },
          },
        },
      },
      async () => {
        const t = now().getTime();
        const challenge = challenges.issue('session', t);
        return {
          challenge,
          expiresAt: new Date(t + CHALLENGE_TTL_MS).toISOString(),
          signThis: canonicalJson(sessionPayload(deps.grants.nodeId, challenge)),
          ...(rp !== undefined
            ? {
                webauthn: await generateAuthenticationOptions({
                  rpID: rp.rpId,
                  challenge: Buffer.from(challenge, 'base64url'),
                  userVerification: 'required',
                  timeout: CHALLENGE_TTL_MS,
                }),
              }
            : {}),
        };
      },
    );

    api.post(
      '/patient/session',
      {
        schema: {
          summary: 'Open a patient session: the challenge signed by a registered key file, or a passkey assertion over it',
          tags: ['session'],
          body: {
            type: 'object',
            properties: {
              account: { type: 'string', description: 'the patient account (a key file names it; a discoverable passkey names it by itself)' },
              keyId: { type: 'string' },
              challenge: { type: 'string' },
              signature: { type: 'string', description: 'Ed25519 signature (base64url) of signThis' },
              webauthn: {
                ...webauthnJson,
                description: 'the AuthenticationResponseJSON of navigator.credentials.get() with the options of /session/challenge',
              },
            },
          },
          response: {
            200: {
              type: 'object',
              properties: { token: { type: 'string' }, tokenType: { type: 'string' }, expiresAt: { type: 'string' }, account: { type: 'string' } },
            },
            ...errors,
          },
        },
      },
      async (request) => {
        const body = request.body as { account?: string; keyId?: string; challenge?: string; signature?: string; webauthn?: AuthenticationResponseJSON };
        const t = now();
        let account: string | undefined;
        if (body.webauthn !== undefined) {
          if (rp === undefined) throw new VaultError('NOT_FOUND', 'passkeys are not configured on this node');
          const a = body.webauthn;
          const handle = typeof a.response.userHandle === 'string' ? Buffer.from(a.response.userHandle, 'base64url').toString('utf8') : undefined;
          const accountOf = body.account ?? handle;
          const key = accountOf === undefined ? undefined : deps.identity.patientKeys(accountOf).find((k) => k.kind === 'webauthn' && k.credentialId === a.id);
          if (key === undefined) throw unauthorizedSession('the passkey is not registered for an account on this node');
          let clientChallenge: string;
          try {
            clientChallenge = JSON.parse(Buffer.from(a.response.clientDataJSON, 'base64url').toString('utf8')).challenge;
          } catch {
            throw unauthorizedSession("the passkey's client data is not JSON");
          }
          if (typeof clientChallenge !== 'string' || !challenges.take(clientChallenge, 'session', t.getTime()))
            throw unauthorizedSession('the challenge is unknown, used or expired');
          const verdict = await verifyAssertion(
            { credentialId: a.id, authenticatorData: a.response.authenticatorData, clientDataJSON: a.response.clientDataJSON, signature: a.response.signature },
            clientChallenge,
            key,
            rp,
          );
          if (typeof verdict === 'string') throw unauthorizedSession(verdict);
          deps.identity.updateKeyCounter(key.keyId, verdict.counter);
          account = accountOf;
        } else {
          if (body.account === undefined || body.keyId === undefined || body.challenge === undefined || body.signature === undefined) {
            throw new VaultError('BAD_REQUEST', 'give account, keyId, challenge and signature (a key file), or webauthn (a passkey)');
          }
          if (!challenges.take(body.challenge, 'session', t.getTime())) throw unauthorizedSession('the challenge is unknown, used or expired');
          const owner = body.account;
          const key = owner === undefined ? undefined : deps.identity.patientKeys(owner).find((k) => k.keyId === body.keyId && k.kind === 'ed25519');
          if (key === undefined) throw unauthorizedSession('the key is not registered for that account on this node');
          if (!ed25519Verifies(canonicalBytes(sessionPayload(deps.grants.nodeId, body.challenge)), body.signature, key.publicKey)) {
            throw unauthorizedSession('the signature of the challenge does not verify under that key');
          }
          account = owner;
        }
        const expiresAt = new Date(t.getTime() + (deps.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS));
        return { token: deps.identity.issueToken('patient', account!, expiresAt), tokenType: 'Bearer', expiresAt: expiresAt.toISOString(), account };
      },
    );

    api.delete(
      '/patient/session',
      { schema: { summary: 'End every session of the account', tags: ['session'], security: session, response: { 204: { type: 'null' }, ...errors } } },
      async (request, reply) => {
        deps.identity.revokeTokens('patient', await patientOf(request));
        return reply.code(204).send();
      },
    );

    // ---- the account and its grants ----

    api.get(
      '/patient',
      {
        schema: {
          summary: "The patient's account: this node's id (grants name it), the Patient IDs a grant covers, the registered keys",
          tags: ['grants'],
          security: session,
          response: {
            200: {
              type: 'object',
              properties: {
                account: { type: 'string' },
                node: { type: 'string' },
                patientIds: { type: 'array', items: patientRef },
                keys: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: { keyId: { type: 'string' }, kind: { type: 'string' }, credentialId: { type: 'string' }, createdAt: { type: 'string' } },
                  },
                },
              },
            },
            ...errors,
          },
        },
      },
      async (request) => {
        const account = await patientOf(request);
        return {
          account,
          node: deps.grants.nodeId,
          patientIds: deps.identity.patientIds(account),
          keys: deps.identity
            .patientKeys(account)
            .map((k) => ({ keyId: k.keyId, kind: k.kind, ...(k.credentialId !== undefined ? { credentialId: k.credentialId } : {}), createdAt: k.createdAt })),
        };
      },
    );

    api.post(
      '/patient/grants/draft',
      {
        schema: {
          summary: 'The statement to sign for a grant, its canonical JSON, the passkey challenge (base64url SHA-256 of it) and WebAuthn request options',
          description: 'Nothing is stored: the patient signs the statement (shown to them) and POSTs it with the proof to /api/patient/grants.',
          tags: ['grants'],
          security: session,
          body: {
            type: 'object',
            required: ['to'],
            properties: {
              to: { type: 'string', description: 'user:NAME, oidc:ISSUER#SUBJECT or link' },
              studies: { type: 'array', items: uid },
              series: { type: 'array', items: { type: 'object', required: ['study', 'series'], properties: { study: uid, series: uid } } },
              modalities: { type: 'array', items: { type: 'string' } },
              dataTypes: { type: 'array', items: { type: 'string', enum: [...DATA_TYPES] } },
              actions: { type: 'array', items: { type: 'string', enum: [...GRANT_ACTIONS] } },
              from: { type: 'string', description: 'ISO 8601 time or +DURATION (default now)' },
              until: { type: 'string', description: 'ISO 8601 time or date, or +DURATION (+12h, +7d, +2w); default +30d' },
              openEnded: { type: 'boolean', description: 'until revoked' },
            },
          },
          response: {
            200: {
              type: 'object',
              properties: { statement: statementSchema, canonical: { type: 'string' }, challenge: { type: 'string' }, webauthn: anyObject },
            },
            ...errors,
          },
        },
      },
      async (request) => {
        const account = await patientOf(request);
        const b = request.body as {
          to: string;
          studies?: string[];
          series?: Array<{ study: string; series: string }>;
          modalities?: string[];
          dataTypes?: Array<(typeof DATA_TYPES)[number]>;
          actions?: Array<(typeof GRANT_ACTIONS)[number]>;
          from?: string;
          until?: string;
          openEnded?: boolean;
        };
        if (b.openEnded === true && b.until !== undefined) throw new VaultError('BAD_REQUEST', 'until and openEnded exclude each other');
        const t = now();
        const statement = draftStatement(
          { nodeId: deps.grants.nodeId, account, patientIds: deps.identity.patientIds(account), now: t },
          {
            grantee: parseGrantee(b.to),
            ...(b.studies !== undefined ? { studies: b.studies } : {}),
            ...(b.series !== undefined ? { series: b.series } : {}),
            ...(b.modalities !== undefined ? { modalities: b.modalities } : {}),
            ...(b.dataTypes !== undefined ? { dataTypes: b.dataTypes } : {}),
            ...(b.actions !== undefined ? { actions: b.actions } : {}),
            ...(b.from !== undefined ? { notBefore: parseUntil(b.from, t) } : {}),
            ...(b.openEnded === true ? { notAfter: null } : b.until !== undefined ? { notAfter: parseUntil(b.until, t) } : {}),
          },
        );
        const challenge = statementChallenge(statement);
        const passkeys = deps.identity.patientKeys(account).filter((k) => k.kind === 'webauthn' && k.credentialId !== undefined);
        return {
          statement,
          canonical: canonicalJson(statement),
          challenge,
          ...(rp !== undefined && passkeys.length > 0
            ? {
                webauthn: await generateAuthenticationOptions({
                  rpID: rp.rpId,
                  challenge: Buffer.from(challenge, 'base64url'),
                  allowCredentials: passkeys.map((k) => ({ id: k.credentialId! })),
                  userVerification: 'required',
                  timeout: CHALLENGE_TTL_MS,
                }),
              }
            : {}),
        };
      },
    );

    api.post(
      '/patient/grants',
      {
        schema: {
          summary: 'Add a grant the patient signed',
          description:
            'The node checks the statement (yours, this node, your Patient IDs, not ended) and your signature under one of your registered keys; it stores and enforces nothing else.',
          tags: ['grants'],
          security: session,
          body: { type: 'object', required: ['statement', 'proof'], properties: { statement: statementSchema, proof: proofSchema } },
          response: { 201: grantView, ...errors },
        },
      },
      async (request, reply) => {
        const account = await patientOf(request);
        const body = request.body as { statement: unknown; proof: unknown };
        const t = now();
        const record = await deps.grants.add(body, account, t);
        return reply.code(201).send(view({ ...record, ...deps.grants.check(record, t) }));
      },
    );

    api.get(
      '/patient/grants',
      {
        schema: {
          summary: "The patient's grants, newest first, each with where it stands",
          tags: ['grants'],
          security: session,
          response: { 200: { type: 'array', items: grantView }, ...errors },
        },
      },
      async (request) => {
        const account = await patientOf(request);
        return deps.grants.forPatient(account, now()).map(view);
      },
    );

    const fhirBundle = async (request: FastifyRequest, reply: FastifyReply) => {
      const account = await patientOf(request);
      const t = now();
      const entries = deps.grants
        .forPatient(account, t)
        .filter((r) => r.status !== 'invalid')
        .map((r) => ({ record: r, status: r.status }));
      return reply.type('application/fhir+json').send(JSON.stringify(consentBundle(entries, t)));
    };
    api.get(
      '/patient/grants/fhir',
      {
        schema: {
          summary: 'The grants as a FHIR R4 Bundle (collection) of Consent resources (grants that do not verify are left out)',
          tags: ['fhir'],
          security: session,
          produces: ['application/fhir+json'],
          response: { 200: { ...anyObject, description: 'FHIR R4 Bundle' }, ...errors },
        },
      },
      fhirBundle,
    );

    api.get(
      '/patient/grants/:id',
      {
        schema: {
          summary: 'One grant and where it stands',
          tags: ['grants'],
          security: session,
          params: grantIdParams,
          response: { 200: grantView, ...errors },
        },
      },
      async (request) => {
        const account = await patientOf(request);
        return view(deps.grants.ofPatient(account, (request.params as { id: string }).id, now()));
      },
    );

    api.get(
      '/patient/grants/:id/fhir',
      {
        schema: {
          summary: 'One grant as a FHIR R4 Consent',
          tags: ['fhir'],
          security: session,
          params: grantIdParams,
          produces: ['application/fhir+json'],
          response: { 200: anyObject, ...errors },
        },
      },
      async (request, reply) => {
        const account = await patientOf(request);
        const r = deps.grants.ofPatient(account, (request.params as { id: string }).id, now());
        if (r.status === 'invalid') throw new VaultError('NOT_FOUND', `grant ${r.statement.id} does not verify (${r.reason}): it is no consent of the patient`);
        return reply.type('application/fhir+json').send(JSON.stringify(grantToConsent(r, r.status)));
      },
    );

    api.post(
      '/patient/grants/:id/revoke',
      {
        schema: {
          summary: 'Revoke a grant at once: its share-link tokens die, responses streaming under it are cut',
          tags: ['grants'],
          security: session,
          params: grantIdParams,
          response: { 200: grantView, ...errors },
        },
      },
      async (request) => {
        const account = await patientOf(request);
        const id = (request.params as { id: string }).id;
        deps.grants.revoke(id, `patient:${account}`, account, now());
        return view(deps.grants.ofPatient(account, id, now()));
      },
    );

    api.post(
      '/patient/grants/:id/links',
      {
        schema: {
          summary: 'A share link for a grant to "link": a single-use code (in the URL fragment), valid 10 minutes, exchanged at POST /api/token',
          tags: ['share links'],
          security: session,
          params: grantIdParams,
          response: { 201: { type: 'object', properties: { url: { type: 'string' }, code: { type: 'string' }, expiresAt: { type: 'string' } } }, ...errors },
        },
      },
      async (request, reply) => {
        const account = await patientOf(request);
        const { code, expiresAt } = deps.grants.createShareCode(account, (request.params as { id: string }).id, now(), SHARE_CODE_MAX_TTL_MS);
        const base = deps.publicUrl ?? `${request.protocol}://${request.host}`;
        return reply.code(201).send({ url: shareUrl(base, code), code, expiresAt: expiresAt.toISOString() });
      },
    );

    // ---- erasure (GDPR Art. 17) ----

    const requestView = {
      type: 'object',
      properties: {
        id: { type: 'string' },
        scope: { type: 'string', enum: ['patient', 'study'] },
        study: { type: ['string', 'null'], description: 'the study asked for (scope study); null once erased' },
        state: { type: 'string', enum: ['pending', 'refused', 'approved', 'done', 'failed'] },
        reason: { type: ['string', 'null'], description: "the operator's reason for a refusal" },
        decidedAt: { type: ['string', 'null'] },
        createdAt: { type: 'string' },
        certificate: { type: ['string', 'null'], description: 'the certificate id, once done' },
      },
    } as const;
    const toView = (r: ErasureRequest): object => ({
      id: r.id,
      scope: r.scope,
      study: r.studyInstanceUID,
      state: r.state,
      reason: r.reason,
      decidedAt: r.decidedAt,
      createdAt: r.createdAt,
      certificate: r.certificateId,
    });
    const erasureOf = (): NonNullable<PatientApiDeps['erasure']> => {
      if (deps.erasure === undefined) throw new VaultError('NOT_FOUND', 'this node takes no erasure requests');
      return deps.erasure;
    };

    api.post(
      '/patient/erasure-requests',
      {
        schema: {
          summary: 'Ask for the erasure of one of your studies, or of all of them',
          description:
            'Recorded as pending: an operator approves it (the studies are erased: keys destroyed, records and blocks deleted, a signed certificate issued) ' +
            'or refuses it with a reason (a retention duty of health law, for instance). A study under a retention hold is refused with the hold named.',
          tags: ['erasure'],
          security: session,
          body: { type: 'object', properties: { study: { ...uid, description: 'one study; absent: every study of your Patient IDs' } } },
          response: { 202: requestView, ...errors },
        },
      },
      async (request, reply) => {
        const account = await patientOf(request);
        const e = erasureOf();
        const study = (request.body as { study?: string } | undefined)?.study;
        if (study !== undefined) {
          // Only one's own study: one of another patient answers as one never stored.
          const p = e.catalog.patientOf(study);
          const own = deps.identity.patientIds(account).some((r) => p !== undefined && r.id === p.patientId && (r.issuer === null || r.issuer === p.issuer));
          if (!own) throw new VaultError('STUDY_NOT_FOUND', 'no such study among yours');
        }
        const r = e.service.request(account, study === undefined ? 'patient' : 'study', study);
        return reply.code(202).send(toView(r));
      },
    );

    api.get(
      '/patient/erasure-requests',
      {
        schema: {
          summary: 'Your erasure requests and where each stands',
          tags: ['erasure'],
          security: session,
          response: { 200: { type: 'object', properties: { requests: { type: 'array', items: requestView } } }, ...errors },
        },
      },
      async (request) => {
        const account = await patientOf(request);
        return { requests: erasureOf().service.store.requests({ account }).map(toView) };
      },
    );

    api.get(
      '/patient/erasure-requests/:id/certificate',
      {
        schema: {
          summary: 'The signed erasure certificate of a request carried out',
          description: "dicom-vault-erasure/1: what was erased by its commitments (never by UID), when, on whose request, signed with the node's Ed25519 key.",
          tags: ['erasure'],
          security: session,
          params: grantIdParams,
          response: { 200: anyObject, ...errors },
        },
      },
      async (request) => {
        const account = await patientOf(request);
        const e = erasureOf();
        const r = e.service.store.request((request.params as { id: string }).id);
        if (r === undefined || r.account !== account) throw new VaultError('NOT_FOUND', 'no such erasure request of yours');
        const json = r.certificateId === null ? undefined : e.service.store.certificate(r.certificateId);
        if (json === undefined) throw new VaultError('NOT_FOUND', `the request is ${r.state}: no certificate yet`);
        return JSON.parse(json) as object;
      },
    );

    api.get(
      '/patient/erasure-requests/:id/receipt',
      {
        schema: {
          summary: "The anchor receipt of a request's erasure certificate",
          description:
            'The certificate is anchored like a study version: its CID (CIDv1 dag-cbor sha2-256 of the certificate JSON) is a leaf of a batch on chain. ' +
            '200: the receipt (check it with `dicom-vault verify-receipt --cid <the certificate CID>`); 202 while it is on its way; 404 ANCHOR_DISABLED on a node that does not anchor.',
          tags: ['erasure'],
          security: session,
          params: grantIdParams,
          response: { 200: anyObject, 202: anyObject, ...errors },
        },
      },
      async (request, reply) => {
        const account = await patientOf(request);
        const e = erasureOf();
        const r = e.service.store.request((request.params as { id: string }).id);
        if (r === undefined || r.account !== account) throw new VaultError('NOT_FOUND', 'no such erasure request of yours');
        const json = r.certificateId === null ? undefined : e.service.store.certificate(r.certificateId);
        if (json === undefined) throw new VaultError('NOT_FOUND', `the request is ${r.state}: no certificate yet`);
        if (e.receiptOf === undefined) throw new VaultError('ANCHOR_DISABLED', 'this node does not anchor');
        const cid = certificateCid(JSON.parse(json) as ErasureCertificate).toString();
        const receipt = e.receiptOf(cid);
        if (receipt === undefined) return reply.code(202).header('retry-after', '10').send({ state: 'pending', cid });
        return receipt;
      },
    );

    // ---- RFC 8693 token exchange ----

    api.post(
      '/token',
      {
        attachValidation: true,
        schema: {
          summary: 'Exchange a share code for a bearer token bound to its grant (RFC 8693)',
          description: 'The token is good until the grant ends or is revoked, 12 hours at most. Errors are RFC 6749 5.2 ({error, error_description}).',
          tags: ['share links'],
          consumes: ['application/x-www-form-urlencoded'],
          body: {
            type: 'object',
            required: ['grant_type', 'subject_token', 'subject_token_type'],
            properties: {
              grant_type: { type: 'string', enum: [TOKEN_EXCHANGE] },
              subject_token: { type: 'string', description: 'the share code' },
              subject_token_type: { type: 'string', enum: [SHARE_CODE_TOKEN_TYPE] },
              requested_token_type: { type: 'string', enum: [ACCESS_TOKEN_TYPE] },
            },
          },
          response: {
            200: {
              type: 'object',
              properties: {
                access_token: { type: 'string' },
                issued_token_type: { type: 'string' },
                token_type: { type: 'string' },
                expires_in: { type: 'integer' },
              },
            },
            400: { type: 'object', properties: { error: { type: 'string' }, error_description: { type: 'string' } } },
          },
        },
      },
      async (request, reply) => {
        const body = (request.body ?? {}) as Record<string, string>;
        if (request.validationError !== undefined) {
          if (typeof body.grant_type === 'string' && body.grant_type !== TOKEN_EXCHANGE)
            return oauthError(reply, 400, 'unsupported_grant_type', `grant_type must be ${TOKEN_EXCHANGE}`);
          return oauthError(reply, 400, 'invalid_request', request.validationError.message);
        }
        const t = now();
        const result = deps.grants.exchangeShareCode(body.subject_token!, t);
        if (typeof result === 'string') return oauthError(reply, 400, 'invalid_grant', result);
        void reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
        return {
          access_token: result.token,
          issued_token_type: ACCESS_TOKEN_TYPE,
          token_type: 'Bearer',
          expires_in: Math.max(1, Math.floor((result.expiresAt.getTime() - t.getTime()) / 1000)),
        };
      },
    );
  };
}

type NewKey = { keyId: string; kind: 'ed25519' | 'webauthn'; publicKey: string; credentialId?: string; counter?: number };

function keyFileKey(pem: string): NewKey {
  const pub = ed25519PublicKey(pem);
  return { keyId: ed25519KeyId(pub), kind: 'ed25519', publicKey: pub.export({ type: 'spki', format: 'pem' }) as string };
}

function unauthorizedSession(reason: string): VaultError {
  return new VaultError('UNAUTHORIZED', reason, { details: { wwwAuthenticate: 'Bearer realm="dicom-vault"' } });
}

function oauthError(reply: FastifyReply, status: number, error: string, description: string): FastifyReply {
  return reply
    .code(status)
    .header('cache-control', 'no-store')
    .type('application/json')
    .send({ error, error_description: description.replace(/["\\]/g, '') });
}
