// The pages' serving plugin on its own (src/shell/web.ts) and the build's inline-code check
// (src/web/build.ts): a missing or stale bundle stops the start naming the command that fixes it;
// plain HTTP from the network is sent to the https public URL when there is one; the CSRF guard's
// rules; an index.html with inline code does not build. Fastify's inject, no sockets.
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { csrfGuard, loadBundle, webPages } from '../../../src/shell/web.ts';
import { inlineCodeIn } from '../../../src/web/build.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A source tree and a built bundle of page `p`, the bundle `age` ms older (negative: newer) than the sources. */
function tree(age: number): { src: string; dist: string } {
  const root = mkdtempSync(join(tmpdir(), 'dv-web-'));
  dirs.push(root);
  const src = join(root, 'src');
  const dist = join(root, 'dist');
  mkdirSync(join(src, 'p'), { recursive: true });
  mkdirSync(join(dist, 'p'), { recursive: true });
  writeFileSync(join(src, 'p', 'main.ts'), 'export {};\n');
  writeFileSync(join(dist, 'p', 'main.js'), 'console.log(1);\n');
  writeFileSync(join(dist, 'p', 'index.html'), '<!doctype html><title>p</title>');
  const now = Date.now() / 1000;
  utimesSync(join(src, 'p', 'main.ts'), now, now);
  utimesSync(join(dist, 'p', 'main.js'), now - age / 1000, now - age / 1000);
  return { src, dist };
}

describe('the pages a node serves', () => {
  it('a missing bundle stops the start, naming npm run build:web', () => {
    const { src, dist } = tree(-10_000);
    expect(() => loadBundle('q', dist, src)).toThrow(/not built .*run `npm run build:web`/);
  });

  it('a bundle older than its sources stops the start, naming npm run build:web', () => {
    const { src, dist } = tree(60_000);
    expect(() => loadBundle('p', dist, src)).toThrow(/older than its sources .*`npm run build:web`/);
    const fresh = tree(-10_000);
    expect([...loadBundle('p', fresh.dist, fresh.src).keys()].sort()).toEqual(['index.html', 'main.js']);
  });

  it('plain HTTP from the network goes to the https public URL; over a secure transport the page comes with its headers', async () => {
    const { src, dist } = tree(-10_000);
    for (const secure of [false, true]) {
      const app = Fastify();
      await app.register(
        webPages({ mounts: [{ path: '/p', page: 'p' }], distDir: dist, sourceDir: src, secureTransport: () => secure, publicUrl: 'https://vault.example/' }),
      );
      const res = await app.inject({ url: '/web/p/main.js' });
      if (!secure) {
        expect(res.statusCode).toBe(308);
        expect(res.headers.location).toBe('https://vault.example/web/p/main.js');
      } else {
        expect(res.statusCode).toBe(200);
        expect(res.headers['content-type']).toBe('text/javascript; charset=utf-8');
        expect(res.headers['content-security-policy']).toMatch(/script-src 'self'/);
        expect((await app.inject({ url: '/p' })).body).toContain('<title>p</title>');
        expect((await app.inject({ url: '/web/p/..%2f..%2fetc%2fpasswd' })).statusCode).toBe(404);
      }
      await app.close();
    }
  });

  it('the CSRF guard refuses state changes another origin asks for, and lets the same origin, safe methods and non-browsers through', async () => {
    const app = Fastify();
    app.addHook('onRequest', csrfGuard('https://vault.example'));
    app.post('/api/x', async () => ({ ok: true }));
    app.post('/dicom-web/studies', async () => ({ ok: true }));
    app.get('/api/x', async () => ({ ok: true }));
    const post = (headers: Record<string, string>) => app.inject({ method: 'POST', url: '/api/x', headers: { host: 'vault.internal:8080', ...headers } });
    expect((await post({ origin: 'https://evil.example' })).statusCode).toBe(403);
    expect((await post({ 'sec-fetch-site': 'same-site' })).statusCode).toBe(403);
    expect((await post({ origin: 'null' })).statusCode).toBe(403);
    expect((await post({ origin: 'https://vault.example', 'sec-fetch-site': 'same-origin' })).statusCode).toBe(200);
    expect((await post({ origin: 'http://vault.internal:8080' })).statusCode).toBe(200);
    expect((await post({})).statusCode).toBe(200);
    const stow = (headers: Record<string, string>) =>
      app.inject({ method: 'POST', url: '/dicom-web/studies', headers: { host: 'vault.internal:8080', ...headers } });
    expect((await stow({ 'sec-fetch-site': 'cross-site' })).statusCode).toBe(403);
    expect((await stow({})).statusCode).toBe(200);
    expect((await app.inject({ url: '/api/x', headers: { origin: 'https://evil.example' } })).statusCode).toBe(200);
    await app.close();
  });

  it('the build refuses an index.html with inline code, which the CSP would refuse at run time', () => {
    expect(inlineCodeIn('<script type="module" src="/web/p/main.js"></script><link rel="stylesheet" href="x.css">')).toEqual([]);
    expect(inlineCodeIn('<script>alert(1)</script>')).toEqual(['an inline <script>']);
    expect(inlineCodeIn('<style>p{}</style><p style="color:red" onclick="x()">')).toEqual([
      'a <style> element',
      'a style attribute',
      'an inline event handler',
    ]);
  });
});
