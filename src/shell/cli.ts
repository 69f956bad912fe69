// The `dicom-vault` command: serve, ingest, verify, export, gc.
import { mkdir, rename } from 'node:fs/promises';
import { createWriteStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { CID } from 'multiformats/cid';
import type { Catalog } from '../catalog/catalog.ts';
import { FLAGS, resolveNodeOptions, type FlagName } from './config.ts';
import { isVaultError, VaultError } from '../core/errors.ts';
import { assertUid } from '../dicom/uid.ts';
import { openInstance } from '../read/instance-reader.ts';
import { startNode } from './server.ts';
import { verifyStudy } from '../read/verify.ts';
import { CATALOG_FILE, openVault, type Vault } from './vault.ts';
import { createLogger } from './log.ts';
import { ingestFiles } from '../../ingest/files.ts';
import { CAR_CLI_OPTIONS, CAR_USAGE, runCarCommand } from './commands/car.ts';
import { FsBlockStore } from '../../storage/fs.ts';
import { DEFAULT_GRACE_S, collectGarbage, collectS3 as collectS3Store, type CollectReport } from '../maintenance/gc.ts';
import { ANCHOR_CLI_OPTIONS, ANCHOR_USAGE, checkAnchorOfStudy, printStudyAnchor, runAnchorCommand } from './commands/anchor.ts';

const USAGE = `dicom-vault <command> [options]

Commands:
  serve                     serve DICOMweb (STOW-RS, QIDO-RS, WADO-RS) at http://HOST:PORT/dicom-web
  ingest <file|dir>...      store DICOM files (folders are walked), showing progress
  verify <study-uid>        check every block and instance of a study; names what is missing or corrupt
  export <study-uid> <dir>  write the study's current instances as decrypted Part 10 files
  gc [--grace SECONDS]      delete the blocks no study version reaches (ipfs: pins), once older than
                            the grace period (default 86400; fs, s3: at least 3600), which keeps the
                            blocks of ingests not yet committed (s3: runs reindex first, and
                            compacts the packs left at most half live)
  reindex                   (--store s3) index every pack in the bucket that <data-dir>/s3-index.db
                            lacks, from the packs' headers (after losing it or restoring an old copy)
${CAR_USAGE}
${ANCHOR_USAGE}

Options (environment variable in brackets):
${Object.entries(FLAGS)
  .map(([name, f]) => `  --${name.padEnd(12)} ${f.help} [${f.env}]`)
  .join('\n')}
  --json         (verify, gc, reindex) print the report as JSON
  -h, --help     this text
`;

const out = (s: string): void => void process.stdout.write(s + '\n');
const err = (s: string): void => void process.stderr.write(s + '\n');

function mb(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...Object.fromEntries(Object.keys(FLAGS).map((k) => [k, { type: 'string' as const }])),
      json: { type: 'boolean' },
      grace: { type: 'string' },
      ...ANCHOR_CLI_OPTIONS,
      ...CAR_CLI_OPTIONS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...args] = positionals;
  if (values.help || !command || command === 'help') {
    out(USAGE);
    return command || values.help ? 0 : 1;
  }
  const flags: Partial<Record<FlagName, string>> = {};
  for (const k of Object.keys(FLAGS) as FlagName[]) {
    const v = (values as Record<string, unknown>)[k];
    if (typeof v === 'string') flags[k] = v;
  }
  const options = resolveNodeOptions(flags);

  switch (command) {
    case 'serve': {
      const node = await startNode(options, undefined, { anchoring: true });
      err(`dicom-vault serving ${node.url} (data in ${options.dataDir})`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          err('dicom-vault stopping');
          void node.close().then(resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      return 0;
    }
    case 'ingest': {
      if (args.length === 0) throw new VaultError('BAD_REQUEST', 'ingest needs files or folders');
      const vault = await openVault(options, createLogger('warn'));
      const started = performance.now();
      let lastShown = 0;
      try {
        const result = await ingestFiles(args, vault, {
          chunkSize: options.chunkSize,
          onProgress: (p) => {
            const now = performance.now();
            if (now - lastShown < 500) return;
            lastShown = now;
            const s = (now - started) / 1000;
            process.stderr.write(`\r${p.files} files, ${mb(p.bytes)} MB, ${(p.bytes / 1e6 / s).toFixed(1)} MB/s, ${p.failed} failed   `);
          },
        });
        const s = (performance.now() - started) / 1000;
        process.stderr.write('\n');
        for (const f of result.failures) err(`refused ${f.path}: ${f.code}: ${f.message}`);
        out(
          `${result.files} files: ${result.stored} stored, ${result.duplicates} already stored, ${result.failed} refused; ` +
            `${mb(result.bytes)} MB in ${s.toFixed(1)} s; studies: ${result.studies.join(', ') || 'none'}`,
        );
        return result.failed > 0 ? 2 : 0;
      } finally {
        await vault.close();
      }
    }
    case 'verify': {
      const study = assertUid(args[0] ?? '', 'study UID');
      const vault = await openVault(options, createLogger('warn'));
      try {
        const report = await verifyStudy(vault, study, (p) => process.stderr.write(`\r${p.blocks} blocks, ${mb(p.bytes)} MB checked`));
        process.stderr.write('\n');
        const anchor = await checkAnchorOfStudy(vault, options, study);
        if (values.json) out(JSON.stringify({ ...report, anchor }, null, 2));
        else {
          out(`study ${study} root ${report.root}: ${report.versions} versions, ${report.instances} instances, ${report.blocks} blocks, ${mb(report.bytes)} MB`);
          for (const p of report.problems) out(`${p.kind.toUpperCase()} ${p.cid} (${p.where}): ${p.message}`);
          out(report.ok ? 'OK: every block and instance verified' : `FAILED: ${report.problems.length} problem(s)`);
          if (anchor) printStudyAnchor(anchor, { out, err });
        }
        return report.ok && (anchor?.ok ?? true) ? 0 : 3;
      } finally {
        await vault.close();
      }
    }
    case 'export': {
      if (values.car) return runCarCommand('export', args, values, options, { out, err });
      const study = assertUid(args[0] ?? '', 'study UID');
      const dir = args[1];
      if (!dir) throw new VaultError('BAD_REQUEST', 'export needs a target directory');
      const vault = await openVault(options, createLogger('warn'));
      try {
        const instances = vault.catalog.listInstances({ study });
        if (instances.length === 0) throw new VaultError('STUDY_NOT_FOUND', 'no such study');
        let bytes = 0;
        for (const inst of instances) {
          const seriesDir = join(dir, inst.seriesInstanceUID);
          await mkdir(seriesDir, { recursive: true });
          const target = join(seriesDir, `${inst.sopInstanceUID}.dcm`);
          const opened = await openInstance(vault, inst);
          // Written beside the target and renamed, so a failed check leaves no file that looks whole.
          await pipeline(opened.read(), createWriteStream(`${target}.partial`));
          await rename(`${target}.partial`, target);
          bytes += inst.size;
        }
        out(`exported ${instances.length} instances (${mb(bytes)} MB) to ${dir}`);
        return 0;
      } finally {
        await vault.close();
      }
    }
    case 'gc': {
      if (values.grace !== undefined && !/^\d+$/.test(values.grace)) throw new VaultError('CONFIG_INVALID', `--grace must be a whole number of seconds (got "${values.grace}")`);
      // Never create a data directory by collecting it.
      if (!existsSync(join(options.dataDir, CATALOG_FILE))) throw new VaultError('CONFIG_INVALID', `no dicom-vault data in ${options.dataDir} (pass --data-dir)`);
      const graceS = values.grace === undefined ? DEFAULT_GRACE_S : Number(values.grace);
      const vault = await openVault(options, createLogger('warn'));
      try {
        if (options.store === 'ipfs') return await collectIpfs(vault, graceS, values.json === true);
        if (options.store === 's3') return await collectS3(vault, graceS, values.json === true);
        return await collectFs(vault, graceS, values.json === true);
      } finally {
        await vault.close();
      }
    }
    case 'reindex': {
      if (options.store !== 's3') throw new VaultError('CONFIG_INVALID', `reindex rebuilds the pack index of --store s3 (got ${options.store}, which has none)`);
      // Never create a data directory by reindexing it.
      if (!existsSync(join(options.dataDir, CATALOG_FILE))) throw new VaultError('CONFIG_INVALID', `no dicom-vault data in ${options.dataDir} (pass --data-dir)`);
      const vault = await openVault(options, createLogger('warn'));
      try {
        return await reindexS3(vault, values.json === true);
      } finally {
        await vault.close();
      }
    }
    case 'import':
    case 'public-key':
      return runCarCommand(command, args, values, options, { out, err });
    case 'receipt':
    case 'anchor':
    case 'verify-receipt':
    case 'deploy-contract':
      return runAnchorCommand(command, args, values, options, { out, err });
    default:
      err(`unknown command "${command}"\n`);
      err(USAGE);
      return 1;
  }
}

async function collectIpfs(vault: Vault, graceS: number, json: boolean): Promise<number> {
  const { IpfsBlockStore } = await import('../../storage/ipfs.ts');
  if (!(vault.store instanceof IpfsBlockStore)) throw new VaultError('INTERNAL', 'the ipfs store did not open as IpfsBlockStore');
  const report = await vault.store.gc({ graceS, keep: catalogRoots(vault.catalog) });
  if (json) out(JSON.stringify({ graceS, ...report }, null, 2));
  else {
    for (const root of report.repinned) out(`pinned again: ${root} (a study version in the catalog that no pin covered)`);
    out(
      `${report.blocks} blocks: ${report.pinned} pinned, ${report.young} unpinned but younger than ${graceS} s (kept), ` +
        `${report.deleted} deleted (${mb(report.deletedBytes)} MB)` +
        (report.otherPins > 0 ? `; ${report.otherPins} pinned roots not in the catalog kept` : ''),
    );
  }
  return 0;
}

async function collectFs(vault: Vault, graceS: number, json: boolean): Promise<number> {
  if (!(vault.store instanceof FsBlockStore)) throw new VaultError('INTERNAL', 'the fs store did not open as FsBlockStore');
  const report = await collectGarbage(vault.store, catalogRoots(vault.catalog), { graceS });
  if (json) out(JSON.stringify({ graceS, ...report }, null, 2));
  else out(describeCollection(report, graceS));
  return 0;
}

async function collectS3(vault: Vault, graceS: number, json: boolean): Promise<number> {
  const report = await collectS3Store(await s3StoreOf(vault), catalogRoots(vault.catalog), { graceS });
  if (json) out(JSON.stringify({ graceS, ...report }, null, 2));
  else {
    if (report.reindexed.indexed > 0) out(`indexed first: ${report.reindexed.indexed} packs the index lacked (${report.reindexed.blocks} blocks)`);
    for (const u of report.reindexed.unreadable) out(`UNREADABLE ${u.key}: ${u.reason} (left in the bucket)`);
    out(describeCollection(report, graceS));
    const { compacted: c, packsBefore: before, packsAfter: after } = report;
    if (c.packs > 0) out(`compacted ${c.packs} packs at most half live: ${mb(c.bytesBefore)} MB -> ${mb(c.bytesAfter)} MB, ${c.blocks} blocks moved`);
    for (const k of c.skipped) out(`NOT COMPACTED ${k.key}: ${k.reason} (run verify on its studies)`);
    out(`packs in the bucket: ${before.packs} (${mb(before.bytes)} MB) before, ${after.packs} (${mb(after.bytes)} MB) after`);
  }
  return 0;
}

function describeCollection(report: CollectReport, graceS: number): string {
  return (
    `${report.blocks} blocks: ${report.reachable} reached from a study version, ${report.young} unreached but younger than ${graceS} s (kept), ` +
    `${report.deleted} deleted (${mb(report.deletedBytes)} MB)` +
    (report.temps > 0 ? `; ${report.temps} unfinished writes removed` : '') +
    (report.otherRoots > 0 ? `; ${report.otherRoots} study manifests not in the catalog kept, with what they reach` : '')
  );
}

/** The vault's store as the S3BlockStore it opened as (s3.ts is loaded only for --store s3). */
async function s3StoreOf(vault: Vault): Promise<import('../../storage/s3/store.ts').S3BlockStore> {
  const { S3BlockStore } = await import('../../storage/s3/store.ts');
  if (!(vault.store instanceof S3BlockStore)) throw new VaultError('INTERNAL', 'the s3 store did not open as S3BlockStore');
  return vault.store;
}

async function reindexS3(vault: Vault, json: boolean): Promise<number> {
  const store = await s3StoreOf(vault);
  const report = await store.rebuildIndex();
  if (json) out(JSON.stringify(report, null, 2));
  else {
    out(
      `${report.objects} objects in s3://${store.bucket}/${store.packKey('')}: ${report.known} packs indexed already, ` +
        `${report.indexed} indexed now (${report.blocks} blocks)` +
        (report.redundant > 0 ? `; ${report.redundant} packs whose blocks were all indexed elsewhere (left as garbage)` : '') +
        (report.gone > 0 ? `; ${report.gone} deleted while this ran` : ''),
    );
    for (const u of report.unreadable) out(`UNREADABLE ${u.key}: ${u.reason}`);
  }
  // Objects that are not packs may be blocks no index will find: the operator has to look.
  return report.unreadable.length === 0 ? 0 : 3;
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

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (isVaultError(e)) err(`dicom-vault: ${e.code}: ${e.message}`);
  else err(`dicom-vault: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exitCode = 1;
}
