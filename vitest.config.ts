import { defineConfig } from 'vitest/config';

// The project runs on the Node pinned in devDependencies (npm scripts put it first on PATH).
// Refuse to run on anything older rather than fail later in confusing ways.
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  throw new Error(`dicom-vault tests need Node >= 22 (got ${process.version}); run them with \`npm test\` after \`npm ci\``);
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
