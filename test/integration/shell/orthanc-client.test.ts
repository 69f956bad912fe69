// The most used open PACS as a real client of the node: Debian's Orthanc (1.10, DICOMweb plugin
// 1.7) pushes a study to the node with its STOW-RS client (a 73-character boundary, chunked
// transfer encoding) and pulls one back with its WADO-RS client into an empty Orthanc; the bytes
// are compared with what Orthanc itself stored.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { freePort, startOrthanc, type RunningOrthanc } from '../../../bench/orthanc.ts';
import { bytesOf } from '../../support/generated.ts';
import { retrieve } from '../../support/dicomweb.ts';
import { PYDICOM_DATA } from '../../support/pydicom.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

async function rest(orthanc: RunningOrthanc, path: string, init: RequestInit = {}): Promise<any> {
  const res = await fetch(`${orthanc.restUrl}${path}`, { ...init, signal: AbortSignal.timeout(120_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`Orthanc ${init.method ?? 'GET'} ${path}: HTTP ${res.status} ${text}`);
  return text === '' ? undefined : JSON.parse(text);
}

describe('Orthanc as a DICOMweb client of the node', () => {
  let node: TestNode;
  let work: string;
  let source: RunningOrthanc;
  let target: RunningOrthanc;

  beforeAll(async () => {
    node = await startTestNode();
    work = await mkdtemp(join(tmpdir(), 'dv-orthanc-client-'));
    // Orthanc sends the node's token the way a PACS administrator would configure it: a fixed header.
    const servers = { DicomWeb: { Servers: { vault: { Url: `${node.url}/`, HttpHeaders: { Authorization: `Bearer ${node.token}` } } } } };
    source = await startOrthanc(join(work, 'source'), { port: await freePort(), install: false, config: servers });
    target = await startOrthanc(join(work, 'target'), { port: await freePort(), install: false, config: servers });
  }, 120_000);
  afterAll(async () => {
    await Promise.allSettled([source?.stop(), target?.stop()]);
    await node?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('pushes a study with its STOW-RS client; the node stores every instance byte for byte', async () => {
    const study = planStudy({ kind: 'single', instances: 5, rows: 128, columns: 128, seed: 2001 });
    const files = await Promise.all(study.instances.map(bytesOf));
    files.push(await readFile(join(PYDICOM_DATA, 'test_files', 'CT_small.dcm')));
    const ids = new Set<string>();
    for (const f of files) ids.add((await rest(source, '/instances', { method: 'POST', body: f })).ParentStudy);
    expect(ids.size).toBe(2);
    for (const id of ids) await rest(source, '/dicom-web/servers/vault/stow', { method: 'POST', body: JSON.stringify({ Resources: [id] }) });
    // Every instance as Orthanc stored it, against the node's copy as stored (transfer-syntax=*).
    for (const instanceId of (await rest(source, '/instances')) as string[]) {
      const tags = await rest(source, `/instances/${instanceId}/simplified-tags`);
      const bytes = Buffer.from(await (await fetch(`${source.restUrl}/instances/${instanceId}/file`)).arrayBuffer());
      const back = await retrieve(`${node.url}/studies/${tags.StudyInstanceUID}/series/${tags.SeriesInstanceUID}/instances/${tags.SOPInstanceUID}`);
      expect(back.status, tags.SOPInstanceUID).toBe(200);
      expect(Buffer.compare(back.parts[0]!.body, bytes), tags.SOPInstanceUID).toBe(0);
    }
  }, 120_000);

  it('pulls a study back with its WADO-RS client into an empty Orthanc, byte for byte', async () => {
    const study = planStudy({ kind: 'single', instances: 4, rows: 96, columns: 96, seed: 2002 });
    const files = await Promise.all(study.instances.map(bytesOf));
    for (const f of files) {
      const r = await fetch(`${node.url}/studies`, { method: 'POST', headers: { 'content-type': 'application/dicom' }, body: f });
      expect(r.status).toBe(200);
    }
    await rest(target, '/dicom-web/servers/vault/retrieve', { method: 'POST', body: JSON.stringify({ Resources: [{ Study: study.studyInstanceUID }] }) });
    const pulled = (await rest(target, '/instances')) as string[];
    expect(pulled).toHaveLength(4);
    const bySop = new Map(study.instances.map((inst, i) => [inst.sopInstanceUID, files[i]!]));
    for (const id of pulled) {
      const tags = await rest(target, `/instances/${id}/simplified-tags`);
      const bytes = Buffer.from(await (await fetch(`${target.restUrl}/instances/${id}/file`)).arrayBuffer());
      // Orthanc keeps what the node sent: the generated files are Explicit VR LE, sent unchanged.
      expect(Buffer.compare(bytes, bySop.get(tags.SOPInstanceUID)!), tags.SOPInstanceUID).toBe(0);
    }
  }, 120_000);
});
