// The grant store and the service the access seam asks: only grants the patient signed, for this
// node, over their own Patient IDs, not revoked, in their window, are enforced; anything else in
// grants.db (a row written by hand, a signed statement edited, a grant moved to another grantee)
// is left out and named.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isVaultError } from '../../../src/core/errors.ts';
import type { GrantStatement } from '../../../src/grants/model.ts';
import { GrantService } from '../../../src/grants/service.ts';
import { createKeyFile, type KeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement, type GrantRequest, parseGrantee } from '../../../src/grants/statement.ts';
import { GRANTS_DB_FILE, markVerified, SHARE_CODE_MAX_TTL_MS, SqliteGrantStore, type VerifiedGrant } from '../../../src/grants/store.ts';
import { IDENTITY_DB_FILE, SqliteIdentityStore } from '../../../src/identity/store.ts';

const NODE = '5d0e2c8a-1f43-4c1e-8f7b-3b2a9e6d4c21';
const T0 = new Date('2027-03-01T08:00:00Z');
const HOUR = 3_600_000;

let dir: string;
let identity: SqliteIdentityStore;
let store: SqliteGrantStore;
let warnings: Array<{ obj: object; msg: string }>;
let service: GrantService;
let alice: { account: string; key: KeyFile };
let bob: { account: string; key: KeyFile };
let keyN = 0;

function enroll(pid: string): { account: string; key: KeyFile } {
  const account = identity.createPatient([{ id: pid, issuer: null }]);
  const path = join(dir, `k${++keyN}.pem`);
  const made = createKeyFile(path, { account, node: NODE });
  identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
  return { account, key: readKeyFile(path) };
}

function statement(who: { account: string }, request: Partial<GrantRequest> = {}, node = NODE): GrantStatement {
  return draftStatement(
    { nodeId: node, account: who.account, patientIds: identity.patientIds(who.account), now: T0 },
    { grantee: parseGrantee('user:dr.house'), notAfter: new Date(T0.getTime() + 24 * HOUR), ...request },
  );
}

/** A row written straight into grants.db, as someone with the file (not the patient) could. */
function insertRaw(s: GrantStatement, proof: unknown, grantee = `user:${(s.grantee as { id: string }).id}`): void {
  const db = new DatabaseSync(join(dir, GRANTS_DB_FILE));
  db.prepare('INSERT INTO grants (id, patient, grantee, statement, proof, not_before, not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
    s.id,
    s.patient,
    grantee,
    JSON.stringify(s),
    JSON.stringify(proof),
    s.notBefore,
    s.notAfter,
    T0.toISOString(),
  );
  db.close();
}

function sqlite(sql: string, ...params: Array<string | null>): void {
  const db = new DatabaseSync(join(dir, GRANTS_DB_FILE));
  db.prepare(sql).run(...params);
  db.close();
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dicom-vault-grants-'));
  identity = SqliteIdentityStore.open(join(dir, IDENTITY_DB_FILE));
  store = SqliteGrantStore.open(join(dir, GRANTS_DB_FILE));
  warnings = [];
  service = new GrantService({ store, identity, nodeId: NODE, logger: { warn: (obj, msg) => void warnings.push({ obj, msg }) } });
  identity.addUser('dr.house', ['grantee']);
  alice = enroll('PID-ALICE');
  bob = enroll('PID-BOB');
});

afterEach(() => {
  store.close();
  identity.close();
  rmSync(dir, { recursive: true, force: true });
});

async function grantOf(who: { account: string; key: KeyFile }, request: Partial<GrantRequest> = {}): Promise<GrantStatement> {
  const s = statement(who, request);
  await service.add({ statement: s, proof: signStatement(s, who.key) }, who.account, T0);
  return s;
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(isVaultError(err, 'GRANT_INVALID')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('not refused');
}

describe('GrantService', () => {
  it('enforces a signed grant for its grantee, inside its window, in the terms of the seam', async () => {
    const s = await grantOf(alice, { studies: ['1.2.3'], dataTypes: ['images', 'reports'], actions: ['view'] });
    const at = new Date(T0.getTime() + HOUR);
    expect(service.activeFor('user:dr.house', at)).toEqual([
      {
        id: s.id,
        patientIds: [{ id: 'PID-ALICE', issuer: null }],
        scope: { studies: ['1.2.3'] },
        dataTypes: ['images', 'reports'],
        actions: ['view'],
        notAfter: new Date(s.notAfter!),
      },
    ]);
    expect(service.activeById(s.id, at)?.id).toBe(s.id);
    expect(service.activeFor('user:someone-else', at)).toEqual([]);
  });

  it('leaves a grant out before its window and from its end on', async () => {
    const s = await grantOf(alice, { notBefore: new Date(T0.getTime() + HOUR), notAfter: new Date(T0.getTime() + 2 * HOUR) });
    const at = (h: number): Date => new Date(T0.getTime() + h * HOUR);
    expect(service.activeFor('user:dr.house', at(0.5))).toEqual([]);
    expect(service.get(s.id, at(0.5))?.status).toBe('pending');
    expect(service.activeFor('user:dr.house', at(1))).toHaveLength(1);
    expect(service.activeFor('user:dr.house', at(2))).toEqual([]);
    expect(service.get(s.id, at(2))?.status).toBe('expired');
    expect(warnings).toEqual([]);
  });

  it('revokes at once: recorded with who and when, listeners told before revoke returns, link tokens dead', async () => {
    const s = await grantOf(alice, { grantee: { kind: 'link' } });
    const heard: string[] = [];
    const off = service.onRevoked((id) => heard.push(id));
    const code = service.createShareCode(alice.account, s.id, T0).code;
    const exchanged = service.exchangeShareCode(code, T0);
    if (typeof exchanged === 'string') throw new Error(exchanged);
    expect(identity.lookupToken(exchanged.token)?.revokedAt).toBeNull();
    const unused = service.createShareCode(alice.account, s.id, T0).code;
    expect(service.revoke(s.id, `patient:${alice.account}`, alice.account, new Date(T0.getTime() + HOUR))).toBe(true);
    expect(heard).toEqual([s.id]);
    expect(service.activeById(s.id, T0)).toBeUndefined();
    expect(service.get(s.id, T0)).toMatchObject({
      status: 'revoked',
      revokedAt: new Date(T0.getTime() + HOUR).toISOString(),
      revokedBy: `patient:${alice.account}`,
    });
    expect(identity.lookupToken(exchanged.token)?.revokedAt).not.toBeNull();
    expect(service.exchangeShareCode(unused, T0)).toMatch(/not in force/);
    expect(service.revoke(s.id, 'operator:x')).toBe(false);
    off();
    // Another patient cannot revoke it, nor learn that it exists.
    const other = await grantOf(alice);
    expect(() => service.revoke(other.id, `patient:${bob.account}`, bob.account)).toThrow(/no grant/);
    expect(service.get(other.id, T0)?.status).toBe('active');
  });

  it('refuses to add what the patient did not sign for this node, over their own Patient IDs, with the reason', async () => {
    const s = statement(alice);
    expect(await refusal(service.add({ statement: s, proof: signStatement(s, bob.key) }, alice.account, T0))).toBe(
      'the signing key is not one the patient registered',
    );
    expect(await refusal(service.add({ statement: s, proof: undefined }, alice.account, T0))).toBe('the grant carries no signature');
    expect(await refusal(service.add({ statement: s, proof: signStatement(s, alice.key) }, bob.account, T0))).toMatch(/another patient account/);
    const elsewhere = statement(alice, {}, 'another-node');
    expect(await refusal(service.add({ statement: elsewhere, proof: signStatement(elsewhere, alice.key) }, alice.account, T0))).toBe(
      'the grant was signed for another node',
    );
    const foreignPid = { ...statement(alice), patientIds: [{ id: 'PID-BOB', issuer: null }] };
    expect(await refusal(service.add({ statement: foreignPid, proof: signStatement(foreignPid, alice.key) }, alice.account, T0))).toMatch(
      /Patient IDs that are not bound/,
    );
    const signed = statement(alice);
    const proof = signStatement(signed, alice.key);
    expect(await refusal(service.add({ statement: { ...signed, actions: ['search', 'view', 'download'] }, proof }, alice.account, T0))).toMatch(
      /statement is not the one/,
    );
    const ended = statement(alice, { notBefore: new Date(T0.getTime() - 2 * HOUR), notAfter: new Date(T0.getTime() - HOUR) });
    expect(await refusal(service.add({ statement: ended, proof: signStatement(ended, alice.key) }, alice.account, T0))).toMatch(/already ended/);
    const nobody = statement(alice, { grantee: parseGrantee('user:nobody') });
    expect(await refusal(service.add({ statement: nobody, proof: signStatement(nobody, alice.key) }, alice.account, T0))).toMatch(/no user nobody/);
    expect(store.forPatient(alice.account)).toEqual([]);
    // What rides along with a good proof is not stored.
    const ok = statement(alice);
    await service.add({ statement: ok, proof: { ...signStatement(ok, alice.key), note: 'x'.repeat(1000) } }, alice.account, T0);
    expect(Object.keys(store.get(ok.id)!.proof).sort()).toEqual(['keyId', 'kind', 'signature']);
  });

  it('does not enforce a grant written straight into the database, and says why', async () => {
    const s = statement(alice);
    insertRaw(s, { kind: 'ed25519', keyId: alice.key.keyId, signature: Buffer.alloc(64).toString('base64url') });
    const unsigned = statement(alice);
    insertRaw(unsigned, null);
    const elsewhere = statement(alice, {}, 'another-node');
    insertRaw(elsewhere, signStatement(elsewhere, alice.key));
    expect(service.activeFor('user:dr.house', T0)).toEqual([]);
    expect(service.get(s.id, T0)).toMatchObject({ status: 'invalid', reason: expect.stringMatching(/does not verify/) });
    expect(service.get(unsigned.id, T0)).toMatchObject({ status: 'invalid', reason: 'the grant carries no signature' });
    expect(service.get(elsewhere.id, T0)).toMatchObject({ status: 'invalid', reason: 'the grant was signed for another node' });
    // Logged once per grant (no patient data: its id and the reason), not once per request.
    service.activeFor('user:dr.house', T0);
    expect(warnings.map((w) => w.obj)).toEqual([
      expect.objectContaining({ grantId: expect.any(String), reason: expect.any(String) }),
      expect.objectContaining({ grantId: expect.any(String) }),
      expect.objectContaining({ grantId: expect.any(String) }),
    ]);
    expect(JSON.stringify(warnings)).not.toMatch(/PID-ALICE/);
  });

  it('does not enforce a signed grant edited in the database, or moved to another grantee or id', async () => {
    const s = await grantOf(alice, { studies: ['1.2.3'] });
    const widened = { ...s, scope: {} };
    sqlite('UPDATE grants SET statement = ? WHERE id = ?', JSON.stringify(widened), s.id);
    expect(service.activeFor('user:dr.house', T0)).toEqual([]);
    expect(service.get(s.id, T0)?.status).toBe('invalid');
    sqlite('UPDATE grants SET statement = ? WHERE id = ?', JSON.stringify(s), s.id);
    expect(service.activeFor('user:dr.house', T0)).toHaveLength(1);
    // The row says mallory; the signed statement says dr.house.
    identity.addUser('mallory', ['grantee']);
    sqlite("UPDATE grants SET grantee = 'user:mallory' WHERE id = ?", s.id);
    expect(service.activeFor('user:mallory', T0)).toEqual([]);
    // A copy of the signed row under another id does not answer for that id.
    const db = new DatabaseSync(join(dir, GRANTS_DB_FILE));
    db.prepare(
      "INSERT INTO grants (id, patient, grantee, statement, proof, not_before, not_after, created_at) SELECT '00000000-0000-4000-8000-000000000000', patient, grantee, statement, proof, not_before, not_after, created_at FROM grants WHERE id = ?",
    ).run(s.id);
    db.close();
    expect(service.activeById('00000000-0000-4000-8000-000000000000', T0)).toBeUndefined();
  });

  it("stops enforcing a grant whose Patient IDs the patient's account no longer holds", async () => {
    const s = await grantOf(alice);
    const db = new DatabaseSync(join(dir, IDENTITY_DB_FILE));
    db.prepare('DELETE FROM patient_ids WHERE account = ?').run(alice.account);
    db.prepare("INSERT INTO patient_ids (account, patient_id, issuer) VALUES (?, 'PID-NEW', NULL)").run(alice.account);
    db.close();
    expect(service.activeById(s.id, T0)).toBeUndefined();
    expect(service.get(s.id, T0)?.reason).toMatch(/Patient IDs that are not bound/);
  });
});

describe('share codes', () => {
  it('are exchanged once, within their life, for a token that ends with the grant (12 hours at most)', async () => {
    const short = await grantOf(alice, { grantee: { kind: 'link' }, notAfter: new Date(T0.getTime() + 2 * HOUR) });
    const { code, expiresAt } = service.createShareCode(alice.account, short.id, T0);
    expect(expiresAt.getTime() - T0.getTime()).toBe(SHARE_CODE_MAX_TTL_MS);
    const first = service.exchangeShareCode(code, new Date(T0.getTime() + 60_000));
    if (typeof first === 'string') throw new Error(first);
    expect(first.expiresAt).toEqual(new Date(T0.getTime() + 2 * HOUR));
    expect(identity.lookupToken(first.token)).toMatchObject({ kind: 'link', subject: short.id });
    expect(service.exchangeShareCode(code, new Date(T0.getTime() + 61_000))).toBe('the share code was used already: a share link opens once');
    expect(service.exchangeShareCode('dvs_never-made', T0)).toBe('the share code is unknown');
    const long = await grantOf(alice, { grantee: { kind: 'link' }, notAfter: null });
    const c2 = service.createShareCode(alice.account, long.id, T0).code;
    const t2 = service.exchangeShareCode(c2, T0);
    expect(typeof t2 !== 'string' && t2.expiresAt.getTime() - T0.getTime()).toBe(12 * HOUR);
  });

  it('expire after 10 minutes at most, and are refused for a grant that is not a link or not in force', async () => {
    const s = await grantOf(alice, { grantee: { kind: 'link' } });
    const { code } = service.createShareCode(alice.account, s.id, T0);
    expect(service.exchangeShareCode(code, new Date(T0.getTime() + SHARE_CODE_MAX_TTL_MS))).toBe('the share code has expired');
    expect(() => store.createShareCode(s.id, SHARE_CODE_MAX_TTL_MS + 1, T0)).toThrow(/at most 10 minutes/);
    const toUser = await grantOf(alice);
    expect(() => service.createShareCode(alice.account, toUser.id, T0)).toThrow(/grants to "link" only/);
    expect(() => service.createShareCode(bob.account, s.id, T0)).toThrow(/no grant/);
    const later = await grantOf(alice, { grantee: { kind: 'link' }, notBefore: new Date(T0.getTime() + HOUR) });
    expect(() => service.createShareCode(alice.account, later.id, T0)).toThrow(/the grant is pending/);
    // A code whose grant was revoked after it was made is dead too.
    const c = service.createShareCode(alice.account, s.id, T0).code;
    sqlite("UPDATE grants SET revoked_at = '2027-03-01T08:00:00Z', revoked_by = 'x' WHERE id = ?", s.id);
    expect(service.exchangeShareCode(c, T0)).toMatch(/not in force/);
  });

  it('are kept as hashes only', async () => {
    const s = await grantOf(alice, { grantee: { kind: 'link' } });
    const { code } = service.createShareCode(alice.account, s.id, T0);
    store.close();
    const bytes = readFileSync(join(dir, GRANTS_DB_FILE));
    const wal = (() => {
      try {
        return readFileSync(join(dir, `${GRANTS_DB_FILE}-wal`));
      } catch {
        return Buffer.alloc(0);
      }
    })();
    expect(bytes.includes(Buffer.from(code))).toBe(false);
    expect(wal.includes(Buffer.from(code))).toBe(false);
    store = SqliteGrantStore.open(join(dir, GRANTS_DB_FILE));
  });
});

describe('SqliteGrantStore', () => {
  it('stores only grants that went through verification, keeps the proof, and lists by patient and grantee', async () => {
    const s = statement(alice);
    const proof = signStatement(s, alice.key);
    expect(() => store.add({ statement: s, proof, verified: true } as VerifiedGrant)).toThrow(/without its proof having been verified/);
    store.add(markVerified({ statement: s, proof }), T0);
    expect(store.get(s.id)).toEqual({ statement: s, proof, revokedAt: null, revokedBy: null });
    expect(() => store.add(markVerified({ statement: s, proof }), T0)).toThrow(/exists/);
    const s2 = statement(alice, { grantee: { kind: 'link' } });
    store.add(markVerified({ statement: s2, proof: signStatement(s2, alice.key) }), new Date(T0.getTime() + 1000));
    expect(store.forPatient(alice.account).map((r) => r.statement.id)).toEqual([s2.id, s.id]);
    expect(store.forGrantee('user:dr.house').map((r) => r.statement.id)).toEqual([s.id]);
    expect(store.forGrantee(`link:${s2.id}`).map((r) => r.statement.id)).toEqual([s2.id]);
    expect(store.forPatient(bob.account)).toEqual([]);
  });
});
