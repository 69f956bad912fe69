// Group commit of flushes, as the fs store (fsyncs) and the S3 pack writer (uploads) do them: a
// caller arriving while a flush runs joins the next one, which starts once the running one has
// settled, so it covers every put made before any of its callers asked. Ingest asks for a flush at
// the end of every instance; without sharing, 100 small instances meant 100 flushes in a row,
// each waiting for the previous one's syncs. Flushes never overlap, so none resolves while an
// earlier one is still at work. The shared flush ignores any one caller's signal: a caller whose
// signal aborts stops waiting, and the flush goes on for the others.
import { abortError, raceAbort } from '../src/core/abort.ts';

export class GroupCommit {
  readonly #flushOnce: () => Promise<void>;
  /** The last flush started, settled or not, never rejecting: the next one starts after it. */
  #tail: Promise<void> = Promise.resolve();
  /** The flush that has not started yet, which new callers join. */
  #next: Promise<void> | undefined;

  /** `flushOnce` does one flush; its rejection is every joined caller's. */
  constructor(flushOnce: () => Promise<void>) {
    this.#flushOnce = flushOnce;
  }

  /** Joins the next flush (starting one if none is waiting) and resolves or rejects with it. */
  flush(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) return Promise.reject(abortError(signal));
    if (this.#next === undefined) {
      const next = this.#tail.then(() => {
        if (this.#next === next) this.#next = undefined;
        return this.#flushOnce();
      });
      this.#next = next;
      this.#tail = next.catch(() => undefined);
    }
    return signal === undefined ? this.#next : raceAbort(this.#next, signal);
  }
}
