// The frame decoders against independent ones: every compressed file among pydicom's test files
// (listed by the transfer syntax each declares), and frames made with DCMTK's and OpenJPH's
// encoders for the syntaxes pydicom has none of, each decoded here through the worker pool and by
// GDCM (pydicom 2.3.1 + python3-gdcm), Pillow or pydicom's RLE decoder. Lossless: byte-exact.
// Then corrupt frames of every codec, the pool's limits, and its recovery.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canDecode, decodedFrameLength, DecodePool, type FrameInfo } from '../../../src/dicom/codecs/index.ts';
import { encodeFrame, phantom } from '../../../bench/decode.ts';
import { difference, missingReferees, prepareFixtures, type Fixtures, type ManifestEntry } from '../../support/codec-fixtures.ts';

const P = '1.2.840.10008.1.2';
const NAMES: Record<string, string> = {
  [`${P}.4.50`]: 'JPEG baseline',
  [`${P}.4.51`]: 'JPEG extended',
  [`${P}.4.57`]: 'JPEG lossless',
  [`${P}.4.70`]: 'JPEG lossless SV1',
  [`${P}.4.80`]: 'JPEG-LS lossless',
  [`${P}.4.81`]: 'JPEG-LS near-lossless',
  [`${P}.4.90`]: 'JPEG 2000 lossless',
  [`${P}.4.91`]: 'JPEG 2000',
  [`${P}.4.201`]: 'HTJ2K lossless',
  [`${P}.4.202`]: 'HTJ2K lossless RPCL',
  [`${P}.4.203`]: 'HTJ2K',
  [`${P}.5`]: 'RLE lossless',
};

/**
 * Lossy syntaxes: how far from the referee a sample may be, and why. The lossless ones (and
 * JPEG-LS near-lossless, whose decoding is exact arithmetic) must be byte-exact.
 */
const TOLERANCE: Record<string, { max: number; mean: number; why: string }> = {
  [`${P}.4.50`]: {
    max: 1,
    mean: 0.05,
    why:
      "libjpeg-turbo and GDCM's IJG libjpeg share the integer 'islow' inverse DCT and fancy upsampling, so grey is exact; " +
      "colour is converted from YCbCr in libjpeg's fixed-point tables here and in pydicom's floating-point matrix for the referee: " +
      'a sample may round one step apart',
  },
  // jpeg12.ts is libjpeg 6b's 12-bit decoding step for step: exact.
  [`${P}.4.51`]: { max: 0, mean: 0, why: "the same integer inverse DCT and range limit as GDCM's 12-bit IJG libjpeg" },
  [`${P}.4.91`]: {
    max: 1,
    mean: 0.01,
    why: 'the irreversible 9/7 wavelet is floating point: OpenJPEG in WebAssembly and natively (GDCM) may round a sample differently',
  },
  [`${P}.4.203`]: { max: 1, mean: 0.01, why: "the irreversible 9/7 wavelet in floating point: OpenJPH here, OpenJPEG's HT decoder in Pillow" },
};

/** Compressed files of pydicom's set the node must refuse, with why (asserted: DECODE_FAILED). */
const KNOWN_BROKEN: Record<string, string> = {
  'JPEG2000-embedded-sequence-delimiter.dcm':
    "its codestream's SIZ marker is overwritten by the bytes FE FF DD E0 of a Sequence Delimitation Item (the file tests DICOM parsers), " +
    'so the codestream says 3722445056 columns; GDCM decodes it to noise (-11888..32557, where the intact image in JPEG2000.dcm spans -30..245)',
};

// The referees are installed by test/services/setup.sh: without them this suite fails, naming them.
const missing = missingReferees();
if (missing !== undefined) throw new Error(`${missing}: run test/services/setup.sh as root`);
const dir = mkdtempSync(join(tmpdir(), 'codecs-'));
const fixtures: Fixtures | undefined = await prepareFixtures(dir);
const results: string[] = [];

function isCompressed(e: ManifestEntry): boolean {
  return e.notCompressed === undefined && e.native !== true;
}

describe('frame decoders against independent ones', () => {
  let pool: DecodePool;
  beforeAll(() => {
    pool = new DecodePool({ workers: 2 });
  });
  afterAll(async () => {
    await pool?.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
    if (results.length > 0) console.log(`referee results:\n${results.join('\n')}`);
  });

  const f = fixtures!;
  const manifest = f?.manifest ?? [];
  const made = new Map((f?.made ?? []).map((m) => [m.name, m]));
  const pydicomEntries = manifest.filter((e) => !made.has(e.name) && e.native !== true);

  it('finds the compressed files among pydicom test files by their declared transfer syntax', () => {
    const compressed = pydicomEntries.filter(isCompressed);
    // Every syntax the node decodes that pydicom has a file of.
    expect(new Set(compressed.map((e) => e.transferSyntax))).toEqual(
      new Set([`${P}.4.50`, `${P}.4.51`, `${P}.4.70`, `${P}.4.80`, `${P}.4.90`, `${P}.4.91`, `${P}.5`]),
    );
    expect(compressed.length).toBe(34); // in pydicom 2.3.1's set
    for (const e of compressed) expect(canDecode(e.transferSyntax!), e.name).toBe(true);
  });

  const decodeAll = async (e: ManifestEntry): Promise<Uint8Array[]> => {
    const out: Uint8Array[] = [];
    for (const file of e.encoded!) {
      const frame = await pool.decode(e.transferSyntax!, f.read(file), e.info!);
      expect(frame.pixels.length).toBe(decodedFrameLength(e.info!));
      expect(frame.photometricInterpretation).toBe(e.refereePhotometric);
      expect(frame.planarConfiguration).toBe(0);
      out.push(frame.pixels);
    }
    return out;
  };

  const compare = (e: ManifestEntry, ours: Uint8Array[]): void => {
    const tolerance = TOLERANCE[e.transferSyntax!];
    let max = 0;
    let mean = 0;
    ours.forEach((pixels, i) => {
      const ref = f.read(e.reference![i]!);
      expect(pixels.length).toBe(ref.length);
      const d = difference(pixels, ref, e.info!);
      max = Math.max(max, d.max);
      mean = Math.max(mean, d.mean);
      if (tolerance === undefined) expect(Buffer.from(pixels).equals(ref), `${e.name} frame ${i + 1} byte-exact`).toBe(true);
    });
    if (tolerance !== undefined) {
      expect(max, `${e.name}: ${tolerance.why}`).toBeLessThanOrEqual(tolerance.max);
      expect(mean, `${e.name}: ${tolerance.why}`).toBeLessThanOrEqual(tolerance.mean);
    }
    results.push(
      `${e.name}\t${NAMES[e.transferSyntax!]}\t${ours.length} frame(s)\t${e.referee}\t${max === 0 ? 'exact' : `max ${max}, mean ${mean.toFixed(4)}`}`,
    );
  };

  describe('pydicom test files', () => {
    for (const e of pydicomEntries.filter(isCompressed)) {
      const label = `${e.name} (${NAMES[e.transferSyntax!] ?? e.transferSyntax}, ${e.frames ?? 0} frame(s))`;
      if (KNOWN_BROKEN[e.name] !== undefined) {
        it(`refuses ${label}: ${KNOWN_BROKEN[e.name]}`, async () => {
          await expect(pool.decode(e.transferSyntax!, f.read(e.encoded![0]!), e.info!)).rejects.toMatchObject({ code: 'DECODE_FAILED' });
          results.push(`${e.name}\t${NAMES[e.transferSyntax!]}\t${e.frames} frame(s)\trefused\t${KNOWN_BROKEN[e.name]!.slice(0, 80)}…`);
        });
      } else if (e.skipped !== undefined) {
        // Listed, with the reason: UN_sequence.dcm declares JPEG lossless but has no Pixel Data.
        it(`has nothing to decode in ${e.name}: ${e.skipped}`, () => {
          expect(e.encoded ?? []).toHaveLength(0);
        });
      } else {
        const how = TOLERANCE[e.transferSyntax!] === undefined ? 'byte-exact' : `within ${TOLERANCE[e.transferSyntax!]!.max}`;
        it(`decodes ${label} as ${e.referee} does, ${how}`, async () => {
          compare(e, await decodeAll(e));
        });
      }
    }
  });

  describe('frames made for the syntaxes pydicom lacks', () => {
    for (const m of f?.made ?? []) {
      it(`decodes ${m.name} (${NAMES[m.transferSyntax]}: ${m.how})`, async () => {
        const e = f.entry(m.name);
        expect(e.skipped).toBeUndefined();
        const ours = await decodeAll(e);
        compare(e, ours);
        if (m.fromOriginal !== undefined) {
          const original = manifest.find((x) => x.name === m.original && x.native === true)!;
          const d = difference(ours[0]!, f.read(original.reference![0]!), e.info!);
          expect(d.max, `${m.name} against its original`).toBeLessThanOrEqual(m.fromOriginal);
          if (m.fromOriginal > 0) expect(d.max).toBeGreaterThan(0); // near-lossless did lose something: the comparison can fail
        }
      });
    }

    it('decodes a Part 1 JPEG 2000 codestream under an HTJ2K UID (OpenJPEG, as OpenJPH takes only HT code-blocks)', async () => {
      const e = f.entry('693_J2KI.dcm');
      const frame = f.read(e.encoded![0]!);
      const asHt = await pool.decode(`${P}.4.203`, frame, e.info!);
      const asJ2k = await pool.decode(e.transferSyntax!, frame, e.info!);
      expect(Buffer.from(asHt.pixels).equals(Buffer.from(asJ2k.pixels))).toBe(true);
    });
  });

  describe('corrupt frames', () => {
    // One good frame per codec, cut short, cut to its first bytes, and replaced by noise.
    // The reason names the codec, or the format check made before handing the frame to it.
    const CASES: [string, RegExp][] = [
      ['SC_rgb_jpeg_dcmtk.dcm', /^JPEG( \(libjpeg-turbo\))?: /],
      ['JPEG-lossy.dcm', /^(12-bit )?JPEG: /],
      ['SC_rgb_jpeg_gdcm.dcm', /^JPEG lossless: /],
      ['jpll_ct_sv6.dcm', /^JPEG lossless: /],
      ['MR_small_jpeg_ls_lossless.dcm', /^JPEG-LS( \(CharLS\))?: /],
      ['jls_u12_near3.dcm', /^JPEG-LS( \(CharLS\))?: /],
      ['693_J2KI.dcm', /^JPEG 2000 \(OpenJPEG\): /],
      ['MR_small_jp2klossless.dcm', /^JPEG 2000 \(OpenJPEG\): /],
      ['ht_ct_201.j2c', /^HTJ2K \(OpenJPH\): /],
      ['MR_small_RLE.dcm', /^RLE Lossless: /],
    ];
    const noise = (n: number): Uint8Array => {
      let s = 12345;
      return Uint8Array.from({ length: n }, () => {
        s = (Math.imul(s, 1103515245) + 12345) >>> 0;
        return s >>> 24;
      });
    };
    for (const [name, codec] of CASES) {
      it(`rejects a truncated, a headless and a noise ${name} frame with DECODE_FAILED, then decodes the good one`, async () => {
        const e = f.entry(name);
        const good = f.read(e.encoded![0]!);
        const variants: Record<string, Uint8Array> = {
          truncated: good.subarray(0, Math.floor(good.length * 0.6)),
          'first 40 bytes': good.subarray(0, 40),
          noise: noise(good.length),
        };
        for (const [what, bytes] of Object.entries(variants)) {
          const err = await pool.decode(e.transferSyntax!, bytes, e.info!).then(
            () => undefined,
            (x: unknown) => x as { code: string; message: string },
          );
          expect(err, `${name} ${what}`).toBeDefined();
          expect(err!.code, `${name} ${what}: ${err!.message}`).toBe('DECODE_FAILED');
          expect(err!.message, `${name} ${what}`).toMatch(codec);
        }
        const frame = await pool.decode(e.transferSyntax!, good, e.info!);
        expect(difference(frame.pixels, f.read(e.reference![0]!), e.info!).max).toBeLessThanOrEqual(TOLERANCE[e.transferSyntax!]?.max ?? 0);
      });
    }

    it('refuses a frame whose codestream is another size than the instance says, before decoding it', async () => {
      const e = f.entry('693_J2KI.dcm');
      const info: FrameInfo = { ...e.info!, rows: 60000, columns: 60000 };
      await expect(pool.decode(e.transferSyntax!, f.read(e.encoded![0]!), info)).rejects.toMatchObject({
        code: 'DECODE_FAILED',
        message: expect.stringContaining('512x512'),
      });
    });
  });

  describe('the pool', () => {
    const j2k = (): { e: ManifestEntry; bytes: Buffer } => {
      const e = f.entry('693_J2KI.dcm');
      return { e, bytes: f.read(e.encoded![0]!) };
    };

    it('replaces a worker that does not finish in time, and decodes on', async () => {
      // A 1024 x 1024 lossless JPEG 2000 frame takes OpenJPEG here some hundreds of ms: far over
      // a 50 ms limit, whatever the scheduling.
      const big: FrameInfo = {
        rows: 1024,
        columns: 1024,
        samplesPerPixel: 1,
        bitsAllocated: 16,
        bitsStored: 16,
        pixelRepresentation: 1,
        photometricInterpretation: 'MONOCHROME2',
        planarConfiguration: 0,
      };
      const slow = await encodeFrame(`${P}.4.90`, phantom(1024), big);
      const before = pool.replaced;
      await expect(pool.decode(`${P}.4.90`, slow, big, { timeoutMs: 50 })).rejects.toMatchObject({
        code: 'DECODE_FAILED',
        message: expect.stringContaining('worker was replaced'),
      });
      expect(pool.replaced).toBe(before + 1);
      const { e, bytes } = j2k();
      const frame = await pool.decode(e.transferSyntax!, bytes, e.info!);
      expect(Buffer.from(frame.pixels).equals(f.read(e.reference![0]!))).toBe(true);
    });

    it('rejects with ABORTED when the signal aborts, waiting or running', async () => {
      const { e, bytes } = j2k();
      await expect(pool.decode(e.transferSyntax!, bytes, e.info!, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORTED' });
      const ac = new AbortController();
      const running = pool.decode(e.transferSyntax!, bytes, e.info!, { signal: ac.signal });
      ac.abort();
      await expect(running).rejects.toMatchObject({ code: 'ABORTED' });
    });

    it('bounds its queue: a frame beyond it is refused with DECODE_BUSY, the others decode', async () => {
      const { e, bytes } = j2k();
      const small = new DecodePool({ workers: 1, maxQueue: 2 });
      try {
        const accepted = [0, 1, 2].map(() => small.decode(e.transferSyntax!, bytes, e.info!));
        await expect(small.decode(e.transferSyntax!, bytes, e.info!)).rejects.toMatchObject({ code: 'DECODE_BUSY' });
        for (const frame of await Promise.all(accepted)) expect(frame.pixels.length).toBe(decodedFrameLength(e.info!));
      } finally {
        await small.close();
      }
      await expect(small.decode(e.transferSyntax!, bytes, e.info!)).rejects.toMatchObject({ code: 'INTERNAL' });
    });

    it('says which syntaxes it decodes, and refuses others and impossible frames', async () => {
      for (const uid of Object.keys(NAMES)) expect(canDecode(uid), uid).toBe(true);
      for (const uid of [`${P}.1`, `${P}.4.100`, `${P}.4.110`, '1.2.3']) expect(canDecode(uid), uid).toBe(false);
      const { e, bytes } = j2k();
      await expect(pool.decode(`${P}.4.100`, bytes, e.info!)).rejects.toMatchObject({ code: 'DECODE_FAILED' });
      await expect(pool.decode(e.transferSyntax!, bytes, { ...e.info!, bitsAllocated: 12 })).rejects.toMatchObject({ code: 'DECODE_FAILED' });
    });
  });
});
