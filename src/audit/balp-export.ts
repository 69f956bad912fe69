// The tamper-evident log's entries as BALP AuditEvents (balp.ts maps one access): what the
// export routes and `dicom-vault audit export --balp` hand an auditor's FHIR tooling.
//
// Which entries become AuditEvents: an `access` (with how it ended, from the `outcome` entry that
// points at it, or from the access itself when its response was folded into it), a `refused` request, and a `version` (a study stored: STOW, C-STORE or a
// command; a successful STOW is told by its versions, a failed one by its access; a STOW that
// stored nothing new makes no version and is not exported). The log's other entries (grants, enrollments, reads of the log, summaries) have no
// BALP pattern of their own and stay in the log and its own API. An entry whose patient's key was
// destroyed (erased) no longer opens and is left out.
import type { AccessAction, AccessResource, AuditEvent, RetrievedData } from '../access/policy.ts';
import { toBalp } from './balp.ts';
import type { AuditRecord } from './entry.ts';
import type { AuditPatient, AuditSource } from './event-kind.ts';

type Json = Record<string, unknown>;

/** One opened entry of the log: its index and time, and its details (undefined when they no longer open). */
export interface OpenedEntry {
  index: number;
  time: number;
  record: AuditRecord | undefined;
}

const ACTIONS = new Set<string>(['search', 'retrieve', 'store']);

function resourceOf(what: AuditRecord['what'], action: AccessAction): AccessResource {
  const level = what.instance !== undefined ? 'instance' : what.series !== undefined ? 'series' : what.study !== undefined ? 'study' : 'studies';
  return {
    action,
    level,
    ...(what.study !== undefined ? { studyInstanceUID: what.study } : {}),
    ...(what.series !== undefined ? { seriesInstanceUID: what.series } : {}),
    ...(what.instance !== undefined ? { sopInstanceUID: what.instance } : {}),
    ...(what.dataType !== undefined ? { dataType: what.dataType as RetrievedData } : {}),
  };
}

/** An entry as the access seam's event, completed by its outcome; undefined for entries BALP has no pattern for. */
export function eventOfEntry(e: OpenedEntry, outcome: AuditRecord | undefined): AuditEvent | undefined {
  const r = e.record;
  if (r === undefined) return undefined;
  const action = r.kind === 'version' ? 'store' : r.what.action;
  if (!ACTIONS.has(action) || (r.kind !== 'access' && r.kind !== 'refused' && r.kind !== 'version')) return undefined;
  const who = r.who;
  // An access folded with its response (src/shell/admitted.ts) carries its own status.
  const status = r.kind === 'refused' ? (r.what.status ?? 403) : (outcome?.what.status ?? r.what.status ?? 200);
  // A STOW that stored is told by the versions it made (one Create per study, which names the
  // study and its patient; the request URL often names neither); one that failed, by its access.
  if (r.kind === 'access' && action === 'store' && status < 400 && (outcome?.what.complete ?? true)) return undefined;
  const why = r.why;
  return {
    time: new Date(e.time).toISOString(),
    principal: {
      id: who.id,
      roles: [...(who.roles ?? [])] as AuditEvent['principal']['roles'],
      method: (who.method ?? 'none') as AuditEvent['principal']['method'],
      ...(who.name !== undefined ? { name: who.name } : {}),
    },
    resource: resourceOf(r.what, action as AccessAction),
    method: r.where?.method ?? (r.kind === 'version' ? (r.what.source === 'dimse' ? 'C-STORE' : r.what.source === 'cli' ? 'import' : 'POST') : 'GET'),
    url: r.where?.url ?? '',
    status,
    // An access whose outcome is not (yet) in the log was let through: it is reported as served.
    complete: r.kind === 'refused' ? false : (outcome?.what.complete ?? true),
    remoteAddress: r.where?.address ?? '',
    ...(why !== undefined ? (r.kind === 'refused' ? { reason: why, basis: why } : { basis: why }) : {}),
  };
}

/**
 * BALP AuditEvents of `entries` (any order), each access completed by its outcome, found among
 * `entries` or else by `outcomeOf` (the entry that points at it, when the caller can look it up).
 */
export function balpOfEntries(
  entries: readonly OpenedEntry[],
  source: AuditSource,
  options: { patientOf?: (study: string) => AuditPatient | undefined; outcomeOf?: (accessIndex: number) => AuditRecord | undefined } = {},
): Json[] {
  const outcomes = new Map<number, AuditRecord>();
  for (const e of entries) if (e.record?.kind === 'outcome' && e.record.ref !== undefined) outcomes.set(e.record.ref, e.record);
  const out: Json[] = [];
  for (const e of entries) {
    const outcome = e.record?.kind === 'access' ? (outcomes.get(e.index) ?? options.outcomeOf?.(e.index)) : undefined;
    const event = eventOfEntry(e, outcome);
    if (event === undefined) continue;
    const study = event.resource.studyInstanceUID;
    const patient = study === undefined ? undefined : options.patientOf?.(study);
    out.push(toBalp(event, source, patient));
  }
  return out;
}

/**
 * The AuditEvents of the first `count` of `entries` (in log order); the entries after them serve
 * only to find the outcomes of accesses near the end.
 */
export function toBalpEntries(
  entries: readonly OpenedEntry[],
  count: number,
  source: AuditSource,
  patientOf?: (study: string) => AuditPatient | undefined,
): Json[] {
  const outcomes = new Map<number, AuditRecord>();
  for (const e of entries) if (e.record?.kind === 'outcome' && e.record.ref !== undefined) outcomes.set(e.record.ref, e.record);
  return balpOfEntries(entries.slice(0, count), source, { outcomeOf: (i) => outcomes.get(i), ...(patientOf !== undefined ? { patientOf } : {}) });
}
