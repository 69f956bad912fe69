// An allowed read is recorded while it is being handled, not before: the access seam starts the
// audit log's commit (admit) and lets the handler run; the response waits for that commit only
// where it would start (fastify's onSend; a hijacked reply before its first byte). So the commit
// overlaps the handler's work, and still no byte of a response leaves before its access is on
// record. A log that cannot be written turns the response into 503 AUDIT_UNAVAILABLE.
//
// A response produced whole before the commit started (a QIDO: the catalog answers in the same
// turn of the event loop) is handed to `respond` first: the access entry, still waiting, carries
// its status and body length, and no outcome entry is needed unless it does not go out whole.
import type { FastifyRequest } from 'fastify';

/** The whole response of an admitted request: its status and its body's length in bytes. */
export type Respond = (status: number, bodyBytes: number) => void;

const pending = new WeakMap<FastifyRequest, { admission: Promise<void>; respond?: Respond }>();

/** The access seam: `admission` resolves once the request's access entry is on record. */
export function admitWhileHandling(request: FastifyRequest, admission: Promise<void>, respond?: Respond): void {
  // Awaited later, if ever (a request whose client left is never sent): never unhandled.
  admission.catch(() => undefined);
  pending.set(request, respond === undefined ? { admission } : { admission, respond });
}

/** The length of a payload fastify's onSend holds whole (a string or bytes; none), else undefined (a stream). */
function wholeLength(payload: unknown): number | undefined {
  if (payload === null || payload === undefined) return 0;
  if (typeof payload === 'string') return Buffer.byteLength(payload);
  if (payload instanceof Uint8Array) return payload.byteLength;
  return undefined;
}

/**
 * Waits until the request's access is on record; throws (AUDIT_UNAVAILABLE) when it cannot be,
 * once: the error answer that follows is then let through. `response`: the reply about to start,
 * its payload as onSend holds it (folded into the access entry when whole and not written yet).
 */
export async function admitted(request: FastifyRequest, response?: { status: number; payload: unknown }): Promise<void> {
  const p = pending.get(request);
  if (p === undefined) return;
  pending.delete(request);
  if (response !== undefined && p.respond !== undefined) {
    const bytes = wholeLength(response.payload);
    if (bytes !== undefined) p.respond(response.status, bytes);
  }
  await p.admission;
}
