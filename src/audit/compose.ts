// The node records every access in several places at once (its log, the tamper-evident audit
// log, the hospital's audit repository): one sink that hands each event to all of them.
import type { AuditSink } from '../access/policy.ts';

/** Several sinks as one: each event goes to all, and one sink's failure never keeps it from the others nor fails the request. */
export function composeSinks(sinks: readonly AuditSink[], onError?: (err: unknown) => void): AuditSink {
  if (sinks.length === 1) return sinks[0]!;
  return {
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
