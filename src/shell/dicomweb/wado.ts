// WADO-RS (PS3.18 10.4): where a study leaves. Instances, frames and bulk data are streamed from
// verified, decrypted chunks (src/read/instance-reader.ts); metadata comes from the catalog. Commits
// late: the first block is read and verified before any header is sent, so a missing or corrupt
// block at the start is an error status; later failures break the connection (app.ts).
// Compressed instances asked for uncompressed (the default) are decoded frame by frame on the
// codecs' worker pool (src/dicom/codecs) as they stream; so are their frames. The rendered
// resources (rendered.ts) read frames through openFrames (frames.ts).
import { once } from 'node:events';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { AccessRouteConfig } from '../../access/policy.ts';
import type { Catalog } from '../../catalog/catalog.ts';
import type { CatalogInstance } from '../../catalog/records.ts';
import { isVaultError, VaultError } from '../../core/errors.ts';
import { canDecode } from '../../dicom/codecs/index.ts';
import { decodedLayout } from '../../dicom/decompress.ts';
import { deflatedValue } from '../../dicom/deflated.ts';
import type { DicomJsonDataset, ScannedInstance } from '../../dicom/model.ts';
import { conversionRefusal, describeTransferSyntax, EXPLICIT_VR_LE, IMPLICIT_VR_LE } from '../../dicom/transfer-syntax.ts';
import { transcode } from '../../dicom/transcode.ts';
import { assertUid } from '../../dicom/uid.ts';
import { openInstance, PieceLoans, readInstances, type ReaderDeps } from '../../read/instance-reader.ts';
import { dicomJson, parseAccept, requestSignal, type MediaRange } from './http.ts';
import type { PublicUrls } from './public-url.ts';
import { admitted } from '../admitted.ts';
import { multipartBody, multipartContentType, newBoundary, type OutgoingPart } from './multipart-writer.ts';
import {
  PIXEL_DATA,
  bitsAllocated,
  closing,
  decodeAhead,
  frameDecoder,
  hasPixelData,
  isDeflatedImage,
  mapAhead,
  noPixelData,
  openFrames,
  readRanges,
  single,
} from './frames.ts';

export interface WadoDeps extends ReaderDeps {
  catalog: Pick<Catalog, 'getInstance' | 'listInstances' | 'visibleInstances'>;
  urls: Pick<PublicUrls, 'base'>;
}

export interface Params {
  study: string;
  series?: string;
  instance?: string;
  frames?: string;
  '*'?: string;
}

/** What to send for each instance: as stored, or transcoded (and its frames decoded when it is compressed). */
type Representation = { transferSyntaxUID: string; transcode: boolean; decode: boolean };

/**
 * The instances a request's URL names that its access scope shows (404 when none: what is out of
 * scope reads as unknown); `metadata: false` when their metadata is read only if used.
 */
export type InstanceLookup = (request: FastifyRequest<{ Params: Params }>, options?: { metadata?: boolean }) => CatalogInstance[];

export function instanceLookup(deps: Pick<WadoDeps, 'catalog'>): InstanceLookup {
  return (request, options = {}) => {
    const p = request.params;
    const scope = request.access?.scope;
    const study = assertUid(p.study, 'Study Instance UID');
    if (p.instance !== undefined) {
      const series = assertUid(p.series!, 'Series Instance UID');
      const one = deps.catalog.getInstance(assertUid(p.instance, 'SOP Instance UID'), { study, series }, scope);
      if (!one) throw new VaultError('INSTANCE_NOT_FOUND', 'no such instance in this study and series');
      return [one];
    }
    const series = p.series === undefined ? undefined : assertUid(p.series, 'Series Instance UID');
    const list = deps.catalog.listInstances(series === undefined ? { study } : { study, series }, options, scope);
    if (list.length === 0)
      throw new VaultError(
        series === undefined ? 'STUDY_NOT_FOUND' : 'SERIES_NOT_FOUND',
        series === undefined ? 'no such study' : 'no such series in this study',
      );
    return list;
  };
}

export function wadoService(deps: WadoDeps): FastifyPluginAsync {
  const instancesOf = instanceLookup(deps);

  return async (app) => {
    const retrieve: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'dicom' } };
    const metadata: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'metadata' } };
    const frames: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'frames' } };
    const bulk: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'bulkdata' } };

    for (const url of ['/studies/:study', '/studies/:study/series/:series', '/studies/:study/series/:series/instances/:instance']) {
      app.get<{ Params: Params }>(url, { config: retrieve }, async (request, reply) => {
        const instances = instancesOf(request, { metadata: false });
        const reps = negotiateInstances(request.headers.accept, instances);
        const signal = requestSignal(request, reply);
        // The transcoder may hold on to pieces: lent ones only go straight to the socket.
        const loans = reps.some((r) => r.transcode) ? undefined : new PieceLoans();
        const parts = (async function* (): AsyncGenerator<OutgoingPart> {
          let i = 0;
          for await (const { ref, pieces } of readInstances(deps, instances, { signal, ...(loans ? { loans } : {}) })) {
            const rep = reps[i++]!;
            const decoder = rep.decode ? frameDecoder(ref, signal) : undefined;
            yield {
              contentType: `application/dicom; transfer-syntax=${rep.transferSyntaxUID}`,
              body: rep.transcode ? transcode(pieces, scannedOf(ref), { transferSyntaxUID: rep.transferSyntaxUID, ...(decoder ? { decoder } : {}) }) : pieces,
            };
          }
        })();
        const boundary = newBoundary();
        return sendCommittedLate(request, reply, signal, multipartContentType(boundary, 'application/dicom'), multipartBody(boundary, parts), loans);
      });
    }

    for (const url of ['/studies/:study/metadata', '/studies/:study/series/:series/metadata', '/studies/:study/series/:series/instances/:instance/metadata']) {
      app.get<{ Params: Params }>(url, { config: metadata }, async (request, reply) => {
        const instances = instancesOf(request);
        negotiateJson(request.headers.accept);
        const base = deps.urls.base(request);
        const withBulk = bulkAllowed(deps, request, instances);
        // Stored BulkDataURIs are relative ('bulk/<path>'): made absolute here, by text, which is
        // much cheaper than walking every data set (a 1,000-instance series is one response).
        const body =
          '[' +
          instances
            .map((inst) => {
              if (withBulk !== undefined && !withBulk.has(inst.sopInstanceUID)) return JSON.stringify(withoutBulkData(inst.metadata));
              const url = `${base}/studies/${inst.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}/`;
              return JSON.stringify(withPixelDataUri(inst)).replaceAll('"BulkDataURI":"bulk/', `"BulkDataURI":"${url}bulk/`);
            })
            .join(',') +
          ']';
        return reply.type('application/dicom+json').send(dicomJson(body));
      });
    }

    // Frames are read by offset from the chunks that hold them. Encapsulated frames are sent as
    // stored (their transfer syntax in each part's type) or decoded; native ones as little-endian
    // bytes; those of a deflated instance are cut out of its data set as it is inflated.
    const sendFrames = async (
      request: FastifyRequest<{ Params: Params }>,
      reply: FastifyReply,
      inst: CatalogInstance,
      numbers: number[],
    ): Promise<FastifyReply> => {
      const plan = negotiateFrames(request.headers.accept, inst);
      const signal = requestSignal(request, reply);
      const frames = await openFrames(deps, inst, signal);
      try {
        for (const n of numbers) {
          if (n > frames.count) throw new VaultError('FRAME_NOT_FOUND', `frame ${n} requested, the instance has ${frames.count}`);
        }
      } catch (err) {
        await frames.close();
        throw err;
      }
      const loans = new PieceLoans();
      let parts: AsyncGenerator<OutgoingPart>;
      if (plan.mode === 'decode') {
        const layout = decodedLayout(inst.transferSyntaxUID, inst.metadata);
        const decode = frameDecoder(inst, signal);
        parts = mapAhead(numbers, decodeAhead(layout.frameLength), async (n): Promise<OutgoingPart> => {
          const frame = await decode.decode(await frames.read(n), n);
          return { contentType: plan.contentType, body: single(frame.pixels) };
        });
      } else {
        parts = (async function* (): AsyncGenerator<OutgoingPart> {
          for (const n of numbers) yield { contentType: plan.contentType, body: frames.stream(n, loans) };
        })();
      }
      const boundary = newBoundary();
      return sendCommittedLate(
        request,
        reply,
        signal,
        multipartContentType(boundary, plan.multipartType),
        multipartBody(boundary, closing(parts, frames)),
        loans,
      );
    };

    app.get<{ Params: Params }>('/studies/:study/series/:series/instances/:instance/frames/:frames', { config: frames }, async (request, reply) => {
      const [inst] = instancesOf(request);
      return sendFrames(request, reply, inst!, parseFrameList(request.params.frames ?? ''));
    });

    app.get<{ Params: Params }>('/studies/:study/series/:series/instances/:instance/bulk/*', { config: bulk }, async (request, reply) => {
      const [inst] = instancesOf(request);
      const path = request.params['*'] ?? '';
      const range = inst!.layout.bulk[path];
      if (!range && path === PIXEL_DATA && inst!.layout.pixelData?.encapsulated === true) {
        // Encapsulated Pixel Data as bulk data: one part per frame (PS3.18 8.7.3.3.2), which is
        // what its BulkDataURI in the metadata promises; decoded, or as stored with transfer-syntax=*.
        return sendFrames(
          request,
          reply,
          inst!,
          inst!.layout.frames.map((_, i) => i + 1),
        );
      }
      // A deflated instance's values have no stored offsets: cut out of its data set, inflated.
      const facts = describeTransferSyntax(inst!.transferSyntaxUID);
      const deflated = facts.deflated;
      if (!range && !deflated) throw new VaultError('BULKDATA_NOT_FOUND', `no bulk data at ${path}`);
      const accept = parseAccept(request.headers.accept);
      if (!accept.some((r) => ['*/*', 'multipart/related', 'multipart/*', 'application/octet-stream'].includes(r.type))) {
        throw new VaultError('NOT_ACCEPTABLE', 'bulk data is sent as multipart/related; type="application/octet-stream"');
      }
      const signal = requestSignal(request, reply);
      const loans = new PieceLoans();
      const opened = await openInstance(deps, inst!, { signal });
      const boundary = newBoundary();
      // The part names the byte order of what it carries, as frames do (PS3.18 8.7.3.5): a native
      // Pixel Data fetched by its BulkDataURI is a frame stack, and a reader given no transfer
      // syntax (cornerstone) takes it for Implicit VR Little Endian. Values go out as stored, so a
      // big-endian instance's say so; inflated values of a deflated one are little endian.
      const bytesSyntax = facts.littleEndian ? EXPLICIT_VR_LE : inst!.transferSyntaxUID;
      const parts = (async function* (): AsyncGenerator<OutgoingPart> {
        yield {
          contentType: `application/octet-stream; transfer-syntax=${bytesSyntax}`,
          body: range ? readRanges(opened, [range], { signal, loans }, 0) : deflatedValue(opened.read(undefined, { signal }), path),
        };
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
export async function sendCommittedLate(
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
  // Hijacked replies skip onSend: the access must be on record before the first byte here too.
  try {
    await admitted(request);
  } catch (err) {
    await body.return(undefined);
    throw err;
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
    // A write that failed leaves the body suspended: ended, so that what it holds open (a
    // deflated instance's inflating pass, frames being decoded) is let go now.
    await body.return(undefined).catch(() => {});
  }
  return reply;
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

/**
 * Of the instances a metadata response sends, those whose bulk data the request's `bulkScope`
 * opens; undefined: all of them (no bulkScope: as its scope, which showed them all).
 */
function bulkAllowed(deps: Pick<WadoDeps, 'catalog'>, request: FastifyRequest<{ Params: Params }>, instances: CatalogInstance[]): Set<string> | undefined {
  const bulkScope = request.access?.bulkScope;
  if (bulkScope === undefined || instances.length === 0) return undefined;
  if (bulkScope.clauses.length === 0) return new Set();
  const first = instances[0]!;
  const p = request.params;
  return deps.catalog.visibleInstances(
    {
      study: first.studyInstanceUID,
      ...(p.series === undefined ? {} : { series: first.seriesInstanceUID }),
      ...(p.instance === undefined ? {} : { instance: first.sopInstanceUID }),
    },
    bulkScope,
  );
}

/**
 * An instance's attributes without its bulk data: every element that carries a BulkDataURI or
 * InlineBinary (Pixel Data, overlays, an icon image, encapsulated documents, waveform samples...),
 * at any depth, is left out, for a caller allowed the attributes and not the pixels. Left out
 * rather than sent empty: an empty Pixel Data would claim an image of no pixels.
 */
export function withoutBulkData(ds: DicomJsonDataset): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const [tag, el] of Object.entries(ds)) {
    if (el.BulkDataURI !== undefined || el.InlineBinary !== undefined) continue;
    if (el.vr === 'SQ' && el.Value !== undefined) {
      out[tag] = { ...el, Value: el.Value.map((item) => (typeof item === 'object' && item !== null ? withoutBulkData(item as DicomJsonDataset) : item)) };
      continue;
    }
    out[tag] = el;
  }
  return out;
}

/**
 * Pixel Data in metadata: a BulkDataURI, native (its bytes) or encapsulated (its frames); for a
 * deflated image, whose Pixel Data the scanner did not record, its bytes cut out of the inflated data set.
 */
function withPixelDataUri(inst: CatalogInstance): DicomJsonDataset {
  const pd = inst.layout.pixelData;
  if (pd === null) {
    if (!isDeflatedImage(inst)) return inst.metadata;
    // The VR the file uses is not recorded; OW unless the samples are bytes (PS3.5 8.2).
    return { ...inst.metadata, [PIXEL_DATA]: { vr: bitsAllocated(inst.metadata) > 8 ? 'OW' : 'OB', BulkDataURI: `bulk/${PIXEL_DATA}` } };
  }
  const served = inst.layout.bulk[PIXEL_DATA] !== undefined || (pd.encapsulated && inst.layout.frames.length > 0);
  if (!served) return inst.metadata;
  return { ...inst.metadata, [PIXEL_DATA]: { vr: pd.encapsulated ? 'OB' : pd.vr, BulkDataURI: `bulk/${PIXEL_DATA}` } };
}

/**
 * Chooses, for every instance, what to send: the first acceptable media range (by q) that works
 * for all of them wins. No Accept, or only wildcards: Explicit VR Little Endian (PS3.18 default),
 * compressed instances decoded.
 */
export function negotiateInstances(accept: string | undefined, instances: CatalogInstance[]): Representation[] {
  const ranges = parseAccept(accept);
  const reasons: string[] = [];
  for (const range of ranges) {
    const target = dicomTarget(range);
    if (target === undefined) continue;
    const reps: Representation[] = [];
    for (const inst of instances) {
      if (target === '*' || target === inst.transferSyntaxUID) {
        reps.push({ transferSyntaxUID: inst.transferSyntaxUID, transcode: false, decode: false });
        continue;
      }
      const refusal = instanceRefusal(inst, target);
      if (refusal !== undefined) {
        reasons.push(`instance ${inst.sopInstanceUID} is stored as ${inst.transferSyntaxUID} and cannot be sent as ${target}: ${refusal}`);
        break;
      }
      const decode = inst.layout.pixelData?.encapsulated === true;
      reps.push({ transferSyntaxUID: target, transcode: true, decode });
    }
    if (reps.length === instances.length) return reps;
  }
  throw new VaultError(
    'NOT_ACCEPTABLE',
    reasons[0] ?? 'instances are sent as multipart/related; type="application/dicom" (add transfer-syntax=* to get them as stored)',
  );
}

/** Why `inst` cannot be sent as `target` (undefined: it can), checked before anything is sent. */
function instanceRefusal(inst: CatalogInstance, target: string): string | undefined {
  const from = inst.transferSyntaxUID;
  const refusal = conversionRefusal(from, target, canDecode(from) || inst.layout.pixelData?.encapsulated !== true);
  if (refusal !== undefined) return refusal;
  if (inst.layout.pixelData?.encapsulated !== true) return undefined;
  try {
    const layout = decodedLayout(from, inst.metadata);
    if (inst.layout.frames.length !== layout.frames) {
      return `the ${layout.frames} frames of its Pixel Data cannot be located among its fragments (GET its frames/1 for why); retrieve it as stored (transfer-syntax=*)`;
    }
  } catch (err) {
    if (isVaultError(err, 'NOT_ACCEPTABLE')) return err.message;
    throw err;
  }
  return undefined;
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

const J = '1.2.840.10008.1.2.4';
/** Bulk data media types of compressed frames (PS3.18 Table 8.7.3-2), served as stored when asked for by name. */
const FRAME_MEDIA_TYPES: ReadonlyMap<string, string> = new Map([
  ...['50', '51', '57', '70'].map((n): [string, string] => [`${J}.${n}`, 'image/jpeg']),
  [`${J}.80`, 'image/jls'],
  [`${J}.81`, 'image/jls'],
  [`${J}.90`, 'image/jp2'],
  [`${J}.91`, 'image/jp2'],
  [`${J}.92`, 'image/jpx'],
  [`${J}.93`, 'image/jpx'],
  ...['201', '202', '203'].map((n): [string, string] => [`${J}.${n}`, 'image/jphc']),
  ['1.2.840.10008.1.2.5', 'image/dicom-rle'],
  ...['100', '100.1', '101', '101.1'].map((n): [string, string] => [`${J}.${n}`, 'video/mpeg']),
  ...['102', '102.1', '103', '103.1', '104', '104.1', '105', '105.1', '106', '106.1'].map((n): [string, string] => [`${J}.${n}`, 'video/mp4']),
  [`${J}.107`, 'video/H265'],
  [`${J}.108`, 'video/H265'],
]);

/** How frames are sent: as stored, native (little endian), or decoded; and the types that say so. */
interface FramesPlan {
  mode: 'stored' | 'native' | 'decode';
  /** Each part's Content-Type, naming the transfer syntax of its bytes. */
  contentType: string;
  /** The `type` of the multipart response. */
  multipartType: string;
}

/**
 * Chooses how to send frames from the Accept ranges, best first. application/octet-stream without
 * a transfer syntax (or Explicit / Implicit VR Little Endian) means uncompressed: native frames as
 * they are, compressed ones decoded; transfer-syntax=* means as stored. A compressed frame's own
 * bulk media type (image/jp2 for JPEG 2000...) brings it as stored. Every part names its transfer
 * syntax: without one, readers (cornerstone) take it for Implicit VR Little Endian.
 */
export function negotiateFrames(accept: string | undefined, inst: CatalogInstance): FramesPlan {
  if (!hasPixelData(inst)) throw noPixelData(inst, 'frames');
  const tsuid = inst.transferSyntaxUID;
  const encapsulated = inst.layout.pixelData?.encapsulated === true;
  const octets = (ts: string): string => `application/octet-stream; transfer-syntax=${ts}`;
  const reasons: string[] = [];
  for (const r of parseAccept(accept)) {
    const wildcard = r.type === '*/*' || r.type === 'multipart/*';
    const inner = wildcard ? 'application/octet-stream' : r.type === 'multipart/related' ? (r.params.type ?? 'application/octet-stream').toLowerCase() : r.type;
    const ts = wildcard ? undefined : r.params['transfer-syntax'];
    if (inner === 'application/octet-stream' || inner === '*/*') {
      if (!encapsulated) {
        // Native pixel data is little endian on the way out whatever it was stored as; its bytes
        // are the same in Implicit and Explicit VR Little Endian.
        if (ts === undefined || ts === '*' || ts === EXPLICIT_VR_LE || ts === tsuid)
          return { mode: 'native', contentType: octets(EXPLICIT_VR_LE), multipartType: 'application/octet-stream' };
        if (ts === IMPLICIT_VR_LE) return { mode: 'native', contentType: octets(IMPLICIT_VR_LE), multipartType: 'application/octet-stream' };
        reasons.push(`the frames are not compressed here; ${ts} is not an uncompressed transfer syntax`);
        continue;
      }
      if (ts === '*' || ts === tsuid) return { mode: 'stored', contentType: octets(tsuid), multipartType: 'application/octet-stream' };
      if (ts === undefined || ts === EXPLICIT_VR_LE || ts === IMPLICIT_VR_LE) {
        if (canDecode(tsuid)) return { mode: 'decode', contentType: octets(ts ?? EXPLICIT_VR_LE), multipartType: 'application/octet-stream' };
        reasons.push(`the frames are stored as ${tsuid}, which no decoder here reads: ask for transfer-syntax=* to get them as stored`);
        continue;
      }
      reasons.push(`the frames are stored as ${tsuid} and are not re-compressed here as ${ts}`);
      continue;
    }
    const own = FRAME_MEDIA_TYPES.get(tsuid);
    if (encapsulated && own !== undefined && inner.toLowerCase() === own.toLowerCase() && (ts === undefined || ts === tsuid)) {
      return { mode: 'stored', contentType: `${own}; transfer-syntax=${tsuid}`, multipartType: own };
    }
  }
  throw new VaultError(
    'NOT_ACCEPTABLE',
    reasons[0] ??
      `frames are sent as multipart/related; type="application/octet-stream" (uncompressed, or as stored with transfer-syntax=*)${encapsulated && FRAME_MEDIA_TYPES.has(tsuid) ? ` or as ${FRAME_MEDIA_TYPES.get(tsuid)}` : ''}`,
  );
}

export function parseFrameList(raw: string): number[] {
  const parts = raw.split(',');
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,9}$/.test(p.trim()) || Number(p) < 1)
      throw new VaultError('INVALID_FRAME_LIST', `"${raw}" is not a list of frame numbers (1-based, comma-separated)`);
    out.push(Number(p));
  }
  return out;
}
