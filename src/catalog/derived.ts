// Attributes the catalog derives from the instances of a study: the study and series rows merge
// their instances' attributes (latest wins, empty never erases), and a few values are read out
// for the indexed columns.

import type { DicomJsonDataset, DicomJsonElement, Tag } from '../dicom/model.ts';
import { TAGS, attributesAt } from '../dicom/attributes.ts';

/** Attributes computed by the catalog; ignored when an instance carries them. */
const COMPUTED_STUDY_TAGS = new Set<Tag>([TAGS.ModalitiesInStudy, TAGS.SOPClassesInStudy, TAGS.NumberOfStudyRelatedSeries, TAGS.NumberOfStudyRelatedInstances]);
const COMPUTED_SERIES_TAGS = new Set<Tag>([TAGS.NumberOfSeriesRelatedInstances]);

// Specific Character Set and the timezone offset qualify the other values at every level.
export const STUDY_PICK: readonly Tag[] = [
  ...[...attributesAt('patient'), ...attributesAt('study')].map((d) => d.tag).filter((t) => !COMPUTED_STUDY_TAGS.has(t)),
  TAGS.SpecificCharacterSet,
];
export const SERIES_PICK: readonly Tag[] = [
  ...attributesAt('series')
    .map((d) => d.tag)
    .filter((t) => !COMPUTED_SERIES_TAGS.has(t)),
  TAGS.SpecificCharacterSet,
  TAGS.TimezoneOffsetFromUTC,
];

function hasValue(el: DicomJsonElement): boolean {
  return (el.Value !== undefined && el.Value.length > 0) || el.BulkDataURI !== undefined || el.InlineBinary !== undefined;
}

/**
 * Latest wins, but an empty element never erases a value an earlier instance gave: type 2
 * attributes are often sent empty by one modality and filled by another.
 */
export function mergePicked(target: DicomJsonDataset, source: DicomJsonDataset, pick: readonly Tag[]): void {
  for (const tag of pick) {
    const el = source[tag];
    if (el === undefined) continue;
    if (hasValue(el) || target[tag] === undefined) target[tag] = el;
  }
}

function firstValue(ds: DicomJsonDataset, tag: Tag): unknown {
  return ds[tag]?.Value?.[0];
}

export function firstString(ds: DicomJsonDataset, tag: Tag): string | null {
  const v = firstValue(ds, tag);
  if (typeof v === 'string') return v.trim() === '' ? null : v.trim();
  if (typeof v === 'number') return String(v);
  return null;
}

export function firstInteger(ds: DicomJsonDataset, tag: Tag): number | null {
  const v = firstValue(ds, tag);
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  return Number.isSafeInteger(n) ? n : null;
}

export function withoutNulls(ds: Record<Tag, DicomJsonElement | null>): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const [tag, el] of Object.entries(ds)) if (el !== null) out[tag] = el;
  return out;
}

export function sortedDataset(ds: DicomJsonDataset): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const tag of Object.keys(ds).sort()) out[tag] = ds[tag]!;
  return out;
}
