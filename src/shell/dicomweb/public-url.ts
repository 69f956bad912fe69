// The base of every URL the node writes into a response (RetrieveURL, BulkDataURI): where a client
// reaches this node. From --public-url when the operator set one; else from the request itself:
// the Host header with the port the client actually connected to (some clients, Python's
// dicomweb-client among them, send Host without its port), and behind a reverse proxy the
// proxy's Forwarded (RFC 7239) or X-Forwarded-Proto/-Host, believed only when the connection
// comes from a configured trusted proxy (anyone else could point a victim's links elsewhere).
import { BlockList, isIP } from 'node:net';
import type { FastifyRequest } from 'fastify';
import { VaultError } from '../../core/errors.ts';

export interface PublicUrlOptions {
  /** The node's public base URL, e.g. https://pacs.example.org (DICOMweb lives under its path + prefix). */
  publicUrl?: string;
  /** Addresses or CIDR blocks of reverse proxies whose forwarding headers are believed. Default none. */
  trustedProxies?: readonly string[];
}

export class PublicUrls {
  readonly #publicUrl: string | undefined;
  readonly #trusted: BlockList | undefined;
  readonly #prefix: string;

  constructor(prefix: string, options: PublicUrlOptions = {}) {
    this.#prefix = prefix;
    this.#publicUrl = options.publicUrl?.replace(/\/+$/, '');
    this.#trusted = trustList(options.trustedProxies ?? []);
  }

  /** Whether a connection from `address` comes from a trusted proxy (for fastify's trustProxy too). */
  trusts(address: string | undefined): boolean {
    if (this.#trusted === undefined || address === undefined) return false;
    const family = isIP(address);
    if (family === 0) return false;
    // An IPv4 peer on a dual-stack socket reads ::ffff:a.b.c.d.
    const v4 = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : undefined;
    return v4 !== undefined ? this.#trusted.check(v4, 'ipv4') : this.#trusted.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }

  /** The DICOMweb base URL for this request, e.g. http://host:8080/dicom-web. */
  base(request: FastifyRequest): string {
    if (this.#publicUrl !== undefined) return this.#publicUrl + this.#prefix;
    const socket = request.raw.socket;
    if (this.trusts(socket.remoteAddress)) {
      const forwarded = parseForwarded(header(request, 'forwarded'));
      const proto = forwarded.proto ?? firstOf(header(request, 'x-forwarded-proto')) ?? (isTls(request) ? 'https' : 'http');
      const host = forwarded.host ?? firstOf(header(request, 'x-forwarded-host')) ?? header(request, 'host');
      if (host !== undefined && validHost(host) && (proto === 'http' || proto === 'https')) return `${proto}://${host}${this.#prefix}`;
    }
    const proto = isTls(request) ? 'https' : 'http';
    const host = header(request, 'host');
    const local = socket.localPort;
    if (host === undefined || !validHost(host)) {
      const address = socket.localAddress ?? '127.0.0.1';
      return `${proto}://${address.includes(':') ? `[${address}]` : address}:${local}${this.#prefix}`;
    }
    // Host without a port means the protocol's default port; the client connected to `local`.
    if (hasPort(host) || local === undefined || local === (proto === 'https' ? 443 : 80)) return `${proto}://${host}${this.#prefix}`;
    return `${proto}://${host}:${local}${this.#prefix}`;
  }
}

/** Checks --public-url: an absolute http(s) URL without query or fragment. */
export function validatePublicUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new VaultError('CONFIG_INVALID', `--public-url must be an absolute URL (got "${raw}")`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new VaultError('CONFIG_INVALID', `--public-url must be an http or https URL without credentials, query or fragment (got "${raw}")`);
  }
  return url.toString().replace(/\/+$/, '');
}

/** Checks --trusted-proxies: IP addresses or CIDR blocks. */
export function trustList(entries: readonly string[]): BlockList | undefined {
  if (entries.length === 0) return undefined;
  const list = new BlockList();
  for (const entry of entries) {
    const [address = '', bits] = entry.split('/');
    const family = isIP(address);
    if (family === 0) throw new VaultError('CONFIG_INVALID', `--trusted-proxies: "${entry}" is not an IP address or CIDR block`);
    const type = family === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address, type);
    else {
      const prefix = Number(bits);
      if (!/^\d+$/.test(bits) || prefix > (family === 6 ? 128 : 32))
        throw new VaultError('CONFIG_INVALID', `--trusted-proxies: "${entry}" has a bad prefix length`);
      list.addSubnet(address, prefix, type);
    }
  }
  return list;
}

function header(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function firstOf(list: string | undefined): string | undefined {
  const first = list?.split(',')[0]?.trim();
  return first === '' ? undefined : first;
}

function isTls(request: FastifyRequest): boolean {
  return (request.raw.socket as { encrypted?: boolean }).encrypted === true;
}

/** host[:port] of a URL authority, no userinfo, no path: what may be put in a URL we hand out. */
function validHost(host: string): boolean {
  return /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.test(host);
}

function hasPort(host: string): boolean {
  return /:\d{1,5}$/.test(host);
}

/** The first element of a Forwarded header (the client's side of the first proxy): its proto and host. */
export function parseForwarded(value: string | undefined): { proto?: string; host?: string } {
  if (value === undefined) return {};
  const first = value.split(',')[0] ?? '';
  const out: { proto?: string; host?: string } = {};
  for (const pair of first.split(';')) {
    const eq = pair.indexOf('=');
    if (eq < 0) continue;
    const key = pair.slice(0, eq).trim().toLowerCase();
    let v = pair.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1);
    if (key === 'proto') out.proto = v.toLowerCase();
    else if (key === 'host') out.host = v;
  }
  return out;
}
