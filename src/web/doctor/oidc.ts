// Sign-in with the hospital's OpenID provider: the authorization code flow with PKCE (RFC 7636) for
// a public client, through oauth4webapi (panva's: discovery, state, issuer and ID token checks done
// as the specifications say, rather than by hand). The access token asked for is the one for this
// node (RFC 8707 `resource` = the node's audience); the node verifies it like any bearer token.
import * as oauth from 'oauth4webapi';

export interface OidcConfig {
  issuer: string;
  clientId: string;
  audience: string;
}

const PENDING_KEY = 'dicom-vault.oidc';
const redirectUri = (): string => new URL('./', location.href).href.split('?')[0]!;

async function server(config: OidcConfig): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(config.issuer);
  // Plain http only for a provider on loopback (the node accepts no other http issuer either).
  const options = { [oauth.allowInsecureRequests]: issuer.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(issuer.hostname) };
  return oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, options));
}
const insecure = (config: OidcConfig) => ({ [oauth.allowInsecureRequests]: new URL(config.issuer).protocol === 'http:' });

/** Sends the browser to the provider's sign-in; the verifier and state wait in this tab's sessionStorage. */
export async function startSignIn(config: OidcConfig): Promise<void> {
  const as = await server(config);
  if (as.authorization_endpoint === undefined) throw new Error('the provider has no authorization endpoint');
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier, state }));
  const url = new URL(as.authorization_endpoint);
  url.searchParams.set('client_id', config.clientId);
  url.searchParams.set('redirect_uri', redirectUri());
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('scope', 'openid');
  url.searchParams.set('resource', config.audience);
  url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(verifier));
  url.searchParams.set('code_challenge_method', 'S256');
  url.searchParams.set('state', state);
  location.assign(url.href);
}

/** Back from the provider (?code=&state= or ?error=): the node's access token; undefined when this is no such return. */
export async function finishSignIn(config: OidcConfig): Promise<string | undefined> {
  const here = new URL(location.href);
  if (!here.searchParams.has('code') && !here.searchParams.has('error')) return undefined;
  const pending = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  // The code must not stay in the address bar (or history) whatever happens next.
  history.replaceState(null, '', redirectUri());
  if (pending === null) throw new Error('this sign-in was not started in this tab');
  const { verifier, state } = JSON.parse(pending) as { verifier: string; state: string };
  const as = await server(config);
  const client: oauth.Client = { client_id: config.clientId };
  const params = oauth.validateAuthResponse(as, client, here, state);
  const response = await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, redirectUri(), verifier, {
    additionalParameters: { resource: config.audience },
    ...insecure(config),
  });
  const result = await oauth.processAuthorizationCodeResponse(as, client, response);
  return result.access_token;
}
