// What the scanner learns from the tokens of one instance: its DICOM JSON metadata (the
// catalog's), its identity, and the byte ranges of its frames and bulk values.
import { VaultError } from '../core/errors.ts';
import type { ByteRange, DicomJsonDataset, DicomJsonElement, InstanceIdentity, PixelDataLayout } from './model.ts';
import {
  BINARY_VRS,
  DEFAULT_TEXT_DECODER,
  EXTENDED_OFFSET_TABLE,
  PIXEL_DATA,
  SPECIFIC_CHARACTER_SET,
  decodeElementValue,
  firstNumber,
  firstString,
  implicitVR,
  isPixelDataTag,
  tagHex,
  textDecoderFor,
  type TextDecodeFn,
} from './metadata.ts';
import type { FileMeta } from './file-meta.ts';
import { MetadataBudget } from './scan-budget.ts';
import type { DicomTokenSink, ElementToken, ItemToken } from './tokenizer.ts';
import { describeTransferSyntax } from './transfer-syntax.ts';
import { assertUid } from './uid.ts';
import { malformed } from './wire.ts';

/**
 * Numbers per fragment in ScanSink's fragment list: its item tag's offset, its value's offset and
 * length, and its first two bytes (big endian; -1 when shorter: the JPEG SOI, J2K SOC markers).
 */
const FRAGMENT_FIELDS = 4;

type Level =
  | { kind: 'dataset'; dataset: DicomJsonDataset; decode: TextDecodeFn }
  | { kind: 'sequence'; items: DicomJsonDataset[]; element: DicomJsonElement; decode: TextDecodeFn };

/** Builds DICOM JSON, identity and layout from the tokens of one instance. */
export class ScanSink implements DicomTokenSink {
  readonly root: DicomJsonDataset = {};
  readonly bulk: Record<string, ByteRange> = {};
  pixelData: PixelDataLayout | null = null;
  headerComplete = false;
  identity: InstanceIdentity | undefined;
  readonly #levels: Level[];
  readonly #meta: FileMeta;
  /** Offsets refer to the bytes as received (false for deflated data sets). */
  readonly #offsets: boolean;
  #topLevelFragments = false;
  /** Encapsulated data other than the top-level Pixel Data, while its items stream by. */
  #nested: { path: string; valueOffset: number } | undefined;
  /**
   * The top-level Pixel Data's fragments, FRAGMENT_FIELDS numbers each: flat rather than an
   * object each (107 bytes), since a whole-slide image has hundreds of thousands.
   */
  readonly #fragments: number[] = [];
  basicOffsetTable: number[] = [];
  extendedOffsetTable: Uint8Array | undefined;
  /** Bytes of the current fragment's marker read so far; -1 when none is being read. */
  #markerHave = -1;

  readonly #threshold: number;
  /** Every record kept is charged here: past its limit the instance is refused (TOO_LARGE). */
  readonly #budget: MetadataBudget;

  /** Memory the metadata and layout kept so far take, as the budget counts it (scan-budget.ts). */
  get heldBytes(): number {
    return this.#budget.held;
  }

  constructor(meta: FileMeta, offsets: boolean, bulkDataThreshold: number, maxMetadataBytes: number) {
    this.#meta = meta;
    this.#offsets = offsets;
    this.#threshold = bulkDataThreshold;
    this.#budget = new MetadataBudget(maxMetadataBytes);
    this.#levels = [{ kind: 'dataset', dataset: this.root, decode: DEFAULT_TEXT_DECODER }];
  }

  get #level(): Level {
    return this.#levels[this.#levels.length - 1]!;
  }

  #dataset(): { dataset: DicomJsonDataset; level: Level & { kind: 'dataset' } } {
    const level = this.#level;
    if (level.kind !== 'dataset') throw new VaultError('INTERNAL', 'element outside a data set');
    return { dataset: level.dataset, level };
  }

  /** Whether an element belongs in the metadata at all. */
  #keep(el: ElementToken): boolean {
    if ((el.tag & 0xffff) === 0) return false; // group lengths: meaningless once re-encoded
    if (el.tag === 0xfffcfffc) return false; // data set trailing padding
    if (el.depth === 0 && el.tag >>> 16 === 0x0002) return false; // File Meta has no place in the data set
    return true;
  }

  element(el: ElementToken, value: Uint8Array): void {
    if (el.depth === 0) {
      if (el.tag === EXTENDED_OFFSET_TABLE) {
        this.extendedOffsetTable = value.slice();
        this.#budget.bytes(value.length, el);
      }
    }
    if (!this.#keep(el)) return;
    const level = this.#level;
    if (level.kind !== 'dataset') throw new VaultError('INTERNAL', 'element outside a data set');
    const dataset = level.dataset;
    if (BINARY_VRS.has(el.vr) && value.length > this.#threshold) {
      // Buffered only because the scanner needs it (the Extended Offset Table); still bulk data.
      this.#budget.bulk(el.path, el);
      dataset[tagHex(el.tag)] = { vr: el.vr, BulkDataURI: `bulk/${el.path}` };
      this.bulk[el.path] = { offset: el.valueOffset, length: el.length };
      return;
    }
    // UN for a tag the dictionary knows: written by a converter that did not know it. Decoded
    // with the dictionary's VR, as pydicom does, so that such instances are still identified.
    const vr = el.vr === 'UN' ? this.#knownVR(el) : el.vr;
    this.#budget.precheck(vr, value, el);
    const json = decodeElementValue(vr, value, el.littleEndian, level.decode);
    this.#budget.element(json, el);
    dataset[tagHex(el.tag)] = json;
    if (el.tag === SPECIFIC_CHARACTER_SET) {
      level.decode = textDecoderFor((json.Value ?? []).map((v) => (typeof v === 'string' ? v : '')));
    }
    // At Series Instance UID itself (tags ascend): the instance is identified before any large
    // value after it has to be read.
    if (el.depth === 0 && this.identity === undefined && el.tag >= 0x0020000e) this.tryIdentify(false);
  }

  #knownVR(el: ElementToken): string {
    const vr = implicitVR(el.tag, { pixelRepresentation: firstNumber(this.root['00280103']), bitsAllocated: firstNumber(this.root['00280100']) }, el.length);
    return vr === 'SQ' ? 'UN' : vr;
  }

  bulkStart(el: ElementToken): void {
    if (el.depth === 0 && isPixelDataTag(el.tag)) {
      if (this.#offsets) {
        this.pixelData = { valueOffset: el.valueOffset, valueLength: el.length, encapsulated: false, vr: el.vr };
        this.bulk[tagHex(el.tag)] = { offset: el.valueOffset, length: el.length };
      }
      this.#completeHeader();
      return;
    }
    if (!this.#keep(el)) return;
    this.#budget.bulk(el.path, el);
    const { dataset } = this.#dataset();
    dataset[tagHex(el.tag)] = { vr: el.vr, BulkDataURI: `bulk/${el.path}` };
    this.bulk[el.path] = { offset: el.valueOffset, length: el.length };
  }

  data(bytes: Uint8Array): void {
    if (this.#markerHave < 0) return;
    // The marker's field holds the bytes read so far until both are: -1 stays if fewer come.
    const at = this.#fragments.length - 1;
    for (let i = 0; i < bytes.length && this.#markerHave < 2; i++) {
      this.#fragments[at] = this.#markerHave === 0 ? bytes[i]! : (this.#fragments[at]! << 8) | bytes[i]!;
      this.#markerHave++;
    }
    if (this.#markerHave === 2) this.#markerHave = -1;
  }

  bulkEnd(): void {}

  largeValue(length: number, tag: number, offset: number): void {
    this.#budget.buffer(length, { tag, offset });
  }

  sequenceStart(el: ElementToken): void {
    const { dataset, level } = this.#dataset();
    const element: DicomJsonElement = { vr: 'SQ', Value: [] };
    if (this.#keep(el)) {
      this.#budget.sequence(el);
      dataset[tagHex(el.tag)] = element;
    }
    this.#levels.push({ kind: 'sequence', items: element.Value as DicomJsonDataset[], element, decode: level.decode });
  }

  sequenceEnd(): void {
    const level = this.#levels.pop();
    if (level?.kind === 'sequence' && level.items.length === 0) delete level.element.Value;
  }

  itemStart(item: ItemToken): void {
    const level = this.#level;
    if (level.kind !== 'sequence') throw new VaultError('INTERNAL', 'item outside a sequence');
    this.#budget.item(item);
    const dataset: DicomJsonDataset = {};
    level.items.push(dataset);
    this.#levels.push({ kind: 'dataset', dataset, decode: level.decode });
  }

  itemEnd(): void {
    this.#levels.pop();
  }

  fragmentsStart(el: ElementToken): void {
    if (el.depth === 0 && el.tag === PIXEL_DATA) {
      if (this.#offsets) this.pixelData = { valueOffset: el.valueOffset, valueLength: -1, encapsulated: true, vr: el.vr };
      this.#topLevelFragments = true;
      this.#completeHeader();
      return;
    }
    // Encapsulated data elsewhere (an icon's Pixel Data): one bulk value, items and all.
    if (!this.#keep(el)) return;
    this.#budget.bulk(el.path, el);
    const { dataset } = this.#dataset();
    const element: DicomJsonElement = this.#offsets ? { vr: el.vr, BulkDataURI: `bulk/${el.path}` } : { vr: el.vr };
    dataset[tagHex(el.tag)] = element;
    this.#nested = { path: el.path, valueOffset: el.valueOffset };
  }

  offsetTable(item: ItemToken, value: Uint8Array): void {
    if (!this.#topLevelFragments) return;
    this.#budget.bytes(2 * value.length, item); // a number (8 bytes) per 4
    const dv = new DataView(value.buffer, value.byteOffset, value.byteLength);
    const offsets: number[] = [];
    for (let i = 0; i + 4 <= value.length; i += 4) offsets.push(dv.getUint32(i, true));
    this.basicOffsetTable = offsets;
  }

  fragmentStart(item: ItemToken): void {
    if (!this.#topLevelFragments) return;
    this.#budget.fragment(item);
    this.#fragments.push(item.offset, item.valueOffset, item.length, -1);
    this.#markerHave = 0;
  }

  fragmentEnd(): void {
    // Shorter than its marker: no marker (a single byte read is not one).
    if (this.#markerHave === 1) this.#fragments[this.#fragments.length - 1] = -1;
    this.#markerHave = -1;
  }

  fragmentsEnd(endOffset: number): void {
    if (this.#topLevelFragments) {
      this.#topLevelFragments = false;
      return;
    }
    const nested = this.#nested;
    if (nested !== undefined && this.#offsets) this.bulk[nested.path] = { offset: nested.valueOffset, length: endOffset - nested.valueOffset };
    this.#nested = undefined;
  }

  #completeHeader(): void {
    if (this.headerComplete) return;
    this.headerComplete = true;
    this.tryIdentify(true);
  }

  /** Called at the end of the data set when it has no Pixel Data. */
  finishHeader(): void {
    this.#completeHeader();
  }

  /**
   * Settles the identity once the top-level data set has reached Series Instance UID (tags come
   * in ascending order) or the header is complete. `final`: missing attributes are an error.
   */
  tryIdentify(final: boolean): void {
    if (this.identity !== undefined) return;
    const root = this.root;
    const found: Array<[string, string | undefined]> = [
      ['StudyInstanceUID', firstString(root['0020000D'])],
      ['SeriesInstanceUID', firstString(root['0020000E'])],
      ['SOPInstanceUID', firstString(root['00080018']) ?? this.#meta.mediaStorageSOPInstanceUID],
      ['SOPClassUID', firstString(root['00080016']) ?? this.#meta.mediaStorageSOPClassUID],
    ];
    const missing = found.find(([, v]) => v === undefined || v === '');
    if (missing !== undefined) {
      if (final) throw malformed(`missing ${missing[0]}`);
      return;
    }
    const [study, series, sop, sopClass] = found.map(([what, v]) => assertUid(v!, what)) as [string, string, string, string];
    this.identity = {
      studyInstanceUID: study,
      seriesInstanceUID: series,
      sopInstanceUID: sop,
      sopClassUID: sopClass,
      transferSyntaxUID: this.#meta.transferSyntaxUID,
    };
  }

  /** Frame byte ranges (see InstanceLayout.frames). */
  frames(transferSyntaxUID: string): ByteRange[][] {
    const pixel = this.pixelData;
    if (pixel === null) return [];
    const root = this.root;
    const framesElement = root['00280008'];
    // NumberOfFrames absent → 1; present but not a number (e.g. '1A') → frames are unknown.
    const frameCount = framesElement?.Value === undefined ? 1 : firstNumber(framesElement);
    if (frameCount === undefined || !Number.isInteger(frameCount) || frameCount < 1) return [];
    return pixel.encapsulated ? this.#encapsulatedFrames(frameCount, transferSyntaxUID) : this.#nativeFrames(pixel, frameCount);
  }

  #nativeFrames(pixel: PixelDataLayout, frameCount: number): ByteRange[][] {
    const root = this.root;
    const rows = firstNumber(root['00280010']);
    const columns = firstNumber(root['00280011']);
    const samples = firstNumber(root['00280002']) ?? 1;
    const bitsAllocated = pixel.vr === 'OD' ? 64 : pixel.vr === 'OF' ? 32 : firstNumber(root['00280100']);
    if (rows === undefined || columns === undefined || bitsAllocated === undefined) return [];
    const photometric = firstString(root['00280004']);
    // YBR_*_422 native data holds 2 samples per pixel on average (Cb and Cr are shared).
    const effectiveSamples = photometric === 'YBR_FULL_422' || photometric === 'YBR_PARTIAL_422' ? 2 : samples;
    const frameBits = rows * columns * effectiveSamples * bitsAllocated;
    // BitsAllocated 1 packs frames back to back without padding: a frame that is not a whole
    // number of bytes starts mid-byte, which a byte range cannot express. Those get no frames.
    if (frameBits % 8 !== 0) return [];
    const frameBytes = frameBits / 8;
    if (frameBytes === 0 || frameBytes * frameCount > pixel.valueLength) return [];
    // NumberOfFrames 10^8 of one byte each is a 100 MB upload: the layout is charged before it is built.
    this.#budget.frames(frameCount, frameCount);
    const frames: ByteRange[][] = [];
    for (let i = 0; i < frameCount; i++) frames.push([{ offset: pixel.valueOffset + i * frameBytes, length: frameBytes }]);
    return frames;
  }

  #encapsulatedFrames(frameCount: number, transferSyntaxUID: string): ByteRange[][] {
    const f = this.#fragments;
    const count = f.length / FRAGMENT_FIELDS;
    if (count === 0) return [];
    if (frameCount === 1) return this.#framesFromIndexes([0]);
    const first = f[0]!;
    // Frames start at these offsets, relative to the first fragment's item tag.
    let starts: number[] | undefined;
    const eot = this.extendedOffsetTable;
    if (eot !== undefined && eot.length === frameCount * 8) {
      const dv = new DataView(eot.buffer, eot.byteOffset, eot.byteLength);
      starts = [];
      for (let i = 0; i < frameCount; i++) starts.push(Number(dv.getBigUint64(i * 8, true)));
    } else if (this.basicOffsetTable.length === frameCount) {
      starts = this.basicOffsetTable;
    }
    if (starts !== undefined) return this.#framesFromStarts(starts.map((s) => first + s));
    if (count === frameCount) return this.#framesFromIndexes(Array.from({ length: count }, (_, i) => i));
    // No offset table and more fragments than frames: JPEG-family frames start with a marker.
    const codestream = describeTransferSyntax(transferSyntaxUID).codestream;
    if (codestream !== undefined) {
      const marker = codestream === 'jpeg' ? 0xffd8 : 0xff4f;
      const frameStarts: number[] = [];
      for (let i = 0; i < count; i++) if (f[i * FRAGMENT_FIELDS + 3] === marker) frameStarts.push(f[i * FRAGMENT_FIELDS]!);
      if (frameStarts.length === frameCount && frameStarts[0] === first) return this.#framesFromStarts(frameStarts);
    }
    return [];
  }

  /** Groups fragments into frames given each frame's first item offset; [] if they disagree. */
  #framesFromStarts(starts: number[]): ByteRange[][] {
    const f = this.#fragments;
    const byOffset = new Map<number, number>();
    for (let i = 0; i < f.length; i += FRAGMENT_FIELDS) byOffset.set(f[i]!, i / FRAGMENT_FIELDS);
    const firsts: number[] = [];
    for (const start of starts) {
      const index = byOffset.get(start);
      if (index === undefined || (firsts.length > 0 && index <= firsts[firsts.length - 1]!)) return [];
      firsts.push(index);
    }
    return this.#framesFromIndexes(firsts);
  }

  /** Frames made of the fragments from each index in `firsts` up to the next (the last: to the end). */
  #framesFromIndexes(firsts: number[]): ByteRange[][] {
    const f = this.#fragments;
    const count = f.length / FRAGMENT_FIELDS;
    this.#budget.frames(firsts.length, count - firsts[0]!);
    const frames: ByteRange[][] = [];
    for (let k = 0; k < firsts.length; k++) {
      const from = firsts[k]!;
      const to = k + 1 < firsts.length ? firsts[k + 1]! : count;
      // Sized up front: an array grown by push() from empty takes 17 slots.
      const ranges: ByteRange[] = new Array(to - from);
      for (let i = from; i < to; i++) ranges[i - from] = { offset: f[i * FRAGMENT_FIELDS + 1]!, length: f[i * FRAGMENT_FIELDS + 2]! };
      frames.push(ranges);
    }
    return frames;
  }
}
