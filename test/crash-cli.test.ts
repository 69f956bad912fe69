// The real command, as an operator runs it: a node killed with SIGKILL in the middle of a large
// ingest, and the CLI's ingest / verify / export.
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { planStudy } from '../bench/generate.ts';
import { killed, run, serve } from './support/process.ts';
import { retrieve, stow } from './support/dicomweb.ts';
import { havePydicom, PYDICOM_DATA, pydicomInfo } from './support/pydicom.ts';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'dicom-vault-cli-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('a node killed in the middle of a large ingest', () => {
  it('restarts with no half-stored instance visible, and the study can be re-sent', async () => {
    const dataDir = await tempDir();
    // One 256 MiB multi-frame instance, generated on the fly.
    const study = planStudy({ kind: 'multiframe', instances: 1, frames: 512, rows: 512, columns: 256, seed: 42 });
    const inst = study.instances[0]!;
    const boundary = 'crash-test-boundary';
    const head = Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`);
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);

    const first = await serve(dataDir);
    const sent = await new Promise<number>((resolve) => {
      const url = new URL(`${first.url}/studies`);
      const req = request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        headers: {
          'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
          'content-length': head.length + inst.size + tail.length,
        },
      });
      req.on('error', () => undefined);
      let bytes = 0;
      void (async () => {
        req.write(head);
        for await (const chunk of inst.open()) {
          if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
          bytes += chunk.length;
          if (bytes >= 96 * 1024 * 1024) {
            first.child.kill('SIGKILL');
            await killed(first.child);
            req.destroy();
            resolve(bytes);
            return;
          }
        }
      })();
    });
    expect(sent).toBeGreaterThanOrEqual(96 * 1024 * 1024);

    const second = await serve(dataDir);
    try {
      const q = await fetch(`${second.url}/studies?StudyInstanceUID=${study.studyInstanceUID}`, { headers: { accept: 'application/dicom+json' } });
      expect([200, 204]).toContain(q.status);
      if (q.status === 200) expect(await q.json()).toEqual([]);
      expect((await retrieve(`${second.url}/studies/${study.studyInstanceUID}`)).status).toBe(404);

      // Re-send the whole study: stored, and it comes back byte-exact.
      const bytes: Uint8Array[] = [];
      for await (const c of inst.open()) bytes.push(c);
      const whole = Buffer.concat(bytes);
      const r = await stow(second.url, [whole]);
      expect(r.status).toBe(200);
      const back = await retrieve(`${second.url}/studies/${study.studyInstanceUID}`);
      expect(back.parts).toHaveLength(1);
      expect(createHash('sha256').update(back.parts[0]!.body).digest('hex')).toBe(createHash('sha256').update(whole).digest('hex'));
    } finally {
      second.child.kill('SIGTERM');
      await killed(second.child);
    }
  });
});

describe.skipIf(!havePydicom)('the dicom-vault command', () => {
  it('ingests a folder with progress, verifies a study, and exports it byte-exact', async () => {
    const dataDir = await tempDir();
    const input = await tempDir();
    await mkdir(join(input, 'nested'));
    const good = ['CT_small.dcm', 'MR_small.dcm', 'rtdose.dcm', 'waveform_ecg.dcm'];
    for (const f of good) await copyFile(join(PYDICOM_DATA, 'test_files', f), join(input, 'nested', f));
    await copyFile(join(PYDICOM_DATA, 'test_files', 'no_meta.dcm'), join(input, 'no_meta.dcm'));

    const ingest = await run(['ingest', input, '--data-dir', dataDir]);
    expect(ingest.code, ingest.stderr).toBe(2); // one file refused
    expect(ingest.stdout).toMatch(/5 files: 4 stored, 0 already stored, 1 refused/);
    expect(ingest.stderr).toMatch(/no_meta\.dcm: NOT_DICOM/);

    const ct = pydicomInfo(join(PYDICOM_DATA, 'test_files', 'CT_small.dcm'));
    const verify = await run(['verify', ct.studyUID, '--data-dir', dataDir]);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stdout).toMatch(/OK: every block and instance verified/);

    const out = await tempDir();
    const exp = await run(['export', ct.studyUID, out, '--data-dir', dataDir]);
    expect(exp.code, exp.stderr).toBe(0);
    const written = await readFile(join(out, ct.seriesUID, `${ct.sopUID}.dcm`));
    expect(Buffer.compare(written, await readFile(join(PYDICOM_DATA, 'test_files', 'CT_small.dcm')))).toBe(0);

    // A flipped byte in any block: verify fails and names the block.
    const blocksRoot = join(dataDir, 'blocks');
    const shards = await readdir(blocksRoot, { withFileTypes: true });
    let flipped = 0;
    for (const shard of shards.filter((s) => s.isDirectory())) {
      for (const f of await readdir(join(blocksRoot, shard.name))) {
        const p = join(blocksRoot, shard.name, f);
        const b = await readFile(p);
        b[b.length >> 1]! ^= 0x80;
        await writeFile(p, b);
        flipped++;
      }
    }
    expect(flipped).toBeGreaterThan(0);
    const bad = await run(['verify', ct.studyUID, '--data-dir', dataDir]);
    expect(bad.code).toBe(3);
    expect(bad.stdout).toMatch(/CORRUPT (bafk|bafy)\S+/);
    expect(bad.stdout).toMatch(/FAILED/);

    const unknown = await run(['verify', '1.2.3.4', '--data-dir', dataDir]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/STUDY_NOT_FOUND/);
  });
});
