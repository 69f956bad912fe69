// The commands that move a study between nodes as a CAR file (src/transfer/car.ts):
//   export --car <study-uid> <file.car> [--to <recipient-public-key.pem>]   (export.ts)
//   import <file.car> [--trust FILE --rpc URL]   (a patient archive's receipts checked on that chain)
//   public-key          print this node's transport public key (what senders pass to --to)
import type { KeyObject } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { VaultError } from '../../core/errors.ts';
import { assertUid } from '../../dicom/uid.ts';
import { TRANSPORT_KEY_FILE, exportStudyCar, importStudyCar, loadOrCreateTransportKey, parseRecipientKey, publicKeyPem } from '../../transfer/car.ts';
import { withoutSubjectKeys } from '../../audit/portable.ts';
import { importPatientArchive, isPatientArchive, type PatientImportReport } from '../../transfer/patient-archive.ts';
import type { NodeOptions } from '../config.ts';
import { createLogger } from '../log.ts';
import { patientEvidenceCheck, type EvidenceVerified } from '../patient-import.ts';
import { openVault } from '../vault.ts';
import { EXIT, mb, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';
import { IMPORTS_DIR, writeImportedStudies } from '../import-records.ts';

export function carCommands(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('import')
      .description(
        "store and check a study's blocks from a CAR file (readable here if its data key was sealed to this node), or a patient archive (export --patient): all or nothing",
      )
      .argument('<file.car>', 'the CAR file')
      .option(
        '--trust <file>',
        "patient archive: trust file (dicom-vault-trust/1) of the sending node's chain, to check its receipts against (default: this node's external chain, if any)",
      )
      .option('--rpc <url>', "patient archive, with --trust: JSON-RPC endpoint of that chain (default: this node's external chain)")
      .option('--audit-key <base64>', "patient archive: the sending node's audit key as it publishes it (GET /api/audit/key), pinned")
      .option('--json', 'print the report as JSON'),
  ).action(async (file: string, opts: { json?: boolean; trust?: string; rpc?: string; auditKey?: string }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    const vault = await openVault(options, createLogger('warn'));
    try {
      const transportKey = loadOrCreateTransportKey(join(options.dataDir, TRANSPORT_KEY_FILE));
      if (await isPatientArchive(file)) {
        const evidence = await patientEvidenceCheck(options, {
          ...(opts.trust !== undefined ? { trust: opts.trust } : {}),
          ...(opts.rpc !== undefined ? { rpc: opts.rpc } : {}),
          ...(opts.auditKey !== undefined ? { auditKey: opts.auditKey } : {}),
        });
        let r: PatientImportReport;
        try {
          r = await importPatientArchive({ store: vault.store, catalog: vault.catalog, keys: vault.keys, transportKey, checkEvidence: evidence.check }, file);
        } finally {
          await evidence.close();
        }
        const audit = withoutSubjectKeys(r.audit) as object;
        // What the receiving node keeps of the sender's records: beside its data, for the operator.
        const dir = join(options.dataDir, IMPORTS_DIR, `${new Date().toISOString().replace(/[:.]/g, '-')}-${r.source.slice(0, 12)}`);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await writeFile(join(dir, 'receipts.json'), JSON.stringify(r.receipts, null, 2), { mode: 0o600 });
        await writeFile(join(dir, 'consents.fhir.json'), JSON.stringify(r.consents, null, 2), { mode: 0o600 });
        await writeFile(join(dir, 'audit.json'), JSON.stringify(audit, null, 2), { mode: 0o600 });
        await writeFile(join(dir, 'verified.json'), JSON.stringify(r.verified, null, 2), { mode: 0o600 });
        // What an erasure here looks for (src/shell/import-records.ts).
        writeImportedStudies(
          dir,
          r.studies.map((s) => s.study),
        );
        if (opts.json) io.out(JSON.stringify({ ...r, audit, saved: dir }, null, 2));
        else {
          const v = r.verified as EvidenceVerified;
          io.out(`imported the patient archive of node ${r.source} (${r.createdAt}): ${r.blocks} blocks (${mb(r.bytes)} MB), every block verified`);
          for (const s of r.studies) io.out(`readable: study ${s.study}, ${s.versions} versions, ${s.instances} instances`);
          io.out(
            v.receipts.unverified === undefined
              ? `${v.receipts.checked} of ${v.receipts.carried} anchor receipts verified on chain ${v.receipts.chain?.chainId} (${Object.entries(
                  v.receipts.verdicts,
                )
                  .map(([k, n]) => `${n} ${k}`)
                  .join(', ')})`
              : `${v.receipts.carried} anchor receipts NOT verified: ${v.receipts.unverified}`,
          );
          io.out(
            `${v.audit.proofs} audit inclusion proofs verified into the head of ${v.audit.head?.size ?? 0} entries, signed by ${v.audit.keyPinned ? 'the pinned audit key' : 'the audit key the archive carries'} (${v.audit.records} entries' details opened from their leaves; head ${v.audit.head?.anchored ?? 'absent'})`,
          );
          io.out(`anchor receipts, grants (FHIR Consent), audit entries and what was verified saved in ${dir}`);
        }
        process.exitCode = EXIT.OK;
        return;
      }
      const r = await importStudyCar({ store: vault.store, catalog: vault.catalog, keys: vault.keys, transportKey }, file);
      if (opts.json) io.out(JSON.stringify(r, null, 2));
      else {
        io.out(`imported ${r.blocks} blocks (${mb(r.bytes)} MB), root ${r.root}: every block verified`);
        io.out(r.readable ? `readable: study ${r.studyInstanceUID}, ${r.instances} instances` : `verifiable, not readable: ${r.reason}`);
      }
      process.exitCode = EXIT.OK;
    } finally {
      await vault.close();
    }
  });

  withNodeFlags(program.command('public-key').description("print this node's transport public key (PEM), for senders' export --car --to")).action(
    async (_opts: unknown, cmd: Command) => {
      const options = nodeOptionsOf(cmd);
      mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
      io.out(publicKeyPem(loadOrCreateTransportKey(join(options.dataDir, TRANSPORT_KEY_FILE))).trimEnd());
      process.exitCode = EXIT.OK;
    },
  );
}

/** `export --car`: the study's whole encrypted DAG as a CAR file, its data key sealed to `to` if given. */
export async function exportCar(studyArg: string, file: string, opts: { to?: string; json?: boolean }, options: NodeOptions, io: Io): Promise<number> {
  const study = assertUid(studyArg, 'study UID');
  let recipient: KeyObject | undefined;
  if (opts.to !== undefined) {
    try {
      recipient = parseRecipientKey(await readFile(opts.to));
    } catch (cause) {
      if (cause instanceof VaultError) throw cause;
      throw new VaultError('BAD_REQUEST', `cannot read ${opts.to}`, { cause });
    }
  }
  const vault = await openVault(options, createLogger('warn'));
  try {
    const r = await exportStudyCar(vault, study, file, recipient === undefined ? {} : { recipient });
    if (opts.json) io.out(JSON.stringify(r, null, 2));
    else {
      io.out(`wrote ${file}: root ${r.root}, ${r.versions} versions, ${r.instances} instances, ${r.blocks} blocks, ${mb(r.bytes)} MB`);
      io.out(r.keyIncluded ? `data key sealed to ${opts.to}` : 'no data key included: the receiver can verify the study but not read it');
    }
    return EXIT.OK;
  } finally {
    await vault.close();
  }
}
