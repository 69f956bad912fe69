// What is anchored for a study version: a salted commitment to its root CID, not the root itself.
//
//   leaf data = SHA-256("dicom-vault/anchor-commitment/v1" || 0x00 || salt (32 bytes) || root CID bytes)
//
// The salt is the study's (src/format/keys.ts, beside its data key). While it exists, the receipt
// carries it with the CID, so anyone holding the receipt can check that the commitment is the
// root's. Once the study is erased the salt is destroyed: the commitment in the batch (and the
// hashes on the paths of other studies' receipts) can no longer be linked to the root or the
// study by anyone who did not keep that receipt (EDPB Guidelines 02/2025 on blockchains: salted
// commitments, erasure designed in).
import { createHash } from 'node:crypto';
import type { CID } from 'multiformats/cid';

export const ANCHOR_COMMITMENT_DOMAIN = 'dicom-vault/anchor-commitment/v1';
/** Bytes of a study's anchor salt. */
export const ANCHOR_SALT_SIZE = 32;

export function anchorCommitment(salt: Uint8Array, root: CID): Uint8Array {
  return createHash('sha256').update(ANCHOR_COMMITMENT_DOMAIN).update(Uint8Array.of(0)).update(salt).update(root.bytes).digest();
}

/** A study's anchor salt, or undefined when the study has none (erased, or never stored here). */
export type SaltLookup = (studyInstanceUID: string) => Uint8Array | undefined;
