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

/** Every buffer handed out by allocateAligned: how a store tells aligned views from others. */
const aligned = new WeakSet<SharedArrayBuffer>();

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
  aligned.add(buffer);
  return Array.from({ length: count }, (_, i) => Buffer.from(buffer, i * stride, length));
}

/** True when `bytes` lies in aligned memory and starts on a DIRECT_IO_ALIGNMENT boundary. */
export function isAligned(bytes: Uint8Array): boolean {
  return bytes.byteOffset % DIRECT_IO_ALIGNMENT === 0 && aligned.has(bytes.buffer as SharedArrayBuffer);
}

export function roundUp(n: number, multiple: number): number {
  return Math.ceil(n / multiple) * multiple;
}
