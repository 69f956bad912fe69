// DICOMweb benchmark client: STOW-RS uploads streamed from the generator, WADO-RS retrievals
// checked byte for byte against it, frame and QIDO latencies. Uploads and QIDO: node:http with a
// keep-alive agent, no dependencies (undici's fetch would buffer nothing either, but a Web stream
// body makes the exact-Content-Length, drain-driven upload and early-response handling harder
// to control and to measure). WADO bodies: lean-get.ts, which reads into one reused buffer.
//
// `baseUrl` is the DICOMweb root: `${baseUrl}/studies` is the STOW/QIDO endpoint.

import http from 'node:http';
import type { IncomingMessage } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { BlockPool, type GeneratedInstance, type GeneratedStudy } from './generate.ts';
import { leanGet } from './lean-get.ts';
import { MultipartScanner } from './multipart-scanner.ts';

export { DEFAULT_MAX_PART_HEADER_BYTES, MultipartError, MultipartScanner, type MultipartHandlers } from './multipart-scanner.ts';

/** Largest STOW/QIDO response body read, in bytes; beyond it the response counts as failed. */
export const DEFAULT_MAX_RESPONSE_BYTES = 16 << 20;
export const DEFAULT_WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*';
export const DEFAULT_FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';

export function createAgent(maxSockets = 64): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets });
}

let sharedAgent: http.Agent | undefined;
/** Used when no `agent` is passed; its idle sockets do not keep the process alive. */
function defaultAgent(): http.Agent {
  sharedAgent ??= createAgent();
  return sharedAgent;
}

// ---------- STOW-RS ----------

export interface StowOptions {
  baseUrl: string;
  study: GeneratedStudy;
  /** Instances per STOW request (>= 1). */
  perRequest: number;
  /** Requests in flight at once (>= 1). */
  concurrency: number;
  signal?: AbortSignal;
  agent?: http.Agent;
  /** Send a Content-Length header in each part. Default true; some PACS omit it. */
  partContentLength?: boolean;
  /** A bearer token for a node with identity on (an `ingest` account). */
  authorization?: string;
}

export interface StowResult {
  /** DICOM bytes of the instances whose request body was sent completely. */
  bytes: number;
  seconds: number;
  requests: number;
  /** Instances sent. */
  instances: number;
  /** Instances the server listed in ReferencedSOPSequence and that were sent. */
  stored: number;
  /** HTTP status (or 'error' for no response) => number of requests. */
  statusCounts: Record<string, number>;
  /** One line per failed request or unconfirmed instance; empty on full success. */
  failures: string[];
  /** Wall time of each request, in request order. */
  requestMs: number[];
}

export async function stow(opts: StowOptions): Promise<StowResult> {
  const { study, signal } = opts;
  if (!Number.isSafeInteger(opts.perRequest) || opts.perRequest < 1) throw new RangeError('perRequest must be >= 1');
  if (!Number.isSafeInteger(opts.concurrency) || opts.concurrency < 1) throw new RangeError('concurrency must be >= 1');
  const url = endpoint(opts.baseUrl, '/studies');
  const agent = opts.agent ?? defaultAgent();
  const batches: GeneratedInstance[][] = [];
  for (let i = 0; i < study.instances.length; i += opts.perRequest) {
    batches.push(study.instances.slice(i, i + opts.perRequest));
  }
  const result: StowResult = {
    bytes: 0,
    seconds: 0,
    requests: batches.length,
    instances: study.instances.length,
    stored: 0,
    statusCounts: {},
    failures: [],
    requestMs: new Array<number>(batches.length).fill(0),
  };
  // Pixel blocks are generated into buffers used again once the socket has sent them.
  const pool = new BlockPool();
  const started = performance.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < batches.length) {
      signal?.throwIfAborted();
      const index = next++;
      const batch = batches[index]!;
      const t0 = performance.now();
      let outcome = await stowBatch(url, batch, agent, signal, opts.partContentLength ?? true, pool, opts.authorization);
      if (outcome.staleSocket) outcome = await stowBatch(url, batch, agent, signal, opts.partContentLength ?? true, pool, opts.authorization);
      result.requestMs[index] = performance.now() - t0;
      const key = outcome.status === undefined ? 'error' : String(outcome.status);
      result.statusCounts[key] = (result.statusCounts[key] ?? 0) + 1;
      if (outcome.bodySent) result.bytes += batch.reduce((a, inst) => a + inst.size, 0);
      result.stored += outcome.stored;
      for (const f of outcome.failures) result.failures.push(`request ${index + 1}: ${f}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, batches.length) }, worker));
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

interface BatchOutcome {
  status: number | undefined;
  /** The server had closed the idle keep-alive socket this request went out on; worth one retry. */
  staleSocket?: boolean;
  bodySent: boolean;
  stored: number;
  failures: string[];
}

class EarlyResponse extends Error {
  override readonly name = 'EarlyResponse';
}

const CRLF = Buffer.from('\r\n');

async function stowBatch(
  url: URL,
  batch: GeneratedInstance[],
  agent: http.Agent,
  signal: AbortSignal | undefined,
  partContentLength: boolean,
  pool: BlockPool,
  authorization: string | undefined,
): Promise<BatchOutcome> {
  const boundary = `dvbench-${randomBytes(12).toString('hex')}`;
  const heads = batch.map((inst) =>
    Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n${partContentLength ? `Content-Length: ${inst.size}\r\n` : ''}\r\n`, 'latin1'),
  );
  // Each part body is followed by CRLF, which begins the next delimiter or the closing one.
  const tail = Buffer.from(`--${boundary}--\r\n`, 'latin1');
  const length = heads.reduce((a, h, i) => a + h.length + batch[i]!.size + CRLF.length, 0) + tail.length;

  const req = http.request(url, {
    method: 'POST',
    agent,
    ...(signal ? { signal } : {}),
    headers: {
      'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
      'Content-Length': length,
      Accept: 'application/dicom+json',
      ...bearer(authorization),
    },
  });
  let res: IncomingMessage | undefined;
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', (r: IncomingMessage) => {
      res = r;
      resolve(r);
    });
    req.once('error', reject);
  });
  response.catch(() => {}); // awaited below; this only stops an unhandled rejection while writing

  let writeError: unknown;
  try {
    const early = (): boolean => res !== undefined;
    for (let i = 0; i < batch.length; i++) {
      await write(req, heads[i]!, early);
      for await (const c of batch[i]!.open(0, undefined, pool)) await write(req, c, early, pool);
      await write(req, CRLF, early);
    }
    req.end(tail);
  } catch (err) {
    writeError = err;
    // An early answer is read below; anything else (generator error, socket error) ends the request.
    if (!(err instanceof EarlyResponse)) req.destroy(err instanceof Error ? err : new Error(String(err)));
  }

  let r: IncomingMessage;
  try {
    r = await response;
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    return {
      status: undefined,
      staleSocket: isStaleSocket(req, err),
      bodySent: false,
      stored: 0,
      failures: [`no response: ${describe(writeError ?? err)}`],
    };
  }
  let body: Buffer;
  try {
    body = await readBody(r, DEFAULT_MAX_RESPONSE_BYTES);
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    req.destroy();
    return { status: r.statusCode, bodySent: false, stored: 0, failures: [`HTTP ${r.statusCode}, response unreadable: ${describe(err)}`] };
  }
  // A body cut short cannot leave the connection reusable.
  if (writeError !== undefined) req.destroy();
  const bodySent = writeError === undefined;
  return { status: r.statusCode, bodySent, ...checkStowResponse(r.statusCode, body, batch, bodySent) };
}

function checkStowResponse(status: number | undefined, body: Buffer, batch: GeneratedInstance[], bodySent: boolean): { stored: number; failures: string[] } {
  const failures: string[] = [];
  if (!bodySent) failures.push(`server answered ${status} before the request body was complete`);
  if (status !== 200) failures.push(`HTTP ${status}: ${body.toString('utf8', 0, 300)}`);
  let dataset: unknown;
  try {
    dataset = JSON.parse(body.toString('utf8'));
  } catch {
    if (status === 200) failures.push('response is not JSON');
    return { stored: 0, failures };
  }
  // PS3.18 answers one data set; some servers wrap it in an array.
  if (Array.isArray(dataset)) dataset = dataset[0];
  const referenced = sequenceUids(dataset, '00081199');
  const failed = sequenceUids(dataset, '00081198');
  const sent = new Set(batch.map((i) => i.sopInstanceUID));
  let stored = 0;
  const missing: string[] = [];
  for (const uid of sent) {
    if (referenced.has(uid)) stored++;
    else missing.push(uid);
  }
  if (missing.length > 0) {
    failures.push(`${missing.length} of ${sent.size} instances not in ReferencedSOPSequence (first: ${missing[0]})`);
  }
  if (failed.size > 0) failures.push(`${failed.size} instances in FailedSOPSequence (first: ${[...failed][0]})`);
  const unexpected = [...referenced].filter((u) => !sent.has(u));
  if (unexpected.length > 0) failures.push(`${unexpected.length} unexpected UIDs in ReferencedSOPSequence (first: ${unexpected[0]})`);
  return { stored, failures };
}

/** Referenced SOP Instance UIDs (0008,1155) of the items of a DICOM JSON sequence. */
function sequenceUids(dataset: unknown, tag: string): Set<string> {
  const out = new Set<string>();
  const items = (dataset as Record<string, { Value?: unknown[] } | undefined> | null)?.[tag]?.Value;
  if (!Array.isArray(items)) return out;
  for (const item of items) {
    const v = (item as Record<string, { Value?: unknown[] } | undefined> | null)?.['00081155']?.Value?.[0];
    if (typeof v === 'string') out.add(v);
  }
  return out;
}

/**
 * Backpressure: wait for 'drain' when the socket buffer is full; stop when the server has answered.
 * With `pool`, the chunk goes back to it once the socket has taken its bytes.
 */
async function write(req: http.ClientRequest, chunk: Uint8Array, early: () => boolean, pool?: BlockPool): Promise<void> {
  if (early()) throw new EarlyResponse('server answered before the request body was complete');
  if (req.destroyed) throw new Error('request destroyed while writing');
  if (pool === undefined ? req.write(chunk) : req.write(chunk, () => pool.give(chunk))) return;
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      req.off('drain', onDrain);
      req.off('response', onDrain);
      req.off('error', onError);
      req.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onError = (err: Error): void => done(err);
    const onClose = (): void => done(new Error('connection closed while writing'));
    req.on('drain', onDrain);
    req.on('response', onDrain);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

async function readBody(res: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      res.destroy();
      throw new Error(`response body exceeds ${limit} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks, n);
}

// ---------- WADO-RS ----------

export interface WadoOptions {
  baseUrl: string;
  studyInstanceUID: string;
  /** The generated study the response must reproduce, byte for byte (matched by sha256). */
  expect: GeneratedStudy;
  /** Default DEFAULT_WADO_ACCEPT. */
  accept?: string;
  /**
   * Hash every part and compare (default true). The client hashes at ~1.7 GB/s on one core;
   * set false to measure a server faster than that (parts are then only counted).
   */
  verify?: boolean;
  /**
   * Every instance of `expect` must be returned (default true). false: `expect` is what may be
   * returned (parts matching none of it are still mismatches); `returned` says what was.
   */
  requireAll?: boolean;
  signal?: AbortSignal;
  /** A bearer token for a node with identity on. */
  authorization?: string;
}

export interface WadoResult {
  status: number | undefined;
  /** Response body bytes (multipart framing included). */
  bytes: number;
  /** Sum of the part bodies. */
  partBytes: number;
  seconds: number;
  /** Request sent => response headers. */
  headersMs: number;
  /** Request sent => first body byte. */
  ttfbMs: number;
  parts: number;
  /** With verify: the SOP Instance UIDs of the parts that matched a generated instance. */
  returned: string[];
  ok: boolean;
  mismatches: string[];
}

export async function wado(opts: WadoOptions): Promise<WadoResult> {
  const verify = opts.verify ?? true;
  const expected = new Map<string, string>(); // sha256 => SOP Instance UID
  if (verify) {
    // Before the clock starts: hashing the plan costs as much as generating it.
    for (const inst of opts.expect.instances) expected.set(await inst.sha256(), inst.sopInstanceUID);
  }
  const url = endpoint(opts.baseUrl, `/studies/${encodeURIComponent(opts.studyInstanceUID)}`);
  const mismatches: string[] = [];
  const seen = new Set<string>();
  let partHash: Hash | undefined;
  let partSize = 0;
  let partBytes = 0;
  let parts = 0;
  const timed = await timedGet(
    url,
    opts.accept ?? DEFAULT_WADO_ACCEPT,
    opts,
    (boundary) =>
      new MultipartScanner(boundary, {
        onPart(headers) {
          parts++;
          partSize = 0;
          const type = headers['content-type'] ?? '';
          if (!/^application\/dicom\s*(;|$)/i.test(type)) mismatches.push(`part ${parts}: Content-Type "${type}"`);
          partHash = verify ? createHash('sha256') : undefined;
        },
        onData(chunk) {
          partSize += chunk.length;
          partBytes += chunk.length;
          partHash?.update(chunk);
        },
        onPartEnd() {
          if (!partHash) return;
          const sha = partHash.digest('hex');
          const uid = expected.get(sha);
          if (uid === undefined) mismatches.push(`part ${parts} (${partSize} bytes) matches no generated instance`);
          else if (seen.has(uid)) mismatches.push(`part ${parts}: instance ${uid} sent twice`);
          else seen.add(uid);
        },
      }),
  );
  mismatches.unshift(...timed.errors);
  const want = opts.expect.instances.length;
  const requireAll = opts.requireAll ?? true;
  if (requireAll && timed.status === 200 && parts !== want) mismatches.push(`${parts} parts, expected ${want}`);
  if (requireAll && verify && timed.status === 200) {
    const missing = opts.expect.instances.filter((i) => !seen.has(i.sopInstanceUID));
    if (missing.length > 0) mismatches.push(`${missing.length} instances not returned (first: ${missing[0]!.sopInstanceUID})`);
  }
  return {
    status: timed.status,
    bytes: timed.bytes,
    partBytes,
    seconds: timed.seconds,
    headersMs: timed.headersMs,
    ttfbMs: timed.ttfbMs,
    parts,
    returned: [...seen],
    ok: timed.status === 200 && mismatches.length === 0,
    mismatches,
  };
}

export interface FramesOptions {
  /** When given, each part must equal the generated frame (in the requested order). */
  expect?: GeneratedInstance;
  /**
   * Instead of `expect`: the SHA-256 (hex) each part must have, in the requested order (frames
   * that were decoded, whose bytes the generator does not make).
   */
  expectSha256?: readonly string[];
  /** Default DEFAULT_FRAMES_ACCEPT. */
  accept?: string;
  signal?: AbortSignal;
  /** A bearer token for a node with identity on. */
  authorization?: string;
}

export interface FramesResult {
  status: number | undefined;
  /** Request sent => last byte. */
  ms: number;
  ttfbMs: number;
  /** Response body bytes (multipart framing included). */
  bytes: number;
  /** Sum of the part bodies. */
  partBytes: number;
  parts: number;
  ok: boolean;
  mismatches: string[];
}

/** WADO-RS frames: one request for `frameNumbers` (1-based) of one instance. */
export async function wadoFrames(
  baseUrl: string,
  studyInstanceUID: string,
  seriesInstanceUID: string,
  sopInstanceUID: string,
  frameNumbers: number[],
  opts: FramesOptions = {},
): Promise<FramesResult> {
  const want: string[] = [];
  if (opts.expectSha256) {
    if (opts.expectSha256.length !== frameNumbers.length) throw new RangeError('expectSha256 needs one hash per frame requested');
    want.push(...opts.expectSha256);
  } else if (opts.expect) {
    const inst = opts.expect;
    for (const n of frameNumbers) {
      if (!Number.isSafeInteger(n) || n < 1 || n > inst.numberOfFrames) throw new RangeError(`frame ${n} not in 1..${inst.numberOfFrames}`);
      const start = inst.pixelDataOffset + (n - 1) * inst.frameBytes;
      const h = createHash('sha256');
      for await (const c of inst.open(start, start + inst.frameBytes)) h.update(c);
      want.push(h.digest('hex'));
    }
  }
  const url = endpoint(
    baseUrl,
    `/studies/${encodeURIComponent(studyInstanceUID)}/series/${encodeURIComponent(seriesInstanceUID)}` +
      `/instances/${encodeURIComponent(sopInstanceUID)}/frames/${frameNumbers.join(',')}`,
  );
  const mismatches: string[] = [];
  let parts = 0;
  let partBytes = 0;
  let hash: Hash | undefined;
  const timed = await timedGet(
    url,
    opts.accept ?? DEFAULT_FRAMES_ACCEPT,
    opts,
    (boundary) =>
      new MultipartScanner(boundary, {
        onPart() {
          parts++;
          hash = want.length > 0 ? createHash('sha256') : undefined;
        },
        onData(chunk) {
          partBytes += chunk.length;
          hash?.update(chunk);
        },
        onPartEnd() {
          if (!hash) return;
          const expected = want[parts - 1];
          if (expected === undefined) mismatches.push(`part ${parts}: more parts than frames requested`);
          else if (hash.digest('hex') !== expected) mismatches.push(`part ${parts}: not the bytes of frame ${frameNumbers[parts - 1]}`);
        },
      }),
  );
  mismatches.unshift(...timed.errors);
  if (timed.status === 200 && parts !== frameNumbers.length) mismatches.push(`${parts} parts, expected ${frameNumbers.length}`);
  return {
    status: timed.status,
    ms: timed.seconds * 1000,
    ttfbMs: timed.ttfbMs,
    bytes: timed.bytes,
    partBytes,
    parts,
    ok: timed.status === 200 && mismatches.length === 0,
    mismatches,
  };
}

interface TimedGet {
  status: number | undefined;
  bytes: number;
  seconds: number;
  headersMs: number;
  ttfbMs: number;
  errors: string[];
}

/**
 * GET a multipart response and feed it to a scanner, timing headers, first byte and end. Read
 * through leanGet (one connection per request, one reused read buffer): these bodies are the
 * gigabytes of the retrieval benchmark, and node:http's per-read allocations made the client
 * take CPU the server under test needed.
 */
async function timedGet(
  url: URL,
  accept: string,
  opts: { signal?: AbortSignal; authorization?: string },
  scanner: (boundary: string) => MultipartScanner,
): Promise<TimedGet> {
  const out: TimedGet = { status: undefined, bytes: 0, seconds: 0, headersMs: NaN, ttfbMs: NaN, errors: [] };
  const t0 = performance.now();
  let s: MultipartScanner | undefined;
  let type = '';
  const refused: Buffer[] = []; // the start of a refusal's body, for the error message
  try {
    await leanGet(
      url,
      { Accept: accept, ...bearer(opts.authorization) },
      {
        onHead(res) {
          out.headersMs = performance.now() - t0;
          out.status = res.status;
          type = res.headers['content-type'] ?? '';
          const boundary = multipartBoundary(type);
          if (res.status === 200 && boundary !== undefined) s = scanner(boundary);
        },
        onBody(chunk) {
          if (out.bytes === 0) out.ttfbMs = performance.now() - t0;
          if (s !== undefined) s.push(chunk);
          else if (out.bytes < 200) refused.push(Buffer.from(chunk.subarray(0, 200 - out.bytes)));
          out.bytes += chunk.length;
        },
      },
      opts.signal ? { signal: opts.signal } : {},
    );
    if (s !== undefined) s.end();
    else out.errors.push(`HTTP ${out.status} ${type}: ${Buffer.concat(refused).toString('utf8')}`);
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    out.errors.push(describe(err));
  } finally {
    out.seconds = (performance.now() - t0) / 1000;
  }
  return out;
}

/** The boundary parameter of a multipart/related Content-Type (taken from the header, never sniffed). */
export function multipartBoundary(contentType: string): string | undefined {
  if (!/^\s*multipart\/related\s*;/i.test(contentType)) return undefined;
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(contentType);
  return m?.[1] ?? m?.[2];
}

// ---------- QIDO-RS ----------

export interface QidoResult {
  status: number | undefined;
  ms: number;
  /** Number of matches (array length); 0 for 204; -1 when the answer is not a JSON array. */
  results: number;
  body: unknown;
}

export interface QidoOptions {
  signal?: AbortSignal;
  agent?: http.Agent;
  /** Largest response read, bytes. Default DEFAULT_MAX_RESPONSE_BYTES; the metadata of a big series is larger. */
  maxResponseBytes?: number;
  /** A bearer token for a node with identity on. */
  authorization?: string;
}

/**
 * GET `${baseUrl}${query}`, e.g. query = '/studies?PatientID=BENCH-SINGLE-1', or any other DICOM
 * JSON resource (`…/series/{series}/metadata`). `ms` is request to last byte, JSON parsing excluded.
 */
export async function qido(baseUrl: string, query: string, opts: QidoOptions = {}): Promise<QidoResult> {
  const url = endpoint(baseUrl, query);
  const t0 = performance.now();
  const res = await get(url, { Accept: 'application/dicom+json', ...bearer(opts.authorization) }, opts);
  const raw = await readBody(res, opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES);
  const ms = performance.now() - t0;
  if (res.statusCode === 204) return { status: 204, ms, results: 0, body: [] };
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    body = raw.toString('utf8', 0, 300);
  }
  return { status: res.statusCode, ms, results: res.statusCode === 200 && Array.isArray(body) ? body.length : -1, body };
}

// ---------- helpers ----------

/** The Authorization header of a bearer token; none without a token (a node run with --open). */
function bearer(token: string | undefined): Record<string, string> {
  return token === undefined ? {} : { Authorization: `Bearer ${token}` };
}

function endpoint(baseUrl: string, path: string): URL {
  const base = new URL(baseUrl);
  if (base.protocol !== 'http:') throw new RangeError(`only http: base URLs are supported, got ${base.protocol}`);
  const q = path.indexOf('?');
  base.pathname = base.pathname.replace(/\/+$/, '') + (q < 0 ? path : path.slice(0, q));
  base.search = q < 0 ? '' : path.slice(q);
  return base;
}

/**
 * A server may close an idle keep-alive socket just as the agent hands it out again (its
 * keep-alive timeout); the request then fails before any response. Node's documented remedy
 * (`request.reusedSocket`) is one retry.
 */
function isStaleSocket(req: http.ClientRequest, err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE');
}

async function get(url: URL, headers: Record<string, string>, opts: { signal?: AbortSignal; agent?: http.Agent }, retried = false): Promise<IncomingMessage> {
  const req = http.request(url, {
    method: 'GET',
    agent: opts.agent ?? defaultAgent(),
    headers,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  try {
    return await new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
      req.end();
    });
  } catch (err) {
    if (!retried && !opts.signal?.aborted && isStaleSocket(req, err)) return get(url, headers, opts, true);
    throw err;
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
