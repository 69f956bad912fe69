// `dicom-vault verify <study>`: walks a study's DAG from its latest root through every version,
// instance node, link node and chunk; re-hashes every block, checks every GCM tag and every
// instance's SHA-256; names each missing or corrupt block instead of stopping at the first (a
// link node missing is named once and the chunks under it skipped; the other branches are still
// checked). Walks the trees branch by branch: memory does not grow with an instance.
import { createHash } from 'node:crypto';
import { CID } from 'multiformats/cid';
import { VaultError, isVaultError } from '../core/errors.ts';
import type { Catalog } from '../catalog/catalog.ts';
import type { DataKey } from '../format/keys.ts';
import type { BlockStore } from '../../storage/block-store.ts';
import { getVerified } from '../../storage/verified.ts';
import {
  addedTree,
  chunkAadOf,
  chunkTree,
  decodeInstanceNode,
  decodeStudyManifest,
  instanceKeyOf,
  openInstanceEnvelope,
  openStudyEnvelope,
  type InstanceEnvelope,
  type InstanceNode,
  type StudyManifest,
} from '../format/dag.ts';
import type { LinkTree } from '../format/tree.ts';
import { openChunk } from '../format/seal.ts';

export interface VerifyProblem {
  /** missing: the store has no such block; unreadable: the store failed to answer; corrupt: bytes or tag wrong; mismatch: the DAG disagrees with itself or the catalog. */
  kind: 'missing' | 'unreadable' | 'corrupt' | 'mismatch';
  cid: string;
  /** Where in the DAG: 'manifest v3', 'instance <sop> chunk 12', ... */
  where: string;
  message: string;
}

export interface VerifyReport {
  studyInstanceUID: string;
  root: string;
  versions: number;
  instances: number;
  blocks: number;
  bytes: number;
  problems: VerifyProblem[];
  ok: boolean;
}

export interface VerifyDeps {
  store: Pick<BlockStore, 'get'>;
  catalog: Pick<Catalog, 'latestVersion' | 'listInstances'>;
  keys: { require(studyInstanceUID: string): DataKey };
}

export interface VerifyProgress {
  blocks: number;
  bytes: number;
}

/** The fields of a catalog row that the instance node seals (its envelope, and its size). */
const CATALOG_FIELDS = ['studyInstanceUID', 'seriesInstanceUID', 'sopInstanceUID', 'sopClassUID', 'transferSyntaxUID', 'sha256', 'size'] as const;

export async function verifyStudy(deps: VerifyDeps, studyInstanceUID: string, onProgress?: (p: VerifyProgress) => void): Promise<VerifyReport> {
  const latest = deps.catalog.latestVersion(studyInstanceUID);
  if (!latest) throw new VaultError('STUDY_NOT_FOUND', 'no such study');
  const dataKey = deps.keys.require(studyInstanceUID);
  const report: VerifyReport = { studyInstanceUID, root: latest.root, versions: 0, instances: 0, blocks: 0, bytes: 0, problems: [], ok: false };
  const problem = (err: unknown, cid: CID, where: string): void => {
    const kind: VerifyProblem['kind'] = isVaultError(err, 'BLOCK_NOT_FOUND')
      ? 'missing'
      : isVaultError(err, 'INSTANCE_CORRUPT')
        ? 'mismatch'
        : isVaultError(err, 'BLOCK_CORRUPT')
          ? 'corrupt'
          : 'unreadable';
    report.problems.push({ kind, cid: cid.toString(), where, message: err instanceof Error ? err.message : String(err) });
  };
  const fetch = async (cid: CID, where: string): Promise<Uint8Array | undefined> => {
    try {
      const bytes = await getVerified(deps.store, cid);
      report.blocks++;
      report.bytes += bytes.length;
      if (report.blocks % 64 === 0) onProgress?.({ blocks: report.blocks, bytes: report.bytes });
      return bytes;
    } catch (err) {
      problem(err, cid, where);
      return undefined;
    }
  };

  // A tree's link nodes: read verified and counted; a failure is the tree's to name (with the branch).
  const readLinkNode = async (cid: CID): Promise<Uint8Array> => {
    const bytes = await getVerified(deps.store, cid);
    report.blocks++;
    report.bytes += bytes.length;
    return bytes;
  };
  /** Each leaf of `tree`; a link node that fails is named once and its leaves skipped. */
  const leaves = async function* (tree: LinkTree, owner: CID, where: string): AsyncGenerator<{ index: number; cid: CID }> {
    for (let index = 0; index < tree.count; ) {
      try {
        yield { index, cid: await tree.leaf(index) };
        index++;
      } catch (err) {
        const details = isVaultError(err) ? err.details : undefined;
        const end = typeof details?.endLeaf === 'number' && details.endLeaf > index ? details.endLeaf : tree.count;
        problem(err, typeof details?.cid === 'string' ? CID.parse(details.cid) : owner, `${where} link node (leaves ${index}-${end - 1})`);
        index = end;
      }
    }
  };

  // The catalog's current rows, compared with what the DAG's envelopes seal (the catalog alone
  // answers searches and metadata, so a row edited on disk would change what is served).
  // By node: two rows naming one node are both compared.
  const rows = Map.groupBy(deps.catalog.listInstances({ study: studyInstanceUID }), (r) => r.nodeCid);
  const reachable = new Set<string>();
  let cursor: CID | null = CID.parse(latest.root);
  while (cursor) {
    const where = `manifest ${cursor}`;
    const bytes = await fetch(cursor, where);
    if (!bytes) break; // the rest of the history hangs off this block
    let manifest: StudyManifest;
    try {
      manifest = decodeStudyManifest(bytes, cursor);
      const env = openStudyEnvelope(dataKey.key, manifest);
      if (env.studyInstanceUID !== studyInstanceUID) throw new VaultError('INSTANCE_CORRUPT', 'manifest belongs to another study');
    } catch (err) {
      problem(err, cursor, where);
      break;
    }
    report.versions++;
    let added: LinkTree;
    try {
      added = addedTree(manifest, cursor, readLinkNode);
    } catch (err) {
      problem(err, cursor, where);
      break;
    }
    for await (const { cid: nodeCid } of leaves(added, cursor, `manifest v${manifest.version}`)) {
      reachable.add(nodeCid.toString());
      await verifyInstance(nodeCid, `instance node (version ${manifest.version})`);
    }
    cursor = manifest.prev;
  }

  for (const inst of [...rows.values()].flat()) {
    if (!reachable.has(inst.nodeCid)) {
      report.problems.push({
        kind: 'mismatch',
        cid: inst.nodeCid,
        where: `instance ${inst.sopInstanceUID}`,
        message: 'the catalog lists an instance that the study DAG does not reach',
      });
    }
  }
  report.ok = report.problems.length === 0;
  return report;

  async function verifyInstance(nodeCid: CID, where: string): Promise<void> {
    const bytes = await fetch(nodeCid, where);
    if (!bytes) return;
    let node: InstanceNode;
    let env: InstanceEnvelope;
    let chunks: LinkTree;
    try {
      node = decodeInstanceNode(bytes, nodeCid);
      env = openInstanceEnvelope(dataKey.key, node);
      chunks = chunkTree(node, nodeCid, readLinkNode);
    } catch (err) {
      problem(err, nodeCid, where);
      return;
    }
    report.instances++;
    for (const row of rows.get(nodeCid.toString()) ?? []) {
      const sealed = { ...env, size: node.size };
      const differ = CATALOG_FIELDS.filter((f) => row[f] !== sealed[f]);
      if (differ.length > 0) {
        report.problems.push({
          kind: 'mismatch',
          cid: nodeCid.toString(),
          where: `instance ${row.sopInstanceUID}`,
          message: `the catalog's ${differ.join(', ')} differ from the instance's sealed envelope`,
        });
      }
    }
    const key = instanceKeyOf(dataKey.key, node);
    const hash = createHash('sha256');
    let size = 0;
    let intact = true;
    let expected = 0;
    for await (const { index: i, cid } of leaves(chunks, nodeCid, `instance ${env.sopInstanceUID}`)) {
      if (i !== expected) intact = false; // a branch was skipped
      expected = i + 1;
      const chunkWhere = `instance ${env.sopInstanceUID} chunk ${i}`;
      const block = await fetch(cid, chunkWhere);
      if (!block) {
        intact = false;
        continue;
      }
      try {
        const plain = openChunk(key, i, block, chunkAadOf(node, i));
        hash.update(plain);
        size += plain.length;
      } catch (err) {
        intact = false;
        problem(err, cid, chunkWhere);
      }
    }
    if (expected !== chunks.count) intact = false;
    if (intact && (size !== node.size || hash.digest('hex') !== env.sha256)) {
      report.problems.push({
        kind: 'mismatch',
        cid: nodeCid.toString(),
        where: `instance ${env.sopInstanceUID}`,
        message: 'the decrypted chunks do not hash to the SHA-256 recorded at ingest',
      });
    }
  }
}
