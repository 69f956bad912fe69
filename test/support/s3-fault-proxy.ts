// A tiny fault-injecting HTTP proxy on loopback, in front of the real S3 server: it forwards
// requests verbatim (Host included, so SigV4 signatures still match) unless a rule says to answer
// with an error status, to delay, or to refuse the object. The server behind it is real; only
// the faults are made up.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProxiedRequest {
  /** 1-based arrival order. */
  n: number;
  method: string;
  /** Path and query, e.g. /bucket/blocks/bafk...?partNumber=1&uploadId=... */
  url: string;
  headers: http.IncomingHttpHeaders;
}

export type Fault =
  | { status: number; code: string } // answered by the proxy with an S3 XML error
  | { delayMs: number } // forwarded after a delay
  | { corruptBody: true } // forwarded with one byte of its body flipped (damage in transit)
  | undefined; // forwarded at once

export interface FaultProxy {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  /** Every request seen, with the fault applied to it. */
  log: Array<ProxiedRequest & { fault: Fault }>;
  rule: (req: ProxiedRequest) => Fault;
  close(): Promise<void>;
}

export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const upstream = new URL(target);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  let n = 0;
  const proxy: FaultProxy = {
    url: '',
    log: [],
    rule: () => undefined,
    close: async () => {
      agent.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((req, res) => {
    const seen: ProxiedRequest = { n: ++n, method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers };
    const fault = proxy.rule(seen);
    proxy.log.push({ ...seen, fault });
    if (fault !== undefined && 'status' in fault) {
      req.resume();
      req.once('end', () => {
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${fault.code}</Code><Message>injected by the test proxy</Message></Error>`;
        res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
        res.end(req.method === 'HEAD' ? undefined : body);
      });
      return;
    }
    const forward = (): void => {
      const out = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
        up.once('error', () => res.destroy());
      });
      out.once('error', () => res.destroy());
      // The client gave up (its timeout): stop the upstream request too.
      res.once('close', () => {
        if (!res.writableFinished) out.destroy();
      });
      if (fault !== undefined && 'corruptBody' in fault) {
        const parts: Buffer[] = [];
        req.on('data', (d: Buffer) => parts.push(d));
        req.once('end', () => {
          const body = Buffer.concat(parts);
          if (body.length > 0) body[body.length >> 1]! ^= 0xff;
          out.end(body);
        });
        return;
      }
      req.pipe(out);
    };
    if (fault !== undefined && 'delayMs' in fault) {
      req.pause();
      const timer = setTimeout(forward, fault.delayMs);
      res.once('close', () => clearTimeout(timer));
    } else {
      forward();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
