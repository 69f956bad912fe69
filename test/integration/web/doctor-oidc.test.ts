// The doctor signs in on /doctor/ with the hospital's OpenID provider (panva's oidc-provider in its
// own process, test/support/oidc-provider.ts): the authorization code flow with PKCE from the page,
// the provider's own login and consent pages, back to /doctor/ with a code the page exchanges for
// an access token for this node (its audience); the node takes it as the doctor's bearer token,
// and the page lists the study a patient granted `oidc:<issuer>#<subject>`, and nothing else.
import { createServer } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import { createKeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement } from '../../../src/grants/statement.ts';
import { buildPage } from '../../../src/web/build.ts';
import { type Browser, launchBrowser, screenshot } from '../../support/browser.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { startProvider, type TestProvider } from '../../support/oidc-provider.ts';

const AUDIENCE = 'urn:dicom-vault:test-node';
const CLIENT = 'doctor-page';
const SUBJECT = 'dr-cuddy';

/** A free loopback port: the provider must know the page's redirect URI before the node starts. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("the doctor's page: sign-in with the hospital's OpenID provider", () => {
  let provider: TestProvider;
  let node: TestNode;
  let browser: Browser;
  let work: string;
  let granted: GeneratedStudy;
  let other: GeneratedStudy;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-doctor-oidc-'));
    await buildPage('doctor');
    const port = await freePort();
    provider = await startProvider({
      clients: [{ id: CLIENT, secret: '', redirectUris: [`http://127.0.0.1:${port}/doctor/`] }],
      resources: { [AUDIENCE]: { ttlS: 600 } },
    });
    node = await startTestNode({
      flags: { port: String(port), 'oidc-issuer': provider.issuer, 'oidc-audience': AUDIENCE, 'oidc-client-id': CLIENT },
    });
    granted = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 2621, patientId: 'PAT-O' });
    other = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 2622, patientId: 'PAT-O' });
    for (const s of [granted, other]) expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)))).status).toBe(200);
    const identity = node.vault.identity;
    const account = identity.createPatient([{ id: 'PAT-O', issuer: null }]);
    const made = createKeyFile(join(work, 'patient.key'), { account, node: node.vault.grants.nodeId });
    identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    const statement = draftStatement(
      { nodeId: node.vault.grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() },
      { grantee: { kind: 'oidc', issuer: provider.issuer, subject: SUBJECT }, studies: [granted.studyInstanceUID] },
    );
    await node.vault.grants.add({ statement, proof: signStatement(statement, readKeyFile(join(work, 'patient.key'))) }, account);
    browser = await launchBrowser();
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await node?.stop();
    await provider?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('signs in through the provider and lists the study granted to the OpenID subject', { timeout: 120_000 }, async () => {
    const page = await browser.newPage();
    const origin = new URL(node.url).origin;
    await page.goto(`${origin}/doctor/`);
    await page.getByRole('button', { name: 'Sign in with your hospital account' }).click();
    // The provider's development login page (any login is an account), then its consent page.
    await page.waitForURL((url) => url.origin === new URL(provider.issuer).origin, { timeout: 30_000 });
    await page.locator('input[name="login"]').fill(SUBJECT);
    await page.locator('input[name="password"]').fill('any');
    await page.locator('button[type="submit"]').click();
    await page.locator('button[type="submit"]').click({ timeout: 30_000 });

    await page.waitForURL(`${origin}/doctor/`, { timeout: 30_000 });
    await page.getByRole('heading', { name: '1 study you may open' }).waitFor({ timeout: 30_000 });
    expect(page.url()).toBe(`${origin}/doctor/`); // the code is gone from the address bar
    const text = await page.locator('ul.studies').textContent();
    expect(text).toContain('The patient granted you the whole study');
    expect(await page.getByRole('link', { name: /^Open in the viewer/ }).getAttribute('href')).toBe(`/viewer/?StudyInstanceUIDs=${granted.studyInstanceUID}`);
    expect(text).not.toContain(other.studyInstanceUID);
    // The token the viewer will send is the provider's JWT for this node.
    const token = await page.evaluate(() => sessionStorage.getItem('dicom-vault.token'));
    expect(token?.split('.')).toHaveLength(3);
    const claims = JSON.parse(Buffer.from(token!.split('.')[1]!, 'base64url').toString('utf8'));
    expect(claims).toMatchObject({ iss: provider.issuer, sub: SUBJECT, aud: AUDIENCE });
    await screenshot(page, 'doctor-oidc');
    await page.close();
  });

  it('serves the page with the provider in its CSP and nothing else beyond this origin', async () => {
    const res = await fetch(`${new URL(node.url).origin}/doctor/`);
    expect(res.headers.get('content-security-policy')).toContain(`connect-src 'self' ${new URL(provider.issuer).origin};`);
    expect(await (await fetch(`${new URL(node.url).origin}/doctor/config.json`)).json()).toEqual({
      oidc: { issuer: provider.issuer, clientId: CLIENT, audience: AUDIENCE },
    });
  });
});
