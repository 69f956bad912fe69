// What a C-STORE does with an instance: one ingest session (ingest/session.ts), the same STOW-RS
// and the CLI use, committed before the C-STORE is answered, so success means durable. Each
// C-STORE is its own session: a modality waits for each answer before it sends the next.
import { IngestSession, type IngestSessionDeps, type SessionReport } from '../../../ingest/session.ts';
import type { DimseIngest, DimseStoreResult } from './scp.ts';
import { STORE_FAILURE } from '../../dicom/status.ts';
import type { IngestLimiter } from '../limits.ts';
import type { NodeMetrics } from '../metrics.ts';

export function dimseIngest(
  deps: IngestSessionDeps,
  chunkSize: number,
  limits?: { ingests: Pick<IngestLimiter, 'acquire'>; metrics?: Pick<NodeMetrics, 'countBusy'> },
): DimseIngest {
  return {
    async store(part10, { signal, callingAeTitle }): Promise<DimseStoreResult> {
      const slot = limits?.ingests.acquire(`ae:${callingAeTitle}`) ?? { release: () => undefined };
      if ('refused' in slot) {
        limits?.metrics?.countBusy('dimse');
        return { status: 'failed', dimseStatus: STORE_FAILURE.OUT_OF_RESOURCES, comment: `${slot.refused}: retry later` };
      }
      try {
        return await storeOne(part10, signal);
      } finally {
        slot.release();
      }
    },
  };

  async function storeOne(part10: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<DimseStoreResult> {
    const session = new IngestSession(deps, { channel: 'dimse', chunkSize, signal });
    let report: SessionReport;
    try {
      const refused = await session.add(part10, 'C-STORE');
      if (refused !== undefined) {
        await session.discard();
        return { status: 'failed', dimseStatus: refused.status, comment: refused.reason };
      }
      report = await session.commit();
    } catch (err) {
      await session.discard();
      throw err;
    }
    const failure = report.failures[0];
    return failure === undefined ? { status: 'stored' } : { status: 'failed', dimseStatus: failure.status, comment: failure.reason };
  }
}
