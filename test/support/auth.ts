// The whole suite runs with identity on: every node a test starts gets an account with every role
// (ingest, staff, admin) and its token, and every request a test sends to that node carries the
// token unless the test sets Authorization itself (the identity and grant tests do, and send no
// header to see the 401). fetch and node:http requests are wrapped once per test process
// (test/support/auth-setup.ts, a vitest setup file); raw-socket clients take the token as an
// argument (`tokenFor`).
import http from 'node:http';
import { syncBuiltinESMExports } from 'node:module';

const tokens = new Map<string, string>();

/** The token requests to `baseUrl`'s origin carry from now on. */
export function registerToken(baseUrl: string, token: string): void {
  tokens.set(new URL(baseUrl).host, token);
}

export function forgetToken(baseUrl: string): void {
  tokens.delete(new URL(baseUrl).host);
}

/** The token registered for `url`'s origin, if any. */
export function tokenFor(url: string | URL): string | undefined {
  return tokens.get(new URL(url).host);
}

/** `Authorization: Bearer <token>` for `url`, or nothing. */
export function authHeaders(url: string | URL): Record<string, string> {
  const t = tokenFor(url);
  return t === undefined ? {} : { authorization: `Bearer ${t}` };
}

function hasAuthorization(headers: unknown): boolean {
  if (headers === undefined || headers === null) return false;
  if (headers instanceof Headers) return headers.has('authorization');
  if (Array.isArray(headers)) return headers.some(([k]) => String(k).toLowerCase() === 'authorization');
  return Object.keys(headers as object).some((k) => k.toLowerCase() === 'authorization');
}

let installed = false;

/** Wraps fetch and node:http's request/get so that requests to registered nodes carry their token. */
export function installTokenInjection(): void {
  if (installed) return;
  installed = true;
  const originalFetch = globalThis.fetch;
  globalThis.fetch = (input: string | URL | Request, init?: RequestInit) => {
    const url = input instanceof Request ? input.url : input;
    const t = tokenFor(url);
    const headers = init?.headers ?? (input instanceof Request ? input.headers : undefined);
    if (t === undefined || hasAuthorization(headers)) return originalFetch(input, init);
    const merged = new Headers(headers);
    merged.set('authorization', `Bearer ${t}`);
    return originalFetch(input, { ...init, headers: merged });
  };
  const wrap = <F extends typeof http.request>(original: F): F =>
    ((...args: unknown[]) => {
      // request(url[, options][, cb]) or request(options[, cb])
      const [first, second] = args;
      const options = (typeof first === 'string' || first instanceof URL ? (typeof second === 'object' && second !== null ? second : undefined) : first) as
        | http.RequestOptions
        | undefined;
      const host =
        typeof first === 'string' || first instanceof URL ? new URL(first).host : `${options?.hostname ?? options?.host ?? 'localhost'}:${options?.port ?? 80}`;
      const t = tokens.get(host);
      if (t !== undefined && !hasAuthorization(options?.headers)) {
        const withAuth = { ...options, headers: { ...(options?.headers as Record<string, string> | undefined), authorization: `Bearer ${t}` } };
        if (typeof first === 'string' || first instanceof URL) {
          if (typeof second === 'object' && second !== null) args[1] = withAuth;
          else args.splice(1, 0, withAuth);
        } else args[0] = withAuth;
      }
      return (original as (...a: unknown[]) => http.ClientRequest)(...args);
    }) as F;
  http.request = wrap(http.request);
  http.get = ((...args: unknown[]) => {
    const req = (http.request as (...a: unknown[]) => http.ClientRequest)(...args);
    req.end();
    return req;
  }) as typeof http.get;
  syncBuiltinESMExports();
}
