// The anchoring commands of `dicom-vault`:
//
//   receipt <study-uid> [version]      print the receipt of the study's current (or given) version as JSON
//   anchor status [study-uid]          the queue and each batch's state; or each version of one study
//   anchor trust-file                  print the trust pin of this node's chain and contract (JSON)
//   verify-receipt <file|-> --rpc URL --trust FILE
//                                      check a receipt against a pinned chain: needs no node, data or keys
//   deploy-contract                    deploy the anchoring contract on --chain-rpc with --chain-key-file
//
// Exit statuses (io.ts EXIT): 0 done / holds; 4 not anchored yet, or not final yet; 3 verification
// failed; 5 self-attested (consistent, but on a development chain); 1 error.
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
import { nodeTrustAnchor, openAnchorStateWithSalts, openChainReader } from '../../../anchor/anchoring.ts';
import { createChainClient, readKeyFile, toChainError } from '../../../anchor/chain/client.ts';
import { deployAnchorContract } from '../../../anchor/chain/deploy-contract.ts';
import { assertSignerAllowed, devChainReason } from '../../../anchor/dev-chain.ts';
import { encodeTrustFile, parseTrustFile } from '../../../anchor/trust.ts';
import { ANCHOR_DB_FILE, type AnchorState, type BatchRecord } from '../../../anchor/state.ts';
import { checkStudyAnchor, type StudyAnchorReport } from '../../../anchor/study-anchor.ts';
import { verifyReceipt, type VerifyReceiptReturnType } from '../../../anchor/verify-receipt.ts';

interface AnchorCliValues {
  json?: boolean;
  rpc?: string;
  cid?: string;
  trust?: string;
  depth?: string;
  wait?: string;
}

/** How long verify-receipt waits for finality by default, seconds: Ethereum finalizes in about 13 minutes. */
const DEFAULT_FINALITY_WAIT_S = 1200;

function wholeNumber(flag: string, raw: string | undefined, min: number): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < min) throw new VaultError('BAD_REQUEST', `--${flag} must be a whole number >= ${min} (got "${raw}")`);
  return Number(raw);
}

const CATALOG_FILE = 'catalog.db';

function openCatalog(dataDir: string): Catalog {
  const path = join(dataDir, CATALOG_FILE);
  // Never create a data directory by asking about it.
  if (!existsSync(path)) throw new VaultError('CONFIG_INVALID', `no dicom-vault data in ${dataDir} (pass --data-dir)`);
  return Catalog.open({ path });
}

function openStateIfAny(dataDir: string): AnchorState | undefined {
  return existsSync(join(dataDir, ANCHOR_DB_FILE)) ? openAnchorStateWithSalts(dataDir) : undefined;
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
              {
                chain: options.anchor?.mode ?? 'none',
                selfAttested: selfAttestedNote(options) !== '',
                catalogQueue: inCatalog.length,
                ...stats,
                recentBatches: batches,
              },
              (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v),
              2,
            ),
          );
          return 0;
        }
        io.out(
          `chain: ${options.anchor?.mode ?? 'none'}${options.anchor?.mode === 'external' ? ` (${options.anchor.rpcUrl})` : ''}${selfAttestedNote(options)}`,
        );
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
      if (!values.trust)
        throw new VaultError(
          'BAD_REQUEST',
          'verify-receipt needs --trust FILE: the chain and contract you trust, from a source you trust rather than the receipt (a node prints its own with `dicom-vault anchor trust-file`)',
        );
      let trustText: string;
      try {
        trustText = await readFile(values.trust, 'utf8');
      } catch (cause) {
        throw new VaultError('BAD_REQUEST', `cannot read the trust file ${values.trust}`, { cause });
      }
      const trust = parseTrustFile(trustText);
      const depth = wholeNumber('depth', values.depth, 1);
      const waitS = wholeNumber('wait', values.wait, 0) ?? DEFAULT_FINALITY_WAIT_S;
      let body: string;
      try {
        body = file === '-' ? await text(process.stdin) : await readFile(file, 'utf8');
      } catch (cause) {
        throw new VaultError('BAD_REQUEST', `cannot read ${file}`, { cause });
      }
      const result = await verifyReceipt({
        receipt: body,
        client: createChainClient({ rpcUrl: values.rpc }),
        trust: trust.anchors,
        finality: { ...(depth === undefined ? {} : { depth }), waitMs: waitS * 1000, onWait: (f) => io.err(`waiting for finality: ${f.message}`) },
        ...(values.cid ? { expectedCid: values.cid } : {}),
      });
      if (values.json) io.out(JSON.stringify(result, null, 2));
      else printVerification(result, io);
      return { holds: EXIT.OK, 'self-attested': EXIT.SELF_ATTESTED, 'not-final': EXIT.PENDING, unpinned: EXIT.PROBLEMS, fails: EXIT.PROBLEMS }[result.verdict];
    }
    case 'trust-file': {
      const a = options.anchor;
      if (!a || a.mode === 'none') throw new VaultError('ANCHOR_DISABLED', 'this node does not anchor (--chain none): there is nothing to pin');
      const pin = await nodeTrustAnchor(a, options.dataDir, true);
      if (!pin)
        throw new VaultError(
          'CONFIG_INVALID',
          a.mode === 'embedded'
            ? `no embedded chain record in ${options.dataDir} yet: start the node once (it deploys the contract)`
            : 'trust-file needs --contract (and --chain-rpc) of the chain the node anchors on',
        );
      io.out(JSON.stringify(encodeTrustFile([pin]), null, 2));
      const reason = devChainReason(pin.chainId);
      if (reason)
        io.err(
          `warning: this pins a development chain (${reason}): receipts on it are self-attested, and verify-receipt will say so; they prove nothing to anyone but this node's operator`,
        );
      return 0;
    }
    case 'deploy-contract': {
      const a = options.anchor;
      if (a?.mode !== 'external' || !a.rpcUrl)
        throw new VaultError('CONFIG_INVALID', 'deploy-contract needs --chain-rpc URL (the embedded chain deploys its own contract)');
      if (!a.keyFile) throw new VaultError('CONFIG_INVALID', 'deploy-contract needs --chain-key-file (the account that pays for the deployment)');
      const account = readKeyFile(a.keyFile);
      const client = createChainClient({ rpcUrl: a.rpcUrl, account });
      if (a.chainId !== undefined) assertSignerAllowed(account.address, a.chainId, 'deploying the contract');
      const actual = await client.public.getChainId().catch((err: unknown) => {
        throw toChainError(err, 'reading the chain id');
      });
      if (a.chainId !== undefined && actual !== a.chainId)
        throw new VaultError('CONFIG_INVALID', `the RPC serves chain ${actual}, not --chain-id ${a.chainId}`);
      assertSignerAllowed(account.address, actual, 'deploying the contract');
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

function selfAttestedNote(options: NodeOptions): string {
  const a = options.anchor;
  if (!a || a.mode === 'none') return '';
  const reason = a.mode === 'embedded' ? "the node's own embedded chain" : a.chainId !== undefined ? devChainReason(a.chainId) : undefined;
  return reason ? ` - SELF-ATTESTED: ${reason}; its receipts prove nothing to anyone but this node's operator` : '';
}

export function printVerification(v: VerifyReceiptReturnType, io: Io): void {
  for (const c of v.checks) io.out(`${c.ok ? 'OK  ' : 'FAIL'}  ${c.check.padEnd(9)}  ${c.message}`);
  if (v.finality) io.out(`${v.finality.final ? 'OK  ' : v.finality.rule === 'not-enforced' ? '--  ' : 'WAIT'}  ${'final'.padEnd(9)}  ${v.finality.message}`);
  const a = v.anchor;
  const where = a
    ? `${a.cid} was anchored on chain ${a.chainId} by contract ${a.contract} at ${a.time}, block ${a.blockNumber} (${a.blockHash}), tx ${a.txHash}; ${v.confirmations} confirmations`
    : '';
  switch (v.verdict) {
    case 'holds':
      io.out(`HOLDS: ${where}; ${v.finality?.rule === 'depth' ? `final by the stated depth of ${v.finality.depth}` : 'finalized'}`);
      break;
    case 'self-attested':
      io.out(
        `SELF-ATTESTED: ${where}. This is a development chain or key (${v.selfAttested.join('; ')}): its operator can rewrite blocks and times at will, ` +
          `so the time ${a?.time} is not vouched for by anyone but the node's operator`,
      );
      break;
    case 'not-final':
      io.out(`NOT FINAL: ${where}; ${v.finality?.message ?? 'not final yet'}: ask again later (or wait longer with --wait)`);
      break;
    case 'unpinned':
      io.out(`UNPINNED: ${where}; checked against the chain and contract the receipt itself names, which proves nothing`);
      break;
    default:
      io.out(`FAILED: ${v.failed.join(', ')}`);
  }
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
        trust: options.anchor ? await nodeTrustAnchor(options.anchor, options.dataDir) : undefined,
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
  const v = r.verification;
  const label =
    v?.verdict === 'self-attested'
      ? ` (SELF-ATTESTED: ${v.selfAttested.join('; ')}; the time is not vouched for by anyone but this node's operator)`
      : v?.finality && !v.finality.final
        ? ` (not final yet: ${v.finality.message})`
        : '';
  if (r.ok && where)
    io.out(
      `${head} on chain ${where.chainId} in block ${where.blockNumber} (${where.blockHash}), tx ${where.txHash}, ${r.verification?.confirmations} confirmations: receipt holds${label}`,
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
    anchor
      .command('trust-file')
      .description(
        'print the trust pin (dicom-vault-trust/1) of the chain and contract this node anchors on; publish it where verifiers can get it from you, not from the node',
      ),
  ).action((_opts: unknown, cmd: Command) => run('trust-file')([], {}, cmd));
  withNodeFlags(
    program
      .command('verify-receipt')
      .description("check a receipt against a pinned chain's JSON-RPC; needs no node, data or keys")
      .argument('<file>', 'the receipt (JSON), or - for standard input')
      .requiredOption('--rpc <url>', 'JSON-RPC endpoint of the chain the receipt names (one you trust)')
      .requiredOption('--trust <file>', 'trust file (dicom-vault-trust/1): the chains and contracts you accept; see `anchor trust-file`')
      .option('--depth <blocks>', 'confirmations to require where the chain has no finalized block tag')
      .option('--wait <seconds>', `wait this long at most for the block to become final (default: ${DEFAULT_FINALITY_WAIT_S}; 0: answer at once)`)
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
