// What the transcoder needs to decode the frames of an encapsulated instance: the caller's
// decoder, how many frames go ahead, and where each fragment's bytes go in its frame's
// codestream, worked out from the instance's record before any byte is read. Apart from
// transcode.ts because the DICOMweb frames route (src/shell/dicomweb/frames.ts) shares the decoder
// seam and the read-ahead budget, and the plan is built before the walk that reads it.
import { VaultError } from '../core/errors.ts';
import type { DecodedFrame } from './codecs/frame.ts';
import { decodedLayout, type DecodedLayout } from './decompress.ts';
import type { ScannedInstance } from './model.ts';

/** Decodes the frames of an encapsulated source for `transcode`. */
export interface FrameDecoder {
  /**
   * Frame `number` (1-based) from its encoded bytes (its fragments joined). Rejects with
   * DECODE_FAILED (or ABORTED, DECODE_BUSY), which ends the transcoding.
   */
  decode(encoded: Uint8Array, number: number): Promise<DecodedFrame>;
}

/**
 * Decoded frames held at once (being decoded, or decoded and waiting for the socket) by one
 * transcoding: 32 MiB. Several frames in flight keep the pool's workers busy (a 512 x 512 CT frame
 * is 512 KiB, so 4 of them); a whole-slide frame of 4096 x 4096 RGB (48 MiB) goes alone.
 */
export const DECODE_AHEAD_BYTES = 32 * 1024 * 1024;

/** What decoding the frames of an encapsulated instance needs, from its record. */
export interface DecodePlan extends DecodedLayout {
  decoder: FrameDecoder;
  ahead: number;
  /** Each fragment's value offset: its frame (0-based) and where its bytes go in that frame's codestream. */
  fragments: Map<number, { frame: number; at: number; length: number }>;
  /** Encoded bytes of each frame (its fragments' lengths summed). */
  encodedLength: number[];
}

export function decodePlan(scanned: ScannedInstance, decoder: FrameDecoder, ahead: number | undefined): DecodePlan {
  const layout = decodedLayout(scanned.transferSyntaxUID, scanned.metadata);
  const frames = scanned.layout.frames;
  if (frames.length !== layout.frames) {
    throw new VaultError(
      'NOT_ACCEPTABLE',
      frames.length === 0
        ? `the ${layout.frames} frames of its Pixel Data cannot be located among its fragments (a wrong or missing offset table): retrieve it as stored (transfer-syntax=*)`
        : `its Pixel Data has ${frames.length} frames, its Number of Frames says ${layout.frames}`,
    );
  }
  const fragments = new Map<number, { frame: number; at: number; length: number }>();
  const encodedLength = frames.map((ranges, frame) => {
    let at = 0;
    for (const r of ranges) {
      fragments.set(r.offset, { frame, at, length: r.length });
      at += r.length;
    }
    return at;
  });
  const fit = Math.floor(DECODE_AHEAD_BYTES / Math.max(1, layout.frameLength));
  return { ...layout, decoder, ahead: ahead ?? Math.min(4, Math.max(1, fit)), fragments, encodedLength };
}
