// No patient data appears unencrypted in any stored block: names, IDs, UIDs and pixel bytes of
// the instances stored are searched for in every block file (and the catalog is not a block).
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { stow } from '../../support/dicomweb.ts';
import { PYDICOM_DATA, read, requirePydicom } from '../../support/pydicom.ts';

describe('confidentiality of stored blocks', () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode();
  });
  afterAll(async () => node?.stop());

  it('stores no plaintext patient name, ID, UID or pixel bytes in any block', async () => {
    const study = planStudy({ kind: 'single', instances: 3, rows: 64, columns: 64, seed: 11, patientId: 'PATIENT-SECRET-4711' });
    const instances: Buffer[] = [];
    for (const inst of study.instances) {
      const parts: Uint8Array[] = [];
      for await (const p of inst.open()) parts.push(p);
      instances.push(Buffer.concat(parts));
    }
    requirePydicom();
    const files = ['CT_small.dcm', 'MR_small.dcm'].map((f) => read(join(PYDICOM_DATA, 'test_files', f)));
    expect((await stow(node.url, [...instances, ...files])).status).toBe(200);

    const needles: Buffer[] = [
      Buffer.from('PATIENT-SECRET-4711'),
      Buffer.from(study.studyInstanceUID),
      Buffer.from(study.instances[0]!.sopInstanceUID),
      // 32 bytes from the middle of the pixel data
      instances[0]!.subarray(instances[0]!.length - 4096, instances[0]!.length - 4064),
      Buffer.from('CompressedSamples^CT1'),
      Buffer.from('1.3.6.1.4.1.5962.1.2.1.20040119072730.12322'),
    ];
    const root = join(node.dataDir, 'blocks');
    let blocks = 0;
    for (const shard of await readdir(root, { withFileTypes: true })) {
      if (!shard.isDirectory()) continue;
      for (const f of await readdir(join(root, shard.name))) {
        const bytes = await readFile(join(root, shard.name, f));
        blocks++;
        for (const n of needles) expect(bytes.includes(n), `${f} holds ${n.toString('latin1').slice(0, 24)}`).toBe(false);
      }
    }
    expect(blocks).toBeGreaterThanOrEqual(6);
    // The check can fail: the same needles are found in the plaintext we sent.
    expect(needles.slice(0, 4).every((n) => instances.some((i) => i.includes(n)))).toBe(true);
  });
});
