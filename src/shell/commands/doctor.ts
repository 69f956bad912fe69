// `dicom-vault doctor`: the checks a start makes of its data directory (shell/data-dir.ts), on
// demand and without changing anything, plus an integrity check of every database and, with
// --blocks, the mode of every block file.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { Command } from 'commander';
import { isVaultError } from '../../core/errors.ts';
import { BLOCKS_DIR, inspectDataDir, type Finding } from '../data-dir.ts';
import { EXIT, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

const DATABASES = ['catalog.db', 'keys.db', 'identity.db', 'grants.db', 'anchor.db', 's3-index.db', 'erasure.db'];

export function doctorCommand(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('doctor')
      .description('check the data directory as a start would (keys, databases, file modes), changing nothing')
      .option('--blocks', 'also check the mode of every block file (walks them all)')
      .option('--json', 'print the findings as JSON'),
  ).action((opts: { blocks?: boolean; json?: boolean }, cmd: Command) => {
    const { dataDir } = nodeOptionsOf(cmd);
    let findings: Finding[];
    try {
      findings = inspectDataDir(dataDir, { fix: false });
    } catch (err) {
      if (!isVaultError(err)) throw err;
      findings = [{ severity: 'error', code: err.code, message: err.message }];
    }
    if (!existsSync(dataDir)) findings.push({ severity: 'error', code: 'CONFIG_INVALID', message: `no data directory at ${dataDir}` });
    for (const name of DATABASES) {
      const path = join(dataDir, name);
      if (existsSync(path)) findings.push(...integrity(path));
    }
    if (opts.blocks === true) findings.push(...blockModes(join(dataDir, BLOCKS_DIR)));
    const problems = findings.filter((f) => f.severity !== 'fixed');
    if (opts.json) io.out(JSON.stringify({ dataDir, ok: problems.length === 0, findings }, null, 2));
    else {
      for (const f of findings) io.out(`${f.severity.toUpperCase()} ${f.code}: ${f.message}`);
      io.out(problems.length === 0 ? `OK: ${dataDir} is consistent` : `${problems.length} problem(s) in ${dataDir}`);
    }
    process.exitCode = problems.length === 0 ? EXIT.OK : EXIT.PROBLEMS;
  });
}

/** PRAGMA quick_check, read-only: pages and indexes well formed. */
function integrity(path: string): Finding[] {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const rows = db.prepare('PRAGMA quick_check').all() as Array<{ quick_check: string }>;
    const bad = rows.map((r) => r.quick_check).filter((m) => m !== 'ok');
    return bad.length === 0 ? [] : [{ severity: 'error', code: 'DATABASE_CORRUPT', message: `${path}: ${bad.slice(0, 3).join('; ')}` }];
  } catch (err) {
    return [{ severity: 'error', code: 'DATABASE_CORRUPT', message: `${path} cannot be read as a database: ${(err as Error).message}` }];
  } finally {
    db?.close();
  }
}

function blockModes(blocks: string): Finding[] {
  if (!existsSync(blocks)) return [];
  let open = 0;
  let first: string | undefined;
  for (const shard of readdirSync(blocks, { withFileTypes: true })) {
    if (!shard.isDirectory()) continue;
    for (const f of readdirSync(join(blocks, shard.name))) {
      const path = join(blocks, shard.name, f);
      if ((statSync(path).mode & 0o077) !== 0) {
        open++;
        first ??= path;
      }
    }
  }
  return open === 0
    ? []
    : [{ severity: 'warning', code: 'FILE_MODE', message: `${open} block files are readable by others (first: ${first}): run \`chmod -R go-rwx ${blocks}\`` }];
}
