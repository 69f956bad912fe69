// Anchoring benchmark on a real local chain (a private anvil on a free port): gas per batch and
// per study at several batch sizes, receipt size, transactions per batch, and the time from a
// committed study version to its confirmed anchor through the real anchor service.
//
//   node bench/anchor.ts [--gas-price-gwei 10]      (npm run bench calls runAnchorBench)
//
// Cost per study = gasUsed(batch) x gasPrice / batchSize. Gas does not depend on the batch size:
// the contract stores one 32-byte head per batch whatever the tree behind it.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { bytesToHex, formatEther, formatGwei, parseGwei } from 'viem';
import { mnemonicToAccount } from 'viem/accounts';
import { Catalog } from '../src/catalog/catalog.ts';
import { encodeNode } from '../src/format/dag.ts';
import { startAnvil } from '../anchor/anvil.ts';
import { createChainClient } from '../anchor/chain/client.ts';
import { deployAnchorContract } from '../anchor/chain/deploy-contract.ts';
import { sendAnchorTransaction } from '../anchor/chain/send-anchor-transaction.ts';
import { MerkleTree } from '../anchor/merkle.ts';
import { encodeReceipt, receiptBytes } from '../anchor/receipt.ts';
import { AnchorService } from '../anchor/service.ts';
import { AnchorState } from '../anchor/state.ts';

export const ANCHOR_BENCH_BATCH_SIZES = [1, 100, 1_000, 10_000] as const;
/** Gas price the cost column is stated at, in gwei (an L1-like price; L2s are 100-1000x lower). */
export const DEFAULT_BENCH_GAS_PRICE_GWEI = '10';

export interface AnchorBenchRow {
  batchSize: number;
  /** Transactions the batch took (target: 1 whatever the size). */
  transactions: number;
  gasPerBatch: number;
  gasPerStudy: number;
  /** Largest receipt of the batch (leaf 0 has the longest path), compact JSON bytes. */
  receiptBytes: number;
  proofHashes: number;
  /** gasPerStudy x gasPrice, in ETH (or the chain's native unit). */
  costPerStudy: string;
}

export interface AnchorBenchResult {
  gasPriceGwei: string;
  formula: string;
  rows: AnchorBenchRow[];
  /** Commit of a study version to its confirmed anchor, through the anchor service (batch interval 0, poll 50 ms, 1 confirmation). */
  ingestToConfirmedMs: { median: number; max: number; n: number };
  targets: { oneTransactionPerBatch: boolean; under50GasPerStudyAt1000: boolean; receiptUnder1KiBAt10000: boolean };
}

const silent = pino({ level: 'silent' });
const DEV_MNEMONIC = 'test test test test test test test test test test test junk';

export async function runAnchorBench(options: { gasPriceGwei?: string; latencySamples?: number } = {}): Promise<AnchorBenchResult> {
  const gasPriceGwei = options.gasPriceGwei ?? DEFAULT_BENCH_GAS_PRICE_GWEI;
  const gasPrice = parseGwei(gasPriceGwei);
  const anvil = await startAnvil({ port: 0 });
  const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-anchor-bench-'));
  try {
    const client = createChainClient({ rpcUrl: anvil.rpcUrl, account: mnemonicToAccount(DEV_MNEMONIC, { addressIndex: 0 }) });
    const { address: contract, chainId } = await deployAnchorContract({ client });

    const rows: AnchorBenchRow[] = [];
    for (const size of ANCHOR_BENCH_BATCH_SIZES) {
      const cids = Array.from({ length: size }, (_, i) => encodeNode({ bench: i, salt: randomBytes(16) }).cid);
      const tree = MerkleTree.fromLeaves(cids.map((c) => c.bytes));
      const root = bytesToHex(tree.head);
      const sent = await sendAnchorTransaction({ client, chainId, contract, root, onSigned: () => undefined });
      if (sent.status !== 'sent') throw new Error('fresh root reported as anchored');
      const receipt = await client.public.waitForTransactionReceipt({ hash: sent.tx.txHash });
      const block = await client.public.getBlock({ blockNumber: receipt.blockNumber });
      const txsForBatch = block.transactions.length; // automine: one block per transaction
      const path = tree.inclusionPath(0);
      const json = encodeReceipt({
        cid: cids[0]!,
        index: 0,
        size,
        path,
        root,
        chainId,
        contract,
        txHash: sent.tx.txHash,
        blockNumber: Number(receipt.blockNumber),
        blockHash: receipt.blockHash,
        time: Number(block.timestamp),
      });
      const gas = Number(receipt.gasUsed);
      rows.push({
        batchSize: size,
        transactions: txsForBatch,
        gasPerBatch: gas,
        gasPerStudy: Math.round((gas / size) * 100) / 100,
        receiptBytes: receiptBytes(json),
        proofHashes: path.length,
        costPerStudy: formatEther((receipt.gasUsed * gasPrice) / BigInt(size)),
      });
    }

    // Ingest to confirmed anchor: a version committed to the catalog, through the service.
    const samples = options.latencySamples ?? 10;
    const catalog = Catalog.open({ path: join(dir, 'catalog.db') });
    const state = AnchorState.open({ path: join(dir, 'anchor.db') });
    const service = new AnchorService(
      { state, catalog, client, chainId, contract, logger: silent },
      { batchIntervalS: 0, pollIntervalMs: 50, confirmations: 1 },
    );
    service.start();
    const ms: number[] = [];
    try {
      for (let i = 0; i < samples; i++) {
        const study = `1.2.826.0.1.3680043.8.498.9${i}`;
        const root = encodeNode({ latency: i, salt: randomBytes(16) }).cid.toString();
        const confirmed = once(service, 'confirmed');
        const t0 = performance.now();
        catalog.commitStudyVersion({ studyInstanceUID: study, version: 1, root, prev: null, instances: [], createdAt: new Date().toISOString() });
        await confirmed;
        ms.push(performance.now() - t0);
      }
    } finally {
      await service.stop();
      state.close();
      catalog.close();
    }
    ms.sort((a, b) => a - b);
    const at = (size: number): AnchorBenchRow => rows.find((r) => r.batchSize === size)!;
    return {
      gasPriceGwei,
      formula: 'cost per study = gasUsed(batch) x gasPrice / batchSize',
      rows,
      ingestToConfirmedMs: { median: Math.round(ms[ms.length >> 1]!), max: Math.round(ms[ms.length - 1]!), n: ms.length },
      targets: {
        oneTransactionPerBatch: rows.every((r) => r.transactions === 1),
        under50GasPerStudyAt1000: at(1_000).gasPerStudy < 50,
        receiptUnder1KiBAt10000: at(10_000).receiptBytes < 1024,
      },
    };
  } finally {
    await anvil.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatAnchorBench(r: AnchorBenchResult): string {
  const lines = [
    `anchoring (local anvil; ${r.formula}; gas price ${formatGwei(parseGwei(r.gasPriceGwei))} gwei)`,
    'batch size  txs  gas/batch  gas/study  receipt bytes  proof hashes  cost/study (ETH)',
    ...r.rows.map(
      (x) =>
        `${String(x.batchSize).padStart(10)}  ${String(x.transactions).padStart(3)}  ${String(x.gasPerBatch).padStart(9)}  ${String(x.gasPerStudy).padStart(9)}  ${String(x.receiptBytes).padStart(13)}  ${String(x.proofHashes).padStart(12)}  ${x.costPerStudy}`,
    ),
    `ingest to confirmed anchor: median ${r.ingestToConfirmedMs.median} ms, max ${r.ingestToConfirmedMs.max} ms over ${r.ingestToConfirmedMs.n} versions (batch interval 0, poll 50 ms, 1 confirmation; add the batch interval, default 30 s)`,
    `targets: one tx per batch ${r.targets.oneTransactionPerBatch ? 'MET' : 'MISSED'}; <50 gas/study at 1,000 ${r.targets.under50GasPerStudyAt1000 ? 'MET' : 'MISSED'}; receipt <1 KiB at 10,000 ${r.targets.receiptUnder1KiBAt10000 ? 'MET' : 'MISSED'}`,
  ];
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { 'gas-price-gwei': { type: 'string' }, json: { type: 'boolean' } } });
  const result = await runAnchorBench(values['gas-price-gwei'] ? { gasPriceGwei: values['gas-price-gwei'] } : {});
  process.stdout.write(`${values.json ? JSON.stringify(result, null, 2) : formatAnchorBench(result)}\n`);
}
