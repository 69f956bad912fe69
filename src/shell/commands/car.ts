// The CLI commands that move a study between nodes as a CAR file (see car.ts):
//   export --car <study-uid> <file.car> [--to <recipient-public-key.pem>]
//   import <file.car>
//   public-key                     print this node's transport public key (what senders pass to --to)
import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeOptions } from '../config.ts';
import { VaultError } from '../../core/errors.ts';
import { assertUid } from '../../dicom/uid.ts';
import { openVault } from '../vault.ts';
import { createLogger } from '../log.ts';
import { TRANSPORT_KEY_FILE, exportStudyCar, importStudyCar, loadOrCreateTransportKey, parseRecipientKey, publicKeyPem } from '../../transfer/car.ts';

export const CAR_CLI_OPTIONS = {
  car: { type: 'boolean' },
  to: { type: 'string' },
} as const;

export const CAR_USAGE = `  export --car <study-uid> <file.car> [--to <node-public-key.pem>]
                            write the study's whole (encrypted) DAG as a CAR file; with --to, its
                            data key travels too, sealed to that node
  import <file.car>         store and check a study's blocks from a CAR; readable here if its key was sealed to this node
  public-key                print this node's transport public key (PEM), for senders' --to`;

export interface CarCliValues {
  car?: boolean | undefined;
  to?: string | undefined;
  json?: boolean | undefined;
}

interface Io {
  out(s: string): void;
  err(s: string): void;
}

export async function runCarCommand(command: 'export' | 'import' | 'public-key', args: string[], values: CarCliValues, options: NodeOptions, io: Io): Promise<number> {
  const transportKeyPath = join(options.dataDir, TRANSPORT_KEY_FILE);
  switch (command) {
    case 'public-key': {
      mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
      io.out(publicKeyPem(loadOrCreateTransportKey(transportKeyPath)).trimEnd());
      return 0;
    }
    case 'export': {
      const study = assertUid(args[0] ?? '', 'study UID');
      const file = args[1];
      if (!file) throw new VaultError('BAD_REQUEST', 'export --car needs the CAR file to write');
      const recipient = values.to === undefined ? undefined : parseRecipientKey(await readFile(values.to));
      const vault = await openVault(options, createLogger('warn'));
      try {
        const r = await exportStudyCar(vault, study, file, recipient === undefined ? {} : { recipient });
        if (values.json) io.out(JSON.stringify(r, null, 2));
        else {
          io.out(`wrote ${file}: root ${r.root}, ${r.versions} versions, ${r.instances} instances, ${r.blocks} blocks, ${(r.bytes / 1e6).toFixed(1)} MB`);
          io.out(r.keyIncluded ? `data key sealed to ${values.to}` : 'no data key included: the receiver can verify the study but not read it');
        }
        return 0;
      } finally {
        await vault.close();
      }
    }
    case 'import': {
      const file = args[0];
      if (!file) throw new VaultError('BAD_REQUEST', 'import needs a CAR file');
      const vault = await openVault(options, createLogger('warn'));
      try {
        const transportKey = loadOrCreateTransportKey(transportKeyPath);
        const r = await importStudyCar({ store: vault.store, catalog: vault.catalog, keys: vault.keys, transportKey }, file);
        if (values.json) io.out(JSON.stringify(r, null, 2));
        else {
          io.out(`imported ${r.blocks} blocks (${(r.bytes / 1e6).toFixed(1)} MB), root ${r.root}: every block verified`);
          io.out(r.readable ? `readable: study ${r.studyInstanceUID}, ${r.instances} instances` : `verifiable, not readable: ${r.reason}`);
        }
        return 0;
      } finally {
        await vault.close();
      }
    }
  }
}
