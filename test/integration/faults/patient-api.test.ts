// Hostile input to the patient API: proofs that are not base64, not CBOR, not JSON; statements
// too large or nested; forms too long or repeated; passkey ceremonies made of garbage. Each is
// refused as the client's fault (4xx) with a reason, and the node goes on answering.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PatientControlPolicy } from '../../../src/access/patient-control.ts';
import { openPolicy } from '../../../src/access/policy.ts';
import { GrantService } from '../../../src/grants/service.ts';
import { createKeyFile, readKeyFile, type KeyFile } from '../../../src/grants/signing.ts';
import { draftStatement, parseGrantee } from '../../../src/grants/statement.ts';
import { GRANTS_DB_FILE, SqliteGrantStore } from '../../../src/grants/store.ts';
import { IDENTITY_DB_FILE, SqliteIdentityStore } from '../../../src/identity/store.ts';
import { patientApi, SHARE_CODE_TOKEN_TYPE, TOKEN_EXCHANGE } from '../../../src/shell/api/patient.ts';
import { buildApp } from '../../../src/shell/app.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { nodeIdOf } from '../../../src/shell/data-dir.ts';
import { createLogger, logAuditSink } from '../../../src/shell/log.ts';
import { openVault, type Vault } from '../../../src/shell/vault.ts';
import { SoftAuthenticator } from '../../support/webauthn.ts';

const RP = { rpId: 'vault.test', origins: ['https://vault.test'] };

describe('patient API under hostile input', () => {
  let dir: string;
  let vault: Vault;
  let identity: SqliteIdentityStore;
  let store: SqliteGrantStore;
  let grants: GrantService;
  let app: FastifyInstance;
  let session: string;
  let account: string;
  let key: KeyFile;
  const auth = new SoftAuthenticator(RP.rpId, RP.origins[0]!);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dicom-vault-patient-faults-'));
    const options = resolveNodeOptions({ port: '0', 'data-dir': dir, 'dimse-port': 'off' }, {});
    const logger = createLogger('silent');
    vault = await openVault(options, logger);
    identity = SqliteIdentityStore.open(join(dir, IDENTITY_DB_FILE));
    store = SqliteGrantStore.open(join(dir, GRANTS_DB_FILE));
    grants = new GrantService({ store, identity, nodeId: nodeIdOf(dir), webauthn: RP });
    const policy = new PatientControlPolicy({ identity, grants, secureTransport: () => true });
    app = buildApp({
      logger,
      store: vault.store,
      keys: vault.keys,
      catalog: vault.catalog,
      writer: vault.writer,
      chunkSize: options.chunkSize,
      access: openPolicy,
      audit: logAuditSink(logger),
    });
    await app.register(patientApi({ identity, grants, identify: (r) => policy.identify(r), secureTransport: () => true, webauthn: RP }), { prefix: '/api' });
    await app.ready();
    account = identity.createPatient([{ id: 'PID-F', issuer: null }]);
    const made = createKeyFile(join(dir, 'k.pem'), { account, node: grants.nodeId });
    key = readKeyFile(join(dir, 'k.pem'));
    identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    session = identity.issueToken('patient', account, new Date(Date.now() + 3_600_000));
  });

  afterAll(async () => {
    await app?.close();
    store?.close();
    identity?.close();
    await vault?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const post = async (url: string, payload: unknown, headers: Record<string, string> = {}) => {
    const res = await app.inject({
      method: 'POST',
      url,
      headers: { authorization: `Bearer ${session}`, ...(typeof payload === 'string' ? {} : { 'content-type': 'application/json' }), ...headers },
      payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
    });
    return {
      status: res.statusCode,
      body: res.body,
      json: (() => {
        try {
          return res.json();
        } catch {
          return undefined;
        }
      })(),
    };
  };

  const statement = () =>
    draftStatement({ nodeId: grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() }, { grantee: parseGrantee('link') });

  it('refuses passkey proofs made of garbage with a reason, never a 5xx', async () => {
    const s = statement();
    const good = auth.proof('x');
    // The passkey is not registered: every garbage proof still gets a reason, not a crash.
    identity.addPatientKey(account, {
      keyId: `webauthn:${auth.id}`,
      kind: 'webauthn',
      publicKey: Buffer.from(auth.coseKey()).toString('base64url'),
      credentialId: auth.id,
      counter: 0,
    });
    const proofs = [
      { ...good, authenticatorData: '!!!not base64!!!' },
      { ...good, authenticatorData: Buffer.from('short').toString('base64url') },
      { ...good, clientDataJSON: Buffer.from('{not json').toString('base64url') },
      { ...good, clientDataJSON: Buffer.from('[]').toString('base64url') },
      { ...good, signature: 'A'.repeat(16000) },
      { ...good, signature: 'A'.repeat(20000) },
      { kind: 'webauthn', credentialId: auth.id },
      { kind: 'rsa', signature: 'x' },
      { kind: 'ed25519', keyId: key.keyId, signature: Buffer.alloc(63).toString('base64url') },
    ];
    for (const proof of proofs) {
      const r = await post('/api/patient/grants', { statement: s, proof });
      expect(r.status, JSON.stringify(proof).slice(0, 80)).toBe(400);
      expect(r.json.code).toMatch(/^(GRANT_INVALID|BAD_REQUEST)$/);
      expect(r.json.message.length).toBeGreaterThan(10);
    }
  });

  it('refuses statements too large, nested or of the wrong types', async () => {
    const s = statement() as any;
    const many = { ...s, scope: { studies: Array.from({ length: 1001 }, (_, i) => `1.2.3.${i}`) } };
    expect((await post('/api/patient/grants', { statement: many, proof: { kind: 'ed25519', keyId: 'k', signature: 's' } })).json.message).toMatch(
      /more than 1000/,
    );
    // Nested deeper than any recursive walk of it can go (written as text: JSON.stringify could not).
    const depth = 100_000;
    const text = JSON.stringify({ statement: { ...s, scope: '@' }, proof: { kind: 'ed25519', keyId: 'k', signature: 's' } });
    const deep = await post('/api/patient/grants', text.replace('"@"', `${'{"scope":'.repeat(depth)}{}${'}'.repeat(depth)}`), {
      'content-type': 'application/json',
    });
    expect(deep.status).toBe(400);
    const typed = await post('/api/patient/grants', { statement: { ...s, patientIds: 'PID-F' }, proof: { kind: 'ed25519' } });
    expect(typed.status).toBe(400);
    const tooBig = await post('/api/patient/grants', `{"statement":"${'x'.repeat(2 * 1024 * 1024)}"}`, { 'content-type': 'application/json' });
    expect(tooBig.status).toBe(413);
  });

  it('refuses token requests that are too long, repeated, or hold impossible codes', async () => {
    const form = (body: string) => post('/api/token', body, { 'content-type': 'application/x-www-form-urlencoded' });
    expect((await form(`grant_type=${'x'.repeat(10_000)}`)).status).toBe(413);
    expect((await form('grant_type=a&grant_type=b')).status).toBe(400);
    const long = await form(
      new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: 'dvs_'.padEnd(4000, 'A'), subject_token_type: SHARE_CODE_TOKEN_TYPE }).toString(),
    );
    expect(long.json).toEqual({ error: 'invalid_grant', error_description: 'the share code is unknown', share_code: 'unknown' });
    expect((await form('%%%=%%%')).status).toBe(400);
  });

  it('refuses passkey ceremonies made of garbage', async () => {
    const options = await post('/api/patient/keys/options', {});
    expect(options.status).toBe(200);
    const cred = auth.create(options.json) as any;
    const broken = { ...cred, response: { ...cred.response, attestationObject: Buffer.from('not cbor').toString('base64url') } };
    const r = await post('/api/patient/keys', { webauthn: broken });
    expect(r.status).toBe(400);
    expect(r.json.message).toMatch(/passkey registration was refused/);
    const s = await post('/api/patient/session', { webauthn: { id: 'x', rawId: 'x', type: 'public-key', response: { clientDataJSON: '@@' } } });
    expect(s.status).toBe(401);
    const missing = await post('/api/patient/session', { webauthn: { id: 'x' } });
    expect(missing.status).toBe(400);
  });

  it('still answers afterwards', async () => {
    const r = await app.inject({ method: 'GET', url: '/api/patient', headers: { authorization: `Bearer ${session}` } });
    expect(r.statusCode).toBe(200);
    expect(r.json().account).toBe(account);
  });
});
