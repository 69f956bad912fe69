// DICOMweb benchmark client: STOW-RS uploads streamed from the generator, WADO-RS retrievals
// checked byte for byte against it, frame and QIDO latencies. Uploads and QIDO: node:http with a
// keep-alive agent, no dependencies (undici's fetch would buffer nothing either, but a Web stream
// body makes the exact-Content-Length, drain-driven upload and early-response handling harder
// to control and to measure). WADO bodies: lean-get.ts, which reads into one reused buffer.
//
// `baseUrl` is the DICOMweb root: `${baseUrl}/studies` is the STOW/QIDO endpoint.
//
// STOW-RS is in client-stow.ts, the HTTP plumbing both use in client-http.ts; this file keeps
// WADO-RS (instances and frames) and QIDO-RS.

import type http from 'node:http';
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import type { GeneratedInstance, GeneratedStudy } from './generate.ts';
import { leanGet } from './lean-get.ts';
import { MultipartScanner } from './multipart-scanner.ts';
import { bearer, DEFAULT_MAX_RESPONSE_BYTES, describe, endpoint, get, readBody } from './client-http.ts';

export { DEFAULT_MAX_PART_HEADER_BYTES, MultipartError, MultipartScanner, type MultipartHandlers } from './multipart-scanner.ts';
export { createAgent, DEFAULT_MAX_RESPONSE_BYTES } from './client-http.ts';
export { type StowOptions, type StowResult, stow } from './client-stow.ts';

export const DEFAULT_WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*';
export const DEFAULT_FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';

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
