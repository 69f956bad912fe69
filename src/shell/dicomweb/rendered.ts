// Rendered and thumbnail resources of WADO-RS (PS3.18 10.4.1.1.3, 10.4.1.1.4; query parameters
// 8.3.5.1): frames made into JPEG or PNG pictures as a viewer would show them (src/dicom/render),
// decoded and rendered in one trip on the codecs' worker pool, so the event loop does none of it.
//
//   …/studies/{s}/rendered, …/series/{se}/rendered   multipart/related, one image per instance
//                                                    that has one it can render (its first
//                                                    frame), streamed
//   …/instances/{i}/rendered                         the first frame; every frame (multipart) when
//                                                    a multipart type is asked for
//   …/instances/{i}/frames/{list}/rendered           one frame: the image; several: multipart
//   …/thumbnail at study, series, instance and frame level: one small image of a representative
//   frame: the middle image instance of the first series that has images (study), the middle
//   image instance (series), the middle frame (instance), the first frame listed (frames).
//
// Query parameters: window=center,width,function; quality=1..100 (JPEG); viewport=vw,vh (fitted,
// aspect kept); accept=image/png (an Accept that an <img> element cannot set). Source regions
// (viewport=vw,vh,sx,sy,sw,sh), annotation and presentation states are not supported: a region is
// refused (400), the others ignored as PS3.18 8.3 lets an origin server do.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { AccessRouteConfig } from '../../access/policy.ts';
import type { CatalogInstance } from '../../catalog/records.ts';
import { VaultError } from '../../core/errors.ts';
import { canDecode, sharedDecodePool } from '../../dicom/codecs/index.ts';
import {
  parseWindowParameter,
  renderInfoFromMetadata,
  thumbnailOptions,
  type RenderFormat,
  type RenderInfo,
  type RenderOptions,
} from '../../dicom/render/index.ts';
import { parseAccept, requestSignal } from './http.ts';
import { multipartBody, multipartContentType, newBoundary, type OutgoingPart } from './multipart-writer.ts';
import { closing, decodeFailure, hasPixelData, mapAhead, noPixelData, openFrames, single, type InstanceFrames } from './frames.ts';
import { instanceLookup, parseFrameList, sendCommittedLate, type Params, type WadoDeps } from './wado.ts';

/** Instances rendered at once for a study or series: enough to keep the decode pool's workers busy. */
const RENDER_AHEAD = 2;

interface Query {
  window?: string;
  quality?: string;
  viewport?: string;
  accept?: string;
}

type Request = FastifyRequest<{ Params: Params; Querystring: Query }>;

export function renderedService(deps: WadoDeps): FastifyPluginAsync {
  const instancesOf = instanceLookup(deps);
  const instanceUrl = (request: FastifyRequest, inst: CatalogInstance): string =>
    `${deps.urls.base(request)}/studies/${inst.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}`;

  /** Frame `frame` of `inst`, whose frames are open, rendered; FRAME_NOT_FOUND past its last; failures counted and named. */
  const renderOpen = async (
    inst: CatalogInstance,
    frames: InstanceFrames,
    frame: number | 'middle',
    options: RenderOptions | ((info: RenderInfo) => RenderOptions),
    signal: AbortSignal,
    info?: RenderInfo,
  ): Promise<Uint8Array> => {
    if (frames.encapsulated && !canDecode(frames.transferSyntaxUID)) {
      throw new VaultError(
        'NOT_ACCEPTABLE',
        `instance ${inst.sopInstanceUID} is stored as ${frames.transferSyntaxUID}, which no decoder here reads: it cannot be rendered`,
      );
    }
    const n = frame === 'middle' ? Math.ceil(frames.count / 2) : frame;
    if (n > frames.count) throw new VaultError('FRAME_NOT_FOUND', `frame ${n} requested, the instance has ${frames.count}`);
    const facts = info ?? (await renderInfo(inst, frames));
    const bytes = await frames.read(n);
    try {
      return await sharedDecodePool().render(frames.transferSyntaxUID, bytes, facts, typeof options === 'function' ? options(facts) : options, { signal });
    } catch (err) {
      throw decodeFailure(err, inst, n);
    }
  };

  /** One frame of `inst` rendered (its frames opened for it). */
  const render = async (
    inst: CatalogInstance,
    frame: number | 'middle',
    options: RenderOptions | ((info: RenderInfo) => RenderOptions),
    signal: AbortSignal,
  ): Promise<Uint8Array> => {
    const frames = await openFrames(deps, inst, signal);
    try {
      return await renderOpen(inst, frames, frame, options, signal);
    } finally {
      await frames.close();
    }
  };

  /** One image as the whole response: rendered before anything is sent, so a failure is a status. */
  const sendImage = async (reply: FastifyReply, format: RenderFormat, image: Uint8Array): Promise<FastifyReply> =>
    reply.type(format).send(Buffer.from(image.buffer, image.byteOffset, image.byteLength));

  /** Several images, streamed, each rendered while the one before is sent. */
  const sendImages = async <T>(
    request: Request,
    reply: FastifyReply,
    signal: AbortSignal,
    format: RenderFormat,
    items: T[],
    part: (item: T) => Promise<OutgoingPart>,
  ): Promise<FastifyReply> => {
    const boundary = newBoundary();
    const parts = mapAhead(items, RENDER_AHEAD, part);
    return sendCommittedLate(request, reply, signal, multipartContentType(boundary, format), multipartBody(boundary, parts));
  };

  /**
   * Frames `numbers` of one instance, one image each, streamed: the instance opened once (its
   * node, its chunks kept across frames) and its rendering facts read once.
   */
  const sendFrameImages = async (
    request: Request,
    reply: FastifyReply,
    signal: AbortSignal,
    format: RenderFormat,
    inst: CatalogInstance,
    frames: InstanceFrames,
    numbers: number[],
    options: RenderOptions,
  ): Promise<FastifyReply> => {
    try {
      for (const n of numbers) if (n > frames.count) throw new VaultError('FRAME_NOT_FOUND', `frame ${n} requested, the instance has ${frames.count}`);
      const info = await renderInfo(inst, frames);
      const boundary = newBoundary();
      const parts = closing(
        mapAhead(
          numbers,
          RENDER_AHEAD,
          async (n): Promise<OutgoingPart> => ({ contentType: format, body: single(await renderOpen(inst, frames, n, options, signal, info)) }),
        ),
        frames,
      );
      return await sendCommittedLate(request, reply, signal, multipartContentType(boundary, format), multipartBody(boundary, parts));
    } catch (err) {
      await frames.close();
      throw err;
    }
  };

  return async (app) => {
    const config: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'rendered' } };

    // Study and series: every instance that has an image, its first frame, one part each.
    for (const url of ['/studies/:study/rendered', '/studies/:study/series/:series/rendered']) {
      app.get<{ Params: Params; Querystring: Query }>(url, { config }, async (request, reply) => {
        const { format } = negotiateRendered(request);
        const options = renderOptions(request.query, format);
        const images = instancesOf(request, { metadata: false }).filter(renderable);
        if (images.length === 0)
          throw new VaultError(
            'NOT_ACCEPTABLE',
            `no instance of this ${request.params.series === undefined ? 'study' : 'series'} has Pixel Data this node can render: nothing to render as ${format}`,
          );
        const signal = requestSignal(request, reply);
        return sendImages(request, reply, signal, format, images, async (inst) => ({
          contentType: format,
          headers: { 'Content-Location': `${instanceUrl(request, inst)}/rendered` },
          body: single(await render(inst, 1, options, signal)),
        }));
      });
    }

    app.get<{ Params: Params; Querystring: Query }>('/studies/:study/series/:series/instances/:instance/rendered', { config }, async (request, reply) => {
      const { format, multipart } = negotiateRendered(request);
      const options = renderOptions(request.query, format);
      const [inst] = instancesOf(request);
      if (!hasPixelData(inst!)) throw noPixelData(inst!, `image to render as ${format}`);
      const signal = requestSignal(request, reply);
      if (!multipart) return sendImage(reply, format, await render(inst!, 1, options, signal));
      // Every frame, one part each.
      const frames = await openFrames(deps, inst!, signal);
      const numbers = Array.from({ length: frames.count }, (_, i) => i + 1);
      return sendFrameImages(request, reply, signal, format, inst!, frames, numbers, options);
    });

    app.get<{ Params: Params; Querystring: Query }>(
      '/studies/:study/series/:series/instances/:instance/frames/:frames/rendered',
      { config },
      async (request, reply) => {
        const { format, multipart } = negotiateRendered(request);
        const options = renderOptions(request.query, format);
        const numbers = parseFrameList(request.params.frames ?? '');
        const [inst] = instancesOf(request);
        if (!hasPixelData(inst!)) throw noPixelData(inst!, `frames to render as ${format}`);
        const signal = requestSignal(request, reply);
        if (numbers.length === 1 && !multipart) return sendImage(reply, format, await render(inst!, numbers[0]!, options, signal));
        // Every frame number is checked before the response starts.
        return sendFrameImages(request, reply, signal, format, inst!, await openFrames(deps, inst!, signal), numbers, options);
      },
    );

    // Thumbnails: one small image of a representative frame.
    const thumbnail = async (request: Request, reply: FastifyReply, inst: CatalogInstance, frame: number | 'middle'): Promise<FastifyReply> => {
      const { format } = negotiateRendered(request);
      const viewport = parseViewport(request.query.viewport);
      const signal = requestSignal(request, reply);
      const options = (info: RenderInfo): RenderOptions => {
        if (viewport === undefined) return thumbnailOptions(info, { format });
        // Fitted inside the viewport, never enlarged.
        const fits = info.columns <= viewport.width && info.rows <= viewport.height;
        return { format, size: fits ? { width: info.columns, height: info.rows } : viewport };
      };
      return sendImage(reply, format, await render(inst, frame, options, signal));
    };
    for (const url of ['/studies/:study/thumbnail', '/studies/:study/series/:series/thumbnail']) {
      app.get<{ Params: Params; Querystring: Query }>(url, { config }, async (request, reply) => {
        const inst = representative(instancesOf(request, { metadata: false }));
        if (inst === undefined)
          throw new VaultError(
            'NOT_ACCEPTABLE',
            `no instance of this ${request.params.series === undefined ? 'study' : 'series'} has Pixel Data this node can render: no thumbnail`,
          );
        return thumbnail(request, reply, inst, 'middle');
      });
    }
    app.get<{ Params: Params; Querystring: Query }>('/studies/:study/series/:series/instances/:instance/thumbnail', { config }, async (request, reply) => {
      const [inst] = instancesOf(request);
      if (!hasPixelData(inst!)) throw noPixelData(inst!, 'thumbnail');
      return thumbnail(request, reply, inst!, 'middle');
    });
    app.get<{ Params: Params; Querystring: Query }>(
      '/studies/:study/series/:series/instances/:instance/frames/:frames/thumbnail',
      { config },
      async (request, reply) => {
        const numbers = parseFrameList(request.params.frames ?? '');
        const [inst] = instancesOf(request);
        if (!hasPixelData(inst!)) throw noPixelData(inst!, 'thumbnail');
        return thumbnail(request, reply, inst!, numbers[0]!);
      },
    );
  };
}

/**
 * Whether the instance has Pixel Data whose frames can be rendered here: native, or compressed
 * in a syntax a codec decodes with its frames located. A study or series renders these, and
 * passes over the others (an SR, an MPEG video, a broken fragment table) as it does over
 * instances without an image; asked for by name, those are refused with the reason.
 */
function renderable(inst: CatalogInstance): boolean {
  if (!hasPixelData(inst)) return false;
  const pd = inst.layout.pixelData;
  return pd === null || !pd.encapsulated || (canDecode(inst.transferSyntaxUID) && inst.layout.frames.length > 0);
}

/**
 * The instance a study or series thumbnail shows: of the first series (in series number order)
 * that has renderable images, its middle one by Instance Number. `instances` in catalog order.
 */
export function representative(instances: CatalogInstance[]): CatalogInstance | undefined {
  const images = instances.filter(renderable);
  const series = images[0]?.seriesInstanceUID;
  const first = images.filter((i) => i.seriesInstanceUID === series);
  return first[Math.floor((first.length - 1) / 2)];
}

/**
 * The instance's rendering facts; a PALETTE COLOR lookup table long enough to be bulk data is
 * read from the instance and given to the renderer as inline data.
 */
async function renderInfo(inst: CatalogInstance, frames: InstanceFrames): Promise<RenderInfo> {
  const info = renderInfoFromMetadata(inst.metadata);
  if (info.photometricInterpretation !== 'PALETTE COLOR' || info.palette !== undefined) return info;
  const metadata = { ...inst.metadata };
  for (const tag of ['00281201', '00281202', '00281203']) {
    const el = metadata[tag];
    if (el?.BulkDataURI === undefined) continue;
    const bytes = await frames.bulk(tag);
    if (bytes !== undefined) metadata[tag] = { vr: el.vr, InlineBinary: Buffer.from(bytes).toString('base64') };
  }
  return renderInfoFromMetadata(metadata);
}

const FORMATS: ReadonlySet<string> = new Set(['image/jpeg', 'image/png']);

/**
 * The image format from the `accept` query parameter, else the Accept header: image/jpeg (the
 * default, PS3.18 Table 8.7.4-1) or image/png, alone or as the type of a multipart/related.
 * `multipart`: a multipart response was asked for by name.
 */
export function negotiateRendered(request: Request): { format: RenderFormat; multipart: boolean } {
  const header = request.query.accept ?? request.headers.accept;
  for (const r of parseAccept(header)) {
    if (FORMATS.has(r.type)) return { format: r.type as RenderFormat, multipart: false };
    if (r.type === '*/*' || r.type === 'image/*') return { format: 'image/jpeg', multipart: false };
    if (r.type === 'multipart/related' || r.type === 'multipart/*') {
      const inner = (r.params.type ?? 'image/jpeg').toLowerCase();
      if (FORMATS.has(inner)) return { format: inner as RenderFormat, multipart: true };
    }
  }
  throw new VaultError('NOT_ACCEPTABLE', `rendered images are image/jpeg or image/png (alone or as multipart/related), not ${header}`);
}

/** The rendering query parameters; INVALID_QUERY for a value that is not one. */
export function renderOptions(query: Query, format: RenderFormat): RenderOptions {
  const options: RenderOptions = { format };
  if (query.window !== undefined) options.window = parseWindowParameter(query.window);
  if (query.quality !== undefined) {
    if (!/^\d{1,3}$/.test(query.quality)) throw new VaultError('INVALID_QUERY', `quality must be an integer from 1 to 100, not "${query.quality}"`);
    options.quality = Number(query.quality);
  }
  const viewport = parseViewport(query.viewport);
  if (viewport !== undefined) options.size = viewport;
  return options;
}

function parseViewport(text: string | undefined): { width: number; height: number } | undefined {
  if (text === undefined) return undefined;
  const parts = text.split(',').map((p) => p.trim());
  if (parts.length === 6) throw new VaultError('INVALID_QUERY', 'viewport with a source region (vw,vh,sx,sy,sw,sh) is not supported: give vw,vh');
  if (parts.length !== 2 || !parts.every((p) => /^\d{1,5}$/.test(p)) || parts.some((p) => Number(p) < 1 || Number(p) > 65535)) {
    throw new VaultError('INVALID_QUERY', `viewport must be "vw,vh" (positive integers), not "${text}"`);
  }
  return { width: Number(parts[0]), height: Number(parts[1]) };
}
