// From grants to what the catalog shows: the clauses of a CatalogScope for one kind of request.
// A grant names patients (the Patient IDs of the patient's account), optionally studies, series
// and modalities, the data types and the actions it allows; a request needs one action and one
// kind of data. Pure: tested on its own (test/unit/access/scope-of.test.ts).
import type { InstanceKind, PatientRef, ScopeClause } from '../catalog/scope.ts';
import type { DataType, EnforcedGrant, GrantAction } from '../grants/model.ts';
import type { AccessAction, RetrievedData } from './policy.ts';

/** The grant action a request needs: searching, viewing (metadata, frames, rendered, bulk data: what a viewer fetches), downloading whole instances. */
export function neededAction(action: AccessAction, data: RetrievedData | undefined): GrantAction {
  if (action === 'search') return 'search';
  return data === 'dicom' ? 'download' : 'view';
}

/**
 * The instance kinds a grant's data types open for a kind of request. Metadata and searches show
 * image metadata under both 'images' and 'metadata'; pixel and bulk data (frames, rendered,
 * bulk, whole instances) need 'images'. Objects that are neither images nor reports (presentation
 * states, raw data) travel with the images.
 */
export function kindsFor(dataTypes: readonly DataType[], data: RetrievedData | undefined): { kinds: InstanceKind[]; keyImages: boolean } {
  const metadataOnly = data === undefined || data === 'metadata' || data === 'receipt';
  const kinds = new Set<InstanceKind>();
  if (dataTypes.includes('images') || (metadataOnly && dataTypes.includes('metadata'))) {
    kinds.add('image');
    kinds.add('other');
  }
  if (dataTypes.includes('reports')) kinds.add('report');
  const keyImages = dataTypes.includes('key-images');
  if (keyImages) kinds.add('key-object');
  return { kinds: [...kinds], keyImages };
}

/** The clause of one grant for a request needing `action` on `data`; undefined when the grant does not allow it. */
export function clauseOf(
  grant: Pick<EnforcedGrant, 'patientIds' | 'scope' | 'dataTypes' | 'actions'>,
  action: GrantAction,
  data: RetrievedData | undefined,
): ScopeClause | undefined {
  if (!grant.actions.includes(action)) return undefined;
  const { kinds, keyImages } = kindsFor(grant.dataTypes, data);
  if (kinds.length === 0 && !keyImages) return undefined;
  const clause: { -readonly [K in keyof ScopeClause]: ScopeClause[K] } = { patients: grant.patientIds, kinds };
  if (keyImages) clause.referencedByKeyObjects = true;
  const s = grant.scope;
  const studies = new Set([...(s.studies ?? []), ...(s.series ?? []).map((x) => x.study)]);
  if (studies.size > 0) clause.studies = [...studies];
  if (s.series !== undefined && s.series.length > 0) clause.series = s.series.map((x) => x.series);
  if (s.modalities !== undefined && s.modalities.length > 0) clause.modalities = s.modalities;
  return clause;
}

/** A patient's own studies: everything of their Patient IDs. */
export function ownClause(patientIds: readonly PatientRef[]): ScopeClause {
  return { patients: patientIds };
}
