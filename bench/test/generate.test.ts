import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BlockPool, CHUNK_BYTES, ENHANCED_MR_IMAGE_STORAGE, MR_IMAGE_STORAGE, isValidUid, planStudy } from '../generate.ts';
import type { GeneratedInstance, GeneratedStudy } from '../generate.ts';
import { MultipartScanner, createAgent, multipartBoundary, qido, stow, wado, wadoFrames } from '../client.ts';
import { startRssSampler } from '../rss.ts';

const run = promisify(execFile);

async function bytesOf(inst: GeneratedInstance, start?: number, end?: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of inst.open(start, end)) chunks.push(c);
  return Buffer.concat(chunks);
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

// pydicom (system python) is the independent referee for "valid DICOM".
const PYDICOM_REPORT = `
import json, sys, hashlib, pydicom
out = []
for p in sys.argv[1:]:
    ds = pydicom.dcmread(p)  # not force=True: needs preamble + DICM + File Meta
    px = ds.pixel_array
    out.append(dict(
        ts=str(ds.file_meta.TransferSyntaxUID), metaSop=str(ds.file_meta.MediaStorageSOPInstanceUID),
        metaClass=str(ds.file_meta.MediaStorageSOPClassUID), sopClass=str(ds.SOPClassUID),
        sop=str(ds.SOPInstanceUID), study=str(ds.StudyInstanceUID), series=str(ds.SeriesInstanceUID),
        patientId=str(ds.PatientID), modality=ds.Modality, charset=ds.SpecificCharacterSet,
        instanceNumber=int(ds.InstanceNumber), frames=int(ds.get('NumberOfFrames', 1)),
        shape=list(px.shape), max=int(px.max()), bitsStored=int(ds.BitsStored),
        perFrame=len(ds.get('PerFrameFunctionalGroupsSequence', [])),
        shared=len(ds.get('SharedFunctionalGroupsSequence', [])),
        planeZ=[float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.get('PerFrameFunctionalGroupsSequence', [])],
        pixelSha=hashlib.sha256(ds.PixelData).hexdigest()))
print(json.dumps(out))
`;

interface PydicomReport {
  ts: string;
  metaSop: string;
  metaClass: string;
  sopClass: string;
  sop: string;
  study: string;
  series: string;
  patientId: string;
  modality: string;
  charset: string;
  instanceNumber: number;
  frames: number;
  shape: number[];
  max: number;
  bitsStored: number;
  perFrame: number;
  shared: number;
  planeZ: number[];
  pixelSha: string;
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dv-generate-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function pydicomReport(study: GeneratedStudy, name: string): Promise<PydicomReport[]> {
  const paths: string[] = [];
  for (const inst of study.instances) {
    const p = join(dir, `${name}-${inst.instanceNumber}.dcm`);
    await writeFile(p, await bytesOf(inst));
    paths.push(p);
  }
  const { stdout } = await run('/usr/bin/python3', ['-c', PYDICOM_REPORT, ...paths]);
  return JSON.parse(stdout) as PydicomReport[];
}

describe('planStudy: valid DICOM per pydicom', () => {
  it('multi-frame: Enhanced MR instances with functional groups, frames and 12-bit pixels', async () => {
    const study = planStudy({ kind: 'multiframe', instances: 3, frames: 4, rows: 64, columns: 48, seed: 7 });
    const report = await pydicomReport(study, 'multi');
    expect(report).toHaveLength(3);
    for (const [i, r] of report.entries()) {
      const inst = study.instances[i]!;
      expect(r.ts).toBe('1.2.840.10008.1.2.1');
      expect(r.sopClass).toBe(ENHANCED_MR_IMAGE_STORAGE);
      expect(r.metaClass).toBe(ENHANCED_MR_IMAGE_STORAGE);
      expect(r.sop).toBe(inst.sopInstanceUID);
      expect(r.metaSop).toBe(inst.sopInstanceUID);
      expect(r.study).toBe(study.studyInstanceUID);
      expect(r.series).toBe(study.seriesInstanceUID);
      expect(r.patientId).toBe(study.patientId);
      expect(r.modality).toBe('MR');
      expect(r.charset).toBe('ISO_IR 100');
      expect(r.instanceNumber).toBe(i + 1);
      expect(r.frames).toBe(4);
      expect(r.shape).toEqual([4, 64, 48]);
      expect(r.bitsStored).toBe(12);
      expect(r.max).toBeLessThan(4096);
      expect(r.max).toBeGreaterThan(4000); // random over the full 12-bit range, not zeros
      expect(r.shared).toBe(1);
      expect(r.perFrame).toBe(4);
      expect(r.planeZ).toEqual([0, 1, 2, 3]);
    }
    expect(new Set(report.map((r) => r.pixelSha)).size).toBe(3);
    for (const uid of [study.studyInstanceUID, study.seriesInstanceUID, ...study.instances.map((i) => i.sopInstanceUID)]) {
      expect(isValidUid(uid), uid).toBe(true);
    }
  });

  it('single-frame: MR Image Storage instances with different pixel data', async () => {
    const study = planStudy({ kind: 'single', instances: 4, rows: 32, columns: 32, seed: 7 });
    const report = await pydicomReport(study, 'single');
    expect(report.map((r) => r.sop)).toEqual(study.instances.map((i) => i.sopInstanceUID));
    for (const r of report) {
      expect(r.sopClass).toBe(MR_IMAGE_STORAGE);
      expect(r.study).toBe(study.studyInstanceUID);
      expect(r.frames).toBe(1);
      expect(r.shape).toEqual([32, 32]);
      expect(r.max).toBeLessThan(4096);
      expect(r.perFrame).toBe(0);
    }
    expect(new Set(report.map((r) => r.pixelSha)).size).toBe(4);
    // Different seed, different study, same kind: nothing shared.
    const other = planStudy({ kind: 'single', instances: 4, rows: 32, columns: 32, seed: 8 });
    expect(other.studyInstanceUID).not.toBe(study.studyInstanceUID);
  });
});

describe('planStudy: streaming contract', () => {
  // 2.25 MiB of pixel data per instance: crosses 1 MiB block boundaries mid-frame.
  const spec = { kind: 'multiframe', instances: 2, frames: 9, rows: 512, columns: 256, seed: 3 } as const;

  it('is deterministic for a seed, and differs for another seed or study UID', async () => {
    const a = planStudy(spec);
    const b = planStudy(spec);
    expect(b.studyInstanceUID).toBe(a.studyInstanceUID);
    expect(b.instances.map((i) => i.sopInstanceUID)).toEqual(a.instances.map((i) => i.sopInstanceUID));
    expect(await b.instances[1]!.sha256()).toBe(await a.instances[1]!.sha256());

    const c = planStudy({ ...spec, seed: 4 });
    const d = planStudy({ ...spec, studyInstanceUID: '1.2.3.4.5' });
    expect(d.studyInstanceUID).toBe('1.2.3.4.5');
    const hashes = await Promise.all([a, c, d].map((s) => s.instances[0]!.sha256()));
    expect(new Set(hashes).size).toBe(3);
    expect(new Set([a, c, d].map((s) => s.instances[0]!.sopInstanceUID)).size).toBe(3);
  });

  it('open() yields exactly `size` bytes in chunks of 1..CHUNK_BYTES, identical on every call', async () => {
    const inst = planStudy(spec).instances[0]!;
    const sizes: number[] = [];
    const h = createHash('sha256');
    for await (const c of inst.open()) {
      sizes.push(c.length);
      h.update(c);
    }
    expect(sizes.reduce((x, y) => x + y, 0)).toBe(inst.size);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(CHUNK_BYTES);
    expect(Math.min(...sizes)).toBeGreaterThan(0);
    expect(inst.size).toBe(inst.pixelDataOffset + 9 * 512 * 256 * 2);
    expect(h.digest('hex')).toBe(sha(await bytesOf(inst)));
    expect(await inst.sha256()).toBe(sha(await bytesOf(inst)));
  });

  it('open() with a BlockPool yields the same bytes, in buffers used again once given back', async () => {
    const study = planStudy(spec);
    const pool = new BlockPool();
    const buffers = new Set<ArrayBufferLike>();
    for (const inst of study.instances) {
      const h = createHash('sha256');
      for await (const c of inst.open(0, undefined, pool)) {
        h.update(c);
        buffers.add(c.buffer);
        pool.give(c);
        pool.give(c); // a second give of the same chunk must not hand its buffer out twice
      }
      expect(h.digest('hex')).toBe(sha(await bytesOf(inst)));
    }
    // Header chunks have their own buffers; every pixel block of both instances reused one.
    expect(buffers.size).toBeLessThanOrEqual(1 + study.instances.length);
    const a = pool.take();
    const b = pool.take();
    expect(a.buffer).not.toBe(b.buffer);
  });

  it('open(start, end) streams exactly that slice of the bytes', async () => {
    const inst = planStudy(spec).instances[1]!;
    const all = await bytesOf(inst);
    const p = inst.pixelDataOffset;
    const ranges: [number, number][] = [
      [0, 10],
      [p - 5, p + 5],
      [p + CHUNK_BYTES - 3, p + CHUNK_BYTES + 3],
      [p + inst.frameBytes * 4, p + inst.frameBytes * 5], // frame 5, straddles a block boundary
      [inst.size - 1, inst.size],
      [7, 7],
    ];
    for (const [s, e] of ranges) expect((await bytesOf(inst, s, e)).equals(all.subarray(s, e)), `[${s}, ${e})`).toBe(true);
    await expect(bytesOf(inst, 0, inst.size + 1)).rejects.toThrow(RangeError);
  });

  it('no 1 MiB chunk repeats anywhere in a study, and every sample is 12-bit', async () => {
    const study = planStudy({ kind: 'multiframe', instances: 3, frames: 8, rows: 512, columns: 512, seed: 5 });
    const seen = new Set<string>();
    let chunks = 0;
    for (const inst of study.instances) {
      const all = await bytesOf(inst);
      // Cut like the store does: 1 MiB chunks from the first byte of the instance.
      for (let o = 0; o < all.length; o += CHUNK_BYTES) {
        seen.add(sha(all.subarray(o, o + CHUNK_BYTES)));
        chunks++;
      }
      // Same cut aligned on pixel blocks, so block-level repeats would show too.
      for (let o = inst.pixelDataOffset; o < all.length; o += CHUNK_BYTES) {
        seen.add(sha(all.subarray(o, o + CHUNK_BYTES)));
        chunks++;
      }
      const px = new Uint16Array(all.buffer.slice(all.byteOffset + inst.pixelDataOffset, all.byteOffset + all.length));
      expect(px.every((v) => v < 4096)).toBe(true);
    }
    expect(seen.size).toBe(chunks);
  });

  it('plans GB-scale studies from totalBytes without generating them', () => {
    const multi = planStudy({ kind: 'multiframe', totalBytes: 2 ** 30 });
    expect(multi.instances).toHaveLength(4);
    expect(multi.instances.every((i) => i.numberOfFrames === 512 && i.frameBytes === 512 * 512 * 2)).toBe(true);
    const single = planStudy({ kind: 'single', totalBytes: 2 ** 30 });
    expect(single.instances.length).toBeGreaterThan(1900);
    expect(single.instances.length).toBeLessThan(2100);
    for (const s of [multi, single]) expect(Math.abs(s.totalBytes / 2 ** 30 - 1)).toBeLessThan(0.05);
    const big = planStudy({ kind: 'multiframe', totalBytes: 16 * 2 ** 30 });
    expect(big.instances).toHaveLength(64);
    expect(new Set(big.instances.map((i) => i.sopInstanceUID)).size).toBe(64);
  });

  it('streams a 256 MiB instance with bounded memory', async () => {
    const inst = planStudy({ kind: 'multiframe', totalBytes: 2 ** 30, seed: 9 }).instances[0]!;
    expect(inst.size).toBeGreaterThan(256 * 2 ** 20);
    const before = process.memoryUsage.rss();
    let peak = before;
    const h = createHash('sha256');
    let n = 0;
    for await (const c of inst.open()) {
      h.update(c);
      n += c.length;
      peak = Math.max(peak, process.memoryUsage.rss());
    }
    expect(n).toBe(inst.size);
    // Holding the instance would add >= 256 MiB; garbage 1 MiB chunks stay far below.
    expect((peak - before) / 2 ** 20).toBeLessThan(96);
  });

  it('rejects specs it cannot produce', () => {
    expect(() => planStudy({ kind: 'single', frames: 2 })).toThrow(RangeError);
    expect(() => planStudy({ kind: 'multiframe', frames: 8192, instances: 1 })).toThrow(RangeError); // > 4 GiB OW
    expect(() => planStudy({ kind: 'multiframe', instances: 0 })).toThrow(RangeError);
    expect(() => planStudy({ kind: 'single', studyInstanceUID: '1.02.3' })).toThrow(RangeError);
  });
});

// ---------- the benchmark client ----------

function multipartBody(boundary: string, parts: Buffer[], opts: { preamble?: string; partHeaders?: string } = {}): Buffer {
  const pieces: Buffer[] = [Buffer.from(opts.preamble ?? '', 'latin1')];
  for (const p of parts) {
    pieces.push(
      Buffer.from(
        `${pieces.length > 1 || opts.preamble ? '\r\n' : ''}--${boundary}\r\n${opts.partHeaders ?? 'Content-Type: application/dicom\r\n'}\r\n`,
        'latin1',
      ),
      p,
    );
  }
  pieces.push(Buffer.from(`\r\n--${boundary}--\r\nepilogue`, 'latin1'));
  return Buffer.concat(pieces);
}

function scanAll(boundary: string, chunks: Buffer[]): { parts: Buffer[]; headers: Record<string, string>[]; complete: boolean } {
  const parts: Buffer[] = [];
  const headers: Record<string, string>[] = [];
  let cur: Buffer[] = [];
  const s = new MultipartScanner(boundary, {
    onPart(h) {
      headers.push(h);
      cur = [];
    },
    onData(c) {
      cur.push(Buffer.from(c));
    },
    onPartEnd() {
      parts.push(Buffer.concat(cur));
    },
  });
  for (const c of chunks) s.push(c);
  return { parts, headers, complete: s.complete };
}

describe('MultipartScanner', () => {
  const boundary = 'b0und';
  // Near-misses of the delimiter inside bodies, an empty part, CR at the very end of a part.
  const parts = [
    Buffer.from('one\r\n--b0un', 'latin1'),
    Buffer.alloc(0),
    Buffer.from('\r\n-\r\n--\r\n--b0unx\r', 'latin1'),
    Buffer.from(Array.from({ length: 300 }, (_, i) => i & 0xff)),
  ];
  const body = multipartBody(boundary, parts, { preamble: 'ignored preamble', partHeaders: 'Content-Type: application/dicom\r\nX-N: 1\r\n' });

  it('recovers every part exactly however the stream is split', () => {
    const splits: Buffer[][] = [[body], Array.from(body, (b) => Buffer.from([b]))];
    for (let k = 1; k < body.length; k++) splits.push([body.subarray(0, k), body.subarray(k)]);
    for (const chunks of splits) {
      const r = scanAll(boundary, chunks);
      expect(r.complete).toBe(true);
      expect(r.parts.map((p) => p.toString('hex'))).toEqual(parts.map((p) => p.toString('hex')));
      expect(r.headers[0]).toEqual({ 'content-type': 'application/dicom', 'x-n': '1' });
    }
  });

  it('accepts a body that starts directly with the boundary', () => {
    const r = scanAll(boundary, [multipartBody(boundary, parts.slice(0, 1))]);
    expect(r.parts).toHaveLength(1);
  });

  it('treats a body without its closing boundary as truncated', () => {
    const cut = body.subarray(0, body.indexOf(`--${boundary}--`));
    const s = new MultipartScanner(boundary, { onPart() {}, onData() {}, onPartEnd() {} });
    s.push(cut);
    expect(() => s.end()).toThrow(/closing boundary/);
  });

  it('takes the boundary from the Content-Type header', () => {
    expect(multipartBoundary('multipart/related; type="application/dicom"; boundary="a b"')).toBe('a b');
    expect(multipartBoundary('multipart/related; boundary=xyz; type="application/dicom"')).toBe('xyz');
    expect(multipartBoundary('application/dicom; boundary=xyz')).toBeUndefined();
  });
});

describe('client against a stand-in DICOMweb server', () => {
  const study = planStudy({ kind: 'multiframe', instances: 5, frames: 3, rows: 64, columns: 64, seed: 11 });
  let byHash: Map<string, GeneratedInstance>;
  let server: http.Server;
  let baseUrl: string;
  const agent = createAgent();
  let handler: (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>;

  beforeAll(async () => {
    byHash = new Map();
    for (const inst of study.instances) byHash.set(await inst.sha256(), inst);
    // A failed expectation inside a handler answers 500, so the client side fails fast instead of hanging.
    server = http.createServer((req, res) => {
      Promise.resolve()
        .then(() => handler(req, res))
        .catch((err: unknown) => {
          if (!res.headersSent) res.writeHead(500);
          res.end(String(err));
        });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/dicomweb`;
  });
  afterAll(async () => {
    agent.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  /** Whole-body multipart split: fine for the few KiB these tests send, independent of the scanner. */
  async function receiveStow(req: http.IncomingMessage): Promise<{ declared: number; received: number; parts: Buffer[] }> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const boundary = /boundary=([^;]+)/.exec(req.headers['content-type'] ?? '')![1]!;
    const text = body.toString('latin1');
    const pieces = text.split(`--${boundary}`);
    expect(pieces.at(-1)).toBe('--\r\n');
    const parts = pieces.slice(1, -1).map((p) => {
      const headerEnd = p.indexOf('\r\n\r\n');
      expect(p.slice(0, headerEnd)).toMatch(/Content-Type: application\/dicom/);
      return Buffer.from(p.slice(headerEnd + 4, -2), 'latin1'); // minus the CRLF before the next delimiter
    });
    return { declared: Number(req.headers['content-length']), received: body.length, parts };
  }

  function stowAnswer(res: http.ServerResponse, uids: string[], status = 200): void {
    res.writeHead(status, { 'Content-Type': 'application/dicom+json' });
    res.end(JSON.stringify({ '00081199': { vr: 'SQ', Value: uids.map((u) => ({ '00081155': { vr: 'UI', Value: [u] } })) } }));
  }

  it('stow streams exact multipart bodies and confirms every instance', async () => {
    const seen: string[] = [];
    handler = (req, res) => {
      return receiveStow(req).then(({ declared, received, parts }) => {
        expect(req.url).toBe('/dicomweb/studies');
        expect(received).toBe(declared);
        const uids = parts.map((p) => byHash.get(sha(p))?.sopInstanceUID ?? 'unknown');
        seen.push(...uids);
        stowAnswer(res, uids);
      });
    };
    const r = await stow({ baseUrl, study, perRequest: 2, concurrency: 2, agent });
    expect(r.failures).toEqual([]);
    expect(r.requests).toBe(3);
    expect(r.statusCounts).toEqual({ '200': 3 });
    expect(r.stored).toBe(5);
    expect(r.bytes).toBe(study.totalBytes);
    expect(seen.sort()).toEqual(study.instances.map((i) => i.sopInstanceUID).sort());
  });

  it('stow reports instances missing from ReferencedSOPSequence', async () => {
    handler = (req, res) => {
      return receiveStow(req).then(({ parts }) => {
        stowAnswer(
          res,
          parts.slice(1).map((p) => byHash.get(sha(p))!.sopInstanceUID),
        );
      });
    };
    const r = await stow({ baseUrl, study, perRequest: 5, concurrency: 1, agent });
    expect(r.stored).toBe(4);
    expect(r.failures).toHaveLength(1);
    expect(r.failures[0]).toMatch(/1 of 5 instances not in ReferencedSOPSequence/);
  });

  it('stow reports a server that refuses before reading the body, without hanging', async () => {
    const big = planStudy({ kind: 'multiframe', instances: 1, frames: 64, rows: 512, columns: 512, seed: 12 }); // 32 MiB
    handler = (_req, res) => {
      res.writeHead(413, { 'Content-Type': 'application/json', Connection: 'close' });
      res.end('{"error":"too large"}');
    };
    const r = await stow({ baseUrl, study: big, perRequest: 1, concurrency: 1, agent });
    expect(r.stored).toBe(0);
    expect(r.failures.length).toBeGreaterThan(0);
    expect(r.failures.join('\n')).toMatch(/413|no response/);
    expect(r.bytes).toBe(0);
  });

  function serveStudy(order: GeneratedInstance[], opts: { writeSize: number; corrupt?: boolean; truncate?: boolean }) {
    return (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
      return (async () => {
        expect(req.url).toBe(`/dicomweb/studies/${study.studyInstanceUID}`);
        expect(req.headers.accept).toMatch(/multipart\/related; type="application\/dicom"/);
        const boundary = `srv-${Math.random().toString(36).slice(2)}`;
        const all = multipartBody(boundary, await Promise.all(order.map((i) => bytesOf(i))), { preamble: 'pre' });
        const body = opts.truncate ? all.subarray(0, all.lastIndexOf(`--${boundary}--`)) : all;
        if (opts.corrupt) body[body.length >> 1] = body[body.length >> 1]! ^ 1;
        res.writeHead(200, { 'Content-Type': `multipart/related; type="application/dicom"; boundary="${boundary}"` });
        for (let o = 0; o < body.length; o += opts.writeSize) res.write(body.subarray(o, o + opts.writeSize));
        res.end();
      })();
    };
  }

  it('wado matches every part to a generated instance, in any order and any chunking', async () => {
    handler = serveStudy([...study.instances].reverse(), { writeSize: 997 });
    const r = await wado({ baseUrl, studyInstanceUID: study.studyInstanceUID, expect: study });
    expect(r.mismatches).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.parts).toBe(5);
    expect(r.partBytes).toBe(study.totalBytes);
    expect(r.ttfbMs).toBeGreaterThanOrEqual(r.headersMs);
  });

  it('wado flags a flipped byte, a missing instance and a truncated response', async () => {
    handler = serveStudy(study.instances, { writeSize: 4096, corrupt: true });
    const corrupt = await wado({ baseUrl, studyInstanceUID: study.studyInstanceUID, expect: study });
    expect(corrupt.ok).toBe(false);
    expect(corrupt.mismatches.join('\n')).toMatch(/matches no generated instance/);

    handler = serveStudy(study.instances.slice(1), { writeSize: 4096 });
    const missing = await wado({ baseUrl, studyInstanceUID: study.studyInstanceUID, expect: study });
    expect(missing.ok).toBe(false);
    expect(missing.mismatches.join('\n')).toMatch(/4 parts, expected 5/);

    handler = serveStudy(study.instances, { writeSize: 4096, truncate: true });
    const truncated = await wado({ baseUrl, studyInstanceUID: study.studyInstanceUID, expect: study });
    expect(truncated.ok).toBe(false);
    expect(truncated.mismatches.join('\n')).toMatch(/closing boundary/);
  });

  it('wadoFrames checks each frame against the generator, in the requested order', async () => {
    const inst = study.instances[2]!;
    let served: number[] = [];
    handler = (req, res) => {
      return (async () => {
        const frames = req.url!.split('/frames/')[1]!.split(',').map(Number);
        const parts = await Promise.all(
          served.map((n) => bytesOf(inst, inst.pixelDataOffset + (n - 1) * inst.frameBytes, inst.pixelDataOffset + n * inst.frameBytes)),
        );
        expect(frames).toEqual([3, 1]);
        res.writeHead(200, { 'Content-Type': 'multipart/related; type="application/octet-stream"; boundary=f' });
        res.end(multipartBody('f', parts, { partHeaders: 'Content-Type: application/octet-stream\r\n' }));
      })();
    };
    served = [3, 1];
    const good = await wadoFrames(baseUrl, study.studyInstanceUID, inst.seriesInstanceUID, inst.sopInstanceUID, [3, 1], { expect: inst });
    expect(good.mismatches).toEqual([]);
    expect(good.ok).toBe(true);
    expect(good.bytes).toBeGreaterThan(2 * inst.frameBytes);
    served = [1, 3];
    const swapped = await wadoFrames(baseUrl, study.studyInstanceUID, inst.seriesInstanceUID, inst.sopInstanceUID, [3, 1], { expect: inst });
    expect(swapped.ok).toBe(false);
    expect(swapped.mismatches).toHaveLength(2);
  });

  it('qido counts the matches of a query', async () => {
    handler = (req, res) => {
      expect(req.url).toBe('/dicomweb/studies?PatientID=P1&limit=5');
      res.writeHead(200, { 'Content-Type': 'application/dicom+json' });
      res.end(JSON.stringify([{}, {}, {}]));
    };
    const r = await qido(baseUrl, '/studies?PatientID=P1&limit=5', { agent });
    expect(r.status).toBe(200);
    expect(r.results).toBe(3);
  });
});

describe('startRssSampler', () => {
  it('sees another process grow by the memory it touches, and its CPU time', async () => {
    // A fresh child, so allocator reuse inside this worker cannot hide the growth.
    const child = spawn(process.execPath, [
      '-e',
      `process.stdout.write('ready\\n');
       process.stdin.once('data', () => {
         const b = Buffer.alloc(192 * 2 ** 20); b.fill(1);
         let s = 0; for (let r = 0; r < 4; r++) for (let i = 0; i < b.length; i += 64) s += b[i];
         process.stdout.write('done ' + s + '\\n');
         process.stdin.once('data', () => process.exit(0));
       });`,
    ]);
    const lines = child.stdout.setEncoding('utf8')[Symbol.asyncIterator]();
    try {
      expect(String((await lines.next()).value)).toMatch(/ready/);
      const sampler = startRssSampler(child.pid!);
      child.stdin.write('go\n');
      expect(String((await lines.next()).value)).toMatch(/done/);
      const r = sampler.stop();
      expect(r.peakRssMiB - r.rssBeforeMiB).toBeGreaterThan(150);
      if (r.hwmMiB !== null) expect(r.hwmMiB).toBeGreaterThanOrEqual(r.peakRssMiB - 1);
      expect(r.cpuSeconds).toBeGreaterThan(0);
      expect(r.rssAfterMiB).not.toBeNull();
      expect(() => sampler.stop()).toThrow();
    } finally {
      child.kill();
    }
  });
});
