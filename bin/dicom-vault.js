#!/usr/bin/env node
// Entry point of the `dicom-vault` command. The node is TypeScript run by Node's own type
// stripping (Node >= 22.18), so it needs the Node pinned in devDependencies (npm package `node`).
// Started by a bare older Node (a global install, a PATH without node_modules/.bin), re-run
// ourselves on the pinned one instead of failing later with an obscure syntax or API error.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const MIN_MAJOR = 22;
const major = Number(process.versions.node.split('.')[0]);
if (major < MIN_MAJOR) {
  const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    process.stderr.write(
      `dicom-vault needs Node >= ${MIN_MAJOR} (this is ${process.version}); run \`npm ci\` to install the pinned runtime.\n`,
    );
    process.exit(1);
  }
  const r = spawnSync(pinned, process.argv.slice(1), { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
await import('../src/cli.ts');
