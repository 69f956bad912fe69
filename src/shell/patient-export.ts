// A patient's export for another provider (GDPR Art. 20), gathered from the node's parts: the
// studies of the Patient ID (catalog), their keys, the receipts of their versions (anchor.db), the
// patient's grants as FHIR Consent (grants.db through the accounts bound to the ID), and the
// patient's audit entries with their inclusion proofs. The archive format is
// src/transfer/patient-archive.ts; the CLI (`export --patient`) and the patient API use this.
// The hand-over is recorded in the audit log as a disclosure, under the patient's subject.
import { createHash, randomUUID, type KeyObject } from 'node:crypto';
import { createWriteStream, existsSync, rmSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { openAnchorStateWithSalts } from '../../anchor/anchoring.ts';
import { ANCHOR_DB_FILE } from '../../anchor/state.ts';
import { openLeaf } from '../audit/entry.ts';
import type { PortableAudit, PortableEntry } from '../audit/portable.ts';
import { publicKeyText } from '../audit/head.ts';
import type { PatientRef } from '../catalog/scope.ts';
import { VaultError } from '../core/errors.ts';
import { consentBundle } from '../grants/fhir.ts';
import { openInstance } from '../read/instance-reader.ts';
import { spki } from '../transfer/car.ts';
import { exportPatientArchive, type PatientArchiveContents, type PatientExportReport } from '../transfer/patient-archive.ts';
import { nodeIdOf } from './data-dir.ts';
import type { Vault } from './vault.ts';

/** Audit entries read per page while gathering. */
const AUDIT_PAGE = 1_000;

/** The studies of a Patient ID (any issuer when the ref has none). */
export function studiesOfPatient(vault: Vault, ref: PatientRef): string[] {
  return vault.catalog.studiesOfPatient(ref.id, ref.issuer ?? undefined);
}

/**
 * Writes the patient's archive, sealed to `recipient`, at `path`, and records the disclosure.
 * `by`: who asked (`cli`, `user:NAME`, `patient:ACCOUNT`).
 */
export async function exportPatient(vault: Vault, ref: PatientRef, recipient: KeyObject, path: string, by: string): Promise<PatientExportReport> {
  const now = new Date();
  const gathered = patientArchiveContents(vault, ref, now);
  try {
    const report = await exportPatientArchive(vault, gathered.contents, recipient, path, { now });
    const to = createHash('sha256').update(spki(recipient)).digest('hex').slice(0, 16);
    vault.audit.log.note(
      {
        kind: 'admin',
        who: { id: by },
        what: { action: 'patient data exported for another provider (disclosure, GDPR Art. 20)' },
        why: `${report.studies} studies sealed to the node key ${to}…`,
      },
      vault.audit.subjectOfRefs([ref]),
    );
    return report;
  } finally {
    gathered.close();
  }
}

/** What an export of the patient carries besides the blocks; `close` once the archive is written (anchor.db stays open until then). */
export function patientArchiveContents(vault: Vault, ref: PatientRef, now = new Date()): { contents: PatientArchiveContents; close(): void } {
  const studies = studiesOfPatient(vault, ref);
  if (studies.length === 0) throw new VaultError('NOT_FOUND', 'no study of this patient on this node');
  const dataDir = vault.options.dataDir;
  const anchors = existsSync(join(dataDir, ANCHOR_DB_FILE)) ? openAnchorStateWithSalts(dataDir) : undefined;
  try {
    const accounts = vault.identity.accountsFor(ref);
    const grants = accounts.flatMap((a) => vault.grants.forPatient(a, now)).map((r) => ({ record: r, status: r.status }));
    const receiptOf = (root: string): object | undefined => anchors?.receipt(root);
    return {
      contents: {
        patient: ref,
        source: nodeIdOf(dataDir),
        studies,
        receiptOf,
        consents: consentBundle(grants, now),
        audit: auditOf(vault, ref, receiptOf),
      },
      close: () => anchors?.close(),
    };
  } catch (err) {
    anchors?.close();
    throw err;
  }
}

/**
 * The patient's audit entries, each with its inclusion proof into one signed head, the key that
 * signed it, the head's receipt when it was anchored, and the patient's audit subject keys (the
 * receiver opens each leaf with them to check the details shown: src/audit/portable.ts).
 */
function auditOf(vault: Vault, ref: PatientRef, receiptOf: (cid: string) => object | undefined): PortableAudit {
  const { audit } = vault;
  audit.log.flush();
  const head = audit.log.signHead() ?? audit.store.latestHead();
  const subjects = audit.keys.subjectsOf([ref]);
  const keys: Record<string, string> = {};
  const entries: PortableEntry[] = [];
  let before: number | undefined;
  for (;;) {
    const page = audit.store.query({ subjects, ...(before !== undefined ? { before } : {}), limit: AUDIT_PAGE });
    for (const e of page) {
      const key = audit.keys.key(e.subject);
      if (key !== undefined) keys[e.subject] ??= key.toString('base64');
      entries.push({
        index: e.index,
        time: new Date(e.time).toISOString(),
        record: key === undefined ? null : (openLeaf(e.leaf, key) ?? null),
        leaf: Buffer.from(e.leaf).toString('base64'),
        ...(head !== undefined && head.size > e.index
          ? { head: head.size, proof: audit.log.inclusion(e.index, head.size).map((h) => Buffer.from(h).toString('base64')) }
          : {}),
      });
    }
    if (page.length < AUDIT_PAGE) break;
    before = page.at(-1)!.index;
  }
  const headReceipt = head === undefined ? undefined : receiptOf(head.cid);
  return {
    key: { algorithm: 'Ed25519', publicKey: publicKeyText(audit.log.publicKey) },
    head:
      head === undefined
        ? null
        : {
            size: head.size,
            root: Buffer.from(head.root).toString('base64'),
            time: head.time,
            cid: head.cid,
            body: head.body,
            signature: Buffer.from(head.signature).toString('base64'),
          },
    ...(headReceipt !== undefined ? { headReceipt } : {}),
    keys,
    entries,
  };
}

/**
 * The patient's studies as plain DICOM Part 10 files, for a provider without dicom-vault: a
 * folder `<dir>/<study>/<series>/<instance>.dcm`, each instance verified on the way out (a folder,
 * not a zip: any PACS import tool and DICOM viewer reads one, and no zip library is needed).
 */
export async function exportPatientPart10(vault: Vault, ref: PatientRef, dir: string): Promise<{ studies: number; instances: number; bytes: number }> {
  const studies = studiesOfPatient(vault, ref);
  if (studies.length === 0) throw new VaultError('NOT_FOUND', 'no study of this patient on this node');
  let instances = 0;
  let bytes = 0;
  for (const study of studies) {
    for (const inst of vault.catalog.listInstances({ study })) {
      const seriesDir = join(dir, inst.studyInstanceUID, inst.seriesInstanceUID);
      await mkdir(seriesDir, { recursive: true });
      const file = join(seriesDir, `${inst.sopInstanceUID}.dcm`);
      const opened = await openInstance(vault, inst);
      await pipeline(opened.read(), createWriteStream(`${file}.partial`));
      await rename(`${file}.partial`, file);
      instances++;
      bytes += inst.size;
    }
  }
  return { studies: studies.length, instances, bytes };
}

/** Where prepared exports wait for their download, under the data directory. */
export const EXPORTS_DIR = 'exports';

/** A patient's export asked through the API: prepared in the background, downloaded by the patient's session. */
export interface ExportJob {
  id: string;
  account: string;
  patient: PatientRef;
  state: 'preparing' | 'ready' | 'failed';
  createdAt: string;
  report?: PatientExportReport;
  reason?: string;
  file: string;
}

/**
 * The patients' exports of this process. Jobs live in memory: a node restarted forgets them and
 * removes their files (the patient asks again), so no archive outlives what its patient can see.
 */
export class PatientExports {
  readonly #vault: Vault;
  readonly #dir: string;
  readonly #jobs = new Map<string, ExportJob>();
  readonly #running = new Set<Promise<void>>();

  constructor(vault: Vault) {
    this.#vault = vault;
    this.#dir = join(vault.options.dataDir, EXPORTS_DIR);
    rmSync(this.#dir, { recursive: true, force: true });
  }

  start(account: string, patient: PatientRef, recipient: KeyObject): ExportJob {
    const id = randomUUID();
    const job: ExportJob = { id, account, patient, state: 'preparing', createdAt: new Date().toISOString(), file: join(this.#dir, `${id}.car`) };
    this.#jobs.set(id, job);
    const p = (async () => {
      try {
        await mkdir(this.#dir, { recursive: true, mode: 0o700 });
        job.report = await exportPatient(this.#vault, patient, recipient, job.file, `patient:${account}`);
        job.state = 'ready';
      } catch (err) {
        job.state = 'failed';
        job.reason = err instanceof Error ? err.message : String(err);
        this.#vault.logger.warn({ export: id, reason: job.reason }, "a patient's export failed");
      }
    })();
    this.#running.add(p);
    void p.finally(() => this.#running.delete(p));
    return job;
  }

  job(id: string): ExportJob | undefined {
    return this.#jobs.get(id);
  }

  /** Waits for the exports being prepared (the node closes after them). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#running]);
  }
}
