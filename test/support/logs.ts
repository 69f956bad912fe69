// The node's pino output, captured as parsed lines, so tests can assert what an operator reads.
import type { Logger } from 'pino';
import { createLogger } from '../../src/shell/log.ts';

export interface CapturedLogs {
  logger: Logger;
  /** Every line logged so far, parsed. */
  lines: Array<Record<string, unknown>>;
  /** Lines at `level` (pino number: 40 warn, 50 error) or above whose JSON contains `text`. */
  find(text: string, level?: number): Array<Record<string, unknown>>;
}

export function captureLogs(level = 'info'): CapturedLogs {
  const lines: Array<Record<string, unknown>> = [];
  // The node's own logger (with its redaction), writing into memory instead of stdout.
  const logger = createLogger(level, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return {
    logger,
    lines,
    find: (text, min = 0) => lines.filter((l) => Number(l.level) >= min && JSON.stringify(l).includes(text)),
  };
}
