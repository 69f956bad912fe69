// The patient API's exports for another provider (GDPR Art. 20, issue 25): the patient asks with
// the receiving node's public key, the node prepares the archive (src/shell/patient-export.ts) in
// the background, and the patient's session downloads it (patient.ts wires it; its header lists
// the routes). Only the patient's own Patient IDs: another's answers 404, as one never stored.
import type { KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { PatientRef } from '../../catalog/scope.ts';
import { VaultError } from '../../core/errors.ts';
import { parseRecipientKey } from '../../transfer/car.ts';
import { errors, type ExportJobView as ExportJob, grantIdParams, type PatientApiDeps, type PatientRoutesContext, session } from './patient-common.ts';

export async function exportRoutes(api: FastifyInstance, ctx: PatientRoutesContext): Promise<void> {
  const { deps, patientOf } = ctx;
  const exportsOf = (): NonNullable<PatientApiDeps['exports']> => {
    if (deps.exports === undefined) throw new VaultError('NOT_FOUND', 'this node prepares no exports');
    return deps.exports;
  };
  const jobView = {
    type: 'object',
    properties: {
      id: { type: 'string' },
      state: { type: 'string', enum: ['preparing', 'ready', 'failed'] },
      createdAt: { type: 'string' },
      studies: { type: ['integer', 'null'] },
      bytes: { type: ['integer', 'null'], description: 'bytes of the blocks in the archive, once ready' },
      reason: { type: ['string', 'null'], description: 'why it failed' },
    },
  } as const;
  const toView = (j: ExportJob): object => ({
    id: j.id,
    state: j.state,
    createdAt: j.createdAt,
    studies: j.report?.studies ?? null,
    bytes: j.report?.bytes ?? null,
    reason: j.reason ?? null,
  });
  const ownJob = async (account: string, id: string): Promise<ExportJob> => {
    const j = exportsOf().job(id);
    if (j === undefined || j.account !== account) throw new VaultError('NOT_FOUND', 'no such export of yours');
    return j;
  };

  api.post(
    '/patient/exports',
    {
      schema: {
        summary: 'Export all of your studies for another provider (GDPR Art. 20)',
        description:
          "Prepared in the background as one CAR file sealed to the receiving node's X25519 public key (its `dicom-vault public-key`): every study with all " +
          'its versions, their anchor receipts, your grants as FHIR Consent, your audit entries with their proofs. The receiving node imports it with ' +
          '`dicom-vault import`; no one else can read it. The hand-over is recorded in your audit log as a disclosure.',
        tags: ['export'],
        security: session,
        body: {
          type: 'object',
          required: ['recipientKey'],
          properties: {
            recipientKey: { type: 'string', maxLength: 4096, description: "the receiving node's public key, SPKI PEM (X25519)" },
            patientId: { type: 'string', maxLength: 64, description: 'one of your Patient IDs; absent: your only one' },
          },
        },
        response: { 202: jobView, ...errors },
      },
    },
    async (request, reply) => {
      const account = await patientOf(request);
      const body = request.body as { recipientKey: string; patientId?: string };
      const ids = deps.identity.patientIds(account);
      let ref: PatientRef | undefined;
      if (body.patientId !== undefined) ref = ids.find((r) => r.id === body.patientId);
      else if (ids.length === 1) ref = ids[0];
      else throw new VaultError('BAD_REQUEST', 'you have several Patient IDs: name one (patientId)');
      // Another patient's ID answers as one unknown here.
      if (ref === undefined) throw new VaultError('NOT_FOUND', 'no such Patient ID among yours');
      let recipient: KeyObject;
      try {
        recipient = parseRecipientKey(body.recipientKey);
      } catch (cause) {
        // The key is the caller's input here, not the node's configuration.
        throw new VaultError('BAD_REQUEST', cause instanceof Error ? cause.message : 'recipientKey is not an X25519 public key', { cause });
      }
      return reply.code(202).send(toView(exportsOf().start(account, ref, recipient)));
    },
  );

  api.get(
    '/patient/exports/:id',
    {
      schema: { summary: 'Where an export stands', tags: ['export'], security: session, params: grantIdParams, response: { 200: jobView, ...errors } },
    },
    async (request) => toView(await ownJob(await patientOf(request), (request.params as { id: string }).id)),
  );

  api.get(
    '/patient/exports/:id/archive',
    {
      schema: {
        summary: 'Download a prepared export (application/vnd.ipld.car)',
        tags: ['export'],
        security: session,
        params: grantIdParams,
        produces: ['application/vnd.ipld.car'],
        response: { ...errors },
      },
    },
    async (request, reply) => {
      const j = await ownJob(await patientOf(request), (request.params as { id: string }).id);
      if (j.state !== 'ready') throw new VaultError('NOT_FOUND', `the export is ${j.state}${j.reason ? `: ${j.reason}` : ''}`);
      return reply
        .type('application/vnd.ipld.car')
        .header('content-disposition', `attachment; filename="patient-export-${j.id}.car"`)
        .send(createReadStream(j.file));
    },
  );
}
