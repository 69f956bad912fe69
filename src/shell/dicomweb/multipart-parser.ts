// Streaming parser for multipart/related request bodies (RFC 2046 §5.1, RFC 2387), the framing
// STOW-RS uses: `multipart/related; type="application/dicom"; boundary=...` (DICOM PS3.18 §10.5).
//
// Hand-written because busboy (and the other streaming parsers we know of) only read
// multipart/form-data: they require a Content-Disposition with a field name per part, which STOW
// parts do not carry. The parts here are whole DICOM instances of up to several GiB, so the parser
// never holds a part in memory: body chunks are views (subarray) of the source's own buffers, and
// it keeps back at most the few bytes that might begin a delimiter split across two chunks.
//
// Shape of a body, with D = CRLF "--" boundary (the first D may omit its CRLF):
//   preamble  D padding CRLF headers CRLF body  D padding CRLF headers CRLF body ...  D "--" epilogue
// The boundary always comes from the Content-Type header, never from the body.
import { Buffer } from 'node:buffer';
import { VaultError } from '../../core/errors.ts';
import { abortError } from '../../core/abort.ts';

/** Default cap on one part's header block (padding, line breaks and fields), in bytes. */
export const DEFAULT_MAX_PART_HEADER_BYTES = 16 * 1024;
/** Default cap on the number of parts in one body. */
export const DEFAULT_MAX_PARTS = 100_000;
/**
 * Default cap on the preamble (bytes before the first delimiter), in bytes. Senders put a line of
 * text there at most; past the cap the boundary is reported as not found, so a body sent with the
 * wrong boundary fails at once instead of after it has been read to its end.
 */
export const DEFAULT_MAX_PREAMBLE_BYTES = 16 * 1024;

/**
 * Default cap on the boundary's length, in characters. RFC 2046 asks senders for at most 70, but
 * Orthanc's STOW client (1.10, DICOMweb plugin 1.7) sends 73 (two UUIDs), and a receiver that
 * refuses it refuses the most used open PACS; the search keeps the boundary in memory, so any
 * cap well above what senders use serves.
 */
export const DEFAULT_MAX_BOUNDARY_LENGTH = 256;

export interface MultipartOptions {
  /** The boundary parameter of the request's Content-Type header (never sniffed from the body). */
  boundary: string;
  /** Cap on the boundary's length, in characters. Default: DEFAULT_MAX_BOUNDARY_LENGTH (256). */
  maxBoundaryLength?: number;
  /** Cap on one part's header block, in bytes. Default: DEFAULT_MAX_PART_HEADER_BYTES (16 KiB). */
  maxPartHeaderBytes?: number;
  /** Cap on the number of parts; one more is VaultError('TOO_LARGE'). Default: DEFAULT_MAX_PARTS. */
  maxParts?: number;
  /** Cap on bytes before the first delimiter, in bytes. Default: DEFAULT_MAX_PREAMBLE_BYTES (16 KiB). */
  maxPreambleBytes?: number;
  /**
   * Aborts parsing with the signal's reason. Checked whenever the parser is asked for data; a
   * source stalled inside its own `next()` is not interrupted, so tie the source to the same
   * signal (destroy the request stream on abort).
   */
  signal?: AbortSignal;
}

export interface MultipartPart {
  /** Position of the part in the body, from 0. */
  index: number;
  /** The part's header fields, names lower-cased; repeated fields are joined with ", ". */
  headers: Record<string, string>;
  /**
   * The part's media type without parameters, lower-cased; undefined when the part has no
   * Content-Type. An unparseable value is given as its lower-cased text before any ';', so the
   * caller can refuse that one part by name rather than the whole request.
   */
  contentType: string | undefined;
  /**
   * The part's bytes, streamed; iterable once. The chunks are views of the source's buffers (so a
   * source must not reuse a buffer after yielding it). Read it before asking the generator for the
   * next part: the generator then skips whatever is left unread, and a body read after that throws.
   * A body that ends without a following delimiter throws VaultError('MULTIPART_TRUNCATED').
   */
  body: AsyncIterable<Buffer>;
}

/**
 * The type and parameters of a media type header (RFC 7231 §3.1.1.1): the type and parameter
 * names lower-cased, values as sent (a boundary is case-sensitive), quoted strings unescaped.
 * Throws VaultError('UNSUPPORTED_MEDIA_TYPE') when the header is missing or does not parse.
 */
export function parseContentType(header: string | undefined): { type: string; params: Record<string, string> } {
  if (header === undefined) throw new VaultError('UNSUPPORTED_MEDIA_TYPE', 'The request has no Content-Type header');
  const invalid = (why: string) => new VaultError('UNSUPPORTED_MEDIA_TYPE', `Unparseable Content-Type header: ${why}`, { details: { contentType: header } });

  const mediaType = MEDIA_TYPE.exec(header);
  if (mediaType === null) throw invalid('expected type/subtype');
  const type = `${mediaType[1]}/${mediaType[2]}`.toLowerCase();
  // Null prototype: a parameter named "__proto__" must be a plain entry.
  const params = Object.create(null) as Record<string, string>;

  let pos = mediaType[0].length;
  while (pos < header.length) {
    SEMICOLON.lastIndex = pos;
    if (SEMICOLON.exec(header) === null) throw invalid(`expected ';' at offset ${pos}`);
    pos = SEMICOLON.lastIndex;
    // Tolerate empty parameters ("text/plain;", "a/b;;c=d"), which senders emit.
    if (pos === header.length || header[pos] === ';') continue;

    PARAMETER.lastIndex = pos;
    const parameter = PARAMETER.exec(header);
    if (parameter === null) throw invalid(`expected name=value at offset ${pos}`);
    pos = PARAMETER.lastIndex;
    const name = (parameter[1] ?? '').toLowerCase();
    const quoted = parameter[2];
    const value = quoted === undefined ? (parameter[3] ?? '') : quoted.replace(/\\(.)/gs, '$1');
    // A repeated parameter (two boundaries) has no right answer; refuse rather than guess.
    if (params[name] !== undefined) throw invalid(`repeated parameter "${name}"`);
    params[name] = value;
  }
  return { type, params };
}

/**
 * The parts of a multipart/related body, in order, each with its body streamed. Reads `source`
 * only as the consumer asks for more; returning from the generator early closes `source`.
 *
 * Throws VaultError: 'MULTIPART_MALFORMED' (invalid boundary, boundary not in the body, bad part
 * headers), 'MULTIPART_TRUNCATED' (the source ended before the closing `--boundary--`),
 * 'TOO_LARGE' (more than `maxParts` parts), or the signal's reason when aborted.
 */
export async function* parseMultipartRelated(source: AsyncIterable<Uint8Array>, options: MultipartOptions): AsyncGenerator<MultipartPart, void, undefined> {
  const maxBoundary = options.maxBoundaryLength ?? DEFAULT_MAX_BOUNDARY_LENGTH;
  if (options.boundary.length > maxBoundary) {
    throw new VaultError(
      'MULTIPART_MALFORMED',
      `The multipart boundary is ${options.boundary.length} characters long; this node accepts at most ${maxBoundary}`,
      {
        details: { boundaryLength: options.boundary.length, maxBoundaryLength: maxBoundary },
      },
    );
  }
  if (!BOUNDARY.test(options.boundary)) {
    throw new VaultError('MULTIPART_MALFORMED', 'The multipart boundary must be characters of the RFC 2046 set, not ending in a space', {
      details: { boundary: options.boundary },
    });
  }
  const maxParts = options.maxParts ?? DEFAULT_MAX_PARTS;
  const reader = new MultipartReader(source[Symbol.asyncIterator](), options);
  try {
    await reader.skipPreamble();
    for (let index = 0; ; index++) {
      const headers = await reader.readPartHeaders(index);
      if (headers === null) break; // close delimiter
      if (index >= maxParts) {
        throw new VaultError('TOO_LARGE', `The body has more than ${maxParts} parts`, { details: { maxParts } });
      }
      const body = new PartBody(reader);
      yield { index, headers, contentType: partContentType(headers['content-type']), body };
      // Skip whatever of the body the consumer left unread, to reach the next delimiter.
      await body.finish();
    }
    await reader.drainEpilogue();
  } finally {
    await reader.close();
  }
}

// RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace, but of any length here (the length is
// bounded by maxBoundaryLength, see DEFAULT_MAX_BOUNDARY_LENGTH). It excludes CR and LF, which the
// delimiter search below relies on.
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]$/;
// RFC 7230 §3.2.6 token characters.
const TCHAR = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]";
const TOKEN = new RegExp(`^${TCHAR}+$`);
const MEDIA_TYPE = new RegExp(`^[\\t ]*(${TCHAR}+)/(${TCHAR}+)[\\t ]*`);
const SEMICOLON = /;[\t ]*/y;
// name=token or name="quoted string" (qdtext and quoted-pair of RFC 7230 §3.2.6), then OWS. An
// unquoted value may also hold '/': senders write `type=application/dicom` unquoted, and
// refusing them would gain nothing.
const PARAMETER = new RegExp(
  `(${TCHAR}+)=(?:"((?:[\\t \\x21\\x23-\\x5B\\x5D-\\x7E\\x80-\\xFF]|\\\\[\\t \\x20-\\x7E\\x80-\\xFF])*)"|((?:${TCHAR}|/)+))[\\t ]*`,
  'y',
);
// Control characters other than HTAB may not appear in a header field (RFC 7230 §3.2).
const FIELD_CTL = /[\x00-\x08\x0A-\x1F\x7F]/;

const CR = 0x0d;
const HYPHEN = 0x2d;
const SPACE = 0x20;
const TAB = 0x09;
const CRLF = Buffer.from('\r\n', 'latin1');
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const EMPTY = Buffer.alloc(0);

function malformed(message: string, details?: Record<string, unknown>): VaultError {
  return new VaultError('MULTIPART_MALFORMED', message, details === undefined ? {} : { details });
}

function truncated(message: string): VaultError {
  return new VaultError('MULTIPART_TRUNCATED', message);
}

/**
 * The byte-level state machine, shared by the generator and the part bodies it hands out: the
 * unconsumed bytes, the source iterator, and where we are (inside a part body or not). Every
 * read method consumes from the front of `#buf` and pulls from the source only when `#buf` cannot
 * answer. After any error the reader is failed and every later call rethrows that error, so a
 * consumer that swallows a truncation cannot carry on to a success.
 */
class MultipartReader {
  readonly #iterator: AsyncIterator<Uint8Array>;
  readonly #signal: AbortSignal | undefined;
  /** CRLF "--" boundary: what ends a part body. */
  readonly #delimiter: Buffer;
  /** "--" boundary: the first delimiter when the body begins with it (no CRLF before it). */
  readonly #dashBoundary: Buffer;
  readonly #maxHeaderBytes: number;
  readonly #maxPreambleBytes: number;
  /** Received and not yet consumed. In a body, a view of the current source chunk. */
  #buf: Buffer = EMPTY;
  #sourceDone = false;
  #pulling = false;
  /** True between a part's headers and the delimiter that ends its body. */
  #inBody = false;
  #failure: { error: unknown } | undefined;

  constructor(iterator: AsyncIterator<Uint8Array>, options: MultipartOptions) {
    this.#iterator = iterator;
    this.#signal = options.signal;
    this.#dashBoundary = Buffer.from(`--${options.boundary}`, 'latin1');
    this.#delimiter = Buffer.concat([CRLF, this.#dashBoundary]);
    this.#maxHeaderBytes = options.maxPartHeaderBytes ?? DEFAULT_MAX_PART_HEADER_BYTES;
    this.#maxPreambleBytes = options.maxPreambleBytes ?? DEFAULT_MAX_PREAMBLE_BYTES;
  }

  /** Consumes everything up to and including the first delimiter. */
  skipPreamble(): Promise<void> {
    return this.#guard(async () => {
      const notFound = () =>
        malformed('The boundary from the Content-Type header was not found in the body', {
          maxPreambleBytes: this.#maxPreambleBytes,
        });
      const dash = this.#dashBoundary;
      // The body may begin with the delimiter itself, without the CRLF that every later delimiter
      // starts with. Read until we can tell.
      while (this.#buf.length < dash.length && dash.subarray(0, this.#buf.length).equals(this.#buf)) {
        if (!(await this.#pull())) throw notFound();
      }
      if (this.#buf.subarray(0, dash.length).equals(dash)) {
        this.#buf = this.#buf.subarray(dash.length);
        return;
      }
      // Otherwise a preamble precedes the first CRLF-delimiter; drop it as we go.
      let discarded = 0;
      for (;;) {
        const at = this.#buf.indexOf(this.#delimiter);
        if (at >= 0) {
          if (discarded + at > this.#maxPreambleBytes) throw notFound();
          this.#buf = this.#buf.subarray(at + this.#delimiter.length);
          return;
        }
        const keep = this.#partialDelimiterLength();
        discarded += this.#buf.length - keep;
        this.#buf = this.#buf.subarray(this.#buf.length - keep);
        if (discarded > this.#maxPreambleBytes) throw notFound();
        if (!(await this.#pull())) throw notFound();
      }
    });
  }

  /**
   * Called just after a delimiter: reads what follows it. Returns null for the close delimiter
   * ("--"), else the part's header fields, leaving the reader at the start of the part body.
   */
  readPartHeaders(index: number): Promise<Record<string, string> | null> {
    return this.#guard(async () => {
      await this.#fill(2, 'The body ended just after a boundary, before its closing boundary');
      if (this.#buf[0] === HYPHEN && this.#buf[1] === HYPHEN) {
        this.#buf = this.#buf.subarray(2);
        return null;
      }
      const max = this.#maxHeaderBytes;
      const tooLarge = () => malformed(`The headers of part ${index} exceed ${max} bytes`, { part: index, maxPartHeaderBytes: max });

      // Transport padding: spaces and tabs a sender may put after the boundary (RFC 2046 §5.1.1).
      let blockBytes = 0;
      for (;;) {
        let i = 0;
        while (i < this.#buf.length && (this.#buf[i] === SPACE || this.#buf[i] === TAB)) i++;
        blockBytes += i;
        this.#buf = this.#buf.subarray(i);
        if (blockBytes > max) throw tooLarge();
        if (this.#buf.length > 0) break;
        if (!(await this.#pull())) throw truncated('The body ended after a boundary, before its closing boundary');
      }
      await this.#fill(2, 'The body ended after a boundary, before its closing boundary');
      if (this.#buf[0] !== CR || this.#buf[1] !== 0x0a) {
        throw malformed(`Unexpected bytes after the boundary that opens part ${index}`, { part: index });
      }

      // The header fields end at the first blank line. Searching from the CRLF that ends the
      // boundary line means a part with no fields (CRLF CRLF) needs no special case.
      let from = 0;
      for (;;) {
        const end = this.#buf.indexOf(CRLFCRLF, from);
        if (end >= 0) {
          if (blockBytes + end + CRLFCRLF.length > max) throw tooLarge();
          const fields = this.#buf.subarray(CRLF.length, Math.max(CRLF.length, end));
          this.#buf = this.#buf.subarray(end + CRLFCRLF.length);
          const headers = parseHeaderFields(fields, index);
          this.#inBody = true;
          return headers;
        }
        // A blank line found later would end past the cap.
        if (blockBytes + this.#buf.length >= max) throw tooLarge();
        from = Math.max(0, this.#buf.length - (CRLFCRLF.length - 1));
        if (!(await this.#pull())) throw truncated(`The body ended inside the headers of part ${index}`);
      }
    });
  }

  /**
   * The next chunk of the current part body, or null once the delimiter that ends it has been
   * consumed. Chunks are views of source buffers; only the few bytes held back because they might
   * start a delimiter are ever copied (joined with the next source chunk).
   */
  readBody(): Promise<Buffer | null> {
    return this.#guard(async () => {
      for (;;) {
        if (!this.#inBody) return null;
        this.#checkAborted();
        const buf = this.#buf;
        // The nearest delimiter ends the body, whether it is a plain or the close one: both start
        // with the same bytes, and what follows is for readPartHeaders to tell apart.
        const at = buf.indexOf(this.#delimiter);
        if (at >= 0) {
          this.#buf = buf.subarray(at + this.#delimiter.length);
          this.#inBody = false;
          if (at > 0) return buf.subarray(0, at);
          return null;
        }
        const safe = buf.length - this.#partialDelimiterLength();
        if (safe > 0) {
          this.#buf = buf.subarray(safe);
          return buf.subarray(0, safe);
        }
        if (!(await this.#pull())) throw truncated('The body ended inside a part, before its closing boundary');
      }
    });
  }

  /** After the close delimiter: reads the source to its end, ignoring the epilogue. */
  drainEpilogue(): Promise<void> {
    return this.#guard(async () => {
      // Reading to the end (rather than closing the source) lets an HTTP request finish normally.
      this.#buf = EMPTY;
      while (await this.#pull()) this.#buf = EMPTY;
    });
  }

  /** Closes the source if it has not ended (for a socket: releases it). */
  async close(): Promise<void> {
    if (this.#sourceDone) return;
    this.#sourceDone = true;
    try {
      await this.#iterator.return?.();
    } catch {
      // Cleanup only: the outcome the caller sees (the parts, or the error that got us here)
      // matters more than a source that failed while being closed.
    }
  }

  async #guard<T>(step: () => Promise<T>): Promise<T> {
    if (this.#failure !== undefined) throw this.#failure.error;
    try {
      return await step();
    } catch (error) {
      this.#failure ??= { error };
      throw error;
    }
  }

  #checkAborted(): void {
    if (this.#signal?.aborted === true) throw abortError(this.#signal);
  }

  /**
   * Appends the next non-empty source chunk to `#buf`; false once the source has ended. The chunk
   * becomes `#buf` as is when nothing is pending, which is the common case inside a body.
   */
  async #pull(): Promise<boolean> {
    this.#checkAborted();
    if (this.#sourceDone) return false;
    // Two callers pulling at once would each take a chunk and reorder the stream.
    if (this.#pulling) throw new VaultError('INTERNAL', 'A part body was read while the multipart generator was also reading');
    this.#pulling = true;
    try {
      for (;;) {
        let result: IteratorResult<Uint8Array>;
        try {
          result = await this.#iterator.next();
        } catch (error) {
          this.#sourceDone = true; // a source that threw has finished; nothing to close
          throw error;
        }
        this.#checkAborted();
        if (result.done === true) {
          this.#sourceDone = true;
          return false;
        }
        const value: unknown = result.value;
        if (!(value instanceof Uint8Array)) throw new VaultError('INTERNAL', 'The multipart source yielded something other than bytes');
        if (value.length === 0) continue;
        const chunk = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
        this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
        return true;
      }
    } finally {
      this.#pulling = false;
    }
  }

  /** Pulls until `#buf` holds at least `n` bytes; MULTIPART_TRUNCATED if the source ends first. */
  async #fill(n: number, whenTruncated: string): Promise<void> {
    while (this.#buf.length < n) {
      if (!(await this.#pull())) throw truncated(whenTruncated);
    }
  }

  /**
   * The length of the longest tail of `#buf` that is a proper prefix of the delimiter, i.e. the
   * bytes to hold back because the next chunk may complete a delimiter with them. The delimiter's
   * only CR is its first byte (a boundary cannot contain CR), so the one candidate is the tail
   * starting at the last CR among the final (delimiter length - 1) bytes.
   */
  #partialDelimiterLength(): number {
    const buf = this.#buf;
    const windowStart = Math.max(0, buf.length - (this.#delimiter.length - 1));
    const cr = buf.subarray(windowStart).lastIndexOf(CR);
    if (cr < 0) return 0;
    const tail = buf.subarray(windowStart + cr);
    return tail.equals(this.#delimiter.subarray(0, tail.length)) ? tail.length : 0;
  }
}

/**
 * One part's body as handed to the consumer. It reads through the shared reader while the part is
 * current; when the generator moves on, `finish()` skips what is left and a later read throws,
 * so a consumer can never mistake a skipped remainder for the end of the body.
 */
class PartBody implements AsyncIterable<Buffer> {
  readonly #reader: MultipartReader;
  #opened = false;
  #state: 'current' | 'ended' | 'skipped' = 'current';

  constructor(reader: MultipartReader) {
    this.#reader = reader;
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    if (this.#opened) throw new VaultError('INTERNAL', 'A multipart part body can be iterated only once');
    this.#opened = true;
    return this.#chunks();
  }

  async *#chunks(): AsyncGenerator<Buffer, void, undefined> {
    for (;;) {
      if (this.#state === 'skipped') {
        throw new VaultError('INTERNAL', 'A part body was read after the multipart generator had moved on to the next part');
      }
      if (this.#state === 'ended') return;
      const chunk = await this.#reader.readBody();
      if (chunk === null) {
        this.#state = 'ended';
        return;
      }
      yield chunk;
    }
  }

  /** Called by the generator before it looks for the next part: skips the unread rest, if any. */
  async finish(): Promise<void> {
    if (this.#state !== 'current') return;
    // Marked first so that a read racing with the skip throws instead of interleaving with it.
    this.#state = 'skipped';
    let skippedBytes = 0;
    for (let chunk = await this.#reader.readBody(); chunk !== null; chunk = await this.#reader.readBody()) {
      skippedBytes += chunk.length;
    }
    // A consumer that read every byte but never saw the end still gets a clean end.
    if (skippedBytes === 0) this.#state = 'ended';
  }
}

/** Parses a part's header block (the lines between the boundary line and the blank line). */
function parseHeaderFields(fields: Buffer, index: number): Record<string, string> {
  // Null prototype: a field named "__proto__" must be a plain entry.
  const headers = Object.create(null) as Record<string, string>;
  if (fields.length === 0) return headers;
  const bad = (why: string) => malformed(`Malformed headers in part ${index}: ${why}`, { part: index });
  // latin1 maps bytes to code points one to one; header fields are ASCII by rule.
  let lastName: string | undefined;
  for (const line of fields.toString('latin1').split('\r\n')) {
    if (FIELD_CTL.test(line)) throw bad('control character in a header line');
    if (line.startsWith(' ') || line.startsWith('\t')) {
      // Folded continuation of the previous field (RFC 5322 §2.2.3), still sent by some MIME tools.
      const previous = lastName === undefined ? undefined : headers[lastName];
      if (lastName === undefined || previous === undefined) throw bad('continuation line before any field');
      headers[lastName] = `${previous} ${trimOws(line)}`;
      continue;
    }
    const colon = line.indexOf(':');
    const name = line.slice(0, Math.max(colon, 0)).toLowerCase();
    if (colon < 0 || !TOKEN.test(name)) throw bad('a line is not "name: value"');
    const value = trimOws(line.slice(colon + 1));
    const previous = headers[name];
    if (previous === undefined) {
      headers[name] = value;
    } else {
      // Two Content-Types cannot be reconciled; other repeats are lists (RFC 7230 §3.2.2).
      if (name === 'content-type') throw bad('repeated Content-Type');
      headers[name] = `${previous}, ${value}`;
    }
    lastName = name;
  }
  return headers;
}

function trimOws(text: string): string {
  return text.replace(/^[\t ]+|[\t ]+$/g, '');
}

function partContentType(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    return parseContentType(value).type;
  } catch {
    return (value.split(';')[0] ?? '').trim().toLowerCase();
  }
}
