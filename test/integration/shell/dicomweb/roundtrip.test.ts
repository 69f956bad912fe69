// Real DICOM files written by others (Debian's python3-pydicom) through STOW-RS and back through
// WADO-RS and QIDO-RS, over real HTTP against a running node.
import { basename } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestNode, type TestNode } from '../../../support/node.ts';
import { retrieve, stow, uidsIn } from '../../../support/dicomweb.ts';
import { NOT_PART10, pydicomFiles, pydicomInfo, read } from '../../../support/pydicom.ts';

const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';

describe('pydicom test files through STOW-RS and WADO-RS', () => {
  let node: TestNode;
  beforeAll(async () => {
    // Small chunks so that these small files still span several blocks.
    node = await startTestNode({ chunkSize: 4096 });
  });
  afterAll(async () => node?.stop());

  const files = pydicomFiles();

  it('finds the test files', () => {
    expect(files.length).toBeGreaterThan(80);
  });

  for (const path of files) {
    const name = basename(path);
    const refusal = NOT_PART10[name];
    if (refusal) {
      it(`refuses ${name} (${refusal}) with a reason and stores nothing`, async () => {
        const before = await retrieve(`${node.url}/studies`, 'application/dicom+json');
        const r = await stow(node.url, [read(path)]);
        expect(r.status).toBe(409);
        const failed = r.body['00081198']?.Value ?? [];
        expect(failed).toHaveLength(1);
        expect(failed[0]['00081197'].Value[0]).toBeGreaterThan(0);
        expect(r.headers.get('warning')).toMatch(/dicom-vault/);
        expect(r.body['00081199']).toBeUndefined();
        const after = await retrieve(`${node.url}/studies`, 'application/dicom+json');
        expect(after.raw.toString()).toBe(before.raw.toString());
      });
      continue;
    }
    it(`stores ${name} and returns it byte-exact`, async () => {
      const bytes = read(path);
      const info = pydicomInfo(path);
      const r = await stow(node.url, [bytes]);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(uidsIn(r.body['00081199'])).toEqual([info.sopUID]);
      const url = `${node.url}/studies/${info.studyUID}/series/${info.seriesUID}/instances/${info.sopUID}`;
      expect(r.body['00081199']!.Value![0]['00081190'].Value[0]).toBe(url);

      const back = await retrieve(url);
      expect(back.status).toBe(200);
      expect(back.parts).toHaveLength(1);
      expect(Buffer.compare(back.parts[0]!.body, bytes)).toBe(0);

      const meta = await fetch(`${url}/metadata`, { headers: { accept: 'application/dicom+json' } });
      expect(meta.status).toBe(200);
      const [ds] = (await meta.json()) as Array<Record<string, { Value?: unknown[] }>>;
      expect(ds!['00080018']?.Value).toEqual([info.sopUID]);
      expect(ds!['0020000D']?.Value).toEqual([info.studyUID]);
    });
  }

  it('re-sending an identical instance stores nothing new and succeeds', async () => {
    const path = files.find((f) => f.endsWith('CT_small.dcm'))!;
    const info = pydicomInfo(path);
    await stow(node.url, [read(path)]);
    const before = node.vault.catalog.versions(info.studyUID).length;
    const r = await stow(node.url, [read(path)]);
    expect(r.status).toBe(200);
    expect(uidsIn(r.body['00081199'])).toEqual([info.sopUID]);
    expect(node.vault.catalog.versions(info.studyUID)).toHaveLength(before);
  });

  it('transcodes implicit VR to Explicit VR Little Endian by default', async () => {
    const path = files.find((f) => f.endsWith('MR_small_implicit.dcm'))!;
    const info = pydicomInfo(path);
    expect((await stow(node.url, [read(path)])).status).toBe(200);
    const url = `${node.url}/studies/${info.studyUID}/series/${info.seriesUID}/instances/${info.sopUID}`;
    const back = await retrieve(url, 'multipart/related; type="application/dicom"');
    expect(back.status).toBe(200);
    expect(back.parts[0]!.headers['content-type']).toContain(`transfer-syntax=${EXPLICIT_VR_LE}`);
    expect(back.parts[0]!.body.subarray(128, 132).toString()).toBe('DICM');
  });

  it('decodes a compressed instance asked for uncompressed, and sends it as stored with transfer-syntax=*', async () => {
    const path = files.find((f) => f.endsWith('JPEG2000.dcm'))!;
    const info = pydicomInfo(path);
    expect((await stow(node.url, [read(path)])).status).toBe(200);
    const url = `${node.url}/studies/${info.studyUID}/series/${info.seriesUID}/instances/${info.sopUID}`;
    const back = await retrieve(url, 'multipart/related; type="application/dicom"');
    expect(back.status).toBe(200);
    expect(back.parts[0]!.headers['content-type']).toBe(`application/dicom; transfer-syntax=${EXPLICIT_VR_LE}`);
    expect(Buffer.compare((await retrieve(url)).parts[0]!.body, read(path))).toBe(0); // transfer-syntax=*
    // Nothing is compressed here: asking for another compressed syntax is refused.
    const other = await retrieve(url, 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50');
    expect(other.status).toBe(406);
    expect(JSON.parse(other.raw.toString()).code).toBe('NOT_ACCEPTABLE');
  });

  it('serves native frames by offset, equal to the frame bytes in the file', async () => {
    const path = files.find((f) => f.endsWith('test_files/rtdose.dcm'))!;
    const info = pydicomInfo(path);
    expect(info.frames).toBe(15);
    const bytes = read(path);
    expect((await stow(node.url, [bytes])).status).toBe(200);
    const inst = node.vault.catalog.getInstance(info.sopUID)!;
    const url = `${node.url}/studies/${info.studyUID}/series/${info.seriesUID}/instances/${info.sopUID}`;
    const r = await retrieve(`${url}/frames/1,15,7`, 'multipart/related; type="application/octet-stream"');
    expect(r.status).toBe(200);
    expect(r.parts).toHaveLength(3);
    [1, 15, 7].forEach((n, i) => {
      const range = inst.layout.frames[n - 1]![0]!;
      expect(Buffer.compare(r.parts[i]!.body, bytes.subarray(range.offset, range.offset + range.length))).toBe(0);
    });
    expect((await retrieve(`${url}/frames/16`, 'multipart/related; type="application/octet-stream"')).status).toBe(404);
    expect((await retrieve(`${url}/frames/0`, 'multipart/related; type="application/octet-stream"')).status).toBe(400);
    expect((await retrieve(`${url}/frames/a`, 'multipart/related; type="application/octet-stream"')).status).toBe(400);
  });

  it('serves encapsulated frames as stored with transfer-syntax=*', async () => {
    const path = files.find((f) => f.endsWith('SC_rgb_rle_2frame.dcm'))!;
    const info = pydicomInfo(path);
    const bytes = read(path);
    expect((await stow(node.url, [bytes])).status).toBe(200);
    const url = `${node.url}/studies/${info.studyUID}/series/${info.seriesUID}/instances/${info.sopUID}`;
    const plain = await retrieve(`${url}/frames/2`, 'multipart/related; type="application/octet-stream"');
    expect(plain.status).toBe(200); // decoded
    expect(plain.parts[0]!.headers['content-type']).toBe(`application/octet-stream; transfer-syntax=${EXPLICIT_VR_LE}`);
    const r = await retrieve(`${url}/frames/2`, 'multipart/related; type="application/octet-stream"; transfer-syntax=*');
    expect(r.status).toBe(200);
    const inst = node.vault.catalog.getInstance(info.sopUID)!;
    const expected = Buffer.concat(inst.layout.frames[1]!.map((f) => bytes.subarray(f.offset, f.offset + f.length)));
    expect(Buffer.compare(r.parts[0]!.body, expected)).toBe(0);
    expect(r.parts[0]!.headers['content-type']).toContain('transfer-syntax=1.2.840.10008.1.2.5');
  });

  it('finds stored studies with QIDO-RS and returns every instance of a study', async () => {
    const path = files.find((f) => f.endsWith('CT_small.dcm'))!;
    const info = pydicomInfo(path);
    const q = await fetch(`${node.url}/studies?StudyInstanceUID=${info.studyUID}`, { headers: { accept: 'application/dicom+json' } });
    expect(q.status).toBe(200);
    const studies = (await q.json()) as Array<Record<string, { Value?: unknown[] }>>;
    expect(studies).toHaveLength(1);
    expect(studies[0]!['0020000D']!.Value).toEqual([info.studyUID]);
    const all = await retrieve(`${node.url}/studies/${info.studyUID}`);
    expect(all.status).toBe(200);
    expect(all.parts.length).toBe(Number(studies[0]!['00201208']!.Value![0]));
  });
});
