import { createHash, randomBytes } from 'node:crypto';
import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import { VaultError } from '../../../../src/core/errors.ts';
import {
  DEFAULT_MAX_BOUNDARY_LENGTH,
  DEFAULT_MAX_PART_HEADER_BYTES,
  parseContentType,
  parseMultipartRelated,
  type MultipartOptions,
} from '../../../../src/shell/dicomweb/multipart-parser.ts';

const BOUNDARY = 'DICOMwebBoundary_0123';

interface PartSpec {
  headers?: string[];
  body: Buffer | string;
}

interface BuildOptions {
  preamble?: string;
  epilogue?: string;
  padding?: string;
  close?: boolean;
}

/** A multipart/related body as a STOW client would send it. */
function build(parts: PartSpec[], boundary = BOUNDARY, options: BuildOptions = {}): Buffer {
  const out: Buffer[] = [];
  if (options.preamble !== undefined) out.push(Buffer.from(`${options.preamble}\r\n`, 'latin1'));
  parts.forEach((part, i) => {
    const head = `${i === 0 ? '' : '\r\n'}--${boundary}${options.padding ?? ''}\r\n${(part.headers ?? []).map((h) => `${h}\r\n`).join('')}\r\n`;
    out.push(Buffer.from(head, 'latin1'), Buffer.from(part.body));
  });
  if (options.close !== false) out.push(Buffer.from(`\r\n--${boundary}--`, 'latin1'));
  if (options.epilogue !== undefined) out.push(Buffer.from(options.epilogue, 'latin1'));
  return Buffer.concat(out);
}

/** Yields `bytes` in chunks whose sizes come from `size()`, as fresh copies (like a socket). */
async function* chunked(bytes: Buffer, size: () => number): AsyncGenerator<Uint8Array> {
  for (let pos = 0; pos < bytes.length; ) {
    const n = Math.max(1, size());
    yield new Uint8Array(bytes.subarray(pos, pos + n));
    pos += n;
  }
}

function oneChunk(bytes: Buffer): AsyncGenerator<Uint8Array> {
  return chunked(bytes, () => bytes.length);
}

/** Deterministic PRNG (mulberry32), so a failing random split can be replayed from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Collected {
  index: number;
  headers: Record<string, string>;
  contentType: string | undefined;
  body: Buffer;
}

async function collect(source: AsyncIterable<Uint8Array>, options: Partial<MultipartOptions> = {}): Promise<Collected[]> {
  const parts: Collected[] = [];
  for await (const part of parseMultipartRelated(source, { boundary: BOUNDARY, ...options })) {
    const chunks: Buffer[] = [];
    for await (const chunk of part.body) chunks.push(chunk);
    parts.push({ index: part.index, headers: { ...part.headers }, contentType: part.contentType, body: Buffer.concat(chunks) });
  }
  return parts;
}

async function expectCode(promise: Promise<unknown>, code: VaultError['code']): Promise<VaultError> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(VaultError);
  expect((error as VaultError).code).toBe(code);
  return error as VaultError;
}

/** Bodies that look like the start of a delimiter without being one. */
const TRICKY_BODIES = [
  '',
  'x',
  '\r',
  '\r\n',
  '\r\n-',
  '\r\n--',
  `\r\n--${BOUNDARY.slice(0, -1)}`,
  `--${BOUNDARY}`, // no CRLF before it: not a delimiter
  `a\r\nb--c\r\n\r\n--\r\r\n-\r\n--${BOUNDARY.slice(0, 5)}x\r\n--${BOUNDARY.slice(0, -1)}\r`,
  `ends in a partial delimiter\r\n--${BOUNDARY.slice(0, 10)}`,
  '\r\n\r\n\r\n',
];

const TRICKY_MESSAGE = build(
  TRICKY_BODIES.map((body, i) => ({ headers: [`Content-Type: application/dicom`, `X-Index: ${i}`], body })),
  BOUNDARY,
  { preamble: `preamble with \r\n--${BOUNDARY.slice(0, 4)} in it`, epilogue: `\r\nepilogue --${BOUNDARY}\r\n` },
);

function expectTrickyParts(parts: Collected[]): void {
  expect(parts.map((p) => p.body.toString('latin1'))).toEqual(TRICKY_BODIES);
  expect(parts.map((p) => p.headers['x-index'])).toEqual(TRICKY_BODIES.map((_, i) => String(i)));
}

describe('parseContentType', () => {
  it('reads a STOW-RS Content-Type, lower-casing the type and parameter names but not values', () => {
    expect(parseContentType('Multipart/Related; Type="application/dicom"; BOUNDARY=AbC123')).toEqual({
      type: 'multipart/related',
      params: { type: 'application/dicom', boundary: 'AbC123' },
    });
  });

  it('unescapes quoted values and tolerates whitespace and empty parameters', () => {
    const { params } = parseContentType('multipart/related ;\tboundary="a b\\"c\\\\d" ; type=application/dicom;');
    expect(params).toEqual({ boundary: 'a b"c\\d', type: 'application/dicom' });
  });

  it.each([
    [undefined],
    [''],
    ['multipart'],
    ['multipart/related; boundary'],
    ['multipart/related; boundary="unterminated'],
    ['multipart/related boundary=x'],
    ['multipart/related; boundary=a; boundary=b'],
  ])('refuses %j with UNSUPPORTED_MEDIA_TYPE', (header) => {
    expect(() => parseContentType(header)).toThrow(expect.objectContaining({ code: 'UNSUPPORTED_MEDIA_TYPE' }));
  });
});

describe('parseMultipartRelated', () => {
  it('reads one part with its headers and bytes', async () => {
    const parts = await collect(
      oneChunk(build([{ headers: ['Content-Type: Application/DICOM; transfer-syntax=1.2.840.10008.1.2.1', 'Content-Location: x'], body: 'DICM data' }])),
    );
    expect(parts).toEqual([
      {
        index: 0,
        headers: { 'content-type': 'Application/DICOM; transfer-syntax=1.2.840.10008.1.2.1', 'content-location': 'x' },
        contentType: 'application/dicom',
        body: Buffer.from('DICM data'),
      },
    ]);
  });

  it('reads many parts in order without merging the last two', async () => {
    const bodies = Array.from({ length: 50 }, (_, i) => `instance ${i} `.repeat(i));
    const parts = await collect(oneChunk(build(bodies.map((body) => ({ headers: ['Content-Type: application/dicom'], body })))));
    expect(parts.map((p) => p.index)).toEqual(bodies.map((_, i) => i));
    expect(parts.map((p) => p.body.toString())).toEqual(bodies);
  });

  it('reads empty bodies and parts without headers', async () => {
    const parts = await collect(oneChunk(build([{ body: '' }, { headers: ['Content-Type: application/dicom'], body: '' }, { body: 'z' }])));
    expect(parts.map((p) => [p.contentType, p.body.toString()])).toEqual([
      [undefined, ''],
      ['application/dicom', ''],
      [undefined, 'z'],
    ]);
  });

  it('keeps body bytes that contain CRLF, "--" and prefixes of the delimiter; ignores preamble and epilogue', async () => {
    expectTrickyParts(await collect(oneChunk(TRICKY_MESSAGE)));
  });

  it('gives the same bytes however the stream is split: at every position, byte by byte, and at random', async () => {
    for (let at = 1; at < TRICKY_MESSAGE.length; at++) {
      const sizes = [at, TRICKY_MESSAGE.length];
      expectTrickyParts(await collect(chunked(TRICKY_MESSAGE, () => sizes.shift() ?? 1)));
    }
    expectTrickyParts(await collect(chunked(TRICKY_MESSAGE, () => 1)));
    for (let seed = 1; seed <= 200; seed++) {
      const random = prng(seed);
      const parts = await collect(chunked(TRICKY_MESSAGE, () => 1 + Math.floor(random() * 40)));
      expect(
        parts.map((p) => p.body.toString('latin1')),
        `seed ${seed}`,
      ).toEqual(TRICKY_BODIES);
    }
  });

  it('handles a boundary made of hyphens, whose close delimiter looks like a longer boundary', async () => {
    const boundary = '-';
    const bodies = ['-', '--', '\r\n-', '---\r\n--', ''];
    const message = build(
      bodies.map((body) => ({ body })),
      boundary,
    );
    for (const size of [1, 2, 3, 7, message.length]) {
      const parts = await collect(
        chunked(message, () => size),
        { boundary },
      );
      expect(parts.map((p) => p.body.toString())).toEqual(bodies);
    }
  });

  it('uses a quoted boundary with spaces taken from the Content-Type header', async () => {
    const { params } = parseContentType('multipart/related; type="application/dicom"; boundary="a quoted boundary"');
    const message = build([{ body: 'one' }, { body: 'two' }], 'a quoted boundary');
    const parts = await collect(oneChunk(message), { boundary: params.boundary ?? '' });
    expect(parts.map((p) => p.body.toString())).toEqual(['one', 'two']);
  });

  it('accepts transport padding after a boundary', async () => {
    const message = build([{ headers: ['Content-Type: application/dicom'], body: 'padded' }, { body: 'too' }], BOUNDARY, { padding: ' \t  ' });
    for (const size of [1, 3, message.length]) {
      const parts = await collect(chunked(message, () => size));
      expect(parts.map((p) => p.body.toString())).toEqual(['padded', 'too']);
    }
  });

  it('joins folded header lines and repeated fields', async () => {
    const message = Buffer.from(`--${BOUNDARY}\r\nX-A: one\r\n  two\r\nX-B: 1\r\nx-b: 2\r\n\r\nbody\r\n--${BOUNDARY}--`);
    const [part] = await collect(oneChunk(message));
    expect(part?.headers).toEqual({ 'x-a': 'one two', 'x-b': '1, 2' });
  });

  describe('truncated bodies', () => {
    it('throws MULTIPART_TRUNCATED from the body being read when the closing boundary never comes', async () => {
      const message = build([{ body: 'first' }, { body: 'second, cut short' }], BOUNDARY, { close: false });
      const complete: string[] = [];
      let bodyError: unknown;
      const run = (async () => {
        for await (const part of parseMultipartRelated(
          chunked(message, () => 5),
          { boundary: BOUNDARY },
        )) {
          const chunks: Buffer[] = [];
          try {
            for await (const chunk of part.body) chunks.push(chunk);
          } catch (error) {
            bodyError = error;
            throw error;
          }
          complete.push(Buffer.concat(chunks).toString());
        }
      })();
      await expectCode(run, 'MULTIPART_TRUNCATED');
      // The cut part never looks complete: its own body iterator throws.
      expect(complete).toEqual(['first']);
      expect(bodyError).toMatchObject({ code: 'MULTIPART_TRUNCATED' });
    });

    it('throws MULTIPART_TRUNCATED from the generator when the body is not read, and keeps throwing it', async () => {
      const message = build([{ body: 'cut' }], BOUNDARY, { close: false });
      const parts = parseMultipartRelated(oneChunk(message), { boundary: BOUNDARY });
      const first = await parts.next();
      expect(first.done).toBe(false);
      await expectCode(parts.next(), 'MULTIPART_TRUNCATED');
      if (first.done === true) return;
      // Swallowing the error does not turn the upload into a success.
      await expectCode(
        (async () => {
          for await (const _ of first.value.body);
        })(),
        'INTERNAL',
      );
    });

    it.each([
      ['inside the headers', `--${BOUNDARY}\r\nContent-Type: appl`],
      ['just after a boundary', `--${BOUNDARY}`],
      ['after the boundary line', `--${BOUNDARY}\r\n`],
      ['with half a close delimiter', `--${BOUNDARY}\r\n\r\nbody\r\n--${BOUNDARY}-`],
    ])('throws MULTIPART_TRUNCATED when the body ends %s', async (_, text) => {
      await expectCode(collect(chunked(Buffer.from(text), () => 3)), 'MULTIPART_TRUNCATED');
    });
  });

  describe('malformed bodies', () => {
    it('says the Content-Type boundary was not found when the body uses another', async () => {
      const error = await expectCode(collect(oneChunk(build([{ body: 'x' }], 'some-other-boundary'))), 'MULTIPART_MALFORMED');
      expect(error.message).toMatch(/boundary from the Content-Type header was not found/);
      await expectCode(collect(oneChunk(Buffer.alloc(0))), 'MULTIPART_MALFORMED');
    });

    it('gives up on a wrong boundary after the preamble cap instead of reading the whole upload', async () => {
      let pulled = 0;
      async function* endless(): AsyncGenerator<Uint8Array> {
        for (;;) {
          pulled++;
          yield Buffer.alloc(1024, 0x41);
        }
      }
      await expectCode(collect(endless(), { maxPreambleBytes: 4096 }), 'MULTIPART_MALFORMED');
      expect(pulled).toBeLessThan(10);
    });

    it.each([[''], ['ends in space '], ['bad\r\nchar'], ['semi;colon']])('refuses the boundary %j', async (boundary) => {
      await expectCode(collect(oneChunk(build([{ body: 'x' }])), { boundary }), 'MULTIPART_MALFORMED');
    });

    it('refuses a boundary over the limit, naming the limit', async () => {
      const boundary = 'x'.repeat(DEFAULT_MAX_BOUNDARY_LENGTH + 1);
      const error = await expectCode(collect(oneChunk(build([{ body: 'x' }], boundary)), { boundary }), 'MULTIPART_MALFORMED');
      expect(error.message).toContain(`at most ${DEFAULT_MAX_BOUNDARY_LENGTH}`);
    });

    // RFC 2046 asks senders for 70 at most; Orthanc sends 73 (two UUIDs), others more.
    it.each([[70], [73], [200], [DEFAULT_MAX_BOUNDARY_LENGTH]])('accepts a boundary of %i characters, chunked at any size', async (length) => {
      const boundary = `${'b-'.repeat(length).slice(0, length - 1)}z`;
      for (const size of [1, 13, 4096]) {
        const parts = await collect(
          chunked(build([{ body: 'ok' }, { body: 'two' }], boundary), () => size),
          { boundary },
        );
        expect(parts.map((p) => p.body.toString())).toEqual(['ok', 'two']);
      }
    });

    it('refuses part headers over the limit, counted the same however the stream is split', async () => {
      const fits = build([{ headers: [`X-Big: ${'h'.repeat(200)}`], body: 'x' }]);
      const over = build([{ headers: [`X-Big: ${'h'.repeat(300)}`], body: 'x' }]);
      for (const size of [1, 64, 100_000]) {
        await expect(
          collect(
            chunked(fits, () => size),
            { maxPartHeaderBytes: 256 },
          ),
        ).resolves.toHaveLength(1);
        await expectCode(
          collect(
            chunked(over, () => size),
            { maxPartHeaderBytes: 256 },
          ),
          'MULTIPART_MALFORMED',
        );
      }
      const endless = build([{ headers: Array.from({ length: 2000 }, (_, i) => `X-${i}: ${i}`), body: 'x' }]);
      expect(endless.length).toBeGreaterThan(DEFAULT_MAX_PART_HEADER_BYTES);
      await expectCode(collect(oneChunk(endless)), 'MULTIPART_MALFORMED');
    });

    it.each([
      ['a header line without a colon', `--${BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--${BOUNDARY}--`],
      ['a header name with a space', `--${BOUNDARY}\r\nBad Name: x\r\n\r\nx\r\n--${BOUNDARY}--`],
      ['two Content-Types', `--${BOUNDARY}\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\nx\r\n--${BOUNDARY}--`],
      ['text after the boundary', `--${BOUNDARY}garbage\r\n\r\nx\r\n--${BOUNDARY}--`],
      ['a bare LF in the headers', `--${BOUNDARY}\r\nX-A: a\nb\r\n\r\nx\r\n--${BOUNDARY}--`],
    ])('refuses %s with MULTIPART_MALFORMED', async (_, text) => {
      await expectCode(collect(oneChunk(Buffer.from(text))), 'MULTIPART_MALFORMED');
    });

    it('refuses more parts than maxParts with TOO_LARGE', async () => {
      const message = build([{ body: 'a' }, { body: 'b' }, { body: 'c' }]);
      await expect(collect(oneChunk(message), { maxParts: 3 })).resolves.toHaveLength(3);
      await expectCode(collect(oneChunk(message), { maxParts: 2 }), 'TOO_LARGE');
    });

    it('gives a part with an unparseable Content-Type its raw media type, so only that part is refused', async () => {
      const [part] = await collect(oneChunk(build([{ headers: ['Content-Type: Not A Type; x'], body: 'x' }])));
      expect(part?.contentType).toBe('not a type');
    });
  });

  describe('consumers', () => {
    const message = build([{ body: 'a'.repeat(1000) }, { body: 'b'.repeat(1000) }, { body: 'c'.repeat(1000) }]);

    it('skips the rest of a body the consumer broke out of, and the next part is intact', async () => {
      const got: string[] = [];
      for await (const part of parseMultipartRelated(
        chunked(message, () => 100),
        { boundary: BOUNDARY },
      )) {
        if (part.index === 0) {
          for await (const chunk of part.body) {
            got.push(`first chunk of 0 is all a: ${/^a+$/.test(chunk.toString())}`);
            break;
          }
        } else if (part.index === 1) {
          // Not read at all.
        } else {
          const chunks: Buffer[] = [];
          for await (const chunk of part.body) chunks.push(chunk);
          got.push(Buffer.concat(chunks).toString());
        }
      }
      expect(got).toEqual(['first chunk of 0 is all a: true', 'c'.repeat(1000)]);
    });

    it('refuses to read a body after the generator skipped it, instead of ending it early', async () => {
      const parts = parseMultipartRelated(
        chunked(message, () => 100),
        { boundary: BOUNDARY },
      );
      const first = await parts.next();
      await parts.next();
      if (first.done === true) throw new Error('expected a part');
      await expectCode(
        (async () => {
          for await (const _ of first.value.body);
        })(),
        'INTERNAL',
      );
      await parts.return();
    });

    it('refuses to advance the generator while a body read is still pending, rather than reorder bytes', async () => {
      async function* slow(): AsyncGenerator<Uint8Array> {
        for await (const chunk of chunked(message, () => 100)) {
          await new Promise((resolve) => setImmediate(resolve));
          yield chunk;
        }
      }
      const parts = parseMultipartRelated(slow(), { boundary: BOUNDARY });
      const first = await parts.next();
      if (first.done === true) throw new Error('expected a part');
      const body = first.value.body[Symbol.asyncIterator]();
      await body.next(); // what the first source chunk held after the headers
      const pending = body.next(); // now waiting on the source
      await expectCode(parts.next(), 'INTERNAL');
      await pending.catch(() => undefined);
      await parts.return();
    });

    it('pulls from the source only as the consumer reads', async () => {
      let pulled = 0;
      async function* counting(): AsyncGenerator<Uint8Array> {
        for await (const chunk of chunked(message, () => 10)) {
          pulled++;
          yield chunk;
        }
      }
      const parts = parseMultipartRelated(counting(), { boundary: BOUNDARY });
      const first = await parts.next();
      expect(first.done).toBe(false);
      expect(pulled).toBeLessThan(10); // the first headers, not the ~300 chunks of the body
      await parts.return();
    });

    it('closes the source when the consumer stops early', async () => {
      let closed = false;
      let pulledAfterStop = false;
      let stopped = false;
      async function* source(): AsyncGenerator<Uint8Array> {
        try {
          for await (const chunk of chunked(message, () => 10)) {
            if (stopped) pulledAfterStop = true;
            yield chunk;
          }
        } finally {
          closed = true;
        }
      }
      for await (const part of parseMultipartRelated(source(), { boundary: BOUNDARY })) {
        expect(part.index).toBe(0);
        stopped = true;
        break;
      }
      expect(closed).toBe(true);
      expect(pulledAfterStop).toBe(false);
    });

    it('reads the epilogue to the end so the request finishes, and does not close a finished source', async () => {
      let finished = false;
      async function* source(): AsyncGenerator<Uint8Array> {
        yield* chunked(build([{ body: 'x' }], BOUNDARY, { epilogue: '\r\n'.repeat(100) }), () => 7);
        finished = true;
      }
      expect(await collect(source())).toHaveLength(1);
      expect(finished).toBe(true);
    });

    it('stops with the signal reason when aborted mid-body', async () => {
      const controller = new AbortController();
      const reason = new VaultError('ABORTED', 'client went away');
      const run = (async () => {
        for await (const part of parseMultipartRelated(
          chunked(message, () => 100),
          { boundary: BOUNDARY, signal: controller.signal },
        )) {
          for await (const _ of part.body) controller.abort(reason);
        }
      })();
      expect(await run.catch((e: unknown) => e)).toBe(reason);

      const plain = new AbortController();
      plain.abort(new Error('timeout'));
      await expectCode(collect(oneChunk(message), { signal: plain.signal }), 'ABORTED');
    });

    it('passes the source chunks through as views, not copies', async () => {
      const held = new Uint8Array(build([{ body: 'view me' }]));
      async function* source(): AsyncGenerator<Uint8Array> {
        yield held;
      }
      const seen: Buffer[] = [];
      for await (const part of parseMultipartRelated(source(), { boundary: BOUNDARY })) {
        for await (const piece of part.body) seen.push(piece);
      }
      expect(seen.map((piece) => piece.toString())).toEqual(['view me']);
      expect(seen[0]?.buffer).toBe(held.buffer);
    });
  });

  describe('large bodies', () => {
    const CHUNK = 64 * 1024;
    const delimiterLength = `\r\n--${BOUNDARY}`.length;

    it('streams a 64 MiB part in bounded pieces with every byte intact', async () => {
      const total = 64 * 1024 * 1024;
      const sent = createHash('sha256');
      // The logical stream: headers, 64 MiB of random bytes (CRs included), a second small part.
      async function* pieces(): AsyncGenerator<Buffer> {
        yield Buffer.from(`--${BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n`);
        for (let produced = 0; produced < total; produced += CHUNK) {
          const piece = randomBytes(CHUNK);
          // Now and then a near-delimiter, so held-back tails are exercised at scale.
          if ((produced / CHUNK) % 17 === 0) Buffer.from(`\r\n--${BOUNDARY.slice(0, 8)}`).copy(piece, CHUNK - 12);
          sent.update(piece);
          yield piece;
        }
        yield Buffer.from(`\r\n--${BOUNDARY}\r\n\r\nsmall\r\n--${BOUNDARY}--\r\n`);
      }
      // Cut into CHUNK-sized chunks whose edges are offset from the pieces' (by the header), so
      // edges fall inside delimiters and near-delimiters alike.
      async function* source(): AsyncGenerator<Uint8Array> {
        let pending = Buffer.alloc(0);
        for await (const piece of pieces()) {
          pending = Buffer.concat([pending, piece]);
          while (pending.length >= CHUNK) {
            yield Buffer.from(pending.subarray(0, CHUNK));
            pending = pending.subarray(CHUNK);
          }
        }
        if (pending.length > 0) yield pending;
      }

      const received = createHash('sha256');
      let bytes = 0;
      let largest = 0;
      const small: string[] = [];
      for await (const part of parseMultipartRelated(source(), { boundary: BOUNDARY })) {
        for await (const chunk of part.body) {
          largest = Math.max(largest, chunk.length);
          if (part.index === 0) {
            received.update(chunk);
            bytes += chunk.length;
          } else {
            small.push(chunk.toString());
          }
        }
      }
      expect(bytes).toBe(total);
      expect(received.digest('hex')).toBe(sent.digest('hex'));
      expect(small).toEqual(['small']);
      expect(largest).toBeLessThanOrEqual(CHUNK + delimiterLength);
    });

    it('throughput sanity run (reported, not asserted): 1 GiB in 1 MiB chunks', async () => {
      const MiB = 1024 * 1024;
      const filler = randomBytes(MiB);
      const count = 1024;
      async function* source(): AsyncGenerator<Uint8Array> {
        yield Buffer.from(`--${BOUNDARY}\r\n\r\n`);
        // The same buffer each time: nothing writes to it, and it keeps the run about the parser.
        for (let i = 0; i < count; i++) yield filler;
        yield Buffer.from(`\r\n--${BOUNDARY}--`);
      }
      let bytes = 0;
      const started = performance.now();
      for await (const part of parseMultipartRelated(source(), { boundary: BOUNDARY })) {
        for await (const chunk of part.body) bytes += chunk.length;
      }
      const seconds = (performance.now() - started) / 1000;
      console.info(`multipart: ${(bytes / MiB / seconds).toFixed(0)} MiB/s over ${bytes / MiB} MiB`);
      expect(bytes).toBe(count * MiB);
    });
  });
});
