// A tired operator's mistakes with the data directory: a master key deleted or swapped, keys.db or
// catalog.db deleted, a database overwritten with garbage, files readable by others. The node
// refuses to start with a coded one-line reason and what to do; it never makes a new key over
// stored studies, never starts empty over them, and `dicom-vault doctor` finds the same.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { masterKeyFingerprint, NODE_FILE } from '../../../src/shell/data-dir.ts';
import { isVaultError, type ErrorCode } from '../../../src/core/errors.ts';
import { bytesOf } from '../../support/generated.ts';
import { retrieve, stow } from '../../support/dicomweb.ts';
import { run } from '../../support/process.ts';
import { startTestNode } from '../../support/node.ts';

let dir: string;

async function seed(): Promise<{ study: string; bytes: Buffer }> {
  const node = await startTestNode({ dataDir: dir });
  const s = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed: 9101 });
  const bytes = await bytesOf(s.instances[0]!);
  expect((await stow(node.url, [bytes])).status).toBe(200);
  await node.stop();
  return { study: s.studyInstanceUID, bytes };
}

async function refusal(): Promise<{ code: ErrorCode; message: string }> {
  try {
    const node = await startTestNode({ dataDir: dir });
    await node.stop();
  } catch (err) {
    if (isVaultError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('the node started');
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dv-data-dir-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('a data directory the node refuses', () => {
  it('a deleted master key: refused, naming the fingerprint to restore; no new key is made', async () => {
    await seed();
    const key = await readFile(join(dir, 'master.key'));
    await unlink(join(dir, 'master.key'));
    const r = await refusal();
    expect(r.code).toBe('DATA_DIR_INCOMPLETE');
    expect(r.message).toContain(masterKeyFingerprint(key));
    expect(r.message).toMatch(/restore master\.key/);
    await expect(stat(join(dir, 'master.key'))).rejects.toThrow();
  });

  it('another master key: refused, naming both fingerprints; the right one restored serves again', async () => {
    const { study, bytes } = await seed();
    const key = await readFile(join(dir, 'master.key'));
    const other = randomBytes(32);
    await writeFile(join(dir, 'master.key'), other, { mode: 0o600 });
    const r = await refusal();
    expect(r.code).toBe('MASTER_KEY_MISMATCH');
    expect(r.message).toContain(masterKeyFingerprint(key));
    expect(r.message).toContain(masterKeyFingerprint(other));
    await writeFile(join(dir, 'master.key'), key, { mode: 0o600 });
    const node = await startTestNode({ dataDir: dir });
    try {
      const back = await retrieve(`${node.url}/studies/${study}`);
      expect(Buffer.compare(back.parts[0]!.body, bytes)).toBe(0);
    } finally {
      await node.stop();
    }
  });

  it('another master key in a directory of the earlier release (no node.json): refused, its keys do not open', async () => {
    await seed();
    await unlink(join(dir, NODE_FILE));
    await writeFile(join(dir, 'master.key'), randomBytes(32), { mode: 0o600 });
    expect((await refusal()).code).toBe('MASTER_KEY_MISMATCH');
    await expect(stat(join(dir, NODE_FILE))).rejects.toThrow();
  });

  it('a master key readable by others: refused, with the fix named', async () => {
    await seed();
    await chmod(join(dir, 'master.key'), 0o644);
    const r = await refusal();
    expect(r.code).toBe('CONFIG_INVALID');
    expect(r.message).toContain(`chmod 600 ${join(dir, 'master.key')}`);
  });

  it('a deleted keys.db while the catalog lists studies: refused (it would look exactly like an erasure)', async () => {
    await seed();
    for (const f of await readdir(dir)) if (f.startsWith('keys.db')) await unlink(join(dir, f));
    const r = await refusal();
    expect(r.code).toBe('DATA_DIR_INCOMPLETE');
    expect(r.message).toMatch(/keys\.db is missing while the catalog lists 1 studies/);
  });

  it('a deleted catalog.db over stored studies: refused, never started empty', async () => {
    await seed();
    for (const f of await readdir(dir)) if (f.startsWith('catalog.db')) await unlink(join(dir, f));
    const r = await refusal();
    expect(r.code).toBe('DATA_DIR_INCOMPLETE');
    expect(r.message).toMatch(/catalog\.db is missing/);
    await expect(stat(join(dir, 'catalog.db'))).rejects.toThrow();
  });

  it('a garbage catalog.db: a coded one-line error from the command, no stack trace; doctor names it', async () => {
    await seed();
    for (const f of await readdir(dir)) if (f.startsWith('catalog.db')) await unlink(join(dir, f));
    await writeFile(join(dir, 'catalog.db'), randomBytes(8192));
    const r = await run(['serve', '--data-dir', dir, '--port', '0', '--chain', 'none']);
    expect(r.code).toBe(1);
    expect(
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('dicom-vault:')),
    ).toEqual([expect.stringMatching(/^dicom-vault: DATABASE_CORRUPT: .*catalog\.db/)]);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const doctor = await run(['doctor', '--data-dir', dir]);
    expect(doctor.code).toBe(3);
    expect(doctor.stdout).toMatch(/ERROR DATABASE_CORRUPT: .*catalog\.db/);
  });
});

describe('file modes', () => {
  it('makes every file 0600 and every directory 0700, in a directory that was 0755, whatever the umask', async () => {
    await chmod(dir, 0o755);
    const old = process.umask(0o022);
    try {
      await seed();
    } finally {
      process.umask(old);
    }
    const loose: string[] = [];
    const walk = async (p: string): Promise<void> => {
      const st = await stat(p);
      if ((st.mode & 0o077) !== 0) loose.push(`${p} ${(st.mode & 0o777).toString(8)}`);
      if (st.isDirectory()) for (const e of await readdir(p)) await walk(join(p, e));
    };
    await walk(dir);
    expect(loose).toEqual([]);
  });

  it('doctor reports files left readable by others, and a start tightens them', async () => {
    await seed();
    await chmod(join(dir, 'catalog.db'), 0o644);
    await mkdir(join(dir, 'extra'), { mode: 0o755 });
    await chmod(join(dir, 'extra'), 0o755);
    const before = await run(['doctor', '--data-dir', dir]);
    expect(before.code).toBe(3);
    expect(before.stdout).toContain(`WARNING FILE_MODE: ${join(dir, 'catalog.db')} was mode 0644: run \`chmod 600`);
    const node = await startTestNode({ dataDir: dir });
    await node.stop();
    const after = await run(['doctor', '--data-dir', dir]);
    expect(after.code, after.stdout).toBe(0);
    expect(after.stdout).toMatch(/^OK: /m);
  });
});
