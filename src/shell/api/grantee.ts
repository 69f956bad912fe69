// The grantee's side of the patient API: a doctor (a node account, the hospital's OpenID user, or a
// share link's bearer) lists the grants that name them, so the doctor's page (/doctor/) can say why
// each study is open to them and until when, and the viewer can say why it stopped when one ends.
//
//   GET /api/grantee/grants   the caller's grants, newest first, each with where it stands
//
// The caller is identified by the access seam's own identify(); a grantee sees only grants naming
// them (a share link's token: its one grant), never the patient's other grants.
import type { FastifyInstance } from 'fastify';
import { errors, statementSchema } from './patient-common.ts';
import type { PatientRoutesContext } from './patient-common.ts';

const bearer = [{ bearer: [] }];

const granteeGrant = {
  type: 'object',
  description: 'A grant naming the caller: what it opens, to what, until when, and where it stands now',
  properties: {
    id: { type: 'string', format: 'uuid' },
    status: { type: 'string', enum: ['active', 'pending', 'expired', 'revoked'] },
    scope: statementSchema.properties.scope,
    patientIds: statementSchema.properties.patientIds,
    dataTypes: statementSchema.properties.dataTypes,
    actions: statementSchema.properties.actions,
    notBefore: { type: 'string' },
    notAfter: { type: ['string', 'null'], description: 'null: until the patient revokes it' },
    revokedAt: { type: ['string', 'null'] },
  },
} as const;

export async function granteeRoutes(api: FastifyInstance, ctx: PatientRoutesContext): Promise<void> {
  const { deps, now } = ctx;
  api.get(
    '/grantee/grants',
    {
      schema: {
        summary: 'The grants naming the caller as grantee, newest first, each with where it stands',
        description:
          "For the doctor's page and viewer: which grant opens which study or series, until when, and whether it was revoked or has expired. Grants whose signature does not verify are left out.",
        tags: ['grantee'],
        security: bearer,
        response: { 200: { type: 'object', properties: { grants: { type: 'array', items: granteeGrant } } }, ...errors },
      },
    },
    async (request, reply) => {
      const principal = await deps.identify(request);
      const grants = deps.grants.forGrantee(principal.id, now(), principal.grantId).map((r) => ({
        id: r.statement.id,
        status: r.status,
        scope: r.statement.scope,
        patientIds: r.statement.patientIds,
        dataTypes: r.statement.dataTypes,
        actions: r.statement.actions,
        notBefore: r.statement.notBefore,
        notAfter: r.statement.notAfter,
        revokedAt: r.revokedAt,
      }));
      return reply.header('cache-control', 'no-store').send({ grants });
    },
  );
}
