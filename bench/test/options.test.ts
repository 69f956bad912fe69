import { describe, expect, it } from 'vitest';
import { tmpdir } from 'node:os';
import { BenchUsageError, DEFAULT_INSTANCES, DEFAULT_SIZES_GIB, HELP, parseBenchArgs, withBackendsDefault } from '../options.ts';

describe('npm run bench options', () => {
  it('defaults: every scenario but the soak at the issue sizes, fs, limits on, no peer, no extras', () => {
    const o = parseBenchArgs([]);
    expect(o.scenarios).toEqual(['huge', 'small', 'concurrent', 'dimse', 'decode', 'auth', 'viewer', 'audit']);
    expect(o.authInstances).toBe(1000);
    expect(o.viewerInstances).toBe(500);
    expect(o.viewerRounds).toBe(3);
    expect(o.viewerOpenings).toBe(3);
    expect(o.authRounds).toBe(3);
    expect(o.authRevocations).toBe(3);
    expect(o.storescu).toBe('/usr/bin/storescu');
    expect(o.decodeFrames).toBe(100);
    expect(o.decodeInstances).toBe(4);
    expect(o.decodeConcurrency).toBe(2);
    expect(o.soakMinutes).toBe(30);
    expect(o.soakIngestMBps).toBe(10);
    expect(o.sizesGiB).toEqual([1, 4, 16]);
    expect(o.sizesGiB).toEqual(DEFAULT_SIZES_GIB);
    expect(o.instances).toEqual([1000, 10000]);
    expect(o.instances).toEqual(DEFAULT_INSTANCES);
    expect(o.perRequest).toBe(100);
    expect(o.concurrency).toBe(4);
    expect(o.store).toBe('fs');
    expect(o.peer).toBeNull();
    expect(o.backends).toBeNull();
    expect(o.limits).toBe(true);
    expect(o.anchor).toBe(false);
    expect(o.out).toBeUndefined();
    expect(o.workDir).toBe(tmpdir());
    expect(o.help).toBe(false);
    expect(o.repeat).toBe(3);
  });

  it('--repeat takes a whole number from 1 to 20', () => {
    expect(parseBenchArgs(['--repeat', '1']).repeat).toBe(1);
    expect(parseBenchArgs(['--repeat', '5']).repeat).toBe(5);
    for (const bad of ['0', '2.5', '21', 'x', '']) expect(() => parseBenchArgs(['--repeat', bad])).toThrow(BenchUsageError);
  });

  it('a small run', () => {
    const o = parseBenchArgs([
      '--scenario',
      'small,huge',
      '--size',
      '0.25',
      '--instances',
      '200',
      '--concurrency',
      '2',
      '--no-limits',
      '--peer',
      'orthanc',
      '--out',
      'x.json',
    ]);
    // Run order is fixed, whatever the order given.
    expect(o.scenarios).toEqual(['huge', 'small']);
    expect(o.sizesGiB).toEqual([0.25]);
    expect(o.instances).toEqual([200]);
    expect(o.concurrency).toBe(2);
    expect(o.limits).toBe(false);
    expect(o.peer).toBe('orthanc');
    expect(o.out).toBe('x.json');
  });

  it('the soak runs only when named, and can be short', () => {
    expect(parseBenchArgs(['--scenario', 'all']).scenarios).not.toContain('soak');
    const o = parseBenchArgs(['--scenario', 'soak,dimse', '--soak-minutes', '2', '--soak-ingest-mbps', '4.5']);
    expect(o.scenarios).toEqual(['dimse', 'soak']);
    expect(o.soakMinutes).toBe(2);
    expect(o.soakIngestMBps).toBe(4.5);
  });

  it('the decode and DIMSE scenarios take their sizes and tools', () => {
    const o = parseBenchArgs([
      '--scenario',
      'decode',
      '--decode-frames',
      '10',
      '--decode-instances',
      '1',
      '--decode-concurrency',
      '3',
      '--storescu',
      '/opt/dcmtk/bin/storescu',
    ]);
    expect(o.scenarios).toEqual(['decode']);
    expect([o.decodeFrames, o.decodeInstances, o.decodeConcurrency]).toEqual([10, 1, 3]);
    expect(o.storescu).toBe('/opt/dcmtk/bin/storescu');
  });

  it('the auth scenario takes its series size, rounds and revocations', () => {
    const o = parseBenchArgs(['--scenario', 'auth', '--auth-instances', '200', '--auth-rounds', '1', '--auth-revocations', '0']);
    expect(o.scenarios).toEqual(['auth']);
    expect(o.authInstances).toBe(200);
    expect(o.authRounds).toBe(1);
    expect(o.authRevocations).toBe(0);
  });

  it('the viewer scenario takes its series size, rounds and openings', () => {
    const o = parseBenchArgs(['--scenario', 'viewer', '--viewer-instances', '50', '--viewer-rounds', '2', '--viewer-openings', '4']);
    expect(o.scenarios).toEqual(['viewer']);
    expect([o.viewerInstances, o.viewerRounds, o.viewerOpenings]).toEqual([50, 2, 4]);
  });

  it('lists keep their order and drop repeats', () => {
    expect(parseBenchArgs(['--size', '16,1,4,1']).sizesGiB).toEqual([16, 1, 4]);
    expect(parseBenchArgs(['--instances', '10000, 1000']).instances).toEqual([10000, 1000]);
  });

  it('--scenario none runs only the extras', () => {
    const o = parseBenchArgs(['--scenario', 'none', '--anchor']);
    expect(o.scenarios).toEqual([]);
    expect(o.anchor).toBe(true);
  });

  it('--backends alone means all three stores, a list chooses', () => {
    expect(parseBenchArgs(['--backends']).backends).toEqual(['fs', 'ipfs', 's3']);
    expect(parseBenchArgs(['--backends', '--anchor']).backends).toEqual(['fs', 'ipfs', 's3']);
    expect(parseBenchArgs(['--backends', 'fs,ipfs']).backends).toEqual(['fs', 'ipfs']);
    expect(withBackendsDefault(['--backends', '--size', '1'])).toEqual(['--backends', 'fs,ipfs,s3', '--size', '1']);
    expect(withBackendsDefault(['--size', '1'])).toEqual(['--size', '1']);
  });

  it('--store picks the block store of the scenarios', () => {
    expect(parseBenchArgs(['--store', 'ipfs']).store).toBe('ipfs');
  });

  it('refuses what it cannot run, naming the option', () => {
    const bad: Array<[string[], RegExp]> = [
      [['--scenario', 'huge,tiny'], /--scenario: unknown scenario "tiny"/],
      [['--size', '0'], /--size: "0" is not a size/],
      [['--size', '1,,4'], /--size: "" is not/],
      [['--size', 'big'], /--size/],
      [['--instances', '1.5'], /--instances: "1.5"/],
      [['--instances', '0'], /--instances/],
      [['--per-request', '0'], /--per-request/],
      [['--concurrency', '65'], /--concurrency/],
      [['--store', 'tape'], /--store: unknown block store "tape"/],
      [['--backends', 'fs,tape'], /--backends: unknown block store "tape"/],
      [['--peer', 'dcm4chee'], /--peer: only orthanc/],
      [['--max-instance-gib', '4'], /--max-instance-gib/],
      [['--limits-gib', '-1'], /--limits-gib/],
      [['--decode-frames', '0'], /--decode-frames/],
      [['--decode-instances', '1.5'], /--decode-instances/],
      [['--decode-concurrency', '65'], /--decode-concurrency/],
      [['--soak-minutes', '0'], /--soak-minutes/],
      [['--soak-minutes', 'long'], /--soak-minutes/],
      [['--soak-ingest-mbps', '0'], /--soak-ingest-mbps/],
      [['--auth-instances', '0'], /--auth-instances/],
      [['--auth-rounds', '1.5'], /--auth-rounds/],
      [['--auth-revocations', '-1'], /--auth-revocations/],
      [['--viewer-instances', '0'], /--viewer-instances/],
      [['--viewer-rounds', '1.5'], /--viewer-rounds/],
      [['--viewer-openings', '0'], /--viewer-openings/],
      [['--frobnicate'], /frobnicate/],
      [['positional'], /positional/],
    ];
    for (const [args, message] of bad) {
      expect(() => parseBenchArgs(args), args.join(' ')).toThrow(BenchUsageError);
      expect(() => parseBenchArgs(args), args.join(' ')).toThrow(message);
    }
  });

  it('--help lists every option it parses', () => {
    expect(parseBenchArgs(['-h']).help).toBe(true);
    for (const flag of [
      '--scenario',
      '--size',
      '--instances',
      '--per-request',
      '--concurrency',
      '--max-instance-gib',
      '--store',
      '--peer',
      '--backends',
      '--anchor',
      '--no-limits',
      '--limits-gib',
      '--out',
      '--work-dir',
      '--keep',
      '--cpu-prof',
      '--help',
      '--storescu',
      '--decode-frames',
      '--decode-instances',
      '--decode-concurrency',
      '--soak-minutes',
      '--soak-ingest-mbps',
      '--auth-instances',
      '--auth-rounds',
      '--auth-revocations',
    ]) {
      expect(HELP).toContain(flag);
    }
  });
});
