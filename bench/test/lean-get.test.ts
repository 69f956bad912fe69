import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { leanGet, ResponseParser, LeanHttpError } from '../lean-get.ts';

/** Feeds `raw` to a parser cut at `cuts`; returns the head, the body and whether it finished. */
function parse(raw: Buffer, cuts: number[] = []): { status: number | undefined; body: Buffer; done: boolean; parser: ResponseParser } {
  const chunks: Buffer[] = [];
  const parser = new ResponseParser({ onBody: (c) => chunks.push(Buffer.from(c)) });
  let o = 0;
  for (const c of [...cuts, raw.length]) {
    parser.push(raw.subarray(o, c));
    o = c;
  }
  return { status: parser.response?.status, body: Buffer.concat(chunks), done: parser.done, parser };
}

const chunked = (body: Buffer, sizes: number[]): Buffer => {
  const out: Buffer[] = [Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: x\r\nTransfer-Encoding: chunked\r\n\r\n')];
  let o = 0;
  for (const n of sizes) {
    out.push(Buffer.from(`${n.toString(16)};ext=1\r\n`), body.subarray(o, o + n), Buffer.from('\r\n'));
    o += n;
  }
  out.push(Buffer.from('0\r\nX-Trailer: 1\r\n\r\n'));
  return Buffer.concat(out);
};

describe('ResponseParser', () => {
  const body = randomBytes(300);

  it('de-chunks a chunked body however the stream is cut', () => {
    const raw = chunked(body, [100, 1, 199]);
    for (let cut = 1; cut < raw.length; cut++) {
      const r = parse(raw, [cut]);
      expect(r.done, `cut at ${cut}`).toBe(true);
      expect(r.body.equals(body), `cut at ${cut}`).toBe(true);
    }
    const bytewise = parse(
      raw,
      Array.from({ length: raw.length - 1 }, (_, i) => i + 1),
    );
    expect(bytewise.body.equals(body)).toBe(true);
    expect(bytewise.parser.response!.headers['content-type']).toBe('x');
  });

  it('reads exactly Content-Length bytes, and to the end without either', () => {
    const fixed = parse(Buffer.concat([Buffer.from('HTTP/1.1 404 Not Found\r\nContent-Length: 300\r\n\r\n'), body]), [50]);
    expect(fixed.status).toBe(404);
    expect(fixed.done).toBe(true);
    expect(fixed.body.equals(body)).toBe(true);
    const open = parse(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\n\r\n'), body]));
    expect(open.done).toBe(false);
    open.parser.end();
    expect(open.body.equals(body)).toBe(true);
  });

  it('refuses a truncated body, a bad chunk size and a bad status line', () => {
    const raw = chunked(body, [300]);
    const cut = parse(raw.subarray(0, raw.length - 10));
    expect(() => cut.parser.end()).toThrow(/truncated/);
    const short = parse(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'));
    expect(() => short.parser.end()).toThrow(LeanHttpError);
    expect(() => parse(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'))).toThrow(/chunk size/);
    expect(() => parse(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX'))).toThrow(/CRLF/);
    expect(() => parse(Buffer.from('SMTP ready\r\n\r\n'))).toThrow(/status line/);
  });
});

describe('leanGet', () => {
  let server: net.Server;
  let url: URL;
  let answer: (socket: net.Socket, request: string) => void;

  beforeAll(async () => {
    server = net.createServer((socket) => {
      let head = '';
      socket.on('data', (d) => {
        head += d.toString('latin1');
        if (head.includes('\r\n\r\n')) answer(socket, head);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/dicom-web/studies/1.2?x=1`);
  });
  afterAll(() => new Promise((r) => server.close(r)));

  it('sends one GET and streams a body larger than its read buffer', async () => {
    const big = randomBytes(3 << 20);
    let request = '';
    answer = (socket, head) => {
      request = head;
      socket.write(chunked(big, [1 << 20, 1, (2 << 20) - 1]));
    };
    const hash: Buffer[] = [];
    const r = await leanGet(url, { Accept: 'multipart/related' }, { onBody: (c) => hash.push(Buffer.from(c)) });
    expect(request.startsWith('GET /dicom-web/studies/1.2?x=1 HTTP/1.1\r\n')).toBe(true);
    expect(request).toMatch(/\r\nAccept: multipart\/related\r\n/);
    expect(r.status).toBe(200);
    expect(r.bodyBytes).toBe(big.length);
    expect(Buffer.concat(hash).equals(big)).toBe(true);
  });

  it('rejects when the server closes mid-body', async () => {
    answer = (socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this');
    await expect(leanGet(url, {}, { onBody: () => undefined })).rejects.toThrow(/truncated/);
  });
});
