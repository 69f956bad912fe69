// Erasure of an anchored study on a real chain (issue 25, items 2 and 4): the chain keeps its
// hashes, and nothing links them to the study any more; the other studies of the same batch keep
// receipts that still verify; the certificate lists the erased version's anchored commitment, so
// a patient who kept the receipt can see that what it anchors was erased.
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { anchorCommitment } from '../../../anchor/commitment.ts';
import { certificateCid } from '../../../src/erasure/certificate.ts';
import { parseReceipt, type ReceiptJson } from '../../../anchor/receipt.ts';
import { ANCHOR_DB_FILE } from '../../../anchor/state.ts';
import { verifyReceipt } from '../../../anchor/verify-receipt.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { useSharedChain, type TestChain } from '../../support/anvil.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startNodeWithTester } from '../../support/node.ts';

let chain: TestChain;
let node: RunningNode;
let dataDir: string;

beforeAll(async () => {
  chain = await useSharedChain();
  dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-erasure-anchor-'));
  const options = resolveNodeOptions(
    {
      port: '0',
      'data-dir': dataDir,
      'chunk-size': '4096',
      'dimse-port': 'off',
      'chain-rpc': chain.rpcUrl,
      'chain-id': String(chain.chainId),
      'chain-key-file': await chain.keyFile(2),
      contract: chain.contract,
      // Both studies in one batch: the erased one's leaf sits on the other's proof path.
      'anchor-batch-size': '2',
      'anchor-interval': '3600',
      confirmations: '1',
    },
    {},
  );
  node = await startNodeWithTester(options, createLogger('silent'), { anchoring: true, anchorService: { pollIntervalMs: 20 } });
});

afterAll(async () => {
  try {
    await node?.close();
  } finally {
    await chain?.stop();
  }
  await rm(dataDir, { recursive: true, force: true });
});

async function receiptOf(study: string): Promise<{ status: number; json: ReceiptJson & { code?: string } }> {
  const res = await fetch(`${node.url}/studies/${study}/receipt`);
  return { status: res.status, json: (await res.json()) as ReceiptJson & { code?: string } };
}

describe('erasing an anchored study', () => {
  it('unlinks its commitment (salt gone, leaf kept bare), keeps the batch verifiable for the others, and names the commitment in the certificate', async () => {
    const confirmed = once(node.anchoring!.service, 'confirmed');
    const studies: string[] = [];
    for (const [seed, patientId] of [
      [9301, 'ANCHOR-GONE'],
      [9302, 'ANCHOR-KEPT'],
    ] as const) {
      const s = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed, patientId });
      expect((await stow(node.url, [await bytesOf(s.instances[0]!)])).status).toBe(200);
      studies.push(s.studyInstanceUID);
    }
    await confirmed;
    const [gone, kept] = studies as [string, string];
    const goneReceipt = (await receiptOf(gone)).json;
    const keptReceipt = (await receiptOf(kept)).json;
    expect(goneReceipt.v).toBe('dicom-vault-receipt/4');
    expect(goneReceipt.tx).toBe(keptReceipt.tx); // one batch
    const parsed = parseReceipt(goneReceipt);
    const commitment = Buffer.from(anchorCommitment(parsed.salt!, parsed.cid)).toString('hex');

    // The patient asks; an operator approves.
    const account = node.vault.identity.createPatient([{ id: 'ANCHOR-GONE', issuer: null }]);
    const token = node.vault.identity.issueToken('patient', account);
    const request = node.vault.erasure.request(account, 'patient');
    const cert = await node.vault.erasure.approve(request.id, 'operator:dpo', [{ kind: 'patient', patientId: 'ANCHOR-GONE' }]);
    // The certificate names the anchored commitment the patient's receipt leads to, and no CID or UID.
    expect(cert.studies).toHaveLength(1);
    expect(cert.studies[0]!.anchored).toEqual([commitment]);
    expect(JSON.stringify(cert)).not.toContain(goneReceipt.cid);
    expect(JSON.stringify(cert)).not.toContain(parsed.cid.toString());
    expect(JSON.stringify(cert)).not.toContain(gone);

    // The node no longer knows the study, nor serves any receipt for it.
    expect(await receiptOf(gone)).toMatchObject({ status: 404, json: { code: 'STUDY_NOT_FOUND' } });
    // anchor.db keeps the leaf's commitment only: no root, no study, no version.
    const db = new DatabaseSync(join(dataDir, ANCHOR_DB_FILE), { readOnly: true });
    try {
      expect(db.prepare('SELECT count(*) AS n FROM leaves WHERE root = ? OR study_uid = ?').get(parsed.cid.toString(), gone)).toEqual({ n: 0 });
      // The batch of the two studies (the certificate's leaf may already wait for the next one).
      const rows = db.prepare('SELECT root, study_uid, hex(leaf_data) AS data FROM leaves WHERE batch_id = 1 ORDER BY leaf_index').all() as Array<
        Record<string, unknown>
      >;
      expect(rows).toHaveLength(2);
      expect(rows.find((r) => r.root === null)).toEqual({ root: null, study_uid: null, data: commitment.toUpperCase() });
    } finally {
      db.close();
    }
    // Neither the salt nor the root CID is in any file of the data directory: nothing links the commitment to the study.
    const salt = Buffer.from(parsed.salt!);
    const cidText = Buffer.from(parsed.cid.toString());
    const cidBytes = Buffer.from(parsed.cid.bytes);
    for (const e of await readdir(dataDir, { withFileTypes: true, recursive: true })) {
      if (!e.isFile() || e.parentPath.includes(`${dataDir}/chain`)) continue;
      const content = await readFile(join(e.parentPath, e.name));
      for (const [what, n] of [
        ['salt', salt],
        ['root CID', cidText],
        ['root CID (base64url)', Buffer.from(goneReceipt.cid)],
        ['root CID bytes', cidBytes],
        ['study UID', Buffer.from(gone)],
      ] as const)
        expect(content.includes(n), `${what} in ${e.name}`).toBe(false);
    }

    // The other study of the batch: the same receipt, still verifying on the chain.
    const after = await receiptOf(kept);
    expect(after.json).toEqual(keptReceipt);
    expect((await verifyReceipt({ receipt: after.json, client: chain.client(0), expectedCid: keptReceipt.cid })).failed).toEqual([]);
    // The chain keeps the head: the old receipt's inclusion still holds for its commitment, but
    // without the salt no one can say which study (or which CID) it was.
    expect((await verifyReceipt({ receipt: goneReceipt, client: chain.client(0) })).failed).toEqual([]);
    const { salt: _salt, ...unsalted } = goneReceipt;
    const asV2 = { ...unsalted, v: 'dicom-vault-receipt/2', cid: parsed.cid.toString(), root: Buffer.from(parsed.root.slice(2), 'hex').toString('base64url') };
    expect((await verifyReceipt({ receipt: asV2, client: chain.client(0) })).failed).toEqual(['inclusion']);

    // The certificate is anchored like any head: queued at once, in the next batch.
    const api = node.url.replace(/\/dicom-web$/, '/api');
    // The patient's account went with the erasure (its session too): the request id alone fetches the receipt.
    expect((await fetch(`${api}/patient/erasure-requests/${request.id}/receipt`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    const receiptRoute = async (): Promise<Response> => fetch(`${api}/patient/erasure-requests/${request.id}/receipt`);
    const pending = await receiptRoute();
    expect(pending.status).toBe(202);
    const cid = certificateCid(cert).toString();
    expect(await pending.json()).toEqual({ state: 'pending', cid });
    const next = once(node.anchoring!.service, 'confirmed');
    const third = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed: 9303, patientId: 'ANCHOR-THIRD' });
    expect((await stow(node.url, [await bytesOf(third.instances[0]!)])).status).toBe(200);
    await next;
    const res = await receiptRoute();
    expect(res.status).toBe(200);
    const certReceipt = (await res.json()) as ReceiptJson;
    // The batch: the certificate and the third study, and the audit log's head when one was waiting.
    expect(certReceipt).toMatchObject({ v: 'dicom-vault-receipt/2', cid });
    expect([2, 3]).toContain(certReceipt.size);
    expect((await verifyReceipt({ receipt: certReceipt, client: chain.client(0), expectedCid: cid })).failed).toEqual([]);
  });
});
