// `dicom-vault gc` and `dicom-vault reindex`: deleting the blocks no study version reaches, and (S3)
// indexing again the packs the pack index lacks.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { CID } from 'multiformats/cid';
import type { Catalog } from '../../catalog/catalog.ts';
import { VaultError } from '../../core/errors.ts';
import { DEFAULT_GRACE_S, collectGarbage, collectS3, type CollectReport } from '../../maintenance/gc.ts';
import { FsBlockStore } from '../../../storage/fs.ts';
import type { NodeOptions } from '../config.ts';
import { createLogger } from '../log.ts';
import { CATALOG_FILE, openVault, type Vault } from '../vault.ts';
import { EXIT, mb, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

export function gcCommand(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('gc')
      .description(
        'delete the blocks no study version reaches (ipfs: no pin covers), once older than the grace period, which keeps the blocks ' +
          'of ingests not yet committed; s3: runs reindex first and compacts the packs left at most half live',
      )
      .addOption(
        new Option('--grace <seconds>', 'keep unreached blocks younger than this (fs, s3: at least 3600)').default(
          String(DEFAULT_GRACE_S),
          String(DEFAULT_GRACE_S),
        ),
      )
      .option('--json', 'print the report as JSON'),
  ).action(async (opts: { grace: string; json?: boolean }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    if (!/^\d+$/.test(opts.grace)) throw new VaultError('CONFIG_INVALID', `--grace must be a whole number of seconds (got "${opts.grace}")`);
    const graceS = Number(opts.grace);
    const vault = await openExisting(options);
    try {
      if (options.store === 'ipfs') await collectIpfs(vault, graceS, opts.json === true, io);
      else if (options.store === 's3') await collectOnS3(vault, graceS, opts.json === true, io);
      else await collectFs(vault, graceS, opts.json === true, io);
      process.exitCode = EXIT.OK;
    } finally {
      await vault.close();
    }
  });

  withNodeFlags(
    program
      .command('reindex')
      .description("(--store s3) index every pack in the bucket that <data-dir>/s3-index.db lacks, from the packs' headers")
      .option('--json', 'print the report as JSON'),
  ).action(async (opts: { json?: boolean }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    if (options.store !== 's3') throw new VaultError('CONFIG_INVALID', `reindex rebuilds the pack index of --store s3 (got ${options.store}, which has none)`);
    const vault = await openExisting(options);
    try {
      process.exitCode = await reindexS3(vault, opts.json === true, io);
    } finally {
      await vault.close();
    }
  });
}

/** Never create a data directory by collecting or indexing it. */
async function openExisting(options: NodeOptions): Promise<Vault> {
  if (!existsSync(join(options.dataDir, CATALOG_FILE))) throw new VaultError('CONFIG_INVALID', `no dicom-vault data in ${options.dataDir} (pass --data-dir)`);
  return openVault(options, createLogger('warn'));
}

async function collectIpfs(vault: Vault, graceS: number, json: boolean, io: Io): Promise<void> {
  const { IpfsBlockStore } = await import('../../../storage/ipfs.ts');
  if (!(vault.store instanceof IpfsBlockStore)) throw new VaultError('INTERNAL', 'the ipfs store did not open as IpfsBlockStore');
  const report = await vault.store.gc({ graceS, keep: catalogRoots(vault.catalog) });
  if (json) return io.out(JSON.stringify({ graceS, ...report }, null, 2));
  for (const root of report.repinned) io.out(`pinned again: ${root} (a study version in the catalog that no pin covered)`);
  io.out(
    `${report.blocks} blocks: ${report.pinned} pinned, ${report.young} unpinned but younger than ${graceS} s (kept), ` +
      `${report.deleted} deleted (${mb(report.deletedBytes)} MB)` +
      (report.otherPins > 0 ? `; ${report.otherPins} pinned roots not in the catalog kept` : ''),
  );
}

async function collectFs(vault: Vault, graceS: number, json: boolean, io: Io): Promise<void> {
  if (!(vault.store instanceof FsBlockStore)) throw new VaultError('INTERNAL', 'the fs store did not open as FsBlockStore');
  const report = await collectGarbage(vault.store, catalogRoots(vault.catalog), { graceS });
  io.out(json ? JSON.stringify({ graceS, ...report }, null, 2) : describeCollection(report, graceS));
}

async function collectOnS3(vault: Vault, graceS: number, json: boolean, io: Io): Promise<void> {
  const report = await collectS3(await s3StoreOf(vault), catalogRoots(vault.catalog), { graceS });
  if (json) return io.out(JSON.stringify({ graceS, ...report }, null, 2));
  if (report.reindexed.indexed > 0) io.out(`indexed first: ${report.reindexed.indexed} packs the index lacked (${report.reindexed.blocks} blocks)`);
  for (const u of report.reindexed.unreadable) io.out(`UNREADABLE ${u.key}: ${u.reason} (left in the bucket)`);
  io.out(describeCollection(report, graceS));
  const { compacted: c, packsBefore: before, packsAfter: after } = report;
  if (c.packs > 0) io.out(`compacted ${c.packs} packs at most half live: ${mb(c.bytesBefore)} MB -> ${mb(c.bytesAfter)} MB, ${c.blocks} blocks moved`);
  for (const k of c.skipped) io.out(`NOT COMPACTED ${k.key}: ${k.reason} (run verify on its studies)`);
  io.out(`packs in the bucket: ${before.packs} (${mb(before.bytes)} MB) before, ${after.packs} (${mb(after.bytes)} MB) after`);
}

function describeCollection(report: CollectReport, graceS: number): string {
  return (
    `${report.blocks} blocks: ${report.reachable} reached from a study version, ${report.young} unreached but younger than ${graceS} s (kept), ` +
    `${report.deleted} deleted (${mb(report.deletedBytes)} MB)` +
    (report.temps > 0 ? `; ${report.temps} unfinished writes removed` : '') +
    (report.otherRoots > 0 ? `; ${report.otherRoots} study manifests not in the catalog kept, with what they reach` : '')
  );
}

/** The vault's store as the S3BlockStore it opened as (loaded only for --store s3). */
async function s3StoreOf(vault: Vault): Promise<import('../../../storage/s3/store.ts').S3BlockStore> {
  const { S3BlockStore } = await import('../../../storage/s3/store.ts');
  if (!(vault.store instanceof S3BlockStore)) throw new VaultError('INTERNAL', 'the s3 store did not open as S3BlockStore');
  return vault.store;
}

async function reindexS3(vault: Vault, json: boolean, io: Io): Promise<number> {
  const store = await s3StoreOf(vault);
  const report = await store.rebuildIndex();
  if (json) io.out(JSON.stringify(report, null, 2));
  else {
    io.out(
      `${report.objects} objects in s3://${store.bucket}/${store.packKey('')}: ${report.known} packs indexed already, ` +
        `${report.indexed} indexed now (${report.blocks} blocks)` +
        (report.redundant > 0 ? `; ${report.redundant} packs whose blocks were all indexed elsewhere (left as garbage)` : '') +
        (report.gone > 0 ? `; ${report.gone} deleted while this ran` : ''),
    );
    for (const u of report.unreadable) io.out(`UNREADABLE ${u.key}: ${u.reason}`);
  }
  // Objects that are not packs may be blocks no index will find: the operator has to look.
  return report.unreadable.length === 0 ? EXIT.OK : EXIT.PROBLEMS;
}

/**
 * Every study version root in the catalog, a page of studies at a time. A study added meanwhile
 * repeats one at a page boundary rather than skipping one; its blocks are young anyway (and
 * pinned, on ipfs).
 */
function* catalogRoots(catalog: Catalog): Generator<CID> {
  const page = 1000;
  for (let offset = 0; ; offset += page) {
    const studies = catalog.queryStudies({ filters: [], limit: page, offset });
    for (const s of studies) for (const v of catalog.versions(s.studyInstanceUID)) yield CID.parse(v.root);
    if (studies.length < page) return;
  }
}
