// Bundles the browser pages: every src/web/<name>/main.ts (or main.tsx) with rolldown, offline, at
// install (bin/postinstall.js) or by hand (`npm run build:web`), never while the node runs. Each page
// goes to src/web/dist/<name>/ (git-ignored, beside its sources so the node finds it without a
// setting): main.js (one ES module, minified, with its source map), style.css (src/web/common/base.css
// then the page's own style.css) and index.html (the page's, checked to hold no inline script or
// style: the Content-Security-Policy the node sends refuses them). A page added as
// src/web/<name>/main.ts is picked up with no change here; src/shell/web.ts serves it where it is mounted.
//
// Plain Node (type stripping), no DOM: this file is the node-side of src/web and is typechecked with
// the node's tsconfig; the pages are checked with src/web/tsconfig.json.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rolldown } from 'rolldown';

export const WEB_DIR = import.meta.dirname;
export const DIST_DIR = join(WEB_DIR, 'dist');
/** Folders of src/web that are no page. */
const NOT_PAGES = new Set(['common', 'dist']);

/** The pages: every folder of src/web with a main.ts or main.tsx. */
export function pageNames(): string[] {
  return readdirSync(WEB_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory() && !NOT_PAGES.has(d.name) && entryOf(d.name) !== undefined)
    .map((d) => d.name)
    .sort();
}

function entryOf(name: string): string | undefined {
  return ['main.ts', 'main.tsx'].map((f) => join(WEB_DIR, name, f)).find((p) => existsSync(p));
}

/** Inline scripts, inline event handlers and style attributes: what a strict CSP would refuse at run time, refused at build time. */
export function inlineCodeIn(html: string): string[] {
  const found: string[] = [];
  for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi))
    if (!/\bsrc\s*=/.test(m[1] ?? '') || (m[2] ?? '').trim() !== '') found.push('an inline <script>');
  if (/<style\b/i.test(html)) found.push('a <style> element');
  if (/\sstyle\s*=/i.test(html)) found.push('a style attribute');
  if (/\son[a-z]+\s*=/i.test(html)) found.push('an inline event handler');
  return found;
}

export async function buildPage(name: string): Promise<void> {
  const entry = entryOf(name);
  if (entry === undefined) throw new Error(`src/web/${name} has no main.ts or main.tsx`);
  const html = readFileSync(join(WEB_DIR, name, 'index.html'), 'utf8');
  const inline = inlineCodeIn(html);
  if (inline.length > 0) throw new Error(`src/web/${name}/index.html has ${inline.join(', ')}: the page's CSP allows neither; put it in main.ts or style.css`);
  // Written beside and renamed into place: a node starting meanwhile sees the old bundle or the new, whole.
  const out = join(DIST_DIR, `.${name}.tmp`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const bundle = await rolldown({ input: entry, platform: 'browser', logLevel: 'warn' });
  try {
    await bundle.write({ dir: out, format: 'esm', entryFileNames: 'main.js', chunkFileNames: '[name]-[hash].js', minify: true, sourcemap: true });
  } finally {
    await bundle.close();
  }
  const css = [join(WEB_DIR, 'common', 'base.css'), join(WEB_DIR, name, 'style.css')].filter((p) => existsSync(p)).map((p) => readFileSync(p, 'utf8'));
  writeFileSync(join(out, 'style.css'), css.join('\n'));
  writeFileSync(join(out, 'index.html'), html);
  const final = join(DIST_DIR, name);
  rmSync(final, { recursive: true, force: true });
  renameSync(out, final);
}

export async function buildWeb(names = pageNames()): Promise<{ name: string; bytes: number }[]> {
  mkdirSync(DIST_DIR, { recursive: true });
  const built: { name: string; bytes: number }[] = [];
  for (const name of names) {
    await buildPage(name);
    built.push({ name, bytes: statSync(join(DIST_DIR, name, 'main.js')).size });
  }
  return built;
}

if (import.meta.main) {
  const started = performance.now();
  const built = await buildWeb();
  process.stdout.write(
    `web: built ${built.map((b) => `${b.name} (${(b.bytes / 1024).toFixed(1)} KiB)`).join(', ')} into src/web/dist in ${Math.round(performance.now() - started)} ms\n`,
  );
}
