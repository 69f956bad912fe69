// Who is calling: every request through the access seam, every C-STORE, every command that acts for
// someone, is done by a Principal. Roles say what kind of caller it is (src/access decides what each
// may do):
//   ingest   a PACS or a modality: store only
//   staff    the home institution's clinicians: what the operator's policy allows (default: all)
//   grantee  anyone outside: only what a patient granted them
//   patient  their own studies, and their grants
//   admin    node operations; no image data unless also staff
export const ROLES = ['ingest', 'staff', 'grantee', 'patient', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(v: string): v is Role {
  return (ROLES as readonly string[]).includes(v);
}

export interface Principal {
  /**
   * Stable id, what grants and the audit log name: `user:<name>` (a local account),
   * `oidc:<issuer>#<subject>`, `patient:<account>`, `link:<grant id>` (a share link),
   * `ae:<AE title>` (a DIMSE peer), `anonymous` (open mode).
   */
  id: string;
  roles: readonly Role[];
  /** How the caller proved it: a local bearer token, an OpenID token, a share-link token, a patient session, a DIMSE association, nothing (open mode). */
  method: 'token' | 'oidc' | 'share-link' | 'patient-session' | 'dimse' | 'none';
  /** For display in the audit log and the patient's page (a user name, a doctor's name from the ID token). */
  name?: string;
  /** Patients: their account. */
  patientAccount?: string;
  /** Share links: the one grant the token is bound to. */
  grantId?: string;
}

export const ANONYMOUS: Principal = { id: 'anonymous', roles: ['ingest', 'staff', 'admin'], method: 'none' };
