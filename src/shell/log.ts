// The node's logger: pino, with patient fields and credentials redacted wherever they appear.
import pino, { type Logger } from 'pino';

/** Patient fields and credentials never reach the logs. */
export const LOG_REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  '*.PatientName',
  '*.PatientID',
  '*.PatientBirthDate',
  '*.00100010',
  '*.00100020',
  '*.00100030',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, redact: { paths: LOG_REDACT, censor: '[redacted]' } }, destination);
}
