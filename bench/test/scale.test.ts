import { describe, expect, it } from 'vitest';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import { ingestLimit, median, type MachineLimits } from '../limits.ts';
import { advantage, comparisonTable, markdownTable, ofLimit } from '../report.ts';
import {
  bytes,
  count,
  DAG_CBOR_LINK_BYTES,
  duration,
  footprintFigures,
  projectScale,
  rssModel,
  scaleMarkdown,
  treeLevels,
  type MeasuredScale,
} from '../scale.ts';
import { rawCid } from '../../storage/cid.ts';

const GiB = 2 ** 30;
const TiB = 2 ** 40;

const MEASURED: MeasuredScale = {
  bytesStoredPerByte: 1.001,
  catalogBytesPerInstance: 4096,
  catalogBytesPerFrame: 500,
  manifestFixedBytes: 280,
  instanceNodeFixedBytes: 450,
  instanceNodeBytesPerChunk: 41,
  keyStoreBytesPerStudy: 320,
  peakRss: [
    { studyBytes: GiB, MiB: 100 },
    { studyBytes: 4 * GiB, MiB: 104 },
  ],
  ingestMBps: 250,
  heldBytesPerChunk: 1000,
};

describe('projectScale', () => {
  const p = projectScale(MEASURED);
  const [g1, g16, t1] = p.studies;

  it('a dag-cbor link to a sha2-256 CIDv1 is 41 bytes', () => {
    const cid = rawCid(new Uint8Array([1, 2, 3]));
    const one = dagCbor.encode({ l: [cid] }).length;
    const two = dagCbor.encode({ l: [cid, cid] }).length;
    expect(cid.bytes.length).toBe(36);
    expect(two - one).toBe(DAG_CBOR_LINK_BYTES);
    expect(CID.decode(cid.bytes).equals(cid)).toBe(true);
  });

  it('counts chunks, links and node sizes from the chunk size', () => {
    expect(g1!.chunks).toBe(1024);
    expect(g1!.blocksHuge).toBe(1024 + 4 + 1);
    expect(t1!.hugeNodeLinks).toBe(262_144);
    expect(t1!.hugeNodeBytes).toBe(450 + 262_144 * 41);
    // The brief's example: a 1 TiB instance is 1,048,576 links, ~43 MB of dag-cbor.
    expect(t1!.singleInstanceNodeBytes).toBe(450 + 1_048_576 * 41);
    expect(t1!.storedBytes).toBeCloseTo(TiB * 1.001);
  });

  it('knows where a flat InstanceNode stops fitting one block, and how deep a tree must be', () => {
    const fanout = Math.floor((2 ** 20 - 450) / 41);
    expect(g16!.maxFlatInstanceBytes).toBe(fanout * 2 ** 20);
    expect(g16!.singleInstanceTreeLevels).toBe(1); // 16,384 links fit
    expect(t1!.singleInstanceTreeLevels).toBe(2);
    expect(p.findings[0]).toContain('tree of link nodes');
  });

  it('sizes manifests per version and for one version adding everything', () => {
    const small = Math.ceil((16 * GiB) / (512 * 512 * 2 + 1090));
    expect(g16!.smallInstances).toBe(small);
    expect(g16!.smallVersions).toBe(Math.ceil(small / 100));
    expect(g16!.manifestBytesPerVersion).toBe(280 + 100 * 41);
    expect(g16!.manifestBytesOneVersion).toBe(280 + small * 41);
    expect(g16!.blocksSmall).toBe(small * 2 + Math.ceil(small / 100));
  });

  it('catalog, memory, time and key store', () => {
    expect(g1!.catalogBytesSmall).toBe(g1!.smallInstances * 4096);
    expect(g1!.catalogRowBytesHuge).toBe(4096 + Math.ceil(GiB / 4 / (512 * 512 * 2)) * 500);
    expect(g1!.ingestSeconds).toBeCloseTo(GiB / 250e6);
    // Flat measured peak (104) plus one huge instance's chunk list.
    expect(t1!.chunkListMiBHuge).toBeCloseTo((262_144 * 1000) / 2 ** 20);
    expect(t1!.peakRssMiB).toBeCloseTo(104 + t1!.chunkListMiBHuge);
    expect(p.archive.studies).toBe(Math.ceil(1e15 / GiB));
    expect(p.archive.keyStoreBytes).toBe(p.archive.studies * 320);
    expect(p.archive.blocksHuge).toBe(Math.ceil(1e15 / 2 ** 20) + p.archive.studies * 5);
  });

  it('renders a markdown table with a row per quantity and the findings', () => {
    const md = scaleMarkdown(p);
    const lines = md.split('\n');
    expect(lines[0]).toMatch(/^\| \| 1 GiB study \| 16 GiB study \| 1 TiB study \| 1 PB/);
    const tableRows = lines.filter((l) => l.startsWith('|'));
    for (const r of tableRows) expect(r.split('|').length).toBe(lines[0]!.split('|').length);
    expect(md).toContain('**10.3 MiB** (over 1 MiB)');
    expect(md).toContain('- InstanceNode:');
  });
});

describe('rssModel', () => {
  it('is flat within noise and then projects the highest peak', () => {
    const m = rssModel([
      { studyBytes: GiB, MiB: 200 },
      { studyBytes: 16 * GiB, MiB: 210 },
    ]);
    expect(m.flat).toBe(true);
    expect(m.at(TiB)).toBe(210);
  });

  it('extrapolates a real growth linearly', () => {
    const m = rssModel([
      { studyBytes: GiB, MiB: 200 },
      { studyBytes: 4 * GiB, MiB: 500 },
    ]);
    expect(m.flat).toBe(false);
    expect(m.slopePerGiB).toBeCloseTo(100);
    expect(m.at(16 * GiB)).toBeCloseTo(1700);
  });
});

describe('helpers', () => {
  it('treeLevels', () => {
    expect(treeLevels(1, 100)).toBe(1);
    expect(treeLevels(100, 100)).toBe(1);
    expect(treeLevels(101, 100)).toBe(2);
    expect(treeLevels(10_000, 100)).toBe(2);
    expect(treeLevels(10_001, 100)).toBe(3);
  });

  it('formats bytes, counts and durations', () => {
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(GiB)).toBe('1 GiB');
    expect(bytes(1e15, true)).toBe('1 PB');
    expect(count(1048576)).toBe('1,048,576');
    expect(duration(4.3)).toBe('4 s');
    expect(duration(3660)).toBe('61 min');
    expect(duration(40 * 86400)).toBe('40.0 days');
  });

  it('footprintFigures derives per-unit figures from a data directory walk', () => {
    const f = footprintFigures(
      {
        rawBlocks: 10,
        rawBytes: 10 * 2 ** 20,
        instanceNodes: [
          { bytes: 450 + 41 * 2, links: 2 },
          { bytes: 450 + 41 * 100, links: 100 },
        ],
        manifests: [{ bytes: 280 + 41 * 2, links: 2 }],
        blockBytes: 10 * 2 ** 20 + 1000,
        catalogBytes: 4096 * 2 + 500 * 200,
        keysBytes: 16384,
      },
      { bytes: 10 * 2 ** 20, instances: 2, studies: 1, frames: 200, catalogBytesPerInstance: 4096 },
    );
    expect(f.instanceNodeBytesPerChunk).toBe(41);
    expect(f.instanceNodeFixedBytes).toBe(450);
    expect(f.manifestFixedBytes).toBe(280);
    expect(f.catalogBytesPerFrame).toBe(500);
    expect(f.keyStoreBytesPerStudy).toBe(320); // one study: a keys.db is empty pages, so the estimate
    expect(f.bytesStoredPerByte).toBeCloseTo(1 + 1000 / (10 * 2 ** 20));
  });
});

describe('report', () => {
  it('advantage reads > 1 as better for rates and for latency/memory', () => {
    expect(advantage({ ours: 300, peer: 100 })).toBe(3);
    expect(advantage({ ours: 100, peer: 800, lowerIsBetter: true })).toBe(8);
    expect(advantage({ ours: 100, peer: null })).toBeNull();
  });

  it('ofLimit and the comparison table', () => {
    expect(ofLimit({ ours: 300, limit: { name: 'ingest crypto', value: 400 } })).toBe('75% of 400 (ingest crypto)');
    const t = comparisonTable(
      [
        { scenario: 'huge 1 GiB', operation: 'ingest', unit: 'MB/s', ours: 300, peer: 100, limit: { name: 'disk', value: 400 } },
        { scenario: 'huge 1 GiB', operation: 'ingest peak RSS', unit: 'MiB', ours: 90, peer: 830, lowerIsBetter: true },
      ],
      { ours: 'dicom-vault', peer: 'Orthanc' },
    );
    expect(t.split('\n')[0]).toBe('| scenario | operation | dicom-vault | Orthanc | dicom-vault vs Orthanc | of the machine limit |');
    expect(t).toContain('| huge 1 GiB | ingest | 300 MB/s | 100 MB/s | 3.0× | 75% of 400 (disk) |');
    expect(t).toContain('| 90 MiB | 830 MiB | 9.2× less |');
  });

  it('markdownTable escapes pipes', () => {
    expect(markdownTable(['a'], [['x|y']])).toBe('| a |\n|---|\n| x\\|y |');
  });
});

describe('limits helpers', () => {
  it('median', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it('ingestLimit is the lower of ingest crypto and the disk as the store writes it', () => {
    const fig = (MBps: number) => ({ MBps, runs: [MBps], bytes: 1, description: '' });
    const limits = { figures: { ingestCrypto: fig(400), diskWrite1MiBFilesParallel: fig(560) } } as unknown as MachineLimits;
    expect(ingestLimit(limits)).toEqual({ MBps: 400, name: 'ingestCrypto' });
  });
});
