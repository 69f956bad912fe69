// `dicom-vault audit verify`: the whole audit log against its signed and anchored heads
// (src/audit/verify.ts), on the data directory, beside a running node or without one.
// `dicom-vault audit export --balp`: its accesses as a FHIR Bundle of IHE BALP AuditEvents. Every head
// the anchor database says was anchored is checked on the chain with its receipt (the embedded
// chain's state file when the node is down); without a chain the anchored heads are taken from
// the anchor database alone, and the report says so.
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import type { Command } from 'commander';
import { openAnchorState, openChainReader } from '../../../anchor/anchoring.ts';
import { ANCHOR_DB_FILE } from '../../../anchor/state.ts';
import { verifyReceipt } from '../../../anchor/verify-receipt.ts';
import { toBalpEntries } from '../../audit/balp-export.ts';
import { openLeaf } from '../../audit/entry.ts';
import { AUDIT_SIGNING_KEY_FILE, publicKeyOf } from '../../audit/head.ts';
import { catalogPatients } from '../../audit/patients.ts';
import { AUDIT_DB_FILE, SqliteAuditLogStore } from '../../audit/store.ts';
import { type AnchoredHead, verifyLog } from '../../audit/verify.ts';
import { VaultError } from '../../core/errors.ts';
import type { NodeOptions } from '../config.ts';
import { AUDIT_ANCHOR_STUDY } from '../audit.ts';
import { createLogger } from '../log.ts';
import { openVault } from '../vault.ts';
import { EXIT, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

/** The node's audit public key: pinned by the caller (--audit-key), else from the data directory's signing key. */
export function auditPublicKey(dataDir: string, pinned?: string): KeyObject {
  if (pinned !== undefined) return publicKeyOf(pinned);
  const path = join(dataDir, AUDIT_SIGNING_KEY_FILE);
  if (!existsSync(path)) throw new VaultError('DATA_DIR_INCOMPLETE', `${path} is missing: this data directory has no audit log yet`);
  return createPublicKey(createPrivateKey(readFileSync(path)));
}

/**
 * The audit heads anchored so far, each checked: on the chain with its receipt when a chain can be
 * reached, else against the anchor database only (`onChain` false).
 */
export async function anchoredAuditHeads(options: NodeOptions): Promise<{ heads: AnchoredHead[]; onChain: boolean }> {
  if (!existsSync(join(options.dataDir, ANCHOR_DB_FILE))) return { heads: [], onChain: false };
  const state = openAnchorState(options.dataDir);
  try {
    const confirmed = state.studyLeaves(AUDIT_ANCHOR_STUDY).filter((l) => l.state === 'confirmed');
    if (confirmed.length === 0) return { heads: [], onChain: false };
    const chain = options.anchor === undefined ? undefined : await openChainReader(options.anchor, options.dataDir).catch(() => undefined);
    try {
      const heads: AnchoredHead[] = [];
      for (const leaf of confirmed) {
        const receipt = state.receipt(leaf.root);
        if (receipt === undefined) continue;
        if (chain === undefined) {
          heads.push({ cid: leaf.root, ok: true, detail: 'in the anchor database (not checked on a chain)' });
          continue;
        }
        const v = await verifyReceipt({ receipt, client: chain.client, expectedCid: leaf.root });
        heads.push({
          cid: leaf.root,
          ok: v.ok,
          detail: v.ok ? `anchored in block ${v.anchor?.blockNumber} of chain ${v.anchor?.chainId}` : `receipt fails: ${v.failed.join(', ')}`,
        });
      }
      return { heads, onChain: chain !== undefined };
    } finally {
      await chain?.close();
    }
  } finally {
    state.close();
  }
}

export function auditCommands(program: Command, io: Io = stdio): void {
  const audit = program.command('audit').description('the tamper-evident audit log of every access');
  withNodeFlags(
    audit
      .command('verify')
      .description('check the whole audit log against its signed and anchored heads; names the first entry changed, dropped, inserted or moved (exit 3)')
      .option('--audit-key <base64>', "the node's audit public key as pinned (GET /api/audit/key); default: the data directory's own")
      .option('--json', 'print the report as JSON'),
  ).action(async (opts: { auditKey?: string; json?: boolean }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    const path = join(options.dataDir, AUDIT_DB_FILE);
    if (!existsSync(path)) throw new VaultError('DATA_DIR_INCOMPLETE', `${path} is missing: this data directory has no audit log yet`);
    const publicKey = auditPublicKey(options.dataDir, opts.auditKey);
    const { heads: anchors, onChain } = await anchoredAuditHeads(options);
    const store = SqliteAuditLogStore.open(path);
    try {
      const report = verifyLog(store, publicKey, anchors);
      if (opts.json) io.out(JSON.stringify({ ...report, anchorsCheckedOnChain: onChain }, null, 2));
      else {
        io.out(
          `audit log: ${report.entries} entries, ${report.heads} signed heads, ${report.anchoredHeads} anchored${anchors.length > 0 && !onChain ? ' (anchor database only: no chain reachable)' : ''}`,
        );
        for (const p of report.problems) io.out(`${p.kind.toUpperCase()}${p.index !== undefined ? ` entry ${p.index}` : ''}: ${p.message}`);
        io.out(
          report.ok
            ? `OK: every entry verified against the heads (through entry ${report.verifiedThrough - 1})`
            : `FAILED: ${report.problems.length} problem(s); first: ${report.first?.message}`,
        );
      }
      process.exitCode = report.ok ? EXIT.OK : EXIT.PROBLEMS;
    } finally {
      store.close();
    }
  });

  withNodeFlags(
    audit
      .command('export')
      .description('the accesses in the audit log as a FHIR R4 Bundle of IHE BALP AuditEvents (reads, searches, stores, refusals), oldest first')
      .option('--balp', 'FHIR AuditEvents following IHE Basic Audit Log Patterns (the only format)')
      .option('--since <time>', 'entries recorded at or after this ISO 8601 time')
      .option('--until <time>', 'entries recorded at or before this ISO 8601 time')
      .option('--out <file>', 'write the Bundle here instead of to standard output'),
  ).action(async (opts: { balp?: boolean; since?: string; until?: string; out?: string }, cmd: Command) => {
    if (opts.balp !== true) throw new VaultError('BAD_REQUEST', 'give --balp: the export format (FHIR AuditEvents, IHE BALP)');
    const since = opts.since === undefined ? undefined : Date.parse(opts.since);
    const until = opts.until === undefined ? undefined : Date.parse(opts.until);
    if (Number.isNaN(since) || Number.isNaN(until)) throw new VaultError('BAD_REQUEST', '--since and --until are ISO 8601 times');
    const options = nodeOptionsOf(cmd);
    const vault = await openVault(options, createLogger('warn'));
    const fd = opts.out === undefined ? undefined : openSync(opts.out, 'w');
    // Written as it is read, a page of entries at a time: a log of millions of entries is never held whole.
    const write = (text: string) => (fd === undefined ? io.out(text) : void writeSync(fd, `${text}\n`));
    try {
      const { store, keys, log } = vault.audit;
      log.note({ kind: 'audit-read', who: { id: `cli:${userName()}`, method: 'none' }, what: { action: 'audit log exported (BALP, cli)' } });
      log.flush();
      const source = {
        sourceId: options.auditSyslog?.sourceId ?? hostname(),
        host: hostname(),
        ...(options.auditSyslog?.siteId !== undefined ? { enterpriseSiteId: options.auditSyslog.siteId } : {}),
      };
      const open = (e: { leaf: Uint8Array; subject: string }) => {
        const key = keys.key(e.subject);
        return key === undefined ? undefined : openLeaf(e.leaf, key);
      };
      write(`{"resourceType":"Bundle","type":"collection","timestamp":${JSON.stringify(new Date().toISOString())},"entry":[`);
      let first = true;
      const size = store.size();
      const PAGE = 1_000;
      // Oldest first, in pages by position; an access's outcome is found in its page or just after.
      for (let from = 0; from < size; from += PAGE) {
        const page = store
          .scan(from, Math.min(size, from + PAGE))
          .filter((e) => (since === undefined || e.time >= since) && (until === undefined || e.time <= until));
        const after = store.scan(from + PAGE, from + PAGE + 256);
        for (const resource of toBalpEntries(
          [...page, ...after].map((e) => ({ index: e.index, time: e.time, record: open(e) })),
          page.length,
          source,
          catalogPatients(vault.catalog),
        )) {
          write(`${first ? '' : ','}${JSON.stringify({ fullUrl: `urn:uuid:${crypto.randomUUID()}`, resource })}`);
          first = false;
        }
      }
      write(']}');
    } finally {
      if (fd !== undefined) closeSync(fd);
      await vault.close();
    }
  });
}

function userName(): string {
  try {
    return userInfo().username;
  } catch {
    return 'unknown';
  }
}
