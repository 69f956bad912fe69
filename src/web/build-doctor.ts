// A minimal build of the doctor's page (src/web/doctor/): main.ts bundled with rolldown into
// <out>/doctor/main.js, beside its index.html and style.css. It stands in for the project's web
// build (src/web/build.ts, every src/web/<name>/main.ts into a git-ignored dist), which lands from
// another branch: when it does, this file goes, and the doctor's page is one of its entries.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'rolldown';

/** Where the built pages go (git-ignored), one folder per page. */
export const WEB_DIST = join(import.meta.dirname, '..', '..', '.cache', 'web');

export async function buildDoctorPage(out = WEB_DIST): Promise<string> {
  const src = join(import.meta.dirname, 'doctor');
  const dir = join(out, 'doctor');
  mkdirSync(dir, { recursive: true });
  await build({
    input: join(src, 'main.ts'),
    platform: 'browser',
    output: { file: join(dir, 'main.js'), format: 'esm', minify: true, sourcemap: true },
    logLevel: 'warn',
  });
  for (const file of ['index.html', 'style.css']) copyFileSync(join(src, file), join(dir, file));
  return dir;
}

if (import.meta.main) process.stdout.write(`${await buildDoctorPage()}\n`);
