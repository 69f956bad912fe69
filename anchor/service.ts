// The anchor service: takes study version roots from the catalog's queue, closes them into
// Merkle batches, anchors each batch root in one transaction and follows it to its confirmations.
//
// Ingest never waits for it: the hand-over from the catalog and the closing of batches need no
// chain, and every chain step that fails (unreachable, rejected) is retried with exponential
// backoff while roots keep queueing. One transaction is in flight at a time (its batch holds up
// to N roots, so one per block is plenty); that keeps nonces simple: a transaction that vanished
// is resent with the same nonce and higher fees, one whose nonce another transaction took is
// sent afresh, one stuck in the pool is replaced with higher fees, and a batch whose block is
// reorganised away before its confirmations is found again or anchored again.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { TransactionNotFoundError, type Address, type Hex } from 'viem';
import { VaultError } from '../src/core/errors.ts';
import type { Catalog } from '../src/catalog/catalog.ts';
import { anchorArtifact } from './contract/abi.ts';
import { hasCode, toChainError, type ChainClient } from './chain/client.ts';
import { findAnchoring, getReceipt, type Anchoring } from './chain/find-anchoring.ts';
import { sendAnchorTransaction } from './chain/send-anchor-transaction.ts';
import type { AnchorState, BatchRecord, QueuedRoot } from './state.ts';

/** A batch closes once this many roots wait. */
export const DEFAULT_BATCH_MAX_LEAVES = 1000;
/** ...or once the oldest waiting root has waited this many seconds. */
export const DEFAULT_BATCH_INTERVAL_S = 30;
/** Blocks (the anchoring one included) before a batch counts as confirmed. */
export const DEFAULT_CONFIRMATIONS = 1;
/** Time between steps while all is well, ms. */
export const DEFAULT_POLL_INTERVAL_MS = 1_000;
/** A transaction still unmined after this many seconds is replaced with higher fees. */
export const DEFAULT_RESEND_AFTER_S = 180;
/** First and longest wait after a failed step, ms (doubling in between). */
export const DEFAULT_RETRY_MIN_MS = 1_000;
export const DEFAULT_RETRY_MAX_MS = 60_000;
/** Roots taken from the catalog per read. */
const HANDOVER_CHUNK = 5_000;

export interface AnchorServiceOptions {
  /** Roots per batch at most. Default DEFAULT_BATCH_MAX_LEAVES. */
  batchMaxLeaves?: number;
  /** Seconds the oldest waiting root may wait before its batch closes. Default DEFAULT_BATCH_INTERVAL_S. */
  batchIntervalS?: number;
  /** Confirmations required. Default DEFAULT_CONFIRMATIONS. */
  confirmations?: number;
  /** ms between steps. Default DEFAULT_POLL_INTERVAL_MS. */
  pollIntervalMs?: number;
  /** Seconds before an unmined transaction is replaced. Default DEFAULT_RESEND_AFTER_S. */
  resendAfterS?: number;
  /** Backoff bounds after a failed step, ms. Defaults DEFAULT_RETRY_MIN_MS, DEFAULT_RETRY_MAX_MS. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Clock, ms since the epoch (tests move it). Default Date.now. */
  now?: () => number;
}

export interface AnchorServiceDeps {
  state: AnchorState;
  catalog: Pick<Catalog, 'pendingAnchors' | 'markAnchored'>;
  client: ChainClient;
  /**
   * One more leaf for a batch about to close (the audit log's latest signed head), beyond the
   * batch's cap of roots (`room`, always 1): it rides in a batch that goes anyway, never making a
   * transaction of its own nor taking a study's place. `taken` is called once it is queued.
   */
  extraLeaf?: (room: number) => { leaf: QueuedRoot; taken(): void } | undefined;
  /** Chain id the node is configured for; the RPC must serve this chain. */
  chainId: number;
  contract: Address;
  logger: Logger;
}

export type SubmitReason = 'new' | 'dropped' | 'stuck' | 'replaced' | 'reorged';

export interface AnchorEvents {
  'batch-closed': [{ batch: BatchRecord }];
  submitted: [{ batchId: number; txHash: Hex; nonce: number; attempt: number; reason: SubmitReason }];
  included: [{ batchId: number; txHash: Hex; blockNumber: number; confirmations: number; foreign: boolean }];
  confirmed: [{ batchId: number; size: number; txHash: Hex; blockNumber: number; blockHash: Hex }];
  reorged: [{ batchId: number; blockNumber: number; blockHash: Hex }];
  'chain-error': [{ error: VaultError; retryInMs: number }];
}

export class AnchorService extends EventEmitter<AnchorEvents> {
  readonly #deps: AnchorServiceDeps;
  readonly #log: Logger;
  readonly #maxLeaves: number;
  readonly #intervalMs: number;
  readonly #confirmations: number;
  readonly #pollMs: number;
  readonly #resendAfterMs: number;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #now: () => number;
  /** Why a batch that went back to pending is sent again (for the event). */
  readonly #reasons = new Map<number, SubmitReason>();
  #chainChecked = false;
  #steps: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #failures = 0;

  constructor(deps: AnchorServiceDeps, options: AnchorServiceOptions = {}) {
    super();
    this.#deps = deps;
    this.#log = deps.logger.child({ component: 'anchor' });
    this.#maxLeaves = options.batchMaxLeaves ?? DEFAULT_BATCH_MAX_LEAVES;
    this.#intervalMs = (options.batchIntervalS ?? DEFAULT_BATCH_INTERVAL_S) * 1000;
    this.#confirmations = options.confirmations ?? DEFAULT_CONFIRMATIONS;
    this.#pollMs = options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    this.#resendAfterMs = (options.resendAfterS ?? DEFAULT_RESEND_AFTER_S) * 1000;
    this.#retryMinMs = options.retryMinMs ?? DEFAULT_RETRY_MIN_MS;
    this.#retryMaxMs = options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS;
    this.#now = options.now ?? Date.now;
    if (!Number.isInteger(this.#maxLeaves) || this.#maxLeaves < 1) throw new VaultError('CONFIG_INVALID', 'batchMaxLeaves must be at least 1');
    if (!Number.isInteger(this.#confirmations) || this.#confirmations < 1) throw new VaultError('CONFIG_INVALID', 'confirmations must be at least 1');
  }

  get chainId(): number {
    return this.#deps.chainId;
  }

  get contract(): Address {
    return this.#deps.contract;
  }

  get requiredConfirmations(): number {
    return this.#confirmations;
  }

  /** Runs steps every poll interval until stop(); failed steps back off. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#schedule(0);
  }

  /** Stops the loop and waits for a step under way. */
  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#steps.catch(() => undefined);
  }

  #schedule(ms: number): void {
    this.#timer = setTimeout(() => {
      void this.tick().then(
        () => {
          this.#failures = 0;
          if (this.#running) this.#schedule(this.#pollMs);
        },
        (err: unknown) => {
          const error = toChainError(err, 'anchoring');
          const retryInMs = Math.min(this.#retryMaxMs, this.#retryMinMs * 2 ** Math.min(this.#failures, 20));
          this.#failures++;
          // Repeats of one outage are logged at debug: the state shows the last error anyway.
          if (this.#failures === 1) this.#log.warn({ code: error.code, reason: error.message, retryInMs }, 'anchoring paused; will retry');
          else this.#log.debug({ code: error.code, reason: error.message, retryInMs }, 'anchoring still paused');
          this.emit('chain-error', { error, retryInMs });
          if (this.#running) this.#schedule(retryInMs);
        },
      );
    }, ms);
    this.#timer.unref();
  }

  /**
   * One step: hand roots over from the catalog, close a batch when due, then move every batch
   * on the chain as far as it goes. Steps never overlap. Throws (after the chain-free work is
   * done) when the chain fails; the loop then backs off.
   */
  tick(): Promise<void> {
    const step = this.#steps.catch(() => undefined).then(() => this.#step());
    this.#steps = step;
    return step;
  }

  async #step(): Promise<void> {
    this.#handOver();
    this.#closeDue();
    await this.#advance();
  }

  #handOver(): void {
    const { state, catalog } = this.#deps;
    for (let round = 0; round < 20; round++) {
      const roots = catalog.pendingAnchors(HANDOVER_CHUNK);
      if (roots.length === 0) return;
      // Into anchor.db first, then off the catalog's queue: a crash between the two only
      // repeats the hand-over, which enqueue() ignores.
      state.enqueue(roots);
      catalog.markAnchored(roots.map((r) => r.root));
      if (roots.length < HANDOVER_CHUNK) return;
    }
  }

  #closeDue(): void {
    const { state } = this.#deps;
    // At most one closed batch waits for the chain: during an outage roots gather into full
    // batches instead of one small batch (one transaction) per interval.
    if (state.batches({ states: ['pending'] }).length > 0) return;
    const q = state.queued();
    if (q.count === 0 || q.oldestEnqueuedAt === null) return;
    const waitedMs = this.#now() - Date.parse(q.oldestEnqueuedAt);
    if (q.count < this.#maxLeaves && waitedMs < this.#intervalMs) return;
    // The extra leaf rides in every batch, one beyond the roots' cap: under steady load every batch
    // is full, and a head that waited for room would never be anchored.
    const extra = this.#deps.extraLeaf?.(1);
    if (extra !== undefined) {
      state.enqueue([extra.leaf]);
      extra.taken();
    }
    const batch = state.closeBatch(this.#maxLeaves, new Date(this.#now()).toISOString(), extra?.leaf.root);
    if (!batch) return;
    this.#log.info({ batch: batch.id, size: batch.size, root: batch.root }, 'batch closed');
    this.emit('batch-closed', { batch });
  }

  async #advance(): Promise<void> {
    const { state } = this.#deps;
    const submitted = state.batches({ states: ['submitted'] });
    const next = state.batches({ states: ['pending'] })[0];
    if (submitted.length === 0 && next === undefined) return;
    await this.#checkChain();
    const head = Number(await this.#call('reading the chain head', () => this.#deps.client.public.getBlockNumber({ cacheTime: 0 })));
    for (const b of submitted) {
      try {
        await this.#follow(b, head);
      } catch (err) {
        state.recordError(b.id, err instanceof Error ? err.message : String(err));
        throw err;
      }
    }
    const inFlight = state.batches({ states: ['submitted'] }).some((b) => b.blockNumber === null);
    const pending = state.batches({ states: ['pending'] })[0];
    if (!inFlight && pending) {
      try {
        await this.#submit(pending);
      } catch (err) {
        state.recordError(pending.id, err instanceof Error ? err.message : String(err));
        throw err;
      }
    }
  }

  /** Once per service: the RPC serves the configured chain and the contract is there. */
  async #checkChain(): Promise<void> {
    if (this.#chainChecked) return;
    const { client, chainId, contract } = this.#deps;
    const actual = await this.#call('reading the chain id', () => client.public.getChainId());
    if (actual !== chainId) throw new VaultError('CHAIN_ERROR', `the RPC at ${client.rpcUrl} serves chain ${actual}, not the configured chain ${chainId}`);
    if (!(await this.#call('reading the contract code', () => hasCode(client, contract, anchorArtifact().deployedBytecode)))) {
      throw new VaultError(
        'CHAIN_ERROR',
        `no dicom-vault anchoring contract at ${contract} on chain ${chainId}: deploy one with \`dicom-vault deploy-contract\``,
      );
    }
    this.#chainChecked = true;
  }

  async #call<T>(doing: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toChainError(err, doing);
    }
  }

  async #submit(b: BatchRecord): Promise<void> {
    const { state, client, chainId, contract } = this.#deps;
    const reason = this.#reasons.get(b.id) ?? 'new';
    const sent = await sendAnchorTransaction({
      client,
      chainId,
      contract,
      root: b.root,
      onSigned: (tx) =>
        state.recordSigned(b.id, {
          txHash: tx.txHash,
          nonce: tx.nonce,
          maxFeePerGas: tx.fees.maxFeePerGas,
          maxPriorityFeePerGas: tx.fees.maxPriorityFeePerGas,
          chainId,
          contract,
          headBlock: tx.headBlock,
          sentAt: new Date(this.#now()).toISOString(),
        }),
    });
    if (sent.status === 'already-anchored') {
      // On chain already (a copy of our root sent by someone else): adopt that anchoring.
      const found = await this.#find(b);
      if (found) this.#included(b, found);
      return;
    }
    this.#reasons.delete(b.id);
    const after = state.batch(b.id)!;
    this.#log.info({ batch: b.id, tx: sent.tx.txHash, nonce: sent.tx.nonce, reason }, 'batch root sent');
    this.emit('submitted', { batchId: b.id, txHash: sent.tx.txHash, nonce: sent.tx.nonce, attempt: after.attempts, reason });
  }

  async #resend(b: BatchRecord, reason: SubmitReason): Promise<void> {
    const { state, client, chainId, contract } = this.#deps;
    const sent = await sendAnchorTransaction({
      client,
      chainId,
      contract,
      root: b.root,
      nonce: b.nonce!,
      replaces: { maxFeePerGas: b.maxFeePerGas ?? 0n, maxPriorityFeePerGas: b.maxPriorityFeePerGas },
      onSigned: (tx) =>
        state.recordSigned(b.id, {
          txHash: tx.txHash,
          nonce: tx.nonce,
          maxFeePerGas: tx.fees.maxFeePerGas,
          maxPriorityFeePerGas: tx.fees.maxPriorityFeePerGas,
          chainId,
          contract,
          headBlock: tx.headBlock,
          sentAt: new Date(this.#now()).toISOString(),
        }),
    });
    if (sent.status === 'already-anchored') return; // mined meanwhile: the next step finds it
    this.#reasons.delete(b.id);
    const after = state.batch(b.id)!;
    this.#log.warn({ batch: b.id, tx: sent.tx.txHash, nonce: sent.tx.nonce, reason }, 'batch root sent again');
    this.emit('submitted', { batchId: b.id, txHash: sent.tx.txHash, nonce: sent.tx.nonce, attempt: after.attempts, reason });
  }

  #find(b: BatchRecord): Promise<Anchoring | undefined> {
    const { state, client, contract } = this.#deps;
    return findAnchoring({
      client,
      contract,
      root: b.root,
      // Newest first: after a fee bump the latest is the likeliest to be mined.
      txHashes: state
        .batchTxs(b.id)
        .map((t) => t.txHash)
        .reverse(),
      fromBlock: b.submittedBlock ?? 0,
    });
  }

  #included(b: BatchRecord, found: Anchoring): void {
    const { state, chainId, contract } = this.#deps;
    state.recordIncluded(b.id, found, { chainId, contract });
    this.#log.info({ batch: b.id, tx: found.txHash, block: found.blockNumber, foreign: found.foreign }, 'batch root mined');
    this.emit('included', { batchId: b.id, txHash: found.txHash, blockNumber: found.blockNumber, confirmations: found.confirmations, foreign: found.foreign });
    if (found.confirmations >= this.#confirmations) this.#confirmed(b.id, found.confirmations);
  }

  #confirmed(id: number, confirmations: number): void {
    const { state } = this.#deps;
    state.recordConfirmed(id, confirmations, new Date(this.#now()).toISOString());
    const b = state.batch(id)!;
    this.#log.info({ batch: id, size: b.size, tx: b.txHash, block: b.blockNumber }, 'batch confirmed');
    this.emit('confirmed', { batchId: id, size: b.size, txHash: b.txHash!, blockNumber: b.blockNumber!, blockHash: b.blockHash! });
  }

  /** Moves one submitted batch: confirmations, reorgs, drops, replacements, stuck transactions. */
  async #follow(batch: BatchRecord, head: number): Promise<void> {
    const { state, client } = this.#deps;
    let b = batch;
    if (b.nonce === null || b.txHash === null) {
      state.recordReset(b.id, 'no transaction recorded');
      return;
    }
    if (b.blockNumber !== null && b.blockHash !== null) {
      const receipt = await this.#call('reading a transaction receipt', () => getReceipt(client, b.txHash!));
      const canonical =
        receipt?.blockHash === b.blockHash
          ? (await this.#call('reading a block', () => client.public.getBlock({ blockNumber: BigInt(b.blockNumber!) }))).hash
          : undefined;
      if (canonical === b.blockHash) {
        const confirmations = head - b.blockNumber + 1;
        if (confirmations >= this.#confirmations) this.#confirmed(b.id, confirmations);
        else if (confirmations !== b.confirmations)
          state.recordIncluded(
            b.id,
            { txHash: b.txHash, blockNumber: b.blockNumber, blockHash: b.blockHash, blockTime: b.blockTime!, confirmations },
            { chainId: this.#deps.chainId, contract: this.#deps.contract },
          );
        return;
      }
      state.recordReorged(b.id, `block ${b.blockNumber} (${b.blockHash}) was reorganised away`);
      this.#log.warn({ batch: b.id, block: b.blockNumber, blockHash: b.blockHash }, 'batch block reorganised away before its confirmations');
      this.emit('reorged', { batchId: b.id, blockNumber: b.blockNumber, blockHash: b.blockHash });
      this.#reasons.set(b.id, 'reorged');
      b = state.batch(b.id)!;
    }
    // Read the nonce before looking for the transaction: if it was used by then, a transaction of
    // ours that used it is visible to the lookup.
    const account = client.account!.address;
    const usedNonces = await this.#call('reading the account nonce', () => client.public.getTransactionCount({ address: account, blockTag: 'latest' }));
    const found = await this.#find(b);
    if (found) {
      this.#reasons.delete(b.id);
      this.#included(b, found);
      return;
    }
    if (usedNonces > b.nonce!) {
      // Another transaction took our nonce (replaced from outside, or ours reverted) and the root
      // is not on chain: send it again with a fresh nonce.
      state.recordReset(b.id, `nonce ${b.nonce} went to another transaction; the root is not on chain`);
      this.#reasons.set(b.id, 'replaced');
      this.#log.warn({ batch: b.id, nonce: b.nonce }, 'batch transaction replaced; sending the root again');
      return;
    }
    const known = await this.#call('reading a transaction', async () => {
      try {
        return await client.public.getTransaction({ hash: b.txHash! });
      } catch (err) {
        if (err instanceof TransactionNotFoundError) return undefined;
        throw err;
      }
    });
    const reorged = this.#reasons.get(b.id) === 'reorged';
    if (!known) await this.#resend(b, reorged ? 'reorged' : 'dropped');
    else if (b.submittedAt !== null && this.#now() - Date.parse(b.submittedAt) >= this.#resendAfterMs) await this.#resend(b, 'stuck');
  }
}
