// `dicom-vault patient ...` as a hospital and a patient run it, each command a real process on one
// data directory: enroll -> register -> grant -> grants -> link -> revoke -> export; and what it
// refuses: a used code, a key file others may read, a key that is not the account's, a grant
// that does not verify (named, exit 3).
import { chmod, copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRANTS_DB_FILE } from '../../../src/grants/store.ts';
import { IDENTITY_DB_FILE, SqliteIdentityStore } from '../../../src/identity/store.ts';
import { run } from '../../support/process.ts';

describe('dicom-vault patient', () => {
  let dir: string;
  let dataDir: string;
  const cli = (...args: string[]) => run(['patient', ...args, '--data-dir', dataDir]);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dicom-vault-patient-cli-'));
    dataDir = join(dir, 'data');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  let account: string;
  let keyFile: string;
  let grantId: string;

  it('enrolls a patient: an account bound to the Patient IDs and a one-time code', async () => {
    const r = await cli('enroll', '--patient-id', 'PID-CLI-1', '--patient-id', 'PID-CLI-2', '--json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({
      account: expect.any(String),
      code: expect.stringMatching(/^dve_/),
      patientIds: [
        { id: 'PID-CLI-1', issuer: null },
        { id: 'PID-CLI-2', issuer: null },
      ],
      node: JSON.parse(await readFile(join(dataDir, 'node.json'), 'utf8')).nodeId,
    });
    const hours = (Date.parse(out.expiresAt) - Date.now()) / 3_600_000;
    expect(hours).toBeGreaterThan(71.9);
    expect(hours).toBeLessThanOrEqual(72);
    account = out.account;

    const again = await cli('enroll', '--patient-id', 'PID-CLI-1');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/CONFLICT: Patient ID PID-CLI-1 is bound to account .* already: pass --account/);

    keyFile = join(dir, 'me.key');
    const reg = await cli('register', '--code', out.code, '--key-file', keyFile);
    expect(reg.code).toBe(0);
    expect(reg.stdout).toMatch(new RegExp(`registered key ed25519:\\S+ for account ${account}`));
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect(await readFile(keyFile, 'utf8')).toMatch(/^dicom-vault patient key[\s\S]*-----BEGIN PRIVATE KEY-----/);

    const reused = await cli('register', '--code', out.code, '--key-file', join(dir, 'other.key'));
    expect(reused.code).toBe(1);
    expect(reused.stderr).toMatch(/the enrollment code is unknown, used or expired/);
  });

  it('signs a grant with the key file, and lists it as in force', async () => {
    const identity = SqliteIdentityStore.open(join(dataDir, IDENTITY_DB_FILE));
    identity.addUser('dr.house', ['grantee']);
    identity.close();
    const r = await cli(
      'grant',
      '--key-file',
      keyFile,
      '--to',
      'dr.house',
      '--study',
      '1.2.840.1',
      '--data',
      'images',
      '--data',
      'reports',
      '--until',
      '+7d',
      '--json',
    );
    expect(r.stderr).toBe('');
    const g = JSON.parse(r.stdout);
    expect(g).toMatchObject({
      grantee: { kind: 'user', id: 'dr.house' },
      patient: account,
      scope: { studies: ['1.2.840.1'] },
      dataTypes: ['images', 'reports'],
      actions: ['search', 'view'],
      status: 'active',
      signedWith: 'ed25519',
    });
    expect((Date.parse(g.notAfter) - Date.parse(g.notBefore)) / 86_400_000).toBe(7);
    grantId = g.id;

    const unknownUser = await cli('grant', '--key-file', keyFile, '--to', 'dr.nobody');
    expect(unknownUser.stderr).toMatch(/GRANT_INVALID: there is no user dr.nobody on this node/);
    const mixed = await cli(
      'grant',
      '--key-file',
      keyFile,
      '--to',
      'link',
      '--study',
      '1.2.840.1',
      '--study',
      '1.2.840.2',
      '--series',
      '1.2.840.1/1.2.840.1.5',
    );
    expect(mixed.stderr).toMatch(/whole studies or some of their series, not both/);

    const list = await cli('grants', '--key-file', keyFile);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(
      new RegExp(`^${grantId}  active   to user dr.house; images, reports; search, view; studies 1.2.840.1; from \\S+ until \\S+\\n$`),
    );
  });

  it('makes a share link for a link grant: the code in the fragment, 10 minutes', async () => {
    const g = JSON.parse((await cli('grant', '--key-file', keyFile, '--to', 'link', '--open-ended', '--json')).stdout);
    expect(g).toMatchObject({ grantee: { kind: 'link' }, notAfter: null, status: 'active' });
    const r = await cli('link', g.id, '--key-file', keyFile, '--base-url', 'https://vault.example.org', '--json');
    const out = JSON.parse(r.stdout);
    expect(out.url).toBe(`https://vault.example.org/share#code=${out.code}`);
    expect((Date.parse(out.expiresAt) - Date.now()) / 60_000).toBeLessThanOrEqual(10);
    const notLink = await cli('link', grantId, '--key-file', keyFile);
    expect(notLink.stderr).toMatch(/share links are made for grants to "link" only/);
  });

  it('refuses a key file others may read, and a key that is not the account it names', async () => {
    const loose = join(dir, 'loose.key');
    await copyFile(keyFile, loose);
    await chmod(loose, 0o644);
    const r = await cli('grants', '--key-file', loose);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/may be read by others \(mode 0644\)/);
    // Another patient's key file, its header edited to name this account.
    const other = JSON.parse((await cli('enroll', '--patient-id', 'PID-OTHER', '--json')).stdout);
    const otherKey = join(dir, 'other-patient.key');
    await cli('register', '--code', other.code, '--key-file', otherKey);
    const forged = join(dir, 'forged.key');
    await writeFile(forged, (await readFile(otherKey, 'utf8')).replace(`Account: ${other.account}`, `Account: ${account}`), { mode: 0o600 });
    const g = await cli('grant', '--key-file', forged, '--to', 'link');
    expect(g.code).toBe(1);
    expect(g.stderr).toMatch(/the key file's key is not registered for its account/);
  });

  it('names a grant written into the database by hand as not enforced, and exits 3', async () => {
    const db = new DatabaseSync(join(dataDir, GRANTS_DB_FILE));
    const row = db.prepare('SELECT * FROM grants WHERE id = ?').get(grantId) as Record<string, string>;
    const statement = { ...JSON.parse(row.statement!), id: '11111111-2222-4333-8444-555555555555', scope: {} };
    db.prepare('INSERT INTO grants (id, patient, grantee, statement, proof, not_before, not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
      statement.id,
      row.patient!,
      row.grantee!,
      JSON.stringify(statement),
      row.proof!,
      row.not_before!,
      row.not_after!,
      new Date().toISOString(),
    );
    db.close();
    const r = await cli('grants', '--account', account, '--json');
    expect(r.code).toBe(3);
    const forged = JSON.parse(r.stdout).find((g: any) => g.id === statement.id);
    expect(forged).toMatchObject({ status: 'invalid', reason: expect.stringMatching(/does not verify/) });
    const text = await cli('grants', '--patient-id', 'PID-CLI-1');
    expect(text.stdout).toMatch(/11111111-2222-4333-8444-555555555555 {2}invalid {2}.*NOT ENFORCED: the signature does not verify/);
  });

  it('revokes at once, as the patient or as the operator, and records who', async () => {
    const r = await cli('revoke', grantId, '--key-file', keyFile, '--json');
    expect(JSON.parse(r.stdout)).toMatchObject({ id: grantId, status: 'revoked', revokedBy: `patient:${account}`, changed: true });
    const again = await cli('revoke', grantId);
    expect(again.stdout).toMatch(new RegExp(`${grantId} was revoked already \\(\\S+ by patient:${account}\\)`));
    const list = JSON.parse((await cli('grants', '--key-file', keyFile, '--json')).stdout);
    expect(list.find((g: any) => g.id === grantId)).toMatchObject({ status: 'revoked' });
    const linkGrant = list.find((g: any) => g.grantee.kind === 'link');
    const op = await cli('revoke', linkGrant.id, '--json');
    expect(JSON.parse(op.stdout).revokedBy).toMatch(/^operator:/);
  });

  it('exports the grants as a FHIR R4 Bundle of Consents (grants that do not verify left out)', async () => {
    const r = await cli('export', '--key-file', keyFile, '--json');
    const bundle = JSON.parse(r.stdout);
    expect(bundle).toMatchObject({ resourceType: 'Bundle', type: 'collection' });
    expect(bundle.entry.map((e: any) => e.resource.status)).toEqual(['inactive', 'inactive']);
    expect(bundle.entry.map((e: any) => e.resource.id)).not.toContain('11111111-2222-4333-8444-555555555555');
  });
});
