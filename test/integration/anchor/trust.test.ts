// Anchors the operator cannot fake (issue 24, item 7), on real local chains (anvil from npm):
//
// - a node anchoring on a chain others run (here a private anvil under a non-development chain
//   id) prints its trust file; `verify-receipt` checks a receipt against that pin, says "not
//   final" until the chain's finalized block passes it, waits for it when asked, then holds;
// - the same bytecode at another address, a receipt from another chain id, and a receipt from a
//   chain started anew with a back-dated genesis (2020-01-01) under the pinned chain id, even at
//   the pinned contract address, all fail;
// - on a development chain the same back-dated receipt is labelled self-attested, its time not
//   vouched for; a public development key is refused on any other chain;
// - a chain without a finalized tag needs a stated depth;
// - the cheat RPCs of a development node used on the pinned chain: what the verifier catches.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CID } from 'multiformats/cid';
import { bytesToHex, createTestClient, encodeAbiParameters, http, keccak256, parseEther, toHex, type Address, type Hex } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { BIN } from '../../../bench/node-process.ts';
import { ANVIL_DEV_KEY, startAnvil } from '../../../anchor/anvil.ts';
import { accountFromKey, createChainClient, type ChainClient } from '../../../anchor/chain/client.ts';
import { deployAnchorContract } from '../../../anchor/chain/deploy-contract.ts';
import { sendAnchorTransaction } from '../../../anchor/chain/send-anchor-transaction.ts';
import { compileAnchorContract } from '../../../anchor/contract/compile.ts';
import { MerkleTree } from '../../../anchor/merkle.ts';
import { encodeReceipt, parseReceipt, type ReceiptJson } from '../../../anchor/receipt.ts';
import { encodeTrustFile, trustAnchorOf, type TrustAnchor } from '../../../anchor/trust.ts';
import { verifyReceipt, type VerifyReceiptReturnType } from '../../../anchor/verify-receipt.ts';
import { isVaultError } from '../../../src/core/errors.ts';
import { encodeNode } from '../../../src/format/dag.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { startTestChain, type PrivateTestChain } from '../../support/anvil.ts';
import { stow } from '../../support/dicomweb.ts';
import { startNodeWithTester } from '../../support/node.ts';
import { run as runCli } from '../../support/process.ts';

/** A chain id no development tool uses: the suite's stand-in for a chain others run. */
const PUBLIC_ID = 424242;
/** 2020-01-01T00:00:00Z */
const Y2020 = 1577836800;
/** anvil's finalized block trails the head by 2 epochs of 32 slots. */
const ANVIL_FINALITY_LAG = 64;

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'dicom-vault-trust-'));
  dirs.push(d);
  return d;
}

const chains: Array<{ stop(): Promise<void> }> = [];
async function chain(options: Parameters<typeof startTestChain>[0] = {}): Promise<PrivateTestChain> {
  const c = await startTestChain(options);
  chains.push(c);
  return c;
}

/** The CLI, clearing the suite-wide DICOM_VAULT_CHAIN=none so --chain-rpc applies. */
function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCli(args, { DICOM_VAULT_CHAIN: '' });
}

/** The CLI; `then` runs once its standard error matches `cue`. */
function runUntil(args: string[], cue: RegExp, then: () => Promise<unknown>): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, DICOM_VAULT_CHAIN: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let fired = false;
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (!fired && cue.test(stderr)) {
      fired = true;
      void then();
    }
  });
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

async function trustFileFor(pins: TrustAnchor[]): Promise<string> {
  const file = join(await tempDir(), 'trust.json');
  await writeFile(file, JSON.stringify(encodeTrustFile(pins)));
  return file;
}

async function receiptFile(receipt: unknown): Promise<string> {
  const file = join(await tempDir(), 'receipt.json');
  await writeFile(file, JSON.stringify(receipt));
  return file;
}

/**
 * What anyone holding a key can do: anchor a batch of fresh roots (made now) at `contract` and
 * write the receipt of leaf 0, exactly as the node would.
 */
async function anchorFresh(client: ChainClient, contract: Address, size = 3): Promise<ReceiptJson> {
  const cids: CID[] = Array.from({ length: size }, (_, i) => encodeNode({ madeAt: Date.now(), i, salt: randomBytes(16) }).cid);
  const tree = MerkleTree.fromLeaves(cids.map((c) => c.bytes));
  const root = bytesToHex(tree.head);
  const chainId = await client.public.getChainId();
  const sent = await sendAnchorTransaction({ client, contract, root, chainId, onSigned: () => undefined });
  if (sent.status !== 'sent') throw new Error('root already anchored');
  const tx = await client.public.waitForTransactionReceipt({ hash: sent.tx.txHash });
  const block = await client.public.getBlock({ blockNumber: tx.blockNumber });
  return encodeReceipt({
    cid: cids[0]!,
    index: 0,
    size,
    path: tree.inclusionPath(0),
    root,
    chainId,
    contract,
    txHash: sent.tx.txHash,
    blockNumber: Number(tx.blockNumber),
    blockHash: block.hash,
    time: Number(block.timestamp),
  });
}

async function study(seed: number): Promise<{ uid: string; parts: Buffer[] }> {
  const s = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed });
  const chunks: Buffer[] = [];
  for await (const c of s.instances[0]!.open()) chunks.push(c);
  return { uid: s.studyInstanceUID, parts: [Buffer.concat(chunks)] };
}

async function startAnchoringNode(flags: Record<string, string>): Promise<{ node: RunningNode; dataDir: string }> {
  const dataDir = await tempDir();
  const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'dimse-port': 'off', 'anchor-interval': '0', confirmations: '1', ...flags }, {});
  const node = await startNodeWithTester(options, createLogger('silent'), { anchoring: true, anchorService: { pollIntervalMs: 20 } });
  return { node, dataDir };
}

async function receiptOf(node: RunningNode, uid: string): Promise<ReceiptJson> {
  for (let i = 0; i < 300; i++) {
    const res = await fetch(`${node.url}/studies/${uid}/receipt`);
    if (res.status === 200) return (await res.json()) as ReceiptJson;
    expect(res.status).toBe(202);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no receipt');
}

const flagsOf = (o: Record<string, string>): string[] => Object.entries(o).flatMap(([k, v]) => [`--${k}`, v]);

let real: PrivateTestChain;
let realPin: TrustAnchor;

beforeAll(async () => {
  real = await chain({ chainId: PUBLIC_ID });
  realPin = await trustAnchorOf(real.client(0), real.contract);
});

afterAll(async () => {
  await Promise.all(chains.map((c) => c.stop()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('a node on a chain others run', () => {
  it('prints its trust file; verify-receipt says not final, waits for finality, then holds', async () => {
    const nodeFlags = { 'chain-rpc': real.rpcUrl, 'chain-id': String(PUBLIC_ID), 'chain-key-file': await real.keyFile(1), contract: real.contract };
    const { node, dataDir } = await startAnchoringNode(nodeFlags);
    let receipt: ReceiptJson;
    try {
      const s = await study(901);
      expect((await stow(node.url, s.parts)).status).toBe(200);
      receipt = await receiptOf(node, s.uid);
      expect(node.anchoring!.selfAttested).toBeUndefined();
    } finally {
      await node.close();
    }
    expect(receipt).toMatchObject({ v: 'dicom-vault-receipt/4', attest: 'chain', chainId: PUBLIC_ID, contract: real.contract });

    // The node's pin, as its operator would publish it.
    const printed = await run(['anchor', 'trust-file', '--data-dir', dataDir, ...flagsOf(nodeFlags), '--confirmations', '5']);
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stderr).not.toMatch(/warning/);
    expect(JSON.parse(printed.stdout)).toEqual({
      v: 'dicom-vault-trust/1',
      anchors: [{ chainId: PUBLIC_ID, genesisHash: realPin.genesisHash, contract: real.contract, confirmations: 5 }],
    });
    const trust = join(dataDir, 'trust.json');
    await writeFile(trust, printed.stdout);
    const file = await receiptFile(receipt);

    // The block is not final yet (anvil finalizes 64 blocks behind its head): said at once with --wait 0.
    const early = await run(['verify-receipt', file, '--rpc', real.rpcUrl, '--trust', trust, '--wait', '0']);
    expect(early.code, early.stdout + early.stderr).toBe(4);
    expect(early.stdout).toMatch(/^OK +genesis +block 0 is the pinned 0x[0-9a-f]{64}$/m);
    expect(early.stdout).toMatch(/^WAIT +final +block \d+ is not finalized yet \(the chain's finalized block is \d+, \d+ blocks to go\)$/m);
    expect(early.stdout).toMatch(/^NOT FINAL: /m);

    // Waiting: the verifier keeps asking until the chain's finalized block passes the anchor
    // (mined once it has said it waits).
    const waited = await runUntil(['verify-receipt', file, '--rpc', real.rpcUrl, '--trust', trust, '--wait', '60', '--json'], /waiting for finality/, () =>
      real.test.mine({ blocks: ANVIL_FINALITY_LAG + 2 }),
    );
    expect(waited.code, waited.stdout + waited.stderr).toBe(0);
    expect(waited.stderr).toMatch(/waiting for finality: block \d+ is not finalized yet/);
    const result = JSON.parse(waited.stdout) as VerifyReceiptReturnType;
    expect(result).toMatchObject({ verdict: 'holds', timeVouched: true, selfAttested: [], finality: { rule: 'finalized', final: true } });
    expect(result.pinned).toMatchObject({ chainId: PUBLIC_ID, contract: real.contract });

    const later = await run(['verify-receipt', file, '--rpc', real.rpcUrl, '--trust', trust, '--wait', '0']);
    expect(later.code, later.stdout).toBe(0);
    expect(later.stdout).toMatch(
      new RegExp(`^HOLDS: ${parseReceipt(receipt).cid} was anchored on chain ${PUBLIC_ID} by contract ${real.contract} at \\S+Z, .*; finalized$`, 'm'),
    );

    // Without a trust file the verifier refuses to judge.
    const unpinned = await run(['verify-receipt', file, '--rpc', real.rpcUrl]);
    expect(unpinned.code).toBe(2);
    expect(unpinned.stderr).toMatch(/--trust/);
  }, 180_000); // six CLI processes and a node: slow on a loaded machine

  it('refuses the same bytecode at another address', async () => {
    const other = await deployAnchorContract({ client: real.client(2) });
    expect(other.address).not.toBe(real.contract);
    const receipt = await anchorFresh(real.client(2), other.address);
    const r = await run(['verify-receipt', await receiptFile(receipt), '--rpc', real.rpcUrl, '--trust', await trustFileFor([realPin]), '--wait', '0']);
    expect(r.code, r.stdout).toBe(3);
    expect(r.stdout).toMatch(
      new RegExp(`^FAIL +contract +receipt names contract ${other.address}; the trust file pins ${real.contract} on chain ${PUBLIC_ID}`, 'm'),
    );
    expect(r.stdout).toMatch(/^FAILED: contract$/m);
  });

  it('without pins, the verdict is at best "unpinned", never a vouched time', async () => {
    const receipt = await anchorFresh(real.client(4), real.contract);
    const v = await verifyReceipt({ receipt, client: real.client(0) });
    expect(v).toMatchObject({ ok: true, verdict: 'unpinned', timeVouched: false, selfAttested: [] });
    expect(v.pinned).toBeUndefined();
  });

  it('refuses a receipt from another chain id', async () => {
    const other = await chain({ chainId: PUBLIC_ID + 1 });
    const receipt = await anchorFresh(other.client(1), other.contract);
    // Whichever RPC the verifier is handed: the pin decides.
    for (const rpc of [other.rpcUrl, real.rpcUrl]) {
      const v = await verifyReceipt({ receipt, client: createChainClient({ rpcUrl: rpc }), trust: [realPin] });
      expect(v.failed).toEqual(['chainId']);
      expect(v.checks.find((c) => c.check === 'chainId')?.message).toMatch(
        `receipt is for chain ${PUBLIC_ID + 1}, which the trust file does not pin (it pins chain ${PUBLIC_ID})`,
      );
      expect(v.verdict).toBe('fails');
    }
  });
});

describe('the back-dated genesis', () => {
  it('a chain started anew dated 2020-01-01 under the pinned id and contract address fails against the real pin', async () => {
    // The operator starts a chain of their own under the real chain's id, dated 2020, and
    // deploys with the real deployer's key at the same nonce: the same contract address.
    const fake = await startAnvil({ port: 0, chainId: PUBLIC_ID, genesisTimestamp: Y2020 });
    chains.push(fake);
    const deployer = real.client(0).account!;
    await createTestClient({ mode: 'anvil', transport: http(fake.rpcUrl) }).setBalance({ address: deployer.address, value: parseEther('10') });
    const onFake = createChainClient({ rpcUrl: fake.rpcUrl, account: deployer });
    expect((await deployAnchorContract({ client: onFake })).address).toBe(real.contract);
    const receipt = await anchorFresh(onFake, real.contract);
    expect(receipt.time).toBeLessThan(Y2020 + 3600);
    expect(receipt.attest).toBe('chain');
    const file = await receiptFile(receipt);
    const trust = await trustFileFor([realPin]);

    // Checked against the operator's own RPC: its genesis is not the pinned one.
    const onTheirs = await run(['verify-receipt', file, '--rpc', fake.rpcUrl, '--trust', trust, '--wait', '0']);
    expect(onTheirs.code, onTheirs.stdout).toBe(3);
    expect(onTheirs.stdout).toMatch(
      new RegExp(
        `^FAIL +genesis +the RPC's chain ${PUBLIC_ID} begins with block 0x[0-9a-f]{64} \\(dated 2020-01-01T00:00:00.000Z\\), the trust file pins ${realPin.genesisHash}`,
        'm',
      ),
    );
    expect(onTheirs.stdout).toMatch(/^FAILED: genesis$/m);
    // Checked against the real chain: nothing of it is there.
    const onReal = await run(['verify-receipt', file, '--rpc', real.rpcUrl, '--trust', trust, '--wait', '0']);
    expect(onReal.code, onReal.stdout).toBe(3);
    expect(onReal.stdout).toMatch(/^FAIL {2}tx /m);
    expect(onReal.stdout).not.toMatch(/^HOLDS|^SELF-ATTESTED/m);
  });

  it('on a development chain the back-dated receipt is labelled self-attested, its time not vouched for', async () => {
    // A development chain dated 2020, anchored by a node with the public development key (allowed on a local chain).
    const dev = await chain({ chainId: 31337, genesisTimestamp: Y2020 });
    const keyFile = join(await tempDir(), 'dev-key');
    await writeFile(keyFile, `${ANVIL_DEV_KEY}\n`, { mode: 0o600 });
    await dev.test.setBalance({ address: accountFromKey(ANVIL_DEV_KEY).address, value: 10n ** 20n });
    const contract = (await deployAnchorContract({ client: createChainClient({ rpcUrl: dev.rpcUrl, account: accountFromKey(ANVIL_DEV_KEY) }) })).address;
    const nodeFlags = { 'chain-rpc': dev.rpcUrl, 'chain-id': '31337', 'chain-key-file': keyFile, contract };
    const { node, dataDir } = await startAnchoringNode(nodeFlags);
    let receipt: ReceiptJson;
    try {
      expect(node.anchoring!.selfAttested).toMatch(/chain id 31337/);
      const s = await study(902);
      expect((await stow(node.url, s.parts)).status).toBe(200);
      receipt = await receiptOf(node, s.uid);
    } finally {
      await node.close();
    }
    expect(receipt).toMatchObject({ v: 'dicom-vault-receipt/4', attest: 'self-attested', chainId: 31337 });
    expect(new Date(receipt.time * 1000).toISOString()).toMatch(/^2020-01-01T/);

    const status = await run(['anchor', 'status', '--data-dir', dataDir, ...flagsOf(nodeFlags)]);
    expect(JSON.parse((await run(['anchor', 'status', '--json', '--data-dir', dataDir, ...flagsOf(nodeFlags)])).stdout)).toMatchObject({
      chain: 'external',
      selfAttested: true,
    });
    expect(status.stdout).toMatch(/^chain: external \(\S+\) - SELF-ATTESTED: chain id 31337 is the development chain id of anvil and hardhat/m);
    const printed = await run(['anchor', 'trust-file', '--data-dir', dataDir, ...flagsOf(nodeFlags)]);
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stderr).toMatch(/warning: this pins a development chain .* receipts on it are self-attested/);
    const trust = join(dataDir, 'trust.json');
    await writeFile(trust, printed.stdout);

    const v = await run(['verify-receipt', await receiptFile(receipt), '--rpc', dev.rpcUrl, '--trust', trust]);
    expect(v.code, v.stdout + v.stderr).toBe(5);
    expect(v.stdout).toMatch(/^-- +final +not enforced: on a self-attested chain the operator can rewrite any block/m);
    expect(v.stdout).toMatch(
      /^SELF-ATTESTED: \S+ was anchored on chain 31337 .* at 2020-01-01T\S+Z, .*\(chain id 31337 is the development chain id of anvil and hardhat; the receipt says it is self-attested; the anchoring transaction was signed by public development account #0 \(0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\), which anyone can sign with\).* so the time 2020-01-01T\S+ is not vouched for by anyone but the node's operator$/m,
    );
    const json = await run(['verify-receipt', await receiptFile(receipt), '--rpc', dev.rpcUrl, '--trust', trust, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, verdict: 'self-attested', timeVouched: false, finality: { rule: 'not-enforced' } });

    // Relabelled "chain" by hand: the verifier sees the development chain and key anyway.
    const relabelled = await verifyReceipt({
      receipt: { ...receipt, attest: 'chain' },
      client: dev.client(0),
      trust: [await trustAnchorOf(dev.client(0), contract)],
    });
    expect(relabelled.failed).toEqual(['attest']);
    // A node's receipt is of version 3 (a salted leaf), which no older format can express:
    // receipts of versions 1 and 2 (bare roots) are verified on chain in lifecycle.test.ts.
  }, 180_000);
});

describe('keys', () => {
  it('refuses a public development key on a chain that is not a local development chain', async () => {
    const keyFile = join(await tempDir(), 'dev-key');
    await writeFile(keyFile, `${ANVIL_DEV_KEY}\n`, { mode: 0o600 });
    // Anchoring: refused before anything is signed, with and without --chain-id (then the RPC's id decides).
    for (const idFlag of [{ 'chain-id': String(PUBLIC_ID) }, {}]) {
      const err = await startAnchoringNode({ 'chain-rpc': real.rpcUrl, ...idFlag, 'chain-key-file': keyFile, contract: real.contract }).then(
        ({ node }) => node.close().then(() => undefined),
        (e: unknown) => e,
      );
      expect(isVaultError(err, 'CONFIG_INVALID'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(
        new RegExp(
          `^anchoring: the signer key is public development account #0 \\(0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\\) .* must not be used on chain ${PUBLIC_ID}`,
        ),
      );
    }
    // Deploying: the same.
    const d = await run(['deploy-contract', '--chain-rpc', real.rpcUrl, '--chain-key-file', keyFile]);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/CONFIG_INVALID.*public development account #0/);
    // A key of one's own anchors on any chain it is pointed at (the first suite test did); the
    // development key on a local development chain is accepted (the self-attested test did).
  });
});

describe('a chain without a finalized block tag', () => {
  let proxy: Server;
  let proxyUrl: string;
  /** How the front answers the finalized tag: as a chain without it, or as a rate-limited provider. */
  let refuse: 'unknown-tag' | 'rate-limit' = 'unknown-tag';
  beforeAll(async () => {
    // A JSON-RPC front for the real chain that, like chains before the merge and some consortium
    // chains, does not know the "finalized" and "safe" tags.
    proxy = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks).toString();
      const call = JSON.parse(body) as { id: number; method: string; params?: unknown[] };
      res.setHeader('content-type', 'application/json');
      if (call.method === 'eth_getBlockByNumber' && (call.params?.[0] === 'finalized' || call.params?.[0] === 'safe')) {
        const error =
          refuse === 'unknown-tag'
            ? { code: -32602, message: `invalid block tag ${call.params[0]}` }
            : { code: -32005, message: 'daily request limit exceeded' };
        res.end(JSON.stringify({ jsonrpc: '2.0', id: call.id, error }));
        return;
      }
      const upstream = await fetch(real.rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      res.end(await upstream.text());
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    proxyUrl = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => proxy.close(() => resolve())));

  it('needs a stated depth, and says it used it', async () => {
    const receipt = await anchorFresh(real.client(3), real.contract);
    const client = createChainClient({ rpcUrl: proxyUrl });
    const none = await verifyReceipt({ receipt, client, trust: [realPin] });
    expect(none).toMatchObject({ ok: true, verdict: 'not-final', finality: { rule: 'none', final: false } });
    expect(none.finality?.message).toMatch(/no finalized block tag and no confirmation depth was stated/);

    const file = await receiptFile(receipt);
    const trust = await trustFileFor([realPin]);
    const short = await run(['verify-receipt', file, '--rpc', proxyUrl, '--trust', trust, '--depth', '4', '--wait', '0']);
    expect(short.code, short.stdout).toBe(4);
    expect(short.stdout).toMatch(/^WAIT +final +1 of 4 confirmations \(the stated depth: the chain has no finalized block tag\)$/m);
    await real.test.mine({ blocks: 3 });
    const deep = await run(['verify-receipt', file, '--rpc', proxyUrl, '--trust', trust, '--depth', '4', '--wait', '0']);
    expect(deep.code, deep.stdout).toBe(0);
    expect(deep.stdout).toMatch(/^HOLDS: .*; final by the stated depth of 4$/m);
    // The trust file's depth serves when the verifier states none.
    const pinnedDepth = await verifyReceipt({ receipt, client, trust: [{ ...realPin, confirmations: 4 }] });
    expect(pinnedDepth).toMatchObject({ verdict: 'holds', finality: { rule: 'depth', depth: 4, final: true } });
    // A provider refusing for another reason (a rate limit) is not a chain without the tag: no verdict.
    refuse = 'rate-limit';
    const limited = await run(['verify-receipt', file, '--rpc', proxyUrl, '--trust', trust, '--depth', '4', '--wait', '0']);
    refuse = 'unknown-tag';
    expect(limited.code, limited.stdout).toBe(1);
    expect(limited.stderr).toMatch(/CHAIN_ERROR: reading the finalized block/);
  });
});

describe("a development node's cheat RPCs on the pinned chain", () => {
  // Each case on a chain of its own (a clock set back or forward stays so), pinned as a verifier would.
  async function pinnedChain(): Promise<{ c: PrivateTestChain; trust: TrustAnchor[] }> {
    const c = await chain({ chainId: PUBLIC_ID });
    return { c, trust: [await trustAnchorOf(c.client(0), c.contract)] };
  }
  const failedOf = async (receipt: unknown, c: PrivateTestChain, trust: TrustAnchor[]): Promise<VerifyReceiptReturnType> =>
    verifyReceipt({ receipt, client: c.client(0), trust });

  it('evm_setTime back before an anchoring: the block is dated before its parent', async () => {
    const { c, trust } = await pinnedChain();
    await c.test.mine({ blocks: 1 });
    await c.test.request({ method: 'evm_setTime' as never, params: [Y2020] as never });
    const receipt = await anchorFresh(c.client(1), c.contract);
    expect(receipt.time).toBeLessThan(Y2020 + 60);
    const v = await failedOf(receipt, c, trust);
    expect(v.failed).toEqual(['time']);
    expect(v.checks.find((x) => x.check === 'time')?.message).toMatch(/is dated 2020-01-01T\S+, before its parent \(\S+\): the chain's clock was set back/);
  });

  it('evm_setNextBlockTimestamp into the future: later than the verifier’s clock', async () => {
    const { c, trust } = await pinnedChain();
    const now = Math.floor(Date.now() / 1000);
    await c.test.setNextBlockTimestamp({ timestamp: BigInt(now + 86_400) });
    const receipt = await anchorFresh(c.client(1), c.contract);
    const v = await failedOf(receipt, c, trust);
    expect(v.failed).toEqual(['time']);
    expect(v.checks.find((x) => x.check === 'time')?.message).toMatch(/later than this verifier's clock .*: the chain's clock was set forward/);
  });

  it('anvil_setStorageAt on the recorded time, anvil_setCode, and a rollback are caught', async () => {
    const { c, trust } = await pinnedChain();
    const receipt = await anchorFresh(c.client(1), c.contract);
    expect((await failedOf(receipt, c, trust)).failed).toEqual([]);
    const root = `0x${Buffer.from(receipt.root!, 'base64url').toString('hex')}` as Hex;
    // anchoredAt[root] lives at keccak256(root . slot 0).
    const slot = keccak256(encodeAbiParameters([{ type: 'bytes32' }, { type: 'uint256' }], [root, 0n]));
    const snap = await c.test.snapshot();
    await c.test.setStorageAt({ address: c.contract, index: slot, value: toHex(Y2020, { size: 32 }) });
    const edited = await failedOf(receipt, c, trust);
    expect(edited.failed).toEqual(['time']);
    expect(edited.checks.find((x) => x.check === 'time')?.message).toBe(`the contract recorded the root at ${Y2020}, the receipt says ${receipt.time}`);
    await c.test.revert({ id: snap });

    // Other code at the pinned address now.
    const snap2 = await c.test.snapshot();
    await c.test.setCode({ address: c.contract, bytecode: '0x6000' });
    expect((await failedOf(receipt, c, trust)).failed).toContain('contract');
    await c.test.revert({ id: snap2 });

    // History rewritten: the anchoring block rolled back and the height mined again.
    await c.test.request({ method: 'anvil_rollback' as never, params: [1] as never });
    await c.test.mine({ blocks: 2 });
    const rolled = await failedOf(receipt, c, trust);
    expect(rolled.failed).toEqual(expect.arrayContaining(['tx']));
    expect(rolled.verdict).toBe('fails');
  });

  it('code swapped in for the anchoring and swapped back later: the code at the anchoring block is checked', async () => {
    const { c, trust } = await pinnedChain();
    const real = (await c.client(0).public.getCode({ address: c.contract }))!;
    // Behaves exactly like the contract (same source, one comment more), but is not its code.
    const source = await readFile(new URL('../../../anchor/contract/DicomVaultAnchor.sol', import.meta.url), 'utf8');
    const lookalike = await compileAnchorContract(`${source}\n// not the audited contract\n`);
    expect(lookalike.deployedBytecode).not.toBe(real);
    await c.test.setCode({ address: c.contract, bytecode: lookalike.deployedBytecode });
    const receipt = await anchorFresh(c.client(1), c.contract);
    // anvil records a block's state when it mines the next one: a swap undone before that leaves
    // no trace in its history (README, Limits). One block later, it does.
    await c.test.mine({ blocks: 1 });
    await c.test.setCode({ address: c.contract, bytecode: real });
    await c.test.mine({ blocks: 1 });
    const v = await failedOf(receipt, c, trust);
    expect(v.failed).toEqual(['contract']);
    expect(v.checks.find((x) => x.check === 'contract')?.message).toMatch(
      /in block \d+, when the root was anchored, was not DicomVaultAnchor's \(it was replaced\)/,
    );
  });
});
