// The node records every access in several places at once (its log, the tamper-evident audit
// log, the hospital's audit repository): one sink that hands each event to all of them.
import type { AuditSink } from '../access/policy.ts';

/**
 * Several sinks as one: each event goes to all, and one sink's failure to record never keeps it
 * from the others nor fails the request. `admit` (an access that must be on record before it is
 * served) waits for every sink that admits, and fails when one of them cannot: the request is
 * then refused rather than served unrecorded.
 */
export function composeSinks(sinks: readonly AuditSink[], onError?: (err: unknown) => void): AuditSink {
  if (sinks.length === 1) return sinks[0]!;
  const admitting = sinks.filter((s) => s.admit !== undefined);
  return {
    ...(admitting.length === 0 ? {} : { admit: async (event) => void (await Promise.all(admitting.map((s) => s.admit!(event)))) }),
    respond(id, status, bodyBytes) {
      for (const sink of sinks) {
        try {
          sink.respond?.(id, status, bodyBytes);
        } catch (err) {
          onError?.(err);
        }
      }
    },
    record(event) {
      for (const sink of sinks) {
        try {
          sink.record(event);
        } catch (err) {
          onError?.(err);
        }
      }
    },
  };
}
