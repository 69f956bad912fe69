// What the DICOM tokenizer hands on: the element and item tokens, the sink that receives them in
// stream order, and the size above which a value is announced before it is buffered. Apart from
// tokenizer.ts because this is the contract between the tokenizer and its sinks (the scanner's
// scan-sink.ts, the transcoder's native writer, the deflated-value reader), read by each of them
// without the tokenizer's state machine.

export interface ElementToken {
  tag: number;
  /** Explicit VR, or for implicit VR the dictionary's (ambiguous ones resolved; 'UN' unknown). */
  vr: string;
  /** Value length in bytes; -1 when undefined. */
  length: number;
  /** Offset of the element's tag. */
  offset: number;
  /** Offset of the value. */
  valueOffset: number;
  /** 0 for the top-level data set. */
  depth: number;
  /** Parent tags and item indexes joined by '.', e.g. '52009230.0.00289110'. */
  path: string;
  /** Byte order of the value. */
  littleEndian: boolean;
}

export interface ItemToken {
  /** Offset of the item tag. */
  offset: number;
  valueOffset: number;
  /** Value length; -1 when undefined. */
  length: number;
  /** 0-based index within its sequence; for fragments 0 is the Basic Offset Table. */
  index: number;
}

/** Receives what the tokenizer finds, in stream order. */
export interface DicomTokenSink {
  /**
   * An element whose whole value was buffered. `value` may be a view of the bytes pushed, valid
   * only during the call: a sink that keeps it keeps a copy.
   */
  element(el: ElementToken, value: Uint8Array): void;
  /** A value that streams past: `data()` calls follow, then `bulkEnd()`. */
  bulkStart(el: ElementToken): void;
  /** The next bytes of the streaming value or fragment; a view valid only during the call. */
  data(bytes: Uint8Array): void;
  bulkEnd(): void;
  sequenceStart(el: ElementToken): void;
  sequenceEnd(): void;
  itemStart(item: ItemToken): void;
  itemEnd(): void;
  /** An undefined-length binary value: encapsulated pixel data. */
  fragmentsStart(el: ElementToken): void;
  /** The first item of encapsulated data (buffered; may be empty; a view valid only during the call). */
  offsetTable(item: ItemToken, value: Uint8Array): void;
  /** A fragment: `data()` calls follow, then `fragmentEnd()`. */
  fragmentStart(item: ItemToken): void;
  fragmentEnd(): void;
  /** `endOffset`: just past the sequence delimiter. */
  fragmentsEnd(endOffset: number): void;
  /**
   * Optional: a value (or offset table) of `length` bytes, over LARGE_VALUE_BYTES, is about to be
   * buffered whole; `tag` and `offset` are its element's. A sink that keeps what it is given may
   * refuse it here, before its bytes are held.
   */
  largeValue?(length: number, tag: number, offset: number): void;
}

/** Values longer than this are announced to the sink before they are buffered: 64 KiB. */
export const LARGE_VALUE_BYTES = 64 * 1024;
