// GET {prefix}/studies/{study}/receipt[?version=N]: the anchor receipt of a study version (the
// current one unless ?version says otherwise). Not part of DICOMweb: a dicom-vault extension,
// documented in anchor/README.md, so whoever retrieves a study can check it against the chain
// with `dicom-vault verify-receipt`.
//
//   200 application/json  the receipt (dicom-vault-receipt/2: `attest` says "self-attested" on a
//                         development chain), once its batch is confirmed
//   202 application/json  { state: pending | submitted, ... } while it is on its way; Retry-After
//   404                   STUDY_NOT_FOUND, RECEIPT_NOT_FOUND (no such version), ANCHOR_DISABLED
import type { FastifyPluginAsync } from 'fastify';
import type { AccessRouteConfig } from '../../access/policy.ts';
import type { Catalog } from '../../catalog/catalog.ts';
import { VaultError } from '../../core/errors.ts';
import { assertUid } from '../../dicom/uid.ts';
import type { AnchorState } from '../../../anchor/state.ts';

/** Seconds a client is asked to wait before asking again for a receipt on its way. */
export const RECEIPT_RETRY_AFTER_S = 10;

export interface ReceiptDeps {
  catalog: Pick<Catalog, 'latestVersion' | 'versions'>;
  /** The node's anchoring; absent when it runs without (--chain none). */
  receipts?: {
    state: Pick<AnchorState, 'leaf' | 'receipt' | 'batch'>;
    requiredConfirmations: number;
  };
}

/** What a receipt not yet issued is waiting for. */
export interface ReceiptPending {
  state: 'pending' | 'submitted';
  version: number;
  cid: string;
  batch?: { id: number; size: number; state: string; txHash: string | null; blockNumber: number | null; confirmations: number; required: number };
}

export function receiptService(deps: ReceiptDeps): FastifyPluginAsync {
  return async (app) => {
    const config: AccessRouteConfig = { access: { action: 'retrieve', dataType: 'receipt' } };
    app.get<{ Params: { study: string }; Querystring: { version?: string } }>('/studies/:study/receipt', { config }, async (request, reply) => {
      const study = assertUid(request.params.study, 'Study Instance UID');
      // A study outside the caller's scope has no versions: 404 as for one never stored.
      const scope = request.access?.scope;
      const latest = deps.catalog.latestVersion(study, scope);
      if (!latest) throw new VaultError('STUDY_NOT_FOUND', 'no such study');
      let version = latest;
      const asked = request.query.version;
      if (asked !== undefined) {
        if (!/^[1-9]\d{0,8}$/.test(asked)) throw new VaultError('INVALID_QUERY', 'version must be a positive whole number');
        const found = deps.catalog.versions(study, scope).find((v) => v.version === Number(asked));
        if (!found) throw new VaultError('RECEIPT_NOT_FOUND', `study has no version ${asked}`);
        version = found;
      }
      if (!deps.receipts) throw new VaultError('ANCHOR_DISABLED', 'this node does not anchor study versions');
      const { state, requiredConfirmations } = deps.receipts;
      const receipt = state.receipt(version.root);
      if (receipt) return reply.type('application/json').send(receipt);
      // Not confirmed yet: say how far it got. A root not yet handed over by the catalog is pending.
      const leaf = state.leaf(version.root);
      const body: ReceiptPending = { state: leaf?.state === 'submitted' ? 'submitted' : 'pending', version: version.version, cid: version.root };
      const batch = leaf?.batchId == null ? undefined : state.batch(leaf.batchId);
      if (batch) {
        body.batch = {
          id: batch.id,
          size: batch.size,
          state: batch.state,
          txHash: batch.txHash,
          blockNumber: batch.blockNumber,
          confirmations: batch.confirmations,
          required: requiredConfirmations,
        };
      }
      return reply.code(202).header('retry-after', String(RECEIPT_RETRY_AFTER_S)).type('application/json').send(body);
    });
  };
}
