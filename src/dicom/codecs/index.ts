// Decoding compressed frames to native pixels: what WADO-RS needs to answer a request for an
// uncompressed transfer syntax (or the default Accept) from a compressed instance, and what the
// rendered resources start from.
//
//   canDecode(transferSyntaxUID)                       which syntaxes decode
//   decodeFrame(transferSyntaxUID, encoded, info, {signal})   one frame, on the shared worker pool
//   decodedFrameLength(info)                           bytes of one decoded frame
//   new DecodePool({workers, maxQueue, timeoutMs})     a pool of one's own (tests, benchmarks)
import { DecodePool, type DecodeOptions } from './pool.ts';
import type { DecodedFrame, FrameInfo } from './frame.ts';

export { canDecode } from './decode.ts';
export { decodedFrameLength, type DecodedFrame, type FrameInfo } from './frame.ts';
export { DecodePool, DEFAULT_DECODE_TIMEOUT_MS, DEFAULT_MAX_QUEUE, type DecodeOptions, type DecodePoolOptions } from './pool.ts';

let shared: DecodePool | undefined;

/**
 * The process's decode pool, created on first use with the default options (a worker per core).
 * Idle workers do not keep the process alive, so nothing needs to close it.
 */
export function sharedDecodePool(): DecodePool {
  shared ??= new DecodePool();
  return shared;
}

/**
 * Decodes one encapsulated frame (its encoded bytes, all fragments joined) of an instance whose
 * Image Pixel attributes are `info`, on the shared pool. Rejects with DECODE_FAILED naming what
 * failed, DECODE_BUSY, or ABORTED.
 */
export function decodeFrame(transferSyntaxUID: string, encoded: Uint8Array, info: FrameInfo, options: DecodeOptions = {}): Promise<DecodedFrame> {
  return sharedDecodePool().decode(transferSyntaxUID, encoded, info, options);
}
