// The doctor's side in a real browser (issue 26): a patient's two studies on a node started here,
// a grant to a doctor of ONE series for one hour; the doctor signs in on /doctor/ with their token,
// sees the one study and why, opens it in the OHIF Viewer at /viewer/, and the series renders (its
// pixels read back from the viewport's canvas); the other series and the other study never
// appear. The patient revokes; the viewer's next image request fails, it says why (the grant, when
// it was revoked) and sends nothing more; opened again, it loads nothing and says why; likewise
// under a grant that has expired. Axe checks the doctor's page at 1280 and 360 px; screenshots go
// to test-artifacts/.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import { createKeyFile, readKeyFile, signStatement, type KeyFile } from '../../../src/grants/signing.ts';
import { draftStatement, type GrantRequest } from '../../../src/grants/statement.ts';
import { VIEWER_CSP } from '../../../src/shell/viewer.ts';
import { buildPage } from '../../../src/web/build.ts';
import { axeViolations, type Browser, type BrowserContext, launchBrowser, type Page, screenshot } from '../../support/browser.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const HOUR = 3_600_000;

describe("the doctor's page and viewer", () => {
  let node: TestNode;
  let origin: string;
  let work: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  // Patient PAT-V: study A with series X (granted) and Y (not), study B (not granted).
  let x: GeneratedStudy;
  let y: GeneratedStudy;
  let b: GeneratedStudy;
  let account: string;
  let key: KeyFile;
  let doctorToken: string;
  let grantId: string;
  /** Every DICOMweb request the pages made, with its answer's status. */
  const requests: Array<{ url: string; status: number }> = [];
  const cspViolations: string[] = [];

  async function grant(request: GrantRequest): Promise<string> {
    const identity = node.vault.identity;
    const statement = draftStatement({ nodeId: node.vault.grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() }, request);
    await node.vault.grants.add({ statement, proof: signStatement(statement, key) }, account);
    return statement.id;
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-viewer-'));
    // Into .cache/web/doctor/ (git-ignored), where the node serves it from.
    await buildPage('doctor');
    node = await startTestNode();
    origin = new URL(node.url).origin;
    x = planStudy({ kind: 'single', instances: 4, rows: 128, columns: 128, seed: 2611, patientId: 'PAT-V' });
    y = planStudy({ kind: 'single', instances: 3, rows: 128, columns: 128, seed: 2612, patientId: 'PAT-V', studyInstanceUID: x.studyInstanceUID });
    b = planStudy({ kind: 'single', instances: 2, rows: 128, columns: 128, seed: 2613, patientId: 'PAT-V' });
    for (const s of [x, y, b]) expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)))).status).toBe(200);

    account = node.vault.identity.createPatient([{ id: 'PAT-V', issuer: null }]);
    const made = createKeyFile(join(work, 'patient.key'), { account, node: node.vault.grants.nodeId });
    node.vault.identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    key = readKeyFile(join(work, 'patient.key'));
    doctorToken = node.vault.identity.addUser('dr.house', ['grantee']).token;
    grantId = await grant({
      grantee: { kind: 'user', id: 'dr.house' },
      series: [{ study: x.studyInstanceUID, series: x.seriesInstanceUID }],
      notAfter: new Date(Date.now() + HOUR),
    });

    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('response', (res) => {
      if (new URL(res.url()).pathname.startsWith('/dicom-web/')) requests.push({ url: res.url(), status: res.status() });
    });
    page.on('console', (msg) => {
      // On the viewer (the axe check injects a script into the doctor's page, which its CSP refuses).
      if (/Content Security Policy/i.test(msg.text()) && new URL(page.url()).pathname.startsWith('/viewer/')) cspViolations.push(msg.text());
      if (process.env.VIEWER_DEBUG && (msg.type() === 'error' || msg.type() === 'warning')) console.log(`[page ${msg.type()}] ${msg.text().slice(0, 300)}`);
    });
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await node?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('signs the doctor in with their token and lists the one study, with the grant that opens it', async () => {
    await page.goto(`${origin}/doctor/`);
    await page.getByLabel('Access token').fill('dv_not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('This token was not accepted');

    await page.getByLabel('Access token').fill(doctorToken);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: '1 study you may open' }).waitFor({ timeout: 30_000 });
    const cards = page.locator('ul.studies > li');
    expect(await cards.count()).toBe(1);
    const card = cards.first();
    expect(await card.textContent()).toContain('one series of it only');
    expect(await card.textContent()).toContain(grantId);
    expect(await card.getByRole('link', { name: /^Open in the viewer/ }).getAttribute('href')).toBe(`/viewer/?StudyInstanceUIDs=${x.studyInstanceUID}`);
    expect(await page.evaluate(() => sessionStorage.getItem('dicom-vault.token'))).toBe(doctorToken);

    const violations = await axeViolations(page);
    expect(violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')).toEqual([]);
    await screenshot(page, 'doctor-1280');
    await page.setViewportSize({ width: 360, height: 780 });
    await screenshot(page, 'doctor-360');
    const narrow = await axeViolations(page);
    expect(narrow.filter((v) => v.impact === 'serious' || v.impact === 'critical')).toEqual([]);
    // Nothing wider than the phone's screen.
    expect(await page.evaluate(() => (globalThis as any).document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('opens the study in the viewer: the granted series renders, nothing else appears', { timeout: 240_000 }, async () => {
    const res = await page.request.get(`${origin}/viewer/viewer`);
    expect(res.headers()['content-security-policy']).toBe(VIEWER_CSP);
    await page.getByRole('link', { name: /^Open in the viewer/ }).click();
    await page.waitForURL(/\/viewer\/viewer\?StudyInstanceUIDs=/, { timeout: 30_000 });

    // The viewport's canvas shows the image: non-uniform pixels, read back from the canvas.
    const stats = await expect
      .poll(
        async () =>
          page.evaluate(() => {
            // The node's tsconfig has no DOM library: the page's document through globalThis.
            const canvas = (globalThis as any).document.querySelector('.cornerstone-canvas, [data-cy="viewport-pane"] canvas');
            if (!canvas || canvas.width === 0) return undefined;
            const ctx = canvas.getContext('2d', { willReadFrequently: true });
            if (!ctx) return undefined;
            const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
            const values = new Set<number>();
            let lit = 0;
            for (let i = 0; i < data.length; i += 4) {
              values.add(data[i]!);
              if (data[i]! > 0) lit++;
            }
            return values.size > 16 && lit > 1000 ? { distinct: values.size, lit } : undefined;
          }),
        { timeout: 120_000, interval: 1_000 },
      )
      .toBeDefined()
      .catch(async (err) => {
        await screenshot(page, 'viewer-failed');
        throw err;
      });
    void stats;
    await screenshot(page, 'viewer-1280');
    await page.setViewportSize({ width: 360, height: 780 });
    await screenshot(page, 'viewer-360');
    await page.setViewportSize({ width: 1280, height: 900 });

    // One series in the study browser; neither series Y nor study B was ever answered.
    const thumbnails = page.locator('[data-cy="study-browser-thumbnail"], [data-cy="study-browser-thumbnail-no-image"]');
    await expect.poll(() => thumbnails.count(), { timeout: 30_000 }).toBe(1);
    const answered = requests.filter((r) => r.status === 200 || r.status === 206).map((r) => r.url);
    expect(answered.some((u) => u.includes(x.seriesInstanceUID))).toBe(true);
    expect(answered.filter((u) => u.includes(y.seriesInstanceUID) || u.includes(b.studyInstanceUID))).toEqual([]);
    expect(requests.filter((r) => r.status === 401 || r.status === 403)).toEqual([]);
    expect(cspViolations).toEqual([]);
  });

  it('after the patient revokes, the next image request fails and the viewer says why and stops', { timeout: 120_000 }, async () => {
    expect(node.vault.grants.revoke(grantId, `patient:${account}`, account)).toBe(true);
    // Every image of the 4 is already loaded (prefetched), so the viewer's next image request is
    // made here, through the page's fetch as OHIF's loaders make theirs: the next frame.
    const frame = `/dicom-web/studies/${x.studyInstanceUID}/series/${x.seriesInstanceUID}/instances/${x.instances[1]!.sopInstanceUID}/frames/1`;
    const status = await page.evaluate(
      async (url) => (await fetch(url, { headers: { accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=*' } })).status,
      frame,
    );
    expect(status).toBe(404); // a revoked grant reads as unknown to DICOMweb (no existence oracle)
    const banner = page.locator('#dicom-vault-stopped');
    await banner.waitFor({ timeout: 30_000 });
    expect(await banner.getAttribute('role')).toBe('alert');
    const text = await banner.textContent();
    expect(text).toContain(`grant ${grantId} was revoked by the patient`);
    expect(text).toContain('The viewer has stopped loading images.');
    await screenshot(page, 'viewer-revoked');

    // Stopped: a further request never reaches the node.
    const count = requests.length;
    const refused = await page.evaluate(
      async (url) =>
        fetch(url).then(
          () => 'sent',
          (err: Error) => err.message,
        ),
      frame,
    );
    expect(refused).toBe('The viewer has stopped loading images.');
    await page.waitForTimeout(1_000);
    expect(requests.length).toBe(count);
  });

  it('opened again after the revocation, the viewer loads nothing and says why', { timeout: 120_000 }, async () => {
    const before = requests.length;
    await page.reload();
    const banner = page.locator('#dicom-vault-stopped');
    await banner.waitFor({ timeout: 60_000 });
    expect(await banner.textContent()).toContain(`grant ${grantId} was revoked by the patient`);
    const after = requests.slice(before);
    expect(after.length).toBeGreaterThan(0); // OHIF asked, and was answered nothing
    expect(after.filter((r) => r.status === 200 && (r.url.includes('/frames/') || r.url.includes('/metadata')))).toEqual([]);
  });

  it('a grant that has expired: the viewer loads nothing and says when it ended', { timeout: 120_000 }, async () => {
    const chase = node.vault.identity.addUser('dr.chase', ['grantee']).token;
    const ends = new Date(Math.ceil(Date.now() / 1000) * 1000 + 3_000);
    const id = await grant({ grantee: { kind: 'user', id: 'dr.chase' }, studies: [x.studyInstanceUID], notAfter: ends });
    await new Promise((resolve) => setTimeout(resolve, ends.getTime() - Date.now() + 500));
    const other = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const tab = await other.newPage();
    const answered: string[] = [];
    tab.on('response', (res) => {
      if (res.url().includes('/dicom-web/') && res.status() === 200) answered.push(res.url());
    });
    await tab.goto(`${origin}/doctor/`);
    await tab.evaluate((token) => sessionStorage.setItem('dicom-vault.token', token), chase);
    await tab.goto(`${origin}/viewer/?StudyInstanceUIDs=${x.studyInstanceUID}`);
    const banner = tab.locator('#dicom-vault-stopped');
    await banner.waitFor({ timeout: 60_000 });
    expect(await banner.textContent()).toContain(`grant ${id} expired at`);
    expect(answered.filter((u) => u.includes('/frames/') || u.includes('/metadata'))).toEqual([]);
    await other.close();
  });
});
