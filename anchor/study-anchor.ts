// The anchor half of `dicom-vault verify <study>`: is the study's current root anchored, does its
// receipt hold against the chain, and is every version anchored before still in the study's
// history (a rewritten history leaves anchored roots that the DAG no longer reaches)?
import { CID } from 'multiformats/cid';
import { isVaultError } from '../src/core/errors.ts';
import type { Catalog } from '../src/catalog/catalog.ts';
import type { BlockStore } from '../storage/block-store.ts';
import { getVerified } from '../storage/verified.ts';
import { decodeStudyManifest } from '../src/format/dag.ts';
import type { ChainReader } from './anchoring.ts';
import type { ReceiptJson } from './receipt.ts';
import type { AnchorState, LeafState } from './state.ts';
import type { TrustAnchor } from './trust.ts';
import { verifyReceipt, type VerifyReceiptReturnType } from './verify-receipt.ts';

export interface StudyAnchorDeps {
  store: Pick<BlockStore, 'get'>;
  catalog: Pick<Catalog, 'latestVersion' | 'pendingAnchors'>;
  /** The node's anchor state; undefined when anchoring never ran in this data directory. */
  state: Pick<AnchorState, 'studyLeaves' | 'leaf' | 'receipt'> | undefined;
  /** Opens a read-only chain connection, only when a receipt is to be checked. */
  openChain: () => Promise<ChainReader | undefined>;
  /** The node's own chain and contract, when it knows them: the receipt is checked against them, not against itself. */
  trust?: TrustAnchor | undefined;
}

export interface StudyAnchorProblem {
  /** 'unanchored' | 'history' | 'chain' | a receipt check name (verify-receipt.ts). */
  check: string;
  message: string;
}

export interface StudyAnchorReport {
  ok: boolean;
  /** State of the current version's anchoring; 'unanchored' if it was never queued. */
  state: LeafState | 'unanchored';
  version: number;
  root: string;
  receipt?: ReceiptJson;
  verification?: VerifyReceiptReturnType;
  problems: StudyAnchorProblem[];
}

/** Roots of the study's versions as its DAG says (newest first), walking prev links while they verify. */
async function dagVersionRoots(store: Pick<BlockStore, 'get'>, root: string): Promise<{ roots: Set<string>; complete: boolean }> {
  const roots = new Set<string>();
  let cursor: CID | null = CID.parse(root);
  while (cursor) {
    roots.add(cursor.toString());
    try {
      cursor = decodeStudyManifest(await getVerified(store, cursor), cursor).prev;
    } catch (err) {
      if (isVaultError(err)) return { roots, complete: false }; // verifyStudy names the broken block
      throw err;
    }
  }
  return { roots, complete: true };
}

export async function checkStudyAnchor(deps: StudyAnchorDeps, studyInstanceUID: string): Promise<StudyAnchorReport | undefined> {
  const latest = deps.catalog.latestVersion(studyInstanceUID);
  if (!latest) return undefined;
  const report: StudyAnchorReport = { ok: false, state: 'unanchored', version: latest.version, root: latest.root, problems: [] };
  const leaves = deps.state?.studyLeaves(studyInstanceUID) ?? [];
  const queuedInCatalog = new Set(
    deps.catalog
      .pendingAnchors(Number.MAX_SAFE_INTEGER)
      .filter((q) => q.studyInstanceUID === studyInstanceUID)
      .map((q) => q.root),
  );

  const current = leaves.find((l) => l.root === latest.root);
  if (current) report.state = current.state;
  else if (queuedInCatalog.has(latest.root)) report.state = 'pending';
  else
    report.problems.push({
      check: 'unanchored',
      message: `the current root ${latest.root} (version ${latest.version}) was never queued for anchoring: it was not made by this node's ingest`,
    });

  // History: an anchored version the DAG no longer reaches was rewritten or dropped.
  const anchored = leaves.filter((l) => l.state === 'confirmed');
  if (anchored.length > 0) {
    const dag = await dagVersionRoots(deps.store, latest.root);
    if (dag.complete) {
      for (const l of anchored) {
        if (!dag.roots.has(l.root))
          report.problems.push({ check: 'history', message: `anchored version ${l.version} (root ${l.root}) is not in the study's history` });
      }
    }
  }

  if (report.state === 'confirmed' && deps.state) {
    const receipt = deps.state.receipt(latest.root)!;
    report.receipt = receipt;
    let reader: ChainReader | undefined;
    try {
      reader = await deps.openChain();
      if (!reader)
        report.problems.push({ check: 'chain', message: 'no chain to check the receipt against (anchoring is off or the embedded chain state is gone)' });
      else {
        const v = await verifyReceipt({ receipt, client: reader.client, expectedCid: latest.root, ...(deps.trust ? { trust: [deps.trust] } : {}) });
        report.verification = v;
        for (const c of v.checks) if (!c.ok) report.problems.push({ check: c.check, message: c.message });
      }
    } catch (err) {
      report.problems.push({ check: 'chain', message: `cannot check the receipt: ${err instanceof Error ? err.message : String(err)}` });
    } finally {
      await reader?.close();
    }
  }
  report.ok = report.problems.length === 0;
  return report;
}
