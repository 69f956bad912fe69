// Memory flat at high link counts (issue 27): with 4 KiB chunks an instance carries 256 times the
// links it would at 1 MiB, so 64 MiB here is the chunk count of a 16 GiB instance (and a tree of
// depth 2 at fanout 32). Ingest and a whole retrieval each run in a process of their own, which
// measures what it holds at 90% of the way (V8 heap after a full collection: what is live, not
// what awaits collection) and its peak RSS. The flat format held every chunk CID (about 800 bytes
// each as JS objects): 12 MiB more live heap at 16,000 chunks than at 2,000.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../../..');
const CHUNK = 4096;
const FANOUT = 32;

// Plain JavaScript (run with -e), importing the sources by path.
const CHILD = `
const [root, mode, dir, mib, chunk, fanout] = process.argv.slice(1);
const { randomBytes } = await import('node:crypto');
const { readFileSync, writeFileSync } = await import('node:fs');
const { join } = await import('node:path');
const { planStudy } = await import(root + '/bench/generate.ts');
const { ingestInstance } = await import(root + '/ingest/instance.ts');
const { KeyStore } = await import(root + '/src/format/keys.ts');
const { FsBlockStore } = await import(root + '/storage/fs.ts');
const { openInstance } = await import(root + '/src/read/instance-reader.ts');
const store = await FsBlockStore.open({ path: join(dir, 'blocks') });
let master;
try { master = readFileSync(join(dir, 'master')); } catch { master = randomBytes(32); writeFileSync(join(dir, 'master'), master); }
const keys = KeyStore.open({ path: join(dir, 'keys.db'), masterKey: master });
const study = planStudy({ kind: 'multiframe', instances: 1, frames: Number(mib) * 2, rows: 512, columns: 512, seed: 5 });
const liveMiB = () => { globalThis.gc(); return process.memoryUsage().heapUsed / 2 ** 20; };
let live = 0;
const started = performance.now();
const out = {};
if (mode === 'ingest') {
  const size = study.instances[0].frameBytes * Number(mib) * 2;
  async function* source() {
    let n = 0;
    for await (const piece of study.instances[0].open()) {
      n += piece.length;
      if (live === 0 && n > size * 0.9) live = liveMiB();
      yield piece;
    }
  }
  const i = await ingestInstance(source(), { store, keys }, { chunkSize: Number(chunk), fanout: Number(fanout) });
  await i.durable;
  writeFileSync(join(dir, 'ref.json'), JSON.stringify({ studyInstanceUID: study.studyInstanceUID, nodeCid: i.node.cid.toString(), sha256: i.sha256, size: i.size }));
  Object.assign(out, { size: i.size, depth: i.depth });
} else {
  const ref = JSON.parse(readFileSync(join(dir, 'ref.json'), 'utf8'));
  let gets = 0;
  const counting = { get: (cid, o) => { gets++; return store.get(cid, o); } };
  const opened = await openInstance({ store: counting, keys }, ref);
  let n = 0;
  if (mode === 'read') {
    for await (const piece of opened.read()) {
      n += piece.length;
      if (live === 0 && n > ref.size * 0.9) live = liveMiB();
    }
  } else {
    for await (const piece of opened.read({ offset: Math.floor(ref.size / 2), length: 100 })) n += piece.length;
  }
  Object.assign(out, { size: n, gets, linkNodeReads: opened.linkNodeReads });
}
const s = (performance.now() - started) / 1000;
process.stdout.write(JSON.stringify({ ...out, mode, s, mbps: out.size / 1e6 / s, liveMiB: live, peakRssMiB: process.resourceUsage().maxRSS / 1024 }));
keys.close();
`;

interface Run {
  mode: string;
  size: number;
  depth?: number;
  gets?: number;
  linkNodeReads?: number;
  s: number;
  mbps: number;
  liveMiB: number;
  peakRssMiB: number;
}

function child(mode: 'ingest' | 'read' | 'frame', dir: string, mib: number): Promise<Run> {
  const args = ['--expose-gc', '--input-type=module', '-e', CHILD, ROOT, mode, dir, String(mib), String(CHUNK), String(FANOUT)];
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) =>
    p.once('exit', (code) => (code === 0 ? resolve(JSON.parse(stdout) as Run) : reject(new Error(`child ${mode} exited ${code}: ${stderr}`)))),
  );
}

let base: string;
const runs: Record<string, Run> = {};

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'dv-link-scale-'));
  // 8 MiB (2,049 chunks: depth 2 already) and 64 MiB (16,388 chunks), one after the other.
  for (const mib of [8, 64]) {
    const dir = join(base, String(mib));
    runs[`ingest ${mib}`] = await child('ingest', dir, mib);
    runs[`read ${mib}`] = await child('read', dir, mib);
    runs[`frame ${mib}`] = await child('frame', dir, mib);
  }
  console.log(JSON.stringify(runs, null, 1));
}, 300_000);

afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

describe('an instance at a high link count (4 KiB chunks, fanout 32)', () => {
  it('is a tree of depth 2, read back whole: every chunk once, and each link node once', () => {
    const large = runs['read 64']!;
    const chunks = Math.ceil(large.size / CHUNK);
    expect(runs['ingest 64']!.depth).toBe(2);
    expect(large.size).toBe(runs['ingest 64']!.size);
    // The node, ceil(chunks / 32) level-1 link nodes, their level-2 parents, every chunk.
    const level1 = Math.ceil(chunks / FANOUT);
    expect(large.linkNodeReads).toBe(level1 + Math.ceil(level1 / FANOUT));
    expect(large.gets).toBe(1 + large.linkNodeReads! + chunks);
  });

  it('holds no more live memory at 16,000 chunks than at 2,000, ingesting and retrieving; peak RSS under 256 MiB', () => {
    for (const mode of ['ingest', 'read']) {
      const small = runs[`${mode} 8`]!;
      const large = runs[`${mode} 64`]!;
      expect([mode, large.liveMiB - small.liveMiB < 3]).toEqual([mode, true]);
      expect(large.peakRssMiB).toBeLessThan(256);
    }
  });

  it('reads a frame through its branch alone: the node, one link node per level, its chunk', () => {
    for (const mib of [8, 64]) {
      const frame = runs[`frame ${mib}`]!;
      expect(frame.size).toBe(100);
      expect([frame.linkNodeReads, frame.gets]).toEqual([2, 4]);
    }
  });
});
