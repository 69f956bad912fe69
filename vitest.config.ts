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

// Three projects: pure units (no servers, no processes of ours), integration suites against real
// servers and processes, and the benchmark's own tests beside the benchmark.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Spawned `dicom-vault serve` processes would each start the embedded chain on port 8545;
    // the anchor suites use the run's shared chain (or a private one) and turn anchoring on where
    // they test it.
    // The same for the DIMSE SCP's default port.
    env: { DICOM_VAULT_CHAIN: 'none', DICOM_VAULT_DIMSE_PORT: 'off' },
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // One anvil for the whole run, shared by the anchor suites (test/support/anvil.ts).
          globalSetup: ['test/support/global-setup.ts'],
          // Every node runs with identity on; requests to it carry its test token (test/support/auth.ts).
          setupFiles: ['test/support/auth-setup.ts'],
        },
      },
      { extends: true, test: { name: 'bench', include: ['bench/test/**/*.test.ts'] } },
    ],
  },
});
