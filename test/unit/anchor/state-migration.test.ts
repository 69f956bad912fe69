// anchor.db written by release 0.1 (commit 2fe1005: fixtures/anchor-2fe1005.db, made with that
// commit's AnchorState: a confirmed batch of three roots and one root still queued; the receipts
// it issued are in anchor-2fe1005.json) opened by this release: schema 2 keeps every leaf, the
// receipts come out byte for byte the same (format 2, bare roots), and an erasure of one study
// leaves the other two receipts intact.
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { AnchorState } from '../../../anchor/state.ts';
import { anchorCommitment } from '../../../anchor/commitment.ts';
import { encodeNode } from '../../../src/format/dag.ts';

const FIXTURE = join(import.meta.dirname, 'fixtures');
const old = JSON.parse(readFileSync(join(FIXTURE, 'anchor-2fe1005.json'), 'utf8')) as { roots: string[]; receipts: unknown[] };

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function openCopy(saltOf?: (study: string) => Uint8Array | undefined): Promise<AnchorState> {
  const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-anchor-mig-'));
  dirs.push(dir);
  await copyFile(join(FIXTURE, 'anchor-2fe1005.db'), join(dir, 'anchor.db'));
  return AnchorState.open({ path: join(dir, 'anchor.db'), ...(saltOf ? { saltOf } : {}) });
}

describe('anchor.db of release 0.1', () => {
  it('migrates with every leaf, and issues the same receipts as before', async () => {
    const salt = randomBytes(32);
    const state = await openCopy(() => salt);
    try {
      for (const [i, root] of old.roots.slice(0, 3).entries()) {
        expect(state.receipt(root)).toEqual(old.receipts[i]);
        expect(state.leaf(root)).toMatchObject({ studyInstanceUID: `1.2.3.${i + 1}`, leafData: null, state: 'confirmed' });
      }
      // The root queued before the upgrade stays a bare leaf; a root queued after gets its commitment.
      const fresh = encodeNode({ after: 1 }).cid;
      state.enqueue([{ root: fresh.toString(), studyInstanceUID: '1.2.3.5', version: 1, enqueuedAt: '2026-12-08T00:00:00.000Z' }]);
      expect(state.leaf(old.roots[3]!)?.leafData).toBeNull();
      expect(Buffer.from(state.leaf(fresh.toString())!.leafData!).equals(Buffer.from(anchorCommitment(salt, fresh)))).toBe(true);
      const batch = state.closeBatch(10, '2026-12-08T00:01:00.000Z')!;
      expect(batch.size).toBe(2);
      expect(state.batchLeaves(batch.id)).toEqual([old.roots[3], fresh.toString()]);
    } finally {
      state.close();
    }
  });

  it("erasing one study of a migrated batch keeps the others' receipts", async () => {
    const state = await openCopy();
    try {
      const r = state.eraseStudy('1.2.3.2', '2026-12-08T00:00:00.000Z');
      // A bare leaf of format 2 is no commitment: nothing to name in a certificate.
      expect(r).toEqual({ anchored: [], dropped: 0 });
      expect(state.leaf(old.roots[1]!)).toBeUndefined();
      expect(state.studyLeaves('1.2.3.2')).toEqual([]);
      expect(state.batchLeaves(1)).toEqual([old.roots[0], '', old.roots[2]]);
      expect(state.receipt(old.roots[0]!)).toEqual(old.receipts[0]);
      expect(state.receipt(old.roots[2]!)).toEqual(old.receipts[2]);
      // The queued root of an erased study is dropped, not anchored.
      expect(state.eraseStudy('1.2.3.4', '2026-12-08T00:00:00.000Z')).toEqual({ anchored: [], dropped: 1 });
      expect(state.queued().count).toBe(0);
    } finally {
      state.close();
    }
  });
});
