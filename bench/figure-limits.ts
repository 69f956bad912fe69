// The machine limits each figure of the bench runs against (ingest and retrieval ceilings, the
// crypto floor of CPU per GiB, the empty round trip, RAM) and their short names for tables and
// chart labels, from the measured machine limits (limits.ts). Apart from figures.ts because the
// figures, the chart's reference lines and the target checks all read them.
import { ingestLimit, type MachineLimits } from './limits.ts';

// ---------- limits each figure runs against ----------

export interface FigureLimits {
  /** Ingest's ceiling: the lower of one core's ingest crypto and the disk as the fs store writes. */
  ingest: { name: string; MBps: number };
  /** Retrieval's ceiling: the lower of loopback HTTP and one core of the same crypto (verify + decrypt). */
  retrieve: { name: string; MBps: number };
  /** One core's ingest crypto, MB/s: its inverse is the CPU floor per GiB. */
  cryptoMBps: number;
  /** Empty loopback request, ms: the floor of every latency. */
  roundTripMs: number | null;
  /** RAM of the machine, MiB. */
  memoryMiB: number;
}

/**
 * Short names of the limits figures run against, for table cells and chart labels; the limits
 * table (limits.ts LIMIT_LABELS and descriptions) says how each was measured.
 */
export const SHORT_LIMIT_LABELS = {
  ingestCrypto: 'ingest crypto, 1 core',
  diskWrite1MiBFilesParallel: 'disk, 1 MiB files + fsync',
  loopbackHttp: 'loopback HTTP',
  // Retrieval verifies (SHA-256 of the block, GCM tag, SHA-256 of the instance) and decrypts:
  // the same work per byte as ingest's crypto.
  retrieveCrypto: 'verify + decrypt crypto, 1 core',
  roundTrip: 'empty loopback request',
  memory: 'RAM',
} as const;

export function figureLimits(l: MachineLimits): FigureLimits {
  const ing = ingestLimit(l);
  const f = l.figures;
  const retrieve =
    f.loopbackHttp.MBps <= f.ingestCrypto.MBps
      ? { name: SHORT_LIMIT_LABELS.loopbackHttp, MBps: f.loopbackHttp.MBps }
      : { name: SHORT_LIMIT_LABELS.retrieveCrypto, MBps: f.ingestCrypto.MBps };
  // Results written before the round trip was measured have none.
  const trip = (l as Partial<MachineLimits>).roundTrip;
  return {
    ingest: { name: ing.name === 'ingestCrypto' ? SHORT_LIMIT_LABELS.ingestCrypto : SHORT_LIMIT_LABELS.diskWrite1MiBFilesParallel, MBps: ing.MBps },
    retrieve,
    cryptoMBps: f.ingestCrypto.MBps,
    roundTripMs: trip ? trip.medianMs : null,
    memoryMiB: l.machine.memoryGiB * 1024,
  };
}
