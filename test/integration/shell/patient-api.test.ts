// The patient API on a real node (the app factory, a real data directory, real HTTP): enrollment
// with a passkey (a software authenticator) and with a key file, sessions, drafting and signing a
// grant, share links through the RFC 8693 exchange, revocation that kills the link's token at once,
// the FHIR export, and the OpenAPI document. The access policy of the DICOMweb routes stays open
// here (it is not wired yet): the API is tested on its own.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PatientControlPolicy } from '../../../src/access/patient-control.ts';
import { openPolicy } from '../../../src/access/policy.ts';
import { GrantService } from '../../../src/grants/service.ts';
import { createKeyFile, readKeyFile, signSession, signStatement, type KeyFile } from '../../../src/grants/signing.ts';
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
const loopback = (request: FastifyRequest): boolean => ['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(request.raw.socket.remoteAddress ?? '');

describe('patient API', () => {
  let dataDir: string;
  let vault: Vault;
  let identity: SqliteIdentityStore;
  let store: SqliteGrantStore;
  let grants: GrantService;
  let policy: PatientControlPolicy;
  let app: FastifyInstance;
  let base: string;
  const revoked: string[] = [];
  const auth = new SoftAuthenticator(RP.rpId, RP.origins[0]!);

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-patient-api-'));
    const options = resolveNodeOptions({ port: '0', 'data-dir': dataDir, 'dimse-port': 'off' }, {});
    const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
    vault = await openVault(options, logger);
    identity = SqliteIdentityStore.open(join(dataDir, IDENTITY_DB_FILE));
    store = SqliteGrantStore.open(join(dataDir, GRANTS_DB_FILE));
    grants = new GrantService({ store, identity, nodeId: nodeIdOf(dataDir), webauthn: RP, logger });
    grants.onRevoked((id) => revoked.push(id));
    policy = new PatientControlPolicy({ identity, grants, secureTransport: loopback });
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
    await app.register(
      patientApi({ identity, grants, identify: (r) => policy.identify(r), secureTransport: loopback, webauthn: RP, publicUrl: 'https://vault.test' }),
      {
        prefix: '/api',
      },
    );
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/api`;
    identity.addUser('dr.house', ['grantee']);
  });

  afterAll(async () => {
    await app?.close();
    store?.close();
    identity?.close();
    await vault?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const call = async (method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: any; headers: Headers }> => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text === '' ? undefined : JSON.parse(text), headers: res.headers };
  };

  const exchange = (fields: Record<string, string>): Promise<Response> =>
    fetch(`${base}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });

  let account: string;
  let session: string;

  it('enrolls with the hospital code once, and registers a passkey under the session it opens', async () => {
    account = identity.createPatient([{ id: 'PID-API', issuer: null }]);
    const code = identity.createEnrollment(account, new Date(Date.now() + 3_600_000));
    const enrolled = await call('POST', '/patient/enrollment', { code });
    expect(enrolled.status).toBe(201);
    expect(enrolled.json).toMatchObject({ account, node: grants.nodeId, patientIds: [{ id: 'PID-API', issuer: null }], token: expect.stringMatching(/^dvp_/) });
    expect((await call('POST', '/patient/enrollment', { code })).json).toMatchObject({
      code: 'BAD_REQUEST',
      message: expect.stringMatching(/unknown, used or expired/),
    });

    const options = await call('POST', '/patient/keys/options', undefined, enrolled.json.token);
    expect(options.status).toBe(200);
    expect(options.json).toMatchObject({ rp: { id: RP.rpId }, attestation: 'none', authenticatorSelection: { userVerification: 'required' } });
    expect(options.json.pubKeyCredParams.map((p: { alg: number }) => p.alg)).toEqual([-8, -7, -257]);
    const registered = await call('POST', '/patient/keys', { webauthn: auth.create(options.json) }, enrolled.json.token);
    expect(registered.status).toBe(201);
    expect(registered.json).toEqual({ keyId: `webauthn:${auth.id}`, kind: 'webauthn' });
    // The same registration response again: its challenge is spent.
    expect((await call('POST', '/patient/keys', { webauthn: auth.create(options.json) }, enrolled.json.token)).json.message).toMatch(/refused/);
  });

  it('opens a session with the passkey, once per challenge', async () => {
    const c = await call('POST', '/patient/session/challenge');
    expect(c.json.webauthn).toMatchObject({ rpId: RP.rpId, challenge: c.json.challenge, userVerification: 'required' });
    // A discoverable passkey names the account itself (its user handle).
    const assertion = auth.assertJson(c.json.challenge);
    const s = await call('POST', '/patient/session', { webauthn: assertion });
    expect(s.status).toBe(200);
    expect(s.json).toMatchObject({ token: expect.stringMatching(/^dvp_/), tokenType: 'Bearer', account });
    session = s.json.token;
    const replay = await call('POST', '/patient/session', { webauthn: assertion });
    expect(replay.status).toBe(401);
    expect(replay.json.message).toMatch(/challenge is unknown, used or expired/);
    const me = await call('GET', '/patient', undefined, session);
    expect(me.json).toMatchObject({
      account,
      node: grants.nodeId,
      patientIds: [{ id: 'PID-API', issuer: null }],
      keys: [{ kind: 'webauthn', credentialId: auth.id }],
    });
  });

  it('refuses a call without a patient session, with the bearer challenge', async () => {
    const none = await call('GET', '/patient/grants');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer realm="dicom-vault"/);
    expect((await call('GET', '/patient/grants', undefined, 'dvp_not-a-token')).status).toBe(401);
    expect((await call('GET', '/patient/grantees')).status).toBe(401);
  });

  let linkGrant: string;

  it('adds a grant the patient signed with the passkey over the drafted statement, and nothing else', async () => {
    const draft = await call('POST', '/patient/grants/draft', { to: 'link', studies: ['1.2.3.4'], until: '+1d' }, session);
    expect(draft.status).toBe(200);
    expect(draft.json.statement).toMatchObject({ node: grants.nodeId, patient: account, grantee: { kind: 'link' }, scope: { studies: ['1.2.3.4'] } });
    expect(draft.json.webauthn).toMatchObject({ challenge: draft.json.challenge, allowCredentials: [{ id: auth.id, type: 'public-key' }] });
    const proof = auth.proof(draft.json.challenge);
    // The same proof over a widened statement is refused, and says why.
    const widened = await call('POST', '/patient/grants', { statement: { ...draft.json.statement, scope: {} }, proof }, session);
    expect(widened.status).toBe(400);
    expect(widened.json).toMatchObject({ code: 'GRANT_INVALID', message: expect.stringMatching(/signed another challenge/) });
    const added = await call('POST', '/patient/grants', { statement: draft.json.statement, proof }, session);
    expect(added.status).toBe(201);
    expect(added.json).toMatchObject({ statement: draft.json.statement, signedWith: 'webauthn', status: 'active' });
    linkGrant = draft.json.statement.id;
    // A body that is not a grant at all: the schema refuses it.
    expect((await call('POST', '/patient/grants', { statement: draft.json.statement }, session)).json).toMatchObject({
      code: 'BAD_REQUEST',
      message: expect.stringMatching(/proof/),
    });
    const list = await call('GET', '/patient/grants', undefined, session);
    expect(list.json.map((g: any) => [g.statement.id, g.status])).toEqual([[linkGrant, 'active']]);
  });

  it('hands out a share link whose code travels in the fragment and is exchanged once for a token bound to the grant', async () => {
    const link = await call('POST', `/patient/grants/${linkGrant}/links`, undefined, session);
    expect(link.status).toBe(201);
    const url = new URL(link.json.url);
    expect(url.origin).toBe('https://vault.test');
    expect(url.search).toBe('');
    expect(url.pathname).toBe('/share');
    expect(url.hash).toBe(`#code=${link.json.code}`);
    expect(Date.parse(link.json.expiresAt) - Date.now()).toBeLessThanOrEqual(10 * 60_000);

    const res = await exchange({ grant_type: TOKEN_EXCHANGE, subject_token: link.json.code, subject_token_type: SHARE_CODE_TOKEN_TYPE });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const token = (await res.json()) as any;
    expect(token).toEqual({
      access_token: expect.stringMatching(/^dvl_/),
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      expires_in: expect.any(Number),
    });
    expect(token.expires_in).toBeGreaterThan(0);
    expect(token.expires_in).toBeLessThanOrEqual(12 * 3600);

    const again = await exchange({ grant_type: TOKEN_EXCHANGE, subject_token: link.json.code, subject_token_type: SHARE_CODE_TOKEN_TYPE });
    expect(again.status).toBe(400);
    expect(await again.json()).toEqual({
      error: 'invalid_grant',
      error_description: 'the share code was used already: a share link opens once',
      share_code: 'used',
    });
    expect(await (await exchange({ grant_type: 'password', subject_token: 'x', subject_token_type: SHARE_CODE_TOKEN_TYPE })).json()).toMatchObject({
      error: 'unsupported_grant_type',
    });
    expect(await (await exchange({ grant_type: TOKEN_EXCHANGE })).json()).toMatchObject({ error: 'invalid_request' });
    const twice = await fetch(`${base}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `grant_type=${encodeURIComponent(TOKEN_EXCHANGE)}&subject_token=a&subject_token=b&subject_token_type=${encodeURIComponent(SHARE_CODE_TOKEN_TYPE)}`,
    });
    expect(twice.status).toBe(400);

    // The token identifies a share-link holder, bound to this one grant, which is in force.
    const request = {
      headers: { authorization: `Bearer ${token.access_token}` },
      raw: { socket: { remoteAddress: '127.0.0.1' } },
    } as unknown as FastifyRequest;
    const holder = await policy.identify(request);
    expect(holder).toMatchObject({ id: `link:${linkGrant}`, method: 'share-link', grantId: linkGrant });
    expect((await policy.authorize(holder, { action: 'retrieve', level: 'study', studyInstanceUID: '1.2.3.4', dataType: 'frames' })).grants).toEqual([
      { id: linkGrant, notAfter: expect.any(Date) },
    ]);

    // Revoked by the patient: at once, the token is dead and listeners (running streams) are told.
    const r = await call('POST', `/patient/grants/${linkGrant}/revoke`, undefined, session);
    expect(r.json).toMatchObject({ status: 'revoked', revokedBy: `patient:${account}` });
    expect(revoked).toContain(linkGrant);
    await expect(policy.identify(request)).rejects.toThrow(/revoked/);
    expect((await call('POST', `/patient/grants/${linkGrant}/links`, undefined, session)).json.message).toMatch(/the grant is revoked/);
  });

  it('exports the grants as a FHIR Bundle of Consents', async () => {
    const res = await fetch(`${base}/patient/grants/fhir`, { headers: { authorization: `Bearer ${session}` } });
    expect(res.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
    const bundle = await res.json();
    expect(bundle).toMatchObject({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [{ resource: { resourceType: 'Consent', id: linkGrant, status: 'inactive' } }],
    });
    const one = await fetch(`${base}/patient/grants/${linkGrant}/fhir`, { headers: { authorization: `Bearer ${session}` } });
    expect(await one.json()).toMatchObject({ resourceType: 'Consent', id: linkGrant });
  });

  it('works with a key file too: enrollment with its public key, a session by signing the challenge, a signed grant', async () => {
    const other = identity.createPatient([{ id: 'PID-KEYFILE', issuer: 'HOSP' }]);
    const path = join(dataDir, 'patient.key');
    const made = createKeyFile(path, { account: other, node: grants.nodeId });
    const key: KeyFile = readKeyFile(path);
    const code = identity.createEnrollment(other, new Date(Date.now() + 60_000));
    expect((await call('POST', '/patient/enrollment', { code, publicKey: 'not a key' })).json.message).toMatch(/not a PEM public key/);
    // The malformed key did not spend the code.
    const enrolled = await call('POST', '/patient/enrollment', { code, publicKey: made.publicKeyPem });
    expect(enrolled.json).toMatchObject({ account: other, keyId: made.keyId });

    const c = await call('POST', '/patient/session/challenge');
    expect(JSON.parse(c.json.signThis)).toEqual({ challenge: c.json.challenge, node: grants.nodeId, purpose: 'dicom-vault-session/1' });
    const wrong = await call('POST', '/patient/session', {
      account: other,
      keyId: made.keyId,
      challenge: c.json.challenge,
      signature: signSession('another-node', c.json.challenge, key),
    });
    expect(wrong.status).toBe(401);
    const c2 = await call('POST', '/patient/session/challenge');
    const s = await call('POST', '/patient/session', {
      account: other,
      keyId: made.keyId,
      challenge: c2.json.challenge,
      signature: signSession(grants.nodeId, c2.json.challenge, key),
    });
    expect(s.status).toBe(200);

    const draft = await call(
      'POST',
      '/patient/grants/draft',
      { to: 'dr.house', modalities: ['ct'], dataTypes: ['images', 'reports'], openEnded: true },
      s.json.token,
    );
    expect(draft.json.statement).toMatchObject({
      grantee: { kind: 'user', id: 'dr.house' },
      scope: { modalities: ['CT'] },
      notAfter: null,
      patientIds: [{ id: 'PID-KEYFILE', issuer: 'HOSP' }],
    });
    expect(draft.json.webauthn).toBeUndefined();
    const added = await call('POST', '/patient/grants', { statement: draft.json.statement, proof: signStatement(draft.json.statement, key) }, s.json.token);
    expect(added.json).toMatchObject({ status: 'active', signedWith: 'ed25519' });
    expect(grants.activeFor('user:dr.house', new Date()).map((g) => g.id)).toEqual([draft.json.statement.id]);

    // The first patient sees nothing of it, and cannot revoke it.
    expect((await call('GET', `/patient/grants/${draft.json.statement.id}`, undefined, session)).status).toBe(404);
    expect((await call('POST', `/patient/grants/${draft.json.statement.id}/revoke`, undefined, session)).status).toBe(404);
    expect(grants.activeFor('user:dr.house', new Date())).toHaveLength(1);

    // Signing out ends every session of the account.
    expect((await call('DELETE', '/patient/session', undefined, s.json.token)).status).toBe(204);
    expect((await call('GET', '/patient', undefined, s.json.token)).status).toBe(401);
  });

  it('documents every route as OpenAPI 3.1', async () => {
    const doc = (await call('GET', '/openapi.json')).json;
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        '/api/grantee/grants',
        '/api/patient',
        '/api/patient/enrollment',
        '/api/patient/erasure-requests',
        '/api/patient/erasure-requests/{id}/certificate',
        '/api/patient/erasure-requests/{id}/receipt',
        '/api/patient/exports',
        '/api/patient/exports/{id}',
        '/api/patient/exports/{id}/archive',
        '/api/patient/grantees',
        '/api/patient/grants',
        '/api/patient/grants/draft',
        '/api/patient/grants/fhir',
        '/api/patient/grants/{id}',
        '/api/patient/grants/{id}/fhir',
        '/api/patient/grants/{id}/links',
        '/api/patient/grants/{id}/revoke',
        '/api/patient/keys',
        '/api/patient/keys/options',
        '/api/patient/session',
        '/api/patient/session/challenge',
        '/api/token',
      ].sort(),
    );
    expect(doc.components.securitySchemes.patientSession).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.paths['/api/patient/grants'].post.security).toEqual([{ patientSession: [] }]);
    expect(Object.keys(doc.paths['/api/token'].post.requestBody.content)).toEqual(['application/x-www-form-urlencoded']);
    expect(doc.paths['/api/patient/grants'].post.requestBody.content['application/json'].schema.properties.proof).toBeDefined();
  });
});

describe('patient API over an insecure transport', () => {
  it('refuses everything but the OpenAPI document', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-patient-api-'));
    const identity = SqliteIdentityStore.open(join(dir, IDENTITY_DB_FILE));
    const store = SqliteGrantStore.open(join(dir, GRANTS_DB_FILE));
    const grants = new GrantService({ store, identity, nodeId: 'n' });
    const app = Fastify();
    await app.register(patientApi({ identity, grants, identify: async () => ({ id: 'x', roles: [], method: 'none' }), secureTransport: () => false }), {
      prefix: '/api',
    });
    try {
      expect((await app.inject({ method: 'GET', url: '/api/openapi.json' })).statusCode).toBe(200);
      expect((await app.inject({ method: 'GET', url: '/api/patient' })).statusCode).toBe(403);
      const t = await app.inject({
        method: 'POST',
        url: '/api/token',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        payload: 'grant_type=x',
      });
      expect(t.statusCode).toBe(400);
      expect(t.json()).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/only over HTTPS/) });
    } finally {
      await app.close();
      store.close();
      identity.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
