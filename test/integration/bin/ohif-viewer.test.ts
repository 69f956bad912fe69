// The install step of the doctor's viewer (bin/ohif-viewer.js) against a tarball of the same shape
// as @ohif/app's, made here with GNU tar and served over loopback HTTP: only package/dist/ is
// extracted (long names too), webpack's public path is rewritten, a second install fetches nothing
// (offline too), a tarball that does not match its integrity is refused and nothing is left; and
// the node refuses to start without the release, naming the fix.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installViewer } from '../../../bin/ohif-viewer.js';
import { checkViewerInstalled } from '../../../src/shell/viewer.ts';

const LONG = `${'deep/'.repeat(25)}codec.wasm`; // past ustar's 100-character name field

describe('installing the OHIF Viewer release', () => {
  let work: string;
  let server: Server;
  let tarball: Buffer;
  let url: string;
  let requests = 0;
  const integrity = () => `sha512-${createHash('sha512').update(tarball).digest('base64')}`;
  const release = (over: Record<string, string> = {}) => ({ version: '9.9.9', tarball: url, integrity: integrity(), publicPath: '/viewer/', ...over });
  const quiet = () => {};

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-ohif-install-'));
    const src = join(work, 'src');
    mkdirSync(join(src, 'package', 'dist', ...LONG.split('/').slice(0, -1)), { recursive: true });
    writeFileSync(join(src, 'package', 'package.json'), '{"name":"@ohif/app"}');
    writeFileSync(join(src, 'package', 'README.md'), 'not extracted');
    writeFileSync(join(src, 'package', 'dist', 'index.html'), '<!doctype html><script defer src="/app.bundle.js"></script>');
    writeFileSync(join(src, 'package', 'dist', 'app.bundle.js'), '(() => {\n__webpack_require__.p = "/";\n})();\n');
    writeFileSync(join(src, 'package', 'dist', 'app.bundle.css'), '@font-face{src:url(/a34f.woff2) format("woff2")}');
    writeFileSync(join(src, 'package', 'dist', LONG), Buffer.from([0, 97, 115, 109, 1, 0, 0, 0]));
    execFileSync('tar', ['--format=pax', '-czf', join(work, 'app.tgz'), '-C', src, 'package']);
    tarball = readFileSync(join(work, 'app.tgz'));
    server = createServer((_req, res) => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(tarball);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/app.tgz`;
  });
  afterAll(async () => {
    if (server.listening) await new Promise((resolve) => server.close(resolve));
    await rm(work, { recursive: true, force: true });
  });

  it('extracts dist/ only, long names included, with the public path under /viewer/; then fetches nothing, offline too', async () => {
    const dir = join(work, 'cache', 'ohif');
    expect(await installViewer({ release: release(), viewerDir: dir, log: quiet })).toBe('installed');
    expect(requests).toBe(1);
    expect(readFileSync(join(dir, 'index.html'), 'utf8')).toContain('app.bundle.js');
    expect(readFileSync(join(dir, 'app.bundle.js'), 'utf8')).toContain('__webpack_require__.p = "/viewer/";');
    expect(readFileSync(join(dir, 'app.bundle.css'), 'utf8')).toBe('@font-face{src:url(/viewer/a34f.woff2) format("woff2")}');
    expect([...readFileSync(join(dir, LONG))]).toEqual([0, 97, 115, 109, 1, 0, 0, 0]);
    expect(existsSync(join(dir, 'README.md')) || existsSync(join(dir, 'package.json'))).toBe(false);
    expect(JSON.parse(readFileSync(join(dir, '.dicom-vault-release.json'), 'utf8'))).toMatchObject({ version: '9.9.9', integrity: integrity(), files: 4 });

    expect(await installViewer({ release: release(), viewerDir: dir, log: quiet })).toBe('present');
    expect(requests).toBe(1);
    await new Promise((resolve) => server.close(resolve));
    expect(await installViewer({ release: release({ tarball: 'http://127.0.0.1:9/gone.tgz' }), viewerDir: dir, log: quiet })).toBe('present');
  });

  it('refuses a tarball that does not match its integrity, and leaves nothing', async () => {
    const other = `sha512-${createHash('sha512').update('something else').digest('base64')}`;
    const dir = join(work, 'cache', 'bad');
    const file = join(work, 'served.tgz');
    writeFileSync(file, tarball);
    // The first test closed its server: the same bytes from another one.
    const again = createServer((_req, res) => res.writeHead(200).end(readFileSync(file)));
    await new Promise<void>((resolve) => again.listen(0, '127.0.0.1', resolve));
    try {
      const tarballUrl = `http://127.0.0.1:${(again.address() as AddressInfo).port}/app.tgz`;
      await expect(installViewer({ release: release({ tarball: tarballUrl, integrity: other }), viewerDir: dir, log: quiet })).rejects.toThrow(
        /integrity is sha512-.*, not the pinned sha512-.*: refused/,
      );
      await expect(installViewer({ release: release({ tarball: tarballUrl, integrity: other }), viewerDir: dir, log: quiet })).rejects.toMatchObject({
        refused: true,
      });
      expect(existsSync(dir)).toBe(false);
      expect(existsSync(`${dir}.partial`)).toBe(false);
    } finally {
      await new Promise((resolve) => again.close(resolve));
    }
  });

  it('the node does not start without the release, and says how to install it', () => {
    const empty = join(work, 'empty');
    mkdirSync(empty);
    expect(() => checkViewerInstalled(empty)).toThrow(/the OHIF Viewer 3\.13\.2 .* is not installed in .*: run `npm ci` or `node bin\/postinstall\.js`/);
  });
});
