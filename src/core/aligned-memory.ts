// Memory that a block store may write with direct I/O (O_DIRECT), which needs buffers that start
// on a boundary of the device's logical block size. Node allocates ArrayBuffers with malloc (16
// byte alignment) and gives no address to align by; the memory of a WebAssembly.Memory is mapped
// by V8 on its own, page-aligned, so every view of it that starts at a multiple of
// DIRECT_IO_ALIGNMENT is aligned too. Shared (a SharedArrayBuffer), so that crypto workers seal
// and open it in place without moving it back and forth. Pages are touched only as they are used:
// an arena of 32 MiB costs RSS for the slots that were filled, not for its size.

/** The alignment views of aligned memory have: 4 KiB, a page and the largest logical block size in use. */
export const DIRECT_IO_ALIGNMENT = 4096;

const WASM_PAGE = 65536;

// TypeScript declares WebAssembly in its DOM library, which a Node project does not load.
declare const WebAssembly: {
  Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => { buffer: SharedArrayBuffer };
};

/** Every buffer handed out by allocateAligned, with its stride: how a store tells aligned views from others. */
const strides = new WeakMap<SharedArrayBuffer, number>();

/**
 * `count` views of `length` bytes each, every one starting on a DIRECT_IO_ALIGNMENT boundary of
 * one shared, page-aligned buffer. Throws RangeError when V8 cannot map that much (the caller
 * then uses ordinary buffers).
 */
export function allocateAligned(count: number, length: number): Buffer[] {
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(length) || length < 1) {
    throw new RangeError(`allocateAligned: count and length must be positive integers (got ${count}, ${length})`);
  }
  const stride = roundUp(length, DIRECT_IO_ALIGNMENT);
  const pages = Math.ceil((stride * count) / WASM_PAGE);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  const buffer = memory.buffer;
  strides.set(buffer, stride);
  return Array.from({ length: count }, (_, i) => Buffer.from(buffer, i * stride, length));
}

/** True when `bytes` lies in aligned memory and starts on a DIRECT_IO_ALIGNMENT boundary. */
export function isAligned(bytes: Uint8Array): boolean {
  return bytes.byteOffset % DIRECT_IO_ALIGNMENT === 0 && strides.has(bytes.buffer as SharedArrayBuffer);
}

/**
 * For `bytes` in aligned memory at an aligned start: a view from there to the end of its view's
 * stride (its length rounded up to DIRECT_IO_ALIGNMENT), which a direct read may fill past the
 * end of `bytes` (O_DIRECT reads whole blocks). undefined for any other memory.
 */
export function alignedRoom(bytes: Uint8Array): Buffer | undefined {
  const stride = strides.get(bytes.buffer as SharedArrayBuffer);
  if (stride === undefined || bytes.byteOffset % DIRECT_IO_ALIGNMENT !== 0) return undefined;
  const end = (Math.floor(bytes.byteOffset / stride) + 1) * stride;
  return Buffer.from(bytes.buffer, bytes.byteOffset, end - bytes.byteOffset);
}

export function roundUp(n: number, multiple: number): number {
  return Math.ceil(n / multiple) * multiple;
}

/**
 * Copies `source` into `target` at `at` with one memcpy. TypedArray set() and Buffer copy() go
 * through V8's relaxed atomic moves when either side is shared memory (aligned slots are), byte
 * by byte unless both are word-aligned: 1.4-2 GB/s here, against 12-35 for this. (Buffer.fill
 * with a buffer exactly as long as the range is a plain memcpy in Node's C++.)
 */
export function copyInto(target: Uint8Array, source: Uint8Array, at: number): void {
  if (source.byteLength > 0) Buffer.prototype.fill.call(target, source, at, at + source.byteLength);
}
