// `dicom-vault export <study> <dir>`: the study's current instances as decrypted Part 10 files,
// each verified on the way out; `--car` writes the encrypted DAG instead (car.ts).
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
import { exportCar } from './car.ts';
import { EXIT, mb, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

export function exportCommand(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('export')
      .description("write the study's current instances as decrypted Part 10 files (verified), or with --car its encrypted DAG as a CAR file")
      .argument('<study-uid>', 'Study Instance UID')
      .argument('<target>', 'a directory (files in <target>/<series>/<instance>.dcm), or with --car the CAR file to write')
      .option('--car', "write the study's whole encrypted DAG as a CAR file")
      .option('--to <public-key.pem>', '(with --car) seal the data key to this node public key (see public-key)')
      .option('--json', 'print the report as JSON'),
  ).action(async (studyArg: string, target: string, opts: { car?: boolean; to?: string; json?: boolean }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
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
