// Starts a real node (real HTTP on a free loopback port, its own temp data dir) for a suite.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveNodeOptions } from '../../src/config.ts';
import { startNode, type RunningNode } from '../../src/server.ts';
import { createLogger } from '../../src/vault.ts';

export interface TestNode extends RunningNode {
  dataDir: string;
  stop(): Promise<void>;
}

export async function startTestNode(extra: { chunkSize?: number; dataDir?: string } = {}): Promise<TestNode> {
  const dataDir = extra.dataDir ?? (await mkdtemp(join(tmpdir(), 'dicom-vault-test-')));
  const options = resolveNodeOptions(
    {
      port: '0',
      'data-dir': dataDir,
      ...(extra.chunkSize ? { 'chunk-size': String(extra.chunkSize) } : {}),
    },
    {},
  );
  const node = await startNode(options, createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'));
  return {
    ...node,
    dataDir,
    async stop() {
      await node.close();
      if (!extra.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
