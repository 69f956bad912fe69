// The audit log's writer thread (writer.ts starts it): seals entries and commits them to audit.db
// on its own SQLite connection, so that neither the sealing nor the commit (an fsync with
// --audit-sync full) runs on the node's main thread.
//
// Group commit: when a commit ends, every batch that arrived meanwhile is taken at once
// (receiveMessageOnPort) and written in one transaction, so a busy node pays one commit for
// many requests even when each commit is slow.
import { type MessagePort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { appendSealed, type SealItem } from './batch.ts';
import { SqliteAuditLogStore } from './store.ts';
import type { Frontier } from './tree.ts';

export interface WriterData {
  path: string;
  pragmas: readonly string[];
  port: MessagePort;
  /** Int32Array over a SharedArrayBuffer: [0] counts replies, so the main thread can wait for one synchronously. */
  replies: SharedArrayBuffer;
  maxBatch: number;
}

export type WriterRequest = { id: number; items: SealItem[] } | { id: number; close: true };
export type WriterReply = { id: number; first: number } | { id: number; error: string } | { id: number; closed: true };

const data = workerData as WriterData;
const replies = new Int32Array(data.replies);
const port = data.port;
let store: SqliteAuditLogStore | undefined;
let openError: string | undefined;
try {
  store = SqliteAuditLogStore.open(data.path, { pragmas: data.pragmas });
} catch (err) {
  openError = `the audit log cannot be opened: ${(err as Error).message}`;
}
let frontier: Frontier | undefined;

function reply(r: WriterReply): void {
  port.postMessage(r);
  Atomics.add(replies, 0, 1);
  Atomics.notify(replies, 0);
}

function write(group: Array<{ id: number; items: SealItem[] }>): void {
  if (store === undefined) {
    for (const g of group) reply({ id: g.id, error: openError! });
    return;
  }
  try {
    const { batch, frontier: after } = appendSealed(
      store,
      frontier,
      group.flatMap((g) => g.items),
    );
    frontier = after;
    let first = batch.entries[0]?.index ?? 0;
    for (const g of group) {
      reply({ id: g.id, first });
      first += g.items.length;
    }
  } catch (err) {
    frontier = undefined;
    for (const g of group) reply({ id: g.id, error: (err as Error).message });
  }
}

function handle(first: WriterRequest): void {
  const waiting: WriterRequest[] = [first];
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) waiting.push(m.message as WriterRequest);
  let group: Array<{ id: number; items: SealItem[] }> = [];
  let n = 0;
  for (const r of waiting) {
    if ('close' in r) {
      if (group.length > 0) write(group);
      group = [];
      store?.close();
      store = undefined;
      openError = 'the audit log is closed';
      reply({ id: r.id, closed: true });
      continue;
    }
    if (n + r.items.length > data.maxBatch && group.length > 0) {
      write(group);
      group = [];
      n = 0;
    }
    group.push(r);
    n += r.items.length;
  }
  if (group.length > 0) write(group);
}

port.on('message', handle);
