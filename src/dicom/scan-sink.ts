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
import type { DicomTokenSink, ElementToken, ItemToken } from './tokenizer.ts';
import { describeTransferSyntax } from './transfer-syntax.ts';
import { assertUid } from './uid.ts';
import { malformed } from './wire.ts';

interface Fragment {
  itemOffset: number;
  range: ByteRange;
  /** First two bytes of the fragment (big endian), -1 when shorter: JPEG SOI, J2K SOC markers. */
  marker: number;
}

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
  readonly fragments: Fragment[] = [];
  basicOffsetTable: number[] = [];
  extendedOffsetTable: Uint8Array | undefined;
  #markerBytes: number[] | undefined;

  readonly #threshold: number;

  constructor(meta: FileMeta, offsets: boolean, bulkDataThreshold: number) {
    this.#meta = meta;
    this.#offsets = offsets;
    this.#threshold = bulkDataThreshold;
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
      if (el.tag === EXTENDED_OFFSET_TABLE) this.extendedOffsetTable = value.slice();
    }
    if (!this.#keep(el)) return;
    const level = this.#level;
    if (level.kind !== 'dataset') throw new VaultError('INTERNAL', 'element outside a data set');
    const dataset = level.dataset;
    if (BINARY_VRS.has(el.vr) && value.length > this.#threshold) {
      // Buffered only because the scanner needs it (the Extended Offset Table); still bulk data.
      dataset[tagHex(el.tag)] = { vr: el.vr, BulkDataURI: `bulk/${el.path}` };
      this.bulk[el.path] = { offset: el.valueOffset, length: el.length };
      return;
    }
    // UN for a tag the dictionary knows: written by a converter that did not know it. Decoded
    // with the dictionary's VR, as pydicom does, so that such instances are still identified.
    const vr = el.vr === 'UN' ? this.#knownVR(el) : el.vr;
    const json = decodeElementValue(vr, value, el.littleEndian, level.decode);
    dataset[tagHex(el.tag)] = json;
    if (el.tag === SPECIFIC_CHARACTER_SET) {
      level.decode = textDecoderFor((json.Value ?? []).map((v) => (typeof v === 'string' ? v : '')));
    }
    if (el.depth === 0 && this.identity === undefined && el.tag > 0x0020000e) this.tryIdentify(false);
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
    const { dataset } = this.#dataset();
    dataset[tagHex(el.tag)] = { vr: el.vr, BulkDataURI: `bulk/${el.path}` };
    this.bulk[el.path] = { offset: el.valueOffset, length: el.length };
  }

  data(bytes: Uint8Array): void {
    const marker = this.#markerBytes;
    if (marker === undefined) return;
    for (let i = 0; i < bytes.length && marker.length < 2; i++) marker.push(bytes[i]!);
    if (marker.length === 2) this.#endMarker();
  }

  #endMarker(): void {
    const marker = this.#markerBytes;
    const last = this.fragments[this.fragments.length - 1];
    if (marker !== undefined && last !== undefined) last.marker = marker.length === 2 ? (marker[0]! << 8) | marker[1]! : -1;
    this.#markerBytes = undefined;
  }

  bulkEnd(): void {}

  sequenceStart(el: ElementToken): void {
    const { dataset, level } = this.#dataset();
    const element: DicomJsonElement = { vr: 'SQ', Value: [] };
    if (this.#keep(el)) dataset[tagHex(el.tag)] = element;
    this.#levels.push({ kind: 'sequence', items: element.Value as DicomJsonDataset[], element, decode: level.decode });
  }

  sequenceEnd(): void {
    const level = this.#levels.pop();
    if (level?.kind === 'sequence' && level.items.length === 0) delete level.element.Value;
  }

  itemStart(): void {
    const level = this.#level;
    if (level.kind !== 'sequence') throw new VaultError('INTERNAL', 'item outside a sequence');
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
    const { dataset } = this.#dataset();
    const element: DicomJsonElement = this.#offsets ? { vr: el.vr, BulkDataURI: `bulk/${el.path}` } : { vr: el.vr };
    dataset[tagHex(el.tag)] = element;
    this.#nested = { path: el.path, valueOffset: el.valueOffset };
  }

  offsetTable(_item: ItemToken, value: Uint8Array): void {
    if (!this.#topLevelFragments) return;
    const dv = new DataView(value.buffer, value.byteOffset, value.byteLength);
    const offsets: number[] = [];
    for (let i = 0; i + 4 <= value.length; i += 4) offsets.push(dv.getUint32(i, true));
    this.basicOffsetTable = offsets;
  }

  fragmentStart(item: ItemToken): void {
    if (!this.#topLevelFragments) return;
    this.fragments.push({ itemOffset: item.offset, range: { offset: item.valueOffset, length: item.length }, marker: -1 });
    this.#markerBytes = [];
  }

  fragmentEnd(): void {
    if (this.#markerBytes !== undefined) this.#endMarker();
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
   * Settles the identity once the top-level data set has passed Series Instance UID (tags come
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
    const bitsAllocated =
      pixel.vr === 'OD' ? 64 : pixel.vr === 'OF' ? 32 : firstNumber(root['00280100']);
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
    const frames: ByteRange[][] = [];
    for (let i = 0; i < frameCount; i++) frames.push([{ offset: pixel.valueOffset + i * frameBytes, length: frameBytes }]);
    return frames;
  }

  #encapsulatedFrames(frameCount: number, transferSyntaxUID: string): ByteRange[][] {
    const fragments = this.fragments;
    if (fragments.length === 0) return [];
    if (frameCount === 1) return [fragments.map((f) => f.range)];
    const first = fragments[0]!.itemOffset;
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
    if (fragments.length === frameCount) return fragments.map((f) => [f.range]);
    // No offset table and more fragments than frames: JPEG-family frames start with a marker.
    const codestream = describeTransferSyntax(transferSyntaxUID).codestream;
    if (codestream !== undefined) {
      const marker = codestream === 'jpeg' ? 0xffd8 : 0xff4f;
      const frameStarts = fragments.filter((f) => f.marker === marker).map((f) => f.itemOffset);
      if (frameStarts.length === frameCount && frameStarts[0] === first) return this.#framesFromStarts(frameStarts);
    }
    return [];
  }

  /** Groups fragments into frames given each frame's first item offset; [] if they disagree. */
  #framesFromStarts(starts: number[]): ByteRange[][] {
    const byOffset = new Map(this.fragments.map((f, i) => [f.itemOffset, i]));
    const frames: ByteRange[][] = [];
    for (let i = 0; i < starts.length; i++) {
      const from = byOffset.get(starts[i]!);
      const to = i + 1 < starts.length ? byOffset.get(starts[i + 1]!) : this.fragments.length;
      if (from === undefined || to === undefined || to <= from) return [];
      frames.push(this.fragments.slice(from, to).map((f) => f.range));
    }
    return frames;
  }
}
