import { readFileSync } from 'node:fs';
import satisfies from 'semver/functions/satisfies.js';
import { defineConfig } from 'vitest/config';

// The project runs on the Node pinned in devDependencies (npm scripts put it first on PATH).
// Refuse to run on a Node older than package.json's `engines.node` (the one place that states the
// minimum), such as the system's when node_modules/.bin is not on PATH, rather than fail later in
// confusing ways.
const wanted: string = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')).engines.node;
if (!satisfies(process.version, wanted)) {
  throw new Error(`dicom-vault tests need Node ${wanted} (got ${process.version}); run them with \`npm test\` after \`npm ci\``);
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // One anvil for the whole run, shared by the anchor suites (test/support/anvil.ts).
    globalSetup: ['test/support/global-setup.ts'],
    // Spawned `dicom-vault serve` processes would each start the embedded chain on port 8545;
    // the anchor suites use the run's shared chain (or a private one) and turn anchoring on where
    // they test it.
    env: { DICOM_VAULT_CHAIN: 'none' },
  },
});
