// What the node knows about its own data directory, checked before it opens anything in it, so
// that an operator's mistake (a master key lost or swapped, keys.db or catalog.db deleted, a
// database overwritten, files left readable by others) stops the node with a coded reason and what
// to do, instead of a node that starts empty, makes a new key, or looks as if studies were erased.
//
// The directory records its identity in node.json (0600): the format and the master key's
// fingerprint (a hash of the key, never the key). A data directory written by an older release
// gets its node.json on first start, once its keys are seen to open with the key present.
import { createHash, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync, fsyncSync, openSync, closeSync, renameSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { dirname, join } from 'node:path';
import { VaultError, type ErrorCode } from '../core/errors.ts';
import { isCorruption } from '../core/sqlite.ts';
import { KEY_DB_FILE, MASTER_KEY_FILE } from '../format/keys.ts';
import { ANCHOR_DB_FILE } from '../../anchor/state.ts';
import { S3_INDEX_FILE } from '../../storage/open.ts';

export const NODE_FILE = 'node.json';
export const CATALOG_FILE = 'catalog.db';
export const BLOCKS_DIR = 'blocks';
const FORMAT = 1;

export interface DataDirIdentity {
  format: number;
  /** masterKeyFingerprint() of the key the directory's data keys are wrapped with. */
  masterKeyFingerprint: string;
  createdAt: string;
  /** A random UUID naming this node, made once: what a patient's grant is signed for (src/grants). Absent in a node.json of an older release until nodeIdOf() adds it. */
  nodeId?: string;
}

export interface Finding {
  /** error: the node refuses to start; warning: it starts, and an operator should look; fixed: corrected at start. */
  severity: 'error' | 'warning' | 'fixed';
  code: ErrorCode | 'FILE_MODE';
  message: string;
}

/** A hash of the master key that names it without revealing it (32 hex digits). */
export function masterKeyFingerprint(key: Uint8Array): string {
  return createHash('sha256').update('dicom-vault/master-key-fingerprint/v1\0').update(key).digest('hex').slice(0, 32);
}

export function readIdentity(dir: string): DataDirIdentity | undefined {
  const path = join(dir, NODE_FILE);
  if (!existsSync(path)) return undefined;
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as Partial<DataDirIdentity>;
    if (typeof v.masterKeyFingerprint !== 'string' || typeof v.format !== 'number') throw new Error('fields missing');
    return v as DataDirIdentity;
  } catch (cause) {
    throw new VaultError(
      'DATABASE_CORRUPT',
      `${path} is damaged: restore it from a backup, or delete it to have it written again from the master key present`,
      { cause },
    );
  }
}

export function writeIdentity(dir: string, masterKey: Uint8Array): void {
  writeIdentityFile(dir, { format: FORMAT, masterKeyFingerprint: masterKeyFingerprint(masterKey), createdAt: new Date().toISOString(), nodeId: randomUUID() });
}

/** This node's id (node.json), made and recorded on first use in a directory of an older release. */
export function nodeIdOf(dir: string): string {
  const identity = readIdentity(dir);
  if (identity === undefined)
    throw new VaultError('DATA_DIR_INCOMPLETE', `${join(dir, NODE_FILE)} is missing: the data directory has not been opened yet (dicom-vault serve writes it)`);
  if (typeof identity.nodeId === 'string' && identity.nodeId !== '') return identity.nodeId;
  const nodeId = randomUUID();
  writeIdentityFile(dir, { ...identity, nodeId });
  return nodeId;
}

function writeIdentityFile(dir: string, identity: DataDirIdentity): void {
  const path = join(dir, NODE_FILE);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(identity, null, 2)}\n`, { mode: 0o600 });
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Rows of a table in a database file, read-only; DATABASE_CORRUPT for a file that is not one. */
function countRows(path: string, sql: string): number {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const row = db.prepare(sql).get() as { n: number } | undefined;
    return row?.n ?? 0;
  } catch (err) {
    if (isCorruption(err))
      throw new VaultError(
        'DATABASE_CORRUPT',
        `${path} is not a database or is damaged: restore it from a backup${path.endsWith(CATALOG_FILE) ? ', or rebuild it with `dicom-vault catalog rebuild`' : ''}`,
        { cause: err, details: { path } },
      );
    if (/no such table/.test(String((err as Error).message))) return 0;
    throw err;
  } finally {
    db?.close();
  }
}

function hasBlocks(dir: string): boolean {
  const blocks = join(dir, BLOCKS_DIR);
  if (!existsSync(blocks)) return false;
  for (const shard of readdirSync(blocks, { withFileTypes: true })) {
    if (shard.isDirectory() && readdirSync(join(blocks, shard.name)).some((f) => f.endsWith('.data'))) return true;
  }
  return false;
}

/**
 * The checks that decide whether the node may open `dir`. `fix`: tighten file modes (files 0600,
 * directories 0700), which a start does; `doctor` only reports. Blocks are not walked for modes
 * here (millions of files): their directories are, and `doctor --blocks` walks them.
 */
export function inspectDataDir(dir: string, options: { fix: boolean; masterKey?: Uint8Array }): Finding[] {
  const findings: Finding[] = [];
  if (!existsSync(dir)) return findings;
  const identity = readIdentity(dir);
  const masterPath = join(dir, MASTER_KEY_FILE);
  const keysPath = join(dir, KEY_DB_FILE);
  const catalogPath = join(dir, CATALOG_FILE);
  const hasMaster = existsSync(masterPath);
  const keyCount = existsSync(keysPath) ? countRows(keysPath, 'SELECT count(*) AS n FROM study_keys') : undefined;
  const studyCount = existsSync(catalogPath) ? countRows(catalogPath, 'SELECT count(*) AS n FROM studies') : undefined;
  for (const db of [ANCHOR_DB_FILE, S3_INDEX_FILE])
    if (existsSync(join(dir, db))) countRows(join(dir, db), "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'");
  const error = (code: ErrorCode, message: string): void => void findings.push({ severity: 'error', code, message });

  // The master key: present, private, and the one the data keys were wrapped with.
  if (hasMaster) {
    const mode = statSync(masterPath).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      error(
        'CONFIG_INVALID',
        `${masterPath} is readable by others (mode ${mode.toString(8).padStart(4, '0')}): run \`chmod 600 ${masterPath}\`, and treat the key as exposed if anyone else could read it`,
      );
    }
    const key = options.masterKey ?? readFileSync(masterPath);
    const fingerprint = masterKeyFingerprint(key);
    if (identity !== undefined && identity.masterKeyFingerprint !== fingerprint) {
      error(
        'MASTER_KEY_MISMATCH',
        `${masterPath} has fingerprint ${fingerprint}, but this data directory's keys were wrapped with the key of fingerprint ${identity.masterKeyFingerprint}: ` +
          'put that master.key back (from your backup); starting with another key would leave every stored study unreadable',
      );
    }
  } else if (identity !== undefined || (keyCount ?? 0) > 0) {
    error(
      'DATA_DIR_INCOMPLETE',
      `${masterPath} is missing, while ${keyCount ?? 0} data keys in keys.db are wrapped with the key of fingerprint ${identity?.masterKeyFingerprint ?? '(not recorded)'}: ` +
        'restore master.key from your backup; the node does not make a new one here, which would leave every stored study unreadable',
    );
  }
  // keys.db: without it every study reads as erased.
  if (keyCount === undefined && ((studyCount ?? 0) > 0 || identity !== undefined)) {
    error(
      'DATA_DIR_INCOMPLETE',
      `${keysPath} is missing while the catalog lists ${studyCount ?? 0} studies: restore keys.db from your backup (without it every study is unreadable, exactly as if erased)`,
    );
  }
  // catalog.db: without it the node would start empty over a store full of studies.
  if (studyCount === undefined && (identity !== undefined || (keyCount ?? 0) > 0 || hasBlocks(dir))) {
    error(
      'DATA_DIR_INCOMPLETE',
      `${catalogPath} is missing while this data directory holds ${keyCount ?? 0} study keys${hasBlocks(dir) ? ' and stored blocks' : ''}: restore catalog.db from your backup, or make it again from the stored studies with ` +
        '`dicom-vault catalog rebuild`; the node does not start empty over stored studies',
    );
  }
  findings.push(...modeFindings(dir, options.fix));
  return findings;
}

/**
 * Files readable or writable by others, directories open to others: made 0600 / 0700 (fix), or
 * reported. The blocks' shard directories are counted in one finding (there are a thousand).
 */
function modeFindings(dir: string, fix: boolean): Finding[] {
  const out: Finding[] = [];
  const blocks = join(dir, BLOCKS_DIR);
  let shardsOpen = 0;
  const visit = (path: string, isDir: boolean): void => {
    const mode = statSync(path).mode & 0o777;
    const want = isDir ? 0o700 : 0o600;
    if ((mode & 0o077) !== 0 && !path.endsWith(MASTER_KEY_FILE)) {
      if (fix) chmodSync(path, want);
      if (dirname(path) === blocks) shardsOpen++;
      else {
        const octal = (m: number): string => m.toString(8).padStart(4, '0');
        out.push({
          severity: fix ? 'fixed' : 'warning',
          code: 'FILE_MODE',
          message: `${path} was mode ${octal(mode)}${fix ? `, now ${octal(want)}` : `: run \`chmod ${want.toString(8)} ${path}\``}`,
        });
      }
    }
    // Block files are not walked (there may be millions; doctor --blocks does); their shards are.
    if (!isDir || dirname(path) === blocks) return;
    for (const e of readdirSync(path, { withFileTypes: true })) {
      if (path === blocks && !e.isDirectory()) continue;
      visit(join(path, e.name), e.isDirectory());
    }
  };
  visit(dir, true);
  if (shardsOpen > 0) {
    out.push({
      severity: fix ? 'fixed' : 'warning',
      code: 'FILE_MODE',
      message: `${shardsOpen} shard directories under ${blocks} were open to others${fix ? ', now 0700' : `: run \`chmod -R go-rwx ${blocks}\``}`,
    });
  }
  return out;
}

/** Throws the first error finding as its VaultError; returns the rest. */
export function checkDataDir(dir: string, options: { fix: boolean; masterKey?: Uint8Array }): Finding[] {
  const findings = inspectDataDir(dir, options);
  const first = findings.find((f) => f.severity === 'error');
  if (first !== undefined) throw new VaultError(first.code as ErrorCode, first.message, { details: { dataDir: dir } });
  return findings;
}
