// An allowed read is recorded while it is being handled, not before: the access seam starts the
// audit log's commit (admit) and lets the handler run; the response waits for that commit only
// where it would start (fastify's onSend; a hijacked reply before its first byte). So the commit
// overlaps the handler's work, and still no byte of a response leaves before its access is on
// record. A log that cannot be written turns the response into 503 AUDIT_UNAVAILABLE.
import type { FastifyRequest } from 'fastify';

const pending = new WeakMap<FastifyRequest, Promise<void>>();

/** The access seam: `admission` resolves once the request's access entry is on record. */
export function admitWhileHandling(request: FastifyRequest, admission: Promise<void>): void {
  // Awaited later, if ever (a request whose client left is never sent): never unhandled.
  admission.catch(() => undefined);
  pending.set(request, admission);
}

/**
 * Waits until the request's access is on record; throws (AUDIT_UNAVAILABLE) when it cannot be,
 * once: the error answer that follows is then let through.
 */
export async function admitted(request: FastifyRequest): Promise<void> {
  const admission = pending.get(request);
  if (admission === undefined) return;
  pending.delete(request);
  await admission;
}
