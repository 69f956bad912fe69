// The patient's signature on a grant: made on the patient's side (a key file here, a passkey in the
// browser), checked on the node's. Two checks, one contract:
//   verifyProofForSigning  when a grant is added: everything, and for a passkey the library's whole
//                          assertion check (@simplewebauthn/server), signature counter included;
//   checkProofNow          at every use of a grant (the access seam asks synchronously, per
//                          request): the same facts, without the counter, which only says something
//                          at the moment of signing (it has moved on since, by design).
// checkProofNow verifies a passkey's assertion with node:crypto because the library's check is
// asynchronous (WebCrypto) and GrantsForAccess is not; it reuses the library's parsers and runs the
// same steps (W3C WebAuthn Level 3, 7.2 "Verifying an Authentication Assertion", steps 11-21), and
// every grant passes both before it is stored, so the two cannot disagree on a stored grant.
// Every refusal says why, in words that name no patient data.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, timingSafeEqual, verify } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync, writeSync } from 'node:fs';
import { type AuthenticationResponseJSON, verifyAuthenticationResponse } from '@simplewebauthn/server';
import { cose, decodeClientDataJSON, decodeCredentialPublicKey, isoBase64URL, parseAuthenticatorData } from '@simplewebauthn/server/helpers';
import { VaultError } from '../core/errors.ts';
import type { PatientKey } from '../identity/store.ts';
import { canonicalBytes, canonicalDigest } from './canonical.ts';
import type { GrantProof, GrantStatement } from './model.ts';

/** A key file is the patient's alone: written 0600, and refused when others may read it (as ssh refuses a private key). */
export const KEY_FILE_MODE = 0o600;

/** The relying party a passkey is bound to: the node's web origin(s) and its RP ID (a registrable domain of them). */
export interface WebAuthnRp {
  rpId: string;
  origins: readonly string[];
}

/** The COSE algorithms the node accepts for passkeys: those checkProofNow can verify. */
export const PASSKEY_ALGORITHMS: readonly number[] = [cose.COSEALG.EdDSA, cose.COSEALG.ES256, cose.COSEALG.RS256];

export interface KeyFile {
  privateKey: KeyObject;
  publicKeyPem: string;
  keyId: string;
  /** The patient account and node the key was registered with (written in the file's header). */
  account?: string;
  node?: string;
}

export type Verdict = { ok: true; key: PatientKey; counter?: number } | { ok: false; reason: string };

function b64u(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** A key file's key id: its Ed25519 public key's SHA-256 (of the SPKI DER), base64url. */
export function ed25519KeyId(publicKey: KeyObject): string {
  return `ed25519:${b64u(
    createHash('sha256')
      .update(publicKey.export({ type: 'spki', format: 'der' }))
      .digest(),
  )}`;
}

/** An Ed25519 public key from SPKI PEM; BAD_REQUEST naming what is wrong with it. */
export function ed25519PublicKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (cause) {
    throw new VaultError('BAD_REQUEST', 'the public key is not a PEM public key (SPKI, "-----BEGIN PUBLIC KEY-----")', { cause });
  }
  if (key.asymmetricKeyType !== 'ed25519')
    throw new VaultError('BAD_REQUEST', `the public key is ${key.asymmetricKeyType ?? 'of an unknown type'}, not Ed25519`);
  return key;
}

/**
 * Makes a new Ed25519 key pair in a new file at `path` (0600, never over an existing file), with
 * the account and node it belongs to in the header above the PKCS#8 PEM block (RFC 7468 lets text
 * stand before the encapsulation boundary; OpenSSL and node skip it).
 */
export function createKeyFile(path: string, meta: { account: string; node: string }): { keyId: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const keyId = ed25519KeyId(publicKey);
  const text =
    'dicom-vault patient key (Ed25519). Keep it private: whoever holds this file can share your imaging.\n' +
    `Account: ${meta.account}\nNode: ${meta.node}\nKey-Id: ${keyId}\n` +
    (privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, KEY_FILE_MODE);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new VaultError(
      'BAD_REQUEST',
      code === 'EEXIST' ? `${path} exists: a key file is never overwritten (choose another path)` : `cannot create ${path}: ${code ?? cause}`,
      { cause },
    );
  }
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
  return { keyId, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

/** Reads a key file; refuses one that others may read or that holds no Ed25519 private key. */
export function readKeyFile(path: string): KeyFile {
  let text: string;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (cause) {
    throw new VaultError('BAD_REQUEST', `cannot read the key file ${path}: ${(cause as NodeJS.ErrnoException).code ?? cause}`, { cause });
  }
  try {
    const mode = fstatSync(fd).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new VaultError(
        'BAD_REQUEST',
        `the key file ${path} may be read by others (mode ${mode.toString(8).padStart(4, '0')}): run \`chmod 600 ${path}\`, and treat the key as exposed if anyone else could read it`,
      );
    }
    text = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  const pem = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/.exec(text)?.[0];
  if (pem === undefined) throw new VaultError('BAD_REQUEST', `${path} holds no PKCS#8 private key ("-----BEGIN PRIVATE KEY-----")`);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (cause) {
    throw new VaultError('BAD_REQUEST', `${path}: the private key does not parse`, { cause });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519')
    throw new VaultError('BAD_REQUEST', `${path} holds a ${privateKey.asymmetricKeyType} key, not an Ed25519 one`);
  const publicKey = createPublicKey(privateKey);
  const header = (name: string): string | undefined => new RegExp(`^${name}: (\\S+)$`, 'm').exec(text.slice(0, text.indexOf('-----BEGIN')))?.[1];
  const account = header('Account');
  const node = header('Node');
  return {
    privateKey,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
    keyId: ed25519KeyId(publicKey),
    ...(account !== undefined ? { account } : {}),
    ...(node !== undefined ? { node } : {}),
  };
}

/** The key file's signature of a statement: Ed25519 over its canonical JSON (RFC 8785). */
export function signStatement(statement: GrantStatement, key: KeyFile): GrantProof {
  return { kind: 'ed25519', keyId: key.keyId, signature: b64u(sign(null, canonicalBytes(statement), key.privateKey)) };
}

/** What a key file signs to open a patient session: a node's one-time challenge, in a shape no grant statement can take. */
export function sessionPayload(node: string, challenge: string): { purpose: 'dicom-vault-session/1'; node: string; challenge: string } {
  return { purpose: 'dicom-vault-session/1', node, challenge };
}

export function signSession(node: string, challenge: string, key: KeyFile): string {
  return b64u(sign(null, canonicalBytes(sessionPayload(node, challenge)), key.privateKey));
}

/** Whether `signature` (base64url) is the Ed25519 signature of `data` under the SPKI PEM key. */
export function ed25519Verifies(data: Uint8Array, signature: string, publicKeyPem: string): boolean {
  const sig = Buffer.from(signature, 'base64url');
  if (sig.length !== 64 || sig.toString('base64url') !== signature) return false;
  try {
    return verify(null, data, createPublicKey(publicKeyPem), sig);
  } catch {
    return false;
  }
}

/** The patient's registered key a proof names, if any. */
export function keyForProof(proof: GrantProof, keys: readonly PatientKey[]): PatientKey | undefined {
  return proof.kind === 'ed25519'
    ? keys.find((k) => k.kind === 'ed25519' && k.keyId === proof.keyId)
    : keys.find((k) => k.kind === 'webauthn' && k.credentialId === proof.credentialId);
}

/** The challenge a passkey signs for a statement: base64url(SHA-256(canonical JSON)). */
export function statementChallenge(statement: GrantStatement): string {
  return b64u(canonicalDigest(statement));
}

function checkProofShape(proof: unknown): string | undefined {
  if (typeof proof !== 'object' || proof === null) return 'the grant carries no signature';
  const p = proof as Record<string, unknown>;
  const str = (k: string): boolean => typeof p[k] === 'string' && (p[k] as string).length > 0 && (p[k] as string).length <= 16384;
  if (p.kind === 'ed25519') return str('keyId') && str('signature') ? undefined : 'the key-file signature lacks keyId or signature';
  if (p.kind === 'webauthn') {
    return ['credentialId', 'authenticatorData', 'clientDataJSON', 'signature'].every(str)
      ? undefined
      : 'the passkey signature lacks one of credentialId, authenticatorData, clientDataJSON, signature';
  }
  return "the signature is neither a key file's (ed25519) nor a passkey's (webauthn)";
}

/** The proof with only the fields of its kind (what is stored and exported), or undefined when it is not a proof. */
export function normalizeProof(proof: unknown): GrantProof | undefined {
  if (checkProofShape(proof) !== undefined) return undefined;
  const p = proof as GrantProof;
  return p.kind === 'ed25519'
    ? { kind: 'ed25519', keyId: p.keyId, signature: p.signature }
    : { kind: 'webauthn', credentialId: p.credentialId, authenticatorData: p.authenticatorData, clientDataJSON: p.clientDataJSON, signature: p.signature };
}

/**
 * Whether `proof` is the patient's signature of `statement` under one of `keys` (the account's
 * registered keys), now. Pure: the same inputs give the same verdict (what the service caches).
 */
export function checkProofNow(statement: GrantStatement, proof: GrantProof, keys: readonly PatientKey[], rp?: WebAuthnRp): Verdict {
  const shape = checkProofShape(proof);
  if (shape !== undefined) return { ok: false, reason: shape };
  const key = keyForProof(proof, keys);
  if (key === undefined) {
    return {
      ok: false,
      reason: proof.kind === 'ed25519' ? 'the signing key is not one the patient registered' : 'the passkey is not one the patient registered',
    };
  }
  if (proof.kind === 'ed25519') {
    return ed25519Verifies(canonicalBytes(statement), proof.signature, key.publicKey)
      ? { ok: true, key }
      : { ok: false, reason: "the signature does not verify: the statement is not the one the patient's key signed" };
  }
  if (rp === undefined) return { ok: false, reason: 'passkeys are not configured on this node (no WebAuthn relying party)' };
  const why = checkAssertion(proof, statementChallenge(statement), key, rp);
  return why === undefined ? { ok: true, key } : { ok: false, reason: why };
}

/**
 * Verifies `proof` as checkProofNow does and, for a passkey, with @simplewebauthn/server's whole
 * assertion check (the signature counter must have moved past the stored one: a cloned
 * authenticator shows up here). The counter to store is returned.
 */
export async function verifyProofForSigning(statement: GrantStatement, proof: GrantProof, keys: readonly PatientKey[], rp?: WebAuthnRp): Promise<Verdict> {
  const now = checkProofNow(statement, proof, keys, rp);
  if (!now.ok || proof.kind !== 'webauthn') return now;
  const why = await libraryAssertion(proof, statementChallenge(statement), now.key, rp!);
  return typeof why === 'string' ? { ok: false, reason: why } : { ok: true, key: now.key, counter: why.counter };
}

/** A passkey's assertion over a challenge of the node's (a session), checked with the library; the counter to store. */
export async function verifyAssertion(
  assertion: { credentialId: string; authenticatorData: string; clientDataJSON: string; signature: string },
  expectedChallenge: string,
  key: PatientKey,
  rp: WebAuthnRp,
): Promise<{ counter: number } | string> {
  const sync = checkAssertion(assertion, expectedChallenge, key, rp);
  if (sync !== undefined) return sync;
  return libraryAssertion(assertion, expectedChallenge, key, rp);
}

async function libraryAssertion(
  a: { credentialId: string; authenticatorData: string; clientDataJSON: string; signature: string },
  expectedChallenge: string,
  key: PatientKey,
  rp: WebAuthnRp,
): Promise<{ counter: number } | string> {
  const response: AuthenticationResponseJSON = {
    id: a.credentialId,
    rawId: a.credentialId,
    type: 'public-key',
    response: { authenticatorData: a.authenticatorData, clientDataJSON: a.clientDataJSON, signature: a.signature },
    clientExtensionResults: {},
  };
  try {
    const result = await verifyAuthenticationResponse({
      response,
      expectedChallenge,
      expectedOrigin: [...rp.origins],
      expectedRPID: rp.rpId,
      credential: { id: a.credentialId, publicKey: isoBase64URL.toBuffer(key.publicKey), counter: key.counter ?? 0 },
      requireUserVerification: true,
    });
    return result.verified ? { counter: result.authenticationInfo.newCounter } : 'the passkey signature does not verify';
  } catch (err) {
    return `the passkey assertion was refused: ${(err as Error).message}`;
  }
}

/** A COSE public key (base64url) as a node:crypto key and the algorithm it signs with. */
export function coseKey(publicKey: string): { key: KeyObject; alg: number } {
  const m = decodeCredentialPublicKey(isoBase64URL.toBuffer(publicKey)) as unknown as Map<number, unknown>;
  const kty = m.get(cose.COSEKEYS.kty);
  const alg = m.get(cose.COSEKEYS.alg);
  const bytes = (label: number): string => {
    const v = m.get(label);
    if (!(v instanceof Uint8Array)) throw new Error(`COSE key parameter ${label} missing`);
    return b64u(v);
  };
  if (typeof alg !== 'number') throw new Error('COSE key has no algorithm');
  let jwk: Record<string, string>;
  if (kty === cose.COSEKTY.EC2 && alg === cose.COSEALG.ES256 && m.get(cose.COSEKEYS.crv) === cose.COSECRV.P256) {
    jwk = { kty: 'EC', crv: 'P-256', x: bytes(cose.COSEKEYS.x), y: bytes(cose.COSEKEYS.y) };
  } else if (kty === cose.COSEKTY.OKP && alg === cose.COSEALG.EdDSA && m.get(cose.COSEKEYS.crv) === cose.COSECRV.ED25519) {
    jwk = { kty: 'OKP', crv: 'Ed25519', x: bytes(cose.COSEKEYS.x) };
  } else if (kty === cose.COSEKTY.RSA && alg === cose.COSEALG.RS256) {
    jwk = { kty: 'RSA', n: bytes(cose.COSEKEYS.n), e: bytes(cose.COSEKEYS.e) };
  } else {
    throw new Error(`COSE key type ${String(kty)} with algorithm ${alg} is not one of EdDSA (Ed25519), ES256 (P-256), RS256`);
  }
  return { key: createPublicKey({ key: jwk, format: 'jwk' }), alg };
}

function sha256(data: Uint8Array | string): Buffer {
  return createHash('sha256').update(data).digest();
}

/** WebAuthn Level 3, 7.2 steps 11-21, without the counter; undefined when the assertion holds. */
function checkAssertion(
  a: { authenticatorData: string; clientDataJSON: string; signature: string },
  expectedChallenge: string,
  key: PatientKey,
  rp: WebAuthnRp,
): string | undefined {
  if (![a.authenticatorData, a.clientDataJSON, a.signature].every((s) => isoBase64URL.isBase64URL(s))) return 'the passkey signature is not base64url';
  let client: ReturnType<typeof decodeClientDataJSON>;
  try {
    client = decodeClientDataJSON(a.clientDataJSON);
  } catch {
    return "the passkey's client data is not JSON";
  }
  if (client.type !== 'webauthn.get') return `the passkey's client data is of type ${JSON.stringify(client.type)}, not webauthn.get`;
  if (client.challenge !== expectedChallenge) return 'the passkey signed another challenge: the statement is not the one the patient signed';
  if (!rp.origins.includes(client.origin)) return `the passkey signed on ${JSON.stringify(client.origin)}, not on this node's origin`;
  // A grant is signed on the node's own page, never inside another site's frame.
  if (client.crossOrigin === true || client.topOrigin !== undefined) return 'the passkey signed inside a frame of another site';
  const authData = isoBase64URL.toBuffer(a.authenticatorData);
  if (authData.length < 37) return "the passkey's authenticator data is too short";
  let parsed: ReturnType<typeof parseAuthenticatorData>;
  try {
    parsed = parseAuthenticatorData(authData);
  } catch (err) {
    return `the passkey's authenticator data does not parse: ${(err as Error).message}`;
  }
  const rpHash = sha256(rp.rpId);
  if (parsed.rpIdHash.length !== 32 || !timingSafeEqual(Buffer.from(parsed.rpIdHash), rpHash))
    return `the passkey signed for another relying party than ${rp.rpId}`;
  if (!parsed.flags.up) return 'the authenticator did not see the user present';
  if (!parsed.flags.uv) return 'the authenticator did not verify the user (PIN or biometrics are required to sign)';
  let pub: { key: KeyObject; alg: number };
  try {
    pub = coseKey(key.publicKey);
  } catch (err) {
    return `the registered passkey's public key cannot be used: ${(err as Error).message}`;
  }
  const data = Buffer.concat([authData, sha256(isoBase64URL.toBuffer(a.clientDataJSON))]);
  const signature = isoBase64URL.toBuffer(a.signature);
  let good: boolean;
  try {
    good =
      pub.alg === cose.COSEALG.EdDSA
        ? verify(null, data, pub.key, signature)
        : verify('sha256', data, pub.alg === cose.COSEALG.ES256 ? { key: pub.key, dsaEncoding: 'der' } : pub.key, signature);
  } catch {
    good = false;
  }
  return good ? undefined : 'the passkey signature does not verify';
}
