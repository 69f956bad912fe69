// Storage failure statuses (PS3.4 Annex B.2.3 and GG.4): what a C-STORE response's Status and a
// STOW-RS FailedSOPSequence's FailureReason (0008,1197) say about an instance that was not stored.
export const STORE_FAILURE = {
  /** Processing failure: the node could not complete the operation (a store or catalog fault). */
  PROCESSING_FAILURE: 0x0110,
  /** The SOP Instance UID is already stored with other content in another study. */
  DUPLICATE_SOP_INSTANCE: 0x0111,
  /** Refused: out of resources (a limit, or the block store unavailable). */
  OUT_OF_RESOURCES: 0xa700,
  /** Error: the data set does not match the SOP class, or the study the request names. */
  DOES_NOT_MATCH: 0xa900,
  /** Error: cannot understand (not DICOM, malformed, truncated). */
  CANNOT_UNDERSTAND: 0xc000,
} as const;

export type StoreFailureStatus = (typeof STORE_FAILURE)[keyof typeof STORE_FAILURE];
