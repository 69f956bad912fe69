// One batch of entries sealed and appended as leaves: shared by the log on the main thread and
// its writer thread (writer.ts), so both write the same bytes.
import type { AuditRecord } from './entry.ts';
import { sealLeaf } from './entry.ts';
import type { AppendBatch, AuditLogStore, StoredEntry } from './store.ts';
import { Frontier, leafHash, type TreeNode } from './tree.ts';

/** An entry to write, with the key it is sealed under (resolved by the caller: a destroyed key is the node's). */
export interface SealItem {
  record: AuditRecord;
  subject: string;
  time: number;
  key: Uint8Array;
}

/**
 * Appends `items` in one transaction; returns the batch and the tree's frontier after it.
 * `frontier` is the caller's view of the tree: when another process appended since, the
 * frontier is rebuilt from the store.
 */
export function appendSealed(store: AuditLogStore, frontier: Frontier | undefined, items: readonly SealItem[]): { batch: AppendBatch; frontier: Frontier } {
  const read = (level: number, index: number) => store.node(level, index);
  let after: Frontier | undefined;
  const batch = store.append((size) => {
    const f = frontier?.size === size ? frontier.clone() : Frontier.of(read, size);
    let prev = size === 0 ? undefined : (f.last ?? read(0, size - 1));
    const entries: StoredEntry[] = [];
    const nodes: TreeNode[] = [];
    for (const [i, p] of items.entries()) {
      const index = size + i;
      const leaf = sealLeaf(p.record, index, p.time, p.subject, prev, p.key);
      const hash = leafHash(leaf);
      for (const n of f.push(hash)) nodes.push(n);
      entries.push({ index, time: p.time, subject: p.subject, leaf });
      prev = hash;
    }
    after = f;
    return { entries, nodes };
  });
  return { batch, frontier: after! };
}
