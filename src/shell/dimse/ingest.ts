// What a C-STORE does with an instance: one ingest session (ingest/session.ts), the same STOW-RS
// and the CLI use, committed before the C-STORE is answered, so success means durable. Each
// C-STORE is its own session: a modality waits for each answer before it sends the next.
import { IngestSession, type IngestSessionDeps } from '../../../ingest/session.ts';
import type { DimseIngest, DimseStoreResult } from './scp.ts';

export function dimseIngest(deps: IngestSessionDeps, chunkSize: number): DimseIngest {
  return {
    async store(part10, { signal }): Promise<DimseStoreResult> {
      const session = new IngestSession(deps, { channel: 'dimse', chunkSize, signal });
      let report;
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
    },
  };
}
