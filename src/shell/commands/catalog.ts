// `dicom-vault catalog rebuild`: a lost or damaged catalog.db made again from the studies the block
// store holds, opened with the keys of keys.db, cross-checked with anchor.db
// (src/transfer/catalog-rebuild.ts says how the versions are chosen).
//
// The node's own opening (vault.ts) refuses a directory without its catalog (data-dir.ts), rightly
// for a start; this command opens only what it reads: the master key (checked against node.json),
// keys.db, the block store, anchor.db. It writes the new catalog beside the old one and renames it
// into place only once every study is in, so a rebuild that fails or is killed leaves the directory
// as it found it. A damaged catalog is moved aside, never deleted (its rows may still be of use).
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { Command } from 'commander';
import { openAnchorState } from '../../../anchor/anchoring.ts';
import { ANCHOR_DB_FILE, type AnchorState } from '../../../anchor/state.ts';
import type { BlockStore } from '../../../storage/block-store.ts';
import { openBlockStore } from '../../../storage/open.ts';
import { Catalog } from '../../catalog/catalog.ts';
import { VaultError } from '../../core/errors.ts';
import { isCorruption } from '../../core/sqlite.ts';
import { KEY_DB_FILE, KeyStore, MASTER_KEY_FILE } from '../../format/keys.ts';
import { type CatalogRebuildReport, rebuildCatalogFromStore } from '../../transfer/catalog-rebuild.ts';
import { CATALOG_FILE, masterKeyFingerprint, readIdentity } from '../data-dir.ts';
import { EXIT, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

/** SQLite's files of a database: the file, its write-ahead log and shared memory. */
const SQLITE_SUFFIXES = ['', '-wal', '-shm'] as const;

export function catalogCommands(program: Command, io: Io = stdio): void {
  const catalog = program.command('catalog').description('the catalog (catalog.db): the index of studies, versions and instances');
  withNodeFlags(
    catalog
      .command('rebuild')
      .description(
        'make catalog.db again from the studies in the block store (every study manifest, opened with keys.db, checked with anchor.db); ' +
          'a damaged catalog.db is moved aside first. Stop the node first.',
      )
      .option('--force', 'rebuild even though catalog.db opens and lists studies (it is moved aside, not deleted)')
      .option('--json', 'print the report as JSON'),
  ).action(async (opts: { force?: boolean; json?: boolean }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    const dir = options.dataDir;
    const masterKey = readMasterKey(dir);
    const catalogPath = join(dir, CATALOG_FILE);
    const existing = catalogState(catalogPath);
    if (existing.state === 'whole' && existing.studies > 0 && opts.force !== true) {
      throw new VaultError(
        'CONFIG_INVALID',
        `${catalogPath} opens and lists ${existing.studies} studies: nothing to rebuild (--force moves it aside and rebuilds it from the store)`,
      );
    }
    const keys = KeyStore.open({ path: join(dir, KEY_DB_FILE), masterKey });
    let store: BlockStore | undefined;
    let anchor: AnchorState | undefined;
    let built: Catalog | undefined;
    const partial = `${catalogPath}.rebuilding`;
    try {
      keys.checkMasterKey();
      store = await openBlockStore(options.blockStore);
      const list = store.list?.bind(store);
      if (list === undefined) throw new VaultError('CONFIG_INVALID', `the ${options.store} store cannot list its blocks`);
      // S3: packs a lost or older pack index does not know hold blocks too (manifests among them).
      const reindexed = await reindexIfS3(store);
      if (reindexed !== undefined && !opts.json) io.err(`pack index: ${reindexed} packs indexed that it lacked`);
      if (existsSync(join(dir, ANCHOR_DB_FILE))) anchor = openAnchorState(dir);
      for (const s of SQLITE_SUFFIXES) rmSync(`${partial}${s}`, { force: true }); // a rebuild killed before
      built = Catalog.open({ path: partial });
      const report = await rebuildCatalogFromStore({
        store: { get: store.get.bind(store), has: store.has.bind(store), list },
        catalog: built,
        keys,
        ...(anchor !== undefined ? { anchor: anchorLookup(anchor) } : {}),
        keyedStudies: keyedStudies(join(dir, KEY_DB_FILE)),
        ...(opts.json ? {} : { onStudy: (s) => io.err(`rebuilt ${s.studyInstanceUID}: ${s.versions} versions, ${s.instances} instances`) }),
      });
      built.close(); // checkpoints the WAL into the file: one file to rename
      built = undefined;
      const movedTo = existing.state === 'absent' ? undefined : moveAside(catalogPath, existing.state === 'damaged' ? 'damaged' : 'replaced');
      // SQLite leaves no WAL after a clean close; should one stay, it goes with its file.
      for (const s of SQLITE_SUFFIXES) if (existsSync(`${partial}${s}`)) renameSync(`${partial}${s}`, `${catalogPath}${s}`);
      syncDir(dir);
      if (opts.json) io.out(JSON.stringify({ movedAside: movedTo ?? null, ...report }, null, 2));
      else print(report, movedTo, existing.state, anchor !== undefined, io);
      process.exitCode = report.failed.length + report.anchoredMissing.length + report.damaged.length === 0 ? EXIT.OK : EXIT.PROBLEMS;
    } finally {
      built?.close();
      if (existsSync(partial)) for (const s of SQLITE_SUFFIXES) rmSync(`${partial}${s}`, { force: true });
      anchor?.close();
      await store?.close?.();
      keys.close();
    }
  });
}

/** The master key, present and the one node.json names (as the node checks it at start). */
function readMasterKey(dir: string): Buffer {
  const path = join(dir, MASTER_KEY_FILE);
  if (!existsSync(path))
    throw new VaultError('DATA_DIR_INCOMPLETE', `${path} is missing: without it no study can be opened, and no catalog rebuilt (restore it from your backup)`);
  if (!existsSync(join(dir, KEY_DB_FILE)))
    throw new VaultError(
      'DATA_DIR_INCOMPLETE',
      `${join(dir, KEY_DB_FILE)} is missing: without the study keys no study can be opened, and no catalog rebuilt (restore it from your backup)`,
    );
  const key = readFileSync(path);
  const identity = readIdentity(dir);
  if (identity !== undefined && identity.masterKeyFingerprint !== masterKeyFingerprint(key))
    throw new VaultError(
      'MASTER_KEY_MISMATCH',
      `${path} is not the key this data directory was written with (node.json names fingerprint ${identity.masterKeyFingerprint})`,
    );
  return key;
}

/** Whether catalog.db is absent, damaged (not a database, or no catalog), or whole (and how many studies it lists). */
function catalogState(path: string): { state: 'absent' } | { state: 'damaged'; reason: string } | { state: 'whole'; studies: number } {
  if (!existsSync(path)) return { state: 'absent' };
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const row = db.prepare('SELECT count(*) AS n FROM studies').get() as { n: number };
    return { state: 'whole', studies: row.n };
  } catch (err) {
    if (isCorruption(err) || /no such table/.test((err as Error).message)) return { state: 'damaged', reason: (err as Error).message };
    throw err;
  } finally {
    db?.close();
  }
}

/** Renames catalog.db (and its WAL and shared memory) to catalog.db.<why>-<time>; returns the new name. */
function moveAside(path: string, why: 'damaged' | 'replaced'): string {
  const to = `${path}.${why}-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  for (const s of SQLITE_SUFFIXES) if (existsSync(`${path}${s}`)) renameSync(`${path}${s}`, `${to}${s}`);
  return to;
}

/** The renames made durable: a crash after the command's answer finds catalog.db where it said. */
function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Every study keys.db holds a key for (read-only; no key is unwrapped). */
function keyedStudies(path: string): string[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return (db.prepare('SELECT study_uid FROM study_keys ORDER BY study_uid').all() as Array<{ study_uid: string }>).map((r) => r.study_uid);
  } finally {
    db.close();
  }
}

function anchorLookup(state: AnchorState): { has(root: string): boolean; rootsOf(study: string): string[] } {
  return {
    has: (root) => state.leaf(root) !== undefined,
    rootsOf: (study) => state.studyLeaves(study).map((l) => l.root),
  };
}

async function reindexIfS3(store: BlockStore): Promise<number | undefined> {
  const { S3BlockStore } = await import('../../../storage/s3/store.ts');
  if (!(store instanceof S3BlockStore)) return undefined;
  return (await store.rebuildIndex()).indexed;
}

function print(report: CatalogRebuildReport, movedTo: string | undefined, was: string, anchorDb: boolean, io: Io): void {
  if (movedTo !== undefined) io.out(`the ${was === 'damaged' ? 'damaged' : 'previous'} catalog was moved aside to ${movedTo}`);
  const versions = report.studies.reduce((n, s) => n + s.versions, 0);
  const anchored = report.studies.reduce((n, s) => n + s.anchored, 0);
  io.out(
    `${report.blocks} blocks listed, ${report.nodes} nodes read, ${report.manifests} study manifests: ` +
      `${report.studies.length} studies rebuilt (${versions} versions; ${anchored} already anchored, ${versions - anchored} left queued for anchoring)`,
  );
  const unconfirmed = report.studies.filter((s) => s.unconfirmedHead !== undefined).length;
  // Without anchor.db nothing but the store records a study's newest version: one line, not one a study.
  if (!anchorDb && unconfirmed > 0)
    io.out(`no anchor.db: the newest version of ${unconfirmed} studies is vouched for by nothing but its being complete in the store; included`);
  else
    for (const s of report.studies)
      if (s.unconfirmedHead !== undefined)
        io.out(
          `UNCONFIRMED ${s.studyInstanceUID} version ${s.versions} (${s.unconfirmedHead}): complete, but neither anchored yet nor followed by another version; included`,
        );
  for (const u of report.unreadable) io.out(`NOT RESTORED key ${u.keyId}: ${u.manifests} manifests; ${u.reason}`);
  for (const l of report.leftOut) io.out(`LEFT OUT ${l.studyInstanceUID} ${l.root}: ${l.reason}`);
  for (const f of report.failed) io.out(`FAILED ${f.studyInstanceUID ?? `key ${f.keyId}`}: ${f.code}: ${f.reason}`);
  for (const d of report.damaged) io.out(`DAMAGED ${d.cid}: ${d.reason} (it may have been a study manifest)`);
  for (const a of report.anchoredMissing) io.out(`MISSING ${a.studyInstanceUID} ${a.root}: anchored (anchor.db), but its manifest is not in the store`);
  if (report.keysWithoutManifest.length > 0)
    io.out(`${report.keysWithoutManifest.length} studies have a key in keys.db and no manifest in the store: ${report.keysWithoutManifest.join(', ')}`);
}
