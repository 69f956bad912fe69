// The OHIF Viewer's prebuilt release for the doctor's viewer at /viewer/ (src/shell/viewer/): the
// `dist/` of the npm package @ohif/app, fetched at install time (bin/postinstall.js), never at run
// time. It is not an npm dependency: its own dependencies do not install from the registry, and
// the viewer needs none of them (dist/ is the whole built application). So the tarball alone is
// fetched, checked against the pinned sha512 integrity (src/shell/viewer/ohif-release.json, the one
// place that names the release), and only `package/dist/` is extracted.
//
// Where: <repo>/.cache/ohif-app-<version>/ (git-ignored), not under node_modules/: `npm ci` deletes
// node_modules, so an extraction there would be lost on every clean install and an offline
// re-install would have to fetch again and fail. Kept beside node_modules, a re-install finds it
// complete (its marker names the version, integrity and public path) and fetches nothing.
//
// A small tar reader of our own (ustar, pax and GNU long names, regular files and directories
// only) instead of the `tar` package: nothing in node_modules brings `tar`, and adding a
// dependency for one archive of known shape costs more than these 80 lines; Node's fetch, zlib and
// crypto do the rest. Plain JavaScript: it runs on whichever Node runs npm's scripts.
//
// The release is built for the site root: webpack's public path is the literal "/" in eight
// bundles (the app and its workers), and its stylesheet names its font at /. The node serves it
// under /viewer/, so those are rewritten on extraction (`__webpack_require__.p = "/"` and CSS
// `url(/`); everything else is byte for byte the release. `extraction` in the release file counts
// changes to this step: a different one extracts again.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { closeSync, openSync, writeSync } from 'node:fs';
import { dirname, join, normalize, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';

const root = join(import.meta.dirname, '..');
const defaultRelease = JSON.parse(readFileSync(join(root, 'src', 'shell', 'viewer', 'ohif-release.json'), 'utf8'));
const defaultDir = join(root, defaultRelease.dir);
export const MARKER = '.dicom-vault-release.json';
const PUBLIC_PATH_FROM = '__webpack_require__.p = "/";';

/** An archive refused for what it is (not for a failed download): the install must fail. */
function refused(message) {
  return Object.assign(new Error(message), { refused: true });
}

/** The marker an extraction writes last: present and matching means complete. */
function markerOk(release, viewerDir) {
  try {
    const marker = JSON.parse(readFileSync(join(viewerDir, MARKER), 'utf8'));
    return (
      marker.version === release.version &&
      marker.integrity === release.integrity &&
      marker.publicPath === release.publicPath &&
      marker.extraction === release.extraction
    );
  } catch {
    return false;
  }
}

/**
 * Makes sure the viewer is extracted; returns what it did ('present' or 'installed'). Throws on an
 * integrity mismatch or a malformed archive; a failed download is thrown as well (the caller
 * decides whether to go on). The options are for tests: another release (tarball, integrity), dir.
 */
export async function installViewer({ release = defaultRelease, viewerDir = defaultDir, log = (m) => process.stderr.write(`${m}\n`) } = {}) {
  if (markerOk(release, viewerDir)) return 'present';
  const parent = dirname(viewerDir);
  mkdirSync(parent, { recursive: true });
  const download = join(parent, `.${release.version}.tgz.partial`);
  const staging = `${viewerDir}.partial`;
  rmSync(staging, { recursive: true, force: true });
  try {
    log(`dicom-vault install: fetching the OHIF Viewer ${release.version} (${release.tarball})`);
    const res = await fetch(release.tarball);
    if (!res.ok || !res.body) throw new Error(`GET ${release.tarball}: ${res.status} ${res.statusText}`);
    const [algorithm, expected] = release.integrity.split(/-(.*)/s);
    const hash = createHash(algorithm);
    await pipeline(
      res.body,
      async function* (source) {
        for await (const chunk of source) {
          hash.update(chunk);
          yield chunk;
        }
      },
      createWriteStream(download),
    );
    const actual = hash.digest('base64');
    if (actual !== expected) throw refused(`the OHIF Viewer tarball's integrity is ${algorithm}-${actual}, not the pinned ${release.integrity}: refused`);
    const files = await extractDist(download, staging, release.publicPath);
    writeFileSync(
      join(staging, MARKER),
      `${JSON.stringify({ version: release.version, integrity: release.integrity, publicPath: release.publicPath, extraction: release.extraction, files }, null, 2)}\n`,
    );
    rmSync(viewerDir, { recursive: true, force: true });
    renameSync(staging, viewerDir);
    log(`dicom-vault install: the OHIF Viewer ${release.version} is in ${viewerDir} (${files} files)`);
    return 'installed';
  } finally {
    rmSync(download, { force: true });
    rmSync(staging, { recursive: true, force: true });
  }
}

/** Extracts `package/dist/**` of the gzipped tarball at `file` into `out`; returns the number of files. */
async function extractDist(file, out, publicPath) {
  mkdirSync(out, { recursive: true });
  let pending = Buffer.alloc(0);
  /** The current entry: its path under out (undefined: skipped), bytes left, padding after it. */
  let entry;
  let longName;
  let files = 0;
  const take = (n) => {
    const head = pending.subarray(0, n);
    pending = pending.subarray(n);
    return head;
  };
  const finish = () => {
    if (entry.fd !== undefined) closeSync(entry.fd);
    if (entry.parts) {
      let text = Buffer.concat(entry.parts).toString('utf8');
      if (entry.type === 'x') {
        // pax records: "<len> <key>=<value>\n"; only the path matters here.
        for (const m of text.matchAll(/^\d+ path=(.*)$/gm)) longName = m[1];
      } else if (entry.type === 'L') {
        longName = text.replace(/\0.*$/s, '');
      } else {
        text = entry.target.endsWith('.css')
          ? text.replaceAll('url(/', `url(${publicPath}`)
          : text.replace(PUBLIC_PATH_FROM, `__webpack_require__.p = ${JSON.stringify(publicPath)};`);
        writeFileSync(entry.target, text);
      }
    }
    entry = undefined;
  };
  for await (const chunk of createReadStream(file).pipe(createGunzip())) {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    for (;;) {
      if (entry !== undefined) {
        if (entry.left > 0) {
          if (pending.length === 0) break;
          const part = take(Math.min(entry.left, pending.length));
          entry.left -= part.length;
          if (entry.fd !== undefined) writeSync(entry.fd, part);
          else if (entry.parts) entry.parts.push(Buffer.from(part));
        }
        if (entry.left > 0) break;
        if (pending.length < entry.padding) break;
        take(entry.padding);
        finish();
        continue;
      }
      if (pending.length < 512) break;
      const header = take(512);
      if (header.every((b) => b === 0)) continue; // the two zero blocks at the end
      const field = (at, len) =>
        header
          .subarray(at, at + len)
          .toString('utf8')
          .replace(/\0.*$/s, '');
      const size = header[124] & 0x80 ? Number(header.readBigUInt64BE(128 + 4)) : Number.parseInt(field(124, 12).trim() || '0', 8);
      const type = String.fromCharCode(header[156] || 0x30);
      const prefix = field(257, 6) === 'ustar' ? field(345, 155) : '';
      const name = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
      if (type !== 'x' && type !== 'L' && type !== 'g') longName = undefined;
      entry = { left: size, padding: (512 - (size % 512)) % 512, type };
      if (type === 'x' || type === 'L') {
        entry.parts = [];
        continue;
      }
      const rel = normalize(name).split(sep).join('/');
      if (!rel.startsWith('package/dist/') || rel.includes('..')) continue; // outside dist/: skipped
      const target = join(out, rel.slice('package/dist/'.length));
      if (type === '5') {
        mkdirSync(target, { recursive: true });
      } else if (type === '0') {
        mkdirSync(dirname(target), { recursive: true });
        entry.target = target;
        files++;
        if (target.endsWith('.js') || target.endsWith('.css')) entry.parts = [];
        else entry.fd = openSync(target, 'w');
        if (size === 0) finish();
      } else {
        throw refused(`the OHIF Viewer tarball holds ${name} of tar type ${type}, which this reader does not extract`);
      }
    }
  }
  if (entry !== undefined) throw refused('the OHIF Viewer tarball ends inside an entry');
  if (!existsSync(join(out, 'index.html'))) throw refused('the OHIF Viewer tarball has no package/dist/index.html');
  return files;
}
