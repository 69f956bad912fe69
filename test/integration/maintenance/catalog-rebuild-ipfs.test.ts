// `dicom-vault catalog rebuild --store ipfs`: the catalog made again from the manifests in the
// node's IPFS repo; the node then answers as before.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import type { CatalogRebuildReport } from '../../../src/transfer/catalog-rebuild.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startNodeWithTester } from '../../support/node.ts';
import { run } from '../../support/process.ts';

let dataDir: string | undefined;
let node: RunningNode | undefined;

afterAll(async () => {
  await node?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('catalog rebuild on --store ipfs', () => {
  it("rebuilds the catalog from the repo's manifests; the node answers as before", async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'dv-catalog-rebuild-ipfs-'));
    const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'chunk-size': '4096', 'dimse-port': 'off', store: 'ipfs' }, {});
    const first = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed: 2731, patientId: 'REBUILD-IPFS' });
    const second = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed: 2732, studyInstanceUID: first.studyInstanceUID });
    const study = first.studyInstanceUID;
    const observe = async (url: string): Promise<string[]> => {
      const qido = await fetch(`${url}/studies/${study}/instances?includefield=all`);
      const wado = await retrieve(`${url}/studies/${study}`);
      return [
        `${qido.status} ${(await qido.text()).replaceAll(new URL(url).origin, 'ORIGIN')}`,
        `${wado.status} ${wado.parts.map((p) => p.body.toString('base64')).join(',')}`,
      ];
    };
    node = await startNodeWithTester(options, createLogger('silent'));
    for (const s of [first, second]) expect((await stow(node.url, [await bytesOf(s.instances[0]!)])).status).toBe(200);
    const before = await observe(node.url);
    const versions = node.vault.catalog.versions(study).map((v) => [v.version, v.root, v.prev]);
    await node.close();
    node = undefined;
    for (const f of ['catalog.db', 'catalog.db-wal', 'catalog.db-shm']) await rm(join(dataDir, f), { force: true });

    const r = await run(['catalog', 'rebuild', '--data-dir', dataDir, '--store', 'ipfs', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as CatalogRebuildReport;
    expect(report.studies.map((s) => [s.studyInstanceUID, s.versions, s.instances])).toEqual([[study, 2, 2]]);

    node = await startNodeWithTester(options, createLogger('silent'));
    expect(node.vault.catalog.versions(study).map((v) => [v.version, v.root, v.prev])).toEqual(versions);
    expect(await observe(node.url)).toEqual(before);
  }, 120_000);
});
