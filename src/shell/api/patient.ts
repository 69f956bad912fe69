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
//   GET  /api/patient/grantees               the doctors and institutions a grant can name (accounts with the grantee role)
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
//   POST /api/patient/exports              export every study for another provider, sealed to its node key (prepared in the background)
//   GET  /api/patient/exports/{id}[/archive]  where it stands; the archive (application/vnd.ipld.car) once ready
//   GET  /api/grantee/grants                 the caller's own grants as grantee (src/shell/api/grantee.ts)
//   POST /api/token                          RFC 8693 token exchange: a share code for a bearer token bound to its grant
//
// Patients authenticate with a bearer session token in the Authorization header, identified by the
// access seam's own identify() (src/access): no cookies anywhere, so a cross-site page cannot make
// the browser send a patient's credentials (no CSRF); /api/token takes a single-use code the
// attacker would need to hold already. Like bearer tokens, everything here is taken only over a
// secure transport (HTTPS, loopback, a trusted proxy).
//
// The routes live in patient-sessions.ts (enrollment, keys, sessions) and patient-grants.ts (the
// account, grants, share links, FHIR; the token exchange) and patient-erasure.ts; what they share
// in patient-common.ts.
// Register it on the app with `app.register(patientApi(deps), { prefix: '/api' })`.
import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import { VaultError } from '../../core/errors.ts';
import { Challenges, type NewKey, type PatientApiDeps, type PatientRoutesContext, oauthError } from './patient-common.ts';
import { erasureRoutes } from './patient-erasure.ts';
import { exportRoutes } from './patient-exports.ts';
import { grantRoutes, tokenRoutes } from './patient-grants.ts';
import { granteeRoutes } from './grantee.ts';
import { sessionRoutes } from './patient-sessions.ts';

export {
  ACCESS_TOKEN_TYPE,
  CHALLENGE_TTL_MS,
  DEFAULT_SESSION_TTL_MS,
  ENROLLMENT_SESSION_MS,
  SHARE_CODE_TOKEN_TYPE,
  SHARE_PATH,
  TOKEN_EXCHANGE,
  shareUrl,
  webauthnRpOf,
} from './patient-common.ts';
export type { PatientApiDeps, PatientRoutesContext } from './patient-common.ts';

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
            bearer: {
              type: 'http',
              scheme: 'bearer',
              description: "a node account's bearer token (`dicom-vault user add`) or the hospital OpenID provider's JWT",
            },
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
    if (deps.audit !== undefined) await api.register(deps.audit);

    const ctx: PatientRoutesContext = { deps, now, challenges, rp, addKey, patientOf };
    await sessionRoutes(api, ctx);
    await grantRoutes(api, ctx);
    await erasureRoutes(api, ctx);
    await exportRoutes(api, ctx);
    await tokenRoutes(api, ctx);
    await granteeRoutes(api, ctx);
  };
}
