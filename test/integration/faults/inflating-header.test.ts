// Headers that cost far more memory than their bytes (issue 21), sent to a real node process:
// an endless run of tiny sequence items, sequences nested 10,000 deep, millions of tiny elements,
// a value of ten million values, and a large value before the identifying UIDs. Each is refused
// with a 4xx naming the limit it ran into, one at a time and three at once; the node's RSS stays
// within a stated bound meanwhile and comes back after; a good instance sent in the same request
// as a bad one is stored alone; and the node keeps serving. The hostile bytes are generated as
// they are sent (test/support/hostile-dicom.ts), never held whole.
//
// Before the scanner's limits (same VM, the same attacks, a fresh node each): RSS +900 MiB for
// one run of tiny items and +1,800 MiB for one of tiny elements, both stored; +2,000 to
// +3,100 MiB three at once; +1,050 MiB for one 1 GiB value before the UIDs (+3,050 three at
// once); none of it returned after 10 s; 10,000 levels of nesting answered 500.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServedNode } from '../../../bench/node-process.ts';
import { readProcMemory, startRssSampler } from '../../../bench/rss.ts';
import { DEFAULT_MAX_BYTES_BEFORE_IDENTITY, DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_SEQUENCE_DEPTH } from '../../../src/dicom/scanner.ts';
import { serve } from '../../support/process.ts';
import { goodInstance, hostileInstance, stowStreamed, streamed, type Attack, type StowAnswer, type Uids } from '../../support/hostile-dicom.ts';

const MiB = 2 ** 20;
/**
 * RSS an attack may add to what the node had when it began: one, and three at once. Each
 * refused instance holds at most DEFAULT_MAX_METADATA_BYTES (64 MiB) of records, in a V8 heap
 * that grows to about twice its live size. Measured on a fresh node: +100-165 MiB for one,
 * +115-385 MiB for three.
 */
const MAX_RSS_GROWTH_ONE = 256 * MiB;
const MAX_RSS_GROWTH_THREE = 448 * MiB;
/**
 * RSS over idle the node may reach at any time during the whole run. Between attacks V8 keeps
 * what it freed (and the garbage of the last attack until its next full collection), and the
 * next attack's records come on top: measured +540-570 MiB.
 */
const MAX_RSS_OVER_IDLE = 768 * MiB;
/**
 * How near idle RSS must come back once the attacks are over, and how long that may take. V8
 * keeps the pages it freed until a memory-reducing collection, and an idle node (whose allocation
 * rate V8 still rates high from the attack) gets one only from V8's watchdog, about 100 s after
 * its last collection: measured, RSS back to idle + 50-96 MiB then, nothing sooner. What stays
 * is mostly glibc's heap (+35-45 MiB: what V8 and Node malloc'd meanwhile, freed but not
 * returned; MALLOC_MMAP_THRESHOLD_ made no difference).
 */
const MAX_RSS_AFTER = 128 * MiB;
const RSS_RETURN_DEADLINE_MS = 240_000;

/** The attacks, their size, and what their refusal must name. */
const ATTACKS: Array<{ attack: Attack; count: number; limit: RegExp; code: string }> = [
  // 8 million empty items: 64 MB, under the 64 MiB header limit; ~540 MB as DICOM JSON.
  { attack: 'tiny-items', count: 8_000_000, limit: new RegExp(`limit of ${DEFAULT_MAX_METADATA_BYTES / MiB} MiB .*\\(maxMetadataBytes\\)`), code: 'TOO_LARGE' },
  // 10,000 levels: overflowed the stack in the catalog commit (JSON.stringify).
  { attack: 'deep-nesting', count: 10_000, limit: new RegExp(`limit of ${DEFAULT_MAX_SEQUENCE_DEPTH} \\(maxSequenceDepth\\)`), code: 'DICOM_MALFORMED' },
  // 8 million empty private elements: 64 MB, ~1.1 GB as DICOM JSON.
  { attack: 'tiny-elements', count: 8_000_000, limit: /\(maxMetadataBytes\)/, code: 'TOO_LARGE' },
  // One UC value of 10 million distinct values: 60 MB, ~320 MB once split.
  { attack: 'huge-multiplicity', count: 10_000_000, limit: /\(maxMetadataBytes\)/, code: 'TOO_LARGE' },
  // 64 MiB of a private OB before the Study Instance UID: held in plaintext until identified.
  {
    attack: 'bulk-before-identity',
    count: 64 * MiB,
    limit: new RegExp(`first ${DEFAULT_MAX_BYTES_BEFORE_IDENTITY} bytes \\(maxBytesBeforeIdentity\\)`),
    code: 'TOO_LARGE',
  },
];

const STEP_TIMEOUT_MS = 180_000;

let serial = 0;
function uids(): Uids {
  serial++;
  const root = `1.2.826.0.1.3680043.8.498.${process.pid}.${serial}`;
  return { study: root, series: `${root}.1`, sop: `${root}.1.1` };
}

/** The one failed instance of an answer: its PS3.4 status, ErrorComment, and the whole reason and code (the node's private block). */
function failure(answer: StowAnswer): { reason: number; comment: string; full: string; code: string } {
  const failed = answer.body['00081198']?.Value as Array<Record<string, { Value: unknown[] }>> | undefined;
  expect(failed, JSON.stringify(answer.body).slice(0, 300)).toHaveLength(1);
  const item = failed![0]!;
  // One summary Warning header, whatever the number of failures.
  expect(answer.warnings).toHaveLength(1);
  return {
    reason: item['00081197']!.Value[0] as number,
    comment: item['00000902']!.Value[0] as string,
    full: item['00091001']!.Value[0] as string,
    code: item['00091002']!.Value[0] as string,
  };
}

async function stowGood(node: ServedNode, id: Uids): Promise<number> {
  return (await stowStreamed(node.url, [streamed(goodInstance(id))], { multipart: false })).status;
}

async function instancesOf(node: ServedNode, study: string): Promise<string[]> {
  const res = await fetch(`${node.url}/studies/${study}/instances`, { headers: { accept: 'application/dicom+json' } });
  if (res.status === 404) return []; // STUDY_NOT_FOUND
  expect(res.status).toBe(200);
  return ((await res.json()) as Array<Record<string, { Value: string[] }>>).map((i) => i['00080018']!.Value[0]!);
}

const rssOf = (node: ServedNode): number => readProcMemory(node.pid).rssBytes;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('headers that inflate in memory, against a real node', () => {
  let dataDir: string;
  let node: ServedNode;
  let idle = 0;
  const figures: Record<string, number | string> = {};

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-inflating-'));
    node = await serve(dataDir);
    // Warm: a first instance brings up the crypto workers, the catalog and the code paths.
    for (let i = 0; i < 3; i++) expect(await stowGood(node, uids())).toBe(200);
    await sleep(2_000);
    idle = rssOf(node);
    figures.idleMiB = Math.round(idle / MiB);
  }, STEP_TIMEOUT_MS);

  afterAll(async () => {
    await node?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    console.info('inflating-header figures:', JSON.stringify(figures));
  });

  for (const { attack, count, limit, code } of ATTACKS) {
    for (const parallel of [1, 3]) {
      it(
        `refuses ${attack} (${parallel === 1 ? 'one' : 'three at once'}) with a 4xx naming the limit, within the RSS bound`,
        async () => {
          const ids = Array.from({ length: parallel }, uids);
          const sampler = startRssSampler(node.pid);
          const answers = await Promise.all(ids.map((id) => stowStreamed(node.url, [hostileInstance(attack, count, id)], { multipart: false })));
          const report = sampler.stop();
          for (const answer of answers) {
            // All failed: 409 with the instance in FailedSOPSequence: out of resources for a limit,
            // cannot understand for a malformed data set.
            expect(answer.status).toBe(409);
            const f = failure(answer);
            expect(f.code).toBe(code);
            expect(f.reason).toBe(code === 'TOO_LARGE' ? 0xa700 : 0xc000);
            expect(f.comment).toMatch(/^part 1: /);
            expect(f.full).toMatch(limit);
          }
          const peak = Math.max(report.peakRssMiB, report.hwmMiB ?? 0) * MiB;
          const growth = peak - report.rssBeforeMiB * MiB;
          figures[`${attack}x${parallel}GrowthMiB`] = Math.round(growth / MiB);
          figures[`${attack}x${parallel}OverIdleMiB`] = Math.round((peak - idle) / MiB);
          expect(growth).toBeLessThan(parallel === 1 ? MAX_RSS_GROWTH_ONE : MAX_RSS_GROWTH_THREE);
          expect(peak - idle).toBeLessThan(MAX_RSS_OVER_IDLE);
          // Nothing of them is listed; the node keeps serving.
          for (const id of ids) expect(await instancesOf(node, id.study)).toEqual([]);
          expect(await stowGood(node, uids())).toBe(200);
        },
        STEP_TIMEOUT_MS,
      );
    }
  }

  for (const [i, { attack, count, limit }] of ATTACKS.entries()) {
    it(
      `stores the good instance of a request that also holds ${attack}, alone (202)`,
      async () => {
        const good = uids();
        const bad = uids();
        // The bad part first, then the good one, and the other way round, in turns.
        const parts = [streamed(goodInstance(good)), hostileInstance(attack, count, bad)];
        if (i % 2 === 1) parts.reverse();
        const answer = await stowStreamed(node.url, parts, { multipart: true });
        expect(answer.status).toBe(202);
        const referenced = answer.body['00081199']?.Value as Array<Record<string, { Value: string[] }>>;
        expect(referenced.map((r) => r['00081155']!.Value[0])).toEqual([good.sop]);
        expect(failure(answer).full).toMatch(limit);
        expect(await instancesOf(node, good.study)).toEqual([good.sop]);
        expect(await instancesOf(node, bad.study)).toEqual([]);
      },
      STEP_TIMEOUT_MS,
    );
  }

  it(
    'comes back near idle RSS once the attacks are over, and keeps serving',
    async () => {
      const started = Date.now();
      let rss = rssOf(node);
      while (rss - idle > MAX_RSS_AFTER && Date.now() - started < RSS_RETURN_DEADLINE_MS) {
        await sleep(2_000);
        rss = rssOf(node);
      }
      figures.afterGrowthMiB = Math.round((rss - idle) / MiB);
      figures.returnSeconds = Math.round((Date.now() - started) / 1000);
      expect(rss - idle).toBeLessThan(MAX_RSS_AFTER);
      const id = uids();
      expect(await stowGood(node, id)).toBe(200);
      expect(await instancesOf(node, id.study)).toEqual([id.sop]);
    },
    RSS_RETURN_DEADLINE_MS + 60_000,
  );
});
