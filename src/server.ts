// `dicom-vault serve`: opens the data directory and serves DICOMweb until told to stop.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { logAuditSink, openPolicy } from './access.ts';
import { buildApp } from './app.ts';
import { DICOMWEB_PREFIX, type NodeOptions } from './config.ts';
import { createLogger, openVault, type Vault } from './vault.ts';

export interface RunningNode {
  vault: Vault;
  app: FastifyInstance;
  /** e.g. http://127.0.0.1:8080/dicom-web */
  url: string;
  close(): Promise<void>;
}

export async function startNode(options: NodeOptions, logger: Logger = createLogger(options.logLevel)): Promise<RunningNode> {
  const vault = await openVault(options, logger);
  const app = buildApp({
    logger,
    store: vault.store,
    keys: vault.keys,
    catalog: vault.catalog,
    writer: vault.writer,
    chunkSize: options.chunkSize,
    access: openPolicy,
    audit: logAuditSink(logger),
  });
  try {
    await app.listen({ host: options.host, port: options.port });
  } catch (err) {
    await vault.close();
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    vault,
    app,
    url: `http://${host}:${port}${DICOMWEB_PREFIX}`,
    async close() {
      await app.close();
      await vault.close();
    },
  };
}
