// The refusal of a bearer token (RFC 6750 section 3): a 401 whose WWW-Authenticate challenge says
// what a client must fix. Every source of callers builds it here (local tokens in
// src/access/patient-control.ts, a hospital's OpenID provider in ./oidc.ts), so they all read alike.
import { VaultError } from '../core/errors.ts';

const REALM = 'dicom-vault';

/** 401 with the RFC 6750 challenge a client needs (the app's error handler sends it as WWW-Authenticate). */
export function unauthorized(description: string, error: 'invalid_request' | 'invalid_token' = 'invalid_token'): VaultError {
  // error_description may hold only %x20-21 / %x23-5B / %x5D-7E (RFC 6750 section 3); a reason that
  // quotes a token's claims could carry anything, and a line break would break the header.
  const safe = description.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '');
  return new VaultError('UNAUTHORIZED', description, {
    details: { wwwAuthenticate: `Bearer realm="${REALM}", error="${error}", error_description="${safe}"` },
  });
}
