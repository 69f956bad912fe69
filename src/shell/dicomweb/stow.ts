// STOW-RS (PS3.18 10.5): where a study enters over HTTP. The request body is parsed as a stream;
// each part goes through one ingest session (ingest/session.ts) as it arrives; when the body has
// ended properly the stored instances are committed as new versions of their studies. Each
// instance fails alone, with its reason in FailedSOPSequence; a request that breaks off
// (truncated, malformed multipart, client gone) commits nothing and removes what it wrote.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { VaultError } from '../../core/errors.ts';
import type { AccessRouteConfig } from '../../access/policy.ts';
import { STORE_FAILURE } from '../../dicom/status.ts';
import { assertUid } from '../../dicom/uid.ts';
import { IngestSession, type IngestSessionDeps, type InstanceFailure, type SessionReport } from '../../../ingest/session.ts';
import { parseContentType, parseMultipartRelated } from './multipart-parser.ts';
import { dicomJson, requestSignal } from './http.ts';
import type { PublicUrls } from './public-url.ts';
import { DEFAULT_LIMITS, RETRY_AFTER_S, keepMoving, type IngestLimiter, type LimitOptions } from '../limits.ts';
import type { NodeMetrics } from '../metrics.ts';

export interface StowDeps extends IngestSessionDeps {
  chunkSize: number;
  urls: Pick<PublicUrls, 'base'>;
  /** Ingest slots per node and per client; a request past them is refused at once with 503. */
  ingests?: Pick<IngestLimiter, 'acquire'>;
  /** The body's minimum rate (limits.ts keepMoving). Default DEFAULT_LIMITS. */
  limits?: Pick<LimitOptions, 'idleTimeoutS' | 'minBodyRate'>;
  metrics?: Pick<NodeMetrics, 'countBusy' | 'countTimeout'>;
}

/** The private block of FailedSOPSequence items that carries each failure's full reason and code. */
export const PRIVATE_CREATOR = 'DICOM-VAULT 1';
const PRIVATE_CREATOR_TAG = '00090010';
const PRIVATE_REASON_TAG = '00091001';
const PRIVATE_CODE_TAG = '00091002';

export function stowService(deps: StowDeps): FastifyPluginAsync {
  return async (app) => {
    const config: AccessRouteConfig = { access: { action: 'store' } };

    const handler = async (request: FastifyRequest<{ Params: { study?: string } }>, reply: FastifyReply): Promise<SessionReport> => {
      const study = request.params.study === undefined ? undefined : assertUid(request.params.study, 'Study Instance UID in the URL');
      // A client gone while the access seam waited (identity, the audit log's admission) has
      // nothing left to send or to be answered: no slot, no session.
      if (reply.raw.destroyed) throw new VaultError('ABORTED', 'the client closed the connection before its upload was taken');
      const slot = deps.ingests?.acquire(request.ip) ?? { release: () => undefined };
      if ('refused' in slot) {
        deps.metrics?.countBusy('stow');
        void reply.header('retry-after', String(RETRY_AFTER_S));
        throw new VaultError('BUSY', `${slot.refused}: retry in ${RETRY_AFTER_S} s`);
      }
      // Released when the ingest is over, whichever way: a 'close' listener misses a close that
      // came before it, and would free the slot while a broken-off session still discards.
      try {
        return await ingest(request, reply, study);
      } finally {
        slot.release();
      }
    };

    const ingest = async (request: FastifyRequest, reply: FastifyReply, study: string | undefined): Promise<SessionReport> => {
      const { type, params } = parseContentType(request.headers['content-type']);
      const limits = deps.limits ?? DEFAULT_LIMITS;
      const moving = keepMoving(request.body as Readable, limits.idleTimeoutS, limits.minBodyRate, (reason) => {
        deps.metrics?.countTimeout('slow-body');
        request.log.warn({ reason }, 'upload cut off: too slow');
      });
      const body = keepOpen(moving);
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

      const session = new IngestSession(deps, {
        channel: 'stow',
        chunkSize: deps.chunkSize,
        signal,
        ...(study ? { expectedStudyInstanceUID: study } : {}),
      });
      let partCount = 0;
      try {
        for await (const part of parts) {
          partCount++;
          const label = `part ${partCount}`;
          if (part.contentType !== 'application/dicom') {
            // The parser skips the unread rest of a part when asked for the next one.
            session.refuse({
              label,
              code: 'UNSUPPORTED_MEDIA_TYPE',
              status: STORE_FAILURE.CANNOT_UNDERSTAND,
              reason: `${label} is ${part.contentType ?? 'untyped'}, not application/dicom`,
              serverSide: false,
            });
            continue;
          }
          const failure = await session.add(part.body, label);
          // A single-part body is read to its end so the refusal can be answered; a multipart
          // parser skips the rest of the part by itself.
          if (failure !== undefined && type === 'application/dicom') for await (const _ of body);
        }
        if (partCount === 0) throw new VaultError('BAD_REQUEST', 'the request holds no instance');
        return await session.commit();
      } catch (err) {
        await session.discard();
        throw err;
      }
    };

    // A refused request is answered, then its connection closed (the rest of its body unread).
    app.addHook('onError', async (_request, reply) => {
      void reply.header('connection', 'close');
    });

    for (const url of ['/studies', '/studies/:study']) {
      app.post<{ Params: { study?: string } }>(url, { config }, async (request, reply) => {
        const report = await handler(request, reply);
        const base = deps.urls.base(request);
        const { failures, stored } = report;
        if (failures.length > 0) {
          request.log.info({ refused: failures.length, stored: stored.length, codes: [...new Set(failures.map((f) => f.code))] }, 'STOW instances refused');
          // One summary; the reasons are in the body, one per instance (many Warning headers
          // overflow clients' header limits).
          void reply.header(
            'warning',
            `299 dicom-vault "${failures.length} of ${failures.length + stored.length} instances not stored; reasons in FailedSOPSequence"`,
          );
        }
        return reply
          .code(stowStatus(report))
          .header('content-type', 'application/dicom+json')
          .send(dicomJson(JSON.stringify(stowResponse(report, base, request.params.study))));
      });
    }
  };
}

/** 200 all stored; 202 some; when none: 409, or 503 when every failure was the node's own (retry). */
export function stowStatus(report: SessionReport): number {
  if (report.failures.length === 0) return 200;
  if (report.stored.length > 0) return 202;
  return report.failures.every((f) => f.serverSide) ? 503 : 409;
}

/** The PS3.18 STOW-RS response data set (DICOM JSON). */
export function stowResponse(report: SessionReport, base: string, urlStudy: string | undefined): Record<string, unknown> {
  const response: Record<string, unknown> = {};
  const studies = [...new Set(report.stored.map((s) => s.studyInstanceUID))];
  const only = studies.length === 1 ? studies[0] : urlStudy;
  if (only !== undefined) response['00081190'] = { vr: 'UR', Value: [`${base}/studies/${only}`] };
  if (report.failures.length > 0) response['00081198'] = { vr: 'SQ', Value: report.failures.map(failedItem) };
  if (report.stored.length > 0) {
    response['00081199'] = {
      vr: 'SQ',
      Value: report.stored.map((i) => ({
        '00081150': { vr: 'UI', Value: [i.sopClassUID] },
        '00081155': { vr: 'UI', Value: [i.sopInstanceUID] },
        '00081190': { vr: 'UR', Value: [`${base}/studies/${i.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`] },
      })),
    };
  }
  return response;
}

function failedItem(f: InstanceFailure): Record<string, unknown> {
  return {
    ...(f.sopClassUID ? { '00081150': { vr: 'UI', Value: [f.sopClassUID] } } : {}),
    ...(f.sopInstanceUID ? { '00081155': { vr: 'UI', Value: [f.sopInstanceUID] } } : {}),
    '00081197': { vr: 'US', Value: [f.status] },
    // ErrorComment is LO (64 characters): the start of the reason; the whole of it, and its code,
    // in the node's private block.
    '00000902': { vr: 'LO', Value: [`${f.label}: ${f.reason}`.slice(0, 64)] },
    [PRIVATE_CREATOR_TAG]: { vr: 'LO', Value: [PRIVATE_CREATOR] },
    [PRIVATE_REASON_TAG]: { vr: 'UT', Value: [`${f.label}: ${f.reason}`] },
    [PRIVATE_CODE_TAG]: { vr: 'CS', Value: [f.code] },
  };
}

/**
 * The request stream as one shared iterator without `return()`: when a reader stops early on bad
 * input it closes its source, and closing the request stream would destroy the socket before the
 * 4xx that explains the refusal could be sent. Iterating again continues where the reader stopped.
 */
function keepOpen(body: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  let it: AsyncIterator<Uint8Array> | undefined;
  return {
    [Symbol.asyncIterator]() {
      it ??= body[Symbol.asyncIterator]();
      const shared = it;
      return { next: () => shared.next(), return: async () => ({ done: true as const, value: undefined }) };
    },
  };
}
