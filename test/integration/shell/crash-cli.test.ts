// The real command, as an operator runs it: a node killed with SIGKILL in the middle of a large
// ingest (in the middle of an instance; between the instances of one request), and the CLI's
// ingest / verify / export.
import { createHash, randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stow as stowStudy, wado } from '../../../bench/client.ts';
import { planStudy, type GeneratedInstance } from '../../../bench/generate.ts';
import { killed, run, serve } from '../../support/process.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { requireFreeSpace } from '../../support/disk.ts';
import { PYDICOM_DATA, pydicomInfo, requirePydicom } from '../../support/pydicom.ts';

const MiB = 2 ** 20;

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

describe('a node killed between the instances of one multi-instance STOW request', () => {
  // Blocks left behind by the killed request stay on disk unreferenced: a garbage collector for
  // them is not built yet (README, "Durability and crashes"). The test counts them and prints
  // the count; it does not assert it, so that a future GC does not break it.
  it('restarts with none of that request visible, other studies intact, and the request can be re-sent', async () => {
    const dataDir = await tempDir();
    // 6 instances of 64 MiB (128 frames of 512x512x16 bit) in one request, plus a control study.
    const crashed = planStudy({ kind: 'multiframe', instances: 6, frames: 128, rows: 512, columns: 512, seed: 42 });
    const control = planStudy({ kind: 'multiframe', instances: 2, frames: 16, rows: 512, columns: 512, seed: 43 });
    await requireFreeSpace(dataDir, 3 * crashed.totalBytes + control.totalBytes, 'the multi-instance crash test');
    const chunksOf = (inst: GeneratedInstance): number => Math.ceil(inst.size / MiB);
    // The kill lands once this many instances have gone through the whole pipeline (every chunk
    // and the instance node written), while the next one is half sent and the body unfinished.
    const complete = 4;

    const first = await serve(dataDir);
    let upload: PausedUpload | undefined;
    let before: BlockCensus;
    let atKill: BlockCensus;
    try {
      const c = await stowStudy({ baseUrl: first.url, study: control, perRequest: control.instances.length, concurrency: 1 });
      expect(c.failures).toEqual([]);
      before = await blockCensus(dataDir);

      upload = await uploadUntil(first.url, crashed.instances, { instances: complete, thenBytes: 32 * MiB });
      const wantRaw = before.raw + crashed.instances.slice(0, complete).reduce((a, i) => a + chunksOf(i), 0);
      const wantNodes = before.dagCbor + complete;
      const deadline = Date.now() + 30_000;
      for (;;) {
        atKill = await blockCensus(dataDir);
        if (atKill.raw >= wantRaw && atKill.dagCbor >= wantNodes) break;
        if (Date.now() > deadline) throw new Error(`the node did not write ${complete} instances within 30 s: ${JSON.stringify(atKill)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // No answer yet: the request has not ended.
      expect(upload.response()).toBeUndefined();
      first.child.kill('SIGKILL');
      await killed(first.child);
    } finally {
      upload?.destroy();
      if (first.child.exitCode === null && first.child.signalCode === null) first.child.kill('SIGKILL');
      await killed(first.child);
    }
    atKill = await blockCensus(dataDir);
    // Every instance node of the complete instances is on disk: the kill came after them.
    expect(atKill.dagCbor - before.dagCbor).toBeGreaterThanOrEqual(complete);

    // Offline, before the restart: the other study verifies clean, the crashed one is unknown.
    const verifyControl = await run(['verify', control.studyInstanceUID, '--data-dir', dataDir, '--json']);
    expect(verifyControl.code, verifyControl.stderr).toBe(0);
    const controlReport = JSON.parse(verifyControl.stdout) as { ok: boolean; blocks: number; instances: number };
    expect(controlReport).toMatchObject({ ok: true, instances: 2 });
    const verifyCrashed = await run(['verify', crashed.studyInstanceUID, '--data-dir', dataDir]);
    expect(verifyCrashed.code).toBe(1);
    expect(verifyCrashed.stderr).toMatch(/STUDY_NOT_FOUND/);

    const second = await serve(dataDir);
    try {
      // Nothing of the killed request is visible, at any QIDO level, nor retrievable.
      const json = { headers: { accept: 'application/dicom+json' } };
      for (const q of [
        `/studies?StudyInstanceUID=${crashed.studyInstanceUID}`,
        `/series?StudyInstanceUID=${crashed.studyInstanceUID}`,
        `/instances?StudyInstanceUID=${crashed.studyInstanceUID}`,
        ...crashed.instances.map((i) => `/instances?SOPInstanceUID=${i.sopInstanceUID}`),
      ]) {
        const r = await fetch(`${second.url}${q}`, json);
        expect([200, 204], q).toContain(r.status);
        if (r.status === 200) expect(await r.json(), q).toEqual([]);
      }
      expect((await retrieve(`${second.url}/studies/${crashed.studyInstanceUID}`)).status).toBe(404);
      for (const i of crashed.instances.slice(0, complete)) {
        const r = await retrieve(`${second.url}/studies/${crashed.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`);
        expect(r.status).toBe(404);
      }
      // The other study is still served byte-exact.
      const back = await wado({ baseUrl: second.url, studyInstanceUID: control.studyInstanceUID, expect: control, authorization: second.token });
      expect(back.mismatches).toEqual([]);

      // The same request again: every instance stored, and all come back byte-exact.
      const again = await stowStudy({ baseUrl: second.url, study: crashed, perRequest: crashed.instances.length, concurrency: 1 });
      expect(again.failures).toEqual([]);
      expect(again.statusCounts).toEqual({ '200': 1 });
      expect(again.stored).toBe(crashed.instances.length);
      const resent = await wado({ baseUrl: second.url, studyInstanceUID: crashed.studyInstanceUID, expect: crashed, authorization: second.token });
      expect(resent.mismatches).toEqual([]);
      expect(resent.parts).toBe(crashed.instances.length);
    } finally {
      await second.stop();
    }
    const verifyResent = await run(['verify', crashed.studyInstanceUID, '--data-dir', dataDir, '--json']);
    expect(verifyResent.code, verifyResent.stderr).toBe(0);
    const resentReport = JSON.parse(verifyResent.stdout) as { ok: boolean; blocks: number; instances: number };
    expect(resentReport).toMatchObject({ ok: true, instances: crashed.instances.length });

    // Orphans: every block file that no study's DAG references.
    const after = await blockCensus(dataDir);
    const orphans = after.raw + after.dagCbor - controlReport.blocks - resentReport.blocks;
    const written = atKill.raw + atKill.dagCbor - before.raw - before.dagCbor;
    console.info(
      `killed multi-instance STOW: ${atKill.raw - before.raw} chunk blocks and ${atKill.dagCbor - before.dagCbor} instance nodes ` +
        `(${((atKill.bytes - before.bytes) / MiB).toFixed(1)} MiB) written before the kill, ${complete} instances complete; ` +
        `after restart and re-send: ${orphans} unreferenced block files (of the ${written} the killed request wrote) ` +
        `and ${after.temp} temp files remain (no GC yet)`,
    );
  }, 180_000);
});

interface PausedUpload {
  /** The response, if the node answered before the body was complete. */
  response(): IncomingMessage | undefined;
  destroy(): void;
}

/**
 * Starts a multipart STOW of `instances` (as one request, exact Content-Length) and sends the
 * first `instances` of them whole, then `thenBytes` of the next, and stops there, the body
 * unfinished. Resolves once those bytes are handed to the socket.
 */
async function uploadUntil(baseUrl: string, instances: GeneratedInstance[], stop: { instances: number; thenBytes: number }): Promise<PausedUpload> {
  const boundary = `crash-${randomBytes(8).toString('hex')}`;
  const head = (i: GeneratedInstance): Buffer => Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\nContent-Length: ${i.size}\r\n\r\n`, 'latin1');
  const crlf = Buffer.from('\r\n');
  const tail = Buffer.from(`--${boundary}--\r\n`, 'latin1');
  const length = instances.reduce((a, i) => a + head(i).length + i.size + crlf.length, 0) + tail.length;
  const url = new URL(`${baseUrl}/studies`);
  const req = request(url, {
    method: 'POST',
    headers: {
      'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
      'content-length': length,
      accept: 'application/dicom+json',
    },
  });
  let response: IncomingMessage | undefined;
  let failed: Error | undefined;
  req.on('response', (r: IncomingMessage) => {
    response = r;
    r.resume();
  });
  req.on('error', (err) => {
    failed ??= err;
  });
  const write = async (b: Buffer): Promise<void> => {
    if (failed) throw failed;
    if (!req.write(b)) await new Promise((r) => req.once('drain', r));
  };
  for (const inst of instances.slice(0, stop.instances)) {
    await write(head(inst));
    for await (const c of inst.open()) await write(c);
    await write(crlf);
  }
  const partial = instances[stop.instances]!;
  await write(head(partial));
  for await (const c of partial.open(0, stop.thenBytes)) await write(c);
  return { response: () => response, destroy: () => req.destroy() };
}

interface BlockCensus {
  /** Chunk blocks (raw codec). */
  raw: number;
  /** Instance nodes and study manifests (dag-cbor). */
  dagCbor: number;
  /** Temp files of writes that never finished. */
  temp: number;
  /** Bytes of the block files. */
  bytes: number;
}

/** Counts the fs block store's files by the codec their names spell (base32 CIDv1). */
async function blockCensus(dataDir: string): Promise<BlockCensus> {
  const census: BlockCensus = { raw: 0, dagCbor: 0, temp: 0, bytes: 0 };
  const root = join(dataDir, 'blocks');
  let shards: Dirent[];
  try {
    shards = await readdir(root, { withFileTypes: true });
  } catch {
    return census;
  }
  for (const shard of shards.filter((s) => s.isDirectory())) {
    for (const f of await readdir(join(root, shard.name), { withFileTypes: true })) {
      if (f.name.endsWith('.tmp')) census.temp++;
      else if (f.name.startsWith('bafkrei')) census.raw++;
      else if (f.name.startsWith('bafyrei')) census.dagCbor++;
      else continue;
      if (!f.name.endsWith('.tmp')) census.bytes += (await stat(join(root, shard.name, f.name))).size;
    }
  }
  return census;
}

describe('the dicom-vault command', () => {
  it('ingests a folder with progress, verifies a study, and exports it byte-exact', async () => {
    requirePydicom();
    const dataDir = await tempDir();
    const input = await tempDir();
    await mkdir(join(input, 'nested'));
    const good = ['CT_small.dcm', 'MR_small.dcm', 'rtdose.dcm', 'waveform_ecg.dcm'];
    for (const f of good) await copyFile(join(PYDICOM_DATA, 'test_files', f), join(input, 'nested', f));
    await copyFile(join(PYDICOM_DATA, 'test_files', 'no_meta.dcm'), join(input, 'no_meta.dcm'));

    const ingest = await run(['ingest', input, '--data-dir', dataDir]);
    expect(ingest.code, ingest.stderr).toBe(3); // one file refused
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
