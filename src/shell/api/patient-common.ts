// What the patient API's route files share: its dependencies and constants, the open challenges,
// the request and response schemas (validation and the OpenAPI document), and small helpers.
import { randomBytes, type KeyObject } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { AccessPolicy } from '../../access/policy.ts';
import { VaultError } from '../../core/errors.ts';
import { DATA_TYPES, GRANT_ACTIONS, GRANT_VERSION, type GrantRecord } from '../../grants/model.ts';
import type { GrantCheck, GrantService } from '../../grants/service.ts';
import { ed25519KeyId, ed25519PublicKey, type WebAuthnRp } from '../../grants/signing.ts';
import type { IdentityStore } from '../../identity/store.ts';
import type { Catalog } from '../../catalog/catalog.ts';
import type { ErasureService } from '../../erasure/service.ts';
import type { PatientRef } from '../../catalog/scope.ts';

/** A patient session lasts this long. 1 hour. */
export const DEFAULT_SESSION_TTL_MS = 3_600_000;
/** The session an enrollment code opens, for registering keys. 15 minutes. */
export const ENROLLMENT_SESSION_MS = 15 * 60_000;
/** A challenge (session, passkey registration) is answered within this long. 5 minutes. */
export const CHALLENGE_TTL_MS = 5 * 60_000;
/** Challenges outstanding at once, at most: beyond it the oldest go (they are cheap to ask for again). */
export const MAX_CHALLENGES = 10_000;
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
  /** More routes under the same /api and OpenAPI document (the audit log's: src/shell/api/audit.ts). */
  audit?: FastifyPluginAsync;
  /** Patients' erasure requests (issue 25); absent: those routes answer 404. */
  erasure?: {
    service: Pick<ErasureService, 'request' | 'store'>;
    catalog: Pick<Catalog, 'patientOf'>;
    /** The anchor receipt of a certificate's CID once confirmed; absent: the node does not anchor. */
    receiptOf?: (cid: string) => object | undefined;
  };
  /** Patients' exports for another provider (issue 25, GDPR Art. 20; src/shell/patient-export.ts PatientExports); absent: those routes answer 404. */
  exports?: {
    start(account: string, patient: PatientRef, recipient: KeyObject): ExportJobView;
    job(id: string): ExportJobView | undefined;
  };
}

/** A patient's export as the API shows it (PatientExports' jobs). */
export interface ExportJobView {
  id: string;
  account: string;
  state: 'preparing' | 'ready' | 'failed';
  createdAt: string;
  report?: { studies: number; bytes: number };
  reason?: string;
  file: string;
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

export class Challenges {
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

export const uid = { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)*$', maxLength: 64 } as const;
export const patientRef = {
  type: 'object',
  required: ['id', 'issuer'],
  properties: { id: { type: 'string' }, issuer: { type: ['string', 'null'] } },
} as const;
export const grantee = {
  type: 'object',
  required: ['kind'],
  description: "{kind:'user', id} a local account; {kind:'oidc', issuer, subject} an OpenID subject; {kind:'link'} whoever holds its share link",
  properties: { kind: { type: 'string', enum: ['user', 'oidc', 'link'] }, id: { type: 'string' }, issuer: { type: 'string' }, subject: { type: 'string' } },
} as const;
export const statementSchema = {
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
export const proofSchema = {
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
export const grantView = {
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
export const webauthnJson = {
  type: 'object',
  additionalProperties: true,
  required: ['id', 'rawId', 'response', 'type'],
  properties: { id: { type: 'string' }, rawId: { type: 'string' }, type: { type: 'string' }, response: { type: 'object', additionalProperties: true } },
} as const;
export const anyObject = { type: 'object', additionalProperties: true } as const;
export const error = { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } } } as const;
export const errors = { 400: error, 401: error, 403: error, 404: error } as const;
export const session = [{ patientSession: [] }];
export const grantIdParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } } as const;

export function view(r: GrantRecord & GrantCheck): object {
  return {
    statement: r.statement,
    signedWith: r.proof.kind,
    status: r.status,
    ...(r.reason !== undefined ? { reason: r.reason } : {}),
    revokedAt: r.revokedAt,
    revokedBy: r.revokedBy,
  };
}

export function b64u(b: Uint8Array): string {
  return Buffer.from(b).toString('base64url');
}

/** What the patient API's route groups share: its dependencies, clock, open challenges and helpers. */
export interface PatientRoutesContext {
  deps: PatientApiDeps;
  now: () => Date;
  challenges: Challenges;
  rp: PatientApiDeps['webauthn'];
  addKey: (account: string, key: NewKey) => void;
  /** The patient account of a request's session; FORBIDDEN without one. */
  patientOf: (request: FastifyRequest) => Promise<string>;
}

export type NewKey = { keyId: string; kind: 'ed25519' | 'webauthn'; publicKey: string; credentialId?: string; counter?: number };

export function keyFileKey(pem: string): NewKey {
  const pub = ed25519PublicKey(pem);
  return { keyId: ed25519KeyId(pub), kind: 'ed25519', publicKey: pub.export({ type: 'spki', format: 'pem' }) as string };
}

export function unauthorizedSession(reason: string): VaultError {
  return new VaultError('UNAUTHORIZED', reason, { details: { wwwAuthenticate: 'Bearer realm="dicom-vault"' } });
}

export function oauthError(reply: FastifyReply, status: number, error: string, description: string, extra: Record<string, string> = {}): FastifyReply {
  return reply
    .code(status)
    .header('cache-control', 'no-store')
    .type('application/json')
    .send({ error, error_description: description.replace(/["\\]/g, ''), ...extra });
}
