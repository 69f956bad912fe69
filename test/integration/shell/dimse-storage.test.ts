// The DIMSE Storage SCP against dcmtk's real echoscu and storescu, as a modality or PACS pushes:
// C-ECHO, AE titles, each transfer syntax stored as sent (a Part 10 stream whose data set is byte
// for byte what was on the wire), the C-STORE statuses a failing ingest gives, and many small
// instances over one association. The SCP runs in this process on a free port, with the test
// ingest of test/support/dimse.ts. Other DIMSE suites: dimse-large.test.ts,
// dimse-protocol.test.ts.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedInstance } from '../../../bench/generate.ts';
import { IMPLEMENTATION_CLASS_UID } from '../../../src/shell/dimse/file-meta.ts';
import { startDimseServer, type DimseServer } from '../../../src/shell/dimse/scp.ts';
import { DCMTK_ENV, ECHOSCU, STORESCU, dataSetOffset, runTool } from '../../support/dcmtk.ts';
import { AE, FileIngest, type Received, requireDcmtkAndPydicom, storescu, TEST_FILES, writeBigFile } from '../../support/dimse.ts';
import { captureLogs, type CapturedLogs } from '../../support/logs.ts';

/** ~24 MiB. */
const MEDIUM_FRAMES = 48;

// One pydicom file per transfer syntax family, with the storescu option that proposes the file's
// own syntax (storescu otherwise proposes uncompressed ones and would have to decompress).
// `unchanged`: storescu sends the file's data set exactly as stored. The others it re-encodes on
// the way (drops DataSetTrailingPadding, deflates anew, pads odd JPEG items), so for all of
// them dcmtk's own storescp in bit-preserving mode is the referee of what was on the wire.
const SYNTAX_CASES = [
  { file: 'SC_rgb_small_odd.dcm', option: '-xe', ts: '1.2.840.10008.1.2.1', unchanged: true },
  { file: 'MR_small_implicit.dcm', option: '-xi', ts: '1.2.840.10008.1.2', unchanged: true },
  { file: 'MR_small_bigendian.dcm', option: '-xb', ts: '1.2.840.10008.1.2.2', unchanged: true },
  { file: 'SC_rgb_jpeg_dcmtk.dcm', option: '-xy', ts: '1.2.840.10008.1.2.4.50', unchanged: true },
  { file: 'SC_rgb_jpeg_gdcm.dcm', option: '-xs', ts: '1.2.840.10008.1.2.4.70', unchanged: true },
  { file: 'GDCMJ2K_TextGBR.dcm', option: '-xv', ts: '1.2.840.10008.1.2.4.90', unchanged: true },
  { file: 'JPEG2000.dcm', option: '-xw', ts: '1.2.840.10008.1.2.4.91', unchanged: false },
  { file: 'SC_rgb_rle.dcm', option: '-xr', ts: '1.2.840.10008.1.2.5', unchanged: true },
  { file: 'CT_small.dcm', option: '-xe', ts: '1.2.840.10008.1.2.1', unchanged: false },
  { file: 'image_dfl.dcm', option: '-xd', ts: '1.2.840.10008.1.2.1.99', unchanged: false },
] as const;
function dataSetOf(path: string): Buffer {
  const buf = readFileSync(path);
  return buf.subarray(dataSetOffset(buf));
}

/** pydicom's reading of files, as an independent referee: [SOPInstanceUID, TransferSyntaxUID, Implementation Class UID]. */
function pydicomReadSync(paths: string[]): Array<[string, string, string]> {
  const script = `
import pydicom, json, sys
out = []
for p in sys.argv[1:]:
    ds = pydicom.dcmread(p)
    ds.PixelData if 'PixelData' in ds else None
    out.append([str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID), str(ds.file_meta.get('ImplementationClassUID', ''))])
print(json.dumps(out))
`;
  const r = spawnSync('/usr/bin/python3', ['-c', script, ...paths], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pydicom could not read the files: ${r.stderr}`);
  return JSON.parse(r.stdout) as Array<[string, string, string]>;
}
async function writeInstance(inst: GeneratedInstance, path: string): Promise<void> {
  await pipeline(Readable.from(inst.open()), createWriteStream(path));
}
/** A port nothing listens on right now, for dcmtk's storescp (which cannot be told to pick one). */
async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
// ---------------------------------------------------------------------------------------------

requireDcmtkAndPydicom();

describe('DIMSE Storage SCP with dcmtk storescu/echoscu', () => {
  let dir: string;
  let ingest: FileIngest;
  let logs: CapturedLogs;
  let server: DimseServer;
  let medium: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dimse-scp-'));
    medium = join(dir, 'medium.dcm');
    writeBigFile(medium, MEDIUM_FRAMES);

    ingest = new FileIngest(dir);
    logs = captureLogs('debug');
    server = await startDimseServer({ port: 0, aeTitle: AE, logger: logs.logger, ingest, idleTimeoutMs: 30_000 });
  });

  afterAll(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    ingest.mode = { kind: 'store' };
  });

  it('answers C-ECHO, and refuses an association calling another AE title', async () => {
    const ok = await runTool(ECHOSCU, ['-v', '-aec', AE, '127.0.0.1', String(server.port)]);
    expect(ok.code, ok.output).toBe(0);
    expect(ok.output).toMatch(/Received Echo Response \(Success\)/);

    const wrong = await runTool(ECHOSCU, ['-v', '-aec', 'SOMEONEELSE', '127.0.0.1', String(server.port)]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.output).toMatch(/Called AE Title Not Recognized/i);
  });

  it('refuses a calling AE title not in the allowed list at association, storing nothing', async () => {
    const guarded = await startDimseServer({ port: 0, aeTitle: AE, allowedCallingAeTitles: ['MODALITY1'], logger: logs.logger, ingest });
    try {
      const before = ingest.received.length;
      const allowed = await runTool(ECHOSCU, ['-v', '-aet', 'MODALITY1', '-aec', AE, '127.0.0.1', String(guarded.port)]);
      expect(allowed.code, allowed.output).toBe(0);

      const echo = await runTool(ECHOSCU, ['-v', '-aet', 'INTRUDER', '-aec', AE, '127.0.0.1', String(guarded.port)]);
      expect(echo.code).not.toBe(0);
      expect(echo.output).toMatch(/Association Rejected/);
      expect(echo.output).toMatch(/Calling AE Title Not Recognized/i);

      const store = await runTool(STORESCU, ['-v', '-aet', 'INTRUDER', '-aec', AE, '127.0.0.1', String(guarded.port), join(TEST_FILES, 'CT_small.dcm')]);
      expect(store.code).not.toBe(0);
      expect(store.output).toMatch(/Calling AE Title Not Recognized/i);
      expect(ingest.received.length).toBe(before);
    } finally {
      await guarded.close();
    }
  });

  it('stores each transfer syntax as sent: a Part 10 stream with our File Meta and the data set byte for byte', async () => {
    // dcmtk's own SCP, bit-preserving, receives the same sends: it shows what was on the wire.
    const refDir = join(dir, 'storescp');
    await mkdir(refDir);
    const refPort = await freePort();
    const referee = spawn('/usr/bin/storescp', ['+B', '+xa', '-od', refDir, '-fe', '.dcm', '-uf', String(refPort)], { stdio: 'ignore', env: DCMTK_ENV });
    try {
      await sleep(300);
      const got: Array<{ c: (typeof SYNTAX_CASES)[number]; rec: Received; original: string; ref: string }> = [];
      for (const c of SYNTAX_CASES) {
        const file = join(TEST_FILES, c.file);
        const before = ingest.received.length;
        const sent = await storescu(server.port, [file], [c.option]);
        expect(sent.code, `${c.file}\n${sent.output}`).toBe(0);
        expect(sent.output).toMatch(/Received Store Response \(Success\)/);
        expect(sent.output, `${c.file} was sent without conversion`).not.toMatch(/Converting transfer syntax: (.+) -> (?!\1)/);
        expect(ingest.received.length).toBe(before + 1);
        const rec = ingest.received[before]!;
        expect(rec.outcome).toBe('stored');

        const refSent = await runTool(STORESCU, ['-v', c.option, '127.0.0.1', String(refPort), file]);
        expect(refSent.code, refSent.output).toBe(0);
        // storescp names files by SOP Instance UID, and two cases share one: set each aside.
        const [written] = readdirSync(refDir);
        expect(written, `storescp's copy of ${c.file}`).toBeDefined();
        const ref = join(dir, `referee-${got.length}.dcm`);
        await rename(join(refDir, written!), ref);
        got.push({ c, rec, original: file, ref });
      }

      const parsed = pydicomReadSync(got.map((g) => g.rec.path));
      const originals = pydicomReadSync(got.map((g) => g.original));
      for (const [i, g] of got.entries()) {
        const ours = dataSetOf(g.rec.path);
        // Meta as built by the SCP, read by pydicom: same instance, the accepted syntax, our implementation.
        expect(parsed[i]![0], g.c.file).toBe(originals[i]![0]);
        expect(parsed[i]![1], g.c.file).toBe(g.c.ts);
        expect(parsed[i]![2]).toBe(IMPLEMENTATION_CLASS_UID);
        // What dcmtk's bit-preserving SCP received for the same send.
        expect(ours.equals(dataSetOf(g.ref)), `${g.c.file}: data set as on the wire`).toBe(true);
        if (g.c.unchanged) expect(ours.equals(dataSetOf(g.original)), `${g.c.file}: data set as in the original file`).toBe(true);
        expect(g.rec.callingAeTitle).toBe('STORESCU');
      }
    } finally {
      referee.kill('SIGTERM');
      await once(referee, 'close');
    }
  });
  it("maps the ingest's failure to the C-STORE status storescu reports, with its comment", async () => {
    ingest.mode = { kind: 'fail-after-header', dimseStatus: 0xa700, comment: 'out of resources (test)' };
    const refused = await runTool(STORESCU, ['-d', '-aec', AE, '127.0.0.1', String(server.port), join(TEST_FILES, 'CT_small.dcm')]);
    expect(refused.code).not.toBe(0);
    expect(refused.output).toMatch(/DIMSE Status\s*: 0xa700/);
    expect(refused.output).toContain('out of resources (test)');

    // A failure before reading anything: the rest of a 24 MiB data set is drained, then answered.
    ingest.mode = { kind: 'fail-at-once', dimseStatus: 0xc000, comment: 'cannot understand (test)' };
    const failed = await storescu(server.port, [medium]);
    expect(failed.code).not.toBe(0);
    expect(failed.output).toMatch(/Received Store Response \(Error: CannotUnderstand\)/);

    ingest.mode = { kind: 'fail-after-header', dimseStatus: 0xa900, comment: 'data set does not match SOP class' };
    const mismatch = await storescu(server.port, [join(TEST_FILES, 'MR_small_bigendian.dcm')], ['-xb']);
    expect(mismatch.code).not.toBe(0);
    expect(mismatch.output).toMatch(/Received Store Response \(Error: DataSetDoesNotMatchSOPClass\)/);
  });

  it('stores many small instances over one association (and logs no patient data)', async () => {
    const smallDir = join(dir, 'small');
    await mkdir(smallDir);
    const study = planStudy({ kind: 'single', instances: 300, rows: 256, columns: 256, seed: 13 });
    for (const [i, inst] of study.instances.entries()) await writeInstance(inst, join(smallDir, `${i}.dcm`));
    const before = ingest.received.length;
    const t0 = performance.now();
    const sent = await runTool(STORESCU, ['-aec', AE, '+sd', '127.0.0.1', String(server.port), smallDir]);
    const seconds = (performance.now() - t0) / 1000;
    expect(sent.code, sent.output).toBe(0);
    const recs = ingest.received.slice(before);
    expect(recs).toHaveLength(300);
    expect(recs.every((r) => r.outcome === 'stored')).toBe(true);
    console.log(
      `DIMSE small instances: 300 x ${(study.instances[0]!.size / 1024).toFixed(0)} KiB in ${seconds.toFixed(2)} s = ${(300 / seconds).toFixed(0)} inst/s`,
    );

    // Neither patient identity nor instance UIDs reach the log.
    const logged = JSON.stringify(logs.lines);
    expect(logged).not.toContain(study.patientId);
    expect(logged).not.toContain(study.instances[0]!.sopInstanceUID);
    expect(logged).not.toContain(study.studyInstanceUID);
  });
});
