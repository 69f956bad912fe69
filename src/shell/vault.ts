// Opens a data directory: block store, catalog, keys, and the study writer, wired together. The
// server, the CLI and the tests all go through here, so every entry uses the same parts.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { createLogger } from './log.ts';
import { CATALOG_FILE, checkDataDir, nodeIdOf, readIdentity, writeIdentity } from './data-dir.ts';
import { Catalog } from '../catalog/catalog.ts';
import type { NodeOptions } from './config.ts';
import { CERTIFICATE_ANCHOR_STUDY, KeyStore, KEY_DB_FILE, MASTER_KEY_FILE, loadOrCreateMasterKey, type PatientRef } from '../format/keys.ts';
import { openBlockStore, resolveBlockStoreConfig } from '../../storage/open.ts';
import type { BlockStore } from '../../storage/block-store.ts';
import type { StudyWriter } from '../../ingest/study.ts';
import { AuditedStudyWriter, auditedGrants, auditedIdentity, type NodeAudit, openNodeAudit, StudyPatients } from './audit.ts';
import { IDENTITY_DB_FILE, SqliteIdentityStore, type IdentityStore } from '../identity/store.ts';
import { GrantService } from '../grants/service.ts';
import { GRANTS_DB_FILE, SqliteGrantStore, type GrantStore } from '../grants/store.ts';
import { webauthnRpOf } from './api/patient.ts';
import { ErasureService, type ErasureDeps, type GrantRevoker, type PatientKeyEraser } from '../erasure/service.ts';
import { ERASURE_DB_FILE, SqliteErasureStore } from '../erasure/store.ts';
import { SIGNING_KEY_FILE, loadSigningKey } from '../erasure/certificate.ts';
import { openAnchorState } from '../../anchor/anchoring.ts';
import { ANCHOR_DB_FILE } from '../../anchor/state.ts';
import { importRecordsEraser } from './import-records.ts';

export { BLOCKS_DIR, CATALOG_FILE } from './data-dir.ts';

export interface Vault {
  options: Pick<NodeOptions, 'dataDir' | 'chunkSize' | 'store'>;
  store: BlockStore;
  catalog: Catalog;
  keys: KeyStore;
  /** Accounts, tokens, patients (identity.db). */
  identity: IdentityStore;
  /** Patients' signed grants (grants.db), enforced only while their signatures verify. */
  grants: GrantService;
  writer: StudyWriter;
  /** The tamper-evident audit log (audit.db, audit-keys.db, audit-signing.key): identity, grants and writer above record into it. */
  audit: NodeAudit;
  /** Retention holds, patients' erasure requests, erasure (src/erasure). */
  erasure: ErasureService;
  logger: Logger;
  close(): Promise<void>;
}

/** What the shell wires into a vault beyond its options. */
export interface VaultExtras {
  /** Other stores' per-patient keys to destroy with a patient (the audit log's, issue 24). */
  patientKeyErasers?: readonly PatientKeyEraser[];
  /** Tests: called after each erasure step (throwing there leaves the erasure as a crash would). */
  afterErasureStep?: ErasureDeps['afterStep'];
}

export async function openVault(
  options: Pick<NodeOptions, 'dataDir' | 'chunkSize' | 'store'> & Partial<Pick<NodeOptions, 'blockStore' | 'publicUrl' | 'audit'>>,
  logger: Logger = createLogger('silent'),
  extras: VaultExtras = {},
): Promise<Vault> {
  // Everything the node writes (databases and their journals, blocks, keys, the chain's state)
  // is for this user alone, whatever the umask it was started with.
  process.umask(0o077);
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const findings = checkDataDir(options.dataDir, { fix: true });
  for (const f of findings) logger.warn({ code: f.code }, f.message);
  const masterPath = join(options.dataDir, MASTER_KEY_FILE);
  const masterKey = loadOrCreateMasterKey(masterPath, !existsSync(masterPath));
  const keys = KeyStore.open({ path: join(options.dataDir, KEY_DB_FILE), masterKey });
  try {
    if (readIdentity(options.dataDir) === undefined) {
      keys.checkMasterKey(); // a directory of an older release, or a new one: its keys open with this key
      writeIdentity(options.dataDir, masterKey);
    }
  } catch (err) {
    keys.close();
    throw err;
  }
  let catalog: Catalog;
  let identity: IdentityStore;
  try {
    catalog = Catalog.open({ path: join(options.dataDir, CATALOG_FILE) });
  } catch (err) {
    keys.close();
    throw err;
  }
  try {
    // Keys of release 0.1 (one per study under the master key) move under their patients' keys,
    // in one transaction (src/format/keys.ts KeyStore.migrate); a no-op once done.
    const moved = keys.migrate((study) => catalog.patientOf(study));
    if (moved > 0) logger.info({ keys: moved }, "study keys migrated under their patients' keys");
  } catch (err) {
    catalog.close();
    keys.close();
    throw err;
  }
  try {
    identity = SqliteIdentityStore.open(join(options.dataDir, IDENTITY_DB_FILE));
  } catch (err) {
    catalog.close();
    keys.close();
    throw err;
  }
  let grantStore: GrantStore;
  let grants: GrantService;
  try {
    grantStore = SqliteGrantStore.open(join(options.dataDir, GRANTS_DB_FILE));
    // Passkeys are bound to the node's public origin: without an https --public-url (or localhost),
    // grants signed with a passkey do not verify here, and key-file grants still do.
    const rp = webauthnRpOf(options.publicUrl);
    grants = new GrantService({ store: grantStore, identity, nodeId: nodeIdOf(options.dataDir), ...(rp !== undefined ? { webauthn: rp } : {}), logger });
  } catch (err) {
    identity.close();
    catalog.close();
    keys.close();
    throw err;
  }
  let audit: NodeAudit;
  try {
    audit = openNodeAudit(options.dataDir, masterKey, nodeIdOf(options.dataDir), options.audit ?? {});
  } catch (err) {
    grantStore.close();
    identity.close();
    catalog.close();
    keys.close();
    throw err;
  }
  audit.log.on('failed', (err) =>
    logger.error({ code: err.code, reason: err.message }, 'the audit log could not be written (an access it could not record was refused with 503)'),
  );
  let store: BlockStore;
  try {
    store = await openBlockStore(options.blockStore ?? resolveBlockStoreConfig(options.store, options.dataDir));
  } catch (err) {
    audit.close();
    grantStore.close();
    identity.close();
    catalog.close();
    keys.close();
    throw err;
  }
  const writer = new AuditedStudyWriter({ store, catalog, keys }, audit, new StudyPatients(catalog));
  const auditedGrantService = auditedGrants(grants, audit);
  let erasures: SqliteErasureStore;
  let erasure: ErasureService;
  try {
    erasures = new SqliteErasureStore(join(options.dataDir, ERASURE_DB_FILE));
    erasure = new ErasureService({
      catalog,
      keys,
      store,
      // S3: every pack that lost a block is rewritten at once, however full it still is, so no
      // erased block's ciphertext stays in an object until gc. The cost is the live bytes of the
      // packs with dead blocks (erased ones, and any gc left in packs more than half live), each
      // dead byte rewritten away once; not O(bucket).
      ...(hasCompaction(store) ? { afterBlocksDeleted: async () => void (await store.compact({ holed: true })) } : {}),
      erasures,
      writer,
      openAnchorLeaves: () => (existsSync(join(options.dataDir, ANCHOR_DB_FILE)) ? openAnchorState(options.dataDir) : undefined),
      // The audit log's entries about the patient become unreadable with them (issue 24's keys).
      patientKeyErasers: [...(extras.patientKeyErasers ?? []), auditKeyEraser(audit)],
      anchorCertificate: (cid, at) => catalog.queueAnchor(cid, CERTIFICATE_ANCHOR_STUDY, at),
      grants: grantRevoker(identity, auditedGrantService),
      // The patient's account goes too (after the grants, which are found through it).
      accounts: { forgetPatient: (p) => void identity.forgetPatient({ id: p.patientId, issuer: p.issuer === '' ? null : p.issuer }) },
      // What a patient import kept beside the data (receipts with salts, consents, audit entries).
      records: [importRecordsEraser(options.dataDir)],
      signingKey: loadSigningKey(join(options.dataDir, SIGNING_KEY_FILE)),
      nodeId: nodeIdOf(options.dataDir),
      logger,
      ...(extras.afterErasureStep ? { afterStep: extras.afterErasureStep } : {}),
    });
    // An erasure a crash interrupted is finished before anything else is served.
    await erasure.resume();
  } catch (err) {
    await store.close?.();
    audit.close();
    grantStore.close();
    identity.close();
    catalog.close();
    keys.close();
    throw err;
  }
  return {
    options,
    store,
    catalog,
    keys,
    identity: auditedIdentity(identity, audit),
    grants: auditedGrantService,
    writer,
    audit,
    erasure,
    logger,
    async close() {
      erasures.close();
      await store.close?.();
      audit.close();
      grantStore.close();
      identity.close();
      catalog.close();
      keys.close();
    },
  };
}

/**
 * The audit log's key of an erased patient destroyed (src/audit/subject-keys.ts): their entries
 * stay in the tree, which still verifies, and no longer open. The subject of exactly this Patient
 * ID and issuer (an erasure without an issuer does not reach a same ID under another issuer).
 */
function auditKeyEraser(audit: NodeAudit): PatientKeyEraser {
  return {
    erasePatientKeys(patient) {
      audit.keys.destroy(audit.keys.subjectFor({ id: patient.patientId, issuer: patient.issuer === '' ? null : patient.issuer }));
    },
  };
}

function hasCompaction(store: BlockStore): store is BlockStore & { compact(o: { holed?: boolean }): Promise<unknown> } {
  return typeof (store as { compact?: unknown }).compact === 'function';
}

/** The grants an erasure revokes (ErasureService's GrantRevoker), over the identity and grant stores. */
function grantRevoker(identity: IdentityStore, grants: GrantService): GrantRevoker {
  const accountsOf = (patients: readonly PatientRef[]): Set<string> =>
    new Set(patients.flatMap((p) => identity.accountsFor({ id: p.patientId, issuer: p.issuer === '' ? null : p.issuer })));
  return {
    revokeForErasure({ studies, patients, studyPatients, by }) {
      const erased = new Set(studies);
      const whole = accountsOf(patients);
      let revoked = 0;
      for (const account of new Set([...whole, ...accountsOf(studyPatients)])) {
        for (const g of grants.forPatient(account, new Date())) {
          if (g.revokedAt !== null) continue;
          const named = [...(g.statement.scope.studies ?? []), ...(g.statement.scope.series ?? []).map((s) => s.study)];
          if (whole.has(account) || named.some((s) => erased.has(s))) {
            if (grants.revoke(g.statement.id, by)) revoked++;
          }
        }
      }
      return revoked;
    },
  };
}
