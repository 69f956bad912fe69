// The DIMSE door of a real node: dcmtk's storescu and echoscu push to `dicom-vault`'s Storage SCP,
// and what they stored comes back through WADO-RS, verified, with the data set exactly as sent.
// An association that breaks off in the middle of a large instance stores nothing of it; a calling
// AE title the operator did not allow is refused at association.
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { bytesOf } from '../../support/generated.ts';
import { ECHOSCU, bytesRead, dataSetOffset, runTool, startTool, storescu } from '../../support/dcmtk.ts';
import { retrieve } from '../../support/dicomweb.ts';
import { allBlockFiles } from '../../support/blocks.ts';
import { PYDICOM_DATA } from '../../support/pydicom.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const FILES = [
  { file: 'SC_rgb_small_odd.dcm', option: '-xe' },
  { file: 'MR_small_implicit.dcm', option: '-xi' },
  { file: 'SC_rgb_jpeg_dcmtk.dcm', option: '-xy' },
  { file: 'SC_rgb_rle.dcm', option: '-xr' },
];

function dataSetOf(part10: Buffer): Buffer {
  return part10.subarray(dataSetOffset(part10));
}

describe('DIMSE Storage SCP of a node', () => {
  let node: TestNode;
  let dir: string;

  beforeAll(async () => {
    node = await startTestNode({ flags: { 'dimse-port': '0', 'ae-title': 'VAULT' } });
    dir = await mkdtemp(join(tmpdir(), 'dv-dimse-node-'));
  });
  afterAll(async () => {
    await node.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers C-ECHO', async () => {
    const r = await runTool(ECHOSCU, ['-aec', 'VAULT', '127.0.0.1', String(node.dimse!.port)]);
    expect(r.code, r.output).toBe(0);
  });

  it('stores what storescu sends, in its own transfer syntax, and serves it back verified and unchanged', async () => {
    for (const { file, option } of FILES) {
      const path = join(PYDICOM_DATA, 'test_files', file);
      const r = await storescu(node.dimse!.port, [path], [option], 'VAULT');
      expect(r.code, r.output).toBe(0);
      const original = await readFile(path);
      const sop = /\(0008,0018\) UI \[([0-9.]+)/.exec((await runTool('/usr/bin/dcmdump', ['+P', '0008,0018', path])).output)![1]!;
      const inst = node.vault.catalog.getInstance(sop);
      expect(inst, file).toBeDefined();
      const back = await retrieve(`${node.url}/studies/${inst!.studyInstanceUID}/series/${inst!.seriesInstanceUID}/instances/${sop}`);
      expect(back.status).toBe(200);
      expect(Buffer.compare(dataSetOf(back.parts[0]!.body), dataSetOf(original)), file).toBe(0);
    }
  });

  it('stores nothing of an instance whose association breaks off, and keeps serving', async () => {
    const study = planStudy({ kind: 'multiframe', instances: 1, frames: 400, rows: 512, columns: 512, seed: 7301 });
    const file = join(dir, 'large.dcm');
    await writeFile(file, await bytesOf(study.instances[0]!));
    const blocksBefore = (await allBlockFiles(join(node.dataDir, 'blocks'))).length;
    const sending = startTool('/usr/bin/storescu', ['-aec', 'VAULT', '127.0.0.1', String(node.dimse!.port), file]);
    // Killed once a good part of the instance has left storescu.
    while (bytesRead(sending.child.pid!) < 64 * 2 ** 20) await sleep(20);
    sending.child.kill('SIGKILL');
    await sending.result;
    // The ingest sees the abort, discards what it wrote; nothing is listed.
    for (let i = 0; i < 100 && (await allBlockFiles(join(node.dataDir, 'blocks'))).length !== blocksBefore; i++) await sleep(50);
    expect((await allBlockFiles(join(node.dataDir, 'blocks'))).length).toBe(blocksBefore);
    expect(node.vault.catalog.getInstance(study.instances[0]!.sopInstanceUID)).toBeUndefined();
    // The same instance, sent whole, is stored.
    const again = await storescu(node.dimse!.port, [file], [], 'VAULT');
    expect(again.code, again.output).toBe(0);
    expect(node.vault.catalog.getInstance(study.instances[0]!.sopInstanceUID)).toBeDefined();
  }, 120_000);
});

describe('DIMSE with allowed calling AE titles', () => {
  it('refuses an association from an AE title not in the list, and accepts one in it', async () => {
    const node = await startTestNode({ flags: { 'dimse-port': '0', 'ae-title': 'VAULT', 'allowed-aes': 'MODALITY1, PACS2' } });
    try {
      const path = join(PYDICOM_DATA, 'test_files', 'CT_small.dcm');
      const refused = await runTool('/usr/bin/storescu', ['-aet', 'STRANGER', '-aec', 'VAULT', '127.0.0.1', String(node.dimse!.port), path]);
      expect(refused.code).not.toBe(0);
      expect(refused.output).toMatch(/Association Rejected|calling AE title not recognized/i);
      expect(node.vault.catalog.queryStudies({ filters: [], limit: 10, offset: 0 })).toHaveLength(0);
      const accepted = await runTool('/usr/bin/storescu', ['-aet', 'PACS2', '-aec', 'VAULT', '127.0.0.1', String(node.dimse!.port), path]);
      expect(accepted.code, accepted.output).toBe(0);
      expect(node.vault.catalog.queryStudies({ filters: [], limit: 10, offset: 0 })).toHaveLength(1);
    } finally {
      await node.stop();
    }
  });
});
