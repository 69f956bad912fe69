// STOW-RS over real HTTP: a single application/dicom body, POST /studies/{study}, and instances
// of another study than the URL names (refused with FailureReason A900, nothing of them stored),
// and a request whose blocks the store cannot sync (no study of it committed).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../../bench/generate.ts';
import { bytesOf } from '../../../support/generated.ts';
import { retrieve, stow, uidsIn, type StowResult, failuresIn } from '../../../support/dicomweb.ts';
import { startTestApp, startTestNode, type TestApp, type TestNode } from '../../../support/node.ts';
import { VaultError } from '../../../../src/core/errors.ts';
import type { BlockStore } from '../../../../storage/block-store.ts';

/** PS3.4 C.4.2.1.4.1: the instance does not belong to the study the request names. */
const DOES_NOT_MATCH = 0xa900;

async function postDicom(url: string, body: Buffer): Promise<StowResult> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/dicom', accept: 'application/dicom+json' }, body });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : {}, headers: res.headers };
}

/** Matches of a QIDO query (0 for 204 No Content). */
async function listedAt(base: string, query: string): Promise<number> {
  const res = await fetch(`${base}${query}`, { headers: { accept: 'application/dicom+json' } });
  return res.status === 204 ? 0 : ((await res.json()) as unknown[]).length;
}

async function blockCountOf(store: BlockStore): Promise<number> {
  let n = 0;
  for await (const _ of store.list!()) n++;
  return n;
}

describe('STOW-RS', () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode({ chunkSize: 4096 });
  });
  afterAll(async () => node?.stop());

  const small = (seed: number, instances = 1): GeneratedStudy => planStudy({ kind: 'single', instances, rows: 16, columns: 16, seed });
  const instanceUrl = (s: GeneratedStudy, k = 0): string =>
    `${node.url}/studies/${s.studyInstanceUID}/series/${s.instances[k]!.seriesInstanceUID}/instances/${s.instances[k]!.sopInstanceUID}`;
  const listed = (query: string): Promise<number> => listedAt(node.url, query);
  const blockCount = (): Promise<number> => blockCountOf(node.vault.store);

  it('stores a single application/dicom body: 200 with ReferencedSOPSequence and a RetrieveURL that returns it', async () => {
    const s = small(801);
    const bytes = await bytesOf(s.instances[0]!);
    const r = await postDicom(`${node.url}/studies`, bytes);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toContain('application/dicom+json');
    expect(r.body['00081198']).toBeUndefined();
    const ref = r.body['00081199']!.Value!;
    expect(ref).toHaveLength(1);
    expect(ref[0]['00081150']).toEqual({ vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.4'] });
    expect(ref[0]['00081155']).toEqual({ vr: 'UI', Value: [s.instances[0]!.sopInstanceUID] });
    expect(ref[0]['00081190']).toEqual({ vr: 'UR', Value: [instanceUrl(s)] });
    expect(r.body['00081190']).toEqual({ vr: 'UR', Value: [`${node.url}/studies/${s.studyInstanceUID}`] });
    const back = await retrieve(ref[0]['00081190'].Value[0]);
    expect(back.status).toBe(200);
    expect(back.parts[0]!.body.equals(bytes)).toBe(true);
  });

  it('stores instances posted to POST /studies/{study} for that study (multipart and single body)', async () => {
    const s = small(802, 3);
    const [a, b, c] = await Promise.all(s.instances.map(bytesOf));
    const multi = await stow(node.url, [a!, b!], { study: s.studyInstanceUID });
    expect(multi.status).toBe(200);
    expect(uidsIn(multi.body['00081199']).sort()).toEqual([s.instances[0]!.sopInstanceUID, s.instances[1]!.sopInstanceUID].sort());
    expect(multi.body['00081190']).toEqual({ vr: 'UR', Value: [`${node.url}/studies/${s.studyInstanceUID}`] });
    const single = await postDicom(`${node.url}/studies/${s.studyInstanceUID}`, c!);
    expect(single.status).toBe(200);
    expect(uidsIn(single.body['00081199'])).toEqual([s.instances[2]!.sopInstanceUID]);
    expect(await listed(`/studies/${s.studyInstanceUID}/instances`)).toBe(3);
  });

  it('refuses an instance of another study posted to POST /studies/{study}: 409, FailureReason A900, nothing of it stored or listed', async () => {
    const target = small(803);
    expect((await stow(node.url, [await bytesOf(target.instances[0]!)])).status).toBe(200);
    const stranger = small(804);
    const blocksBefore = await blockCount();

    const bytes = await bytesOf(stranger.instances[0]!);
    for (const r of [
      await stow(node.url, [bytes], { study: target.studyInstanceUID }),
      await postDicom(`${node.url}/studies/${target.studyInstanceUID}`, bytes),
    ]) {
      expect(r.status).toBe(409);
      expect(r.body['00081199']).toBeUndefined();
      const failed = r.body['00081198']!.Value!;
      expect(failed).toHaveLength(1);
      expect(failed[0]['00081197']).toEqual({ vr: 'US', Value: [DOES_NOT_MATCH] });
      expect(failed[0]['00081197'].Value[0]).toBe(43264);
      expect(failed[0]['00081155']).toEqual({ vr: 'UI', Value: [stranger.instances[0]!.sopInstanceUID] });
      expect(failuresIn(r.body)[0]!.reason).toMatch(/study/i);
      expect(r.headers.get('warning')).toMatch(/^299 dicom-vault "1 of 1 instances not stored/);
    }
    expect(await listed(`/studies?StudyInstanceUID=${stranger.studyInstanceUID}`)).toBe(0);
    expect(await listed(`/instances?SOPInstanceUID=${stranger.instances[0]!.sopInstanceUID}`)).toBe(0);
    expect(await listed(`/studies/${target.studyInstanceUID}/instances`)).toBe(1);
    expect((await retrieve(instanceUrl(stranger))).status).toBe(404);
    expect(await blockCount()).toBe(blocksBefore);
  });

  it('stores the matching instance and refuses the other with A900 when both are posted to POST /studies/{study} (202)', async () => {
    const target = small(805, 2);
    const stranger = small(806);
    const [good, alsoGood] = await Promise.all(target.instances.map(bytesOf));
    const bad = await bytesOf(stranger.instances[0]!);
    const r = await stow(node.url, [good!, bad, alsoGood!], { study: target.studyInstanceUID });
    expect(r.status).toBe(202);
    expect(uidsIn(r.body['00081199']).sort()).toEqual(target.instances.map((i) => i.sopInstanceUID).sort());
    const failed = r.body['00081198']!.Value!;
    expect(failed).toHaveLength(1);
    expect(failed[0]['00081197'].Value).toEqual([DOES_NOT_MATCH]);
    expect(failed[0]['00081155'].Value).toEqual([stranger.instances[0]!.sopInstanceUID]);
    expect(await listed(`/studies/${target.studyInstanceUID}/instances`)).toBe(2);
    expect(await listed(`/instances?SOPInstanceUID=${stranger.instances[0]!.sopInstanceUID}`)).toBe(0);
    expect(await listed(`/studies?StudyInstanceUID=${stranger.studyInstanceUID}`)).toBe(0);
    const back = await retrieve(`${node.url}/studies/${target.studyInstanceUID}`);
    expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual([good!, alsoGood!].map((b) => b.toString('base64')).sort());
  });
});

describe('STOW-RS when the block store cannot make a request durable', () => {
  let app: TestApp;
  let failFlush = false;
  beforeAll(async () => {
    app = await startTestApp({
      chunkSize: 4096,
      // Every call passed through, but flush fails while failFlush is set.
      wrapStore: (inner: BlockStore): BlockStore => ({
        put: (cid, bytes, options) => inner.put(cid, bytes, options),
        get: (cid, options) => inner.get(cid, options),
        has: (cid, options) => inner.has(cid, options),
        delete: (cid, options) => inner.delete(cid, options),
        flush: (options) => (failFlush ? Promise.reject(new VaultError('STORE_UNAVAILABLE', 'injected: the disk refused to sync')) : inner.flush!(options)),
      }),
    });
  });
  afterAll(async () => app?.stop());

  const listed = (query: string): Promise<number> => listedAt(app.url, query);
  const blockCount = (): Promise<number> => blockCountOf(app.vault.store);

  it('commits no study of a request whose blocks could not be synced (503), removes what it wrote, and stores the same request once the disk syncs again', async () => {
    const a = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: 811 });
    const b = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: 812 });
    const parts = await Promise.all([...a.instances, ...b.instances].map(bytesOf));
    const blocksBefore = await blockCount();

    failFlush = true;
    const refused = await stow(app.url, parts);
    failFlush = false;
    expect(refused.status, JSON.stringify(refused.body)).toBe(503);
    for (const s of [a, b]) expect(await listed(`/studies?StudyInstanceUID=${s.studyInstanceUID}`)).toBe(0);
    expect(await blockCount()).toBe(blocksBefore);

    const stored = await stow(app.url, parts);
    expect(stored.status).toBe(200);
    for (const s of [a, b]) expect(await listed(`/studies/${s.studyInstanceUID}/instances`)).toBe(2);
    const back = await retrieve(`${app.url}/studies/${b.studyInstanceUID}`);
    expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual(
      parts
        .slice(2)
        .map((p) => p.toString('base64'))
        .sort(),
    );
  });
});
