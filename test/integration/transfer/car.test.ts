// Moving a study between nodes as a CAR file: the CAR is a valid IPFS archive of the study's DAG,
// importing it on another node (another backend too) makes the study verifiable there, and
// readable when its data key was sealed to that node.
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CarBlockIterator } from '@ipld/car';
import { CID } from 'multiformats/cid';
import { afterEach, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance, type GeneratedStudy } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { decodeInstanceNode, decodeStudyManifest } from '../../../src/format/dag.ts';
import { KEY_ENVELOPE_TYPE, TRANSPORT_KEY_FILE, exportStudyCar, importStudyCar, loadOrCreateTransportKey } from '../../../src/transfer/car.ts';
import { cidMatches } from '../../../storage/cid.ts';
import { getVerified } from '../../../storage/verified.ts';
import * as dagCbor from '@ipld/dag-cbor';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { run } from '../../support/process.ts';
import { expectCode } from '../../support/storage-conformance.ts';
import { startNodeWithTester } from '../../support/node.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-car-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function node(store: 'fs' | 'ipfs', dataDir?: string): Promise<RunningNode & { dataDir: string }> {
  const dir = dataDir ?? (await tempDir());
  const n = await startNodeWithTester(
    resolveNodeOptions({ port: '0', 'data-dir': dir, 'chunk-size': '4096', store, 'dimse-port': 'off' }, {}),
    createLogger('silent'),
  );
  let closed = false;
  const close = async (): Promise<void> => {
    if (!closed) await n.close();
    closed = true;
  };
  cleanups.push(close);
  return { ...n, close, dataDir: dir };
}

async function bytesOf(inst: GeneratedInstance): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of inst.open()) parts.push(p);
  return Buffer.concat(parts);
}

/** A study in two versions (two STOWs), on a fresh node. */
async function sourceWithStudy(store: 'fs' | 'ipfs' = 'fs'): Promise<{ src: Awaited<ReturnType<typeof node>>; study: GeneratedStudy; parts: Buffer[] }> {
  const src = await node(store);
  const study = planStudy({ kind: 'single', instances: 3, rows: 48, columns: 48, seed: 31 });
  const parts = await Promise.all(study.instances.map(bytesOf));
  expect((await stow(src.url, parts.slice(0, 2))).status).toBe(200);
  expect((await stow(src.url, parts.slice(2))).status).toBe(200);
  return { src, study, parts };
}

async function dagBlockCount(store: RunningNode['vault']['store'], root: CID): Promise<number> {
  let n = 0;
  for (let cursor: CID | null = root; cursor !== null; ) {
    const manifest = decodeStudyManifest(await getVerified(store, cursor), cursor);
    n++;
    for (const nodeCid of manifest.added) n += 1 + decodeInstanceNode(await getVerified(store, nodeCid), nodeCid).links.length;
    cursor = manifest.prev;
  }
  return n;
}

describe('CAR export and import', () => {
  it('writes a valid CAR: the study root first, every block of every version, each hashing to its CID', async () => {
    const { src, study } = await sourceWithStudy();
    const receiver = loadOrCreateTransportKey(join(await tempDir(), TRANSPORT_KEY_FILE));
    const file = join(await tempDir(), 'study.car');
    const report = await exportStudyCar(src.vault, study.studyInstanceUID, file, { recipient: receiver.publicKey });
    const root = CID.parse(src.vault.catalog.latestVersion(study.studyInstanceUID)!.root);

    const car = await CarBlockIterator.fromIterable(createReadStream(file));
    const roots = await car.getRoots();
    expect(roots[0]!.equals(root)).toBe(true);
    expect(roots).toHaveLength(2);
    const seen = new Set<string>();
    for await (const { cid, bytes } of car) {
      expect(cidMatches(cid, bytes), cid.toString()).toBe(true);
      seen.add(cid.toString());
      if (cid.equals(roots[1]!)) expect((dagCbor.decode(bytes) as { type: string }).type).toBe(KEY_ENVELOPE_TYPE);
    }
    const total = await dagBlockCount(src.vault.store, root);
    expect(report).toMatchObject({ root: root.toString(), versions: 2, instances: 3, blocks: total, keyIncluded: true });
    expect(seen.size).toBe(total + 1);
  });

  it('moves a study from an fs node to an IPFS node with the CLI: verifiable and readable there, byte for byte', async () => {
    const { src, study, parts } = await sourceWithStudy('fs');
    await src.close();
    const destDir = await tempDir();
    const pub = await run(['public-key', '--data-dir', destDir]);
    expect(pub.code, pub.stderr).toBe(0);
    expect(pub.stdout).toMatch(/BEGIN PUBLIC KEY/);
    const pubFile = join(await tempDir(), 'dest.pem');
    await writeFile(pubFile, pub.stdout);

    const car = join(await tempDir(), 'study.car');
    const exported = await run(['export', '--car', study.studyInstanceUID, car, '--to', pubFile, '--data-dir', src.dataDir]);
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stdout).toContain('data key sealed');

    const imported = await run(['import', car, '--data-dir', destDir, '--store', 'ipfs']);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toContain(`readable: study ${study.studyInstanceUID}, 3 instances`);

    const dest = await node('ipfs', destDir);
    const back = await retrieve(`${dest.url}/studies/${study.studyInstanceUID}`);
    expect(back.status).toBe(200);
    expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual(parts.map((b) => b.toString('base64')).sort());
    const report = await verifyStudy(dest.vault, study.studyInstanceUID);
    expect(report).toMatchObject({ ok: true, versions: 2, instances: 3 });
    // The imported roots are pinned like locally ingested ones.
    const store = dest.vault.store as import('../../../storage/ipfs.ts').IpfsBlockStore;
    for (const v of dest.vault.catalog.versions(study.studyInstanceUID)) expect(await store.isPinnedRoot(CID.parse(v.root))).toBe(true);
  }, 120_000);

  it('without the data key, stores and checks every block but reports the study as not readable', async () => {
    const { src, study } = await sourceWithStudy();
    const file = join(await tempDir(), 'study.car');
    await exportStudyCar(src.vault, study.studyInstanceUID, file);
    const dest = await node('fs');
    const report = await importStudyCar({ ...dest.vault, transportKey: loadOrCreateTransportKey(join(dest.dataDir, TRANSPORT_KEY_FILE)) }, file);
    expect(report).toMatchObject({ verifiable: true, readable: false });
    expect(report.reason).toMatch(/verifiable here but not readable/);
    const root = CID.parse(report.root);
    expect(await dagBlockCount(dest.vault.store, root)).toBe(report.blocks);
    expect(dest.vault.catalog.latestVersion(study.studyInstanceUID)).toBeUndefined();
  });

  it('does not open a data key sealed to another node', async () => {
    const { src, study } = await sourceWithStudy();
    const someoneElse = loadOrCreateTransportKey(join(await tempDir(), TRANSPORT_KEY_FILE));
    const file = join(await tempDir(), 'study.car');
    await exportStudyCar(src.vault, study.studyInstanceUID, file, { recipient: someoneElse.publicKey });
    const dest = await node('fs');
    const report = await importStudyCar({ ...dest.vault, transportKey: loadOrCreateTransportKey(join(dest.dataDir, TRANSPORT_KEY_FILE)) }, file);
    expect(report.readable).toBe(false);
    expect(report.reason).toMatch(/sealed to another node/);
    expect(dest.vault.keys.get(study.studyInstanceUID)).toBeUndefined();
  });

  it('refuses a CAR with a tampered block, naming it, and lists nothing', async () => {
    const { src, study } = await sourceWithStudy();
    const dest = await node('fs');
    const key = loadOrCreateTransportKey(join(dest.dataDir, TRANSPORT_KEY_FILE));
    const file = join(await tempDir(), 'study.car');
    await exportStudyCar(src.vault, study.studyInstanceUID, file, { recipient: key.publicKey });
    const bytes = await readFile(file);
    bytes[bytes.length - 100]! ^= 0xff; // inside the last block (a chunk of the first version)
    await writeFile(file, bytes);
    const err = await expectCode(importStudyCar({ ...dest.vault, transportKey: key }, file), 'CAR_INVALID');
    expect(err.message).toMatch(/block \S+ in the CAR does not hash to its CID/);
    expect(dest.vault.catalog.latestVersion(study.studyInstanceUID)).toBeUndefined();
  });

  it('refuses a file that is not a CAR with CAR_INVALID', async () => {
    const dest = await node('fs');
    const file = join(await tempDir(), 'not.car');
    await writeFile(file, 'definitely not a CAR file');
    await expectCode(importStudyCar(dest.vault, file), 'CAR_INVALID');
  });
});
