// The client's multipart/related reader: parts and their headers found in the stream as it
// arrives, without holding a response (the bench reads GB through it).

const CRLF = Buffer.from('\r\n');

/** Largest header block of one multipart part, in bytes. */
export const DEFAULT_MAX_PART_HEADER_BYTES = 16 << 10;

export interface MultipartHandlers {
  /** A part begins; header names are lower-cased. */
  onPart(headers: Record<string, string>): void;
  onData(chunk: Buffer): void;
  onPartEnd(): void;
}

/**
 * Incremental multipart scanner (RFC 2046): parts are reported as they stream by, nothing is
 * buffered beyond one part's headers and a few bytes that might begin a delimiter. Written here
 * because the client must not depend on the server's parser, and it needs only counts and bytes.
 */
export class MultipartScanner {
  private readonly delimiter: Buffer;
  private readonly handlers: MultipartHandlers;
  private readonly maxHeaderBytes: number;
  private state: 'preamble' | 'delimiterLine' | 'headers' | 'body' | 'epilogue' = 'preamble';
  // Bytes at the end of the previous chunk that may begin a delimiter. Starts as a virtual CRLF
  // so a body that opens with "--boundary" (no preamble) matches the same delimiter.
  private held: Buffer | undefined = CRLF;
  // The delimiter line or header block being collected (bounded by maxHeaderBytes).
  private acc: Buffer = Buffer.alloc(0);

  constructor(boundary: string, handlers: MultipartHandlers, maxHeaderBytes = DEFAULT_MAX_PART_HEADER_BYTES) {
    this.delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
    this.handlers = handlers;
    this.maxHeaderBytes = maxHeaderBytes;
  }

  /** True once the closing delimiter has been seen. */
  get complete(): boolean {
    return this.state === 'epilogue';
  }

  push(chunk: Buffer): void {
    let c = chunk;
    if (this.held !== undefined) {
      // Rare (a chunk ended in "\r", "\r\n-", ...): the copy is a few bytes plus this chunk.
      c = Buffer.concat([this.held, chunk]);
      this.held = undefined;
    }
    let o = 0;
    while (o < c.length) {
      switch (this.state) {
        case 'preamble':
        case 'body': {
          const i = c.indexOf(this.delimiter, o);
          if (i >= 0) {
            if (this.state === 'body') {
              if (i > o) this.handlers.onData(c.subarray(o, i));
              this.handlers.onPartEnd();
            }
            o = i + this.delimiter.length;
            this.state = 'delimiterLine';
            this.acc = Buffer.alloc(0);
            break;
          }
          const k = this.delimiterPrefixStart(c, o);
          if (this.state === 'body' && k > o) this.handlers.onData(c.subarray(o, k));
          if (k < c.length) this.held = Buffer.from(c.subarray(k));
          o = c.length;
          break;
        }
        case 'delimiterLine': {
          // After the boundary: "--" closes the body; otherwise optional padding, then CRLF.
          const before = this.acc.length;
          this.acc = Buffer.concat([this.acc, c.subarray(o, o + 1024)]);
          if (this.acc.length >= 2 && this.acc[0] === 0x2d && this.acc[1] === 0x2d) {
            this.state = 'epilogue';
            o = c.length;
            break;
          }
          const e = this.acc.indexOf(CRLF);
          if (e < 0) {
            if (this.acc.length > 1024) throw new MultipartError('boundary line too long');
            o = c.length;
            break;
          }
          if (!/^[ \t]*$/.test(this.acc.toString('latin1', 0, e))) throw new MultipartError('garbage after a boundary');
          o += e + 2 - before;
          this.acc = Buffer.alloc(0);
          this.state = 'headers';
          break;
        }
        case 'headers': {
          const before = this.acc.length;
          this.acc = Buffer.concat([this.acc, c.subarray(o, o + this.maxHeaderBytes + 4 - before)]);
          let end: number;
          if (this.acc.length >= 2 && this.acc[0] === 0x0d && this.acc[1] === 0x0a)
            end = 2; // no headers
          else {
            const e = this.acc.indexOf('\r\n\r\n');
            if (e < 0) {
              if (this.acc.length > this.maxHeaderBytes) throw new MultipartError(`part headers exceed ${this.maxHeaderBytes} bytes`);
              o = c.length;
              break;
            }
            end = e + 4;
          }
          const headers: Record<string, string> = {};
          for (const line of this.acc.toString('latin1', 0, end).split('\r\n')) {
            const colon = line.indexOf(':');
            if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
          }
          o += end - before;
          this.acc = Buffer.alloc(0);
          this.state = 'body';
          this.handlers.onPart(headers);
          // An empty body is followed directly by the delimiter's own CRLF, found by 'body'.
          break;
        }
        case 'epilogue':
          o = c.length;
          break;
      }
    }
  }

  /** The stream ended: a body without its closing delimiter is truncated, never a success. */
  end(): void {
    if (this.state !== 'epilogue') throw new MultipartError('multipart body ended before its closing boundary');
  }

  /** Smallest k >= o such that c[k..] is a proper prefix of the delimiter (c.length if none). */
  private delimiterPrefixStart(c: Buffer, o: number): number {
    const d = this.delimiter;
    for (let k = Math.max(o, c.length - d.length + 1); k < c.length; k++) {
      if (c[k] !== 0x0d) continue;
      if (c.compare(d, 0, c.length - k, k) === 0) return k;
    }
    return c.length;
  }
}

export class MultipartError extends Error {
  override readonly name = 'MultipartError';
}
