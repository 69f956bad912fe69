// End to end on a real local chain: a node anchors the studies pushed to it, serves their
// receipts over HTTP and the CLI, the standalone `verify-receipt` checks them with nothing but
// the chain, and every kind of tampering is detected and named: a changed block, a changed
// manifest, a rewritten history, a receipt edited in any field, a receipt from another chain or
// contract.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { bytesToHex } from 'viem';
import { blockFileOf } from '../../support/blocks.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { encodeNode } from '../../../src/format/dag.ts';
import { startAnvil } from '../../../anchor/anvil.ts';
import { createChainClient } from '../../../anchor/chain/client.ts';
import { deployAnchorContract } from '../../../anchor/chain/deploy-contract.ts';
import { base64url } from 'multiformats/bases/base64';
import { CID } from 'multiformats/cid';
import { parseReceipt, RECEIPT_TYPE_V3, type ReceiptJson } from '../../../anchor/receipt.ts';
import { encodeTrustFile, trustAnchorOf } from '../../../anchor/trust.ts';
import { verifyReceipt, type ReceiptCheckName } from '../../../anchor/verify-receipt.ts';
import { stow } from '../../support/dicomweb.ts';
import { run as runCli } from '../../support/process.ts';
import { useSharedChain, type TestChain } from '../../support/anvil.ts';
import { startNodeWithTester } from '../../support/node.ts';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'dicom-vault-verify-'));
  dirs.push(d);
  return d;
}

/** A small synthetic study (two MR instances) as Part 10 buffers. */
async function smallStudy(seed: number): Promise<{ studyUID: string; parts: Buffer[] }> {
  const s = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed });
  const parts: Buffer[] = [];
  for (const inst of s.instances) {
    const chunks: Buffer[] = [];
    for await (const c of inst.open()) chunks.push(c);
    parts.push(Buffer.concat(chunks));
  }
  return { studyUID: s.studyInstanceUID, parts };
}

async function blockFile(dataDir: string, cid: string): Promise<string> {
  return blockFileOf(join(dataDir, 'blocks'), cid);
}

let chain: TestChain;
let node: RunningNode;
let dataDir: string;
const studies: Array<{ studyUID: string; root: string; receipt: ReceiptJson }> = [];
/** Leaves of the one batch: the three roots, and the audit log's head when one was signed before it closed (it rides in every batch). */
let batchLeaves = 3;
const nodeFlags = (): Record<string, string> => ({ 'chain-rpc': chain.rpcUrl, 'chain-id': String(chain.chainId) });

beforeAll(async () => {
  chain = await useSharedChain();
  dataDir = await tempDir();
  const options = resolveNodeOptions(
    {
      port: '0',
      'data-dir': dataDir,
      'chunk-size': '4096',
      'dimse-port': 'off',
      ...nodeFlags(),
      'chain-key-file': await chain.keyFile(1),
      contract: chain.contract,
      // Three studies make one batch, so receipts carry real proof paths.
      'anchor-batch-size': '3',
      'anchor-interval': '3600',
      confirmations: '1',
    },
    {},
  );
  node = await startNodeWithTester(options, createLogger('silent'), { anchoring: true, anchorService: { pollIntervalMs: 20 } });
  const confirmed = once(node.anchoring!.service, 'confirmed');
  for (const seed of [101, 102, 103]) {
    const s = await smallStudy(seed);
    const r = await stow(node.url, s.parts);
    expect(r.status).toBe(200);
    studies.push({ studyUID: s.studyUID, root: node.vault.catalog.latestVersion(s.studyUID)!.root, receipt: undefined as unknown as ReceiptJson });
  }
  await confirmed;
  const [batch] = node.anchoring!.state.batches();
  batchLeaves = batch!.size;
  expect(node.anchoring!.state.batchLeaves(batch!.id).slice(0, 3)).toEqual(studies.map((s) => s.root));
  expect([3, 4]).toContain(batchLeaves);
});

let nodeClosed = false;
afterAll(async () => {
  try {
    if (!nodeClosed) await node?.close();
  } finally {
    await chain?.stop();
  }
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('receipts of a running node', () => {
  it('serves each study version its receipt over HTTP, and the CLI prints the same', async () => {
    for (const s of studies) {
      const res = await fetch(`${node.url}/studies/${s.studyUID}/receipt`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/application\/json/);
      const receipt = (await res.json()) as ReceiptJson;
      // Version 4: the leaf is the salted commitment; the salt is the study's, from the key store;
      // the CID in base64url, the batch root computed from the path.
      expect(receipt).toMatchObject({
        v: 'dicom-vault-receipt/4',
        attest: 'self-attested',
        cid: CID.parse(s.root).toString(base64url),
        size: batchLeaves,
        chainId: chain.chainId,
      });
      expect(receipt.root).toBeUndefined();
      expect(receipt.salt).toBe(Buffer.from(node.vault.keys.anchorSalt(s.studyUID)!).toString('base64url'));
      s.receipt = receipt;
      const v1 = await fetch(`${node.url}/studies/${s.studyUID}/receipt?version=1`);
      expect(await v1.json()).toEqual(receipt);
      const cli = await run(['receipt', s.studyUID, '--data-dir', dataDir, ...Object.entries(nodeFlags()).flatMap(([k, v]) => [`--${k}`, v])]);
      expect(cli.code, cli.stderr).toBe(0);
      expect(JSON.parse(cli.stdout)).toEqual(receipt);
    }
    expect(studies.map((s) => s.receipt.index).sort()).toEqual([0, 1, 2]);
    expect(new Set(studies.map((s) => s.receipt.tx)).size).toBe(1); // one transaction for the batch
  });

  it('answers 404 for an unknown study or version', async () => {
    const unknown = await fetch(`${node.url}/studies/1.2.3.4.5/receipt`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { code: string }).code).toBe('STUDY_NOT_FOUND');
    const noVersion = await fetch(`${node.url}/studies/${studies[0]!.studyUID}/receipt?version=7`);
    expect(noVersion.status).toBe(404);
    expect(((await noVersion.json()) as { code: string }).code).toBe('RECEIPT_NOT_FOUND');
  });

  it('shows the queue and every batch with `anchor status`', async () => {
    const flags = ['--data-dir', dataDir, ...Object.entries(nodeFlags()).flatMap(([k, v]) => [`--${k}`, v])];
    const all = await run(['anchor', 'status', ...flags]);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toMatch(new RegExp(`0 pending, 0 submitted, ${batchLeaves} confirmed`));
    expect(all.stdout).toMatch(new RegExp(`batch 1 \\(${batchLeaves} roots\\) confirmed, tx 0x[0-9a-f]{64}, block \\d+`));
    const one = await run(['anchor', 'status', studies[0]!.studyUID, ...flags]);
    expect(one.stdout).toMatch(new RegExp(`version 1 confirmed +${studies[0]!.root}`));
  });

  it('`verify-receipt` checks a receipt with only the chain and a trust file: no node, data directory or keys', async () => {
    const cwd = await tempDir();
    const file = join(cwd, 'receipt.json');
    const trust = join(cwd, 'trust.json');
    await writeFile(file, JSON.stringify(studies[1]!.receipt));
    await writeFile(trust, JSON.stringify(encodeTrustFile([await trustAnchorOf(chain.client(0), chain.contract)])));
    const child = await runIn(cwd, ['verify-receipt', file, '--rpc', chain.rpcUrl, '--trust', trust]);
    // The run's chain is anvil under chain id 31337: consistent, and labelled self-attested.
    expect(child.code, child.stderr).toBe(5);
    expect(child.stdout).toMatch(
      /^SELF-ATTESTED: bafy\S+ was anchored on chain 31337 by contract 0x[0-9a-fA-F]{40} at \S+Z, block \d+ \(0x[0-9a-f]{64}\), tx 0x[0-9a-f]{64}; \d+ confirmations\. This is a development chain/m,
    );
    expect(existsSync(join(cwd, 'data'))).toBe(false);
    // The same receipt edited in one place: the failing check is named.
    await writeFile(file, JSON.stringify({ ...studies[1]!.receipt, blockHash: Buffer.from(randomBytes(32)).toString('base64url') }));
    const bad = await runIn(cwd, ['verify-receipt', file, '--rpc', chain.rpcUrl, '--trust', trust]);
    expect(bad.code).toBe(3);
    expect(bad.stdout).toMatch(/^FAIL {2}blockHash/m);
    expect(bad.stdout).toMatch(/^FAILED: blockHash$/m);
  });

  it('`verify <study>` checks the anchor too', async () => {
    const r = await run(['verify', studies[2]!.studyUID, '--data-dir', dataDir, ...Object.entries(nodeFlags()).flatMap(([k, v]) => [`--${k}`, v])]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/OK: every block and instance verified/);
    expect(r.stdout).toMatch(new RegExp(`anchor: version 1 \\(root ${studies[2]!.root}\\) confirmed on chain 31337 in block \\d+ .*receipt holds`));
  });
});

describe('tamper evidence', () => {
  const b64 = (): string => Buffer.from(randomBytes(32)).toString('base64url');
  async function failedChecks(receipt: unknown, client = chain.client(0)): Promise<ReceiptCheckName[]> {
    return (await verifyReceipt({ receipt, client })).failed;
  }

  it('names the field of a receipt edited in any one field', async () => {
    const r = studies[1]!.receipt;
    expect(await failedChecks(r)).toEqual([]);
    const path = Buffer.from(r.path, 'base64url');
    path[5]! ^= 1;
    const edits: Array<[ReceiptCheckName, Partial<Record<keyof ReceiptJson, unknown>>]> = [
      ['format', { v: 'dicom-vault-receipt/9' }],
      ['inclusion', { cid: CID.parse(studies[0]!.root).toString(base64url) }],
      ['inclusion', { cid: encodeNode({ x: 1 }).cid.toString(base64url) }],
      ['inclusion', { index: 2 }],
      ['inclusion', { index: 0 }],
      ['inclusion', { size: r.size + 1 }],
      ['inclusion', { size: r.size - 1 }],
      ['inclusion', { path: path.toString('base64url') }],
      ['inclusion', { salt: b64() }],
      // Format 4 has no root field: one added is refused as malformed.
      ['format', { root: b64() }],
      ['chainId', { chainId: 1 }],
      ['contract', { contract: '0x000000000000000000000000000000000000dEaD' }],
      ['tx', { tx: b64() }],
      ['block', { block: r.block + 1 }],
      ['block', { block: r.block - 1 }],
      ['blockHash', { blockHash: b64() }],
      ['time', { time: r.time + 1 }],
    ];
    for (const [check, change] of edits) {
      expect(await failedChecks({ ...r, ...change }), JSON.stringify(change)).toEqual([check]);
    }
  });

  it('still verifies the same anchor written in format 3 (root written, base32 CID), and names its edited root', async () => {
    const r = studies[1]!.receipt;
    const parsed = parseReceipt(r);
    const v3 = { ...r, v: RECEIPT_TYPE_V3, cid: parsed.cid.toString(), root: Buffer.from(parsed.root.slice(2), 'hex').toString('base64url') };
    expect(await failedChecks(v3)).toEqual([]);
    expect(await failedChecks({ ...v3, root: b64() })).toEqual(['root']);
    expect(await failedChecks({ ...v3, cid: studies[0]!.root })).toEqual(['inclusion']);
  });

  it('names a receipt from another chain', async () => {
    const other = await startAnvil({ port: 0, chainId: 31338 });
    try {
      expect(await failedChecks(studies[0]!.receipt, createChainClient({ rpcUrl: other.rpcUrl }))).toEqual(['chainId']);
    } finally {
      await other.stop();
    }
  });

  it('names a receipt from another contract', async () => {
    const second = await deployAnchorContract({ client: chain.client(2) });
    expect(await failedChecks({ ...studies[0]!.receipt, contract: second.address })).toEqual(['contract']);
  });

  it('names a transaction of this contract that anchored another root', async () => {
    // A real anchoring transaction of the same contract, but not this receipt's.
    const wallet = chain.client(3);
    const { createWalletClient, http } = await import('viem');
    const { anchorAbi } = await import('../../../anchor/contract/abi.ts');
    const otherRoot = bytesToHex(randomBytes(32));
    const tx = await createWalletClient({ account: wallet.account!, transport: http(chain.rpcUrl) }).writeContract({
      address: chain.contract,
      abi: anchorAbi,
      functionName: 'anchor',
      args: [otherRoot],
      chain: null,
    });
    await wallet.public.waitForTransactionReceipt({ hash: tx });
    expect(await failedChecks({ ...studies[0]!.receipt, tx: Buffer.from(tx.slice(2), 'hex').toString('base64url') })).toEqual(['tx']);
  });

  it('names a changed block, a changed manifest and a rewritten history in `verify <study>`', async () => {
    await node.close();
    nodeClosed = true;
    const flags = ['--data-dir', dataDir, ...Object.entries(nodeFlags()).flatMap(([k, v]) => [`--${k}`, v])];
    const target = studies[0]!;

    // A chunk of an instance changed on disk: the block is named; the anchor still holds (the
    // roots did not change, so the receipt shows what the study was).
    const manifestFile = await blockFile(dataDir, target.root);
    const chunkFiles = (await readdir(join(dataDir, 'blocks'), { recursive: true })).filter((f) => /bafk/.test(f));
    expect(chunkFiles.length).toBeGreaterThan(0);
    const chunk = join(dataDir, 'blocks', chunkFiles[0]!);
    const original = await readFile(chunk);
    const flipped = Buffer.from(original);
    flipped[flipped.length >> 1]! ^= 0x40;
    await writeFile(chunk, flipped);
    const all = await Promise.all(studies.map((s) => run(['verify', s.studyUID, ...flags])));
    const hit = all.find((r) => r.code === 3)!;
    expect(hit.stdout).toMatch(/CORRUPT bafk\S+ \(instance \S+ chunk \d+\)/);
    expect(hit.stdout).toMatch(/receipt holds/);
    await writeFile(chunk, original);

    // The manifest (the anchored root block) changed on disk.
    const manifest = await readFile(manifestFile);
    const bent = Buffer.from(manifest);
    bent[bent.length - 3]! ^= 0x01;
    await writeFile(manifestFile, bent);
    const m = await run(['verify', target.studyUID, ...flags]);
    expect(m.code).toBe(3);
    expect(m.stdout).toMatch(new RegExp(`CORRUPT ${target.root} \\(manifest`));
    await writeFile(manifestFile, manifest);

    // The study rewritten outside the node: its catalog now names another root as version 1.
    const db = new DatabaseSync(join(dataDir, 'catalog.db'));
    db.prepare('UPDATE study_versions SET root = ? WHERE study_uid = ?').run(studies[1]!.root, target.studyUID);
    db.close();
    const h = await run(['verify', target.studyUID, ...flags]);
    expect(h.code).toBe(3);
    expect(h.stdout).toMatch(/ANCHOR UNANCHORED: the current root \S+ \(version 1\) was never queued for anchoring/);
    expect(h.stdout).toMatch(new RegExp(`ANCHOR HISTORY: anchored version 1 \\(root ${target.root}\\) is not in the study's history`));
  });
});

describe('a node whose chain is unreachable', () => {
  it('keeps ingesting and answers 202 with the state of the receipt', async () => {
    const dir = await tempDir();
    const options = resolveNodeOptions(
      {
        port: '0',
        'data-dir': dir,
        'dimse-port': 'off',
        'chain-rpc': 'http://127.0.0.1:9',
        'chain-id': '31337',
        'chain-key-file': await chain.keyFile(4),
        contract: chain.contract,
        'anchor-interval': '0',
      },
      {},
    );
    const down = await startNodeWithTester(options, createLogger('silent'), {
      anchoring: true,
      anchorService: { pollIntervalMs: 20, retryMinMs: 20, retryMaxMs: 40 },
    });
    try {
      const s = await smallStudy(201);
      expect((await stow(down.url, s.parts)).status).toBe(200);
      await once(down.anchoring!.service, 'chain-error');
      const res = await fetch(`${down.url}/studies/${s.studyUID}/receipt`);
      expect(res.status).toBe(202);
      expect(res.headers.get('retry-after')).toBe('10');
      expect(await res.json()).toMatchObject({ state: 'pending', version: 1, cid: down.vault.catalog.latestVersion(s.studyUID)!.root });
    } finally {
      await down.close();
    }
  });
});

/** The CLI, clearing the suite-wide DICOM_VAULT_CHAIN=none so --chain-rpc applies. */
function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCli(args, { DICOM_VAULT_CHAIN: '' });
}

/** Runs the CLI from `cwd` (spawn takes the current directory at call time). */
function runIn(cwd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const prev = process.cwd();
  process.chdir(cwd);
  try {
    return run(args);
  } finally {
    process.chdir(prev);
  }
}
