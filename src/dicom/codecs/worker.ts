// The worker side of pool.ts: decodes one frame per message with decodeInThread, and renders it
// when asked (DecodePool.render), so that the decoded pixels never cross threads. The codecs'
// WebAssembly modules are instantiated on this thread's first frame of each kind and reused.
import { parentPort } from 'node:worker_threads';
import { isVaultError } from '../../core/errors.ts';
import { renderFrame, type RenderInfo, type RenderOptions } from '../render/index.ts';
import { decodeInThread, isNativeLittleEndian } from './decode.ts';
import type { DecodedFrame, FrameInfo } from './frame.ts';

export interface DecodeRequest {
  id: number;
  transferSyntaxUID: string;
  encoded: ArrayBuffer;
  info: FrameInfo;
  render?: { info: RenderInfo; options: RenderOptions };
}

export type DecodeReply =
  | { id: number; pixels: ArrayBuffer; photometricInterpretation: string; planarConfiguration: 0 | 1 }
  | { id: number; image: ArrayBuffer }
  | { id: number; error: { code: string; message: string } };

/** A typed array's bytes as an ArrayBuffer of their own, to move to the other thread. */
function own(bytes: Uint8Array): ArrayBuffer {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
  return whole ? (bytes.buffer as ArrayBuffer) : (bytes.slice().buffer as ArrayBuffer);
}

async function handle(request: DecodeRequest): Promise<{ reply: DecodeReply; transfer: ArrayBuffer[] }> {
  const encoded = new Uint8Array(request.encoded);
  const frame: DecodedFrame = isNativeLittleEndian(request.transferSyntaxUID)
    ? {
        pixels: encoded,
        photometricInterpretation: request.info.photometricInterpretation,
        planarConfiguration: request.info.planarConfiguration === 1 ? 1 : 0,
      }
    : await decodeInThread(request.transferSyntaxUID, encoded, request.info);
  if (request.render !== undefined) {
    const image = own(await renderFrame(frame, request.render.info, request.render.options));
    return { reply: { id: request.id, image }, transfer: [image] };
  }
  const pixels = own(frame.pixels);
  return {
    reply: { id: request.id, pixels, photometricInterpretation: frame.photometricInterpretation, planarConfiguration: frame.planarConfiguration },
    transfer: [pixels],
  };
}

parentPort!.on('message', (request: DecodeRequest) => {
  handle(request).then(
    ({ reply, transfer }) => parentPort!.postMessage(reply, transfer),
    (err: unknown) => {
      const error = isVaultError(err)
        ? { code: err.code, message: err.message }
        : { code: 'DECODE_FAILED', message: err instanceof Error ? err.message : String(err) };
      parentPort!.postMessage({ id: request.id, error } satisfies DecodeReply);
    },
  );
});
