// What part of the catalog a caller may see: the catalog's reads take a CatalogScope and return only
// what it covers (src/access decides the scope; routes pass it down and never decide themselves).
// A scope is a list of clauses, any of which makes an instance visible; within a clause every
// given field must match. An empty list of clauses shows nothing; no scope at all shows everything.

import type { InstanceKind } from '../dicom/sop-classes.ts';

/** A patient as the catalog knows them: Patient ID, and Issuer of Patient ID when it is recorded. */
export interface PatientRef {
  id: string;
  /** null: the issuer does not matter (matches any). */
  issuer: string | null;
}

/** What kind of object an instance is, by its SOP Class (defined in src/dicom/sop-classes.ts). */
export type { InstanceKind } from '../dicom/sop-classes.ts';

export interface ScopeClause {
  /** Studies of these patients. */
  patients?: readonly PatientRef[];
  /** These studies. */
  studies?: readonly string[];
  /** These series (SeriesInstanceUIDs). */
  series?: readonly string[];
  /** Series of these modalities (e.g. CT, MR, SR). */
  modalities?: readonly string[];
  /**
   * Instances of these kinds, or (`referencedByKeyObjects`) instances a key object selection of
   * their study references (its Current Requested Procedure Evidence Sequence), whatever their
   * kind. Both absent: every instance the other fields allow.
   */
  kinds?: readonly InstanceKind[];
  referencedByKeyObjects?: boolean;
}

export interface CatalogScope {
  clauses: readonly ScopeClause[];
}
