// A bounded parallel map for the S3 store's part uploads, ranged reads and index rebuild. Written
// here rather than taken from p-map: eighteen lines, and no dependency for them.
/** Runs fn(0..count-1) with at most `limit` running; the first failure rejects (after all settle). */
export async function mapLimit<T>(count: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const results = new Array<T>(count);
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < count) {
      const i = next++;
      try {
        results[i] = await fn(i);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  if (failure !== undefined) throw failure.err;
  return results;
}
