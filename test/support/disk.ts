// Tests that write gigabytes check the disk first: a clear failure beats filling the disk of a
// machine that others share.
import { statfs } from 'node:fs/promises';

/** Headroom left free for everyone else on the machine, in bytes (2 GiB). */
export const DEFAULT_DISK_HEADROOM = 2 * 2 ** 30;

/** Throws, naming the numbers, unless `dir`'s file system has `bytes` + `headroom` available. */
export async function requireFreeSpace(dir: string, bytes: number, what: string, headroom = DEFAULT_DISK_HEADROOM): Promise<void> {
  const s = await statfs(dir);
  const available = s.bavail * s.bsize;
  if (available < bytes + headroom) {
    const gib = (n: number): string => `${(n / 2 ** 30).toFixed(1)} GiB`;
    throw new Error(
      `not enough disk space for ${what}: it writes ~${gib(bytes)} under ${dir}, which has ${gib(available)} available ` +
        `(${gib(headroom)} are kept free for others); free some space or point TMPDIR elsewhere`,
    );
  }
}
