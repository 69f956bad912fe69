// Reading DICOM JSON (PS3.18 F.2) answers of QIDO-RS: the first value of a tag, as text.

export type DicomJson = Record<string, { vr?: string; Value?: unknown[] } | undefined>;

export function first(item: DicomJson, tag: string): string | undefined {
  const v = item[tag]?.Value?.[0];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'object') {
    const pn = v as { Alphabetic?: string };
    return pn.Alphabetic;
  }
  return String(v);
}

export function all(item: DicomJson, tag: string): string[] {
  return (item[tag]?.Value ?? []).map(String);
}

/** 20241231 as 2024-12-31; anything else as it is. */
export function dicomDate(d: string | undefined): string | undefined {
  return d !== undefined && /^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}` : d;
}

/** A person name as people write it: Doe^Jane as "Jane Doe". */
export function personName(pn: string | undefined): string | undefined {
  if (pn === undefined) return undefined;
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = pn.split('^');
  return [prefix, given, middle, family, suffix].filter((p) => p !== '').join(' ');
}
