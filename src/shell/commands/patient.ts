// `dicom-vault patient ...`: patients' control over who sees their imaging (issue 23).
//
//   patient enroll --patient-id ID       the hospital binds an account to Patient IDs: a one-time code (72 h)
//   patient register --code C --key-file F   the patient makes a key file (Ed25519, 0600) and registers it
//   patient grant --key-file F --to NAME ...  a grant, signed with the key file here (no server needed)
//   patient grants                       the grants and where each stands (a grant that does not verify says why)
//   patient revoke GRANT                 at once; with --key-file as the patient, else as the operator
//   patient link GRANT --key-file F      a share link for a grant to `link` (single-use code, 10 minutes)
//   patient export                       the grants as a FHIR R4 Bundle of Consents
//
// Like the other commands these work on the data directory itself; a running node sees the result
// at its next request (a revocation made here does not cut a response already streaming in the node:
// that needs the node's own API).
import { accessSync, constants, existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import type { PatientRef } from '../../catalog/scope.ts';
import { VaultError } from '../../core/errors.ts';
import { assertUid } from '../../dicom/uid.ts';
import { consentBundle } from '../../grants/fhir.ts';
import { DATA_TYPES, type DataType, GRANT_ACTIONS, type GrantAction, type GrantRecord } from '../../grants/model.ts';
import type { GrantCheck, GrantService } from '../../grants/service.ts';
import { createKeyFile, type KeyFile, readKeyFile, signStatement } from '../../grants/signing.ts';
import { draftStatement, granteeLabel, parseGrantee, parseUntil } from '../../grants/statement.ts';
import { SHARE_CODE_MAX_TTL_MS } from '../../grants/store.ts';
import type { IdentityStore } from '../../identity/store.ts';
import type { NodeOptions } from '../config.ts';
import { createLogger } from '../log.ts';
import { openVault } from '../vault.ts';
import { shareUrl } from '../api/patient.ts';
import { EXIT, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';
import { verifyInclusion } from '../../../anchor/merkle.ts';
import { openLeaf } from '../../audit/entry.ts';
import { verifyHeadSignature } from '../../audit/head.ts';
import { verifyConsistency } from '../../audit/tree.ts';
import type { NodeAudit } from '../audit.ts';
import { anchoredAuditHeads, auditPublicKey } from './audit.ts';

/** An enrollment code is good for this long unless told otherwise. 72 hours. */
export const DEFAULT_ENROLLMENT_HOURS = 72;

interface PatientContext {
  identity: IdentityStore;
  grants: GrantService;
  nodeId: string;
  options: NodeOptions;
  audit: NodeAudit;
}

async function withContext<T>(options: NodeOptions, fn: (ctx: PatientContext) => T | Promise<T>): Promise<T> {
  const logger = createLogger('warn');
  // The same checks and the same node.json as every command that opens the data directory.
  const vault = await openVault(options, logger);
  try {
    return await fn({ identity: vault.identity, grants: vault.grants, nodeId: vault.grants.nodeId, options, audit: vault.audit });
  } finally {
    await vault.close();
  }
}

function list(v: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), v];
}

/** The key file's account, checked against this node and the account's registered keys. */
function patientOf(ctx: PatientContext, key: KeyFile): string {
  if (key.account === undefined) throw new VaultError('BAD_REQUEST', 'the key file names no account (was it made by `dicom-vault patient register`?)');
  if (key.node !== undefined && key.node !== ctx.nodeId)
    throw new VaultError('BAD_REQUEST', `the key file was registered with node ${key.node}; this data directory is node ${ctx.nodeId}`);
  if (!ctx.identity.patientKeys(key.account).some((k) => k.kind === 'ed25519' && k.keyId === key.keyId)) {
    throw new VaultError('BAD_REQUEST', "the key file's key is not registered for its account on this node");
  }
  return key.account;
}

function describe(r: GrantRecord & GrantCheck): string {
  const s = r.statement;
  const scope = [
    s.scope.studies ? `studies ${s.scope.studies.join(' ')}` : '',
    s.scope.series ? `series ${s.scope.series.map((x) => x.series).join(' ')}` : '',
    s.scope.modalities ? `modalities ${s.scope.modalities.join(' ')}` : '',
  ].filter((x) => x !== '');
  const until = s.notAfter ?? 'revoked';
  return (
    `${s.id}  ${r.status.padEnd(7)}  to ${granteeLabel(s.grantee)}; ${s.dataTypes.join(', ')}; ${s.actions.join(', ')}; ` +
    `${scope.length > 0 ? scope.join('; ') : 'all studies'}; from ${s.notBefore} until ${until}` +
    (r.revokedAt !== null ? `; revoked ${r.revokedAt} by ${r.revokedBy}` : '') +
    (r.reason !== undefined ? `; NOT ENFORCED: ${r.reason}` : '')
  );
}

function asJson(r: GrantRecord & GrantCheck): object {
  return {
    ...r.statement,
    signedWith: r.proof.kind,
    status: r.status,
    ...(r.reason !== undefined ? { reason: r.reason } : {}),
    revokedAt: r.revokedAt,
    revokedBy: r.revokedBy,
  };
}

interface Flags {
  patientId?: string[];
  issuer?: string;
  account?: string;
  validFor?: string;
  code?: string;
  keyFile?: string;
  to?: string;
  study?: string[];
  series?: string[];
  modality?: string[];
  data?: string[];
  action?: string[];
  from?: string;
  until?: string;
  openEnded?: boolean;
  baseUrl?: string;
  json?: boolean;
  verify?: boolean;
  grantee?: string;
  limit?: string;
  auditKey?: string;
}

function seriesOf(flags: Flags): { studies?: string[]; series?: Array<{ study: string; series: string }> } {
  const studies = (flags.study ?? []).map((s) => assertUid(s, 'the study UID'));
  if (flags.series === undefined || flags.series.length === 0) return studies.length > 0 ? { studies } : {};
  const series = flags.series.map((raw) => {
    const slash = raw.indexOf('/');
    if (slash > 0) return { study: assertUid(raw.slice(0, slash), 'the study UID of --series'), series: assertUid(raw.slice(slash + 1), 'the series UID') };
    if (studies.length !== 1) throw new VaultError('BAD_REQUEST', `--series ${raw}: name its study with one --study, or write --series STUDY_UID/SERIES_UID`);
    return { study: studies[0]!, series: assertUid(raw, 'the series UID') };
  });
  // A grant's scope is one conjunction: whole studies and some series of others do not mix.
  if (studies.some((st) => !series.some((x) => x.study === st))) {
    throw new VaultError('BAD_REQUEST', 'a grant covers whole studies or some of their series, not both: make one grant for each');
  }
  return { series };
}

function enumList<T extends string>(values: string[] | undefined, allowed: readonly T[], flag: string): T[] | undefined {
  if (values === undefined) return undefined;
  return values
    .flatMap((v) => v.split(','))
    .map((v) => {
      if (!(allowed as readonly string[]).includes(v)) throw new VaultError('BAD_REQUEST', `${flag} ${v}: one of ${allowed.join(', ')}`);
      return v as T;
    });
}

function duration(raw: string): number {
  const m = /^(\d{1,5})([mhd])$/.exec(raw);
  if (m === null) throw new VaultError('BAD_REQUEST', `--valid-for ${raw}: a duration such as 30m, 72h or 7d`);
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
}

async function enroll(ctx: PatientContext, flags: Flags, io: Io): Promise<number> {
  const ids = (flags.patientId ?? []).map((id): PatientRef => ({ id, issuer: flags.issuer ?? null }));
  if (ids.length === 0) throw new VaultError('BAD_REQUEST', 'name the patient with --patient-id (repeat it for more IDs)');
  for (const r of ids) if (r.id === '' || r.id.length > 64) throw new VaultError('BAD_REQUEST', 'a Patient ID is 1-64 characters');
  let account = flags.account;
  if (account !== undefined) {
    const held = ctx.identity.patientIds(account);
    if (held.length === 0) throw new VaultError('NOT_FOUND', `no patient account ${account}`);
    if (!ids.every((r) => held.some((h) => h.id === r.id && h.issuer === r.issuer))) {
      throw new VaultError('BAD_REQUEST', `account ${account} is not bound to every Patient ID given`);
    }
  } else {
    for (const r of ids) {
      const existing = ctx.identity.accountsFor(r);
      if (existing.length > 0) {
        throw new VaultError(
          'CONFLICT',
          `Patient ID ${r.id} is bound to account ${existing.join(', ')} already: pass --account to give it a new enrollment code (a new key or device)`,
        );
      }
    }
    account = ctx.identity.createPatient(ids);
  }
  const validMs = duration(flags.validFor ?? `${DEFAULT_ENROLLMENT_HOURS}h`);
  const expiresAt = new Date(Date.now() + validMs);
  const code = ctx.identity.createEnrollment(account, expiresAt);
  if (flags.json) io.out(JSON.stringify({ account, patientIds: ctx.identity.patientIds(account), code, expiresAt: expiresAt.toISOString(), node: ctx.nodeId }));
  else {
    io.out(`account ${account}, bound to ${ctx.identity.patientIds(account).length} Patient ID(s)`);
    io.out(`enrollment code (give it to the patient; usable once, until ${expiresAt.toISOString()}):`);
    io.out(code);
    io.out('the patient registers a passkey on the web page, or a key file: dicom-vault patient register --code CODE --key-file FILE');
  }
  return EXIT.OK;
}

async function register(ctx: PatientContext, flags: Flags, io: Io): Promise<number> {
  if (flags.code === undefined || flags.keyFile === undefined) throw new VaultError('BAD_REQUEST', 'give --code and --key-file');
  const path = flags.keyFile;
  // Checked before the code is used up (the file names the account, known only once it is):
  // a code is not spent on a path that cannot be written. The file is still made with O_EXCL.
  if (existsSync(path)) throw new VaultError('BAD_REQUEST', `${path} exists: a key file is never overwritten (choose another path)`);
  accessSync(dirname(resolve(path)), constants.W_OK);
  const account = ctx.identity.consumeEnrollment(flags.code, new Date());
  if (account === undefined) throw new VaultError('BAD_REQUEST', 'the enrollment code is unknown, used or expired: ask the hospital for a new one');
  const made = createKeyFile(path, { account, node: ctx.nodeId });
  ctx.identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
  if (flags.json) io.out(JSON.stringify({ account, keyId: made.keyId, keyFile: path, node: ctx.nodeId }));
  else io.out(`registered key ${made.keyId} for account ${account}; the private key is in ${path} (mode 0600): keep it, and keep it private`);
  return EXIT.OK;
}

async function grant(ctx: PatientContext, flags: Flags, io: Io): Promise<number> {
  if (flags.keyFile === undefined || flags.to === undefined) throw new VaultError('BAD_REQUEST', 'give --key-file and --to');
  if (flags.openEnded && flags.until !== undefined) throw new VaultError('BAD_REQUEST', '--until and --open-ended exclude each other');
  const key = readKeyFile(flags.keyFile);
  const account = patientOf(ctx, key);
  const now = new Date();
  const notBefore = flags.from === undefined ? now : parseUntil(flags.from, now);
  const statement = draftStatement(
    { nodeId: ctx.nodeId, account, patientIds: ctx.identity.patientIds(account), now },
    {
      grantee: parseGrantee(flags.to),
      ...seriesOf(flags),
      ...(flags.modality !== undefined ? { modalities: flags.modality } : {}),
      ...(flags.data !== undefined ? { dataTypes: enumList<DataType>(flags.data, DATA_TYPES, '--data')! } : {}),
      ...(flags.action !== undefined ? { actions: enumList<GrantAction>(flags.action, GRANT_ACTIONS, '--action')! } : {}),
      notBefore,
      ...(flags.openEnded ? { notAfter: null } : flags.until !== undefined ? { notAfter: parseUntil(flags.until, now) } : {}),
    },
  );
  const record = await ctx.grants.add({ statement, proof: signStatement(statement, key) }, account, now);
  const shown = { ...record, ...ctx.grants.check(record, now) };
  io.out(flags.json ? JSON.stringify(asJson(shown)) : `granted: ${describe(shown)}`);
  return EXIT.OK;
}

function grantsOf(ctx: PatientContext, flags: Flags): string {
  if (flags.keyFile !== undefined) return patientOf(ctx, readKeyFile(flags.keyFile));
  if (flags.account !== undefined) return flags.account;
  if (flags.patientId !== undefined && flags.patientId.length === 1) {
    const accounts = ctx.identity.accountsFor({ id: flags.patientId[0]!, issuer: flags.issuer ?? null });
    if (accounts.length !== 1)
      throw new VaultError(
        'NOT_FOUND',
        accounts.length === 0 ? 'no patient account for that Patient ID' : `several accounts (${accounts.join(', ')}): pass --account`,
      );
    return accounts[0]!;
  }
  throw new VaultError('BAD_REQUEST', 'whose grants? give --key-file (the patient), or --account or one --patient-id (an operator)');
}

async function grants(ctx: PatientContext, flags: Flags, io: Io): Promise<number> {
  const account = grantsOf(ctx, flags);
  const all = ctx.grants.forPatient(account, new Date());
  if (flags.json) io.out(JSON.stringify(all.map(asJson)));
  else if (all.length === 0) io.out('no grants');
  else for (const r of all) io.out(describe(r));
  return all.some((r) => r.status === 'invalid') ? EXIT.PROBLEMS : EXIT.OK;
}

async function revoke(ctx: PatientContext, grantId: string, flags: Flags, io: Io): Promise<number> {
  let by = `operator:${userInfo().username}`;
  let owner: string | undefined;
  if (flags.keyFile !== undefined) {
    owner = patientOf(ctx, readKeyFile(flags.keyFile));
    by = `patient:${owner}`;
  }
  const changed = ctx.grants.revoke(grantId, by, owner);
  const record = ctx.grants.get(grantId, new Date())!;
  if (flags.json) io.out(JSON.stringify({ ...asJson(record), changed }));
  else io.out(changed ? `revoked ${grantId}` : `${grantId} was revoked already (${record.revokedAt} by ${record.revokedBy})`);
  return EXIT.OK;
}

async function link(ctx: PatientContext, grantId: string, flags: Flags, io: Io): Promise<number> {
  if (flags.keyFile === undefined) throw new VaultError('BAD_REQUEST', 'give --key-file: a share link is made by the patient');
  const account = patientOf(ctx, readKeyFile(flags.keyFile));
  const { code, expiresAt } = ctx.grants.createShareCode(account, grantId, new Date(), SHARE_CODE_MAX_TTL_MS);
  const base =
    flags.baseUrl ?? ctx.options.publicUrl ?? `http://${ctx.options.host.includes(':') ? `[${ctx.options.host}]` : ctx.options.host}:${ctx.options.port}`;
  const url = shareUrl(base, code);
  if (flags.json) io.out(JSON.stringify({ grant: grantId, url, code, expiresAt: expiresAt.toISOString() }));
  else {
    io.out(`share link (open it, or send it, before ${expiresAt.toISOString()}; it works once):`);
    io.out(url);
  }
  return EXIT.OK;
}

async function exportFhir(ctx: PatientContext, flags: Flags, io: Io): Promise<number> {
  const account = grantsOf(ctx, flags);
  const now = new Date();
  const entries = ctx.grants
    .forPatient(account, now)
    .filter((r) => r.status !== 'invalid')
    .map((r) => ({ record: r, status: r.status }));
  io.out(JSON.stringify(consentBundle(entries, now), null, flags.json ? undefined : 2));
  return EXIT.OK;
}

/**
 * (the patient) Who accessed their imaging: their audit entries, newest first; with --verify, each
 * entry's inclusion proof, the head's signature under the node's key, and the head's consistency
 * with the latest anchored head, whose receipt is checked on the chain.
 */
async function auditOf(ctx: PatientContext, flags: Flags, io: Io): Promise<number> {
  const account = patientOf(ctx, readKeyFile(resolve(flags.keyFile!)));
  const { audit } = ctx;
  const subjects = audit.keys.subjectsOf(ctx.identity.patientIds(account));
  const limit = flags.limit === undefined ? 100 : Number(flags.limit);
  if (!Number.isSafeInteger(limit) || limit < 1) throw new VaultError('BAD_REQUEST', '--limit must be a whole number above 0');
  const rows = audit.store
    .query({ subjects, limit: 100_000 })
    .map((e) => ({ e, r: openLeaf(e.leaf, audit.keys.key(e.subject) ?? Buffer.alloc(32)) }))
    .filter(({ r }) => flags.grantee === undefined || r?.who.id === flags.grantee || r?.who.grant === flags.grantee || r?.what.grant === flags.grantee)
    .filter(({ r }) => flags.study === undefined || flags.study.includes(r?.what.study ?? ''))
    .slice(0, limit);
  audit.log.note({ kind: 'audit-read', who: { id: `patient:${account}`, roles: ['patient'] }, what: { action: 'audit log read (cli)' } }, subjects[0]);
  audit.log.flush();
  const head = audit.log.signHead() ?? audit.store.latestHead();
  const problems: string[] = [];
  let anchoredSize = 0;
  if (flags.verify === true && head !== undefined) {
    const key = auditPublicKey(ctx.options.dataDir, flags.auditKey);
    if (!verifyHeadSignature(head, key)) problems.push(`the head of ${head.size} entries is not signed by the node's audit key`);
    const { heads: anchors, onChain } = await anchoredAuditHeads(ctx.options);
    for (const a of anchors.filter((x) => !x.ok)) problems.push(`anchored head ${a.cid}: ${a.detail}`);
    const anchored = audit.store
      .heads()
      .filter((h) => anchors.some((a) => a.ok && a.cid === h.cid))
      .at(-1);
    if (anchored !== undefined) {
      if (!verifyConsistency(anchored.size, head.size, audit.log.consistency(anchored.size, head.size), anchored.root, head.root))
        problems.push(`the head of ${head.size} entries is not consistent with the anchored head of ${anchored.size}: two histories`);
      else anchoredSize = anchored.size;
      if (!onChain) io.err('note: anchored heads checked against the anchor database only (no chain reachable)');
    }
    for (const { e } of rows) {
      if (e.index >= head.size || !verifyInclusion(e.leaf, e.index, head.size, audit.log.inclusion(e.index, head.size), head.root))
        problems.push(`entry ${e.index} is not in the signed head of ${head.size} entries`);
    }
  }
  if (flags.json) {
    io.out(
      JSON.stringify(
        {
          account,
          head: head === undefined ? null : { size: head.size, root: Buffer.from(head.root).toString('base64'), time: head.time, cid: head.cid },
          ...(flags.verify === true ? { verified: problems.length === 0, anchoredThrough: anchoredSize, problems } : {}),
          entries: rows.map(({ e, r }) => ({ index: e.index, time: new Date(e.time).toISOString(), record: r ?? null })),
        },
        null,
        2,
      ),
    );
  } else {
    for (const { e, r } of rows) {
      const when = new Date(e.time).toISOString();
      if (r === undefined) io.out(`${e.index} ${when} (unreadable: its key was destroyed)`);
      else
        io.out(
          `${e.index} ${when} ${r.kind} ${r.who.id} ${r.what.action}${r.what.dataType ? `/${r.what.dataType}` : ''}${r.what.study ? ` study ${r.what.study}` : ''}${r.what.status ? ` -> ${r.what.status}` : ''}${r.why ? ` (${r.why})` : ''}${e.index < anchoredSize ? ' [anchored]' : ''}`,
        );
    }
    if (flags.verify === true)
      io.out(
        problems.length === 0
          ? `OK: ${rows.length} entries proven in the signed head of ${head?.size ?? 0} entries${anchoredSize > 0 ? `, anchored through entry ${anchoredSize - 1}` : ''}`
          : `FAILED:\n${problems.join('\n')}`,
      );
  }
  return problems.length === 0 ? EXIT.OK : EXIT.PROBLEMS;
}

export function patientCommands(program: Command, io: Io = stdio): void {
  const patient = program.command('patient').description("patients' control of who sees their imaging: enrollment, keys, grants, share links");
  const flags = ['data-dir', 'store', 'public-url'] as const;
  const run = (fn: (ctx: PatientContext, opts: Flags) => Promise<number>) => async (opts: Flags, cmd: Command) => {
    process.exitCode = await withContext(nodeOptionsOf(cmd), (ctx) => fn(ctx, opts));
  };
  const runWith = (fn: (ctx: PatientContext, arg: string, opts: Flags) => Promise<number>) => async (arg: string, opts: Flags, cmd: Command) => {
    process.exitCode = await withContext(nodeOptionsOf(cmd), (ctx) => fn(ctx, arg, opts));
  };
  withNodeFlags(
    patient
      .command('enroll')
      .description('bind a patient account to Patient IDs and print a one-time enrollment code for the patient')
      .option('--patient-id <id>', 'a Patient ID (0010,0020) of the patient; repeat for more', list)
      .option('--issuer <issuer>', 'Issuer of Patient ID (0010,0021) of those IDs (default: any issuer)')
      .option('--account <account>', 'a new code for this existing account (a new key or device) instead of a new account')
      .option('--valid-for <duration>', `how long the code can be used: 30m, 72h, 7d (default: ${DEFAULT_ENROLLMENT_HOURS}h)`)
      .option('--json', 'print as JSON'),
    flags,
  ).action(run((ctx, o) => enroll(ctx, o, io)));
  withNodeFlags(
    patient
      .command('register')
      .description('(the patient) make a key file (Ed25519, mode 0600) and register it with an enrollment code')
      .requiredOption('--code <code>', 'the enrollment code from the hospital')
      .requiredOption('--key-file <file>', 'where to write the new private key (never over an existing file)')
      .option('--json', 'print as JSON'),
    flags,
  ).action(run((ctx, o) => register(ctx, o, io)));
  withNodeFlags(
    patient
      .command('grant')
      .description('(the patient) let someone see part of your imaging, signed with your key file')
      .requiredOption('--key-file <file>', 'your key file')
      .requiredOption('--to <grantee>', 'a local user (NAME or user:NAME), an OpenID subject (oidc:ISSUER#SUBJECT), or link (a share link)')
      .option('--study <uid>', 'only this study; repeat for more (default: all your studies)', list)
      .option('--series <uid>', 'only this series (of the one --study, or STUDY_UID/SERIES_UID); repeat for more', list)
      .option('--modality <m>', 'only series of this modality (CT, MR, ...); repeat for more', list)
      .option('--data <type>', `what they see: ${DATA_TYPES.join(', ')}; repeat for more (default: images)`, list)
      .option('--action <action>', `what they may do: ${GRANT_ACTIONS.join(', ')}; repeat for more (default: search, view)`, list)
      .option('--from <time>', 'when it starts: ISO 8601 time, or +DURATION (default: now)')
      .option('--until <time>', 'when it ends: ISO 8601 time or date, or +DURATION such as +12h, +7d, +2w (default: +30d)')
      .option('--open-ended', 'until you revoke it')
      .option('--json', 'print as JSON'),
    flags,
  ).action(run((ctx, o) => grant(ctx, o, io)));
  withNodeFlags(
    patient
      .command('grants')
      .description("list a patient's grants and where each stands; a grant that does not verify is named with the reason (exit 3)")
      .option('--key-file <file>', 'your key file (a patient)')
      .option('--account <account>', 'a patient account (an operator)')
      .option('--patient-id <id>', 'the account bound to this Patient ID (an operator)', list)
      .option('--issuer <issuer>', 'Issuer of Patient ID')
      .option('--json', 'print as JSON'),
    flags,
  ).action(run((ctx, o) => grants(ctx, o, io)));
  withNodeFlags(
    patient
      .command('revoke')
      .description('revoke a grant at once (with --key-file as the patient; without, as the operator)')
      .argument('<grant>', 'the grant id')
      .option('--key-file <file>', 'your key file (a patient)')
      .option('--json', 'print as JSON'),
    flags,
  ).action(runWith((ctx, g, o) => revoke(ctx, g, o, io)));
  withNodeFlags(
    patient
      .command('link')
      .description('(the patient) a share link for a grant to `link`: its code works once, within 10 minutes')
      .argument('<grant>', 'the grant id')
      .requiredOption('--key-file <file>', 'your key file')
      .option('--base-url <url>', "the node's address as the viewer reaches it (default: --public-url)")
      .option('--json', 'print as JSON'),
    flags,
  ).action(runWith((ctx, g, o) => link(ctx, g, o, io)));
  withNodeFlags(
    patient
      .command('audit')
      .description('(the patient) who accessed your imaging: your audit entries, newest first; --verify checks every proof (exit 3 on a failure)')
      .requiredOption('--key-file <file>', 'your key file')
      .option('--verify', "check each entry's inclusion proof, the head's signature, and its consistency with the anchored head (on the chain)")
      .option('--grantee <principal>', 'only entries of this principal (user:NAME, link:GRANT) or grant id')
      .option('--study <uid>', 'only entries about this study; repeat for more', list)
      .option('--limit <n>', 'at most this many entries (default 100)')
      .option('--audit-key <base64>', "the node's audit public key as you pinned it (GET /api/audit/key); default: the data directory's")
      .option('--json', 'print as JSON'),
    [...flags, 'chain', 'chain-port', 'chain-rpc', 'chain-id', 'contract'],
  ).action(run((ctx, o) => auditOf(ctx, o, io)));
  withNodeFlags(
    patient
      .command('export')
      .description("a patient's grants as a FHIR R4 Bundle of Consent resources")
      .option('--key-file <file>', 'your key file (a patient)')
      .option('--account <account>', 'a patient account (an operator)')
      .option('--patient-id <id>', 'the account bound to this Patient ID (an operator)', list)
      .option('--issuer <issuer>', 'Issuer of Patient ID')
      .option('--json', 'one line of JSON'),
    flags,
  ).action(run((ctx, o) => exportFhir(ctx, o, io)));
}
