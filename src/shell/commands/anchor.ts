// The anchoring commands of `dicom-vault`:
//
//   receipt <study-uid> [version]      print the receipt of the study's current (or given) version as JSON
//   anchor status [study-uid]          the queue and each batch's state; or each version of one study
//   verify-receipt <file|-> --rpc URL  check a receipt against a chain: needs no node, data or keys
//   deploy-contract                    deploy the anchoring contract on --chain-rpc with --chain-key-file
//
// Exit statuses (io.ts EXIT): 0 done / holds; 4 not anchored yet; 3 verification failed; 1 error.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { VaultError } from '../../core/errors.ts';
import { Catalog } from '../../catalog/catalog.ts';
import type { NodeOptions } from '../config.ts';
import { assertUid } from '../../dicom/uid.ts';
import type { Vault } from '../vault.ts';
import type { Command } from 'commander';
import { EXIT, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';
import { openAnchorState, openChainReader } from '../../../anchor/anchoring.ts';
import { createChainClient, readKeyFile } from '../../../anchor/chain/client.ts';
import { deployAnchorContract } from '../../../anchor/chain/deploy-contract.ts';
import { ANCHOR_DB_FILE, type AnchorState, type BatchRecord } from '../../../anchor/state.ts';
import { checkStudyAnchor, type StudyAnchorReport } from '../../../anchor/study-anchor.ts';
import { verifyReceipt, type VerifyReceiptReturnType } from '../../../anchor/verify-receipt.ts';

interface AnchorCliValues {
  json?: boolean;
  rpc?: string;
  cid?: string;
}

const CATALOG_FILE = 'catalog.db';

function openCatalog(dataDir: string): Catalog {
  const path = join(dataDir, CATALOG_FILE);
  // Never create a data directory by asking about it.
  if (!existsSync(path)) throw new VaultError('CONFIG_INVALID', `no dicom-vault data in ${dataDir} (pass --data-dir)`);
  return Catalog.open({ path });
}

function openStateIfAny(dataDir: string): AnchorState | undefined {
  return existsSync(join(dataDir, ANCHOR_DB_FILE)) ? openAnchorState(dataDir) : undefined;
}

function describeBatch(b: BatchRecord, required?: number): string {
  const conf = b.blockNumber === null ? '' : `, block ${b.blockNumber}, ${b.confirmations}${required ? `/${required}` : ''} confirmations`;
  const tx = b.txHash ? `, tx ${b.txHash}` : '';
  return `batch ${b.id} (${b.size} roots) ${b.state}${tx}${conf}${b.lastError ? `; last error: ${b.lastError}` : ''}`;
}

async function runAnchorCommand(command: string, args: string[], values: AnchorCliValues, options: NodeOptions, io: Io): Promise<number> {
  switch (command) {
    case 'receipt': {
      const study = assertUid(args[0] ?? '', 'study UID');
      const catalog = openCatalog(options.dataDir);
      const state = openStateIfAny(options.dataDir);
      try {
        const versions = catalog.versions(study);
        if (versions.length === 0) throw new VaultError('STUDY_NOT_FOUND', 'no such study');
        const version = args[1] === undefined ? versions[versions.length - 1]! : versions.find((v) => String(v.version) === args[1]);
        if (!version) throw new VaultError('RECEIPT_NOT_FOUND', `study has no version ${args[1]}`);
        const receipt = state?.receipt(version.root);
        if (receipt) {
          io.out(JSON.stringify(receipt));
          return 0;
        }
        const leaf = state?.leaf(version.root);
        const batch = leaf?.batchId == null ? undefined : state!.batch(leaf.batchId);
        io.err(`version ${version.version} (root ${version.root}) is not anchored yet: ${batch ? describeBatch(batch) : 'waiting for a batch'}`);
        return EXIT.PENDING;
      } finally {
        state?.close();
        catalog.close();
      }
    }
    case 'anchor': {
      if (args[0] !== 'status') throw new VaultError('BAD_REQUEST', 'usage: anchor status [study-uid]');
      const catalog = openCatalog(options.dataDir);
      const state = openStateIfAny(options.dataDir);
      try {
        const inCatalog = catalog.pendingAnchors(Number.MAX_SAFE_INTEGER);
        if (args[1] !== undefined) {
          const study = assertUid(args[1], 'study UID');
          const versions = catalog.versions(study);
          if (versions.length === 0) throw new VaultError('STUDY_NOT_FOUND', 'no such study');
          const rows = versions.map((v) => {
            const leaf = state?.leaf(v.root);
            const batch = leaf?.batchId == null ? undefined : state!.batch(leaf.batchId);
            const st = leaf?.state ?? (inCatalog.some((q) => q.root === v.root) ? 'pending' : 'unanchored');
            return { version: v.version, root: v.root, state: st, batch: batch ?? null, index: leaf?.index ?? null };
          });
          if (values.json) io.out(JSON.stringify(rows, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2));
          else
            for (const r of rows)
              io.out(`version ${r.version} ${r.state.padEnd(10)} ${r.root}${r.batch ? `  ${describeBatch(r.batch)}, leaf ${r.index}` : ''}`);
          return 0;
        }
        const stats = state?.stats();
        const batches = state?.batches({ limit: 50 }) ?? [];
        if (values.json) {
          io.out(
            JSON.stringify(
              { chain: options.anchor?.mode ?? 'none', catalogQueue: inCatalog.length, ...stats, recentBatches: batches },
              (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v),
              2,
            ),
          );
          return 0;
        }
        io.out(`chain: ${options.anchor?.mode ?? 'none'}${options.anchor?.mode === 'external' ? ` (${options.anchor.rpcUrl})` : ''}`);
        io.out(
          `queue: ${inCatalog.length} roots not yet handed to the anchor service, ${stats?.queued ?? 0} waiting for a batch${stats?.oldestEnqueuedAt ? ` (oldest from ${stats.oldestEnqueuedAt})` : ''}`,
        );
        if (stats) io.out(`study versions: ${stats.leaves.pending} pending, ${stats.leaves.submitted} submitted, ${stats.leaves.confirmed} confirmed`);
        for (const b of batches) io.out(describeBatch(b));
        return 0;
      } finally {
        state?.close();
        catalog.close();
      }
    }
    case 'verify-receipt': {
      const file = args[0];
      if (!file) throw new VaultError('BAD_REQUEST', 'verify-receipt needs a receipt file (or - for standard input)');
      if (!values.rpc) throw new VaultError('BAD_REQUEST', 'verify-receipt needs --rpc URL: the JSON-RPC endpoint of the chain the receipt names');
      let body: string;
      try {
        body = file === '-' ? await text(process.stdin) : await readFile(file, 'utf8');
      } catch (cause) {
        throw new VaultError('BAD_REQUEST', `cannot read ${file}`, { cause });
      }
      const result = await verifyReceipt({
        receipt: body,
        client: createChainClient({ rpcUrl: values.rpc }),
        ...(values.cid ? { expectedCid: values.cid } : {}),
      });
      if (values.json) io.out(JSON.stringify(result, null, 2));
      else printVerification(result, io);
      return result.ok ? EXIT.OK : EXIT.PROBLEMS;
    }
    case 'deploy-contract': {
      const a = options.anchor;
      if (a?.mode !== 'external' || !a.rpcUrl)
        throw new VaultError('CONFIG_INVALID', 'deploy-contract needs --chain-rpc URL (the embedded chain deploys its own contract)');
      if (!a.keyFile) throw new VaultError('CONFIG_INVALID', 'deploy-contract needs --chain-key-file (the account that pays for the deployment)');
      const client = createChainClient({ rpcUrl: a.rpcUrl, account: readKeyFile(a.keyFile) });
      if (a.chainId !== undefined) {
        const actual = await client.public.getChainId();
        if (actual !== a.chainId) throw new VaultError('CONFIG_INVALID', `the RPC serves chain ${actual}, not --chain-id ${a.chainId}`);
      }
      const d = await deployAnchorContract({ client });
      if (values.json) io.out(JSON.stringify({ ...d, gasUsed: d.gasUsed.toString() }));
      else {
        io.out(`deployed DicomVaultAnchor at ${d.address} on chain ${d.chainId} (tx ${d.txHash}, block ${d.blockNumber}, ${d.gasUsed} gas)`);
        io.out(`anchor there with: --chain-rpc ${a.rpcUrl} --chain-id ${d.chainId} --chain-key-file ${a.keyFile} --contract ${d.address}`);
      }
      return 0;
    }
    default:
      throw new VaultError('BAD_REQUEST', `unknown command ${command}`);
  }
}

export function printVerification(v: VerifyReceiptReturnType, io: Io): void {
  for (const c of v.checks) io.out(`${c.ok ? 'OK  ' : 'FAIL'}  ${c.check.padEnd(9)}  ${c.message}`);
  if (v.ok && v.anchor) {
    io.out(
      `HOLDS: ${v.anchor.cid} was anchored on chain ${v.anchor.chainId} by contract ${v.anchor.contract} at ${v.anchor.time}, ` +
        `block ${v.anchor.blockNumber} (${v.anchor.blockHash}), tx ${v.anchor.txHash}; ${v.confirmations} confirmations`,
    );
  } else io.out(`FAILED: ${v.failed.join(', ')}`);
}

/** The anchor part of `dicom-vault verify <study>`; undefined for an unknown study. */
export async function checkAnchorOfStudy(vault: Pick<Vault, 'store' | 'catalog'>, options: NodeOptions, study: string): Promise<StudyAnchorReport | undefined> {
  const state = openStateIfAny(options.dataDir);
  try {
    return await checkStudyAnchor(
      {
        store: vault.store,
        catalog: vault.catalog,
        state,
        openChain: async () => (options.anchor ? openChainReader(options.anchor, options.dataDir) : undefined),
      },
      study,
    );
  } finally {
    state?.close();
  }
}

export function printStudyAnchor(r: StudyAnchorReport, io: Io): void {
  const where = r.verification?.anchor;
  const head = `anchor: version ${r.version} (root ${r.root}) ${r.state}`;
  if (r.ok && where)
    io.out(
      `${head} on chain ${where.chainId} in block ${where.blockNumber} (${where.blockHash}), tx ${where.txHash}, ${r.verification?.confirmations} confirmations: receipt holds`,
    );
  else if (r.ok) io.out(`${head}: not anchored yet (no fault; run verify again later)`);
  else {
    io.out(head);
    for (const p of r.problems) io.out(`ANCHOR ${p.check.toUpperCase()}: ${p.message}`);
  }
}

export function anchorCommands(program: Command, io: Io = stdio): void {
  const run = (command: string) => async (args: string[], values: AnchorCliValues, cmd: Command) => {
    process.exitCode = await runAnchorCommand(command, args, values, nodeOptionsOf(cmd), io);
  };
  withNodeFlags(
    program
      .command('receipt')
      .description("print the anchor receipt of the study's current (or given) version as JSON")
      .argument('<study-uid>', 'Study Instance UID')
      .argument('[version]', 'a version number (default: the current one)'),
  ).action((study: string, version: string | undefined, _opts: unknown, cmd: Command) =>
    run('receipt')(version === undefined ? [study] : [study, version], {}, cmd),
  );
  const anchor = program.command('anchor').description('the anchoring queue and batches');
  withNodeFlags(
    anchor
      .command('status')
      .description("the anchoring queue and each batch's state, or each version of one study")
      .argument('[study-uid]', 'one study')
      .option('--json', 'print as JSON'),
  ).action((study: string | undefined, opts: AnchorCliValues, cmd: Command) => run('anchor')(study === undefined ? ['status'] : ['status', study], opts, cmd));
  withNodeFlags(
    program
      .command('verify-receipt')
      .description("check a receipt against a chain's JSON-RPC; needs no node, data or keys")
      .argument('<file>', 'the receipt (JSON), or - for standard input')
      .requiredOption('--rpc <url>', 'JSON-RPC endpoint of the chain the receipt names')
      .option('--cid <cid>', 'the root CID the receipt must be for')
      .option('--json', 'print the checks as JSON'),
  ).action((file: string, opts: AnchorCliValues, cmd: Command) => run('verify-receipt')([file], opts, cmd));
  withNodeFlags(
    program
      .command('deploy-contract')
      .description('deploy the anchoring contract on --chain-rpc, signed with --chain-key-file')
      .option('--json', 'print as JSON'),
  ).action((opts: AnchorCliValues, cmd: Command) => run('deploy-contract')([], opts, cmd));
}
