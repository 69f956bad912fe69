// The patient's page (issue 26) in a real browser (Debian's chromium, playwright-core) against a
// real node this suite starts, with real passkeys from Chromium's virtual authenticator: a patient
// enrolls with the hospital's code, creates a passkey, signs in, sees their two studies with
// decoded thumbnails; gives a doctor one series for one hour and the doctor sees only that series;
// revokes with one tap and the doctor's next request fails. The page at 360 and 1280 px (axe-core,
// screenshots in test-artifacts/). Attacks: a forged cross-origin request, markup in a study
// description and a patient name, another patient's passkey, an expired session, plain HTTP from
// the network.
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { DatabaseSync } from 'node:sqlite';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error dcmjs ships no type declarations; only DicomMessage.readFile and DicomDict.write are used (typed below).
import dcmjsModule from 'dcmjs';
import { type GeneratedStudy, planStudy } from '../../../bench/generate.ts';
import { bytesOf } from '../../support/generated.ts';
import { stow } from '../../support/dicomweb.ts';
import { addVirtualAuthenticator, axeViolations, type Browser, type BrowserContext, launchBrowser, type Page, screenshot } from '../../support/browser.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { AUDIT_DB_FILE } from '../../../src/audit/store.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import { type TestChain, useSharedChain } from '../../support/anvil.ts';
import { startNodeWithTester } from '../../support/node.ts';

const dcmjs = dcmjsModule as {
  data: { DicomMessage: { readFile(buffer: ArrayBuffer): { dict: Record<string, unknown>; write(): ArrayBuffer } } };
};

const XSS_DESCRIPTION = '<img src=x onerror="window.__xss=1">';
const XSS_FAMILY = '<b>Eve</b>';
// No '=' in a person name: DICOM PN reads it as the separator of its component groups.
const XSS_GIVEN = '<script>window.__xss++</script>';
const JSON_TYPE = 'application/dicom+json';

/** A generated instance with a study description and a patient name of our choosing. */
function withTexts(bytes: Buffer, description: string, name: string): Buffer {
  const dataset = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
  dataset.dict['00081030'] = { vr: 'LO', Value: [description] };
  dataset.dict['00100010'] = { vr: 'PN', Value: [{ Alphabetic: name }] };
  return Buffer.from(dataset.write());
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** This machine's first address that is not loopback: a client "from the network". */
function networkAddress(): string {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  throw new Error('this machine has no non-loopback IPv4 address to test plain HTTP from the network');
}

const value = (item: any, tag: string): unknown => item?.[tag]?.Value?.[0];

describe("the patient's page", () => {
  let node: RunningNode;
  let chain: TestChain;
  let dataDir: string | undefined;
  let browser: Browser;
  let origin: string;
  let api: string;
  let a1: GeneratedStudy;
  let a2: GeneratedStudy;
  let b: GeneratedStudy;
  let account: string;
  let context: BrowserContext;
  let page: Page;
  let doctor: string;

  beforeAll(async () => {
    const port = await freePort();
    chain = await useSharedChain();
    dataDir = await mkdtemp(join(tmpdir(), 'dv-patient-page-'));
    const options = resolveNodeOptions(
      {
        port: String(port),
        // Every interface: loopback for the browser (passkeys need https or localhost), the network
        // address for the plain-HTTP test.
        host: '0.0.0.0',
        'public-url': `http://localhost:${port}`,
        'data-dir': dataDir,
        'dimse-port': 'off',
        'chain-rpc': chain.rpcUrl,
        'chain-id': String(chain.chainId),
        'chain-key-file': await chain.keyFile(0),
        contract: chain.contract,
        // Three versions make a batch: the first three stored are confirmed, the fourth waits.
        'anchor-batch-size': '3',
        'anchor-interval': '3600',
        confirmations: '1',
        // The browser checks the audit log's anchors on the same chain, straight from the page.
        'browser-chain-rpc': chain.rpcUrl,
        'audit-head-interval': '100',
      },
      {},
    );
    node = await startNodeWithTester(options, createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'), { anchoring: true, anchorService: { pollIntervalMs: 20 } });
    origin = `http://localhost:${port}`;
    api = `http://127.0.0.1:${port}`;
    browser = await launchBrowser();
    a1 = planStudy({ kind: 'single', instances: 3, rows: 64, columns: 64, seed: 2611, patientId: 'PAT-WEB' });
    a2 = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed: 2612, patientId: 'PAT-WEB', studyInstanceUID: a1.studyInstanceUID });
    b = planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed: 2613, patientId: 'PAT-WEB' });
    const other = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 2614, patientId: 'PAT-OTHER' });
    const bParts = await Promise.all(b.instances.map(async (i) => withTexts(await bytesOf(i), XSS_DESCRIPTION, `${XSS_FAMILY}^${XSS_GIVEN}`)));
    // Versions in this order: the other patient's study, study A twice (its two series, one request
    // each: two versions), then study B, whose version is left waiting for the next batch.
    const confirmed = once(node.anchoring!.service, 'confirmed');
    for (const parts of [
      await Promise.all(other.instances.map(bytesOf)),
      await Promise.all(a1.instances.map(bytesOf)),
      await Promise.all(a2.instances.map(bytesOf)),
    ]) {
      expect((await stow(node.url, parts)).status).toBe(200);
    }
    await confirmed;
    expect((await stow(node.url, bParts)).status).toBe(200);
    account = node.vault.identity.createPatient([{ id: 'PAT-WEB', issuer: null }]);
    doctor = node.vault.identity.addUser('dr.web', ['grantee']).token;
    context = await browser.newContext({ viewport: { width: 360, height: 780 } });
    page = await context.newPage();
    await addVirtualAuthenticator(page);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await node?.close();
    await chain?.stop();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  /** The patient's session token, as the page keeps it. */
  const sessionOf = async (p: Page): Promise<string> => JSON.parse((await p.evaluate(() => sessionStorage.getItem('dicom-vault.session'))) ?? '{}').token;

  it('a patient enrolls with the code, creates a passkey, signs in and sees their two studies with thumbnails', async () => {
    const code = node.vault.identity.createEnrollment(account, new Date(Date.now() + 3_600_000));
    await page.goto(origin);
    await page.getByLabel('Enrollment code').fill(code);
    await page.getByRole('button', { name: 'Create my passkey' }).click();
    await page.getByText('Your passkey is ready').waitFor();
    expect(node.vault.identity.patientKeys(account).map((k) => k.kind)).toEqual(['webauthn']);

    await page.getByRole('button', { name: 'Sign in with my passkey' }).click();
    await page.getByRole('heading', { name: 'Your studies' }).waitFor();
    const studies = page.locator('li.study');
    await expect.poll(() => studies.count()).toBe(2);
    // Each thumbnail was fetched with the bearer token and decoded by the browser.
    await page.waitForFunction(() => {
      // In the page (the node's tsconfig has no DOM types).
      const imgs = [...(globalThis as any).document.querySelectorAll('li.study img')] as Array<{ complete: boolean; naturalWidth: number }>;
      return imgs.length === 2 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    });
    // Each version's anchor: study A's two confirmed on chain, study B's waiting for its batch.
    const a = studies.filter({ hasText: 'Synthetic benchmark study' });
    const bRow = studies.filter({ hasText: XSS_DESCRIPTION });
    await expect.poll(() => a.locator('dl').textContent()).toMatch(/Images5.*version 2: confirmed on chain; version 1: confirmed on chain/);
    expect(await a.locator('dl').textContent()).toMatch(/ModalityMR/);
    await expect.poll(() => bRow.locator('dl').textContent()).toMatch(/Images2.*version 1: waiting for confirmation$/);
  });

  it('markup in a study description and a patient name shows as text: no element made, no script run', async () => {
    await page.getByText(XSS_DESCRIPTION, { exact: true }).waitFor();
    expect(await page.locator('.patient-name').textContent()).toContain(XSS_FAMILY);
    expect(await page.locator('.patient-name').textContent()).toContain(XSS_GIVEN);
    expect(await page.evaluate(() => (globalThis as any).__xss)).toBeUndefined();
    expect(await page.locator('main img[src="x"], main script, main b').count()).toBe(0);
  });

  it('grants a doctor one series for one hour, signed with the passkey; the doctor sees that series alone', async () => {
    // The hospital's doctors are offered as the patient types: accounts with the grantee role only.
    const input = page.getByLabel('Their account name');
    const listed = await input.evaluate((el) => [...((el as any).list?.options ?? [])].map((o: any) => o.value));
    expect(listed).toContain('dr.web');
    expect(listed).not.toContain('tester');
    await input.fill('dr.web');
    await page.getByLabel('One series').check();
    await page.getByLabel('Series', { exact: true }).selectOption(`${a1.studyInstanceUID}|${a1.seriesInstanceUID}`);
    await page.getByLabel('One visit (the next hour)').check();
    // The plain words say what the grant will and will not show, before anything is signed.
    await expect.poll(() => page.locator('.summary').textContent()).toMatch(/Account dr\.web will see images of the series/);
    expect(await page.locator('.summary').textContent()).toMatch(/will not see your other studies and series/);
    await page.getByRole('button', { name: 'Sign with my passkey and give access' }).click();
    await page.getByText('Access given to Account dr.web').waitFor();
    const row = page.locator('li.grant', { hasText: 'Account dr.web' });
    await expect.poll(() => row.locator('.status').textContent()).toBe('active');

    // The node holds the grant the page drafted and the passkey signed: one series, an hour.
    const [grant] = node.vault.grants.forPatient(account, new Date());
    expect(grant?.proof.kind).toBe('webauthn');
    expect(grant?.statement.scope).toEqual({ series: [{ study: a1.studyInstanceUID, series: a1.seriesInstanceUID }] });
    const hours = (Date.parse(grant!.statement.notAfter!) - Date.parse(grant!.statement.notBefore)) / 3_600_000;
    expect(hours).toBe(1);

    const as = (path: string) => fetch(`${api}/dicom-web${path}`, { headers: { accept: JSON_TYPE, authorization: `Bearer ${doctor}` } });
    const found = await as('/studies');
    expect(found.status).toBe(200);
    expect(((await found.json()) as unknown[]).map((s) => value(s, '0020000D'))).toEqual([a1.studyInstanceUID]);
    const series = (await (await as(`/studies/${a1.studyInstanceUID}/series`)).json()) as unknown[];
    expect(series.map((s) => value(s, '0020000E'))).toEqual([a1.seriesInstanceUID]);
    expect((await as(`/studies/${a1.studyInstanceUID}/series/${a2.seriesInstanceUID}/metadata`)).status).toBe(404);
    expect((await as(`/studies/${b.studyInstanceUID}/metadata`)).status).toBe(404);
    expect((await as(`/studies/${a1.studyInstanceUID}/series/${a1.seriesInstanceUID}/metadata`)).status).toBe(200);
  });

  it('revokes with one tap (here, one key press), and the doctor’s next request fails', async () => {
    const metadata = `${api}/dicom-web/studies/${a1.studyInstanceUID}/series/${a1.seriesInstanceUID}/metadata`;
    // By keyboard: the button takes focus and Enter presses it.
    await page.getByRole('button', { name: 'Revoke access of Account dr.web' }).focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('li.grant', { hasText: 'Account dr.web' }).locator('.status').textContent()).toBe('revoked');
    const after = await fetch(metadata, { headers: { accept: JSON_TYPE, authorization: `Bearer ${doctor}` } });
    expect(after.status).toBe(404);
    expect(await page.getByRole('button', { name: /^Revoke access/ }).count()).toBe(0);
  });

  it('shares by link with a QR code', async () => {
    await page.getByLabel('Anyone I give a link or QR code to').check();
    await page.getByLabel('Everything').first().check();
    await page.getByRole('button', { name: 'Sign with my passkey and give access' }).click();
    const link = page.getByLabel('Link', { exact: true });
    await link.waitFor();
    expect(await link.inputValue()).toMatch(new RegExp(`^${origin}/share#code=`));
    const qr = page.getByRole('img', { name: 'QR code of the share link' });
    expect(await qr.evaluate((c) => (c as unknown as { width: number }).width)).toBeGreaterThan(100);
  });

  it('at 360 and 1280 px: no serious or critical accessibility violation (axe-core), screenshots kept', async () => {
    for (const width of [360, 1280]) {
      await page.setViewportSize({ width, height: width === 360 ? 780 : 900 });
      await screenshot(page, `patient-page-${width}`);
      const serious = (await axeViolations(page)).filter((v) => v.impact === 'serious' || v.impact === 'critical');
      expect(serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`)).toEqual([]);
    }
    // Nothing is cut off at 360 px: the page does not scroll sideways.
    await page.setViewportSize({ width: 360, height: 780 });
    const overflowing = await page.evaluate(() => {
      const g = globalThis as any;
      return [...g.document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > g.innerWidth + 0.5 && e.getClientRects().length > 0)
        .map((e) => `${e.tagName.toLowerCase()}${e.className ? `.${e.className}` : ''} (${Math.round(e.getBoundingClientRect().right)} px)`);
    });
    expect(overflowing).toEqual([]);
    expect(await page.evaluate(() => (globalThis as any).document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
  });

  it('the sign-in page has no serious accessibility violation either', async () => {
    const fresh = await context.newPage();
    await fresh.goto(origin);
    await fresh.getByRole('button', { name: 'Sign in with my passkey' }).waitFor();
    await screenshot(fresh, 'patient-sign-in-360');
    const serious = (await axeViolations(fresh)).filter((v) => v.impact === 'serious' || v.impact === 'critical');
    expect(serious.map((v) => v.id)).toEqual([]);
    await fresh.close();
  });

  it('a forged state-changing request from another origin is refused, 403 with the reason, and changes nothing', async () => {
    const session = await sessionOf(page);
    const forged = await fetch(`${api}/api/patient/erasure-requests`, {
      method: 'POST',
      headers: { authorization: `Bearer ${session}`, 'content-type': 'application/json', origin: 'https://evil.example' },
      body: '{}',
    });
    expect(forged.status).toBe(403);
    expect(await forged.json()).toMatchObject({
      code: 'FORBIDDEN',
      message: expect.stringMatching(/cross-origin request refused \(Origin: https:\/\/evil\.example\)/),
    });
    const crossSite = await fetch(`${api}/api/patient/erasure-requests`, {
      method: 'POST',
      headers: { authorization: `Bearer ${session}`, 'content-type': 'application/json', 'sec-fetch-site': 'cross-site' },
      body: '{}',
    });
    expect(crossSite.status).toBe(403);
    expect(((await crossSite.json()) as { message: string }).message).toMatch(/Sec-Fetch-Site: cross-site/);
    const requests = await fetch(`${api}/api/patient/erasure-requests`, { headers: { authorization: `Bearer ${session}` } });
    expect(await requests.json()).toEqual({ requests: [] });

    // The same from a page of another origin in the browser: its request never changes anything.
    const evil = await context.newPage();
    await evil.goto(`http://127.0.0.1:${new URL(origin).port}/healthz`);
    const outcome = await evil.evaluate(
      async ([url, token]) => {
        try {
          const r = await fetch(url!, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
          return r.status;
        } catch (err) {
          return String(err);
        }
      },
      [`${origin}/api/patient/erasure-requests`, session],
    );
    // The browser's CORS preflight finds no permission (the node grants none): the POST is never sent.
    expect(outcome).toMatch(/Failed to fetch/);
    expect(await (await fetch(`${api}/api/patient/erasure-requests`, { headers: { authorization: `Bearer ${session}` } })).json()).toEqual({ requests: [] });
    await evil.close();
  });

  it("another patient's passkey cannot sign in to this account", async () => {
    const other = node.vault.identity.createPatient([{ id: 'PAT-OTHER', issuer: null }]);
    const code = node.vault.identity.createEnrollment(other, new Date(Date.now() + 3_600_000));
    const theirs = await browser.newContext({ viewport: { width: 360, height: 780 } });
    const p = await theirs.newPage();
    await addVirtualAuthenticator(p);
    await p.goto(origin);
    await p.getByLabel('Enrollment code').fill(code);
    await p.getByRole('button', { name: 'Create my passkey' }).click();
    await p.getByText('Your passkey is ready').waitFor();
    // Their passkey's assertion, sent as if it were for our patient's account.
    const attempt = (await p.evaluate(async (victim) => {
      // In the page: the node's tsconfig has no DOM types, so the browser's globals are reached untyped.
      const w = globalThis as any;
      const c = await (await fetch('/api/patient/session/challenge', { method: 'POST' })).json();
      const credential = await w.navigator.credentials.get({ publicKey: w.PublicKeyCredential.parseRequestOptionsFromJSON((c as any).webauthn) });
      const r = await fetch('/api/patient/session', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ account: victim, webauthn: credential.toJSON() }),
      });
      return { status: r.status, body: await r.json() };
    }, account)) as { status: number; body: { message: string } };
    expect(attempt.status).toBe(401);
    expect(attempt.body.message).toMatch(/not registered/);
    // Signing in normally, their passkey opens their own account: their one study, none of ours.
    await p.getByRole('button', { name: 'Sign in with my passkey' }).click();
    await p.getByRole('heading', { name: 'Your studies' }).waitFor();
    await expect.poll(() => p.locator('li.study').count()).toBe(1);
    expect(await p.getByText(XSS_DESCRIPTION).count()).toBe(0);
    await theirs.close();
  });

  it('a session that expires while the page is open sends it back to sign-in, saying so, with no click', async () => {
    const ttl = 8_000;
    const expiresAt = new Date(Date.now() + ttl);
    const short = node.vault.identity.issueToken('patient', account, expiresAt);
    await page.evaluate(
      ([token, at]) => sessionStorage.setItem('dicom-vault.session', JSON.stringify({ token, expiresAt: at })),
      [short, expiresAt.toISOString()],
    );
    await page.reload();
    await page.getByRole('heading', { name: 'Your studies' }).waitFor();
    await page.getByRole('button', { name: 'Sign in with my passkey' }).waitFor({ timeout: ttl + 10_000 });
    expect(await page.getByRole('alert').textContent()).toMatch(/session has expired/);
    expect(await page.evaluate(() => sessionStorage.getItem('dicom-vault.session'))).toBeNull();
  });

  it('a session the node no longer takes (expired, ended) sends the page back to sign-in on its next request, saying so', async () => {
    const short = node.vault.identity.issueToken('patient', account, new Date(Date.now() + 1_000));
    await page.evaluate((token) => sessionStorage.setItem('dicom-vault.session', JSON.stringify({ token, expiresAt: '' })), short);
    await new Promise((r) => setTimeout(r, 1_500));
    await page.reload();
    await page.getByRole('button', { name: 'Sign in with my passkey' }).waitFor();
    expect(await page.getByRole('alert').textContent()).toMatch(/signed out .*Please sign in again/);
    expect(await page.evaluate(() => sessionStorage.getItem('dicom-vault.session'))).toBeNull();
  });

  it('plain HTTP from the network is refused, page and files alike', async () => {
    const address = networkAddress();
    const port = new URL(origin).port;
    for (const path of ['/', '/web/patient/main.js']) {
      const res = await fetch(`http://${address}:${port}${path}`);
      expect(res.status).toBe(403);
      expect(await res.text()).toMatch(/served only over HTTPS/);
      expect(res.headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/);
    }
  });

  it("the audit log: the doctor's accesses and the refusal, each verified in the browser; an entry edited on disk turns into a warning", async () => {
    // Close a batch that carries the latest signed head: two more versions join study B's waiting one.
    await new Promise((r) => setTimeout(r, 300));
    node.vault.audit.log.flush();
    const size = node.vault.audit.store.size();
    for (const seed of [2615, 2616]) {
      const other = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed, patientId: 'PAT-OTHER' });
      expect((await stow(node.url, await Promise.all(other.instances.map(bytesOf)))).status).toBe(200);
    }
    await expect
      .poll(
        async () => {
          for (const h of node.vault.audit.store.recentHeads(20)) {
            if (h.size < size) return false;
            const view = (await (await fetch(`${api}/api/audit/head?size=${h.size}`)).json()) as { receipt: unknown };
            if (view.receipt !== null) return true;
          }
          return false;
        },
        { timeout: 60_000, interval: 200 },
      )
      .toBe(true);

    const status = page.locator('#audit .audit-status');
    const doctorRows = page.locator('#audit li', { hasText: 'dr.web' });
    // Signed in again (the tests above ended the session).
    const expiresAt = new Date(Date.now() + 3_600_000);
    const token = node.vault.identity.issueToken('patient', account, expiresAt);
    await page.evaluate(
      ([t, at]) => sessionStorage.setItem('dicom-vault.session', JSON.stringify({ token: t, expiresAt: at })),
      [token, expiresAt.toISOString()],
    );
    await page.reload();
    await status.waitFor({ timeout: 60_000 });
    // The doctor read the granted series, and was refused (404) after the revocation.
    expect(await doctorRows.count()).toBeGreaterThanOrEqual(2);
    expect(await page.locator('#audit li', { hasText: 'dr.web' }).filter({ hasText: '404' }).count()).toBeGreaterThanOrEqual(1);
    for (const s of await doctorRows.evaluateAll((rows) => rows.map((r) => r.getAttribute('data-status')))) expect(s).toBe('verified');
    expect(await doctorRows.first().locator('.verify').textContent()).toBe('verified');
    expect(await status.getAttribute('data-status')).not.toBe('warning');

    // One of the doctor's entries edited on disk: that row, and the log's status, say so.
    const index = Number(await doctorRows.first().getAttribute('data-index'));
    const db = new DatabaseSync(join(dataDir!, AUDIT_DB_FILE));
    const { leaf } = db.prepare('SELECT leaf FROM entries WHERE idx = ?').get(index) as { leaf: Uint8Array };
    const changed = Buffer.from(leaf);
    changed[changed.length - 5]! ^= 1;
    db.prepare('UPDATE entries SET leaf = ? WHERE idx = ?').run(changed, index);
    try {
      await page.reload();
      await status.waitFor({ timeout: 60_000 });
      expect(await status.getAttribute('data-status')).toBe('warning');
      expect(await status.textContent()).toMatch(/^Warning: 1 of \d+ entries failed verification/);
      const row = page.locator(`#audit li[data-index="${index}"]`);
      expect(await row.getAttribute('data-status')).toBe('failed');
      expect(await row.locator('[role=alert]').textContent()).toMatch(
        new RegExp(`^warning: entry ${index} was changed: it no longer hashes into the signed head of \\d+ entries$`),
      );
      await screenshot(page, 'patient-audit-warning-360');
    } finally {
      db.prepare('UPDATE entries SET leaf = ? WHERE idx = ?').run(leaf, index);
      db.close();
    }
  }, 180_000);
});
