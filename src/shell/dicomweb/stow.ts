// STOW-RS (PS3.18 10.5): where a study enters. The request body is parsed as a stream; each part
// goes through the ingest pipeline (ingest/instance.ts) as it arrives, and when the body has ended
// properly the stored instances are committed as a new version of their study
// (ingest/study.ts). A request that breaks off (truncated, malformed multipart, client gone)
// commits nothing and removes what it wrote.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { VaultError, isVaultError } from '../../core/errors.ts';
import type { AccessRouteConfig } from '../../access/policy.ts';
import { assertUid } from '../../dicom/uid.ts';
import { parseContentType, parseMultipartRelated } from './multipart-parser.ts';
import { discardInstances, keysOncePerStudy, readInstance, WriteWindow, type IngestDeps, type IngestedInstance } from '../../../ingest/instance.ts';
import type { StudyWriter } from '../../../ingest/study.ts';
import type { BlockStore } from '../../../storage/block-store.ts';
import { requestSignal, retrieveBase } from './http.ts';

export interface StowDeps {
  store: Pick<BlockStore, 'put' | 'delete'>;
  keys: IngestDeps['keys'];
  writer: Pick<StudyWriter, 'commit'>;
  chunkSize: number;
}

/** PS3.4 / PS3.18 failure reasons used in FailedSOPSequence. */
export const FAILURE = {
  PROCESSING_FAILURE: 0x0110,
  DUPLICATE_SOP_INSTANCE: 0x0111,
  OUT_OF_RESOURCES: 0xa700,
  DOES_NOT_MATCH: 0xa900,
  CANNOT_UNDERSTAND: 0xc000,
} as const;

interface Failure {
  sopClassUID?: string;
  sopInstanceUID?: string;
  reason: number;
  comment: string;
}

/** Errors of one part (the next part can still be read); anything else ends the request. */
function isPartError(err: unknown): err is VaultError {
  return (
    isVaultError(err) &&
    err.status < 500 &&
    !['MULTIPART_MALFORMED', 'MULTIPART_TRUNCATED', 'ABORTED'].includes(err.code)
  );
}

export function stowService(deps: StowDeps): FastifyPluginAsync {
  return async (app) => {
    const config: AccessRouteConfig = { access: { action: 'store' } };
    const handler = async (request: FastifyRequest<{ Params: { study?: string } }>, reply: FastifyReply) => {
      const study = request.params.study === undefined ? undefined : assertUid(request.params.study, 'Study Instance UID in the URL');
      const { type, params } = parseContentType(request.headers['content-type']);
      const body = keepOpen(request.body as Readable);
      const signal = requestSignal(request, reply);

      let parts: AsyncIterable<{ contentType: string | undefined; body: AsyncIterable<Uint8Array> }>;
      if (type === 'application/dicom') {
        parts = (async function* () {
          yield { contentType: 'application/dicom', body };
        })();
      } else if (type === 'multipart/related') {
        if (params.type !== undefined && params.type.toLowerCase() !== 'application/dicom') {
          throw new VaultError('UNSUPPORTED_MEDIA_TYPE', `multipart/related of type "${params.type}" is not supported; send type="application/dicom"`);
        }
        if (!params.boundary) throw new VaultError('MULTIPART_MALFORMED', 'Content-Type multipart/related has no boundary parameter');
        parts = parseMultipartRelated(body, { boundary: params.boundary, signal });
      } else {
        throw new VaultError('UNSUPPORTED_MEDIA_TYPE', `STOW-RS takes multipart/related; type="application/dicom" or application/dicom, not ${type}`);
      }

      // Instances whose bytes are read; each completes (last seal, node) while the next is read.
      const completing: Array<Promise<IngestedInstance>> = [];
      let stored: IngestedInstance[] = [];
      const failures: Failure[] = [];
      const window = new WriteWindow();
      const ingestDeps = { ...deps, keys: keysOncePerStudy(deps.keys) };
      let partCount = 0;
      try {
        for await (const part of parts) {
          partCount++;
          if (part.contentType !== 'application/dicom') {
            // The parser skips the unread rest of a part when asked for the next one.
            failures.push({ reason: FAILURE.CANNOT_UNDERSTAND, comment: `part ${partCount} is ${part.contentType ?? 'untyped'}, not application/dicom` });
            continue;
          }
          try {
            const opts = { chunkSize: deps.chunkSize, signal, window, ...(study ? { expectedStudyInstanceUID: study } : {}) };
            completing.push((await readInstance(part.body, ingestDeps, opts)).completed);
          } catch (err) {
            if (!isPartError(err)) throw err;
            const d = err.details ?? {};
            failures.push({
              ...(typeof d.sopInstanceUID === 'string' ? { sopInstanceUID: d.sopInstanceUID } : {}),
              reason: err.code === 'STUDY_UID_MISMATCH' ? FAILURE.DOES_NOT_MATCH : FAILURE.CANNOT_UNDERSTAND,
              comment: `part ${partCount}: ${err.message}`,
            });
            // A single-part body is read to its end so the refusal can be answered; a multipart
            // parser skips the rest of the part by itself.
            if (type === 'application/dicom') for await (const _ of body);
          }
        }
        stored = await Promise.all(completing);
      } catch (err) {
        // Those that completed are removed here; one that failed to complete removed its own.
        const settled = await Promise.allSettled(completing);
        await discardInstances(deps.store, settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])));
        throw err;
      }
      if (partCount === 0) throw new VaultError('BAD_REQUEST', 'the request holds no instance');

      const byStudy = new Map<string, IngestedInstance[]>();
      for (const s of stored) {
        const list = byStudy.get(s.scanned.studyInstanceUID) ?? [];
        list.push(s);
        byStudy.set(s.scanned.studyInstanceUID, list);
      }
      // A STOW answer means durable: every block of the request is on disk before any study of
      // it is committed (the writer waits for this while it writes the manifest).
      const durable = Promise.all(stored.map((s) => s.durable));
      const uncommitted = new Set(byStudy.keys());
      const base = retrieveBase(request);
      const referenced: Array<Record<string, unknown>> = [];
      for (const [studyUID, items] of byStudy) {
        let result;
        try {
          result = await deps.writer.commit(studyUID, items, { durable });
        } catch (err) {
          await discardInstances(deps.store, [...uncommitted].flatMap((s) => byStudy.get(s)!));
          throw err;
        }
        uncommitted.delete(studyUID);
        for (const o of result.outcomes) {
          if (o.status === 'conflict') {
            failures.push({ sopClassUID: o.sopClassUID, sopInstanceUID: o.sopInstanceUID, reason: FAILURE.DUPLICATE_SOP_INSTANCE, comment: o.reason });
            continue;
          }
          const i = o.instance;
          referenced.push({
            '00081150': { vr: 'UI', Value: [i.sopClassUID] },
            '00081155': { vr: 'UI', Value: [i.sopInstanceUID] },
            '00081190': { vr: 'UR', Value: [`${base}/studies/${i.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`] },
          });
        }
      }

      const response: Record<string, unknown> = {};
      const studies = [...byStudy.keys()];
      const only = studies.length === 1 ? studies[0] : study;
      if (only !== undefined) response['00081190'] = { vr: 'UR', Value: [`${base}/studies/${only}`] };
      if (failures.length > 0) {
        response['00081198'] = {
          vr: 'SQ',
          Value: failures.map((f) => ({
            ...(f.sopClassUID ? { '00081150': { vr: 'UI', Value: [f.sopClassUID] } } : {}),
            ...(f.sopInstanceUID ? { '00081155': { vr: 'UI', Value: [f.sopInstanceUID] } } : {}),
            '00081197': { vr: 'US', Value: [f.reason] },
            '00000902': { vr: 'LO', Value: [f.comment.slice(0, 64)] },
          })),
        };
      }
      if (referenced.length > 0) response['00081199'] = { vr: 'SQ', Value: referenced };
      const status = failures.length === 0 ? 200 : referenced.length === 0 ? 409 : 202;
      return { status, response, failures };
    };

    // A refused request is answered, then its connection closed (the rest of its body unread).
    app.addHook('onError', async (_request, reply) => {
      void reply.header('connection', 'close');
    });

    for (const url of ['/studies', '/studies/:study']) {
      app.post<{ Params: { study?: string } }>(url, { config }, async (request, reply) => {
        const { status, response, failures } = await handler(request, reply);
        if (failures.length > 0) {
          request.log.info({ failures: failures.map((f) => f.comment) }, 'STOW instances refused');
          // ErrorComment (LO) holds 64 characters; the full reasons go in Warning headers.
          void reply.header('warning', failures.map((f) => `299 dicom-vault "${f.comment.replace(/["\\\r\n]/g, ' ')}"`));
        }
        return reply.code(status).type('application/dicom+json').send(response);
      });
    }
  };
}

/**
 * The request stream as one shared iterator without `return()`: when a reader stops early on bad
 * input it closes its source, and closing the request stream would destroy the socket before the
 * 4xx that explains the refusal could be sent. Iterating again continues where the reader stopped.
 */
function keepOpen(body: Readable): AsyncIterable<Uint8Array> {
  let it: AsyncIterator<Uint8Array> | undefined;
  return {
    [Symbol.asyncIterator]() {
      it ??= body[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
      const shared = it;
      return { next: () => shared.next(), return: async () => ({ done: true as const, value: undefined }) };
    },
  };
}
