// Aborts, one way everywhere: an aborted signal's reason becomes a VaultError (ABORTED unless the
// reason already is one), so an abort is never mistaken for success or for another failure.
import { VaultError } from './errors.ts';

/** An AbortSignal's reason as a VaultError, so aborts are never mistaken for success. */
export function abortError(signal: AbortSignal): VaultError {
  return signal.reason instanceof VaultError ? signal.reason : new VaultError('ABORTED', 'Request aborted', { cause: signal.reason });
}

/** Throws `abortError(signal)` once the signal has aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw abortError(signal);
}

/** `work`, or an abort error as soon as `signal` aborts (the work itself goes on). */
export function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
