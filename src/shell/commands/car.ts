// The commands that move a study between nodes as a CAR file (src/transfer/car.ts):
//   export --car <study-uid> <file.car> [--to <recipient-public-key.pem>]   (export.ts)
//   import <file.car>
//   public-key          print this node's transport public key (what senders pass to --to)
import type { KeyObject } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { VaultError } from '../../core/errors.ts';
import { assertUid } from '../../dicom/uid.ts';
import { TRANSPORT_KEY_FILE, exportStudyCar, importStudyCar, loadOrCreateTransportKey, parseRecipientKey, publicKeyPem } from '../../transfer/car.ts';
import { importPatientArchive, isPatientArchive } from '../../transfer/patient-archive.ts';
import type { NodeOptions } from '../config.ts';
import { createLogger } from '../log.ts';
import { openVault } from '../vault.ts';
import { EXIT, mb, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

export function carCommands(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('import')
      .description(
        "store and check a study's blocks from a CAR file (readable here if its data key was sealed to this node), or a patient archive (export --patient): all or nothing",
      )
      .argument('<file.car>', 'the CAR file')
      .option('--json', 'print the report as JSON'),
  ).action(async (file: string, opts: { json?: boolean }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    const vault = await openVault(options, createLogger('warn'));
    try {
      const transportKey = loadOrCreateTransportKey(join(options.dataDir, TRANSPORT_KEY_FILE));
      if (await isPatientArchive(file)) {
        const r = await importPatientArchive({ store: vault.store, catalog: vault.catalog, keys: vault.keys, transportKey }, file);
        // What the receiving node keeps of the sender's records: beside its data, for the operator.
        const dir = join(options.dataDir, 'imports', `${new Date().toISOString().replace(/[:.]/g, '-')}-${r.source.slice(0, 12)}`);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await writeFile(join(dir, 'receipts.json'), JSON.stringify(r.receipts, null, 2), { mode: 0o600 });
        await writeFile(join(dir, 'consents.fhir.json'), JSON.stringify(r.consents, null, 2), { mode: 0o600 });
        await writeFile(join(dir, 'audit.json'), JSON.stringify(r.audit, null, 2), { mode: 0o600 });
        if (opts.json) io.out(JSON.stringify({ ...r, saved: dir }, null, 2));
        else {
          io.out(`imported the patient archive of node ${r.source} (${r.createdAt}): ${r.blocks} blocks (${mb(r.bytes)} MB), every block verified`);
          for (const s of r.studies) io.out(`readable: study ${s.study}, ${s.versions} versions, ${s.instances} instances`);
          io.out(`${r.receipts.length} anchor receipts, grants (FHIR Consent) and audit entries saved in ${dir}`);
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
