// The patient's signature: key files (Ed25519) and passkeys (WebAuthn, a software P-256
// authenticator), and every way a signature is refused, each with its reason.
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { PatientKey } from '../../../src/identity/store.ts';
import type { GrantProof, GrantStatement } from '../../../src/grants/model.ts';
import {
  checkProofNow,
  createKeyFile,
  readKeyFile,
  signStatement,
  statementChallenge,
  verifyAssertion,
  verifyProofForSigning,
  type WebAuthnRp,
} from '../../../src/grants/signing.ts';
import { checkStatement, draftStatement, parseGrantee } from '../../../src/grants/statement.ts';
import { SoftAuthenticator } from '../../support/webauthn.ts';
import { isVaultError } from '../../../src/core/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'dicom-vault-signing-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const NODE = '0b4f7d1e-8d1c-4b7e-9a55-0a0c7a2f1d10';
const RP: WebAuthnRp = { rpId: 'vault.example.org', origins: ['https://vault.example.org'] };
let n = 0;
const path = (): string => join(dir, `key-${++n}.pem`);

function statementFor(account: string): GrantStatement {
  return draftStatement(
    { nodeId: NODE, account, patientIds: [{ id: 'PID-1', issuer: null }], now: new Date('2027-01-01T00:00:00Z') },
    { grantee: parseGrantee('user:dr.house'), studies: ['1.2.3.4'], notAfter: new Date('2027-02-01T00:00:00Z') },
  );
}

function keyRecord(keyId: string, publicKey: string): PatientKey {
  return { keyId, kind: 'ed25519', publicKey, createdAt: '2027-01-01T00:00:00Z' };
}

describe('key files', () => {
  it('are made 0600, never over an existing file, and read back with their account and node', () => {
    const p = path();
    const made = createKeyFile(p, { account: 'acct-1', node: NODE });
    expect(statSync(p).mode & 0o777).toBe(0o600);
    const key = readKeyFile(p);
    expect(key).toMatchObject({ keyId: made.keyId, account: 'acct-1', node: NODE, publicKeyPem: made.publicKeyPem });
    expect(made.keyId).toMatch(/^ed25519:[A-Za-z0-9_-]{43}$/);
    expect(() => createKeyFile(p, { account: 'acct-1', node: NODE })).toThrow(/exists: a key file is never overwritten/);
  });

  it('are refused when others may read them, or when they hold no Ed25519 key', () => {
    const p = path();
    createKeyFile(p, { account: 'a', node: NODE });
    chmodSync(p, 0o644);
    expect(() => readKeyFile(p)).toThrow(/may be read by others \(mode 0644\): run `chmod 600/);
    const q = path();
    writeFileSync(q, 'not a key', { mode: 0o600 });
    expect(() => readKeyFile(q)).toThrow(/holds no PKCS#8 private key/);
  });
});

describe('a key-file signature', () => {
  const p = path();
  const made = createKeyFile(p, { account: 'acct-A', node: NODE });
  const key = readKeyFile(p);
  const keys = [keyRecord(made.keyId, made.publicKeyPem)];
  const statement = statementFor('acct-A');
  const proof = signStatement(statement, key);

  it('verifies for the statement it signed', async () => {
    expect(checkProofNow(statement, proof, keys)).toMatchObject({ ok: true });
    expect(await verifyProofForSigning(statement, proof, keys)).toMatchObject({ ok: true });
  });

  it('does not verify once the statement is edited (widened) after signing', () => {
    const widened = { ...statement, scope: {}, notAfter: null };
    expect(checkProofNow(widened, proof, keys)).toEqual({ ok: false, reason: expect.stringMatching(/statement is not the one the patient's key signed/) });
  });

  it('is refused when forged, missing, or made with a key the patient never registered', () => {
    const forged: GrantProof = { ...proof, signature: Buffer.alloc(64, 7).toString('base64url') } as GrantProof;
    expect(checkProofNow(statement, forged, keys)).toMatchObject({ ok: false, reason: expect.stringMatching(/does not verify/) });
    expect(checkProofNow(statement, undefined as unknown as GrantProof, keys)).toEqual({ ok: false, reason: 'the grant carries no signature' });
    expect(checkProofNow(statement, { kind: 'ed25519', keyId: made.keyId } as GrantProof, keys)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/lacks keyId or signature/),
    });
    // Another patient's key, registered to them, not to this account.
    const other = path();
    createKeyFile(other, { account: 'acct-B', node: NODE });
    const byOther = signStatement(statement, readKeyFile(other));
    expect(checkProofNow(statement, byOther, keys)).toEqual({ ok: false, reason: 'the signing key is not one the patient registered' });
    // The other patient's key presented under this patient's key id.
    expect(checkProofNow(statement, { ...byOther, keyId: made.keyId } as GrantProof, keys)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/does not verify/),
    });
  });
});

describe('a passkey signature (WebAuthn)', () => {
  const auth = new SoftAuthenticator(RP.rpId, RP.origins[0]!);
  const passkey = (counter = 0): PatientKey => ({
    keyId: `webauthn:${auth.id}`,
    kind: 'webauthn',
    publicKey: Buffer.from(auth.coseKey()).toString('base64url'),
    credentialId: auth.id,
    counter,
    createdAt: '2027-01-01T00:00:00Z',
  });
  const statement = statementFor('acct-W');
  const challenge = statementChallenge(statement);

  it('verifies an assertion whose challenge is SHA-256 of the canonical statement, with the library and without', async () => {
    const proof = auth.proof(challenge);
    expect(checkProofNow(statement, proof, [passkey()], RP)).toMatchObject({ ok: true });
    const v = await verifyProofForSigning(statement, proof, [passkey()], RP);
    expect(v).toMatchObject({ ok: true });
    expect((v as { counter: number }).counter).toBeGreaterThan(0);
  });

  it('refuses, with the same verdict both ways, every assertion that is not the patient signing this statement here', async () => {
    const cases: Array<[string, GrantProof, RegExp, (WebAuthnRp | undefined)?]> = [
      ['another statement', auth.proof(statementChallenge({ ...statement, scope: {} })), /signed another challenge/],
      ['another origin', auth.proof(challenge, { origin: 'https://evil.example' }), /not on this node's origin/],
      ['another relying party', auth.proof(challenge, { rpId: 'evil.example' }), /another relying party/],
      ['no user verification', auth.proof(challenge, { noUserVerification: true }), /did not verify the user/],
      ['a registration, not an assertion', auth.proof(challenge, { type: 'webauthn.create' }), /not webauthn\.get/],
      ['inside a frame of another site', auth.proof(challenge, { crossOrigin: true }), /frame of another site/],
      ['a node with passkeys off', auth.proof(challenge), /passkeys are not configured/, undefined],
    ];
    for (const [what, proof, reason, ...rest] of cases) {
      const rp = rest.length > 0 ? rest[0] : RP;
      const now = checkProofNow(statement, proof, [passkey()], rp);
      expect(now, what).toEqual({ ok: false, reason: expect.stringMatching(reason) });
      expect(await verifyProofForSigning(statement, proof, [passkey()], rp), what).toMatchObject({ ok: false });
    }
    // A forged signature, and another authenticator's assertion under this credential id.
    const good = auth.proof(challenge);
    const other = new SoftAuthenticator(RP.rpId, RP.origins[0]!).proof(challenge);
    for (const proof of [
      { ...good, signature: other.signature },
      { ...other, credentialId: auth.id },
    ]) {
      expect(checkProofNow(statement, proof as GrantProof, [passkey()], RP)).toEqual({ ok: false, reason: 'the passkey signature does not verify' });
      expect((await verifyProofForSigning(statement, proof as GrantProof, [passkey()], RP)).ok).toBe(false);
    }
    expect(checkProofNow(statement, other, [passkey()], RP)).toEqual({ ok: false, reason: 'the passkey is not one the patient registered' });
  });

  it('refuses, when signing, an assertion whose counter did not move past the stored one (a cloned authenticator)', async () => {
    const proof = auth.proof(challenge, { counter: 5 });
    const v = await verifyProofForSigning(statement, proof, [passkey(9)], RP);
    expect(v).toEqual({ ok: false, reason: expect.stringMatching(/counter value 5 was lower than expected 9/) });
    // The stored grant's proof stays valid later, when the counter has moved on.
    expect(checkProofNow(statement, proof, [passkey(9)], RP)).toMatchObject({ ok: true });
  });

  it('verifies a session assertion over a challenge of the node', async () => {
    const c = Buffer.alloc(32, 3).toString('base64url');
    const a = auth.assert(c);
    const ok = await verifyAssertion({ ...a, credentialId: a.id }, c, passkey(), RP);
    expect(ok).toMatchObject({ counter: expect.any(Number) });
    const replay = await verifyAssertion({ ...a, credentialId: a.id }, Buffer.alloc(32, 4).toString('base64url'), passkey(), RP);
    expect(replay).toMatch(/signed another challenge/);
  });
});

describe('statements', () => {
  it('are refused when malformed, each with the field named', () => {
    const s = statementFor('acct-S') as unknown as Record<string, unknown>;
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...s, extra: 1 }, /unknown field "extra"/],
      [{ ...s, scope: { studies: [] } }, /scope\.studies must be a non-empty list/],
      [{ ...s, notAfter: '2027-02-01' }, /notAfter must be a UTC time to the second/],
      [{ ...s, notAfter: '2026-01-01T00:00:00Z' }, /notAfter must come after notBefore/],
      [{ ...s, dataTypes: ['images', 'images'] }, /each entry once/],
      [{ ...s, actions: ['delete'] }, /"delete" is not an action/],
      [{ ...s, grantee: { kind: 'oidc', issuer: 'http://idp.example', subject: 'x' } }, /https URL/],
      [{ ...s, v: 'dicom-vault-grant/2' }, /version/],
    ];
    for (const [bad, reason] of cases) {
      try {
        checkStatement(bad);
        expect.unreachable(String(reason));
      } catch (err) {
        expect(isVaultError(err, 'GRANT_INVALID'), String(reason)).toBe(true);
        expect((err as Error).message).toMatch(reason);
      }
    }
  });
});
