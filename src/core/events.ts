// What the node's parts report as it happens, for whoever listens (metrics, tests): typed events on
// Node's diagnostics channels rather than counters imported as singletons deep in request code. A
// channel with no subscriber costs one property read at the publishing site.
import { channel } from 'node:diagnostics_channel';

/** A stored block was read and verified against its CID (and, for chunks, its GCM tag). */
export interface BlockVerifiedEvent {
  bytes: number;
}

/** A stored block failed verification or could not be found where a version needs it. */
export interface BlockRejectedEvent {
  cid: string;
  reason: 'corrupt' | 'missing';
}

/** A compressed frame could not be decoded. */
export interface DecodeFailedEvent {
  transferSyntaxUID: string;
  reason: string;
}

export const blockVerified = channel('dicom-vault:block-verified');
export const blockRejected = channel('dicom-vault:block-rejected');
export const decodeFailed = channel('dicom-vault:decode-failed');

export function publishBlockVerified(bytes: number): void {
  if (blockVerified.hasSubscribers) blockVerified.publish({ bytes } satisfies BlockVerifiedEvent);
}

export function publishBlockRejected(cid: { toString(): string }, reason: BlockRejectedEvent['reason']): void {
  if (blockRejected.hasSubscribers) blockRejected.publish({ cid: cid.toString(), reason } satisfies BlockRejectedEvent);
}

export function publishDecodeFailed(transferSyntaxUID: string, reason: string): void {
  if (decodeFailed.hasSubscribers) decodeFailed.publish({ transferSyntaxUID, reason } satisfies DecodeFailedEvent);
}
