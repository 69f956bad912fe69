// GET /api/grantee/grants on a real node: a doctor sees the grants naming them, each with where it
// stands (active, then revoked with its time), and no one else's; a share link's token sees its
// one grant; without a token the answer is 401.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyFile, readKeyFile, signStatement, type KeyFile } from '../../../src/grants/signing.ts';
import { draftStatement, type GrantRequest } from '../../../src/grants/statement.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const STUDY = '1.2.826.0.1.3680043.8.498.2601';
const SERIES = '1.2.826.0.1.3680043.8.498.2601.1';

describe('GET /api/grantee/grants', () => {
  let node: TestNode;
  let work: string;
  let account: string;
  let key: KeyFile;
  let house: string;
  let wilson: string;
  let api: string;

  async function grant(request: GrantRequest): Promise<string> {
    const identity = node.vault.identity;
    const statement = draftStatement({ nodeId: node.vault.grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() }, request);
    await node.vault.grants.add({ statement, proof: signStatement(statement, key) }, account);
    return statement.id;
  }
  const mine = async (token: string | null) => {
    const res = await fetch(`${api}/grantee/grants`, { headers: { authorization: token === null ? '' : `Bearer ${token}` } });
    return { status: res.status, json: (await res.json()) as any };
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-grantee-api-'));
    node = await startTestNode();
    api = `${new URL(node.url).origin}/api`;
    account = node.vault.identity.createPatient([{ id: 'PAT-G', issuer: null }]);
    const made = createKeyFile(join(work, 'patient.key'), { account, node: node.vault.grants.nodeId });
    node.vault.identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    key = readKeyFile(join(work, 'patient.key'));
    house = node.vault.identity.addUser('dr.house', ['grantee']).token;
    wilson = node.vault.identity.addUser('dr.wilson', ['grantee']).token;
  });
  afterAll(async () => {
    await node?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("lists the caller's grants with where each stands, and no one else's", async () => {
    const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 + 3_600_000);
    const id = await grant({ grantee: { kind: 'user', id: 'dr.house' }, series: [{ study: STUDY, series: SERIES }], notAfter });
    const other = await grant({ grantee: { kind: 'user', id: 'dr.wilson' }, studies: [STUDY], notAfter: null });

    const a = await mine(house);
    expect(a.status).toBe(200);
    expect(a.json.grants).toEqual([
      expect.objectContaining({
        id,
        status: 'active',
        scope: { series: [{ study: STUDY, series: SERIES }] },
        notAfter: notAfter.toISOString().replace('.000', ''),
        revokedAt: null,
      }),
    ]);
    expect((await mine(wilson)).json.grants.map((g: any) => [g.id, g.notAfter])).toEqual([[other, null]]);

    expect(node.vault.grants.revoke(id, `patient:${account}`, account)).toBe(true);
    const after = await mine(house);
    expect(after.json.grants).toHaveLength(1);
    expect(after.json.grants[0].status).toBe('revoked');
    expect(Date.parse(after.json.grants[0].revokedAt)).toBeGreaterThan(Date.now() - 60_000);
  });

  it("a share link's token sees its one grant", async () => {
    const id = await grant({ grantee: { kind: 'link' }, studies: [STUDY] });
    const { code } = node.vault.grants.createShareCode(account, id);
    const exchanged = node.vault.grants.exchangeShareCode(code);
    if (typeof exchanged === 'string') throw new Error(exchanged);
    const res = await mine(exchanged.token);
    expect(res.json.grants.map((g: any) => g.id)).toEqual([id]);
  });

  it('answers 401 without a token', async () => {
    const res = await mine(null);
    expect(res.status).toBe(401);
    expect(res.json.code).toBe('UNAUTHORIZED');
  });
});
