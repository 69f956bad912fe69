// A 4 GiB multi-frame instance is never held in memory: the scanner follows it with offsets past
// 2^32 bytes and memory stays flat. (The full STOW/WADO path at this size runs in `npm run bench`.)
import { describe, expect, it } from 'vitest';
import { planStudy } from '../bench/generate.ts';
import { DicomScanner } from '../ingest/dicom-scanner.ts';

describe('a 4 GiB instance', () => {
  it('is scanned as a stream with exact frame offsets and bounded memory', async () => {
    // 8,190 frames of 512x512x16 bit: Pixel Data just under the 32-bit length limit.
    const study = planStudy({ kind: 'multiframe', instances: 1, frames: 8190, rows: 512, columns: 512, seed: 3 });
    const inst = study.instances[0]!;
    expect(inst.size).toBeGreaterThan(4 * 10 ** 9);
    const scanner = new DicomScanner();
    const rssBefore = process.memoryUsage().rss;
    let peak = rssBefore;
    let n = 0;
    for await (const chunk of inst.open()) {
      scanner.push(chunk);
      if (++n % 256 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
    const scanned = scanner.end();
    expect(scanned.size).toBe(inst.size);
    expect(scanned.layout.frames).toHaveLength(8190);
    const last = scanned.layout.frames[8189]![0]!;
    expect(last.length).toBe(512 * 512 * 2);
    expect(last.offset + last.length).toBe(inst.size);
    expect(last.offset).toBe(inst.pixelDataOffset + 8189 * inst.frameBytes);
    expect(peak - rssBefore).toBeLessThan(256 * 2 ** 20);
  });
});
