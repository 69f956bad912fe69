// The patient's audit log, checked where the patient is: in the browser, with nothing but Web APIs
// (fetch, WebCrypto's SHA-256 and Ed25519), the node's public API and a chain's JSON-RPC. The node's
// word is not taken for anything: every entry's leaf is hashed again and its inclusion proof
// followed to the head it names; the head's signature is checked under the key the patient pinned;
// the anchored head's receipt is followed into the anchoring batch and the batch's root looked up
// on the chain (the transaction, its event, the contract's record, the block); and the latest head
// must extend the anchored one (consistency proof), or the node is showing two histories.
//
// The parts: audit-proofs.ts (bytes, RFC 9162 proofs, leaves and heads: the checks made without
// the chain) and audit-anchor.ts (an anchored head's receipt, checked over the chain's JSON-RPC);
// this file fetches the log, runs those checks over it and says what each result means. What
// the others export that a caller uses is exported from here too: the patient's page and the
// tests import this file alone.
//
// Browser code: no node: imports, no Buffer. It also runs under Node 24, which has the same APIs.

import { type AnchorChain, type AnchorResult, type Fetch, verifyHeadAnchor } from './audit-anchor.ts';
import {
  canonical,
  cidText,
  fromBase64,
  headCidBytes,
  importNodeKey,
  leafHash,
  openLeafDetails,
  parseHeadBody,
  parseLeafHeader,
  rootFromInclusionPath,
  same,
  signedBy,
  verifyConsistency,
} from './audit-proofs.ts';

export {
  ANCHOR_CODE_SHA256,
  ANCHORED_AT_SELECTOR,
  ANCHORED_TOPIC,
  type AnchorResult,
  type ChainPin,
  DEV_ACCOUNTS,
  DEV_CHAIN_IDS,
  verifyHeadAnchor,
} from './audit-anchor.ts';
export {
  cidText,
  fromBase64,
  headCidBytes,
  leafHash,
  openLeafDetails,
  parseHeadBody,
  parseLeafHeader,
  rootFromInclusionPath,
  sha256,
  toHex,
  treeHead,
  verifyConsistency,
} from './audit-proofs.ts';

/** What each entry came to. */
export type EntryStatus = 'verified' | 'pending-anchor' | 'failed';
/** The log as a whole: `warning` as soon as one thing failed (an entry, a head, the key, the anchor). */
export type LogStatus = 'verified' | 'pending-anchor' | 'warning';

export interface VerifyAuditOptions {
  /** The node's origin (the page's own: location.origin). */
  baseUrl: string;
  /** The patient's session token. */
  token: string;
  /** The node's audit key (SPKI DER, base64) as the patient pinned it; absent on first use. */
  nodeKey?: string;
  /**
   * The keys that seal the patient's entries (subject → raw AES-256 key, base64), when the page
   * holds them. With a subject's key each entry is opened here and its details compared with what
   * the node showed; without it the details are the node's word (the proofs cover the ciphertext).
   */
  subjectKeys?: Record<string, string>;
  chain: AnchorChain;
  /** Filters of GET /api/patient/audit. */
  query?: { grantee?: string; study?: string; limit?: number; before?: number };
  /** Default globalThis.fetch. */
  fetch?: Fetch;
  /** Seconds since the epoch (tests); default Date.now(). */
  now?: () => number;
}

export interface EntryResult {
  index: number;
  time: string;
  subject: string;
  /** The details as the node opened them; null when the patient's key was destroyed (erasure) or the entry does not open. */
  record: Record<string, unknown> | null;
  /** True when the details were opened in the browser under the patient's key and match the node's; false when they are the node's word. */
  detailsVerified: boolean;
  status: EntryStatus;
  /** Why, in words a patient can read. */
  reason: string;
  /** Size of the head the entry was proven into. */
  head?: number;
}

export interface AuditVerification {
  status: LogStatus;
  /** One line for the page's banner. */
  summary: string;
  /** The key the node serves (SPKI DER, base64): what the page pins on first use. */
  nodeKey: string;
  /** True when no key was pinned and the served one was used. */
  firstUse: boolean;
  /** Set when the served key is not the pinned one. */
  keyMismatch?: { pinned: string; served: string };
  entries: EntryResult[];
  /** The head the entries were proven into. */
  head?: { size: number; time: string; cid: string; signatureValid: boolean };
  anchor?: AnchorResult;
  /** What failed beyond single entries (key, heads, consistency), in words. */
  problems: string[];
}

// ---------------------------------------------------------------------------------------------
// The patient's log

interface HeadView {
  size: number;
  root: string;
  time: string;
  cid: string;
  body: string;
  signature: string;
  receipt: unknown;
}
interface HeadCheck {
  view: HeadView;
  root: Uint8Array | undefined;
  problem?: string;
  anchor?: AnchorResult;
}
interface EntryView {
  index: number;
  time: string;
  subject: string;
  record: Record<string, unknown> | null;
  leaf: string;
  head?: number;
  proof?: string[];
}

/**
 * Fetches the patient's audit entries and checks every one of them, the head they prove into, its
 * anchor on the chain, and that the node's latest head extends the anchored one. Never throws for
 * what the node or the chain answered: a failure is a result (status `warning`, with reasons).
 * Throws only when the node cannot be asked at all (network, or the session refused).
 */
export async function verifyPatientAudit(o: VerifyAuditOptions): Promise<AuditVerification> {
  const fetchFn: Fetch = o.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const now = o.now ?? (() => Math.floor(Date.now() / 1000));
  const base = o.baseUrl.replace(/\/+$/, '');
  const getJson = async <T>(path: string, auth: boolean): Promise<{ status: number; body: T }> => {
    const res = await fetchFn(`${base}${path}`, { headers: { accept: 'application/json', ...(auth ? { authorization: `Bearer ${o.token}` } : {}) } });
    return { status: res.status, body: (await res.json().catch(() => undefined)) as T };
  };

  const problems: string[] = [];
  const served = await getJson<{ publicKey: string }>('/api/audit/key', false);
  if (served.status !== 200 || typeof served.body?.publicKey !== 'string') throw new Error(`the node did not give its audit key (HTTP ${served.status})`);
  const servedKey = served.body.publicKey;
  const pinnedKey = o.nodeKey ?? servedKey;
  let keyMismatch: AuditVerification['keyMismatch'];
  if (o.nodeKey !== undefined && !same(fromBase64(o.nodeKey), fromBase64(servedKey))) {
    keyMismatch = { pinned: o.nodeKey, served: servedKey };
    problems.push("the node's audit key is not the one you pinned: its log cannot be trusted until you know why (a new node, or an impostor)");
  }
  const key = await importNodeKey(pinnedKey);
  if (key === undefined) problems.push('the pinned audit key is not an Ed25519 public key');

  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) q.set(k, String(v));
  const listed = await getJson<{ entries: EntryView[]; heads: HeadView[] }>(`/api/patient/audit${q.size > 0 ? `?${q}` : ''}`, true);
  if (listed.status !== 200) throw new Error(`the node refused the audit log (HTTP ${listed.status})`);
  const { entries, heads } = listed.body;

  // -- the head(s) the entries prove into: signed under the pinned key, fields = signed body ----
  const checkHead = async (h: HeadView): Promise<HeadCheck> => {
    const parsed = parseHeadBody(h.body);
    let problem: string | undefined;
    if (!(await signedBy(key, h.body, h.signature))) problem = `the head of ${h.size} entries is not signed by the node's pinned key`;
    else if (parsed === undefined || parsed.size !== h.size || !same(parsed.root, fromBase64(h.root)) || parsed.time !== h.time)
      problem = `the head of ${h.size} entries is not what its signature covers`;
    else if (h.cid !== cidText(await headCidBytes(h.body))) problem = `the head of ${h.size} entries is anchored under a CID that is not its own`;
    if (problem !== undefined) problems.push(problem);
    return { view: h, root: parsed?.root, ...(problem !== undefined ? { problem } : {}) };
  };
  const anchorOf = async (hc: HeadCheck): Promise<void> => {
    if (hc.problem !== undefined || hc.view.receipt === null || hc.view.receipt === undefined) return;
    hc.anchor = await verifyHeadAnchor(hc.view, hc.view.receipt, o.chain, fetchFn, now);
    if (hc.anchor.status === 'failed') problems.push(`the anchor of the head of ${hc.view.size} entries: ${hc.anchor.reason}`);
  };
  const headChecks = new Map<number, HeadCheck>();
  for (const h of heads) {
    const hc = await checkHead(h);
    await anchorOf(hc);
    headChecks.set(h.size, hc);
  }
  const shown = heads[0] === undefined ? undefined : headChecks.get(heads[0].size);

  // -- when the head shown is not anchored yet (the newest entries came after the last anchor; the
  // patient's own last read of the log is one), the latest anchored head still covers the older
  // entries: the node names it for the oldest entry shown (GET /api/patient/audit/{index} proves
  // into the latest anchored head that covers it). A consistency proof from it to the head shown
  // makes every entry below its size an entry of the anchored head too.
  let bridge: HeadCheck | undefined;
  const underShown = shown === undefined ? [] : entries.filter((e) => e.head === shown.view.size).map((e) => e.index);
  if (shown !== undefined && shown.problem === undefined && shown.anchor === undefined && shown.root !== undefined && underShown.length > 0) {
    const one = await getJson<{ head?: HeadView }>(`/api/patient/audit/${Math.min(...underShown)}`, true);
    const h = one.body?.head;
    if (one.status === 200 && h !== undefined && h.size < shown.view.size && h.receipt !== null && h.receipt !== undefined) {
      const hc = await checkHead(h);
      if (hc.problem === undefined && hc.root !== undefined) {
        await anchorOf(hc);
        const c = await getJson<{ proof: string[] }>(`/api/audit/consistency?first=${h.size}&second=${shown.view.size}`, false);
        const proof = (c.body?.proof ?? []).map((p) => fromBase64(p) ?? new Uint8Array());
        if (c.status === 200 && (await verifyConsistency(h.size, shown.view.size, proof, hc.root, shown.root))) bridge = hc;
        else
          problems.push(
            `the head of ${shown.view.size} entries does not extend the anchored head of ${h.size}: the log was rewritten, or it shows different histories to different readers`,
          );
      }
    }
  }

  // -- no split view: the node's latest head extends the anchored one -----------------------------
  const anchoredHead = shown?.anchor !== undefined ? shown : bridge;
  if (anchoredHead?.anchor?.status === 'verified' && anchoredHead.root !== undefined) {
    const latest = await getJson<HeadView>('/api/audit/head', false);
    if (latest.status === 200 && latest.body.size > anchoredHead.view.size) {
      const l = latest.body;
      const lp = parseHeadBody(l.body);
      const c = await getJson<{ proof: string[] }>(`/api/audit/consistency?first=${anchoredHead.view.size}&second=${l.size}`, false);
      const proof = (c.body?.proof ?? []).map((p) => fromBase64(p) ?? new Uint8Array());
      if (!(await signedBy(key, l.body, l.signature)) || lp === undefined || lp.size !== l.size)
        problems.push(`the node's latest head (${l.size} entries) is not signed by the pinned key`);
      else if (c.status !== 200 || !(await verifyConsistency(anchoredHead.view.size, l.size, proof, anchoredHead.root, lp.root)))
        problems.push(
          `the node's latest head (${l.size} entries) does not extend the anchored head of ${anchoredHead.view.size}: the log was rewritten, or it shows different histories to different readers`,
        );
    }
  }

  // -- each entry: its own header, its proof into its head, its link to the entry before ----------
  const leaves = new Map<number, Uint8Array>();
  for (const e of entries) {
    const leaf = fromBase64(e.leaf);
    if (leaf !== undefined) leaves.set(e.index, leaf);
  }
  const results: EntryResult[] = [];
  for (const e of entries) {
    let record = e.record ?? null;
    let detailsVerified = false;
    const out = (status: EntryStatus, reason: string): EntryResult => ({
      index: e.index,
      time: e.time,
      subject: e.subject,
      record,
      detailsVerified,
      status,
      reason,
      ...(e.head !== undefined ? { head: e.head } : {}),
    });
    const leaf = leaves.get(e.index);
    const header = leaf === undefined ? undefined : parseLeafHeader(leaf);
    if (leaf === undefined || header === undefined) {
      results.push(out('failed', `entry ${e.index} is not a well-formed entry: it was changed`));
      continue;
    }
    if (header.index !== e.index || header.time !== Date.parse(e.time) || header.subject !== e.subject) {
      results.push(
        out(
          'failed',
          `entry ${e.index} is not where or when the node says (it was written as entry ${header.index} at ${new Date(header.time).toISOString()})`,
        ),
      );
      continue;
    }
    // The details: opened here when the page holds the subject's key, else the node's word.
    const subjectKey = o.subjectKeys?.[e.subject];
    if (subjectKey !== undefined) {
      const opened = await openLeafDetails(leaf, fromBase64(subjectKey) ?? new Uint8Array());
      if (opened === undefined) {
        results.push(out('failed', `entry ${e.index} does not open under your key: it was changed`));
        continue;
      }
      if (record !== null && canonical(opened) !== canonical(record)) {
        record = opened;
        results.push(out('failed', `the node showed details for entry ${e.index} that are not what the entry holds (shown here: what it holds)`));
        continue;
      }
      record = opened;
      detailsVerified = true;
    }
    const hc = e.head === undefined ? undefined : headChecks.get(e.head);
    if (hc === undefined || e.proof === undefined) {
      // No head covers it yet: only its link to the entry before can be checked. (With a proof the
      // head commits to the leaf itself, and a changed neighbour fails its own proof.)
      const before = leaves.get(e.index - 1);
      if (before !== undefined && !same(header.prev, await leafHash(before)))
        results.push(out('failed', `entry ${e.index} was written after a different entry ${e.index - 1} than the one shown: one of the two was changed`));
      else results.push(out('pending-anchor', `entry ${e.index} is not in a signed head yet`));
      continue;
    }
    if (hc.problem !== undefined) {
      results.push(out('failed', hc.problem));
      continue;
    }
    const proof = e.proof.map((p) => fromBase64(p) ?? new Uint8Array());
    const root = await rootFromInclusionPath(await leafHash(leaf), e.index, hc.view.size, proof);
    if (root === undefined || !same(root, hc.root)) {
      results.push(out('failed', `entry ${e.index} was changed: it no longer hashes into the signed head of ${hc.view.size} entries`));
      continue;
    }
    if (keyMismatch !== undefined) {
      results.push(out('failed', 'the head is signed by a key that is not the one you pinned'));
      continue;
    }
    const viaBridge = hc.anchor === undefined && bridge !== undefined && hc === shown && e.index < bridge.view.size;
    const a = viaBridge ? bridge!.anchor : hc.anchor;
    const where = viaBridge
      ? `in the head of ${hc.view.size} entries, which extends the anchored head of ${bridge!.view.size}`
      : `in the head of ${hc.view.size} entries`;
    if (a === undefined) results.push(out('pending-anchor', `in the signed head of ${hc.view.size} entries; its anchor on the chain is pending`));
    else if (a.status === 'failed') results.push(out('failed', `the anchor of its head does not hold: ${a.reason}`));
    else if (a.status === 'pending') results.push(out('pending-anchor', `${where}; ${a.reason}`));
    else results.push(out('verified', `${where}, ${a.reason}`));
  }

  const failed = results.filter((r) => r.status === 'failed').length;
  const pending = results.filter((r) => r.status === 'pending-anchor').length;
  const status: LogStatus = failed > 0 || problems.length > 0 ? 'warning' : pending > 0 ? 'pending-anchor' : 'verified';
  const summary =
    status === 'warning'
      ? `Warning: ${failed > 0 ? `${failed} of ${results.length} entries failed verification` : 'the log failed verification'}${problems[0] !== undefined ? ` (${problems[0]})` : ''}`
      : status === 'pending-anchor'
        ? `${results.length - pending} of ${results.length} entries verified; ${pending} wait for their anchor on the chain`
        : `All ${results.length} entries verified in this browser against the node's pinned key and the chain`;
  const anchor = shown?.anchor ?? bridge?.anchor;
  return {
    status,
    summary,
    nodeKey: servedKey,
    firstUse: o.nodeKey === undefined,
    ...(keyMismatch !== undefined ? { keyMismatch } : {}),
    entries: results,
    ...(shown !== undefined
      ? {
          head: {
            size: shown.view.size,
            time: shown.view.time,
            cid: shown.view.cid,
            signatureValid: shown.problem === undefined || !shown.problem.includes('not signed'),
          },
        }
      : {}),
    ...(anchor !== undefined ? { anchor } : {}),
    problems,
  };
}
