import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BENCH_CALLING_AE, parseCpuLine, storescuArgs, storescuProblems, writeStudyFiles } from '../dimse.ts';
import { planStudy } from '../generate.ts';
import { planScenarios } from '../scenarios.ts';

const root = await mkdtemp(join(tmpdir(), 'dv-dimse-'));
afterAll(() => rm(root, { recursive: true, force: true }));

describe('the DIMSE scenario', () => {
  it('sends every file of a study directory over one association, to the AE title it names', () => {
    const args = storescuArgs({ host: '127.0.0.1', port: 11112, calledAeTitle: 'DICOMVAULT' }, '/w/study-1');
    expect(args.slice(-3)).toEqual(['127.0.0.1', '11112', '/w/study-1']);
    expect(args[args.indexOf('-aec') + 1]).toBe('DICOMVAULT');
    expect(args[args.indexOf('-aet') + 1]).toBe(BENCH_CALLING_AE);
    // A directory is scanned, refused instances do not stop the rest, and a 1 GiB instance
    // answered once durable does not time out.
    expect(args).toContain('+sd');
    expect(args).toContain('-nh');
    expect(Number(args[args.indexOf('-td') + 1])).toBeGreaterThanOrEqual(300);
  });

  it("picks storescu's errors and failed stores out of its output, and GNU time's CPU line", () => {
    const out = [
      'W: DIMSE Warning: (DVBENCH,DICOMVAULT): DIMSE Failed to send message',
      'E: Store Failed, file: /w/study-1/001.dcm:',
      'E: 0006:0317 Peer aborted Association (or never connected)',
      'W: no presentation context for: (MRImageStorage) 1.2.840.10008.5.1.4.1.1.4',
      'I: Association Release',
      'DVBENCH-CPU 0.81 0.33',
    ].join('\n');
    expect(storescuProblems(out)).toEqual([
      'W: DIMSE Warning: (DVBENCH,DICOMVAULT): DIMSE Failed to send message',
      'E: Store Failed, file: /w/study-1/001.dcm:',
      'E: 0006:0317 Peer aborted Association (or never connected)',
    ]);
    expect(storescuProblems('I: Requesting Association\nI: Association Accepted\n')).toEqual([]);
    expect(parseCpuLine(out)).toBe(1.14);
    expect(parseCpuLine('no such line')).toBeNull();
  });

  it("writes each study's exact instance bytes into a directory of its own", async () => {
    const studies = [
      planStudy({ kind: 'single', instances: 3, rows: 16, columns: 16, seed: 1 }),
      planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: 2 }),
    ];
    const dirs = await writeStudyFiles(studies, root);
    expect(dirs).toHaveLength(2);
    for (const [i, study] of studies.entries()) {
      const files = (await readdir(dirs[i]!)).sort();
      expect(files).toHaveLength(study.instances.length);
      for (const [k, inst] of study.instances.entries()) {
        const bytes = await readFile(join(dirs[i]!, files[k]!));
        const want: Buffer[] = [];
        for await (const c of inst.open()) want.push(Buffer.from(c));
        expect(bytes.equals(Buffer.concat(want))).toBe(true);
      }
    }
  });

  it('plans a small, a huge and a concurrent C-STORE scenario from the first sizes', () => {
    const plans = planScenarios({ scenarios: ['dimse'], sizesGiB: [0.25, 4], instances: [200, 1000], perRequest: 100, concurrency: 3, maxInstanceGiB: 1 });
    expect(plans.map((p) => [p.id, p.kind, p.shape, p.studies.length])).toEqual([
      ['dimse-small', 'dimse', 'small', 1],
      ['dimse-huge', 'dimse', 'huge', 1],
      ['dimse-concurrent', 'dimse', 'small', 3],
    ]);
    expect(plans[0]!.studies[0]!.instances).toHaveLength(200);
    expect(plans[1]!.studies[0]!.totalBytes).toBeGreaterThan(0.24 * 2 ** 30);
    // Every study of the run its own: no two share a Study Instance UID.
    const uids = plans.flatMap((p) => p.studies.map((s) => s.studyInstanceUID));
    expect(new Set(uids).size).toBe(uids.length);
    expect(
      planScenarios({ scenarios: ['dimse'], sizesGiB: [1], instances: [10], perRequest: 100, concurrency: 1, maxInstanceGiB: 1 }).map((p) => p.id),
    ).toEqual(['dimse-small', 'dimse-huge']);
  });
});
