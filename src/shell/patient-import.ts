// The receiving node's check of a patient archive's evidence (the EvidenceCheck of
// src/transfer/patient-archive.ts), run after the blocks and keys passed and before anything is
// stored: every anchor receipt on a chain (anchor/verify-receipt.ts) against a trust pin, and the
// audit entries' inclusion proofs into the signed head under the sender's audit key
// (src/audit/portable.ts), with the head's own receipt when it was anchored. The audit key is the
// archive's unless `--audit-key` pins the one the sending node publishes (GET /api/audit/key).
//
// Which chain and pin: `--trust FILE` (a dicom-vault-trust/1 file, the sending node's
// `anchor trust-file` obtained from the sender, not from the archive) with `--rpc URL`, as for
// `anchor verify-receipt`; without them, the receiving node's own external chain (--chain-rpc and
// --contract: a shared chain the sender may anchor on too). A node without a chain (--chain none),
// or with only its private embedded one (where no other node anchors), and no --trust keeps the
// receipts as unverified and says so in the report: it cannot ask the sender's chain, and refusing
// every archive would leave a patient no way to move to a provider that does not anchor; the
// receipts stay in imports/ to be checked later with `dicom-vault verify-receipt`. A receipt that
// is checked and fails refuses the import.
import { readFile } from 'node:fs/promises';
import { nodeTrustAnchor, openChainReader, type ChainReader } from '../../anchor/anchoring.ts';
import { createChainClient } from '../../anchor/chain/client.ts';
import { parseTrustFile, type TrustAnchor } from '../../anchor/trust.ts';
import { verifyReceipt, type Verdict } from '../../anchor/verify-receipt.ts';
import { publicKeyOf } from '../audit/head.ts';
import { checkPortableAudit } from '../audit/portable.ts';
import { VaultError } from '../core/errors.ts';
import type { ArchiveEvidence, EvidenceCheck } from '../transfer/patient-archive.ts';
import type { NodeOptions } from './config.ts';

export interface ImportTrustFlags {
  /** A dicom-vault-trust/1 file: the chains and contracts whose receipts are accepted. */
  trust?: string;
  /** The JSON-RPC endpoint to ask (with --trust; default the node's own chain). */
  rpc?: string;
  /** The sending node's audit key as it publishes it (GET /api/audit/key: SPKI DER, base64): the archive's must be this one. */
  auditKey?: string;
}

export interface ReceiptsVerified {
  carried: number;
  /** Checked on the chain, each with its verdict (holds, self-attested, not-final). */
  checked: number;
  verdicts: Partial<Record<Verdict, number>>;
  /** The chain asked, as pinned. */
  chain?: { chainId: number; contract: string; label?: string };
  /** Why the receipts were not checked (no chain here and no --trust). */
  unverified?: string;
}

export interface EvidenceVerified extends Record<string, unknown> {
  receipts: ReceiptsVerified;
  audit: {
    entries: number;
    proofs: number;
    records: number;
    head: { size: number; cid: string; time: string; anchored: Verdict | 'not anchored' | 'unverified' } | null;
    key: string;
    /** Whether the key was pinned (--audit-key) rather than taken from the archive. */
    keyPinned: boolean;
  };
}

interface Chain {
  pins: TrustAnchor[];
  reader: ChainReader;
}

/** The node's evidence check; `close` ends the chain connection it opened (a private anvil for an embedded chain at rest). */
export async function patientEvidenceCheck(options: NodeOptions, flags: ImportTrustFlags = {}): Promise<{ check: EvidenceCheck; close(): Promise<void> }> {
  const auditKey = flags.auditKey === undefined ? undefined : publicKeyOf(flags.auditKey.trim());
  let pins: TrustAnchor[] | undefined;
  let unverified: string | undefined;
  if (flags.trust !== undefined) {
    let text: string;
    try {
      text = await readFile(flags.trust, 'utf8');
    } catch (cause) {
      throw new VaultError('BAD_REQUEST', `cannot read the trust file ${flags.trust}`, { cause });
    }
    pins = parseTrustFile(text).anchors;
    if (flags.rpc === undefined && options.anchor?.mode !== 'external')
      throw new VaultError(
        'BAD_REQUEST',
        "--trust needs --rpc URL: the JSON-RPC endpoint of the sending node's chain (this node has no external chain to ask)",
      );
  } else if (flags.rpc !== undefined) {
    throw new VaultError('BAD_REQUEST', '--rpc needs --trust FILE: the chain and contract you accept, from a source you trust rather than the archive');
  } else if (options.anchor?.mode === 'external') {
    const pin = await nodeTrustAnchor(options.anchor, options.dataDir, true);
    if (pin === undefined) unverified = "this node's chain has no --contract to pin: pass --trust FILE --rpc URL of the sending node's chain";
    else pins = [pin];
  } else if (options.anchor?.mode === 'embedded') {
    // The embedded chain is this node's private development chain: no other node anchors on it,
    // so every receipt from elsewhere would fail there.
    unverified =
      "this node's own chain is its private embedded one, where no other node anchors (no chain to check them on): import with --trust FILE --rpc URL of the sending node's chain, or check them with `dicom-vault verify-receipt`";
  } else {
    unverified =
      "this node has no chain (--chain none): check them with `dicom-vault verify-receipt` and the sending node's trust file, or import with --trust FILE --rpc URL";
  }

  let chain: Chain | undefined;
  const open = async (): Promise<Chain> => {
    if (chain !== undefined) return chain;
    let reader: ChainReader | undefined;
    if (flags.rpc !== undefined) reader = { client: createChainClient({ rpcUrl: flags.rpc }), close: async () => undefined };
    else if (options.anchor?.mode === 'external') reader = await openChainReader(options.anchor, options.dataDir);
    if (reader === undefined) throw new VaultError('BAD_REQUEST', '--trust needs --rpc URL: this node has no external chain to ask');
    chain = { pins: pins!, reader };
    return chain;
  };

  const verify = async (receipt: object, cid: string, what: string): Promise<Verdict> => {
    const c = await open();
    const v = await verifyReceipt({ receipt, client: c.reader.client, trust: c.pins, expectedCid: cid, finality: { waitMs: 0 } });
    if (v.verdict === 'fails' || v.verdict === 'unpinned') {
      const failed = v.checks.filter((x) => !x.ok);
      const elsewhere = failed.some((x) => x.check === 'chainId' || x.check === 'genesis' || x.check === 'contract');
      throw new VaultError(
        'CAR_INVALID',
        `${what} does not verify on the chain (${failed.map((x) => `${x.check}: ${x.message}`).join('; ') || v.verdict})${elsewhere ? "; if the sender anchors on another chain, import with --trust FILE --rpc URL of that chain (the sender's `anchor trust-file`)" : ''}: nothing was imported`,
      );
    }
    return v.verdict;
  };

  const check: EvidenceCheck = async (evidence: ArchiveEvidence, signal?: AbortSignal) => {
    const audit = checkPortableAudit(evidence.audit, auditKey);
    if (!audit.ok) throw new VaultError('CAR_INVALID', `${audit.reason}: nothing was imported`);
    const receipts: ReceiptsVerified = { carried: evidence.receipts.length, checked: 0, verdicts: {} };
    let headAnchored: Verdict | 'not anchored' | 'unverified' = 'not anchored';
    const headReceipt = (evidence.audit as { headReceipt?: object }).headReceipt;
    if (pins === undefined) {
      receipts.unverified = unverified!;
      if (headReceipt !== undefined) headAnchored = 'unverified';
    } else {
      const pin = pins[0]!;
      receipts.chain = { chainId: pin.chainId, contract: pin.contract, ...(pin.label !== undefined ? { label: pin.label } : {}) };
      for (const [n, r] of evidence.receipts.entries()) {
        signal?.throwIfAborted();
        const verdict = await verify(r.receipt, r.root, `receipt ${n + 1} (study version ${r.root})`);
        receipts.checked++;
        receipts.verdicts[verdict] = (receipts.verdicts[verdict] ?? 0) + 1;
      }
      if (headReceipt !== undefined && audit.check.head !== null) headAnchored = await verify(headReceipt, audit.check.head.cid, "the audit head's receipt");
    }
    return {
      receipts,
      audit: {
        ...audit.check,
        keyPinned: auditKey !== undefined,
        head: audit.check.head === null ? null : { ...audit.check.head, anchored: headAnchored },
      },
    } satisfies EvidenceVerified;
  };
  return { check, close: async () => chain?.reader.close() };
}
