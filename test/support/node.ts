// Starts a real node (real HTTP on a free loopback port, its own temp data dir) for a suite.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { AccessPolicy, AuditSink } from '../../src/access/policy.ts';
import { buildApp } from '../../src/shell/app.ts';
import { DICOMWEB_PREFIX, resolveNodeOptions, type FlagName } from '../../src/shell/config.ts';
import { startNode, type RunningNode } from '../../src/shell/server.ts';
import { openVault, type Vault } from '../../src/shell/vault.ts';
import { createLogger } from '../../src/shell/log.ts';
import { PatientControlPolicy } from '../../src/access/patient-control.ts';
import type { IdentityStore } from '../../src/identity/store.ts';
import { forgetToken, registerToken } from './auth.ts';
import { logAuditSink } from '../../src/shell/log.ts';
import type { BlockStore } from '../../storage/block-store.ts';

export interface TestNode extends RunningNode {
  dataDir: string;
  /** The token of the node's test account (every role); requests to the node carry it (auth.ts). */
  token: string;
  stop(): Promise<void>;
}

export interface TestNodeOptions {
  chunkSize?: number;
  /** Kept after stop() when given (restart tests). Default: a fresh temp dir, removed on stop(). */
  dataDir?: string;
  /** Default: silent (or TEST_LOG_LEVEL). Pass captureLogs().logger to assert on what is logged. */
  logger?: Logger;
  access?: AccessPolicy;
  audit?: AuditSink;
  /** More of the node's flags (config.ts), e.g. { 'public-url': ... }. */
  flags?: Partial<Record<FlagName, string>>;
}

/** The test account every test node gets: every role, so a suite not about rights is not stopped by them. */
export const TEST_USER = 'tester';

/** Adds the test account to a node's identity store and registers its token for `url`'s origin. */
export function enrollTester(identity: IdentityStore, url: string): string {
  const { token } =
    identity.user(TEST_USER) === undefined ? identity.addUser(TEST_USER, ['ingest', 'staff', 'admin']) : { token: identity.issueToken('user', TEST_USER) };
  registerToken(url, token);
  return token;
}

function testOptions(extra: TestNodeOptions, dataDir: string) {
  return resolveNodeOptions(
    {
      port: '0',
      'data-dir': dataDir,
      // The DIMSE SCP only where a suite asks for it (its default port would collide across suites).
      'dimse-port': 'off',
      ...(extra.chunkSize ? { 'chunk-size': String(extra.chunkSize) } : {}),
      ...extra.flags,
    },
    {},
  );
}

export async function startTestNode(extra: TestNodeOptions = {}): Promise<TestNode> {
  const dataDir = extra.dataDir ?? (await mkdtemp(join(tmpdir(), 'dicom-vault-test-')));
  const options = testOptions(extra, dataDir);
  const node = await startNode(options, extra.logger ?? createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'), {
    ...(extra.access ? { access: extra.access } : {}),
    ...(extra.audit ? { audit: extra.audit } : {}),
  });
  const token = enrollTester(node.vault.identity, node.url);
  return {
    ...node,
    dataDir,
    token,
    async stop() {
      forgetToken(node.url);
      await node.close();
      if (!extra.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** startNode, with the test account added and its token registered (for suites that start nodes with their own options). */
export async function startNodeWithTester(...args: Parameters<typeof startNode>): Promise<RunningNode> {
  const node = await startNode(...args);
  enrollTester(node.vault.identity, node.url);
  return node;
}

export interface TestApp {
  url: string;
  token: string;
  dataDir: string;
  vault: Vault;
  app: FastifyInstance;
  stop(): Promise<void>;
}

/**
 * The same app factory and vault as startTestNode, with the app's block store wrapped (to count
 * or fail reads). startNode does not take a store: a running node always uses its vault's.
 */
export async function startTestApp(extra: Omit<TestNodeOptions, 'dataDir'> & { wrapStore: (store: BlockStore) => BlockStore }): Promise<TestApp> {
  const dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-test-'));
  const options = testOptions(extra, dataDir);
  const logger = extra.logger ?? createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
  const vault = await openVault(options, logger);
  const app = buildApp({
    logger,
    store: extra.wrapStore(vault.store),
    keys: vault.keys,
    catalog: vault.catalog,
    writer: vault.writer,
    chunkSize: options.chunkSize,
    access: extra.access ?? new PatientControlPolicy({ identity: vault.identity, grants: vault.grants, secureTransport: () => true }),
    audit: extra.audit ?? logAuditSink(logger),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const url = `http://127.0.0.1:${port}${DICOMWEB_PREFIX}`;
  const token = enrollTester(vault.identity, url);
  return {
    url,
    token,
    dataDir,
    vault,
    app,
    async stop() {
      forgetToken(url);
      await app.close();
      await vault.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
