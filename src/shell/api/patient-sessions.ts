// The patient API's enrollment, keys and sessions (patient.ts wires it; its header lists the routes).
import {
  type AuthenticationResponseJSON,
  generateAuthenticationOptions,
  generateRegistrationOptions,
  type RegistrationResponseJSON,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import type { FastifyInstance } from 'fastify';
import { VaultError } from '../../core/errors.ts';
import { canonicalBytes, canonicalJson } from '../../grants/canonical.ts';
import { ed25519Verifies, PASSKEY_ALGORITHMS, sessionPayload, verifyAssertion } from '../../grants/signing.ts';
import {
  CHALLENGE_TTL_MS,
  DEFAULT_SESSION_TTL_MS,
  ENROLLMENT_SESSION_MS,
  type NewKey,
  type PatientRoutesContext,
  anyObject,
  b64u,
  errors,
  keyFileKey,
  patientRef,
  session,
  unauthorizedSession,
  webauthnJson,
} from './patient-common.ts';

/** Enrollment with a code, keys (passkeys and key files), and sessions. */
export async function sessionRoutes(api: FastifyInstance, ctx: PatientRoutesContext): Promise<void> {
  const { deps, now, challenges, rp, addKey, patientOf } = ctx;
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
}
