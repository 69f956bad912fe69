// Reading S3 response bodies into buffers the caller owns, streaming: a block is copied from
// the socket's pieces straight into its place (no concatenation), and a body that ends early or
// runs long is an error, so that a truncated block never passes for a stored one.
import type { SpanTarget } from './span-reader.ts';

/**
 * Streams a ranged response body covering [start, end) of an object into the targets' own
 * buffers (bytes between targets are skipped). A body that ends early or runs long is an error.
 */
export async function readBodyIntoTargets(body: unknown, start: number, end: number, targets: readonly SpanTarget[], signal: AbortSignal): Promise<void> {
  if (body === undefined || body === null) throw new Error('response has no body');
  let at = start;
  let t = 0;
  try {
    for await (const piece of body as AsyncIterable<Uint8Array>) {
      if (at + piece.byteLength > end) throw new Error('response body is longer than its Content-Length');
      let p = 0;
      while (p < piece.byteLength) {
        while (t < targets.length && targets[t]!.start + targets[t]!.size <= at) t++;
        const target = targets[t];
        if (target === undefined) {
          at += piece.byteLength - p;
          break;
        }
        if (at < target.start) {
          const skip = Math.min(target.start - at, piece.byteLength - p);
          p += skip;
          at += skip;
          continue;
        }
        const n = Math.min(target.start + target.size - at, piece.byteLength - p);
        target.out.set(piece.subarray(p, p + n), at - target.start);
        p += n;
        at += n;
      }
    }
  } catch (err) {
    destroyBody(body);
    if (signal.aborted) throw signal.reason;
    throw err;
  }
  if (at !== end) throw new Error(`response body ended after ${at - start} of ${end - start} bytes`);
}

/**
 * Copies a response body into `out` at `offset`, streaming (no concatenation). A body that ends
 * early or runs long is an error: a truncated block must never pass for a stored one.
 */
export async function readBodyInto(body: unknown, out: Uint8Array, offset: number, end: number, signal: AbortSignal): Promise<void> {
  if (body === undefined || body === null) {
    if (offset === end) return;
    throw new Error('response has no body');
  }
  let at = offset;
  try {
    for await (const piece of body as AsyncIterable<Uint8Array>) {
      if (at + piece.byteLength > end) throw new Error('response body is longer than its Content-Length');
      out.set(piece, at);
      at += piece.byteLength;
    }
  } catch (err) {
    destroyBody(body);
    if (signal.aborted) throw signal.reason;
    throw err;
  }
  if (at !== end) throw new Error(`response body ended after ${at - offset} of ${end - offset} bytes`);
}

/** Drops a response body not read (or read in part), so that its socket goes back to the pool or closes. */
export function destroyBody(body: unknown): void {
  if (body !== null && typeof body === 'object' && 'destroy' in body && typeof body.destroy === 'function') body.destroy();
}
