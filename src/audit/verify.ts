// `dicom-vault audit verify`: the whole log against its signed and anchored heads. Nothing stored
// is believed: every leaf is hashed again, the tree rebuilt, and its root compared at every head;
// every head's signature is checked under the node's key, its link to the head before and the
// consistency proof between them; every anchored head (checked on the chain by the caller) must be
// a head of this log. The entries themselves say where they belong (index, previous leaf's hash),
// which names the first entry changed, dropped, inserted or moved; where an attacker rewrote those
// too, the first head that no longer matches bounds the change to the entries it added.
import type { KeyObject } from 'node:crypto';
import { parseLeaf } from './entry.ts';
import { headCid, headHash, verifyHeadSignature } from './head.ts';
import type { AuditLogStore, StoredHead } from './store.ts';
import { Frontier, leafHash, verifyConsistency } from './tree.ts';

export type ProblemKind =
  | 'changed'
  | 'dropped'
  | 'inserted'
  | 'reordered'
  | 'truncated'
  | 'head-signature'
  | 'head-chain'
  | 'head-mismatch'
  | 'anchor-missing'
  | 'anchor-invalid';

export interface VerifyProblem {
  kind: ProblemKind;
  /** The first entry concerned. */
  index?: number;
  /** The head concerned (its size). */
  head?: number;
  message: string;
}

/** An anchored head as the caller found it: its CID, and whether its receipt verified (against the chain, or the anchor database). */
export interface AnchoredHead {
  cid: string;
  ok: boolean;
  detail: string;
}

export interface VerifyReport {
  ok: boolean;
  entries: number;
  heads: number;
  anchoredHeads: number;
  /** Entries covered by the latest head that verified. */
  verifiedThrough: number;
  problems: VerifyProblem[];
  /** The problem at the lowest entry index (what to look at first). */
  first?: VerifyProblem;
}

const same = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.from(a).equals(b);

export function verifyLog(store: AuditLogStore, publicKey: KeyObject, anchors: readonly AnchoredHead[] = [], chunk = 10_000): VerifyReport {
  const problems: VerifyProblem[] = [];
  const heads = store.heads();
  const n = store.size();
  const anchoredCids = new Set(anchors.filter((a) => a.ok).map((a) => a.cid));

  // -- heads: signed by this node, chained, each consistent with the one before --------------
  let prev: StoredHead | undefined;
  for (const h of heads) {
    const label = `head of ${h.size} entries${anchoredCids.has(h.cid) ? ' (anchored)' : ''}`;
    if (!verifyHeadSignature(h, publicKey)) problems.push({ kind: 'head-signature', head: h.size, message: `${label} is not signed by this node's audit key` });
    if (h.cid !== headCid(h.body).toString()) problems.push({ kind: 'head-chain', head: h.size, message: `${label}: its CID is not its body's` });
    const linked =
      prev === undefined
        ? h.prevSize === 0 && h.prevHash === undefined
        : h.prevSize === prev.size && h.prevHash !== undefined && same(h.prevHash, headHash(prev.body));
    if (!linked) problems.push({ kind: 'head-chain', head: h.size, message: `${label} does not name the head before it (${prev?.size ?? 'none'})` });
    else if (prev !== undefined && !verifyConsistency(prev.size, h.size, h.proof, prev.root, h.root))
      problems.push({
        kind: 'head-chain',
        head: h.size,
        message: `${label} is not consistent with the head of ${prev.size} entries: the log was not only appended to`,
      });
    prev = h;
  }
  for (const a of anchors) {
    if (!a.ok) problems.push({ kind: 'anchor-invalid', message: `anchored head ${a.cid}: ${a.detail}` });
    else if (!heads.some((h) => h.cid === a.cid))
      problems.push({
        kind: 'anchor-missing',
        message: `the chain holds audit head ${a.cid} (${a.detail}), which this log does not have: its heads were rewritten`,
      });
  }

  // -- entries: each where it says it belongs, linked to the one before ----------------------
  // What each position declares, to tell a dropped entry from one moved elsewhere.
  const declared = new Float64Array(n).fill(-1);
  const seen = new Uint8Array(n);
  for (let from = 0; from < n; from += chunk) {
    for (const [i, e] of store.scan(from, Math.min(n, from + chunk)).entries()) {
      const f = parseLeaf(e.leaf);
      declared[from + i] = f?.index ?? -1;
    }
  }
  let structural: VerifyProblem | undefined;
  const frontier = Frontier.empty();
  let headAt = 0;
  let lastGood: StoredHead | undefined;
  let mismatch: VerifyProblem | undefined;
  let prevHash: Uint8Array | undefined;
  let coverAt = 0;
  for (let from = 0; from < n; from += chunk) {
    for (const [i, e] of store.scan(from, Math.min(n, from + chunk)).entries()) {
      const p = from + i;
      const hash = leafHash(e.leaf);
      if (structural === undefined) {
        const f = parseLeaf(e.leaf);
        const d = declared[p]!;
        if (f === undefined) structural = { kind: 'changed', index: p, message: `entry ${p} is not a well-formed entry: it was changed` };
        else if (d !== p) {
          if (d > p) {
            const later = declared.indexOf(p, p + 1);
            structural =
              later >= 0
                ? { kind: 'reordered', index: p, message: `entry ${p} was moved: position ${p} holds entry ${d}, and entry ${p} sits at position ${later}` }
                : { kind: 'dropped', index: p, message: `entry ${p} was dropped${d - p > 1 ? ` (entries ${p} to ${d - 1} are missing)` : ''}` };
          } else {
            structural =
              d >= 0 && seen[d] === 1
                ? { kind: 'inserted', index: p, message: `an entry was inserted at position ${p} (it claims to be entry ${d}, which came before)` }
                : { kind: 'reordered', index: p, message: `entry ${p} was moved: position ${p} holds entry ${d}` };
          }
        } else if (p > 0 && prevHash !== undefined && !same(f.prev, prevHash)) {
          structural = { kind: 'changed', index: p - 1, message: `entry ${p - 1} was changed: entry ${p} was written after a different entry ${p - 1}` };
        } else {
          // An entry is written before any head that covers it: one dated after that head's
          // signature was put there later (the log cut back and grown again).
          while (coverAt < heads.length && heads[coverAt]!.size <= p) coverAt++;
          const cover = heads[coverAt];
          if (cover !== undefined && f.time > Date.parse(cover.time))
            structural = {
              kind: 'changed',
              index: p,
              message: `entry ${p} was written at ${new Date(f.time).toISOString()}, after the head of ${cover.size} entries (${cover.time}) that covers it: entries from ${p} on were replaced`,
            };
        }
        if (d >= 0 && d < n) seen[d] = 1;
      }
      prevHash = hash;
      frontier.push(hash);
      while (headAt < heads.length && heads[headAt]!.size < p + 1) headAt++;
      while (headAt < heads.length && heads[headAt]!.size === p + 1) {
        const h = heads[headAt]!;
        if (same(frontier.root(), h.root)) {
          if (mismatch === undefined) lastGood = h;
        } else if (mismatch === undefined) {
          const a = lastGood?.size ?? 0;
          mismatch = {
            kind: 'head-mismatch',
            index: a,
            head: h.size,
            message: `the entries no longer hash to the ${anchoredCids.has(h.cid) ? 'anchored ' : ''}head of ${h.size} entries: an entry from ${a} to ${h.size - 1} was changed, dropped, inserted or moved`,
          };
        }
        headAt++;
      }
    }
  }
  if (structural !== undefined) problems.push(structural);
  if (mismatch !== undefined) {
    // The entries themselves show nothing wrong but a head disagrees: the one change they cannot
    // show is to the last entry written (nothing after it names it), or all of them were rewritten.
    if (structural === undefined && mismatch.head === n && heads.every((h) => h.size <= n))
      mismatch.message += ` (the entries are linked among themselves: either entry ${n - 1} was changed, or the entries from ${mismatch.index} on were rewritten)`;
    problems.push(mismatch);
  }
  const latest = heads.at(-1);
  if (latest !== undefined && latest.size > n)
    problems.push({
      kind: 'truncated',
      index: n,
      head: latest.size,
      message: `the log has ${n} entries but a head signed ${latest.size}: entries from ${n} on were removed`,
    });

  // The entries' own evidence is exact; a head's only bounds the change to the entries it added.
  const withIndex = problems.filter((p) => p.index !== undefined).sort((a, b) => a.index! - b.index!);
  const first = structural ?? withIndex[0] ?? problems[0];
  return {
    ok: problems.length === 0,
    entries: n,
    heads: heads.length,
    anchoredHeads: anchoredCids.size,
    verifiedThrough: mismatch === undefined && structural === undefined ? Math.min(n, latest?.size ?? 0) : (lastGood?.size ?? 0),
    problems,
    ...(first !== undefined ? { first } : {}),
  };
}
