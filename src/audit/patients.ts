// The patient of a study, for audit records: an access names a study (its URL), an auditor asks
// about a patient. Looked up in the catalog when a message is built (off the request path), with
// a small cache, since a viewer's hundreds of frame requests name the same study.
import type { Catalog } from '../catalog/catalog.ts';
import type { DicomJsonDataset } from '../dicom/model.ts';
import type { AuditPatient } from './event-kind.ts';

const CACHE_SIZE = 1_024;

function firstString(ds: DicomJsonDataset, tag: string): string | undefined {
  const v = ds[tag]?.Value?.[0];
  if (typeof v === 'string') return v.trim() === '' ? undefined : v.trim();
  // PN in DICOM JSON: { Alphabetic, Ideographic, Phonetic }.
  if (v !== null && typeof v === 'object' && 'Alphabetic' in v && typeof v.Alphabetic === 'string') return v.Alphabetic;
  return undefined;
}

/** A lookup from a Study Instance UID to its patient (ID, issuer, name), or undefined for a study the catalog does not hold. */
export function catalogPatients(catalog: Pick<Catalog, 'queryStudies'>): (studyInstanceUID: string) => AuditPatient | undefined {
  const cache = new Map<string, AuditPatient | undefined>();
  return (study) => {
    if (cache.has(study)) return cache.get(study);
    const record = catalog.queryStudies({ filters: [], study, limit: 1, offset: 0 })[0];
    let patient: AuditPatient | undefined;
    if (record !== undefined) {
      const id = firstString(record.attributes, '00100020');
      const issuer = firstString(record.attributes, '00100021') ?? null;
      const name = firstString(record.attributes, '00100010');
      if (id !== undefined) patient = { id, issuer, ...(name !== undefined ? { name } : {}) };
    }
    // Unknown studies are not cached: the study may arrive by the next request.
    if (record !== undefined) {
      if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value!);
      cache.set(study, patient);
    }
    return patient;
  };
}
