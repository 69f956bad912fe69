// Bad input and faults: each gets a clear 4xx with a reason, nothing partial is stored or listed,
// earlier studies stay retrievable byte-exact, and the node keeps serving.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redactUrl } from '../../../src/shell/log.ts';
import { allBlockFiles, blockFileOf } from '../../support/blocks.ts';
import { planStudy, type GeneratedInstance, type GeneratedStudy } from '../../../bench/generate.ts';
import { verifyStudy } from '../../../src/read/verify.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { getRaw, multipartBody, postRaw, retrieve, stow, uidsIn, failuresIn } from '../../support/dicomweb.ts';
import { captureLogs } from '../../support/logs.ts';
import { CID } from 'multiformats/cid';
import { decodeInstanceNode } from '../../../src/format/dag.ts';

async function bytesOf(inst: GeneratedInstance): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of inst.open()) parts.push(p);
  return Buffer.concat(parts);
}

function small(seed: number, instances = 2): GeneratedStudy {
  return planStudy({ kind: 'single', instances, rows: 32, columns: 32, seed });
}

async function blockFile(dataDir: string, cid: CID): Promise<string> {
  return blockFileOf(join(dataDir, 'blocks'), cid);
}

async function allBlocks(dataDir: string): Promise<string[]> {
  return allBlockFiles(join(dataDir, 'blocks'));
}

describe('bad input and faults', () => {
  let node: TestNode;
  let good: GeneratedStudy;
  let goodBytes: Buffer[];
  const logs = captureLogs();

  const studyList = async (): Promise<string> => (await retrieve(`${node.url}/studies`, 'application/dicom+json')).raw.toString();

  /** The invariants after every refusal. */
  const stillIntact = async (): Promise<void> => {
    const back = await retrieve(`${node.url}/studies/${good.studyInstanceUID}`);
    expect(back.status).toBe(200);
    const got = back.parts.map((p) => p.body.toString('base64')).sort();
    expect(got).toEqual(goodBytes.map((b) => b.toString('base64')).sort());
    expect((await fetch(`${node.url.replace('/dicom-web', '')}/healthz`)).status).toBe(200);
  };

  beforeAll(async () => {
    // Ten clients push at once below, all from this address: the per-client limit is raised to let them in.
    node = await startTestNode({ chunkSize: 4096, logger: logs.logger, flags: { 'max-ingests-per-client': '16' } });
    good = small(1);
    goodBytes = await Promise.all(good.instances.map(bytesOf));
    const r = await stow(node.url, goodBytes);
    expect(r.status).toBe(200);
  });
  afterAll(async () => node?.stop());

  it('refuses a part that is not DICOM (409 with FailedSOPSequence and a reason)', async () => {
    const before = await studyList();
    const r = await stow(node.url, [Buffer.from('this is not a DICOM file at all, just text'.repeat(10))]);
    expect(r.status).toBe(409);
    expect(r.body['00081198']!.Value).toHaveLength(1);
    expect(
      failuresIn(r.body)
        .map((f) => f.reason)
        .join('\n'),
    ).toMatch(/NOT_DICOM|not.*DICOM|preamble|DICM/i);
    expect(await studyList()).toBe(before);
    await stillIntact();
  });

  it('refuses a truncated part and keeps the good parts of the same request (202)', async () => {
    const s = small(2, 2);
    const [a, b] = await Promise.all(s.instances.map(bytesOf));
    const r = await stow(node.url, [a!, b!.subarray(0, b!.length - 100)]);
    expect(r.status).toBe(202);
    expect(uidsIn(r.body['00081199'])).toEqual([s.instances[0]!.sopInstanceUID]);
    expect(r.body['00081198']!.Value).toHaveLength(1);
    expect(
      failuresIn(r.body)
        .map((f) => f.reason)
        .join('\n'),
    ).toMatch(/truncat|beyond|ended/i);
    const listed = await retrieve(`${node.url}/studies/${s.studyInstanceUID}`);
    expect(listed.parts).toHaveLength(1);
    expect(Buffer.compare(listed.parts[0]!.body, a!)).toBe(0);
    await stillIntact();
  });

  it('refuses a body without its closing boundary (400) and stores none of its parts', async () => {
    const s = small(3, 2);
    const parts = await Promise.all(s.instances.map(bytesOf));
    const blocksBefore = await allBlocks(node.dataDir);
    const body = multipartBody(parts, 'xyz');
    const cut = body.subarray(0, body.length - '--xyz--\r\n'.length);
    const r = await postRaw(node.url, '/studies', 'multipart/related; type="application/dicom"; boundary=xyz', cut);
    expect(r.status).toBe(400);
    expect(r.json.code).toBe('MULTIPART_TRUNCATED');
    expect((await retrieve(`${node.url}/studies/${s.studyInstanceUID}`)).status).toBe(404);
    expect(await allBlocks(node.dataDir)).toEqual(blocksBefore);
    await stillIntact();
  });

  it('refuses a wrong or missing boundary (400)', async () => {
    const body = multipartBody(goodBytes, 'right');
    const wrong = await postRaw(node.url, '/studies', 'multipart/related; type="application/dicom"; boundary=wrong', body);
    expect(wrong.status).toBe(400);
    expect(wrong.json.code).toBe('MULTIPART_MALFORMED');
    expect(wrong.json.message).toMatch(/boundary/i);
    const missing = await postRaw(node.url, '/studies', 'multipart/related; type="application/dicom"', body);
    expect(missing.status).toBe(400);
    expect(missing.json.message).toMatch(/boundary/i);
    await stillIntact();
  });

  it('refuses a wrong Content-Type with 415', async () => {
    for (const ct of ['text/plain', 'application/json', 'multipart/form-data; boundary=x', 'multipart/related; type="application/dicom+xml"; boundary=x']) {
      const r = await postRaw(node.url, '/studies', ct, Buffer.from('{}'));
      expect(r.status, ct).toBe(415);
      expect(r.json.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    }
    const none = await postRaw(node.url, '/studies', undefined, Buffer.from('x'));
    expect(none.status).toBe(415);
    await stillIntact();
  });

  it('refuses an element whose declared length runs beyond the data', async () => {
    const s = small(4, 1);
    const bytes = await bytesOf(s.instances[0]!);
    // Pixel Data (7FE0,0010) OW: tag, 'OW', 2 reserved, 4-byte length. Declare 1 GiB more.
    const at = bytes.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x57]));
    expect(at).toBeGreaterThan(0);
    const bad = Buffer.from(bytes);
    bad.writeUInt32LE(bad.readUInt32LE(at + 8) + 2 ** 30, at + 8);
    const r = await stow(node.url, [bad]);
    expect(r.status).toBe(409);
    expect(
      failuresIn(r.body)
        .map((f) => f.reason)
        .join('\n'),
    ).toMatch(/length|beyond|truncat/i);
    expect((await retrieve(`${node.url}/studies/${s.studyInstanceUID}`)).status).toBe(404);
    await stillIntact();
  });

  it('refuses UIDs that are not DICOM UIDs, in the URL and in the body', async () => {
    for (const bad of ['abc', '1.2.x', '1..2', `1.${'2'.repeat(70)}`, '..%2F..%2Fetc', '1.2.3%2F..']) {
      const r = await retrieve(`${node.url}/studies/${bad}`);
      expect(r.status, bad).toBe(400);
      expect(JSON.parse(r.raw.toString()).code).toBe('INVALID_UID');
      const m = await retrieve(`${node.url}/studies/${bad}/series`, 'application/dicom+json');
      expect(m.status, bad).toBe(400);
    }
    expect((await postRaw(node.url, '/studies/not-a-uid', 'application/dicom', goodBytes[0]!)).status).toBe(400);

    const s = planStudy({ kind: 'single', instances: 1, rows: 8, columns: 8, seed: 5, studyInstanceUID: '1.2.826.0.1.3680043.2.1125.99' });
    const bytes = await bytesOf(s.instances[0]!);
    const uid = Buffer.from(s.instances[0]!.sopInstanceUID);
    const evil = Buffer.from(bytes);
    // Overwrite the SOP Instance UID (same length) with path characters.
    let at = evil.indexOf(uid);
    while (at >= 0) {
      evil.write('../'.padEnd(uid.length, 'x'), at, 'latin1');
      at = evil.indexOf(uid, at + 1);
    }
    const r = await stow(node.url, [evil]);
    expect(r.status).toBe(409);
    expect(
      failuresIn(r.body)
        .map((f) => f.reason)
        .join('\n'),
    ).toMatch(/UID/);
    await stillIntact();
  });

  it('answers 404 for unknown UIDs', async () => {
    const u = '1.2.3.4.5.6.7.8.9';
    const g = good.instances[0]!;
    for (const path of [
      `/studies/${u}`,
      `/studies/${u}/metadata`,
      `/studies/${good.studyInstanceUID}/series/${u}`,
      `/studies/${good.studyInstanceUID}/series/${g.seriesInstanceUID}/instances/${u}`,
      `/studies/${good.studyInstanceUID}/series/${g.seriesInstanceUID}/instances/${u}/frames/1`,
    ]) {
      const r = await retrieve(`${node.url}${path}`);
      expect(r.status, path).toBe(404);
    }
  });

  it('keeps every version: new instances link the previous manifest, changed bytes never overwrite', async () => {
    const s = small(6, 3);
    const [a, b, c] = await Promise.all(s.instances.map(bytesOf));
    expect((await stow(node.url, [a!])).status).toBe(200);
    expect((await stow(node.url, [b!])).status).toBe(200);
    const versions = node.vault.catalog.versions(s.studyInstanceUID);
    expect(versions.map((v) => v.version)).toEqual([1, 2]);
    expect(versions[1]!.prev).toBe(versions[0]!.root);

    // Different bytes under an existing SOP Instance UID: a new version; the old bytes remain in the DAG.
    const changed = Buffer.from(a!);
    changed[changed.length - 1]! ^= 0xff;
    expect((await stow(node.url, [changed])).status).toBe(200);
    expect(node.vault.catalog.versions(s.studyInstanceUID)).toHaveLength(3);
    const i0 = s.instances[0]!;
    const back = await retrieve(`${node.url}/studies/${s.studyInstanceUID}/series/${i0.seriesInstanceUID}/instances/${i0.sopInstanceUID}`);
    expect(Buffer.compare(back.parts[0]!.body, changed)).toBe(0);
    const report = await verifyStudy(node.vault, s.studyInstanceUID);
    expect(report.ok).toBe(true);
    expect(report.versions).toBe(3);
    expect(report.instances).toBe(3); // a, b and the new a; the old a is still reachable
    expect((await stow(node.url, [c!])).status).toBe(200);
    expect(node.vault.catalog.pendingAnchors(1000).map((a) => a.root)).toEqual(
      expect.arrayContaining(node.vault.catalog.versions(s.studyInstanceUID).map((v) => v.root)),
    );
  });

  /** Stores a 64x64 instance (3 chunks of 4096 bytes) and flips one byte in its chunk `index`. */
  const storeAndCorrupt = async (seed: number, index: number) => {
    const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed });
    const bytes = await bytesOf(s.instances[0]!);
    expect((await stow(node.url, [bytes])).status).toBe(200);
    const inst = node.vault.catalog.getInstance(s.instances[0]!.sopInstanceUID)!;
    const nodeCid = CID.parse(inst.nodeCid);
    const instanceNode = decodeInstanceNode(await node.vault.store.get(nodeCid), nodeCid);
    expect(instanceNode.links.length).toBeGreaterThan(index + 1); // a later chunk follows the victim
    const victim = instanceNode.links[index]!;
    const file = await blockFile(node.dataDir, victim);
    const raw = await readFile(file);
    raw[100]! ^= 0x01;
    await writeFile(file, raw);
    return {
      study: s,
      bytes,
      victim: victim.toString(),
      /** Offset of the corrupt chunk's first byte in the instance. */
      offset: index * instanceNode.chunkSize,
      url: `${node.url}/studies/${s.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}`,
    };
  };

  it('answers 500 BLOCK_CORRUPT naming the block, before any data, when the first block of an instance was altered', async () => {
    const c = await storeAndCorrupt(7, 0);
    const r = await getRaw(c.url);
    expect(r.status).toBe(500);
    expect(r.complete).toBe(true);
    const body = JSON.parse(r.body.toString());
    expect(body.code).toBe('BLOCK_CORRUPT');
    expect(body.message).toContain(c.victim);
    expect(body.details.cid).toBe(c.victim);
    expect(logs.find(c.victim, 50), 'an error log line naming the block').not.toHaveLength(0);

    const report = await verifyStudy(node.vault, c.study.studyInstanceUID);
    expect(report.ok).toBe(false);
    expect(report.problems.map((p) => p.cid)).toContain(c.victim);
    await stillIntact();
  });

  it('breaks the connection before any byte of an altered later block, logs its CID, and verify names it', async () => {
    const c = await storeAndCorrupt(9, 1);
    const r = await getRaw(c.url);
    // Headers went out with the first (good) block; the only honest signal left is a broken stream.
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    const boundary = /boundary=([^;]+)/.exec(String(r.headers['content-type']))![1]!;
    expect(r.body.includes(Buffer.from(`--${boundary}--`))).toBe(false);
    // What arrived is the part header, then a strict prefix of the instance that stops before the corrupt chunk.
    const headerEnd = r.body.indexOf('\r\n\r\n');
    const received = headerEnd < 0 ? Buffer.alloc(0) : r.body.subarray(headerEnd + 4);
    // No byte of the corrupt chunk [offset, offset + chunkSize) arrived.
    expect(received.length).toBeLessThanOrEqual(c.offset);
    expect(received.length).toBeLessThan(c.bytes.length);
    expect(Buffer.compare(received, c.bytes.subarray(0, received.length))).toBe(0);
    expect(logs.find(c.victim, 40), 'a log line naming the block').not.toHaveLength(0);
    // The access is audited all the same, as one that broke off.
    const path = new URL(c.url).pathname;
    // The log names the request with its UIDs redacted (src/shell/log.ts).
    const audited = logs.lines.filter((l) => (l.audit as { url?: string } | undefined)?.url === redactUrl(path));
    expect(audited.map((l) => l.audit as { status: number; complete: boolean })).toEqual([expect.objectContaining({ status: 200, complete: false })]);

    const report = await verifyStudy(node.vault, c.study.studyInstanceUID);
    expect(report.ok).toBe(false);
    expect(report.problems.map((p) => p.cid)).toContain(c.victim);
    await stillIntact();
  });

  it('answers an error status, before any data, when the first block of an instance is missing', async () => {
    const s = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 8 });
    const bytes = await bytesOf(s.instances[0]!);
    expect((await stow(node.url, [bytes])).status).toBe(200);
    const inst = node.vault.catalog.getInstance(s.instances[0]!.sopInstanceUID)!;
    const nodeCid = CID.parse(inst.nodeCid);
    const first = decodeInstanceNode(await node.vault.store.get(nodeCid), nodeCid).links[0]!;
    await node.vault.store.delete(first);
    const r = await retrieve(`${node.url}/studies/${s.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}`);
    expect(r.status).toBe(500);
    const body = JSON.parse(r.raw.toString());
    expect(body.code).toBe('BLOCK_NOT_FOUND');
    expect(body.message).toContain(first.toString());
    const report = await verifyStudy(node.vault, s.studyInstanceUID);
    expect(report.problems).toContainEqual(expect.objectContaining({ kind: 'missing', cid: first.toString() }));
    await stillIntact();
  });

  it('stores everything when eight clients push different studies and two push to the same study at once', async () => {
    const studies = Array.from({ length: 8 }, (_, i) => small(100 + i, 3));
    const shared = planStudy({ kind: 'single', instances: 6, rows: 16, columns: 16, seed: 200 });
    const sharedBytes = await Promise.all(shared.instances.map(bytesOf));
    const results = await Promise.all([
      ...studies.map(async (s) => stow(node.url, await Promise.all(s.instances.map(bytesOf)))),
      stow(node.url, sharedBytes.slice(0, 3)),
      stow(node.url, sharedBytes.slice(3)),
    ]);
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(200));
    for (const s of studies) {
      const back = await retrieve(`${node.url}/studies/${s.studyInstanceUID}`);
      expect(back.parts).toHaveLength(3);
    }
    const back = await retrieve(`${node.url}/studies/${shared.studyInstanceUID}`);
    expect(back.parts.map((p) => p.body.toString('base64')).sort()).toEqual(sharedBytes.map((b) => b.toString('base64')).sort());
    const versions = node.vault.catalog.versions(shared.studyInstanceUID);
    expect(versions.map((v) => v.version)).toEqual([1, 2]);
    expect(versions[1]!.prev).toBe(versions[0]!.root);
    const report = await verifyStudy(node.vault, shared.studyInstanceUID);
    expect(report.ok).toBe(true);
    expect(report.instances).toBe(6);
    await stillIntact();
  });
});
