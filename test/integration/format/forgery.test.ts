// Forged DAG nodes against the format-2 bindings (src/format/seal.ts, dag.ts): each is refused when
// the node is opened, or before any byte of the wrong data is served, whole reads and range reads
// alike. Two kinds of forger: one without the study's key (anyone who can write blocks and the
// catalog: they can edit every public field but cannot re-seal an envelope), and one with it (the
// node re-sealed, as an insider could): then the chunks' own associated data must refuse.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { ingestInstance } from '../../../ingest/instance.ts';
import type { ByteRange } from '../../../src/dicom/model.ts';
import {
  buildInstanceNode,
  buildStudyManifest,
  chunkTree,
  decodeInstanceNode,
  decodeStudyManifest,
  encodeNode,
  instanceKeyOf,
  openInstanceEnvelope,
  openStudyEnvelope,
  type InstanceNode,
} from '../../../src/format/dag.ts';
import { KeyStore } from '../../../src/format/keys.ts';
import { deriveKeyFor, newSalt, openEnvelope, sealEnvelope } from '../../../src/format/seal.ts';
import { openInstance, type InstanceRef } from '../../../src/read/instance-reader.ts';
import { FsBlockStore } from '../../../storage/fs.ts';
import { getVerified } from '../../../storage/verified.ts';

const CHUNK = 4096;
const STUDY = '1.2.826.0.1.3680043.8.498.27100';
let dir: string;
let store: FsBlockStore;
let keys: KeyStore;
/** A 13-chunk instance (its chunks in the node itself), a 13-chunk one under link nodes (fanout 4), and another instance. */
let flat: InstanceRef;
let deep: InstanceRef;
let other: InstanceRef;

const generated = planStudy({ kind: 'multiframe', instances: 3, frames: 3, rows: 64, columns: 128, seed: 41, studyInstanceUID: STUDY }).instances;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dv-forgery-'));
  store = await FsBlockStore.open({ path: join(dir, 'blocks') });
  keys = KeyStore.open({ path: join(dir, 'keys.db'), masterKey: randomBytes(32) });
  const refs: InstanceRef[] = [];
  for (const [i, g] of generated.entries()) {
    const ingested = await ingestInstance(g.open(), { store, keys }, { chunkSize: CHUNK, ...(i === 1 ? { fanout: 4 } : {}) });
    await ingested.durable;
    refs.push({ studyInstanceUID: STUDY, nodeCid: ingested.node.cid.toString(), sha256: ingested.sha256, size: ingested.size });
  }
  [flat, deep, other] = refs as [InstanceRef, InstanceRef, InstanceRef];
});

afterAll(async () => {
  keys?.close();
  await rm(dir, { recursive: true, force: true });
});

const cidOf = (ref: InstanceRef): CID => CID.parse(ref.nodeCid);

/** The node's raw dag-cbor value, as a forger without keys sees and edits it. */
async function rawNode(ref: InstanceRef): Promise<Record<string, unknown>> {
  return dagCbor.decode(await getVerified(store, cidOf(ref))) as Record<string, unknown>;
}

async function decoded(ref: InstanceRef): Promise<InstanceNode> {
  return decodeInstanceNode(await getVerified(store, cidOf(ref)), cidOf(ref));
}

/** Stores a forged node; the catalog entry a forger would write beside it. */
async function plant(value: unknown, ref: InstanceRef, size = ref.size): Promise<InstanceRef> {
  const node = encodeNode(value);
  await store.put(node.cid, node.bytes);
  return { ...ref, nodeCid: node.cid.toString(), size };
}

/** Every chunk CID of an instance, by index. */
async function chunkCids(ref: InstanceRef): Promise<CID[]> {
  const out: CID[] = [];
  for await (const { cid } of chunkTree(await decoded(ref), cidOf(ref), (c) => getVerified(store, c)).leaves()) out.push(cid);
  return out;
}

/** Reads `range` (default: all) of `ref`: the bytes served before it stopped, and why it stopped. */
async function readAll(ref: InstanceRef, range?: ByteRange): Promise<{ served: number; error: unknown }> {
  let served = 0;
  try {
    const opened = await openInstance({ store, keys }, ref);
    for await (const piece of opened.read(range)) served += piece.length;
    return { served, error: undefined };
  } catch (error) {
    return { served, error };
  }
}

/** Re-seals a flat (depth 0) node with the study's key: what only an insider could do. */
async function reseal(ref: InstanceRef, fields: { size: number; links: CID[] }): Promise<InstanceRef> {
  const node = await decoded(ref);
  const dataKey = keys.require(STUDY).key;
  const envelope = openInstanceEnvelope(dataKey, node);
  const forged = buildInstanceNode(
    instanceKeyOf(dataKey, node),
    node.salt,
    {
      chunkSize: node.chunkSize,
      size: fields.size,
      fanout: node.fanout,
      tree: { depth: node.depth, count: Math.ceil(fields.size / node.chunkSize), links: fields.links },
    },
    envelope,
  );
  await store.put(forged.cid, forged.bytes);
  return { ...ref, nodeCid: forged.cid.toString(), size: fields.size };
}

describe('forged nodes, without the key: refused when opened, before any chunk is read', () => {
  it('the intact instances read whole (the baseline)', async () => {
    for (const ref of [flat, deep, other]) expect(await readAll(ref)).toEqual({ served: ref.size, error: undefined });
    expect((await decoded(flat)).depth).toBe(0);
    expect((await decoded(deep)).depth).toBe(1);
  });

  it('last chunk dropped and size shrunk', async () => {
    const value = await rawNode(flat);
    const links = value.links as CID[];
    expect(links).toHaveLength(13);
    const forged = await plant({ ...value, links: links.slice(0, -1), size: 12 * CHUNK }, flat, 12 * CHUNK);
    const r = await readAll(forged, { offset: 0, length: CHUNK });
    expect(r.served).toBe(0);
    expect(r.error).toMatchObject({ code: 'BLOCK_CORRUPT', details: { cid: forged.nodeCid } });
  });

  it('chunks swapped, and a chunk of another instance put in', async () => {
    const value = await rawNode(flat);
    const links = value.links as CID[];
    const swapped = await plant({ ...value, links: [links[1], links[0], ...links.slice(2)] }, flat);
    const foreign = await plant({ ...value, links: [(await chunkCids(other))[0], ...links.slice(1)] }, flat);
    for (const forged of [swapped, foreign]) {
      const r = await readAll(forged, { offset: 0, length: 100 });
      expect(r).toMatchObject({ served: 0, error: { code: 'BLOCK_CORRUPT', details: { cid: forged.nodeCid } } });
    }
  });

  it("any of the node's fields edited: size, chunk size, fanout, depth, salt, links of a link-node tree; or relabelled as a format-1 node", async () => {
    const flatValue = await rawNode(flat);
    const deepValue = await rawNode(deep);
    const deepLinks = deepValue.links as CID[];
    const edits: Array<[string, Record<string, unknown>, InstanceRef, number?]> = [
      ['size', { ...flatValue, size: (flatValue.size as number) - 1 }, flat, flat.size - 1],
      ['chunkSize', { ...flatValue, chunkSize: 8192, links: (flatValue.links as CID[]).slice(0, 7) }, flat],
      ['fanout', { ...deepValue, fanout: 5 }, deep],
      ['depth', { ...flatValue, depth: 1 }, flat],
      ['salt', { ...flatValue, salt: randomBytes(16) }, flat],
      ['link nodes swapped', { ...deepValue, links: [deepLinks[1], deepLinks[0], ...deepLinks.slice(2)] }, deep],
      // A downgrade: format 1 had no associated data; its key derivation differs, so the envelope does not open.
      [
        'format 1',
        { type: 'dicom-vault/instance@1', chunkSize: CHUNK, size: flat.size, salt: flatValue.salt, chunks: flatValue.links, envelope: flatValue.envelope },
        flat,
      ],
    ];
    for (const [what, value, ref, size] of edits) {
      const forged = await plant(value, ref, size);
      const r = await readAll(forged, { offset: 0, length: 10 });
      expect([what, r.served, (r.error as { code?: string })?.code]).toEqual([what, 0, 'BLOCK_CORRUPT']);
    }
  });

  it("an instance's envelope does not open as a manifest's, nor a manifest's as an instance's", async () => {
    const dataKey = keys.require(STUDY);
    const instanceValue = await rawNode(flat);
    // A manifest built around the instance's salt and envelope: its key is derived for manifests.
    const fake = encodeNode({
      type: 'dicom-vault/study@2',
      version: 1,
      prev: null,
      keyId: dataKey.keyId,
      salt: instanceValue.salt,
      fanout: 1024,
      depth: 0,
      count: 0,
      added: [],
      envelope: instanceValue.envelope,
    });
    expect(() => openStudyEnvelope(dataKey.key, decodeStudyManifest(fake.bytes, fake.cid))).toThrow(/authentication/);

    const manifest = buildStudyManifest(
      dataKey.key,
      { version: 1, prev: null, keyId: dataKey.keyId, fanout: 1024, tree: { depth: 0, count: 1, links: [cidOf(flat)] } },
      { studyInstanceUID: STUDY, createdAt: new Date().toISOString() },
    );
    const m = dagCbor.decode(manifest.bytes) as Record<string, unknown>;
    const forged = await plant({ ...instanceValue, salt: m.salt, envelope: m.envelope }, flat);
    expect(await readAll(forged)).toMatchObject({ served: 0, error: { code: 'BLOCK_CORRUPT' } });

    // The derivations alone, with the same salt and the same associated data: still apart.
    const salt = newSalt();
    const aad = Buffer.from('the same fields');
    const sealed = sealEnvelope(deriveKeyFor('instance', dataKey.key, salt), Buffer.from('{}'), aad);
    expect(() => openEnvelope(deriveKeyFor('manifest', dataKey.key, salt), sealed, aad)).toThrow(/authentication/);
    expect(openEnvelope(deriveKeyFor('instance', dataKey.key, salt), sealed, aad).toString()).toBe('{}');
  });
});

describe('forged manifests, without the key', () => {
  it('any field edited (version, prev, key id, added instances, fanout) no longer opens: history cannot be re-linked', async () => {
    const dataKey = keys.require(STUDY);
    const first = buildStudyManifest(
      dataKey.key,
      { version: 1, prev: null, keyId: dataKey.keyId, fanout: 1024, tree: { depth: 0, count: 1, links: [cidOf(flat)] } },
      { studyInstanceUID: STUDY, createdAt: '2026-12-07T00:00:00.000Z' },
    );
    const second = buildStudyManifest(
      dataKey.key,
      { version: 2, prev: first.cid, keyId: dataKey.keyId, fanout: 1024, tree: { depth: 0, count: 2, links: [cidOf(deep), cidOf(other)] } },
      { studyInstanceUID: STUDY, createdAt: '2026-12-07T00:00:01.000Z' },
    );
    const value = dagCbor.decode(second.bytes) as Record<string, unknown>;
    expect(openStudyEnvelope(dataKey.key, decodeStudyManifest(second.bytes, second.cid)).studyInstanceUID).toBe(STUDY);
    const edits: Array<[string, Record<string, unknown>]> = [
      ['version', { ...value, version: 3 }],
      ['prev', { ...value, prev: null }],
      ['keyId', { ...value, keyId: 'another' }],
      ['added', { ...value, count: 1, added: [cidOf(deep)] }],
      ['fanout', { ...value, fanout: 512 }],
    ];
    for (const [what, edited] of edits) {
      const forged = encodeNode(edited);
      expect(() => openStudyEnvelope(dataKey.key, decodeStudyManifest(forged.bytes, forged.cid)), what).toThrow(/authentication/);
    }
  });
});

describe('forged nodes re-sealed with the key: the chunks refuse, before any of their bytes is served', () => {
  it('last chunk dropped and size shrunk: the new last chunk was not sealed as last', async () => {
    const links = await chunkCids(flat);
    const forged = await reseal(flat, { size: 12 * CHUNK, links: links.slice(0, -1) });
    // Opens (its envelope is valid), but chunk 11 fails: a whole read serves chunks 0-10 and stops.
    const whole = await readAll(forged);
    expect(whole.served).toBe(11 * CHUNK);
    expect(whole.error).toMatchObject({ code: 'BLOCK_CORRUPT', details: { cid: links[11]!.toString() } });
    // A range read of the last chunk serves nothing.
    expect(await readAll(forged, { offset: 11 * CHUNK + 10, length: 100 })).toMatchObject({ served: 0, error: { code: 'BLOCK_CORRUPT' } });
  });

  it('size grown by a byte, or shrunk by one, with every chunk kept', async () => {
    const links = await chunkCids(flat);
    for (const size of [flat.size - 1, 13 * CHUNK]) {
      if (size === flat.size) continue;
      const forged = await reseal(flat, { size, links });
      const r = await readAll(forged, { offset: 12 * CHUNK, length: size - 12 * CHUNK });
      expect([size, r.served, (r.error as { code?: string })?.code]).toEqual([size, 0, 'BLOCK_CORRUPT']);
    }
  });

  it('chunks swapped, and a chunk of another instance: the range that reads them serves nothing', async () => {
    const links = await chunkCids(flat);
    const swapped = await reseal(flat, { size: flat.size, links: [links[0]!, links[2]!, links[1]!, ...links.slice(3)] });
    expect(await readAll(swapped, { offset: CHUNK + 5, length: 10 })).toMatchObject({
      served: 0,
      error: { code: 'BLOCK_CORRUPT', details: { cid: links[2]!.toString() } },
    });
    const theirs = (await chunkCids(other))[3]!;
    const foreign = await reseal(flat, { size: flat.size, links: [...links.slice(0, 3), theirs, ...links.slice(4)] });
    expect(await readAll(foreign, { offset: 3 * CHUNK, length: CHUNK })).toMatchObject({
      served: 0,
      error: { code: 'BLOCK_CORRUPT', details: { cid: theirs.toString() } },
    });
  });
});
