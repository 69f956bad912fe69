// The operator's erasure commands (issue 25):
//   erase --study UID | --patient ID [--issuer I] [--reason TEXT]   erase now; prints the signed certificate
//   erasure requests [--state S]                                    patients' requests
//   erasure approve <id> | erasure refuse <id> --reason TEXT          decide one (approve carries it out)
//   erasure certificate <id> | erasure key                           a stored certificate; the node's public signing key
//   hold place <study> --reason TEXT [--until DATE] | hold lift <study> | hold list   retention holds
// Every command opens the data directory like the node does (openVault), so an erasure a crash
// interrupted is finished first; they may run beside a running node (SQLite locks; the node reads
// each key row on every use, so an erased key stops its reads at once).
import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { VaultError } from '../../core/errors.ts';
import { assertUid } from '../../dicom/uid.ts';
import { SIGNING_KEY_FILE, loadSigningKey, publicKeyOf, type ErasureCertificate } from '../../erasure/certificate.ts';
import type { ErasureTarget } from '../../erasure/service.ts';
import type { ErasureRequest, RequestState } from '../../erasure/store.ts';
import type { IdentityStore } from '../../identity/store.ts';
import { createLogger } from '../log.ts';
import { CATALOG_FILE, openVault, type Vault } from '../vault.ts';
import { EXIT, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

/** The operator as the records name them: --operator, else the OS account running the command. */
function operatorOf(opts: { operator?: string }): string {
  return `operator:${opts.operator ?? userInfo().username}`;
}

async function withVault<T>(cmd: Command, fn: (vault: Vault) => Promise<T>): Promise<T> {
  const options = nodeOptionsOf(cmd);
  if (!existsSync(join(options.dataDir, CATALOG_FILE))) throw new VaultError('CONFIG_INVALID', `no dicom-vault data in ${options.dataDir} (pass --data-dir)`);
  const vault = await openVault(options, createLogger('warn'));
  try {
    return await fn(vault);
  } finally {
    await vault.close();
  }
}

function printCertificate(c: ErasureCertificate, json: boolean, io: Io): void {
  if (json) {
    io.out(JSON.stringify(c, null, 2));
    return;
  }
  io.out(`erased ${c.studies.length} ${c.studies.length === 1 ? 'study' : 'studies'}${c.patientKey ? " and the patient's key" : ''} at ${c.erasedAt}`);
  io.out(`certificate ${c.id} (signed by this node; \`dicom-vault erasure certificate ${c.id} --json\` prints it)`);
  for (const s of c.studies) io.out(`  study commitment ${s.commitment}: ${s.blocks} blocks deleted, ${s.anchored.length} anchored commitments`);
}

/** What an approved request erases: the study, or every Patient ID bound to the account. */
export function targetsOf(r: ErasureRequest, identity: Pick<IdentityStore, 'patientIds'>): ErasureTarget[] {
  if (r.scope === 'study') {
    if (r.studyInstanceUID === null) throw new VaultError('INTERNAL', `erasure request ${r.id} names no study`);
    return [{ kind: 'study', studyInstanceUID: r.studyInstanceUID }];
  }
  const ids = identity.patientIds(r.account);
  if (ids.length === 0) throw new VaultError('NOT_FOUND', `the account ${r.account} of erasure request ${r.id} has no Patient ID`);
  return ids.map((p) => ({ kind: 'patient', patientId: p.id, ...(p.issuer !== null ? { issuer: p.issuer } : {}) }));
}

function describeRequest(r: ErasureRequest): string {
  const what = r.scope === 'study' ? `study ${r.studyInstanceUID ?? '(erased)'}` : 'every study of the patient';
  const decided = r.decidedBy ? ` by ${r.decidedBy} at ${r.decidedAt}` : '';
  return `${r.id}  ${r.state.padEnd(8)} ${r.createdAt}  account ${r.account}: ${what}${decided}${r.reason ? `; reason: ${r.reason}` : ''}${r.certificateId ? `; certificate ${r.certificateId}` : ''}`;
}

export function eraseCommands(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('erase')
      .description(
        'erase a study or every study of a patient: destroys their keys and anchor salts, purges the catalog, deletes their blocks, and prints a signed erasure certificate (refused, with the hold named, for a study under a retention hold)',
      )
      .option('--study <uid>', 'the Study Instance UID')
      .option('--patient <id>', 'the Patient ID (every issuer unless --issuer)')
      .option('--issuer <issuer>', 'Issuer of Patient ID, with --patient')
      .option('--reason <text>', 'why (recorded in the certificate)')
      .option('--operator <name>', 'who erases (default: the OS account)')
      .option('--json', 'print the certificate as JSON'),
  ).action(async (opts: { study?: string; patient?: string; issuer?: string; reason?: string; operator?: string; json?: boolean }, cmd: Command) => {
    if ((opts.study === undefined) === (opts.patient === undefined)) throw new VaultError('BAD_REQUEST', 'give exactly one of --study UID and --patient ID');
    if (opts.issuer !== undefined && opts.patient === undefined) throw new VaultError('BAD_REQUEST', '--issuer goes with --patient');
    const target: ErasureTarget =
      opts.study !== undefined
        ? { kind: 'study', studyInstanceUID: assertUid(opts.study, 'study UID') }
        : { kind: 'patient', patientId: opts.patient!, ...(opts.issuer !== undefined ? { issuer: opts.issuer } : {}) };
    await withVault(cmd, async (vault) => {
      const c = await vault.erasure.erase(target, { requestedBy: operatorOf(opts), ...(opts.reason !== undefined ? { reason: opts.reason } : {}) });
      printCertificate(c, opts.json === true, io);
    });
    process.exitCode = EXIT.OK;
  });

  const erasure = program.command('erasure').description("patients' erasure requests, certificates, and the node's signing key");
  withNodeFlags(
    erasure
      .command('requests')
      .description("patients' erasure requests, oldest first")
      .option('--state <state>', 'only pending, refused, approved, done or failed')
      .option('--json', 'as JSON'),
  ).action(async (opts: { state?: RequestState; json?: boolean }, cmd: Command) => {
    await withVault(cmd, async (vault) => {
      const list = vault.erasure.store.requests(opts.state !== undefined ? { state: opts.state } : {});
      if (opts.json) io.out(JSON.stringify(list, null, 2));
      else if (list.length === 0) io.out('no erasure requests');
      else for (const r of list) io.out(describeRequest(r));
    });
  });
  withNodeFlags(
    erasure
      .command('approve')
      .description('approve a pending request and carry it out (prints the certificate)')
      .argument('<id>', 'the request id')
      .option('--operator <name>', 'who approves (default: the OS account)')
      .option('--json', 'print the certificate as JSON'),
  ).action(async (id: string, opts: { operator?: string; json?: boolean }, cmd: Command) => {
    await withVault(cmd, async (vault) => {
      const r = vault.erasure.store.request(id);
      if (r === undefined) throw new VaultError('NOT_FOUND', `no erasure request ${id}`);
      const c = await vault.erasure.approve(id, operatorOf(opts), targetsOf(r, vault.identity));
      printCertificate(c, opts.json === true, io);
    });
  });
  withNodeFlags(
    erasure
      .command('refuse')
      .description('refuse a pending request; the patient is shown the reason')
      .argument('<id>', 'the request id')
      .requiredOption('--reason <text>', 'why (e.g. the retention duty that applies)')
      .option('--operator <name>', 'who refuses (default: the OS account)'),
  ).action(async (id: string, opts: { reason: string; operator?: string }, cmd: Command) => {
    await withVault(cmd, async (vault) => {
      io.out(describeRequest(vault.erasure.refuse(id, operatorOf(opts), opts.reason)));
    });
  });
  withNodeFlags(erasure.command('certificate').description('a stored erasure certificate (JSON)').argument('<id>', 'the certificate id')).action(
    async (id: string, _opts: unknown, cmd: Command) => {
      await withVault(cmd, async (vault) => {
        const json = vault.erasure.store.certificate(id);
        if (json === undefined) throw new VaultError('NOT_FOUND', `no erasure certificate ${id}`);
        io.out(JSON.stringify(JSON.parse(json), null, 2));
      });
    },
  );

  withNodeFlags(erasure.command('key').description("the node's public signing key (base64url SPKI DER): publish it, to check certificates against")).action(
    async (_opts: unknown, cmd: Command) => {
      const options = nodeOptionsOf(cmd);
      if (!existsSync(join(options.dataDir, CATALOG_FILE)))
        throw new VaultError('CONFIG_INVALID', `no dicom-vault data in ${options.dataDir} (pass --data-dir)`);
      io.out(publicKeyOf(loadSigningKey(join(options.dataDir, SIGNING_KEY_FILE))));
    },
  );

  const hold = program.command('hold').description('retention holds: a held study is not erased (the hold is named in the refusal)');
  withNodeFlags(
    hold
      .command('place')
      .description('place (or replace) a retention hold on a study')
      .argument('<study-uid>', 'Study Instance UID')
      .requiredOption('--reason <text>', 'the duty it follows, shown when an erasure is refused')
      .option('--until <date>', 'ISO 8601 end of the hold (default: until lifted)')
      .option('--operator <name>', 'who places it (default: the OS account)'),
  ).action(async (study: string, opts: { reason: string; until?: string; operator?: string }, cmd: Command) => {
    await withVault(cmd, async (vault) => {
      const h = vault.erasure.placeHold(assertUid(study, 'study UID'), opts.reason, operatorOf(opts), opts.until ?? null);
      io.out(`hold on ${h.studyInstanceUID}: ${h.reason}${h.until ? ` until ${h.until}` : ' until lifted'}`);
    });
  });
  withNodeFlags(hold.command('lift').description('lift the hold of a study').argument('<study-uid>', 'Study Instance UID')).action(
    async (study: string, _opts: unknown, cmd: Command) => {
      await withVault(cmd, async (vault) => {
        if (!vault.erasure.store.liftHold(assertUid(study, 'study UID'))) throw new VaultError('NOT_FOUND', `no hold on ${study}`);
        io.out(`hold on ${study} lifted`);
      });
    },
  );
  withNodeFlags(hold.command('list').description('holds in force').option('--json', 'as JSON')).action(async (opts: { json?: boolean }, cmd: Command) => {
    await withVault(cmd, async (vault) => {
      const holds = vault.erasure.store.holds(new Date().toISOString());
      if (opts.json) io.out(JSON.stringify(holds, null, 2));
      else if (holds.length === 0) io.out('no holds');
      else
        for (const h of holds)
          io.out(`${h.studyInstanceUID}: ${h.reason} (${h.until ? `until ${h.until}` : 'until lifted'}; placed by ${h.placedBy} at ${h.placedAt})`);
    });
  });
}
