// `dicom-vault user add|list|revoke`: local accounts and their bearer tokens (src/identity/store.ts).
// A token is printed once, when the account is made; only its hash is kept.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { VaultError } from '../../core/errors.ts';
import { isRole, ROLES, type Role } from '../../identity/principal.ts';
import { IDENTITY_DB_FILE, SqliteIdentityStore, type IdentityStore } from '../../identity/store.ts';
import { EXIT, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

export function userCommands(program: Command, io: Io = stdio): void {
  const user = program.command('user').description('local accounts: add, list, revoke');
  withNodeFlags(
    user
      .command('add')
      .description('add an account and print its bearer token (once)')
      .argument('<name>', 'account name (letters, digits, . _ @ -)')
      .requiredOption('--role <roles>', `comma-separated roles: ${ROLES.join(', ')}`)
      .option('--json', 'print as JSON'),
  ).action((name: string, opts: { role: string; json?: boolean }, cmd: Command) => {
    const roles = opts.role.split(',').map((r) => r.trim());
    const bad = roles.filter((r) => !isRole(r));
    if (bad.length > 0) throw new VaultError('BAD_REQUEST', `unknown role ${bad.join(', ')}: roles are ${ROLES.join(', ')}`);
    withStore(cmd, (store) => {
      const { token } = store.addUser(name, roles as Role[]);
      if (opts.json) io.out(JSON.stringify({ name, roles, token }));
      else {
        io.out(token);
        io.err(`user ${name} (${roles.join(', ')}): the token above is shown once; send it as "Authorization: Bearer <token>"`);
      }
    });
    process.exitCode = EXIT.OK;
  });
  withNodeFlags(user.command('list').description('every account, its roles, and whether it is revoked').option('--json', 'print as JSON')).action(
    (opts: { json?: boolean }, cmd: Command) => {
      withStore(cmd, (store) => {
        const users = store.users();
        if (opts.json) io.out(JSON.stringify(users, null, 2));
        else for (const u of users) io.out(`${u.name}\t${u.roles.join(',')}\tcreated ${u.createdAt}${u.revokedAt ? `\tREVOKED ${u.revokedAt}` : ''}`);
      });
      process.exitCode = EXIT.OK;
    },
  );
  withNodeFlags(user.command('revoke').description('revoke an account and every token of it, at once').argument('<name>', 'account name')).action(
    (name: string, _opts: unknown, cmd: Command) => {
      withStore(cmd, (store) => {
        if (!store.revokeUser(name)) throw new VaultError('NOT_FOUND', `no active account ${name}`);
        io.out(`revoked ${name}: its tokens are refused from the next request on`);
      });
      process.exitCode = EXIT.OK;
    },
  );
}

function withStore(cmd: Command, fn: (store: IdentityStore) => void): void {
  const { dataDir } = nodeOptionsOf(cmd);
  // The first account may come before the first start (the operator's own, to call the node with).
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const store = SqliteIdentityStore.open(join(dataDir, IDENTITY_DB_FILE));
  try {
    fn(store);
  } finally {
    store.close();
  }
}
