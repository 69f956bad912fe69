// Where the audit log's batches are written. The node uses a writer thread (writer-worker.ts):
// sealing and the SQLite commit leave the main thread, which only posts the entries and, before
// a response starts, awaits the commit that holds its access entry (see the access seam in
// src/shell/app.ts), so the commit runs while the request is being handled instead of before.
//
// node:sqlite is synchronous and bound to its thread, so a thread of its own is the only way
// to overlap a commit with the request: no library offers an asynchronous SQLite without a
// native addon.
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { VaultError } from '../core/errors.ts';
import type { SealItem } from './batch.ts';
import type { WriterData, WriterReply, WriterRequest } from './writer-worker.ts';

export interface AuditWriter {
  /** Appends `items` after everything written before; resolves with the first one's index. */
  write(items: SealItem[]): Promise<number>;
  /** Blocks until every write posted so far has been answered (closing, CLIs, tests). */
  settleSync(): void;
  /** Settles, then stops the writer. */
  close(): void;
}

interface Waiting {
  resolve: (first: number) => void;
  reject: (err: Error) => void;
}

export class ThreadAuditWriter implements AuditWriter {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #replies = new Int32Array(new SharedArrayBuffer(4));
  readonly #waiting = new Map<number, Waiting>();
  #next = 0;
  #dead: Error | undefined;
  #closed = false;

  constructor(options: { path: string; pragmas?: readonly string[]; maxBatch: number }) {
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    const data: WriterData = {
      path: options.path,
      pragmas: options.pragmas ?? [],
      port: port2,
      replies: this.#replies.buffer as SharedArrayBuffer,
      maxBatch: options.maxBatch,
    };
    this.#worker = new Worker(new URL('./writer-worker.ts', import.meta.url), { workerData: data, transferList: [port2] });
    this.#worker.unref();
    this.#port.on('message', (r: WriterReply) => this.#dispatch(r));
    this.#port.unref();
    const die = (err: Error) => {
      this.#dead ??= err;
      for (const w of this.#waiting.values()) w.reject(this.#dead);
      this.#waiting.clear();
    };
    this.#worker.on('error', (err) => die(new VaultError('AUDIT_UNAVAILABLE', `the audit log's writer failed: ${err.message}`, { cause: err })));
    this.#worker.on('exit', (code) => {
      if (!this.#closed) die(new VaultError('AUDIT_UNAVAILABLE', `the audit log's writer stopped (exit code ${code})`));
    });
  }

  #dispatch(r: WriterReply): void {
    const w = this.#waiting.get(r.id);
    if (w === undefined) return;
    this.#waiting.delete(r.id);
    // Pending writes keep the process alive (a command awaiting its entry); an idle writer does not.
    if (this.#waiting.size === 0) this.#port.unref();
    if ('error' in r) w.reject(new VaultError('AUDIT_UNAVAILABLE', `the audit log cannot be written: ${r.error}`));
    else w.resolve('first' in r ? r.first : 0);
  }

  #post(request: Omit<WriterRequest, 'id'>): Promise<number> {
    if (this.#dead !== undefined) return Promise.reject(this.#dead);
    const id = this.#next++;
    return new Promise<number>((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      if (this.#waiting.size === 1) this.#port.ref();
      this.#port.postMessage({ id, ...request });
    });
  }

  write(items: SealItem[]): Promise<number> {
    if (this.#closed) return Promise.reject(new VaultError('AUDIT_UNAVAILABLE', 'the audit log is closed'));
    // A key is often a view into Buffer's shared pool: posted as is, the whole pool (64 KiB) would
    // be copied with it. Its own 32 bytes are enough.
    return this.#post({ items: items.map((i) => ({ ...i, key: new Uint8Array(i.key) })) });
  }

  settleSync(): void {
    while (this.#waiting.size > 0 && this.#dead === undefined) {
      const seen = Atomics.load(this.#replies, 0);
      for (let m = receiveMessageOnPort(this.#port); m !== undefined; m = receiveMessageOnPort(this.#port)) this.#dispatch(m.message as WriterReply);
      if (this.#waiting.size === 0) break;
      // Woken by each reply; the timeout only lets a writer that died be noticed.
      if (Atomics.wait(this.#replies, 0, seen, 1_000) === 'timed-out' && this.#worker.threadId === -1) break;
    }
  }

  close(): void {
    if (this.#closed) return;
    const closing = this.#post({ close: true });
    closing.catch(() => undefined);
    this.settleSync();
    this.#closed = true;
    void this.#worker.terminate();
  }
}
