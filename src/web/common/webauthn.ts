// Passkeys: the API's WebAuthn options (JSON, from @simplewebauthn/server) into the browser's
// navigator.credentials, and the answer back as JSON. Uses the browser's own JSON forms
// (PublicKeyCredential.parse*OptionsFromJSON and toJSON, in Chromium 129+, Firefox 119+, Safari 18.4+)
// rather than a client library: the conversion is what they do.

type Json = Record<string, unknown>;

interface PublicKeyCredentialStatics {
  parseCreationOptionsFromJSON?(options: Json): PublicKeyCredentialCreationOptions;
  parseRequestOptionsFromJSON?(options: Json): PublicKeyCredentialRequestOptions;
}

export class PasskeyUnsupported extends Error {}

function statics(): Required<PublicKeyCredentialStatics> {
  const pkc = (globalThis as unknown as { PublicKeyCredential?: PublicKeyCredentialStatics }).PublicKeyCredential;
  if (pkc?.parseCreationOptionsFromJSON === undefined || pkc.parseRequestOptionsFromJSON === undefined)
    throw new PasskeyUnsupported('no WebAuthn JSON support');
  return pkc as Required<PublicKeyCredentialStatics>;
}

function json(credential: Credential | null): Json {
  if (credential === null) throw new Error('no passkey was given');
  return (credential as PublicKeyCredential).toJSON() as unknown as Json;
}

/** Creates a passkey for the registration options; its RegistrationResponseJSON. */
export async function createPasskey(options: Json): Promise<Json> {
  return json(await navigator.credentials.create({ publicKey: statics().parseCreationOptionsFromJSON(options) }));
}

/** Signs the request options' challenge with a passkey; its AuthenticationResponseJSON. */
export async function usePasskey(options: Json): Promise<Json> {
  return json(await navigator.credentials.get({ publicKey: statics().parseRequestOptionsFromJSON(options) }));
}
