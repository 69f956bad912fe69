// npm runs this after `npm ci` / `npm install` (package.json "postinstall"). It makes the install
// whole whatever Node runs npm itself, and refuses an install that would run the project on a Node
// older than package.json's `engines.node` (the one place that states the minimum).
//
// Why: npm checks an optional dependency's `engines` against the Node that runs npm, and silently
// leaves out the ones that do not match. Debian 12's npm 9.2 runs on Node 18.20, so it drops the
// native bindings that need a newer Node (rolldown's, under vitest -> vite 8, wants ^20.19 ||
// >=22.12; anvil's, >=20), although the project never runs them on that Node: npm scripts put
// node_modules/.bin first on PATH, where the devDependency `node` (the pinned runtime) lives. npm
// has no setting to check engines against another Node (npm 6's `node-version` is gone), and
// `--force` does not apply to optional dependencies. So when npm ran on an older Node than the
// project's and left packages out, the same npm runs once more, on the pinned Node: it then
// installs exactly the lockfile's packages that were left out (`--no-save`: package.json and the
// lockfile stay as they are; `--ignore-scripts`: nothing is built twice, and this script does not
// run again). Other ways considered: going back to vitest 4 (vite 7, no rolldown: an older major,
// and the next native optional dependency would meet the same), or asking users for
// `PATH=node_modules/.bin:$PATH npm ci` (a second, easy-to-miss command).
//
// Runs on whichever `node` npm's script PATH gives (the pinned one, or the system's when the pinned
// runtime failed to install), so it is plain JavaScript that any Node >= 18 loads.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import semver from 'semver';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const wanted = pkg.engines.node;

function fail(message) {
  process.stderr.write(`\ndicom-vault install: ${message}\n\n`);
  process.exit(1);
}

// 1. The Node that npm scripts (`npm start`, `npm test`) will run on is the one running this
//    script: the same PATH. Older than the minimum means the pinned runtime is missing and the
//    project would fall back to the system Node.
if (!semver.satisfies(process.version, wanted)) {
  fail(
    `npm scripts would run on Node ${process.version} (${process.execPath}), but dicom-vault needs Node ${wanted} ` +
      `(package.json "engines"). The pinned runtime, devDependency "node" ${pkg.devDependencies?.node}, is not installed ` +
      '(was it omitted, e.g. --omit=dev, or did its download fail?). Run `npm ci` again with the dev dependencies.',
  );
}

// 2. Every optional dependency of this platform that an installed package asks for is there.
//    npm treats a failed optional dependency (an engines mismatch, a download error) as a warning;
//    without this check, vitest or the embedded chain would fail much later with "Cannot find
//    native binding" or "no anvil binary". Only packages whose dependent is installed count, so
//    `--omit` needs no special case.
const libc = process.report?.getReport?.().header?.glibcVersionRuntime ? 'glibc' : 'musl';
const { packages } = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
const installed = (path) => path === '' || existsSync(join(root, path, 'package.json'));
/** Where Node's resolution finds `name` from the package at `from` (a lockfile path). */
function resolve(from, name) {
  for (let dir = from; ; dir = dir.slice(0, Math.max(0, dir.lastIndexOf('/node_modules/')))) {
    const path = `${dir ? `${dir}/` : ''}node_modules/${name}`;
    if (packages[path]) return path;
    if (!dir) return undefined;
  }
}
function leftOut() {
  const missing = new Set();
  for (const [from, entry] of Object.entries(packages)) {
    if (!installed(from)) continue;
    for (const name of Object.keys(entry.optionalDependencies ?? {})) {
      const path = resolve(from, name);
      const dep = path && packages[path];
      if (!dep) continue;
      if (dep.os && !dep.os.includes(process.platform)) continue;
      if (dep.cpu && !dep.cpu.includes(process.arch)) continue;
      if (dep.libc && !dep.libc.includes(libc)) continue;
      if (!installed(path)) missing.add(`${name}@${dep.version}`);
    }
  }
  return [...missing];
}

let missing = leftOut();

// 3. npm on an older Node than the project's left them out for their engines: run the same npm
//    on the pinned Node to add them.
const npmNode = process.env.npm_node_execpath;
const npmNodeVersion = npmNode && npmNode !== process.execPath ? execFileSync(npmNode, ['--version'], { encoding: 'utf8' }).trim() : process.version;
if (missing.length > 0 && !semver.satisfies(npmNodeVersion, wanted) && process.env.npm_execpath) {
  process.stderr.write(
    `dicom-vault install: npm ran on Node ${npmNodeVersion}, older than the project's ${wanted}, and left out ${missing.join(', ')}; ` +
      `installing them with the same npm on the pinned Node ${process.version}\n`,
  );
  const again = spawnSync(process.execPath, [process.env.npm_execpath, 'install', '--no-save', '--ignore-scripts', '--no-audit', '--no-fund'], {
    cwd: root,
    stdio: 'inherit',
  });
  if (again.status !== 0) fail(`completing the install on Node ${process.version} failed (exit ${again.status ?? again.signal})`);
  missing = leftOut();
}
if (missing.length > 0) {
  fail(
    `npm left out ${missing.join(', ')} (see its warnings above); run \`npm ci\` again, or \`PATH=node_modules/.bin:$PATH npm ci\` to run npm itself on the pinned Node.`,
  );
}

// 4. The pinned runtime's C headers (node_modules/node/node_modules/node-<os>-<arch>/include: 67 MB
//    of a 709 MB node_modules) serve only to build native addons, which this project has none of
//    and does not allow; node-gyp, should anyone run it, downloads its own. The `node` package
//    installs that runtime from its own install script, so its files are not in the lockfile.
const runtimes = join(root, 'node_modules', 'node', 'node_modules');
for (const name of existsSync(runtimes) ? readdirSync(runtimes) : []) {
  if (name.startsWith('node-') && existsSync(join(runtimes, name, 'include'))) rmSync(join(runtimes, name, 'include'), { recursive: true, force: true });
}

// 5. npm before 10.4 (Debian 12 ships 9.2) does not read the lockfile's `libc` field, so it installs
//    the optional native packages of both C libraries: Biome's and rolldown's musl builds beside the
//    glibc ones (116 MB). Those of the other C library are removed; nothing here can load them.
for (const [path, entry] of Object.entries(packages)) {
  if (entry.optional && entry.libc && !entry.libc.includes(libc) && path.startsWith('node_modules/') && installed(path)) {
    rmSync(join(root, path), { recursive: true, force: true });
  }
}

// 6. The browser pages (src/web/<name>/main.ts) bundled into src/web/dist with rolldown, now, offline:
//    the node serves only what was built here and fails to start, naming `npm run build:web`, without it.
//    A child process on this (the pinned) Node, which strips the build script's types.
const web = spawnSync(process.execPath, [join(root, 'src', 'web', 'build.ts')], { cwd: root, stdio: 'inherit' });
if (web.status !== 0) fail(`building the web pages failed (exit ${web.status ?? web.signal}); see above, then run \`npm run build:web\``);
// 7. The doctor's viewer: the OHIF Viewer's prebuilt release, fetched once and checked against its
//    pinned integrity (bin/ohif-viewer.js). A failed download does not fail the install (the tools
//    and tests that need no node still work; `npm start` refuses, naming the fix); a tarball that
//    does not match its integrity, or that this step cannot read, does.
try {
  // Imported here, not at the top: the checks above must run (and fail) even where it is absent.
  const { installViewer } = await import('./ohif-viewer.js');
  await installViewer();
} catch (err) {
  if (err.refused) fail(err.message);
  process.stderr.write(
    `\ndicom-vault install: the OHIF Viewer was not installed (${err.message}); the node will not start until it is: run \`node bin/postinstall.js\` again with the registry reachable.\n\n`,
  );
}
