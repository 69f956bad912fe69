// The patient API's erasure requests (issue 25): ask, follow, fetch the signed certificate and its
// anchor receipt; an operator approves or refuses (patient.ts wires it; its header lists the routes).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { VaultError } from '../../core/errors.ts';
import { certificateCid, type ErasureCertificate } from '../../erasure/certificate.ts';
import type { ErasureRequest } from '../../erasure/store.ts';
import { anyObject, errors, grantIdParams, type PatientApiDeps, type PatientRoutesContext, session, uid } from './patient-common.ts';

/** Erasure (GDPR Art. 17): a patient's requests, which an operator decides. */
export async function erasureRoutes(api: FastifyInstance, ctx: PatientRoutesContext): Promise<void> {
  const { deps, patientOf } = ctx;
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

  // A patient erased whole has no account left (its sessions end with it: src/identity), so a
  // request's certificate and receipt are also served without a session, to whoever holds the
  // request id (a random UUID the patient was given when asking): a certificate names no UID,
  // Patient ID or name. With a patient's session, only the account's own requests.
  const certificateOf = async (request: FastifyRequest): Promise<{ e: NonNullable<PatientApiDeps['erasure']>; json: string }> => {
    // A token that no longer opens (an erased account's) still answers 401; another principal's
    // (an operator's, a grantee's) is no session of a patient: the request id decides.
    const account = request.headers.authorization === undefined ? undefined : (await deps.identify(request)).patientAccount;
    const e = erasureOf();
    const r = e.service.store.request((request.params as { id: string }).id);
    if (r === undefined || (account !== undefined && r.account !== account)) throw new VaultError('NOT_FOUND', 'no such erasure request of yours');
    const json = r.certificateId === null ? undefined : e.service.store.certificate(r.certificateId);
    if (json === undefined) throw new VaultError('NOT_FOUND', `the request is ${r.state}: no certificate yet`);
    return { e, json };
  };
  const sessionOrRequestId = [...session, {}];

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
        description:
          "dicom-vault-erasure/1: what was erased by its commitments (never by UID), when, on whose request, signed with the node's Ed25519 key. " +
          'Without a session too (a patient erased whole has no account left): the request id is the capability.',
        tags: ['erasure'],
        security: sessionOrRequestId,
        params: grantIdParams,
        response: { 200: anyObject, ...errors },
      },
    },
    async (request) => {
      return JSON.parse((await certificateOf(request)).json) as object;
    },
  );

  api.get(
    '/patient/erasure-requests/:id/receipt',
    {
      schema: {
        summary: "The anchor receipt of a request's erasure certificate",
        description:
          'The certificate is anchored like a study version: its CID (CIDv1 dag-cbor sha2-256 of the certificate JSON) is a leaf of a batch on chain. ' +
          '200: the receipt (check it with `dicom-vault verify-receipt --cid <the certificate CID>`); 202 while it is on its way; 404 ANCHOR_DISABLED on a node that does not anchor. ' +
          'Without a session too, as the certificate.',
        tags: ['erasure'],
        security: sessionOrRequestId,
        params: grantIdParams,
        response: { 200: anyObject, 202: anyObject, ...errors },
      },
    },
    async (request, reply) => {
      const { e, json } = await certificateOf(request);
      if (e.receiptOf === undefined) throw new VaultError('ANCHOR_DISABLED', 'this node does not anchor');
      const cid = certificateCid(JSON.parse(json) as ErasureCertificate).toString();
      const receipt = e.receiptOf(cid);
      if (receipt === undefined) return reply.code(202).header('retry-after', '10').send({ state: 'pending', cid });
      return receipt;
    },
  );
}
