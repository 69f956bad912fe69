// The doctor's DICOM viewer at /viewer/: the OHIF Viewer's prebuilt release (installed by
// bin/ohif-viewer.js at install time into .cache/; never fetched at run time), configured for this
// node. Served as files, except three made here:
// - index.html: the release's, with its inline scripts removed (the CSP allows none), its paths
//   under /viewer/, its service worker left out, and our boot script (viewer/boot.js: the bearer
//   token on every DICOMweb request, the banner when access ends) loaded before OHIF's bundle;
// - app-config.js: one DICOMweb data source, this node's, with what its QIDO and WADO support;
// - boot.js and viewer.css of ours.
// Hand-written rather than @fastify/static: a handful of lines for files of a read-only folder,
// against a new dependency (and @fastify/static's send() serves no generated files anyway).
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { extname, join, normalize, sep } from 'node:path';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify';
import { VaultError } from '../core/errors.ts';
import { DICOMWEB_PREFIX } from './config.ts';

/** The pinned release (the one place that names it; bin/ohif-viewer.js reads it too). */
const release: { version: string; integrity: string; dir: string; extraction: number } = JSON.parse(
  readFileSync(new URL('./viewer/ohif-release.json', import.meta.url), 'utf8'),
);
export const VIEWER_PREFIX = '/viewer';
/** Where the install step puts the release (relative to the repository). */
export const VIEWER_DIR = join(import.meta.dirname, '..', '..', release.dir);
/** The page where doctors sign in and pick a study. */
export const DOCTOR_PATH = '/doctor/';
/** The grantee's own grants (src/shell/api/grantee.ts): what boot.js asks when a request fails. */
export const GRANTEE_GRANTS_PATH = '/api/grantee/grants';
const MARKER = '.dicom-vault-release.json';

/**
 * What OHIF needs beyond 'self', each for a reason:
 * - script-src 'wasm-unsafe-eval': its image codecs for compressed transfer syntaxes (OpenJPEG,
 *   CharLS, libjpeg-turbo, HTJ2K) are WebAssembly, and compiling WebAssembly needs it. No
 *   'unsafe-eval' and no inline script on the page (its workers: VIEWER_WORKER_CSP).
 * - style-src 'unsafe-inline': OHIF's UI injects <style> elements at run time (without it Chromium
 *   refuses three of them and the layout breaks; measured by the browser test).
 * - workers: 'self' only; none starts from a blob: URL in this release (the browser test reports
 *   every CSP violation on the viewer and expects none).
 * - img-src/font-src data: blob:: icons and fonts inlined by its bundler, canvases exported as blobs.
 * Cross-origin isolation (COOP + COEP) lets OHIF use SharedArrayBuffer for volumes; everything is
 * same-origin, so require-corp costs nothing.
 */
export const VIEWER_CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "worker-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "media-src 'self' blob:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * The policy of OHIF's workers (a dedicated worker runs under the CSP of its own script's response,
 * not its page's): the image decoders are Emscripten builds whose glue code makes functions from
 * strings (embind), so a worker also needs 'unsafe-eval'. Without it every compressed image (JPEG
 * 2000, JPEG-LS, JPEG) fails to decode. Only workers get it: they have no DOM to inject into, and
 * they reach nothing beyond this origin (connect-src 'self'). Browsers say what a request is for
 * (Sec-Fetch-Dest: worker), and the answer varies on it.
 */
export const VIEWER_WORKER_CSP = VIEWER_CSP.replace("script-src 'self' 'wasm-unsafe-eval'", "script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval'");

const SECURITY_HEADERS = {
  'content-security-policy': VIEWER_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
};

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.ttf': 'font/ttf',
  '.xml': 'application/xml',
  '.map': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
};

export interface ViewerOptions {
  /** The extracted release. Default VIEWER_DIR. */
  dir?: string;
}

/** Throws CONFIG_INVALID naming the fix when the release is not installed (a start error, not a 404 later). */
export function checkViewerInstalled(dir = VIEWER_DIR): void {
  let marker: { version?: string; integrity?: string; publicPath?: string; extraction?: number } | undefined;
  try {
    marker = JSON.parse(readFileSync(join(dir, MARKER), 'utf8'));
  } catch {}
  if (
    marker?.version !== release.version ||
    marker.integrity !== release.integrity ||
    marker.publicPath !== `${VIEWER_PREFIX}/` ||
    marker.extraction !== release.extraction
  ) {
    throw new VaultError(
      'CONFIG_INVALID',
      `the OHIF Viewer ${release.version} (the doctor's viewer at ${VIEWER_PREFIX}/) is not installed in ${dir}: run \`npm ci\` or \`node bin/postinstall.js\` with the npm registry reachable`,
    );
  }
}

/** OHIF's window.config for this node: one DICOMweb data source, the node's, on this origin. */
export function appConfig(): string {
  const root = DICOMWEB_PREFIX;
  const config = {
    name: 'dicom-vault',
    routerBasename: VIEWER_PREFIX,
    extensions: [],
    modes: [],
    customizationService: {},
    // /doctor/ is the study list: it shows each study with the grant that opens it.
    showStudyList: false,
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
    showErrorDetails: 'always',
    defaultDataSourceName: 'dicom-vault',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'dicom-vault',
        configuration: {
          friendlyName: 'dicom-vault',
          name: 'dicom-vault',
          // Same origin, relative roots: the page and the DICOMweb services are one node.
          wadoUriRoot: root,
          qidoRoot: root,
          wadoRoot: root,
          // src/shell/dicomweb/qido.ts: includefield is honoured, fuzzymatching accepted and
          // ignored, * and ? wildcards matched.
          qidoSupportsIncludeField: true,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          supportsReject: false,
          imageRendering: 'wadors',
          // The node renders thumbnails itself (src/shell/dicomweb/rendered.ts).
          thumbnailRendering: 'thumbnail',
          enableStudyLazyLoad: true,
          staticWado: false,
          singlepart: false,
          bulkDataURI: { enabled: true, relativeResolution: 'studies' },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
  };
  return `// Made by dicom-vault (src/shell/viewer.ts) for this node.\nwindow.config = ${JSON.stringify(config, null, 2)};\n`;
}

/** The release's index.html made fit for a strict CSP under /viewer/. */
export function viewerIndex(html: string): string {
  const boot =
    `<link href="${VIEWER_PREFIX}/dicom-vault/viewer.css" rel="stylesheet">` +
    `<script src="${VIEWER_PREFIX}/dicom-vault/boot.js" data-public-url="${VIEWER_PREFIX}/" data-dicomweb="${DICOMWEB_PREFIX}" ` +
    `data-grants="${GRANTEE_GRANTS_PATH}" data-doctor="${DOCTOR_PATH}"></script>` +
    `<script src="${VIEWER_PREFIX}/app-config.js"></script>`;
  let out = html
    // Inline scripts (window.PUBLIC_URL, browserImportFunction, console.time): boot.js does their work.
    .replace(/<script>[^<]*<\/script>/g, '')
    // The service worker: it would cache patient images beyond the grant; the release unregisters it anyway.
    .replace(/<script[^>]*init-service-worker\.js[^>]*><\/script>/g, '')
    .replace(/<script[^>]*app-config\.js[^>]*><\/script>/g, '')
    .replace(/(href|src)="\/(?!\/)/g, `$1="${VIEWER_PREFIX}/`)
    .replace('<title>OHIF Viewer</title>', '<title>Viewer · dicom-vault</title>');
  const at = out.indexOf('<script defer');
  if (at < 0) throw new VaultError('CONFIG_INVALID', "the OHIF Viewer's index.html has no bundle script: is the release the pinned one?");
  out = `${out.slice(0, at)}${boot}${out.slice(at)}`;
  return out;
}

export function viewer(options: ViewerOptions = {}): FastifyPluginAsync {
  const dir = options.dir ?? VIEWER_DIR;
  checkViewerInstalled(dir);
  const index = viewerIndex(readFileSync(join(dir, 'index.html'), 'utf8'));
  const config = appConfig();
  const ours: Record<string, { body: Buffer; type: string }> = {
    'dicom-vault/boot.js': { body: readFileSync(new URL('./viewer/boot.js', import.meta.url)), type: TYPES['.js']! },
    'dicom-vault/viewer.css': { body: readFileSync(new URL('./viewer/viewer.css', import.meta.url)), type: TYPES['.css']! },
    'app-config.js': { body: Buffer.from(config), type: TYPES['.js']! },
  };

  const sendIndex = (reply: FastifyReply) =>
    reply
      .headers({ ...SECURITY_HEADERS, 'cache-control': 'no-store' })
      .type(TYPES['.html']!)
      .send(index);

  return async (app: FastifyInstance) => {
    app.get(VIEWER_PREFIX, async (_request, reply) => reply.redirect(`${VIEWER_PREFIX}/`));
    // /viewer/?StudyInstanceUIDs=... is the link the doctor's page gives; OHIF's route for one
    // study is its mode's, /viewer/viewer?StudyInstanceUIDs=...
    app.get(`${VIEWER_PREFIX}/`, async (request, reply) => {
      const query = request.url.includes('?') ? request.url.slice(request.url.indexOf('?')) : '';
      if (!new URLSearchParams(query).has('StudyInstanceUIDs')) return reply.redirect(DOCTOR_PATH);
      return reply.redirect(`${VIEWER_PREFIX}/viewer${query}`);
    });
    app.get(`${VIEWER_PREFIX}/*`, async (request, reply) => {
      const rel = (request.params as { '*': string })['*'];
      const generated = ours[rel];
      if (generated !== undefined)
        return reply
          .headers({ ...SECURITY_HEADERS, 'cache-control': 'no-cache' })
          .type(generated.type)
          .send(generated.body);
      const path = normalize(join(dir, rel));
      const type = TYPES[extname(rel)];
      if (path.startsWith(dir + sep) && type !== undefined && rel !== 'index.html' && !rel.startsWith('.') && existsSync(path) && statSync(path).isFile()) {
        // Bundles carry a content hash in their names: cached for good; the rest revalidated.
        const immutable = /\.[0-9a-f]{16}\.(js|wasm|woff2)$|^[0-9a-f]{16}\.(wasm|woff2)$/.test(rel);
        const worker = request.headers['sec-fetch-dest'] === 'worker';
        return reply
          .headers({
            ...SECURITY_HEADERS,
            ...(worker ? { 'content-security-policy': VIEWER_WORKER_CSP } : {}),
            vary: 'sec-fetch-dest',
            'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
          })
          .type(type)
          .send(createReadStream(path));
      }
      // OHIF's client-side routes (/viewer/viewer, ...): its page; files that do not exist: 404.
      if (extname(rel) === '') return sendIndex(reply);
      throw new VaultError('NOT_FOUND', `no file ${VIEWER_PREFIX}/${rel}`);
    });
  };
}
