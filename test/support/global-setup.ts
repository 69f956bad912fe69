// vitest globalSetup: one real local EVM node (anvil) for the whole test run, as viem's
// test/setup.global.ts does. Suites reach it through `inject('anvil')` (test/support/anvil.ts);
// each deploys its own contract and signs with its own accounts on it. A suite that stops,
// rewinds or stalls its chain (outage, reorg, automine off) starts a private one instead.
//
// anvil listens on a port it picks (never 8545, which `npm start`'s embedded chain uses); its
// chain id is anvil's default, so the receipts the suites check name chain 31337.
import type { TestProject } from 'vitest/node';
import { ANVIL_CHAIN_ID, resolveAnvilBinary, startAnvil } from '../../anchor/anvil.ts';
import { loadBundles } from '../../src/shell/web.ts';
import { buildWeb } from '../../src/web/build.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The run's shared chain; null where no anvil binary exists (the anchor suites then fail saying so). */
    anvil: { rpcUrl: string; chainId: number } | null;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // Every node serves the browser pages and refuses to start without their bundle (or with one
  // older than src/web): built once here when so, as `npm run build:web` would (under a second).
  try {
    loadBundles();
  } catch {
    await buildWeb();
  }
  // Only the anchor suites need a chain: a machine without anvil still runs every other suite.
  if (resolveAnvilBinary() === undefined) {
    project.provide('anvil', null);
    return async () => undefined;
  }
  const anvil = await startAnvil({ port: 0, chainId: ANVIL_CHAIN_ID });
  project.provide('anvil', { rpcUrl: anvil.rpcUrl, chainId: ANVIL_CHAIN_ID });
  return () => anvil.stop();
}
