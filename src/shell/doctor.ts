// The doctor's page at /doctor/ (src/web/doctor/, bundled with the other pages into
// src/web/dist/doctor/ by src/web/build.ts), and what it asks first (/doctor/config.json: the
// hospital's OpenID provider). Apart from the patient's page (web.ts) because its CSP names the
// provider's origin and its files live under /doctor/ itself.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify';
import { VaultError } from '../core/errors.ts';

export const DOCTOR_PREFIX = '/doctor';
/** Where src/web/build.ts writes the page. */
export const DOCTOR_DIST = join(import.meta.dirname, '..', 'web', 'dist', 'doctor');

/** The hospital's OpenID provider as the page needs it: where, its client for the page, this node's audience. */
export interface DoctorOidc {
  issuer: string;
  clientId: string;
  audience: string;
}

/**
 * Nothing but this origin: no inline script or style, no framing, no plugins. With an OpenID
 * provider, the page also talks to its origin (discovery and the token endpoint, over CORS).
 */
export function pageCsp(oidc?: DoctorOidc): string {
  const connect = oidc === undefined ? "'self'" : `'self' ${new URL(oidc.issuer).origin}`;
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    `connect-src ${connect}`,
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'main.js': 'text/javascript; charset=utf-8',
  'main.js.map': 'application/json',
  'style.css': 'text/css; charset=utf-8',
};

export function doctorPage(options: { dir?: string; oidc?: DoctorOidc } = {}): FastifyPluginAsync {
  const dir = options.dir ?? DOCTOR_DIST;
  const csp = pageCsp(options.oidc);
  // What the page asks first: whether (and where) doctors may sign in with the hospital's provider.
  const config = JSON.stringify({ oidc: options.oidc ?? null });
  return async (app: FastifyInstance) => {
    app.get(`${DOCTOR_PREFIX}/config.json`, async (_request, reply) =>
      reply.headers({ 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' }).type('application/json').send(config),
    );
    app.get(DOCTOR_PREFIX, async (_request, reply) => reply.redirect(`${DOCTOR_PREFIX}/`));
    const serve = async (file: string, reply: FastifyReply) => {
      const type = FILES[file];
      if (type === undefined) throw new VaultError('NOT_FOUND', `no file ${DOCTOR_PREFIX}/${file}`);
      const path = join(dir, file);
      if (!existsSync(path)) throw new VaultError('NOT_FOUND', `the doctor's page is not built: run \`npm run build:web\``);
      return reply
        .headers({
          'content-security-policy': csp,
          'x-content-type-options': 'nosniff',
          'referrer-policy': 'no-referrer',
          'cross-origin-opener-policy': 'same-origin',
          'cache-control': 'no-cache',
        })
        .type(type)
        .send(readFileSync(path));
    };
    app.get(`${DOCTOR_PREFIX}/`, async (_request, reply) => serve('index.html', reply));
    app.get(`${DOCTOR_PREFIX}/:file`, async (request, reply) => serve((request.params as { file: string }).file, reply));
  };
}
