// The audit log wired into the node (src/audit is the log itself): what each part records, under
// which patient's key, and how heads reach the anchor batches.
//
//   access seam (app.ts)     an allowed request is recorded, on disk, before it is served
//                            (admit); how it ended (status, bytes, complete) and every refusal
//                            (failed identity with its reason, rights refused) when it closes
//   study versions           AuditedStudyWriter: each new version with its source (stow, dimse, cli)
//   grants, accounts         proxies of GrantService and IdentityStore: grants added, revoked,
//                            share links made and exchanged, enrollments, keys, accounts
//   anchoring                anchorHandOver: signed heads join the catalog's queue of study roots
//
// Who acts below the HTTP app (a STOW's or a C-STORE's caller) travels in auditContext; a command
// run on the data directory is `cli:<user>`.
import { AsyncLocalStorage } from 'node:async_hooks';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { AccessResource, AuditEvent, AuditSink, Principal } from '../access/policy.ts';
import type { AuditRecord } from '../audit/entry.ts';
import { AUDIT_SIGNING_KEY_FILE, HeadSigner } from '../audit/head.ts';
import { AuditLog, type AuditLogOptions, DEFAULT_MAX_BATCH, type OpenAppend } from '../audit/log.ts';
import { AUDIT_DB_FILE, type AuditLogStore, SqliteAuditLogStore } from '../audit/store.ts';
import { ThreadAuditWriter } from '../audit/writer.ts';
import { AUDIT_KEYS_DB_FILE, type AuditKeyStore, NODE_SUBJECT, SqliteAuditKeyStore, type SubjectRef } from '../audit/subject-keys.ts';
import type { Catalog } from '../catalog/catalog.ts';
import type { GrantRecord } from '../grants/model.ts';
import type { GrantService } from '../grants/service.ts';
import { granteePrincipal } from '../grants/statement.ts';
import type { IdentityStore } from '../identity/store.ts';
import { StudyWriter } from '../../ingest/study.ts';
import type { AnchorServiceDeps } from '../../anchor/service.ts';
import { AUDIT_ANCHOR_STUDY } from '../format/keys.ts';

export interface NodeAudit {
  log: AuditLog;
  store: AuditLogStore;
  keys: AuditKeyStore;
  /** The subject whose key seals entries about this patient (created on first use). */
  subjectOfRefs(refs: readonly SubjectRef[]): string;
  /** Flushes, signs a last head, closes the stores. */
  close(): void;
}

/** `storePragmas`: extra PRAGMAs for audit.db (tests bound it with max_page_count to meet a full disk). */
export function openNodeAudit(
  dataDir: string,
  masterKey: Buffer,
  origin: string,
  options: AuditLogOptions & { storePragmas?: readonly string[]; sync?: 'full' | 'normal'; writerThread?: boolean } = {},
): NodeAudit {
  const keys = SqliteAuditKeyStore.open(join(dataDir, AUDIT_KEYS_DB_FILE), masterKey);
  let store: AuditLogStore;
  let signer: HeadSigner;
  let writer: ThreadAuditWriter | undefined;
  try {
    // normal (WAL): a commit is in the OS before the access is served, which survives the node
    // being killed; full also fsyncs it, which survives power loss, at one disk sync per commit.
    const pragmas = [...((options.sync ?? 'normal') === 'normal' ? ['synchronous = NORMAL'] : []), ...(options.storePragmas ?? [])];
    store = SqliteAuditLogStore.open(join(dataDir, AUDIT_DB_FILE), { pragmas });
    signer = HeadSigner.loadOrCreate(join(dataDir, AUDIT_SIGNING_KEY_FILE));
    // With --audit-writer thread, entries are sealed and committed by a thread of their own
    // (src/audit/writer.ts) while this one reads (proofs, queries, heads) on its own connection.
    // Not the default: on this project's busy 2-core machine the thread's two wake-ups per request
    // cost more than the commit it takes off this thread (README, Audit log).
    if (options.writerThread === true)
      writer = new ThreadAuditWriter({ path: join(dataDir, AUDIT_DB_FILE), pragmas, maxBatch: options.maxBatch ?? DEFAULT_MAX_BATCH });
  } catch (err) {
    keys.close();
    throw err;
  }
  const log = new AuditLog({ store, keys, signer, origin, ...(writer !== undefined ? { writer } : {}) }, options);
  return {
    log,
    store,
    keys,
    subjectOfRefs: (refs) => (refs.length === 0 ? NODE_SUBJECT : keys.subjectFor(refs[0]!)),
    close() {
      try {
        log.close();
      } finally {
        writer?.close();
        store.close();
        keys.close();
      }
    },
  };
}

export interface AuditContext {
  who: AuditRecord['who'];
  source?: 'stow' | 'dimse';
  address?: string;
}

/** Who acts, for what is recorded below the HTTP app. */
export const auditContext = new AsyncLocalStorage<AuditContext>();

function cliWho(): AuditRecord['who'] {
  let name = 'unknown';
  try {
    name = userInfo().username;
  } catch {
    // no passwd entry (a container's uid): the id says so
  }
  return { id: `cli:${name}`, method: 'none' };
}

export function whoOf(p: Principal): AuditRecord['who'] {
  return {
    id: p.id,
    roles: [...p.roles],
    method: p.method,
    ...(p.name !== undefined ? { name: p.name } : {}),
    ...(p.grantId !== undefined ? { grant: p.grantId } : {}),
  };
}

const now = (): AuditRecord['who'] => auditContext.getStore()?.who ?? cliWho();

/** A study's Patient ID and issuer, from the catalog, remembered for the process (a study's patient does not change). */
export class StudyPatients {
  readonly #catalog: Pick<Catalog, 'queryStudies'>;
  readonly #known = new Map<string, SubjectRef | null>();

  constructor(catalog: Pick<Catalog, 'queryStudies'>) {
    this.#catalog = catalog;
  }

  of(study: string): SubjectRef | undefined {
    const known = this.#known.get(study);
    if (known !== undefined) return known ?? undefined;
    const rec = this.#catalog.queryStudies({ filters: [], study, limit: 1, offset: 0 })[0];
    const value = (tag: string): string | undefined => {
      const v = (rec?.attributes[tag] as { Value?: unknown[] } | undefined)?.Value?.[0];
      return typeof v === 'string' && v !== '' ? v : undefined;
    };
    const id = value('00100020');
    const ref = id === undefined ? null : { id, issuer: value('00100021') ?? null };
    // Only what exists is remembered: a study stored later gets its patient then.
    if (rec !== undefined) {
      if (this.#known.size >= 10_000) this.#known.delete(this.#known.keys().next().value!);
      this.#known.set(study, ref);
    }
    return ref ?? undefined;
  }
}

/** The study writer that records each new version, with its source and who stored it. */
export class AuditedStudyWriter extends StudyWriter {
  readonly #audit: NodeAudit;
  readonly #patients: StudyPatients;

  constructor(deps: ConstructorParameters<typeof StudyWriter>[0], audit: NodeAudit, patients: StudyPatients) {
    super(deps);
    this.#audit = audit;
    this.#patients = patients;
  }

  override async commit(...args: Parameters<StudyWriter['commit']>): ReturnType<StudyWriter['commit']> {
    const result = await super.commit(...args);
    const v = result.version;
    if (v !== null) {
      const ctx = auditContext.getStore();
      const ref = this.#patients.of(v.studyInstanceUID);
      this.#audit.log.note(
        {
          kind: 'version',
          who: ctx?.who ?? cliWho(),
          what: { action: 'store', study: v.studyInstanceUID, version: v.version, root: v.root, instances: v.instanceCount, source: ctx?.source ?? 'cli' },
          ...(ctx?.address !== undefined ? { where: { address: ctx.address } } : {}),
        },
        ref === undefined ? NODE_SUBJECT : this.#audit.keys.subjectFor(ref),
      );
    }
    return result;
  }
}

type After = (args: readonly unknown[], result: unknown) => void;

/**
 * The object with some methods wrapped so that each call is recorded after it returned (or its
 * promise resolved). A Proxy rather than a subclass: GrantService and the identity store are made
 * in vault.ts by code this part does not own, and their private fields stay theirs.
 */
function recording<T extends object>(target: T, after: Record<string, After>): T {
  return new Proxy(target, {
    get(t, prop) {
      const value = Reflect.get(t, prop, t) as unknown;
      if (typeof value !== 'function') return value;
      const record = typeof prop === 'string' ? after[prop] : undefined;
      if (record === undefined) return value.bind(t);
      return (...args: unknown[]) => {
        const result = (value as (...a: unknown[]) => unknown).apply(t, args);
        if (result instanceof Promise)
          return result.then((r: unknown) => {
            record(args, r);
            return r;
          });
        record(args, result);
        return result;
      };
    },
  });
}

/** The identity store, recording accounts, enrollments and patients' keys. */
export function auditedIdentity(identity: IdentityStore, audit: NodeAudit): IdentityStore {
  const ofAccount = (account: string) => audit.subjectOfRefs(identity.patientIds(account));
  const patient = (account: string): AuditRecord['who'] => ({ id: `patient:${account}`, roles: ['patient'] });
  return recording(identity, {
    addUser: ([name, roles]) =>
      audit.log.note({ kind: 'admin', who: now(), what: { action: `user added (${(roles as string[]).join(', ')})` }, why: `account ${name as string}` }),
    revokeUser: ([name], changed) => {
      if (changed === true) audit.log.note({ kind: 'admin', who: now(), what: { action: 'user revoked' }, why: `account ${name as string}` });
    },
    createPatient: ([refs], account) =>
      audit.log.note(
        { kind: 'admin', who: now(), what: { action: 'patient account created' }, why: `account ${account as string}` },
        audit.subjectOfRefs(refs as SubjectRef[]),
      ),
    createEnrollment: ([account]) =>
      audit.log.note(
        { kind: 'admin', who: now(), what: { action: 'enrollment code issued' }, why: `account ${account as string}` },
        ofAccount(account as string),
      ),
    consumeEnrollment: (_args, account) => {
      if (typeof account === 'string') audit.log.note({ kind: 'enroll', who: patient(account), what: { action: 'enrollment code used' } }, ofAccount(account));
    },
    addPatientKey: ([account, key]) => {
      const k = key as { kind: string; keyId: string };
      audit.log.note(
        { kind: 'enroll', who: patient(account as string), what: { action: `${k.kind} key registered` }, why: k.keyId },
        ofAccount(account as string),
      );
    },
  });
}

/** The grant service, recording grants added and revoked, share links made and exchanged. */
export function auditedGrants(grants: GrantService, audit: NodeAudit): GrantService {
  const subjectOfGrant = (id: string): string => {
    const r = grants.get(id, new Date());
    return r === undefined ? NODE_SUBJECT : audit.subjectOfRefs(r.statement.patientIds);
  };
  return recording(grants, {
    add: (_args, record) => {
      const s = (record as GrantRecord).statement;
      audit.log.note(
        {
          kind: 'grant',
          who: { id: `patient:${s.patient}`, roles: ['patient'] },
          what: { action: 'grant added', grant: s.id },
          why: `to ${granteePrincipal(s.grantee, s.id)} until ${s.notAfter ?? 'revoked'}`,
        },
        audit.subjectOfRefs(s.patientIds),
      );
    },
    revoke: ([id, by], changed) => {
      if (changed === true)
        audit.log.note({ kind: 'revoke', who: { id: by as string }, what: { action: 'grant revoked', grant: id as string } }, subjectOfGrant(id as string));
    },
    createShareCode: ([account, id]) =>
      audit.log.note(
        { kind: 'share-link', who: { id: `patient:${account as string}`, roles: ['patient'] }, what: { action: 'share link made', grant: id as string } },
        subjectOfGrant(id as string),
      ),
    exchangeShareCode: (_args, result) => {
      const r = result as { grantId: string } | string;
      if (typeof r === 'string') audit.log.note({ kind: 'refused', who: { id: 'unidentified' }, what: { action: 'share link exchange' }, why: r });
      else
        audit.log.note(
          {
            kind: 'token-exchange',
            who: { id: `link:${r.grantId}`, roles: ['grantee'], method: 'share-link', grant: r.grantId },
            what: { action: 'share link exchanged', grant: r.grantId },
          },
          subjectOfGrant(r.grantId),
        );
    },
  });
}

export interface AccessAuditDeps {
  audit: NodeAudit;
  patients: StudyPatients;
  identity: Pick<IdentityStore, 'patientIds'>;
  grants?: Pick<GrantService, 'get'>;
}

/**
 * The access seam's sink: `admit` records an allowed request before it is served and resolves once
 * that is on disk (it rejects with AUDIT_UNAVAILABLE when the log cannot be written: the app then
 * answers 503); `respond` folds a response produced before that entry was written into it (status
 * and body length: one entry, not two); `record` adds how it ended, or the refusal, without
 * waiting (nothing for a folded response that went out whole with its status).
 */
export function accessAuditSink(deps: AccessAuditDeps): AuditSink & { admit(event: AuditEvent): Promise<void> } {
  // Each admitted request's access entry, by request id, until the request ends: its outcome points
  // at it. A promise, as a read is handled (and may end, its client gone) while its entry is written.
  // `amend` changes the entries while they wait to be written; `folded` is the status they carry.
  const admitted = new Map<string, { entry: Promise<number | undefined>; amend: OpenAppend['amend'][]; folded?: number }>();

  // The patients an access concerns: the study's; else the patients whose grants it used; else the
  // caller's own (a patient); else none (the node's key).
  const subjectsOf = (event: AuditEvent): string[] => {
    const study = event.resource.studyInstanceUID;
    if (study !== undefined) {
      const ref = deps.patients.of(study);
      if (ref !== undefined) return [deps.audit.keys.subjectFor(ref)];
    }
    const out = new Set<string>();
    for (const id of event.grants ?? []) {
      const g = deps.grants?.get(id, new Date());
      if (g !== undefined) out.add(deps.audit.subjectOfRefs(g.statement.patientIds));
    }
    if (out.size === 0 && event.principal.patientAccount !== undefined)
      out.add(deps.audit.subjectOfRefs(deps.identity.patientIds(event.principal.patientAccount)));
    return out.size === 0 ? [NODE_SUBJECT] : [...out];
  };

  const what = (r: AccessResource, event: AuditEvent): AuditRecord['what'] => ({
    action: r.action,
    ...(r.studyInstanceUID !== undefined ? { study: r.studyInstanceUID } : {}),
    ...(r.seriesInstanceUID !== undefined ? { series: r.seriesInstanceUID } : {}),
    ...(r.sopInstanceUID !== undefined ? { instance: r.sopInstanceUID } : {}),
    ...(r.dataType !== undefined ? { dataType: r.dataType } : {}),
    ...(event.status !== 0 ? { status: event.status } : {}),
  });

  const recordOf = (kind: AuditRecord['kind'], event: AuditEvent): AuditRecord => ({
    kind,
    who: whoOf(event.principal),
    what: what(event.resource, event),
    where: { address: event.remoteAddress, method: event.method, url: event.url },
    ...((event.reason ?? event.basis) !== undefined ? { why: (event.reason ?? event.basis)! } : {}),
  });

  const sink: AuditSink & { admit(event: AuditEvent): Promise<void> } = {
    async admit(event) {
      const opened = subjectsOf(event).map((s) => deps.audit.log.appendOpen(recordOf('access', { ...event, status: 0 }), s));
      const written = Promise.all(opened.map((o) => o.written)).then((ix) => ix[0]);
      if (event.id !== undefined)
        admitted.set(event.id, {
          entry: written.catch(() => undefined),
          amend: opened.map((o) => o.amend),
        });
      await written;
    },
    respond(id, status, bodyBytes) {
      const a = admitted.get(id);
      if (a === undefined || a.folded !== undefined) return;
      // All of a request's entries wait in the same batch: the first tells whether any can change.
      const fold = (r: AuditRecord) => {
        r.what = { ...r.what, status, bodyBytes };
      };
      if (a.amend.length > 0 && a.amend[0]!(fold)) {
        for (const amend of a.amend.slice(1)) amend(fold);
        a.folded = status;
      }
    },
    record(event) {
      const write = (ref: number | undefined) => {
        const refused = ref === undefined && (event.status === 401 || event.status === 403);
        const rec = recordOf(ref !== undefined ? 'outcome' : refused ? 'refused' : 'outcome', event);
        rec.what = { ...rec.what, complete: event.complete, ...(event.bytes !== undefined ? { bytes: event.bytes } : {}) };
        if (ref !== undefined) rec.ref = ref;
        for (const s of ref !== undefined || refused ? subjectsOf(event).slice(0, 1) : subjectsOf(event)) deps.audit.log.note(rec, s);
      };
      const a = event.id === undefined ? undefined : admitted.get(event.id);
      if (event.id !== undefined) admitted.delete(event.id);
      if (a === undefined) write(undefined);
      // The access entry already says how it ended: produced whole with this status, and sent so.
      else if (a.folded !== undefined && a.folded === event.status && event.complete) return;
      else void a.entry.then(write);
    },
  };
  return sink;
}

/** The study name under which anchor.db keeps the audit log's heads (and their receipts). */
export { AUDIT_ANCHOR_STUDY };

/**
 * The anchor service's extra leaf: the latest signed head not yet anchored, for a batch of study
 * roots that has room for it. Earlier heads waiting with it are dropped from the wait: the head
 * taken is linked to each of them by consistency proofs. A node that ingests nothing anchors no
 * head (no transaction of the audit log's own): its heads wait for the next batch.
 */
export function auditHeadLeaf(store: AuditLogStore): NonNullable<AnchorServiceDeps['extraLeaf']> {
  return (room) => {
    if (room <= 0) return undefined;
    const head = store.latestPendingHeadAnchor();
    if (head === undefined) return undefined;
    return {
      leaf: { root: head.cid, studyInstanceUID: AUDIT_ANCHOR_STUDY, version: head.size, enqueuedAt: head.enqueuedAt },
      taken: () => void store.markHeadsHandedOverThrough(head.size),
    };
  };
}
