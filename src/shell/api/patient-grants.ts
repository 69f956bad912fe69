// The patient API's account and grants: list, add, revoke, share links, FHIR Consent, and the RFC 8693
// token exchange of a share link's code (patient.ts wires it; its header lists the routes).
import { generateAuthenticationOptions } from '@simplewebauthn/server';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { VaultError } from '../../core/errors.ts';
import { canonicalJson } from '../../grants/canonical.ts';
import { consentBundle, grantToConsent } from '../../grants/fhir.ts';
import { DATA_TYPES, GRANT_ACTIONS } from '../../grants/model.ts';
import { statementChallenge } from '../../grants/signing.ts';
import { SHARE_CODE_REFUSALS, type ShareCodeRefusal } from '../../grants/service.ts';
import { draftStatement, parseGrantee, parseUntil } from '../../grants/statement.ts';
import { SHARE_CODE_MAX_TTL_MS } from '../../grants/store.ts';
import {
  ACCESS_TOKEN_TYPE,
  CHALLENGE_TTL_MS,
  type PatientRoutesContext,
  SHARE_CODE_TOKEN_TYPE,
  TOKEN_EXCHANGE,
  anyObject,
  errors,
  grantIdParams,
  grantView,
  oauthError,
  patientRef,
  proofSchema,
  session,
  shareUrl,
  statementSchema,
  uid,
  view,
} from './patient-common.ts';

/** The account, and its grants: what the patient's page shows and signs. */
export async function grantRoutes(api: FastifyInstance, ctx: PatientRoutesContext): Promise<void> {
  const { deps, now, rp, patientOf } = ctx;
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

  // The doctors and institutions a patient can pick as grantee: the node's accounts with the
  // grantee role (not revoked). A hospital's directory of who may be granted is no secret from its
  // patients; nothing else about the accounts (roles, dates, tokens) is shown.
  api.get(
    '/patient/grantees',
    {
      schema: {
        summary: 'The accounts a grant can name as grantee (doctors, institutions)',
        tags: ['grants'],
        security: session,
        response: {
          200: {
            type: 'object',
            properties: {
              grantees: { type: 'array', items: { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' } } } },
            },
          },
          ...errors,
        },
      },
    },
    async (request) => {
      await patientOf(request);
      const grantees = deps.identity
        .users()
        .filter((u) => u.revokedAt === null && u.roles.includes('grantee'))
        .map((u) => ({ id: `user:${u.name}`, name: u.name }))
        .sort((a, b) => a.name.localeCompare(b.name));
      return { grantees };
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
}
/** RFC 8693: a share link's single-use code exchanged for a bearer token bound to its grant. */
export async function tokenRoutes(api: FastifyInstance, ctx: PatientRoutesContext): Promise<void> {
  const { deps, now } = ctx;
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
          400: {
            type: 'object',
            properties: {
              error: { type: 'string' },
              error_description: { type: 'string' },
              share_code: {
                type: 'string',
                enum: Object.keys(SHARE_CODE_REFUSALS),
                description: 'invalid_grant: why the code was refused (used: someone opened the link already)',
              },
            },
          },
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
      if (typeof result === 'string') {
        const kind = (Object.keys(SHARE_CODE_REFUSALS) as ShareCodeRefusal[]).find((k) => SHARE_CODE_REFUSALS[k] === result);
        return oauthError(reply, 400, 'invalid_grant', result, kind !== undefined ? { share_code: kind } : {});
      }
      void reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
      return {
        access_token: result.token,
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: 'Bearer',
        expires_in: Math.max(1, Math.floor((result.expiresAt.getTime() - t.getTime()) / 1000)),
      };
    },
  );
}
