// A software authenticator for tests: a P-256 passkey that answers navigator.credentials.create()
// (attestation "none") and .get() as the WebAuthn Level 3 spec lays the bytes out (6.1 authenticator
// data, 6.5.4 attestation object, 5.8.1 client data), with knobs to break each part. Hand-written:
// the maintained virtual authenticators live inside browsers (Chrome's DevTools protocol) or in
// other languages; none is an npm package a node test can drive.
import { createHash, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { encode } from 'cborg';

const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');
const sha256 = (b: Uint8Array | string): Buffer => createHash('sha256').update(b).digest();

export interface AssertionOptions {
  /** Leave the user-verified flag clear (a key without PIN). */
  noUserVerification?: boolean;
  origin?: string;
  rpId?: string;
  type?: string;
  crossOrigin?: boolean;
  /** Counter to report (default: one more than the last). */
  counter?: number;
}

export class SoftAuthenticator {
  readonly credentialId = randomBytes(16);
  readonly #privateKey: KeyObject;
  readonly #publicKey: KeyObject;
  #counter = 0;
  userHandle: string | undefined;

  readonly rpId: string;
  readonly origin: string;

  constructor(rpId: string, origin: string) {
    this.rpId = rpId;
    this.origin = origin;
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.#privateKey = privateKey;
    this.#publicKey = publicKey;
  }

  get id(): string {
    return b64u(this.credentialId);
  }

  /** The COSE_Key (RFC 9053): EC2, ES256, P-256. */
  coseKey(): Uint8Array {
    const jwk = this.#publicKey.export({ format: 'jwk' });
    return encode(
      new Map<number, unknown>([
        [1, 2],
        [3, -7],
        [-1, 1],
        [-2, Buffer.from(jwk.x!, 'base64url')],
        [-3, Buffer.from(jwk.y!, 'base64url')],
      ]),
    );
  }

  #authData(rpId: string, flags: number, counter: number, attested?: Uint8Array): Buffer {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    return Buffer.concat([sha256(rpId), Buffer.from([flags]), c, attested ?? Buffer.alloc(0)]);
  }

  /** A RegistrationResponseJSON for PublicKeyCredentialCreationOptionsJSON `options`. */
  create(options: { challenge: string; user?: { id: string } }): object {
    this.userHandle = options.user?.id;
    const clientData = Buffer.from(JSON.stringify({ type: 'webauthn.create', challenge: options.challenge, origin: this.origin, crossOrigin: false }));
    const idLen = Buffer.alloc(2);
    idLen.writeUInt16BE(this.credentialId.length);
    const attested = Buffer.concat([Buffer.alloc(16), idLen, this.credentialId, this.coseKey()]);
    // UP (0x01), UV (0x04), AT (0x40).
    const authData = this.#authData(this.rpId, 0x45, this.#counter, attested);
    const attestationObject = encode({ fmt: 'none', attStmt: {}, authData });
    return {
      id: this.id,
      rawId: this.id,
      type: 'public-key',
      response: { clientDataJSON: b64u(clientData), attestationObject: b64u(attestationObject), transports: ['internal'] },
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
    };
  }

  /** An assertion over `challenge` (base64url), as navigator.credentials.get() gives it. */
  assert(
    challenge: string,
    o: AssertionOptions = {},
  ): { id: string; authenticatorData: string; clientDataJSON: string; signature: string; userHandle?: string } {
    this.#counter = o.counter ?? this.#counter + 1;
    const clientData = Buffer.from(
      JSON.stringify({ type: o.type ?? 'webauthn.get', challenge, origin: o.origin ?? this.origin, crossOrigin: o.crossOrigin ?? false }),
    );
    const authData = this.#authData(o.rpId ?? this.rpId, o.noUserVerification ? 0x01 : 0x05, this.#counter);
    const signature = sign('sha256', Buffer.concat([authData, sha256(clientData)]), this.#privateKey);
    return {
      id: this.id,
      authenticatorData: b64u(authData),
      clientDataJSON: b64u(clientData),
      signature: b64u(signature),
      ...(this.userHandle !== undefined ? { userHandle: this.userHandle } : {}),
    };
  }

  /** The assertion as AuthenticationResponseJSON. */
  assertJson(challenge: string, o: AssertionOptions = {}): object {
    const a = this.assert(challenge, o);
    return {
      id: a.id,
      rawId: a.id,
      type: 'public-key',
      response: {
        authenticatorData: a.authenticatorData,
        clientDataJSON: a.clientDataJSON,
        signature: a.signature,
        ...(a.userHandle ? { userHandle: a.userHandle } : {}),
      },
      clientExtensionResults: {},
    };
  }

  /** The assertion as a grant proof. */
  proof(
    challenge: string,
    o: AssertionOptions = {},
  ): { kind: 'webauthn'; credentialId: string; authenticatorData: string; clientDataJSON: string; signature: string } {
    const a = this.assert(challenge, o);
    return { kind: 'webauthn', credentialId: a.id, authenticatorData: a.authenticatorData, clientDataJSON: a.clientDataJSON, signature: a.signature };
  }
}
