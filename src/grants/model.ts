// A grant: what a patient lets one grantee see, for how long. The patient signs a canonical
// statement (RFC 8785 JSON canonicalization) with a key only they hold (a passkey, or a key file),
// so the node can neither create nor widen a grant: a grant whose signature does not verify under
// the patient's registered key is never enforced. Revocation needs no signature (it only narrows).
import type { PatientRef } from '../catalog/scope.ts';

export const GRANT_VERSION = 'dicom-vault-grant/1';

/** What of the imaging a grant covers. images: pixel data and the metadata with it; metadata: the metadata only (no pixel or bulk data); reports: SR, encapsulated PDF and CDA; key-images: key object selections and the images they reference. */
export const DATA_TYPES = ['images', 'metadata', 'reports', 'key-images'] as const;
export type DataType = (typeof DATA_TYPES)[number];

/** search: find the studies (QIDO-RS); view: metadata, frames, rendered images (a viewer); download: whole instances (WADO-RS instances, bulk data). */
export const GRANT_ACTIONS = ['search', 'view', 'download'] as const;
export type GrantAction = (typeof GRANT_ACTIONS)[number];

/** Who may use the grant: a local account (`user:<name>`), an OpenID subject (`oidc:<issuer>#<subject>`), or whoever holds its share link. */
export type Grantee = { kind: 'user'; id: string } | { kind: 'oidc'; issuer: string; subject: string } | { kind: 'link' };

/** The statement the patient signs; its canonical JSON is what the signature covers. */
export interface GrantStatement {
  v: typeof GRANT_VERSION;
  /** A random UUID. */
  id: string;
  /** The node it is for (node.json's nodeId): a grant signed for one node means nothing on another. */
  node: string;
  /** The patient's account on the node. */
  patient: string;
  /** The Patient IDs it covers: those of the patient's account when it was signed. */
  patientIds: PatientRef[];
  grantee: Grantee;
  /** Absent fields: no restriction. studies: these studies; series: these series (of the study given); modalities: series of these modalities. */
  scope: { studies?: string[]; series?: Array<{ study: string; series: string }>; modalities?: string[] };
  dataTypes: DataType[];
  actions: GrantAction[];
  /** ISO 8601, to the second. */
  notBefore: string;
  /** ISO 8601, or null: until revoked (only when the patient chose that explicitly). */
  notAfter: string | null;
  issuedAt: string;
}

/** How the patient signed: Ed25519 over the canonical statement (a key file), or a WebAuthn assertion whose challenge is SHA-256 of it (a passkey). */
export type GrantProof =
  | { kind: 'ed25519'; keyId: string; signature: string }
  | { kind: 'webauthn'; credentialId: string; authenticatorData: string; clientDataJSON: string; signature: string };

export interface SignedGrant {
  statement: GrantStatement;
  proof: GrantProof;
}

export interface GrantRecord extends SignedGrant {
  revokedAt: string | null;
  /** Principal id of who revoked it (the patient, or an operator). */
  revokedBy: string | null;
}

/** A grant the access seam enforces: verified, in force, in the terms the catalog understands. */
export interface EnforcedGrant {
  id: string;
  patientIds: PatientRef[];
  scope: GrantStatement['scope'];
  dataTypes: readonly DataType[];
  actions: readonly GrantAction[];
  /** When it ends (a running stream under it is cut then); null: until revoked. */
  notAfter: Date | null;
}

/** What the access seam needs of the grants: those in force for a grantee now, and word of revocations. */
export interface GrantsForAccess {
  /** Verified, not revoked, inside their window at `now`; a grant whose signature fails is left out (and logged). */
  activeFor(principalId: string, now: Date): EnforcedGrant[];
  /** The grant a share-link token is bound to, if it is in force. */
  activeById(grantId: string, now: Date): EnforcedGrant | undefined;
  /** Called at once when a grant is revoked (in this process); returns an unsubscribe. */
  onRevoked(listener: (grantId: string) => void): () => void;
}
