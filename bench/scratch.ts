// How the benchmark gives back the disk space of a finished scenario without skewing the next one.
//
// Removing a data directory frees its inodes, and ext4 without a journal (these VMs' root
// filesystem) will not reuse an inode freed in the last 60 s (360 s while its inode-table block
// is dirty, which new files in the same block keep it): every file created meanwhile checks each
// such inode on its way to a free one. After a scenario's 20,000 files were removed, the next
// scenario's file creations spent a tenth of the node's CPU there (perf: recently_deleted under
// __ext4_new_inode); Orthanc, a file per instance, faces the same check. A cost of the
// benchmark's own cleanup, not of either system. So a finished scenario's files are truncated to
// nothing (the blocks are free at once, the inodes stay in use) and the directories removed
// when the run is over.
import type { Dirent } from 'node:fs';
import { readdir, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';

export class ScratchSpace {
  readonly #released: string[] = [];

  /** Frees the disk space of every file under `dir` now; removes `dir` in `removeAll`. */
  async release(dir: string): Promise<void> {
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { recursive: true, withFileTypes: true });
    } catch {
      return; // never created, or gone
    }
    this.#released.push(dir);
    const files = entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < files.length) await truncate(files[next++]!, 0).catch(() => undefined);
    };
    await Promise.all(Array.from({ length: 16 }, worker));
  }

  /** Removes every released directory (at the end of the run, after the last measurement). */
  async removeAll(): Promise<void> {
    for (const dir of this.#released.splice(0)) await rm(dir, { recursive: true, force: true });
  }
}
