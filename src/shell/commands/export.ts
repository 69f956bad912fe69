// `dicom-vault export <study> <dir>`: the study's current instances as decrypted Part 10 files,
// each verified on the way out; `--car` writes the encrypted DAG instead (car.ts).
// `dicom-vault export --patient <id> <file.car> --to <key.pem>`: every study of the patient, their
// receipts, grants and audit entries, for another provider (src/shell/patient-export.ts);
// `--patient <id> --dicom <dir>`: the patient's studies as plain Part 10 files.
import { createWriteStream } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { VaultError } from '../../core/errors.ts';
import { assertUid } from '../../dicom/uid.ts';
import { openInstance } from '../../read/instance-reader.ts';
import { createLogger } from '../log.ts';
import { openVault } from '../vault.ts';
import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseRecipientKey } from '../../transfer/car.ts';
import type { NodeOptions } from '../config.ts';
import { exportPatient, exportPatientPart10 } from '../patient-export.ts';
import { exportCar } from './car.ts';
import { EXIT, mb, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

interface ExportOpts {
  car?: boolean;
  to?: string;
  json?: boolean;
  patient?: string;
  issuer?: string;
  dicom?: boolean;
}

async function exportPatientCommand(patientId: string, target: string, opts: ExportOpts, options: NodeOptions, io: Io): Promise<number> {
  const ref = { id: patientId, issuer: opts.issuer ?? null };
  if (opts.dicom) {
    if (opts.to !== undefined) throw new VaultError('BAD_REQUEST', '--to applies to the archive, not to --dicom files (they are plain DICOM)');
    const vault = await openVault(options, createLogger('warn'));
    try {
      const r = await exportPatientPart10(vault, ref, target);
      if (opts.json) io.out(JSON.stringify(r, null, 2));
      else io.out(`exported ${r.studies} studies, ${r.instances} instances (${mb(r.bytes)} MB) as DICOM Part 10 files to ${target}`);
      return EXIT.OK;
    } finally {
      await vault.close();
    }
  }
  if (opts.to === undefined) throw new VaultError('BAD_REQUEST', "--patient needs --to <the receiving node's public-key.pem> (or --dicom for plain files)");
  let recipient: KeyObject;
  try {
    recipient = parseRecipientKey(await readFile(opts.to));
  } catch (cause) {
    if (cause instanceof VaultError) throw cause;
    throw new VaultError('BAD_REQUEST', `cannot read ${opts.to}`, { cause });
  }
  const vault = await openVault(options, createLogger('warn'));
  try {
    const r = await exportPatient(vault, ref, recipient, target, 'cli');
    if (opts.json) io.out(JSON.stringify(r, null, 2));
    else
      io.out(
        `wrote ${target}: ${r.studies} studies, ${r.versions} versions, ${r.instances} instances, ${r.receipts} receipts, ${r.blocks} blocks, ${mb(r.bytes)} MB; sealed to ${opts.to}`,
      );
    return EXIT.OK;
  } finally {
    await vault.close();
  }
}

export function exportCommand(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('export')
      .description("write the study's current instances as decrypted Part 10 files (verified), or with --car its encrypted DAG as a CAR file")
      .argument('<study-uid>', 'Study Instance UID (with --patient: the target)')
      .argument('[target]', 'a directory (files in <target>/<series>/<instance>.dcm), or with --car the CAR file to write')
      .option('--car', "write the study's whole encrypted DAG as a CAR file")
      .option('--to <public-key.pem>', '(with --car or --patient) seal the data key(s) to this node public key (see public-key)')
      .option(
        '--patient <id>',
        'every study of this Patient ID, with its receipts, grants (FHIR Consent) and audit entries, as one CAR file sealed --to the receiving node; the target is the file',
      )
      .option('--issuer <issuer>', '(with --patient) the Issuer of Patient ID; default: any')
      .option('--dicom', '(with --patient) plain DICOM Part 10 files instead, in <target>/<study>/<series>/<instance>.dcm')
      .option('--json', 'print the report as JSON'),
  ).action(async (studyArg: string, targetArg: string | undefined, opts: ExportOpts, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    if (opts.patient !== undefined) {
      if (targetArg !== undefined) throw new VaultError('BAD_REQUEST', 'with --patient give the target only: export --patient <id> <target>');
      process.exitCode = await exportPatientCommand(opts.patient, studyArg, opts, options, io);
      return;
    }
    if (opts.dicom || opts.issuer !== undefined) throw new VaultError('BAD_REQUEST', '--dicom and --issuer apply to --patient exports');
    if (targetArg === undefined) throw new VaultError('BAD_REQUEST', 'export <study-uid> <target>: the target is missing');
    const target = targetArg;
    if (opts.car) {
      process.exitCode = await exportCar(studyArg, target, opts, options, io);
      return;
    }
    if (opts.to !== undefined) throw new VaultError('BAD_REQUEST', '--to applies to --car exports');
    const study = assertUid(studyArg, 'study UID');
    const vault = await openVault(options, createLogger('warn'));
    try {
      const instances = vault.catalog.listInstances({ study });
      if (instances.length === 0) throw new VaultError('STUDY_NOT_FOUND', 'no such study');
      let bytes = 0;
      for (const inst of instances) {
        const seriesDir = join(target, inst.seriesInstanceUID);
        await mkdir(seriesDir, { recursive: true });
        const file = join(seriesDir, `${inst.sopInstanceUID}.dcm`);
        const opened = await openInstance(vault, inst);
        // Written beside the target and renamed, so a failed check leaves no file that looks whole.
        await pipeline(opened.read(), createWriteStream(`${file}.partial`));
        await rename(`${file}.partial`, file);
        bytes += inst.size;
      }
      io.out(`exported ${instances.length} instances (${mb(bytes)} MB) to ${target}`);
      process.exitCode = EXIT.OK;
    } finally {
      await vault.close();
    }
  });
}
