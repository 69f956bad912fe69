// The one error catalogue of the node. Every failure a client or an operator can see has a
// stable code and an HTTP status here; code throws `VaultError`s and the HTTP app's single
// error handler turns them into responses. Match on `code`, never on message text.

export const ERRORS = {
  // 400: the request or its DICOM content is malformed
  BAD_REQUEST: { status: 400, title: 'Bad request' },
  INVALID_UID: { status: 400, title: 'Not a valid DICOM UID' },
  INVALID_QUERY: { status: 400, title: 'Invalid query parameter' },
  MULTIPART_MALFORMED: { status: 400, title: 'Malformed multipart body' },
  MULTIPART_TRUNCATED: { status: 400, title: 'Multipart body ended before its closing boundary' },
  DICOM_MALFORMED: { status: 400, title: 'Malformed DICOM data' },
  DICOM_TRUNCATED: { status: 400, title: 'DICOM data ended before its declared length' },
  NOT_DICOM: { status: 400, title: 'Not a DICOM Part 10 stream' },
  STUDY_UID_MISMATCH: { status: 400, title: 'Instance belongs to another study than the URL names' },
  INVALID_FRAME_LIST: { status: 400, title: 'Invalid frame list' },
  CAR_INVALID: { status: 400, title: 'Not a valid CAR file of a study' },
  RECEIPT_MALFORMED: { status: 400, title: 'Not a valid dicom-vault anchor receipt' },
  GRANT_INVALID: { status: 400, title: "A grant's statement or the patient's signature of it does not hold" },
  // 401 / 403: the access seam (src/access/policy.ts)
  UNAUTHORIZED: { status: 401, title: 'Caller not identified' },
  FORBIDDEN: { status: 403, title: 'Access not granted' },
  // 404
  NOT_FOUND: { status: 404, title: 'Not found' },
  STUDY_NOT_FOUND: { status: 404, title: 'Unknown study' },
  SERIES_NOT_FOUND: { status: 404, title: 'Unknown series' },
  INSTANCE_NOT_FOUND: { status: 404, title: 'Unknown instance' },
  FRAME_NOT_FOUND: { status: 404, title: 'Frame number out of range' },
  BULKDATA_NOT_FOUND: { status: 404, title: 'Unknown bulk data' },
  RECEIPT_NOT_FOUND: { status: 404, title: 'No anchor receipt for this study version' },
  ANCHOR_DISABLED: { status: 404, title: 'Anchoring is disabled on this node' },
  // 406 / 413 / 415
  NOT_ACCEPTABLE: { status: 406, title: 'Cannot produce any accepted representation' },
  REQUEST_TIMEOUT: { status: 408, title: 'The request did not arrive fast enough' },
  CONFLICT: { status: 409, title: 'The study changed concurrently; retry' },
  RETENTION_HOLD: { status: 409, title: 'The study is under a retention hold and cannot be erased' },
  STUDY_ERASED: { status: 409, title: 'The study was erased while its instances were being stored; send them again' },
  ERASURE_REQUEST_STATE: { status: 409, title: 'The erasure request is not in a state that allows this' },
  TOO_LARGE: { status: 413, title: 'Request exceeds a configured size limit' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported content type' },
  // 499: the client went away; nothing is sent
  ABORTED: { status: 499, title: 'Request aborted' },
  // 5xx: the node's fault or its storage's
  BLOCK_NOT_FOUND: { status: 500, title: 'A stored block is missing' },
  BLOCK_CORRUPT: { status: 500, title: 'A stored block failed verification' },
  INSTANCE_CORRUPT: { status: 500, title: 'A stored instance failed verification' },
  DECODE_FAILED: { status: 500, title: 'Stored pixel data could not be decoded' },
  KEY_NOT_FOUND: { status: 500, title: 'No data key for this study' },
  KEY_UNWRAP_FAILED: { status: 500, title: 'A data key could not be unwrapped with the master key' },
  STORE_UNAVAILABLE: { status: 503, title: 'The block store is unavailable' },
  BUSY: { status: 503, title: 'The node is at a configured limit of concurrent work; retry later' },
  DECODE_BUSY: { status: 503, title: 'Too many frames waiting to be decoded; retry' },
  CHAIN_UNAVAILABLE: { status: 503, title: 'The anchoring chain is unreachable' },
  CHAIN_ERROR: { status: 502, title: 'The anchoring chain refused or failed a request' },
  AUDIT_UNAVAILABLE: { status: 503, title: 'The audit log cannot be written: no access is served unrecorded' },
  IDP_UNAVAILABLE: { status: 503, title: 'The OpenID provider could not be reached or gave no usable keys; retry' },
  CONFIG_INVALID: { status: 500, title: 'Invalid configuration' },
  DATA_DIR_INCOMPLETE: { status: 500, title: 'A part of the data directory is missing' },
  MASTER_KEY_MISMATCH: { status: 500, title: 'The master key is not the one this data directory was written with' },
  DATABASE_CORRUPT: { status: 500, title: 'A database file of the data directory is damaged' },
  INTERNAL: { status: 500, title: 'Internal error' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERRORS;

export interface VaultErrorOptions {
  cause?: unknown;
  /** Extra fields safe to return to a client and to log (never patient data). */
  details?: Record<string, unknown>;
}

export class VaultError extends Error {
  override readonly name = 'VaultError';
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, options: VaultErrorOptions = {}) {
    super(message ?? ERRORS[code].title, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = ERRORS[code].status;
    this.details = options.details;
  }
}

export function isVaultError(err: unknown, code?: ErrorCode): err is VaultError {
  return err instanceof VaultError && (code === undefined || err.code === code);
}
