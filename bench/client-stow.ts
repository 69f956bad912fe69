// STOW-RS for the DICOMweb benchmark client (client.ts): a study's instances uploaded in batches
// as multipart/related bodies streamed from the generator with an exact Content-Length, written
// as the socket drains, an answer arriving before the body is complete noticed, and the
// response's stored and failed SOP instances checked against the batch. Apart from client.ts
// because uploading shares nothing with the retrievals but the HTTP plumbing (client-http.ts).
import http from 'node:http';
import type { IncomingMessage } from 'node:http';
import { randomBytes } from 'node:crypto';
import { BlockPool, type GeneratedInstance, type GeneratedStudy } from './generate.ts';
import { bearer, DEFAULT_MAX_RESPONSE_BYTES, defaultAgent, describe, endpoint, isStaleSocket, readBody } from './client-http.ts';

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
