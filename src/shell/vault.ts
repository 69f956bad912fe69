// Opens a data directory: block store, catalog, keys, and the study writer, wired together. The
// server, the CLI and the tests all go through here, so every entry uses the same parts.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { createLogger } from './log.ts';
import { Catalog } from '../catalog/catalog.ts';
import type { NodeOptions } from './config.ts';
import { KeyStore, KEY_DB_FILE, MASTER_KEY_FILE, loadOrCreateMasterKey } from '../format/keys.ts';
import { openBlockStore, resolveBlockStoreConfig } from '../../storage/open.ts';
import type { BlockStore } from '../../storage/block-store.ts';
import { StudyWriter } from '../../ingest/study.ts';

export const CATALOG_FILE = 'catalog.db';
export const BLOCKS_DIR = 'blocks';

export interface Vault {
  options: Pick<NodeOptions, 'dataDir' | 'chunkSize' | 'store'>;
  store: BlockStore;
  catalog: Catalog;
  keys: KeyStore;
  writer: StudyWriter;
  logger: Logger;
  close(): Promise<void>;
}

export async function openVault(
  options: Pick<NodeOptions, 'dataDir' | 'chunkSize' | 'store'> & Partial<Pick<NodeOptions, 'blockStore'>>,
  logger: Logger = createLogger('silent'),
): Promise<Vault> {
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const masterKey = loadOrCreateMasterKey(join(options.dataDir, MASTER_KEY_FILE));
  const keys = KeyStore.open({ path: join(options.dataDir, KEY_DB_FILE), masterKey });
  const catalog = Catalog.open({ path: join(options.dataDir, CATALOG_FILE) });
  let store: BlockStore;
  try {
    store = await openBlockStore(options.blockStore ?? resolveBlockStoreConfig(options.store, options.dataDir));
  } catch (err) {
    catalog.close();
    keys.close();
    throw err;
  }
  const writer = new StudyWriter({ store, catalog, keys });
  return {
    options,
    store,
    catalog,
    keys,
    writer,
    logger,
    async close() {
      await store.close?.();
      catalog.close();
      keys.close();
    },
  };
}
