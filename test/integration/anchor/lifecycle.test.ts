// The anchor service against a real local chain: batching by count and by time, batches of
// every small size with each receipt checked by the standalone `verify-receipt` command, the
// queue across a restart, an outage, and what public chains do to transactions: drop them,
// leave them stuck, replace them, reorganise them away. Most tests run on the test run's shared
// anvil (globalSetup); those that mine by hand, rewind or stop their chain have one of their own.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createWalletClient, http, parseEventLogs, type Hex } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Catalog } from '../../../src/catalog/catalog.ts';
import { isVaultError } from '../../../src/core/errors.ts';
import { encodeNode } from '../../../src/format/dag.ts';
import { anchorAbi } from '../../../anchor/contract/abi.ts';
import { startAnvil } from '../../../anchor/anvil.ts';
import { createChainClient, type ChainClient } from '../../../anchor/chain/client.ts';
import { AnchorService, type AnchorEvents, type AnchorServiceDeps, type AnchorServiceOptions } from '../../../anchor/service.ts';
import { AnchorState } from '../../../anchor/state.ts';
import { encodeTrustFile, trustAnchorOf } from '../../../anchor/trust.ts';
import { verifyReceipt, type VerifyReceiptReturnType } from '../../../anchor/verify-receipt.ts';
import { startTestChain, useSharedChain, type PrivateTestChain, type TestChain } from '../../support/anvil.ts';
import { run } from '../../support/process.ts';

const silent = pino({ level: 'silent' });
const T0 = Date.parse('2026-01-01T00:00:00Z');

let shared: TestChain;
const dirs: string[] = [];
beforeAll(async () => {
  shared = await useSharedChain();
});
afterAll(async () => {
  await shared?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** A node's two databases in a temp dir, a clock, and a service signing with the suite's account `account`. */
class Rig {
  readonly on: TestChain;
  dir = '';
  catalog!: Catalog;
  state!: AnchorState;
  service!: AnchorService;
  clock = T0;
  events: Array<{ name: keyof AnchorEvents; data: unknown }> = [];

  constructor(on: TestChain) {
    this.on = on;
  }

  /** A rig on `on` (default: the shared chain). */
  static async create(account: number, options: AnchorServiceOptions = {}, client?: ChainClient, on: TestChain = shared): Promise<Rig> {
    const rig = new Rig(on);
    rig.dir = await mkdtemp(join(tmpdir(), 'dicom-vault-anchor-'));
    dirs.push(rig.dir);
    rig.open(account, options, client);
    return rig;
  }

  open(account: number, options: AnchorServiceOptions = {}, client: ChainClient = this.on.client(account), extraLeaf?: AnchorServiceDeps['extraLeaf']): void {
    this.catalog = Catalog.open({ path: join(this.dir, 'catalog.db') });
    this.state = AnchorState.open({ path: join(this.dir, 'anchor.db') });
    this.service = new AnchorService(
      {
        state: this.state,
        catalog: this.catalog,
        client,
        chainId: this.on.chainId,
        contract: this.on.contract,
        logger: silent,
        ...(extraLeaf !== undefined ? { extraLeaf } : {}),
      },
      { batchMaxLeaves: 1000, batchIntervalS: 60, confirmations: 1, now: () => this.clock, ...options },
    );
    for (const name of ['batch-closed', 'submitted', 'included', 'confirmed', 'reorged', 'chain-error'] as const) {
      this.service.on(name, (data: unknown) => this.events.push({ name, data }));
    }
  }

  async close(): Promise<void> {
    await this.service.stop();
    this.state.close();
    this.catalog.close();
  }

  /** Commits a new version of `study` (as ingest does) and returns its root CID. */
  commit(study: string): string {
    const latest = this.catalog.latestVersion(study);
    const root = encodeNode({ study, version: (latest?.version ?? 0) + 1, salt: randomBytes(16) }).cid.toString();
    this.catalog.commitStudyVersion({
      studyInstanceUID: study,
      version: (latest?.version ?? 0) + 1,
      root,
      prev: latest?.root ?? null,
      instances: [],
      createdAt: new Date(this.clock).toISOString(),
    });
    return root;
  }

  /** Steps the service until `done` holds; at most `max` steps (no clocks involved). */
  async tickUntil(done: () => boolean, max = 12): Promise<void> {
    for (let i = 0; i < max && !done(); i++) await this.service.tick();
    expect(done()).toBe(true);
  }

  submitted(): Array<AnchorEvents['submitted'][0]> {
    return this.events.filter((e) => e.name === 'submitted').map((e) => e.data as AnchorEvents['submitted'][0]);
  }

  async expectReceiptsHold(roots: string[]): Promise<void> {
    for (const root of roots) {
      const receipt = this.state.receipt(root);
      expect(receipt, `receipt of ${root}`).toBeDefined();
      const v = await verifyReceipt({ receipt, client: this.on.client(0), expectedCid: root });
      expect(v.failed, JSON.stringify(v.checks)).toEqual([]);
    }
  }
}

const study = (n: number): string => `1.2.826.0.1.3680043.8.498.${n}`;

/** `fn` over `items`, at most `limit` at a time (each spawns a process; the machine is shared). */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) results[i] = await fn(items[i]!, i);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

describe('anchor service on the shared chain', () => {
  it('closes a batch after N roots or T seconds, anchors each in one transaction, and issues a receipt for every leaf', async () => {
    const rig = await Rig.create(1, { batchMaxLeaves: 3, batchIntervalS: 60 });
    const roots = [
      rig.commit(study(1)),
      rig.commit(study(1)),
      rig.commit(study(2)),
      rig.commit(study(1)),
      rig.commit(study(3)),
      rig.commit(study(2)),
      rig.commit(study(1)),
    ];
    // Two full batches of 3 go at once; the 7th root waits for its 60 seconds.
    await rig.tickUntil(() => rig.state.stats().leaves.confirmed === 6);
    expect(rig.state.stats().queued).toBe(1);
    await rig.service.tick();
    expect(rig.state.batches().map((b) => b.size)).toEqual([3, 3]);
    rig.clock += 61_000;
    await rig.tickUntil(() => rig.state.stats().leaves.confirmed === 7);
    const batches = rig.state.batches();
    expect(batches.map((b) => [b.size, b.state])).toEqual([
      [3, 'confirmed'],
      [3, 'confirmed'],
      [1, 'confirmed'],
    ]);
    // Leaves keep queue order: the batch's leaf indices follow commit order.
    expect(rig.state.batchLeaves(batches[0]!.id)).toEqual(roots.slice(0, 3));
    expect(rig.state.leaf(roots[4]!)).toMatchObject({ batchId: batches[1]!.id, index: 1, state: 'confirmed' });

    // One transaction per batch, each anchoring exactly its root; three roots cost what one does.
    const gas: bigint[] = [];
    for (const b of batches) {
      const tx = await shared.client(0).public.getTransactionReceipt({ hash: b.txHash! });
      const events = parseEventLogs({ abi: anchorAbi, logs: tx.logs, eventName: 'Anchored' });
      expect(events.map((e) => e.args.root)).toEqual([b.root]);
      gas.push(tx.gasUsed);
    }
    expect(new Set(batches.map((b) => b.txHash)).size).toBe(3);
    expect(Number(gas[0]! > gas[2]! ? gas[0]! - gas[2]! : gas[2]! - gas[0]!)).toBeLessThan(600); // calldata zero bytes differ, nothing else
    await rig.expectReceiptsHold(roots);
    // The catalog's queue was handed over; nothing waits there.
    expect(rig.catalog.pendingAnchors(100)).toEqual([]);
    await rig.close();
  });

  it("an extra leaf (the audit log's head) rides in every batch, full ones too, beyond the cap of roots", async () => {
    const rig = await Rig.create(1, { batchMaxLeaves: 3, batchIntervalS: 60 });
    await rig.close();
    let heads = 0;
    const taken: string[] = [];
    rig.open(1, { batchMaxLeaves: 3, batchIntervalS: 60 }, undefined, (room) => {
      expect(room).toBe(1);
      heads += 1;
      const root = encodeNode({ head: heads }).cid.toString();
      return { leaf: { root, studyInstanceUID: 'audit-log', version: heads, enqueuedAt: new Date(rig.clock).toISOString() }, taken: () => taken.push(root) };
    });
    // Four roots: the first batch is full (3), the head joins as a 4th leaf and takes no root's place.
    const roots = [rig.commit(study(90)), rig.commit(study(91)), rig.commit(study(92)), rig.commit(study(93))];
    await rig.tickUntil(() => rig.state.stats().leaves.confirmed === 4);
    const [first] = rig.state.batches();
    expect(first!.size).toBe(4);
    expect(rig.state.batchLeaves(first!.id)).toEqual([...roots.slice(0, 3), taken[0]]);
    expect(rig.state.stats().queued).toBe(1);
    await rig.expectReceiptsHold([...roots.slice(0, 3), taken[0]!]);
    await rig.close();
  });

  it('keeps its queue across a restart, anchoring what waited before and what came during', async () => {
    // First run: the chain cannot be reached, so the batch closes but is never sent.
    const dead = createChainClient({ rpcUrl: 'http://127.0.0.1:9', account: shared.client(3).account!, timeoutMs: 2_000 });
    const rig = await Rig.create(3, { batchIntervalS: 0 }, dead);
    const before = [rig.commit(study(20)), rig.commit(study(21)), rig.commit(study(20))];
    const err = await rig.service.tick().catch((e: unknown) => e);
    expect(isVaultError(err, 'CHAIN_UNAVAILABLE')).toBe(true);
    expect(rig.state.batches().map((b) => [b.size, b.state])).toEqual([[3, 'pending']]);
    await rig.close();

    // Versions committed while the node was down wait in the catalog's queue.
    const between: string[] = [];
    const offline = Catalog.open({ path: join(rig.dir, 'catalog.db') });
    const latest = offline.latestVersion(study(21))!;
    const extraRoot = encodeNode({ offline: true, salt: randomBytes(8) }).cid.toString();
    offline.commitStudyVersion({
      studyInstanceUID: study(21),
      version: 2,
      root: extraRoot,
      prev: latest.root,
      instances: [],
      createdAt: new Date(rig.clock).toISOString(),
    });
    offline.close();
    between.push(extraRoot);

    // Second run, chain reachable: everything is anchored, the old batch first.
    rig.open(3, { batchIntervalS: 0 });
    await rig.tickUntil(() => rig.state.stats().leaves.confirmed === 4);
    expect(rig.state.batches().map((b) => [b.size, b.state])).toEqual([
      [3, 'confirmed'],
      [1, 'confirmed'],
    ]);
    await rig.expectReceiptsHold([...before, ...between]);
    await rig.close();
  });

  it('adopts the anchoring when someone else anchors the same root first', async () => {
    const rig = await Rig.create(8, { batchIntervalS: 0 });
    const root = rig.commit(study(80));
    // The batch is made, but before the node sends it someone copies the root to the contract.
    rig.state.enqueue(rig.catalog.pendingAnchors(10));
    rig.catalog.markAnchored([root]);
    const batch = rig.state.closeBatch(10, new Date(rig.clock).toISOString())!;
    const other = shared.client(9);
    const wallet = createWalletClient({ account: other.account!, transport: http(shared.rpcUrl) });
    const foreignTx = await wallet.writeContract({ address: shared.contract, abi: anchorAbi, functionName: 'anchor', args: [batch.root as Hex], chain: null });
    await rig.tickUntil(() => rig.state.leaf(root)?.state === 'confirmed');
    expect(rig.submitted()).toEqual([]); // never paid for it
    expect(rig.state.batches()[0]!.txHash).toBe(foreignTx);
    await rig.expectReceiptsHold([root]);
    await rig.close();
  });

  // RFC 9162 inclusion path lengths per leaf: odd sizes leave a short path for the last leaves.
  const pathLengths: Record<number, number[]> = { 2: [1, 1], 5: [3, 3, 3, 3, 1], 7: [3, 3, 3, 3, 3, 3, 2] };

  it.each([
    [2, 2],
    [5, 4],
    [7, 5],
  ])('anchors a batch of %i roots in one transaction; `verify-receipt` holds for every receipt (account %i)', async (n, account) => {
    const rig = await Rig.create(account, { batchMaxLeaves: n, batchIntervalS: 3600 });
    const roots = Array.from({ length: n }, (_, i) => rig.commit(study(100 * n + i)));
    await rig.tickUntil(() => rig.state.stats().leaves.confirmed === n);
    const [batch, ...more] = rig.state.batches();
    expect(more).toEqual([]);
    expect(batch).toMatchObject({ size: n, state: 'confirmed' });
    const tx = await shared.client(0).public.getTransactionReceipt({ hash: batch!.txHash! });
    expect(parseEventLogs({ abi: anchorAbi, logs: tx.logs, eventName: 'Anchored' }).map((e) => e.args.root)).toEqual([batch!.root]);

    const receipts = roots.map((root) => rig.state.receipt(root)!);
    expect(receipts.map((r) => [r.index, r.size, Buffer.from(r.path, 'base64url').length / 32])).toEqual(pathLengths[n]!.map((len, i) => [i, n, len]));
    expect(new Set(receipts.map((r) => r.tx)).size).toBe(1);
    // Each receipt checked by the command a radiologist runs: a file, the RPC, nothing else.
    const trust = join(rig.dir, 'trust.json');
    await writeFile(trust, JSON.stringify(encodeTrustFile([await trustAnchorOf(shared.client(0), shared.contract)])));
    const verdicts = await mapLimit(roots, 2, async (root, i) => {
      const file = join(rig.dir, `receipt-${i}.json`);
      await writeFile(file, JSON.stringify(receipts[i]));
      return run(['verify-receipt', file, '--rpc', shared.rpcUrl, '--trust', trust, '--cid', root, '--json'], { DICOM_VAULT_CHAIN: '' });
    });
    for (const [i, v] of verdicts.entries()) {
      // The run's chain has anvil's chain id 31337: every check holds, and the anchor is self-attested.
      expect(v.code, v.stdout + v.stderr).toBe(5);
      const result = JSON.parse(v.stdout) as VerifyReceiptReturnType;
      expect(result.checks.filter((c) => !c.ok)).toEqual([]);
      expect(result.verdict).toBe('self-attested');
      expect(result.checks.map((c) => c.check).sort()).toEqual(
        ['attest', 'blockHash', 'block', 'chainId', 'cid', 'contract', 'format', 'genesis', 'inclusion', 'root', 'time', 'tx'].sort(),
      );
      expect(result.anchor).toMatchObject({ cid: roots[i], txHash: batch!.txHash, blockNumber: batch!.blockNumber });
    }
    // A receipt does not vouch for its neighbour's root.
    const swapped = await verifyReceipt({ receipt: receipts[0], client: shared.client(0), expectedCid: roots[n - 1]! });
    expect(swapped.failed).toEqual(['cid']);
    await rig.close();
  });
});

describe('what public chains do to transactions (a private chain, mined by hand)', () => {
  let own: PrivateTestChain;
  beforeAll(async () => {
    own = await startTestChain();
  });
  afterAll(async () => own?.stop());

  it('shows each study version as pending, then submitted, then confirmed', async () => {
    const rig = await Rig.create(2, { batchIntervalS: 0 }, undefined, own);
    const root = rig.commit(study(10));
    expect(rig.state.leaf(root)).toBeUndefined(); // still in the catalog's queue: pending
    await own.test.setAutomine(false);
    try {
      await rig.service.tick();
      expect(rig.state.leaf(root)?.state).toBe('submitted');
      expect(rig.state.receipt(root)).toBeUndefined();
      await rig.service.tick();
      expect(rig.state.leaf(root)?.state).toBe('submitted'); // in the pool, not mined
      await own.test.mine({ blocks: 1 });
      await rig.service.tick();
      expect(rig.state.leaf(root)?.state).toBe('confirmed');
    } finally {
      await own.test.setAutomine(true);
    }
    expect(rig.state.studyLeaves(study(10)).map((l) => [l.version, l.state])).toEqual([[1, 'confirmed']]);
    await rig.close();
  });

  it('while the chain is down, keeps queueing and backs off; when it is back, anchors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-outage-'));
    dirs.push(dir);
    const down = await startTestChain({ statePath: join(dir, 'anvil.json') });
    const port = down.anvil.port;
    const client = createChainClient({ rpcUrl: down.rpcUrl, account: down.client(1).account!, timeoutMs: 2_000 });
    const rig = await Rig.create(1, { batchIntervalS: 0, pollIntervalMs: 10, retryMinMs: 20, retryMaxMs: 160 }, client, down);
    const errors: number[] = [];
    rig.service.on('chain-error', (e) => {
      if (isVaultError(e.error, 'CHAIN_UNAVAILABLE')) errors.push(e.retryInMs);
    });

    await down.anvil.stop(); // chain down (its state is written to the file)
    const roots = [rig.commit(study(30)), rig.commit(study(31))];
    rig.service.start();
    while (errors.length < 5) await once(rig.service, 'chain-error');
    // Ingest went on: the versions are committed and wait in a closed batch.
    expect(rig.catalog.latestVersion(study(31))?.root).toBe(roots[1]);
    expect(rig.state.batches().map((b) => b.state)).toEqual(['pending']);
    expect(errors.slice(0, 5)).toEqual([20, 40, 80, 160, 160]);

    // Chain back on the same port with the same state.
    const back = await startAnvil({ port, statePath: join(dir, 'anvil.json') });
    try {
      const confirmed = once(rig.service, 'confirmed');
      await confirmed;
      await rig.service.stop();
      for (const root of roots) {
        const receipt = rig.state.receipt(root)!;
        const v = await verifyReceipt({ receipt, client: createChainClient({ rpcUrl: back.rpcUrl }) });
        expect(v.failed).toEqual([]);
        // A state without salts anchors bare roots: format 2; its format 1 form still verifies too.
        expect(receipt.v).toBe('dicom-vault-receipt/2');
        const { attest: _attest, ...v1 } = { ...receipt, v: 'dicom-vault-receipt/1' };
        const old = await verifyReceipt({ receipt: v1, client: createChainClient({ rpcUrl: back.rpcUrl }) });
        expect(old.failed).toEqual([]);
        expect(old.verdict).toBe(v.verdict);
      }
    } finally {
      await rig.close();
      await back.stop();
      await down.stop(); // its anvil is long gone: this removes its key files
    }
  });

  it('sends a dropped transaction again with the same nonce', async () => {
    const rig = await Rig.create(4, { batchIntervalS: 0 }, undefined, own);
    const root = rig.commit(study(40));
    await own.test.setAutomine(false);
    try {
      await rig.service.tick();
      const [first] = rig.submitted();
      expect(first?.reason).toBe('new');
      await own.test.dropTransaction({ hash: first!.txHash });
      await rig.service.tick();
      const second = rig.submitted()[1]!;
      expect(second).toMatchObject({ reason: 'dropped', nonce: first!.nonce });
      expect(second.txHash).not.toBe(first!.txHash);
      await own.test.mine({ blocks: 1 });
      await rig.tickUntil(() => rig.state.leaf(root)?.state === 'confirmed');
      expect(rig.state.batches()[0]!.txHash).toBe(second.txHash);
    } finally {
      await own.test.setAutomine(true);
    }
    await rig.expectReceiptsHold([root]);
    await rig.close();
  });

  it('replaces a transaction stuck in the pool with higher fees', async () => {
    const rig = await Rig.create(5, { batchIntervalS: 0, resendAfterS: 120 }, undefined, own);
    const root = rig.commit(study(50));
    await own.test.setAutomine(false);
    try {
      await rig.service.tick();
      const feeBefore = rig.state.batches()[0]!.maxFeePerGas!;
      await rig.service.tick();
      expect(rig.submitted()).toHaveLength(1); // not yet stuck
      rig.clock += 121_000;
      await rig.service.tick();
      const [first, second] = rig.submitted();
      expect(second).toMatchObject({ reason: 'stuck', nonce: first!.nonce });
      expect(rig.state.batches()[0]!.maxFeePerGas! > feeBefore).toBe(true);
      await own.test.mine({ blocks: 1 });
      await rig.tickUntil(() => rig.state.leaf(root)?.state === 'confirmed');
      expect(rig.state.batches()[0]!.txHash).toBe(second!.txHash);
    } finally {
      await own.test.setAutomine(true);
    }
    await rig.expectReceiptsHold([root]);
    await rig.close();
  });

  it('sends the root afresh when another transaction takes its nonce', async () => {
    const rig = await Rig.create(6, { batchIntervalS: 0 }, undefined, own);
    const root = rig.commit(study(60));
    const account = own.client(6).account!;
    await own.test.setAutomine(false);
    try {
      await rig.service.tick();
      const [first] = rig.submitted();
      // The operator (or a wallet) replaces it: same nonce, higher fees, something else.
      const raw = await account.signTransaction!({
        type: 'eip1559',
        chainId: own.chainId,
        nonce: first!.nonce,
        to: account.address,
        value: 0n,
        gas: 21_000n,
        maxFeePerGas: 100_000_000_000n,
        maxPriorityFeePerGas: 50_000_000_000n,
      });
      await own.client(0).public.request({ method: 'eth_sendRawTransaction', params: [raw] });
      await own.test.mine({ blocks: 1 });
      await rig.service.tick();
      const second = rig.submitted()[1]!;
      expect(second.reason).toBe('replaced');
      expect(second.nonce).toBe(first!.nonce + 1);
      await own.test.mine({ blocks: 1 });
      await rig.tickUntil(() => rig.state.leaf(root)?.state === 'confirmed');
    } finally {
      await own.test.setAutomine(true);
    }
    await rig.expectReceiptsHold([root]);
    await rig.close();
  });

  it('anchors a batch again when its block is reorganised away before its confirmations', async () => {
    const rig = await Rig.create(7, { batchIntervalS: 0, confirmations: 3 }, undefined, own);
    const root = rig.commit(study(70));
    const snapshot = await own.test.snapshot();
    await rig.tickUntil(() => rig.state.batches()[0]?.blockNumber != null);
    const mined = rig.state.batches()[0]!;
    expect(mined.state).toBe('submitted');
    expect(mined.confirmations).toBe(1);
    // The block goes: the chain returns to before it and grows another way.
    await own.test.revert({ id: snapshot });
    await own.test.mine({ blocks: 2 });
    expect((await own.client(0).public.getBlock({ blockNumber: BigInt(mined.blockNumber!) })).hash).not.toBe(mined.blockHash);
    await rig.service.tick();
    expect(rig.events.some((e) => e.name === 'reorged')).toBe(true);
    expect(rig.submitted().at(-1)?.reason).toBe('reorged');
    await rig.service.tick();
    expect(rig.state.leaf(root)?.state).toBe('submitted'); // 1 of 3 confirmations
    await own.test.mine({ blocks: 2 });
    await rig.tickUntil(() => rig.state.leaf(root)?.state === 'confirmed');
    const final = rig.state.batches()[0]!;
    expect(final.blockHash).not.toBe(mined.blockHash);
    expect(final.confirmations).toBeGreaterThanOrEqual(3);
    await rig.expectReceiptsHold([root]);
    await rig.close();
  });
});
