// WADO-RS (PS3.18 10.4): where a study leaves. Instances, frames and bulk data are streamed from
// verified, decrypted chunks (src/instance-reader.ts); metadata comes from the catalog. Commits
// late: the first block is read and verified before any header is sent, so a missing or corrupt
// block at the start is an error status; later failures break the connection (app.ts).
import { once } from 'node:events';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { AccessRouteConfig } from '../../access/policy.ts';
import type { Catalog } from '../../catalog/catalog.ts';
import type { CatalogInstance } from '../../catalog/records.ts';
import { isVaultError, VaultError } from '../../core/errors.ts';
import type { ByteRange, DicomJsonDataset, ScannedInstance } from '../../dicom/model.ts';
import { canTranscode, describeTransferSyntax, EXPLICIT_VR_LE } from '../../dicom/transfer-syntax.ts';
import { transcodeToExplicitLE } from '../../dicom/transcode.ts';
import { assertUid } from '../../dicom/uid.ts';
import { openInstance, PieceLoans, readInstances, type OpenedInstance, type ReadOptions, type ReaderDeps } from '../../read/instance-reader.ts';
import { dicomJson, parseAccept, requestSignal, type MediaRange } from './http.ts';
import type { PublicUrls } from './public-url.ts';
import { multipartBody, multipartContentType, newBoundary, type OutgoingPart } from './multipart-writer.ts';

export interface WadoDeps extends ReaderDeps {
  catalog: Pick<Catalog, 'getInstance' | 'listInstances'>;
  urls: Pick<PublicUrls, 'base'>;
}

interface Params {
  study: string;
  series?: string;
  instance?: string;
  frames?: string;
  '*'?: string;
}

/** What to send for each instance: as stored ('*'), or transcoded to Explicit VR LE. */
type Representation = { transferSyntaxUID: string; transcode: boolean };

export function wadoService(deps: WadoDeps): FastifyPluginAsync {
  /** The instances a URL names; `metadata: false` when only their bytes are sent. */
  const instancesOf = (p: Params, options: { metadata?: boolean } = {}): CatalogInstance[] => {
    const study = assertUid(p.study, 'Study Instance UID');
    if (p.instance !== undefined) {
      const series = assertUid(p.series!, 'Series Instance UID');
      const one = deps.catalog.getInstance(assertUid(p.instance, 'SOP Instance UID'), { study, series });
      if (!one) throw new VaultError('INSTANCE_NOT_FOUND', 'no such instance in this study and series');
      return [one];
    }
    const series = p.series === undefined ? undefined : assertUid(p.series, 'Series Instance UID');
    const list = deps.catalog.listInstances(series === undefined ? { study } : { study, series }, options);
    if (list.length === 0) throw new VaultError(series === undefined ? 'STUDY_NOT_FOUND' : 'SERIES_NOT_FOUND', series === undefined ? 'no such study' : 'no such series in this study');
    return list;
  };

  return async (app) => {
    const retrieve: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'dicom' } };
    const metadata: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'metadata' } };
    const frames: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'frames' } };
    const bulk: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'bulkdata' } };

    for (const url of ['/studies/:study', '/studies/:study/series/:series', '/studies/:study/series/:series/instances/:instance']) {
      app.get<{ Params: Params }>(url, { config: retrieve }, async (request, reply) => {
        const instances = instancesOf(request.params, { metadata: false });
        const reps = negotiateInstances(request.headers.accept, instances);
        const signal = requestSignal(request, reply);
        // The transcoder may hold on to pieces: lent ones only go straight to the socket.
        const loans = reps.some((r) => r.transcode) ? undefined : new PieceLoans();
        const parts = (async function* (): AsyncGenerator<OutgoingPart> {
          let i = 0;
          for await (const { ref, pieces } of readInstances(deps, instances, { signal, ...(loans ? { loans } : {}) })) {
            const rep = reps[i++]!;
            yield {
              contentType: `application/dicom; transfer-syntax=${rep.transferSyntaxUID}`,
              body: rep.transcode ? transcodeToExplicitLE(pieces, scannedOf(ref)) : pieces,
            };
          }
        })();
        const boundary = newBoundary();
        return sendCommittedLate(request, reply, signal, multipartContentType(boundary, 'application/dicom'), multipartBody(boundary, parts), loans);
      });
    }

    for (const url of ['/studies/:study/metadata', '/studies/:study/series/:series/metadata', '/studies/:study/series/:series/instances/:instance/metadata']) {
      app.get<{ Params: Params }>(url, { config: metadata }, async (request, reply) => {
        const instances = instancesOf(request.params);
        negotiateJson(request.headers.accept);
        const base = deps.urls.base(request);
        // Stored BulkDataURIs are relative ('bulk/<path>'): made absolute here, by text, which is
        // much cheaper than walking every data set (a 1,000-instance series is one response).
        const body =
          '[' +
          instances
            .map((inst) => {
              const url = `${base}/studies/${inst.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}/`;
              return JSON.stringify(withPixelDataUri(inst)).replaceAll('"BulkDataURI":"bulk/', `"BulkDataURI":"${url}bulk/`);
            })
            .join(',') +
          ']';
        return reply.type('application/dicom+json').send(dicomJson(body));
      });
    }

    // Frames are read by offset from the chunks that hold them. Encapsulated frames are sent as
    // stored (their transfer syntax in each part's type); native ones as little-endian bytes.
    const sendFrames = async (request: FastifyRequest<{ Params: Params }>, reply: FastifyReply, inst: CatalogInstance, numbers: number[]): Promise<FastifyReply> => {
      const layout = inst.layout;
      const ts = describeTransferSyntax(inst.transferSyntaxUID);
      if (ts.deflated || layout.frames.length === 0) {
        throw new VaultError('NOT_ACCEPTABLE', 'frames of this instance cannot be served by offset (no pixel data, or a deflated transfer syntax): retrieve the instance instead');
      }
      for (const n of numbers) {
        if (n > layout.frames.length) throw new VaultError('FRAME_NOT_FOUND', `frame ${n} requested, the instance has ${layout.frames.length}`);
      }
      const contentType = negotiateFrames(request.headers.accept, inst.transferSyntaxUID, ts.encapsulated);
      const swap = !ts.littleEndian && !ts.encapsulated && bitsAllocated(inst.metadata) > 8 ? bitsAllocated(inst.metadata) / 8 : 0;
      const signal = requestSignal(request, reply);
      const loans = new PieceLoans();
      const opened = await openInstance(deps, inst, { signal });
      const parts = (async function* (): AsyncGenerator<OutgoingPart> {
        for (const n of numbers) {
          yield { contentType, body: readRanges(opened, layout.frames[n - 1]!, { signal, loans }, swap) };
        }
      })();
      const boundary = newBoundary();
      return sendCommittedLate(request, reply, signal, multipartContentType(boundary, contentType.split(';')[0]!), multipartBody(boundary, parts), loans);
    };

    app.get<{ Params: Params }>('/studies/:study/series/:series/instances/:instance/frames/:frames', { config: frames }, async (request, reply) => {
      const [inst] = instancesOf(request.params);
      return sendFrames(request, reply, inst!, parseFrameList(request.params.frames ?? ''));
    });

    app.get<{ Params: Params }>('/studies/:study/series/:series/instances/:instance/bulk/*', { config: bulk }, async (request, reply) => {
      const [inst] = instancesOf(request.params);
      const path = request.params['*'] ?? '';
      const range = inst!.layout.bulk[path];
      if (!range && path === PIXEL_DATA && inst!.layout.pixelData?.encapsulated === true) {
        // Encapsulated Pixel Data as bulk data: one part per frame, compressed as stored
        // (PS3.18 8.7.3.3.2), which is what its BulkDataURI in the metadata promises.
        return sendFrames(request, reply, inst!, inst!.layout.frames.map((_, i) => i + 1));
      }
      if (!range) throw new VaultError('BULKDATA_NOT_FOUND', `no bulk data at ${path}`);
      const accept = parseAccept(request.headers.accept);
      if (!accept.some((r) => ['*/*', 'multipart/related', 'multipart/*', 'application/octet-stream'].includes(r.type))) {
        throw new VaultError('NOT_ACCEPTABLE', 'bulk data is sent as multipart/related; type="application/octet-stream"');
      }
      const signal = requestSignal(request, reply);
      const loans = new PieceLoans();
      const opened = await openInstance(deps, inst!, { signal });
      const boundary = newBoundary();
      const parts = (async function* (): AsyncGenerator<OutgoingPart> {
        yield { contentType: 'application/octet-stream', body: readRanges(opened, [range], { signal, loans }, 0) };
      })();
      return sendCommittedLate(request, reply, signal, multipartContentType(boundary, 'application/octet-stream'), multipartBody(boundary, parts), loans);
    });
  };
}

/**
 * Pulls the first data bytes (which opens and verifies the first instance's first block) before
 * any header goes out; then writes the rest with the socket's backpressure. Written here rather
 * than handed to fastify as a stream: a piece lent by the readers (`loans`) may only be given
 * back once the socket has taken its bytes, which only a write's own callback tells (a piped
 * stream's writes have none). After the head, a failure can only break the connection.
 */
async function sendCommittedLate(
  request: FastifyRequest,
  reply: FastifyReply,
  signal: AbortSignal,
  contentType: string,
  body: AsyncGenerator<Uint8Array>,
  loans?: PieceLoans,
): Promise<FastifyReply> {
  // The first piece is the multipart part header; the second is the first verified data.
  // A failure here throws to the error handler, which answers with a status: nothing was sent.
  const head: Uint8Array[] = [];
  for (let i = 0; i < 2; i++) {
    const next = await body.next();
    if (next.done) break;
    head.push(next.value);
  }
  reply.hijack();
  const res = reply.raw;
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) res.setHeader(name, value);
  res.statusCode = 200;
  res.setHeader('content-type', contentType);
  // Settles once the socket has taken every byte written so far (or has failed).
  let written = Promise.resolve();
  const write = async (chunk: Uint8Array): Promise<void> => {
    const taken = Promise.withResolvers<void>();
    written = taken.promise;
    const flowing = res.write(chunk, (err) => {
      // After a failed write the bytes may still be queued: such a piece is left to the GC.
      if (!err) loans?.giveBack(chunk);
      taken.resolve();
    });
    if (!flowing) await once(res, 'drain', { signal });
  };
  try {
    for (const chunk of head) await write(chunk);
    for await (const chunk of body) await write(chunk);
    res.end();
  } catch (err) {
    if (!signal.aborted) {
      const vault = isVaultError(err) ? err : undefined;
      request.log.error({ err, code: vault?.code, details: vault?.details }, 'response aborted after headers were sent');
      // The status and the verified bytes before the failure go out; then the connection breaks.
      await Promise.race([written, once(res, 'close')]);
    }
    res.destroy();
  }
  return reply;
}

async function* readRanges(opened: OpenedInstance, ranges: ByteRange[], options: ReadOptions & { signal: AbortSignal }, swapWidth: number): AsyncGenerator<Uint8Array> {
  for (const r of ranges) {
    if (swapWidth === 0) {
      yield* opened.read(r, options);
      continue;
    }
    // Big-endian native pixel data: frames are sent little endian (PS3.18 8.7.3.3.2). Gather
    // the frame (frames are a few MiB at most in such legacy objects) and swap words. Its
    // pieces are kept, so they are read without loans.
    const parts: Buffer[] = [];
    for await (const p of opened.read(r, { signal: options.signal })) parts.push(p);
    const buf = Buffer.concat(parts);
    if (swapWidth === 2) buf.swap16();
    else if (swapWidth === 4) buf.swap32();
    else if (swapWidth === 8) buf.swap64();
    yield buf;
  }
}

function bitsAllocated(meta: DicomJsonDataset): number {
  const v = meta['00280100']?.Value?.[0];
  return typeof v === 'number' ? v : 16;
}

function scannedOf(inst: CatalogInstance): ScannedInstance {
  return {
    studyInstanceUID: inst.studyInstanceUID,
    seriesInstanceUID: inst.seriesInstanceUID,
    sopInstanceUID: inst.sopInstanceUID,
    sopClassUID: inst.sopClassUID,
    transferSyntaxUID: inst.transferSyntaxUID,
    metadata: inst.metadata,
    layout: inst.layout,
    size: inst.size,
  };
}

/** Metadata with Pixel Data present as a BulkDataURI when it can be fetched as bulk data. */
const PIXEL_DATA = '7FE00010';

/** Pixel Data in metadata: a BulkDataURI, native (its bytes) or encapsulated (its frames). */
function withPixelDataUri(inst: CatalogInstance): DicomJsonDataset {
  const pd = inst.layout.pixelData;
  const served = inst.layout.bulk[PIXEL_DATA] !== undefined || (pd?.encapsulated === true && inst.layout.frames.length > 0);
  if (!pd || !served) return inst.metadata;
  return { ...inst.metadata, [PIXEL_DATA]: { vr: pd.encapsulated ? 'OB' : pd.vr, BulkDataURI: `bulk/${PIXEL_DATA}` } };
}

/**
 * Chooses, for every instance, what to send: the first acceptable media range (by q) that works
 * for all of them wins. No Accept, or only wildcards: Explicit VR Little Endian (PS3.18 default).
 */
export function negotiateInstances(accept: string | undefined, instances: CatalogInstance[]): Representation[] {
  const ranges = parseAccept(accept);
  const reasons: string[] = [];
  for (const range of ranges) {
    const target = dicomTarget(range);
    if (target === undefined) continue;
    const reps: Representation[] = [];
    for (const inst of instances) {
      if (target === '*' || target === inst.transferSyntaxUID) reps.push({ transferSyntaxUID: inst.transferSyntaxUID, transcode: false });
      else if (canTranscode(inst.transferSyntaxUID, target)) reps.push({ transferSyntaxUID: target, transcode: true });
      else {
        reasons.push(`instance ${inst.sopInstanceUID} is stored as ${inst.transferSyntaxUID} and cannot be converted to ${target}`);
        break;
      }
    }
    if (reps.length === instances.length) return reps;
  }
  throw new VaultError(
    'NOT_ACCEPTABLE',
    reasons[0] ?? 'instances are sent as multipart/related; type="application/dicom" (add transfer-syntax=* to get them as stored)',
  );
}

/** The transfer syntax a media range asks for ('*' = as stored), or undefined if it is not DICOM. */
function dicomTarget(range: MediaRange): string | undefined {
  if (range.type === '*/*' || range.type === 'multipart/*') return EXPLICIT_VR_LE;
  if (range.type !== 'multipart/related' && range.type !== 'application/dicom') return undefined;
  if (range.type === 'multipart/related' && range.params.type !== undefined && range.params.type.toLowerCase() !== 'application/dicom') return undefined;
  return range.params['transfer-syntax'] ?? EXPLICIT_VR_LE;
}

function negotiateJson(accept: string | undefined): void {
  const ok = parseAccept(accept).some((r) => ['*/*', 'application/*', 'application/dicom+json', 'application/json'].includes(r.type));
  if (!ok) throw new VaultError('NOT_ACCEPTABLE', 'metadata is sent as application/dicom+json');
}

/** Content type of each frame part. Uncompressed: application/octet-stream; encapsulated: as stored. */
function negotiateFrames(accept: string | undefined, tsuid: string, encapsulated: boolean): string {
  for (const r of parseAccept(accept)) {
    const inner = r.type === 'multipart/related' ? (r.params.type ?? 'application/octet-stream').toLowerCase() : r.type;
    const ts = r.params['transfer-syntax'];
    if (inner === '*/*' || r.type === '*/*' || r.type === 'multipart/*') {
      return encapsulated ? `application/octet-stream; transfer-syntax=${tsuid}` : 'application/octet-stream';
    }
    if (inner === 'application/octet-stream') {
      if (!encapsulated && (ts === undefined || ts === '*' || ts === EXPLICIT_VR_LE || ts === tsuid)) return 'application/octet-stream';
      if (encapsulated && (ts === '*' || ts === tsuid)) return `application/octet-stream; transfer-syntax=${tsuid}`;
    }
  }
  throw new VaultError(
    'NOT_ACCEPTABLE',
    encapsulated
      ? `frames are stored compressed (${tsuid}) and are not decompressed here: ask for multipart/related; type="application/octet-stream"; transfer-syntax=*`
      : 'uncompressed frames are sent as multipart/related; type="application/octet-stream"',
  );
}

export function parseFrameList(raw: string): number[] {
  const parts = raw.split(',');
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,9}$/.test(p.trim()) || Number(p) < 1) throw new VaultError('INVALID_FRAME_LIST', `"${raw}" is not a list of frame numbers (1-based, comma-separated)`);
    out.push(Number(p));
  }
  return out;
}

