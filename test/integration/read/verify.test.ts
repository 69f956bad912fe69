// A catalog row edited on disk (issue 27, item 4): the catalog alone answers searches and
// metadata, so `verify` compares each row with what the instance's sealed envelope says, and a
// read under UIDs the envelope does not name is refused.
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const study = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 2701 });
let node: TestNode;

beforeAll(async () => {
  node = await startTestNode({ chunkSize: 4096 });
  expect((await stow(node.url, await Promise.all(study.instances.map(bytesOf)))).status).toBe(200);
});

afterAll(async () => {
  await node?.stop();
});

describe('a catalog row that differs from its sealed envelope', () => {
  it('is named by verify, field by field, and a read under UIDs the envelope does not name is refused', async () => {
    expect((await verifyStudy(node.vault, study.studyInstanceUID)).problems).toEqual([]);
    const [a, b] = study.instances as [(typeof study.instances)[0], (typeof study.instances)[0]];
    // Another connection, as an edit on disk would be: a's row gets another SOP Class and
    // another series; b's row is pointed at a's instance node.
    const db = new DatabaseSync(join(node.dataDir, 'catalog.db'));
    try {
      db.prepare("UPDATE instances SET sop_class_uid = '1.2.840.10008.5.1.4.1.1.7', series_uid = '1.2.3.999' WHERE sop_uid = ?").run(a.sopInstanceUID);
      db.prepare('UPDATE instances SET (node_cid, sha256, size) = (SELECT node_cid, sha256, size FROM instances WHERE sop_uid = ?) WHERE sop_uid = ?').run(
        a.sopInstanceUID,
        b.sopInstanceUID,
      );
    } finally {
      db.close();
    }

    const report = await verifyStudy(node.vault, study.studyInstanceUID);
    expect(report.ok).toBe(false);
    const messages = report.problems.filter((p) => p.kind === 'mismatch').map((p) => `${p.where}: ${p.message}`);
    expect(messages).toContain(`instance ${a.sopInstanceUID}: the catalog's seriesInstanceUID, sopClassUID differ from the instance's sealed envelope`);
    expect(messages).toContain(`instance ${b.sopInstanceUID}: the catalog's sopInstanceUID differ from the instance's sealed envelope`);

    // WADO of b (its row now naming a's node): refused, never a's bytes under b's UIDs.
    const served = await retrieve(`${node.url}/studies/${study.studyInstanceUID}/series/${b.seriesInstanceUID}/instances/${b.sopInstanceUID}`);
    expect(served.status).toBe(500);
  });
});
