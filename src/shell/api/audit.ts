// The audit log over HTTP, registered inside the patient API (same /api prefix, same OpenAPI
// document at /api/openapi.json):
//
//   GET /api/patient/audit                 the patient's entries, newest first (filters: grantee, study, since, until), each with its inclusion proof and the head that covers it
//   GET /api/patient/audit/{index}         one of the patient's entries; another's reads as unknown (404)
//   GET /api/audit/key                     the node's audit signing key (Ed25519, SPKI DER base64): pin it
//   GET /api/audit/head                    the latest signed head, with its anchor receipt once anchored
//   GET /api/audit/consistency             the consistency proof between two heads (first, second: sizes)
//   GET /api/audit/entries                 admins: every entry, newest first (no image data is ever in an entry)
//   GET /api/audit/balp                    admins: the accesses as a FHIR R4 Bundle of BALP AuditEvents, a time range, paged
//   GET /api/patient/audit/balp            the same for the patient's own entries
//
// Heads and proofs carry no personal data (sizes, hashes, times): anyone may fetch them, which is
// what lets an auditor and a patient compare the heads they were shown.
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { AccessPolicy } from '../../access/policy.ts';
import { balpBundle } from '../../audit/balp.ts';
import { toBalpEntries } from '../../audit/balp-export.ts';
import { type AuditRecord, openLeaf } from '../../audit/entry.ts';
import type { AuditPatient, AuditSource } from '../../audit/event-kind.ts';
import { publicKeyText } from '../../audit/head.ts';
import type { StoredEntry, StoredHead } from '../../audit/store.ts';
import { NODE_SUBJECT } from '../../audit/subject-keys.ts';
import { VaultError } from '../../core/errors.ts';
import type { IdentityStore } from '../../identity/store.ts';
import type { NodeAudit } from '../audit.ts';

/** Entries per page at most. */
export const MAX_AUDIT_PAGE = 1_000;
/** Heads looked through for the latest anchored one. */
const ANCHOR_LOOKBACK = 200;

export interface AuditApiDeps {
  audit: NodeAudit;
  identity: Pick<IdentityStore, 'patientIds'>;
  identify: AccessPolicy['identify'];
  /** Anchor receipts (anchor.db); absent when the node does not anchor. */
  receipts?: { receipt(root: string): object | undefined };
  /** The node as the BALP export names it (AuditEvent.source, the server agent). Default: `dicom-vault` on localhost. */
  source?: AuditSource;
  /** A study's patient, for the export's Patient entity; absent: none named. */
  patientOf?: (study: string) => AuditPatient | undefined;
}

/** How far after an access the export looks for its outcome when the page does not hold it. */
const OUTCOME_LOOKAHEAD = 256;

const balpQuery = {
  type: 'object',
  properties: {
    since: { type: 'string', format: 'date-time', description: 'entries recorded at or after this time' },
    until: { type: 'string', format: 'date-time', description: 'entries recorded at or before this time' },
    before: { type: 'integer', minimum: 0, description: 'entries below this index: the next page (Bundle.link next)' },
    limit: {
      type: 'integer',
      minimum: 1,
      maximum: MAX_AUDIT_PAGE,
      default: 100,
      description: 'log entries looked at per page (an access and its outcome make one AuditEvent)',
    },
  },
} as const;
const bundleSchema = {
  type: 'object',
  additionalProperties: true,
  description: 'FHIR R4 Bundle (type collection) of AuditEvent resources following IHE BALP; link next when there is more',
} as const;

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

const headSchema = {
  type: 'object',
  properties: {
    size: { type: 'integer' },
    root: { type: 'string', description: 'RFC 9162 root hash, base64' },
    time: { type: 'string' },
    cid: { type: 'string', description: 'CIDv1 (raw, sha2-256) of the body: what is anchored' },
    body: { type: 'string', description: 'the signed text' },
    signature: { type: 'string', description: 'Ed25519 signature of the body, base64, under GET /api/audit/key' },
    receipt: {
      type: ['object', 'null'],
      additionalProperties: true,
      description: 'dicom-vault-receipt/1 of the anchor batch holding the head; null until anchored',
    },
  },
} as const;
const entrySchema = {
  type: 'object',
  properties: {
    index: { type: 'integer' },
    time: { type: 'string' },
    subject: { type: 'string', description: 'whose key seals the entry (an opaque id)' },
    record: { type: ['object', 'null'], additionalProperties: true, description: 'who, what, where, why; null when the key was destroyed (erasure)' },
    leaf: { type: 'string', description: 'the leaf data (ciphertext), base64: what the tree commits to' },
    head: { type: 'integer', description: 'size of the head the proof leads to' },
    proof: { type: 'array', items: { type: 'string' }, description: 'RFC 9162 inclusion path, base64 hashes from the leaf up' },
  },
} as const;
const error = { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } } } as const;
const errors = { 400: error, 401: error, 403: error, 404: error, 503: error } as const;
const session = [{ patientSession: [] }];

export function auditApi(deps: AuditApiDeps): FastifyPluginAsync {
  const { audit } = deps;

  const headView = (h: StoredHead) => ({
    size: h.size,
    root: b64(h.root),
    time: h.time,
    cid: h.cid,
    body: h.body,
    signature: b64(h.signature),
    receipt: deps.receipts?.receipt(h.cid) ?? null,
  });

  /** The head proofs lead to: the latest anchored head when it covers `newest`, else the latest head (signed now if the log grew). */
  const proofHead = (newest: number): StoredHead | undefined => {
    audit.log.flush();
    let latest = audit.store.latestHead();
    if (latest === undefined || latest.size <= newest) latest = audit.log.signHead() ?? audit.store.latestHead();
    if (deps.receipts !== undefined) {
      for (const h of audit.store.recentHeads(ANCHOR_LOOKBACK)) {
        if (h.size <= newest) break;
        if (deps.receipts.receipt(h.cid) !== undefined) return h;
      }
    }
    return latest;
  };

  const entryView = (e: StoredEntry, record: AuditRecord | undefined, head: StoredHead | undefined) => ({
    index: e.index,
    time: new Date(e.time).toISOString(),
    subject: e.subject,
    record: record ?? null,
    leaf: b64(e.leaf),
    ...(head !== undefined && head.size > e.index ? { head: head.size, proof: audit.log.inclusion(e.index, head.size).map(b64) } : {}),
  });

  const open = (e: StoredEntry): AuditRecord | undefined => {
    const key = audit.keys.key(e.subject);
    return key === undefined ? undefined : openLeaf(e.leaf, key);
  };

  const patientOf = async (request: FastifyRequest): Promise<{ account: string; subjects: string[] }> => {
    const principal = await deps.identify(request);
    if (principal.patientAccount === undefined) throw new VaultError('FORBIDDEN', 'a patient session is required (POST /api/patient/session)');
    return { account: principal.patientAccount, subjects: audit.keys.subjectsOf(deps.identity.patientIds(principal.patientAccount)) };
  };

  /**
   * One page of the BALP export, newest first: log entries (of `subjects`, or all) in the time range
   * below `before`, the accesses among them as AuditEvents, and the link to the next page.
   */
  const balpPage = (request: FastifyRequest, subjects: string[] | undefined) => {
    const q = request.query as { since?: string; until?: string; before?: number; limit?: number };
    const since = q.since === undefined ? undefined : Date.parse(q.since);
    const until = q.until === undefined ? undefined : Date.parse(q.until);
    if (Number.isNaN(since) || Number.isNaN(until)) throw new VaultError('BAD_REQUEST', 'since and until are ISO 8601 times');
    const limit = q.limit ?? 100;
    audit.log.flush();
    const page = audit.store.query({
      ...(subjects !== undefined ? { subjects } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(until !== undefined ? { until } : {}),
      ...(q.before !== undefined ? { before: q.before } : {}),
      limit,
    });
    // An access's outcome is written after it: in the page, or just past its newest entry (the
    // next entries of the log, whoever they concern, looked through once).
    const after = page.length === 0 ? [] : audit.store.scan(page[0]!.index + 1, page[0]!.index + 1 + OUTCOME_LOOKAHEAD);
    const resources = toBalpEntries(
      [...page, ...after].map((e) => ({ index: e.index, time: e.time, record: open(e) })),
      page.length,
      deps.source ?? { sourceId: 'dicom-vault', host: 'localhost' },
      deps.patientOf,
    );
    let next: string | undefined;
    if (page.length === limit && page.at(-1)!.index > 0) {
      const url = new URL(request.url, 'http://node');
      url.searchParams.set('before', String(page.at(-1)!.index));
      next = `${url.pathname}${url.search}`;
    }
    return balpBundle(resources, next === undefined ? {} : { next });
  };

  return async (api: FastifyInstance) => {
    api.get(
      '/patient/audit',
      {
        schema: {
          summary: "Who accessed the patient's imaging: the patient's audit entries, newest first, each with its inclusion proof",
          description:
            'Each entry proves into the head named by `head` (listed in `heads`): the latest anchored head when it covers the entry, else the latest signed head. Check the proofs with the leaf, the head root, and the node key (GET /api/audit/key); check the anchored head with its receipt and the chain.',
          tags: ['audit'],
          security: session,
          querystring: {
            type: 'object',
            properties: {
              grantee: { type: 'string', description: 'only entries of this principal (user:NAME, oidc:..., link:GRANT) or made under this grant id' },
              study: { type: 'string', description: 'only entries about this Study Instance UID' },
              since: { type: 'string', format: 'date-time' },
              until: { type: 'string', format: 'date-time' },
              before: { type: 'integer', minimum: 0, description: 'entries below this index (the next page)' },
              limit: { type: 'integer', minimum: 1, maximum: MAX_AUDIT_PAGE, default: 100 },
            },
          },
          response: {
            200: {
              type: 'object',
              properties: {
                subjects: { type: 'array', items: { type: 'string' } },
                entries: { type: 'array', items: entrySchema },
                heads: { type: 'array', items: headSchema },
              },
            },
            ...errors,
          },
        },
      },
      async (request) => {
        const { account, subjects } = await patientOf(request);
        const q = request.query as { grantee?: string; study?: string; since?: string; until?: string; before?: number; limit?: number };
        const limit = q.limit ?? 100;
        const since = q.since === undefined ? undefined : Date.parse(q.since);
        const until = q.until === undefined ? undefined : Date.parse(q.until);
        if (Number.isNaN(since) || Number.isNaN(until)) throw new VaultError('BAD_REQUEST', 'since and until are ISO 8601 times');
        const matches = (r: AuditRecord | undefined): boolean =>
          (q.grantee === undefined || (r !== undefined && (r.who.id === q.grantee || r.who.grant === q.grantee || r.what.grant === q.grantee))) &&
          (q.study === undefined || r?.what.study === q.study);
        // Filters on the details run on the opened entries: a page scans on until it is full.
        const out: Array<{ e: StoredEntry; r: AuditRecord | undefined }> = [];
        let before = q.before;
        while (out.length < limit) {
          const page = audit.store.query({
            subjects,
            ...(since !== undefined ? { since } : {}),
            ...(until !== undefined ? { until } : {}),
            ...(before !== undefined ? { before } : {}),
            limit: MAX_AUDIT_PAGE,
          });
          for (const e of page) {
            const r = open(e);
            if (matches(r)) out.push({ e, r });
            if (out.length >= limit) break;
          }
          if (page.length < MAX_AUDIT_PAGE) break;
          before = page.at(-1)!.index;
        }
        // Reading one's log is itself recorded ("Audit Log Used").
        audit.log.note(
          { kind: 'audit-read', who: { id: `patient:${account}`, roles: ['patient'] }, what: { action: 'audit log read' } },
          subjects[0] ?? NODE_SUBJECT,
        );
        const head = out.length === 0 ? audit.store.latestHead() : proofHead(out[0]!.e.index);
        return {
          subjects,
          entries: out.map(({ e, r }) => entryView(e, r, head)),
          heads: head === undefined ? [] : [headView(head)],
        };
      },
    );

    api.get(
      '/patient/audit/balp',
      {
        schema: {
          summary: "The patient's audit entries as a FHIR R4 Bundle of IHE BALP AuditEvents (who read, searched or stored their imaging), newest first, paged",
          tags: ['audit'],
          security: session,
          querystring: balpQuery,
          response: { 200: bundleSchema, ...errors },
        },
      },
      async (request, reply) => {
        const { account, subjects } = await patientOf(request);
        const bundle = balpPage(request, subjects);
        audit.log.note(
          { kind: 'audit-read', who: { id: `patient:${account}`, roles: ['patient'] }, what: { action: 'audit log exported (BALP)' } },
          subjects[0] ?? NODE_SUBJECT,
        );
        return reply.type('application/fhir+json').send(bundle);
      },
    );

    api.get(
      '/patient/audit/:index',
      {
        schema: {
          summary: "One of the patient's audit entries with its proof; another patient's entry reads as unknown (404)",
          tags: ['audit'],
          security: session,
          params: { type: 'object', required: ['index'], properties: { index: { type: 'integer', minimum: 0 } } },
          response: { 200: { type: 'object', properties: { entry: entrySchema, head: headSchema } }, ...errors },
        },
      },
      async (request) => {
        const { subjects } = await patientOf(request);
        const index = (request.params as { index: number }).index;
        const e = audit.store.entry(index);
        if (e === undefined || !subjects.includes(e.subject)) throw new VaultError('NOT_FOUND', `no audit entry ${index}`);
        const head = proofHead(index)!;
        return { entry: entryView(e, open(e), head), head: headView(head) };
      },
    );

    api.get(
      '/audit/key',
      {
        schema: {
          summary: "The node's audit signing key: pin it, and check every head's signature under it",
          tags: ['audit'],
          response: { 200: { type: 'object', properties: { algorithm: { type: 'string' }, publicKey: { type: 'string' }, origin: { type: 'string' } } } },
        },
      },
      async () => ({ algorithm: 'Ed25519', publicKey: publicKeyText(audit.log.publicKey), origin: audit.store.latestHead()?.origin ?? null }),
    );

    api.get(
      '/audit/head',
      {
        schema: {
          summary: 'The latest signed head of the audit log (sizes and hashes only), with its anchor receipt once anchored',
          tags: ['audit'],
          querystring: { type: 'object', properties: { size: { type: 'integer', minimum: 1, description: 'the head of this size instead' } } },
          response: { 200: headSchema, 404: error },
        },
      },
      async (request) => {
        const size = (request.query as { size?: number }).size;
        const h = size === undefined ? audit.store.latestHead() : audit.store.head(size);
        if (h === undefined) throw new VaultError('NOT_FOUND', size === undefined ? 'the audit log has no head yet' : `no audit head of ${size} entries`);
        return headView(h);
      },
    );

    api.get(
      '/audit/consistency',
      {
        schema: {
          summary: 'RFC 9162 consistency proof between the log at two sizes: the later head only extends the earlier',
          tags: ['audit'],
          querystring: {
            type: 'object',
            required: ['first', 'second'],
            properties: { first: { type: 'integer', minimum: 1 }, second: { type: 'integer', minimum: 1 } },
          },
          response: {
            200: {
              type: 'object',
              properties: { first: { type: 'integer' }, second: { type: 'integer' }, proof: { type: 'array', items: { type: 'string' } } },
            },
            ...errors,
          },
        },
      },
      async (request) => {
        const { first, second } = request.query as { first: number; second: number };
        if (first > second) throw new VaultError('BAD_REQUEST', 'first must not be above second');
        return { first, second, proof: audit.log.consistency(first, second).map(b64) };
      },
    );

    api.get(
      '/audit/entries',
      {
        schema: {
          summary: 'Admins: every audit entry, newest first (entries hold no image data)',
          tags: ['audit'],
          security: [{ bearer: [] }],
          querystring: {
            type: 'object',
            properties: {
              before: { type: 'integer', minimum: 0 },
              limit: { type: 'integer', minimum: 1, maximum: MAX_AUDIT_PAGE, default: 100 },
            },
          },
          response: { 200: { type: 'object', properties: { entries: { type: 'array', items: entrySchema } } }, ...errors },
        },
      },
      async (request) => {
        const principal = await deps.identify(request);
        if (!principal.roles.includes('admin')) throw new VaultError('FORBIDDEN', 'the audit log is for admins (and each patient reads their own)');
        const q = request.query as { before?: number; limit?: number };
        const entries = audit.store.query({ ...(q.before !== undefined ? { before: q.before } : {}), limit: q.limit ?? 100 });
        audit.log.note({ kind: 'audit-read', who: { id: principal.id, roles: [...principal.roles] }, what: { action: 'audit log read (admin)' } });
        const head = entries.length === 0 ? undefined : proofHead(entries[0]!.index);
        return { entries: entries.map((e) => entryView(e, open(e), head)) };
      },
    );
    api.get(
      '/audit/balp',
      {
        schema: {
          summary: 'Admins: the accesses in the audit log as a FHIR R4 Bundle of IHE BALP AuditEvents, for a time range, newest first, paged',
          tags: ['audit'],
          security: [{ bearer: [] }],
          querystring: balpQuery,
          response: { 200: bundleSchema, ...errors },
        },
      },
      async (request, reply) => {
        const principal = await deps.identify(request);
        if (!principal.roles.includes('admin')) throw new VaultError('FORBIDDEN', 'the audit log is for admins (and each patient reads their own)');
        const bundle = balpPage(request, undefined);
        audit.log.note({ kind: 'audit-read', who: { id: principal.id, roles: [...principal.roles] }, what: { action: 'audit log exported (BALP, admin)' } });
        return reply.type('application/fhir+json').send(bundle);
      },
    );
  };
}
