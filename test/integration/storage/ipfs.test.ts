// The IPFS backend: an offline repo (blocks on disk, pins in a datastore) in a temp dir. The shared
// conformance suite, then what IPFS adds: study roots pinned, unpinned blocks collected, and no
// network; a study with a block missing from the repo is refused, naming the block; pins shared by
// several roots; and, with `network: true`, two loopback-only nodes exchanging a block.
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { sha256 } from 'multiformats/hashes/sha2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { addedTree, chunkTree, decodeInstanceNode, decodeStudyManifest } from '../../../src/format/dag.ts';
import { rawCid } from '../../../storage/cid.ts';
import { IpfsBlockStore } from '../../../storage/ipfs.ts';
import { resolveBlockStoreConfig } from '../../../storage/open.ts';
import { getVerified } from '../../../storage/verified.ts';
import { DEFAULT_GRACE_S } from '../../../src/maintenance/gc.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { blockStoreConformance, expectCode, expectSameBytes } from '../../support/storage-conformance.ts';
import { startNodeWithTester } from '../../support/node.ts';

// The FsBlockStore layout under <repo>/blocks (see fs-store.test.ts).
function shardOf(repo: string, cid: CID): string {
  const name = cid.toString();
  return path.join(repo, 'blocks', name.slice(-3, -1));
}
function blockPath(repo: string, cid: CID): string {
  return path.join(shardOf(repo, cid), `${cid.toString()}.data`);
}

blockStoreConformance('IpfsBlockStore (offline)', async () => {
  const repo = await mkdtemp(path.join(tmpdir(), 'dicom-vault-ipfs-'));
  const store = await IpfsBlockStore.open({ path: repo });
  return {
    store,
    async cleanup() {
      await store.close();
      await rm(repo, { recursive: true, force: true });
    },
    async corruptBlock(cid) {
      const file = blockPath(repo, cid);
      const bytes = await readFile(file);
      bytes[bytes.length >> 1]! ^= 0xff;
      await writeFile(file, bytes);
    },
    async makeUnreadable(cid) {
      const shard = shardOf(repo, cid);
      await rm(shard, { recursive: true });
      await writeFile(shard, 'not a directory');
    },
  };
});

describe('a node on --store ipfs', () => {
  let dataDir: string;
  let node: RunningNode;
  let store: IpfsBlockStore;
  /** The node's log lines (warn and above), parsed. */
  let logs: Array<Record<string, unknown>>;

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'dicom-vault-ipfs-node-'));
    const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'chunk-size': '4096', store: 'ipfs', 'dimse-port': 'off' }, {});
    logs = [];
    node = await startNodeWithTester(options, createLogger('warn', { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) }));
    store = node.vault.store as IpfsBlockStore;
  });
  afterEach(async () => {
    await node.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('is offline: no libp2p, and serving a study opens no socket beyond loopback', async () => {
    expect(store).toBeInstanceOf(IpfsBlockStore);
    expect(store.network).toBe(false);
    expect(store.libp2p).toBeUndefined();
    const study = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 21 });
    const parts = await Promise.all(study.instances.map(bytesOf));
    expect((await stow(node.url, parts)).status).toBe(200);
    expect((await retrieve(`${node.url}/studies/${study.studyInstanceUID}`)).status).toBe(200);
    const sockets = tcpSocketsOfThisProcess();
    const listening = sockets.filter((s) => s.listening);
    // Only the DICOMweb server itself listens, on loopback.
    expect(listening.map((s) => s.local)).toEqual([`127.0.0.1:${new URL(node.url).port}`]);
    expect(sockets.filter((s) => !s.remote.startsWith('127.') && !s.remote.startsWith('0.0.0.0') && s.remote !== '::1')).toEqual([]);
  });

  it('pins each study version root and its blocks; gc keeps them and removes unpinned blocks', async () => {
    const study = planStudy({ kind: 'single', instances: 3, rows: 32, columns: 32, seed: 22 });
    const parts = await Promise.all(study.instances.map(bytesOf));
    expect((await stow(node.url, parts.slice(0, 2))).status).toBe(200);
    expect((await stow(node.url, parts.slice(2))).status).toBe(200);
    const versions = node.vault.catalog.versions(study.studyInstanceUID);
    expect(versions).toHaveLength(2);
    const pinned = [];
    for await (const root of store.pinnedRoots()) pinned.push(root.toString());
    expect(pinned.sort()).toEqual(versions.map((v) => v.root).sort());

    // Every block of the study is covered by a pin.
    const studyBlocks = await dagBlocks(store, CID.parse(versions.at(-1)!.root));
    for (const cid of studyBlocks) expect(await store.isPinned(cid), cid.toString()).toBe(true);

    const stray = randomBytes(5000);
    const strayCid = rawCid(stray);
    await store.put(strayCid, stray);
    expect(await store.isPinned(strayCid)).toBe(false);
    // Just written, so within the default grace period: an ingest may still be writing it.
    expect(await store.gc({ graceS: DEFAULT_GRACE_S })).toMatchObject({ deleted: 0, young: 1 });
    expect(await store.has(strayCid)).toBe(true);
    expect(await store.gc({ graceS: 0, keep: versions.map((v) => CID.parse(v.root)) })).toMatchObject({
      blocks: studyBlocks.length + 1,
      pinned: studyBlocks.length,
      deleted: 1,
      deletedBytes: stray.length,
      repinned: [],
      otherPins: 0,
    });
    expect(await store.has(strayCid)).toBe(false);
    for (const cid of studyBlocks) expect(await store.has(cid), cid.toString()).toBe(true);

    const back = await retrieve(`${node.url}/studies/${study.studyInstanceUID}`);
    expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual(parts.map((b) => b.toString('base64')).sort());
    expect((await verifyStudy(node.vault, study.studyInstanceUID)).problems).toEqual([]);
  });

  it('pins an instance whose chunks sit under link nodes: every link node and chunk, kept by gc', async () => {
    // 40 frames of 256 x 256: 1,282 chunks of 4 KiB, under two link nodes.
    const study = planStudy({ kind: 'multiframe', instances: 1, frames: 40, rows: 256, columns: 256, seed: 26 });
    const bytes = await bytesOf(study.instances[0]!);
    expect((await stow(node.url, [bytes])).status).toBe(200);
    const root = CID.parse(node.vault.catalog.latestVersion(study.studyInstanceUID)!.root);
    const blocks = await dagBlocks(store, root);
    const linkNodes = blocks.filter((c) => c.code === dagCbor.code && !c.equals(root));
    expect(linkNodes.length).toBe(3); // the instance node and its two link nodes
    for (const cid of blocks) expect(await store.isPinned(cid), cid.toString()).toBe(true);
    expect(await store.gc({ graceS: 0, keep: [root] })).toMatchObject({ deleted: 0, pinned: blocks.length });
    const back = await retrieve(`${node.url}/studies/${study.studyInstanceUID}`);
    expect(back.parts[0]!.body.equals(bytes)).toBe(true);
    expect((await verifyStudy(node.vault, study.studyInstanceUID)).problems).toEqual([]);
  });

  it('unpins a manifest that is deleted (a commit that failed), so gc can take its blocks', async () => {
    const study = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed: 23 });
    expect((await stow(node.url, [await bytesOf(study.instances[0]!)])).status).toBe(200);
    const root = CID.parse(node.vault.catalog.latestVersion(study.studyInstanceUID)!.root);
    expect(await store.isPinnedRoot(root)).toBe(true);
    const blocks = await dagBlocks(store, root);
    await store.delete(root);
    expect(await store.isPinnedRoot(root)).toBe(false);
    await store.gc({ graceS: 0 });
    for (const cid of blocks) expect(await store.has(cid), cid.toString()).toBe(false);
  });

  it('reports a block missing from the repo by its CID', async () => {
    const study = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed: 24 });
    expect((await stow(node.url, [await bytesOf(study.instances[0]!)])).status).toBe(200);
    const inst = node.vault.catalog.listInstances({ study: study.studyInstanceUID })[0]!;
    const nodeCid = CID.parse(inst.nodeCid);
    const chunk = decodeInstanceNode(await getVerified(store, nodeCid), nodeCid).links[0]!;
    await rm(blockPath(path.join(dataDir, 'ipfs'), chunk));
    const err = await expectCode(getVerified(store, chunk), 'BLOCK_NOT_FOUND');
    expect(err.details).toMatchObject({ cid: chunk.toString() });
    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'missing', cid: chunk.toString() })]);
  });

  it('refuses WADO of a study whose block is missing, naming the block: in the error before headers, in the log after', async () => {
    // 128 x 128 x 16 bits: 32 KiB of pixels, about nine 4 KiB chunks.
    const study = planStudy({ kind: 'single', instances: 1, rows: 128, columns: 128, seed: 25 });
    expect((await stow(node.url, [await bytesOf(study.instances[0]!)])).status).toBe(200);
    const inst = node.vault.catalog.listInstances({ study: study.studyInstanceUID })[0]!;
    const nodeCid = CID.parse(inst.nodeCid);
    const chunks = decodeInstanceNode(await getVerified(store, nodeCid), nodeCid).links;
    expect(chunks.length).toBeGreaterThan(4);
    const url = `${node.url}/studies/${study.studyInstanceUID}`;

    // A later chunk gone: headers are out when it is reached, so the response breaks off (never
    // a short body that looks whole) and the log names the block.
    const late = chunks.at(-2)!;
    const lateFile = blockPath(path.join(dataDir, 'ipfs'), late);
    const lateBytes = await readFile(lateFile);
    await rm(lateFile);
    const res = await fetch(url, { headers: { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' } });
    expect(res.status).toBe(200);
    await expect(res.arrayBuffer()).rejects.toThrow();
    const named = logs.filter((l) => (l.err as { details?: { cid?: string } } | undefined)?.details?.cid === late.toString());
    expect(named.map((l) => [(l.level as number) >= 40, (l.err as { code?: string }).code])).toEqual([[true, 'BLOCK_NOT_FOUND']]);
    await writeFile(lateFile, lateBytes);

    // The first chunk gone: checked before headers, so the answer is an error naming it.
    const first = chunks[0]!;
    await rm(blockPath(path.join(dataDir, 'ipfs'), first));
    const refused = await retrieve(url);
    expect(refused.status).toBe(500);
    const body = JSON.parse(refused.raw.toString()) as { code: string; message: string; details?: { cid?: string } };
    expect(body.code).toBe('BLOCK_NOT_FOUND');
    expect(body.message).toContain(first.toString());
    expect(body.details?.cid).toBe(first.toString());
  });
});

describe('IpfsBlockStore repo', () => {
  it('keeps blocks and pins across a reopen', async () => {
    const repo = await mkdtemp(path.join(tmpdir(), 'dicom-vault-ipfs-'));
    try {
      const store = await IpfsBlockStore.open({ path: repo });
      const bytes = randomBytes(3000);
      const cid = rawCid(bytes);
      await store.put(cid, bytes);
      await store.pin(cid);
      await store.close();
      const reopened = await IpfsBlockStore.open({ path: repo });
      expectSameBytes(await getVerified(reopened, cid), bytes);
      expect(await reopened.isPinnedRoot(cid)).toBe(true);
      await reopened.gc({ graceS: 0 });
      expect(await reopened.has(cid)).toBe(true);
      await reopened.close();
    } finally {
      await rm(repo, { recursive: true, force: true });
    }
  });
});

describe('IpfsBlockStore pins shared by several roots', () => {
  let repo: string;
  let store: IpfsBlockStore;
  beforeEach(async () => {
    repo = await mkdtemp(path.join(tmpdir(), 'dicom-vault-ipfs-pins-'));
    store = await IpfsBlockStore.open({ path: repo });
  });
  afterEach(async () => {
    await store.close();
    await rm(repo, { recursive: true, force: true });
  });

  /** A raw leaf and `n` dag-cbor roots that all link to it. */
  async function sharedLeaf(n: number): Promise<{ leaf: CID; roots: CID[] }> {
    const bytes = randomBytes(2000);
    const leaf = rawCid(bytes);
    await store.put(leaf, bytes);
    const roots: CID[] = [];
    for (let i = 0; i < n; i++) {
      const node = dagCbor.encode({ name: `root ${i}`, links: [leaf] });
      const cid = CID.create(1, dagCbor.code, await sha256.digest(node));
      await store.put(cid, node);
      roots.push(cid);
    }
    return { leaf, roots };
  }

  it('keeps a block pinned while any of the roots pinned at once that cover it is', async () => {
    const { leaf, roots } = await sharedLeaf(8);
    await Promise.all(roots.map((r) => store.pin(r))); // no pin may overwrite another's count of the leaf
    for (const r of roots.slice(1)) await store.unpin(r);
    expect(await store.isPinned(leaf)).toBe(true);
    expect(await store.gc({ graceS: 0 })).toMatchObject({ deleted: 7 }); // the unpinned roots
    expect(await store.has(leaf)).toBe(true);
    await store.unpin(roots[0]!);
    expect(await store.isPinned(leaf)).toBe(false);
    expect(await store.gc({ graceS: 0 })).toMatchObject({ deleted: 2 });
  });

  it('keeps a block pinned by a root pinned again after an unpin', async () => {
    const { leaf, roots } = await sharedLeaf(2);
    const [a, b] = roots as [CID, CID];
    await store.pin(a);
    await store.pin(b);
    await store.unpin(a);
    await store.pin(a);
    await store.unpin(b);
    expect(await store.isPinned(leaf)).toBe(true);
    await store.gc({ graceS: 0 });
    expect(await store.has(leaf)).toBe(true);
  });
});

// Networked: two nodes in this process, each told to listen on loopback only and to dial no
// bootstrap peer, so the test opens no public socket.
describe('IpfsBlockStore with network: true', () => {
  const loopbackOnly = { network: true, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], fetchTimeoutMs: 1500 };
  const repos: string[] = [];
  const open: IpfsBlockStore[] = [];
  async function networked(): Promise<{ store: IpfsBlockStore; repo: string }> {
    const repo = await mkdtemp(path.join(tmpdir(), 'dicom-vault-ipfs-net-'));
    repos.push(repo);
    const store = await IpfsBlockStore.open({ path: repo, ...loopbackOnly });
    open.push(store);
    return { store, repo };
  }
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
    for (const r of repos.splice(0)) await rm(r, { recursive: true, force: true });
  });

  it('listens only on the configured loopback address, and a peer fetches a block from it by bitswap', async () => {
    const { store: a } = await networked();
    const { store: b } = await networked();
    expect(a.network).toBe(true);
    const addrs = a.libp2p!.getMultiaddrs().map(String);
    expect(addrs).toHaveLength(1);
    expect(addrs[0]).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+$/);

    const bytes = randomBytes(5000);
    const cid = rawCid(bytes);
    await a.put(cid, bytes);
    expect(await b.has(cid)).toBe(false);
    await b.libp2p!.dial(a.libp2p!.getMultiaddrs()[0]!);
    expectSameBytes(await getVerified(b, cid), bytes);
    // Kept once fetched: the next read is local.
    expect(await b.has(cid)).toBe(true);

    const ports = [a, b].map((s) => /\/tcp\/(\d+)\//.exec(s.libp2p!.getMultiaddrs()[0]!.toString())![1]!);
    const sockets = tcpSocketsOfThisProcess();
    expect(
      sockets
        .filter((s) => s.listening)
        .map((s) => s.local)
        .sort(),
    ).toEqual(ports.map((p) => `127.0.0.1:${p}`).sort());
    expect(sockets.filter((s) => !s.remote.startsWith('127.') && !s.remote.startsWith('0.0.0.0'))).toEqual([]);
  });

  it('reports a block no peer has as not found once the fetch times out', async () => {
    const { store } = await networked();
    const missing = rawCid(randomBytes(100));
    const started = Date.now();
    const err = await expectCode(store.get(missing), 'BLOCK_NOT_FOUND');
    expect(err.message).toContain(missing.toString());
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
  });

  it('takes its network settings from the environment', () => {
    const env = { DICOM_VAULT_IPFS_NETWORK: 'true', DICOM_VAULT_IPFS_LISTEN: '/ip4/127.0.0.1/tcp/4001, /ip6/::1/tcp/4001', DICOM_VAULT_IPFS_BOOTSTRAP: 'none' };
    expect(resolveBlockStoreConfig('ipfs', '/srv/dv', env)).toEqual({
      kind: 'ipfs',
      ipfs: { path: '/srv/dv/ipfs', network: true, listen: ['/ip4/127.0.0.1/tcp/4001', '/ip6/::1/tcp/4001'], bootstrap: [] },
    });
    expect(resolveBlockStoreConfig('ipfs', '/srv/dv', {})).toEqual({ kind: 'ipfs', ipfs: { path: '/srv/dv/ipfs', network: false } });
    expect(() => resolveBlockStoreConfig('ipfs', '/srv/dv', { DICOM_VAULT_IPFS_LISTEN: ' , ' })).toThrowError(/DICOM_VAULT_IPFS_LISTEN/);
  });

  it('keeps its peer id across a reopen', async () => {
    const { store, repo } = await networked();
    const id = store.libp2p!.peerId.toString();
    await open.pop()!.close();
    const again = await IpfsBlockStore.open({ path: repo, ...loopbackOnly });
    open.push(again);
    expect(again.libp2p!.peerId.toString()).toBe(id);
  });
});

/** Every block reachable from a study root: manifests (through prev), instance nodes, link nodes, chunks. */
async function dagBlocks(store: IpfsBlockStore, root: CID): Promise<CID[]> {
  const out: CID[] = [];
  const read = (cid: CID): Promise<Uint8Array> => getVerified(store, cid);
  const onNode = (cid: CID): void => void out.push(cid);
  for (let cursor: CID | null = root; cursor !== null; ) {
    const manifest = decodeStudyManifest(await getVerified(store, cursor), cursor);
    out.push(cursor);
    for await (const { cid: nodeCid } of addedTree(manifest, cursor, read, onNode).leaves()) {
      out.push(nodeCid);
      const instanceNode = decodeInstanceNode(await getVerified(store, nodeCid), nodeCid);
      for await (const { cid } of chunkTree(instanceNode, nodeCid, read, onNode).leaves()) out.push(cid);
    }
    cursor = manifest.prev;
  }
  return out;
}

async function bytesOf(inst: GeneratedInstance): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of inst.open()) parts.push(p);
  return Buffer.concat(parts);
}

interface TcpSocket {
  local: string;
  remote: string;
  listening: boolean;
}

/** This process's TCP sockets, from /proc (inodes of its socket fds matched in /proc/net/tcp*). */
function tcpSocketsOfThisProcess(): TcpSocket[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const out: TcpSocket[] = [];
  for (const file of ['/proc/self/net/tcp', '/proc/self/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.trim().split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (!inodes.has(f[9]!)) continue;
      out.push({ local: addr(f[1]!), remote: addr(f[2]!), listening: f[3] === '0A' });
    }
  }
  return out;
}

function addr(hex: string): string {
  const [ip, port] = hex.split(':') as [string, string];
  const p = parseInt(port, 16);
  if (ip.length === 8) {
    const bytes = ip
      .match(/../g)!
      .map((b) => parseInt(b, 16))
      .reverse();
    return `${bytes.join('.')}:${p}`;
  }
  // IPv6: only loopback and v4-mapped loopback matter here.
  if (ip === '00000000000000000000000001000000') return `::1`;
  if (ip.startsWith('0000000000000000FFFF0000')) {
    const bytes = ip
      .slice(24)
      .match(/../g)!
      .map((b) => parseInt(b, 16))
      .reverse();
    return `${bytes.join('.')}:${p}`;
  }
  if (/^0+$/.test(ip)) return `0.0.0.0:${p}`;
  return `[${ip}]:${p}`;
}
