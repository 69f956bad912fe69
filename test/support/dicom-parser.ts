// dicom-parser (a named dependency, not used by the node itself) as an independent reader of the
// test files: the node's scanner is hand-written, so what it finds is checked against a parser
// written by others.
import dicomParser, { type DataSet, type ParseDicomOptions } from 'dicom-parser';
import { inflateRawSync } from 'node:zlib';

const IMPLICIT_VR_LE = '1.2.840.10008.1.2';

/**
 * Files whose data set is written implicit VR although their File Meta names an explicit-VR
 * transfer syntax. pydicom and the node detect this; dicom-parser reads what the meta says and
 * overruns, so it is told (the meta's UID is overwritten in a copy, same length, NUL-padded).
 */
export const IMPLICIT_DESPITE_META: ReadonlySet<string> = new Set(['SC_rgb_jpeg.dcm']);

export interface ParseOptions {
  /** The file's name, to apply IMPLICIT_DESPITE_META. */
  name?: string;
  /** Stop before this tag ('x7fe00010'). */
  untilTag?: string;
}

/**
 * Deflated data sets (1.2.840.10008.1.2.1.99): dicom-parser asks for an inflater, and uses the
 * array it returns (its .d.ts says void).
 */
function inflater(arr: Uint8Array, position: number): Uint8Array {
  const inflated = inflateRawSync(arr.subarray(position));
  const out = new Uint8Array(position + inflated.length);
  out.set(arr.subarray(0, position));
  out.set(inflated, position);
  return out;
}

export function parseFile(bytes: Uint8Array, options: ParseOptions = {}): DataSet {
  let arr = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (options.name !== undefined && IMPLICIT_DESPITE_META.has(options.name)) {
    const meta = dicomParser.readPart10Header(arr);
    const ts = meta.elements.x00020010!;
    arr = Uint8Array.from(arr);
    arr.fill(0, ts.dataOffset, ts.dataOffset + ts.length);
    arr.set(Buffer.from(IMPLICIT_VR_LE, 'latin1'), ts.dataOffset);
  }
  const parseOptions: ParseDicomOptions = { inflater };
  if (options.untilTag) parseOptions.untilTag = options.untilTag;
  return dicomParser.parseDicom(arr, parseOptions);
}

/** The bytes of the element at a tag path ('54000100.0.54001010', item indexes 0-based), as dicom-parser finds them. */
export function elementBytes(file: Buffer, path: string, options: ParseOptions = {}): Buffer {
  let ds = parseFile(file, options);
  const segments = path.split('.');
  for (let i = 0; i + 2 < segments.length; i += 2) {
    const item = ds.elements[`x${segments[i]!.toLowerCase()}`]?.items?.[Number(segments[i + 1])];
    if (!item?.dataSet) throw new Error(`dicom-parser finds no item at ${path}`);
    ds = item.dataSet;
  }
  const el = ds.elements[`x${segments[segments.length - 1]!.toLowerCase()}`];
  if (!el) throw new Error(`dicom-parser finds no element at ${path}`);
  return file.subarray(el.dataOffset, el.dataOffset + el.length);
}

/** The Transfer Syntax UID the File Meta declares (as written, whatever the data set is). */
export function declaredTransferSyntax(bytes: Uint8Array): string | undefined {
  return dicomParser.readPart10Header(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)).string('x00020010');
}
