// Erasure of a study or of a patient (GDPR Art. 17), built on crypto-shredding: the keys and the
// anchor salts are destroyed first (what makes every copy unreadable, including blocks already
// copied out to an IPFS peer, an S3 version or a CAR export), then the catalog rows, the anchor
// leaves' links to the study, and the blocks this node stores. Each step is idempotent and the
// plan is journaled before the first one, so a crash anywhere is finished by the next start
// (resume), never left half done. The erasure ends with a signed certificate (certificate.ts).
//
//   plan (studies, patient, version roots, commitments)  -> journal (erasure.db)
//   keys + salts destroyed (keys.db: secure_delete, WAL truncated); patient key erasers (audit)
//   anchor leaves unlinked (anchor.db)  ->  catalog rows purged (catalog.db)
//   blocks deleted: chunks, then instance nodes, then manifests (a resume can still walk them)
//   certificate signed and stored; journal row destroyed (erasure.db WAL truncated)
import { randomUUID, type KeyObject } from 'node:crypto';
import * as dagCbor from '@ipld/dag-cbor';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import type { Logger } from 'pino';
import type { Catalog } from '../catalog/catalog.ts';
import { VaultError, isVaultError } from '../core/errors.ts';
import { childLinks, isStudyManifest } from '../format/dag.ts';
import type { KeyStore, PatientRef } from '../format/keys.ts';
import type { BlockStore } from '../../storage/block-store.ts';
import { CERTIFICATE_TYPE, certificateCid, signCertificate, studyCommitment, type ErasedStudy, type ErasureCertificate } from './certificate.ts';
import type { ErasureRequest, ErasureStore, RetentionHold } from './store.ts';

/**
 * Makes a patient's entries in another store unreadable when the patient is erased: the audit
 * log (issue 24) seals entries under a per-patient audit key in its own store and implements this
 * to destroy that key; the shell wires it (openVault's `patientKeyErasers`).
 */
export interface PatientKeyEraser {
  /** Destroys every key of this patient the implementer holds. Idempotent: a resumed erasure calls it again. */
  erasePatientKeys(patient: PatientRef, studies: readonly string[]): Promise<void> | void;
}

/** What anchor.db must forget of a study (anchor/state.ts AnchorState.eraseStudy). */
export interface AnchorLeaves {
  eraseStudy(studyInstanceUID: string, at: string): { anchored: string[]; dropped: number };
  close(): void;
}

/**
 * Patients' grants that would outlive an erasure (src/grants; the shell wires it): revoked with
 * it, so that a study sent again after its erasure is not opened by a grant given for the erased
 * one. Idempotent.
 */
export interface GrantRevoker {
  /**
   * `patients`: every grant of their accounts goes (a patient erased whole); `studies`: every grant
   * of `studyPatients`' accounts that names an erased study goes, also when it names others too
   * (fail closed: the patient grants those again).
   */
  revokeForErasure(what: { studies: readonly string[]; patients: readonly PatientRef[]; studyPatients: readonly PatientRef[]; by: string }): number;
}

/**
 * The identity store's accounts of an erased patient (src/identity; the shell wires it): the
 * Patient ID unbound, and an account left with none deleted with its keys, passkeys and sessions.
 * Called after the grants are revoked (the revoker finds the grants through the accounts). Idempotent.
 */
export interface AccountEraser {
  forgetPatient(patient: PatientRef): void;
}

/**
 * Records about erased studies that the node keeps outside its stores (an imported patient
 * archive's evidence in <data-dir>/imports/: receipts carry each version's CID and salt, consents
 * and audit entries the Patient IDs; src/shell/import-records.ts). Called with the keys step.
 * Idempotent.
 */
export interface StudyRecordEraser {
  eraseStudyRecords(studies: readonly string[]): Promise<void> | void;
}

export type ErasureTarget = { kind: 'study'; studyInstanceUID: string } | { kind: 'patient'; patientId: string; issuer?: string };

export interface ErasureOrigin {
  /** Who asked: `user:NAME`, `cli`, or `patient:ACCOUNT`. */
  requestedBy: string;
  approvedBy?: string;
  requestId?: string;
  reason?: string;
}

/** Named steps, in order (a test can stop an erasure after one, as a crash would). */
export type ErasureStep = 'journaled' | 'keys' | 'anchors' | 'catalog' | 'blocks';

interface PlannedStudy {
  studyInstanceUID: string;
  /** Its patient as the catalog says (for the grants to revoke); kept only while the erasure runs. */
  patient?: PatientRef;
  commitment: string;
  roots: string[];
}

interface ErasurePlan {
  id: string;
  scope: 'study' | 'patient';
  patients: PatientRef[];
  studies: PlannedStudy[];
  origin: ErasureOrigin;
  erasedAt: string;
  /** Filled as the steps run (a resume keeps what was learnt before the crash). */
  anchored?: Record<string, string[]>;
}

export interface ErasureDeps {
  catalog: Pick<Catalog, 'hasStudy' | 'versions' | 'patientOf' | 'studiesOfPatient' | 'purgeStudy'>;
  keys: Pick<KeyStore, 'get' | 'anchorSalt' | 'studiesOf' | 'hasPatientKey' | 'destroy'>;
  /** `unpin` (IPFS): the version roots are unpinned before any block goes (unpinning walks the DAG). */
  store: Pick<BlockStore, 'get' | 'delete'> & { unpin?(root: CID): Promise<void> };
  /** After the blocks are deleted: what the store needs to let go of their bytes (S3: compaction). */
  afterBlocksDeleted?: () => Promise<void>;
  erasures: ErasureStore;
  /** The node's study writer: an erasure waits for commits of its studies in flight. */
  writer: { exclusive<T>(studyInstanceUID: string, fn: () => Promise<T>): Promise<T> };
  /** Opens anchor.db when the node has one (it may be written by the running node too). */
  openAnchorLeaves?: () => AnchorLeaves | undefined;
  patientKeyErasers?: readonly PatientKeyEraser[];
  grants?: GrantRevoker;
  accounts?: AccountEraser;
  records?: readonly StudyRecordEraser[];
  signingKey: KeyObject;
  nodeId: string;
  logger: Logger;
  /** Called after each step (tests stop an erasure there, as a crash would). */
  afterStep?: (step: ErasureStep, plan: { id: string }) => void | Promise<void>;
  /** Queues the certificate's CID for anchoring (the catalog's anchor queue), before it is stored. */
  anchorCertificate?: (cid: string, at: string) => void;
  /** Called with each finished certificate (the shell may record it as an audit entry). */
  onErased?: (certificate: ErasureCertificate) => void;
  now?: () => Date;
}

/** Instances whose blocks are deleted at once. */
const DELETE_CONCURRENCY = 16;
/** Deeper than any tree of ours (fanout 1,024: 4 levels list 2^50 leaves); a node saying more is not walked. */
const MAX_TREE_DEPTH = 8;

export class ErasureService {
  readonly #deps: ErasureDeps;
  readonly #now: () => Date;

  constructor(deps: ErasureDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? (() => new Date());
  }

  get store(): ErasureStore {
    return this.#deps.erasures;
  }

  // -- holds ------------------------------------------------------------------------------

  placeHold(studyInstanceUID: string, reason: string, placedBy: string, until: string | null = null): RetentionHold {
    if (reason.trim() === '') throw new VaultError('BAD_REQUEST', 'a retention hold needs a reason (the duty it follows)');
    if (until !== null && Number.isNaN(Date.parse(until))) throw new VaultError('BAD_REQUEST', `--until must be an ISO 8601 date or time (got "${until}")`);
    const hold = { studyInstanceUID, reason, until, placedBy, placedAt: this.#now().toISOString() };
    this.#deps.erasures.placeHold(hold);
    return hold;
  }

  // -- requests ---------------------------------------------------------------------------

  /** A patient's request: recorded as pending for an operator to approve or refuse. */
  request(account: string, scope: 'patient' | 'study', studyInstanceUID?: string): ErasureRequest {
    const r: ErasureRequest = {
      id: randomUUID(),
      account,
      scope,
      studyInstanceUID: studyInstanceUID ?? null,
      state: 'pending',
      reason: null,
      decidedBy: null,
      decidedAt: null,
      createdAt: this.#now().toISOString(),
      certificateId: null,
    };
    this.#deps.erasures.addRequest(r);
    return r;
  }

  refuse(id: string, operator: string, reason: string): ErasureRequest {
    if (reason.trim() === '') throw new VaultError('BAD_REQUEST', 'a refusal needs a reason (the patient is shown it)');
    if (!this.#deps.erasures.decide(id, 'pending', { state: 'refused', reason, decidedBy: operator, decidedAt: this.#now().toISOString() }))
      throw new VaultError('ERASURE_REQUEST_STATE', `erasure request ${id} is ${this.#deps.erasures.request(id)!.state}, not pending`);
    return this.#deps.erasures.request(id)!;
  }

  /**
   * Approves a pending request and carries it out. `targets` are the patient's (their Patient IDs
   * from the identity store, or the one study); a refusal by a retention hold leaves the request
   * pending and says which hold.
   */
  async approve(id: string, operator: string, targets: ErasureTarget[]): Promise<ErasureCertificate> {
    const r = this.#deps.erasures.request(id);
    if (r === undefined) throw new VaultError('NOT_FOUND', `no erasure request ${id}`);
    if (r.state !== 'pending') throw new VaultError('ERASURE_REQUEST_STATE', `erasure request ${id} is ${r.state}, not pending`);
    const plan = this.#plan(targets, r.scope, { requestedBy: `patient:${r.account}`, approvedBy: operator, requestId: id });
    if (!this.#deps.erasures.decide(id, 'pending', { state: 'approved', decidedBy: operator, decidedAt: this.#now().toISOString() }))
      throw new VaultError('ERASURE_REQUEST_STATE', `erasure request ${id} was decided meanwhile`);
    return this.#run(plan);
  }

  // -- erasure ----------------------------------------------------------------------------

  /** Erases a study or a patient at an operator's word. */
  async erase(target: ErasureTarget, origin: ErasureOrigin): Promise<ErasureCertificate> {
    return this.#run(this.#plan([target], target.kind, origin));
  }

  /** Finishes every erasure a crash interrupted; returns how many. */
  async resume(): Promise<number> {
    const open = this.#deps.erasures.unfinished();
    for (const entry of open) {
      const plan = JSON.parse(entry.plan) as ErasurePlan;
      this.#deps.logger.warn({ erasure: plan.id }, 'finishing an erasure interrupted by a crash');
      await this.#steps(plan);
    }
    return open.length;
  }

  #plan(targets: ErasureTarget[], scope: 'study' | 'patient', origin: ErasureOrigin): ErasurePlan {
    const { catalog, keys } = this.#deps;
    const studies = new Set<string>();
    const patients = new Map<string, PatientRef>();
    for (const t of targets) {
      if (t.kind === 'study') {
        if (!catalog.hasStudy(t.studyInstanceUID) && catalog.versions(t.studyInstanceUID).length === 0 && keys.anchorSalt(t.studyInstanceUID) === undefined)
          throw new VaultError('STUDY_NOT_FOUND', 'no such study on this node (never stored, or erased already)', { details: { study: t.studyInstanceUID } });
        studies.add(t.studyInstanceUID);
        continue;
      }
      // A patient: every study the catalog files under the Patient ID (any issuer unless one is
      // given), and every study key filed under the patient's key (a study imported without its
      // catalog rows, or whose later instances named another patient).
      const issuers = new Set<string>(t.issuer === undefined ? [''] : [t.issuer]);
      for (const s of catalog.studiesOfPatient(t.patientId, t.issuer)) {
        studies.add(s);
        if (t.issuer === undefined) issuers.add(catalog.patientOf(s)?.issuer ?? '');
      }
      for (const issuer of issuers) {
        const p = { patientId: t.patientId, issuer };
        patients.set(JSON.stringify([issuer, t.patientId]), p);
        for (const s of keys.studiesOf(p)) studies.add(s);
      }
      // No study left, but the patient's key (its studies erased one by one): that key goes alone.
      if (studies.size === 0 && ![...patients.values()].some((p) => keys.hasPatientKey(p)))
        throw new VaultError('NOT_FOUND', 'no study and no key of this patient on this node (never stored, or erased already)');
    }
    const list = [...studies].sort();
    const holds = this.#deps.erasures.holds(this.#now().toISOString(), list);
    if (holds.length > 0) {
      const h = holds[0]!;
      throw new VaultError(
        'RETENTION_HOLD',
        `study ${h.studyInstanceUID} is under a retention hold: ${h.reason}${h.until ? ` (until ${h.until})` : ''}; placed by ${h.placedBy} on ${h.placedAt}` +
          (holds.length > 1 ? ` (and ${holds.length - 1} more held studies)` : '') +
          ': nothing was erased',
        { details: { holds: holds.map((x) => ({ study: x.studyInstanceUID, reason: x.reason, until: x.until, placedBy: x.placedBy })) } },
      );
    }
    return {
      id: randomUUID(),
      scope,
      patients: [...patients.values()],
      studies: list.map((s) => ({
        studyInstanceUID: s,
        ...(catalog.patientOf(s) !== undefined ? { patient: catalog.patientOf(s)! } : {}),
        // Without a salt (a key row of release 0.1 not migrated, or none), a random one: the commitment then names nothing.
        commitment: studyCommitment(keys.anchorSalt(s) ?? globalThis.crypto.getRandomValues(new Uint8Array(32)), s),
        roots: catalog.versions(s).map((v) => v.root),
      })),
      origin,
      erasedAt: this.#now().toISOString(),
    };
  }

  async #run(plan: ErasurePlan): Promise<ErasureCertificate> {
    // Commits of these studies in flight in this process finish first; later ones find no key.
    const lockAll = async (i: number): Promise<ErasureCertificate> =>
      i === plan.studies.length ? this.#begin(plan) : this.#deps.writer.exclusive(plan.studies[i]!.studyInstanceUID, () => lockAll(i + 1));
    return lockAll(0);
  }

  async #begin(plan: ErasurePlan): Promise<ErasureCertificate> {
    // A commit may have added a version while the plan waited for the locks.
    for (const s of plan.studies) s.roots = [...new Set([...s.roots, ...this.#deps.catalog.versions(s.studyInstanceUID).map((v) => v.root)])];
    plan.erasedAt = this.#now().toISOString();
    this.#deps.erasures.begin({ id: plan.id, plan: JSON.stringify(plan), startedAt: plan.erasedAt });
    await this.#deps.afterStep?.('journaled', plan);
    return this.#steps(plan);
  }

  async #steps(plan: ErasurePlan): Promise<ErasureCertificate> {
    const { catalog, keys, erasures } = this.#deps;
    const studyUIDs = plan.studies.map((s) => s.studyInstanceUID);

    // 1. Keys and salts: from here on nothing of these studies can be decrypted or linked.
    keys.destroy({ studies: studyUIDs });
    for (const p of plan.patients) keys.destroy({ studies: [], patient: p });
    for (const eraser of this.#deps.patientKeyErasers ?? []) for (const p of plan.patients) await eraser.erasePatientKeys(p, studyUIDs);
    this.#deps.grants?.revokeForErasure({
      studies: studyUIDs,
      patients: plan.patients,
      studyPatients: plan.studies.flatMap((s) => (s.patient ? [s.patient] : [])),
      by: `erasure:${plan.id}`,
    });
    for (const p of plan.patients) this.#deps.accounts?.forgetPatient(p);
    for (const r of this.#deps.records ?? []) await r.eraseStudyRecords(studyUIDs);
    await this.#deps.afterStep?.('keys', plan);

    // 2. The anchor leaves forget their study (the commitments stay, unlinkable without the salt).
    plan.anchored ??= {};
    const leaves = this.#deps.openAnchorLeaves?.();
    try {
      for (const s of studyUIDs) {
        const r = leaves?.eraseStudy(s, plan.erasedAt);
        if (r !== undefined && (r.anchored.length > 0 || plan.anchored[s] === undefined)) plan.anchored[s] = r.anchored;
      }
    } finally {
      leaves?.close();
    }
    // What anchor.db said is kept in the journal: a resumed erasure finds the leaves unlinked already.
    erasures.progress(plan.id, JSON.stringify(plan));
    await this.#deps.afterStep?.('anchors', plan);

    // 3. The catalog's rows.
    for (const s of studyUIDs) catalog.purgeStudy(s);
    await this.#deps.afterStep?.('catalog', plan);

    // 4. The blocks this node stores.
    const blocks = new Map<string, number>();
    for (const s of plan.studies) blocks.set(s.studyInstanceUID, await this.#deleteBlocks(s.roots));
    await this.#deps.afterBlocksDeleted?.();
    await this.#deps.afterStep?.('blocks', plan);

    // 5. The certificate; the journal row goes in the same transaction.
    const body: Omit<ErasureCertificate, 'signature'> = {
      v: CERTIFICATE_TYPE,
      id: plan.id,
      node: this.#deps.nodeId,
      scope: plan.scope,
      erasedAt: plan.erasedAt,
      issuedAt: this.#now().toISOString(),
      requestedBy: plan.origin.requestedBy,
      ...(plan.origin.approvedBy !== undefined ? { approvedBy: plan.origin.approvedBy } : {}),
      ...(plan.origin.requestId !== undefined ? { request: plan.origin.requestId } : {}),
      ...(plan.origin.reason !== undefined ? { reason: plan.origin.reason } : {}),
      patientKey: plan.patients.length > 0,
      studies: plan.studies
        .map(
          (s): ErasedStudy => ({ commitment: s.commitment, anchored: plan.anchored?.[s.studyInstanceUID] ?? [], blocks: blocks.get(s.studyInstanceUID) ?? 0 }),
        )
        .sort((a, b) => a.commitment.localeCompare(b.commitment)),
    };
    const certificate = signCertificate(body, this.#deps.signingKey);
    // Queued before the journal row goes: a crash in between anchors the certificate of the
    // resumed erasure as well (at least once, never not at all).
    this.#deps.anchorCertificate?.(certificateCid(certificate).toString(), certificate.issuedAt);
    erasures.finish(plan.id, { id: certificate.id, json: JSON.stringify(certificate), issuedAt: certificate.issuedAt }, plan.origin.requestId);
    this.#deps.logger.info({ erasure: certificate.id, scope: certificate.scope, studies: certificate.studies.length }, 'erasure done');
    this.#deps.onErased?.(certificate);
    return certificate;
  }

  /**
   * Deletes every block of the study's versions: each instance node's chunks before the node,
   * every manifest last, so that a resumed erasure can still walk what is left. Links are public
   * (no key is needed to walk). A block already gone is passed over. Returns how many were deleted.
   */
  async #deleteBlocks(roots: readonly string[]): Promise<number> {
    const { store } = this.#deps;
    const read = async (cid: CID): Promise<unknown> => {
      try {
        return dagCbor.decode(await store.get(cid));
      } catch (err) {
        if (isVaultError(err, 'BLOCK_NOT_FOUND')) return undefined;
        throw err;
      }
    };
    if (store.unpin !== undefined) {
      for (const r of roots) {
        try {
          await store.unpin(CID.parse(r));
        } catch (err) {
          // A resumed erasure: the manifest (or a block under it) went before the crash, with its pin.
          if (!isVaultError(err, 'BLOCK_NOT_FOUND')) throw err;
        }
      }
    }
    const manifests: CID[] = [];
    const seen = new Set<string>();
    let deleted = 0;
    const remove = async (cid: CID): Promise<void> => {
      await store.delete(cid);
      deleted++;
    };
    const instanceNodes: CID[] = [];
    // Format 2 lists a version's instances and an instance's chunks as trees of link nodes
    // (src/format/tree.ts) `depth` levels deep; format 1 has none (depth 0).
    const depthOf = (value: unknown): number => {
      const depth = (value as { depth?: unknown }).depth;
      return typeof depth === 'number' && Number.isInteger(depth) && depth > 0 && depth <= MAX_TREE_DEPTH ? depth : 0;
    };
    // The link nodes over the instance nodes, deleted after them (a resumed erasure walks down
    // through them to what is left).
    const addedLinkNodes: CID[] = [];
    const collect = async (links: CID[], depth: number): Promise<void> => {
      if (depth === 0) {
        instanceNodes.push(...links.filter((c) => c.code === dagCbor.code));
        return;
      }
      for (const link of links) {
        const value = await read(link);
        if (value !== undefined) await collect(childLinks(value), depth - 1);
        addedLinkNodes.push(link);
      }
    };
    for (const r of roots) {
      const root = CID.parse(r);
      if (seen.has(root.toString())) continue;
      seen.add(root.toString());
      manifests.push(root);
      const manifest = await read(root);
      if (isStudyManifest(manifest)) await collect(childLinks(manifest), depthOf(manifest));
    }
    // An instance's chunks, depth first: each link node after the chunks under it, so memory
    // holds one link node's links per level.
    const removeChunks = async (links: CID[], depth: number): Promise<void> => {
      if (depth === 0) {
        await Promise.all(links.filter((c) => c.code === raw.code).map(remove));
        return;
      }
      for (const link of links) {
        const value = await read(link);
        if (value !== undefined) await removeChunks(childLinks(value), depth - 1);
        await remove(link);
      }
    };
    // Instances in parallel (each deletion waits for its file system's sync: one at a time, 10,000
    // small instances took 1.7 ms a block), each one's chunks before its node.
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < instanceNodes.length) {
        const node = instanceNodes[next++]!;
        const value = await read(node);
        if (value !== undefined) await removeChunks(childLinks(value), depthOf(value));
        await remove(node);
      }
    };
    await Promise.all(Array.from({ length: DELETE_CONCURRENCY }, worker));
    for (const l of addedLinkNodes) await remove(l);
    for (const m of manifests) await remove(m);
    return deleted;
  }
}
