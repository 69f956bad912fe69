// A patient's share link opened in a real browser (issue 26): the link (/share#code=…) opened in a
// fresh browser context exchanges its code once, lists the study it opens with what the grant
// gives and until when, and opens it in the viewer, which renders it; the same link in a second
// fresh context says it was used already; an expired and an unknown code, and a grant revoked
// after the link was opened, each say so in plain words. The code never appears in a request's
// URL (only in the exchange's body). axe-core at 360 and 1280 px; screenshots in test-artifacts/.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GeneratedStudy, planStudy } from '../../../bench/generate.ts';
import { createKeyFile, type KeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement, type GrantRequest } from '../../../src/grants/statement.ts';
import { shareUrl } from '../../../src/shell/api/patient-common.ts';
import { buildPage } from '../../../src/web/build.ts';
import { axeViolations, type Browser, launchBrowser, type Page, screenshot } from '../../support/browser.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

const HOUR = 3_600_000;

describe('a share link in the browser', () => {
  let node: TestNode;
  let origin: string;
  let work: string;
  let browser: Browser;
  // Patient PAT-S: study A with series X (granted by the link) and Y (not), study B (not).
  let x: GeneratedStudy;
  let y: GeneratedStudy;
  let b: GeneratedStudy;
  let account: string;
  let key: KeyFile;
  let grantId: string;
  let link: string;

  async function grant(request: GrantRequest): Promise<string> {
    const identity = node.vault.identity;
    const statement = draftStatement({ nodeId: node.vault.grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() }, request);
    await node.vault.grants.add({ statement, proof: signStatement(statement, key) }, account);
    return statement.id;
  }

  /** A fresh browser context (nothing in its storage) with the page, and every URL it requested. */
  async function freshPage(width = 360): Promise<{ page: Page; urls: string[]; close(): Promise<void> }> {
    const context = await browser.newContext({ viewport: { width, height: width === 360 ? 780 : 900 } });
    const page = await context.newPage();
    const urls: string[] = [];
    page.on('request', (r) => urls.push(r.url()));
    return { page, urls, close: () => context.close() };
  }

  const seriousOf = async (page: Page): Promise<string[]> =>
    (await axeViolations(page))
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-share-'));
    await buildPage('share');
    node = await startTestNode();
    origin = new URL(node.url).origin;
    x = planStudy({ kind: 'single', instances: 3, rows: 128, columns: 128, seed: 2621, patientId: 'PAT-S' });
    y = planStudy({ kind: 'single', instances: 2, rows: 128, columns: 128, seed: 2622, patientId: 'PAT-S', studyInstanceUID: x.studyInstanceUID });
    b = planStudy({ kind: 'single', instances: 2, rows: 128, columns: 128, seed: 2623, patientId: 'PAT-S' });
    for (const s of [x, y, b]) expect((await stow(node.url, await Promise.all(s.instances.map(bytesOf)))).status).toBe(200);
    account = node.vault.identity.createPatient([{ id: 'PAT-S', issuer: null }]);
    const made = createKeyFile(join(work, 'patient.key'), { account, node: node.vault.grants.nodeId });
    node.vault.identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    key = readKeyFile(join(work, 'patient.key'));
    grantId = await grant({
      grantee: { kind: 'link' },
      series: [{ study: x.studyInstanceUID, series: x.seriesInstanceUID }],
      notAfter: new Date(Date.now() + HOUR),
    });
    link = shareUrl(origin, node.vault.grants.createShareCode(account, grantId).code);
    browser = await launchBrowser();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await node?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('opens once in a fresh browser: the study it gives, what and until when, and the viewer renders it', { timeout: 240_000 }, async () => {
    const { page, urls, close } = await freshPage(1280);
    try {
      await page.goto(link);
      await page.getByRole('heading', { name: 'The study you may open' }).waitFor({ timeout: 30_000 });
      const code = new URL(link).hash.slice('#code='.length);
      // The code left the address bar at once, and no request carried it in its URL.
      expect(page.url()).toBe(`${origin}/share`);
      expect(urls.filter((u) => u.includes(decodeURIComponent(code)) || u.includes(code))).toEqual([]);
      // The token the viewer reads, in this tab's storage.
      expect(await page.evaluate(() => sessionStorage.getItem('dicom-vault.token'))).toMatch(/^dvl_/);

      const what = page.locator('section.what');
      expect(await what.locator('dl').textContent()).toMatch(/^Whatone series of Synthetic benchmark study.*Kinds of dataimages.*Until/);
      const until = (await what.locator('dd.until').textContent()) ?? '';
      expect(until).toMatch(/, or earlier if the patient revokes it$/);
      const studies = page.locator('li.study');
      expect(await studies.count()).toBe(1);
      expect(await studies.first().textContent()).toMatch(/Images3/);
      const open = studies.first().getByRole('link', { name: /^Open in the viewer/ });
      expect(await open.getAttribute('href')).toBe(`/viewer/?StudyInstanceUIDs=${x.studyInstanceUID}`);

      for (const width of [1280, 360]) {
        await page.setViewportSize({ width, height: width === 360 ? 780 : 900 });
        await screenshot(page, `share-${width}`);
        expect(await seriousOf(page)).toEqual([]);
      }
      expect(await page.evaluate(() => (globalThis as any).document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
      await page.setViewportSize({ width: 1280, height: 900 });

      // The viewer, with the link's token: the granted series renders (its pixels read back from the canvas).
      const dicomweb: Array<{ url: string; status: number }> = [];
      page.on('response', (r) => {
        if (new URL(r.url()).pathname.startsWith('/dicom-web/')) dicomweb.push({ url: r.url(), status: r.status() });
      });
      await open.click();
      await page.waitForURL(/\/viewer\/viewer\?StudyInstanceUIDs=/, { timeout: 30_000 });
      await expect
        .poll(
          () =>
            page.evaluate(() => {
              // The node's tsconfig has no DOM library: the page's document through globalThis.
              const canvas = (globalThis as any).document.querySelector('.cornerstone-canvas, [data-cy="viewport-pane"] canvas');
              if (!canvas || canvas.width === 0) return 0;
              const ctx = canvas.getContext('2d', { willReadFrequently: true });
              if (!ctx) return 0;
              const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
              const values = new Set<number>();
              for (let i = 0; i < data.length; i += 4) values.add(data[i]!);
              return values.size;
            }),
          { timeout: 120_000, interval: 1_000 },
        )
        .toBeGreaterThan(16)
        .catch(async (err) => {
          await screenshot(page, 'share-viewer-failed');
          throw err;
        });
      await screenshot(page, 'share-viewer-1280');
      const answered = dicomweb.filter((r) => r.status === 200 || r.status === 206).map((r) => r.url);
      expect(answered.some((u) => u.includes(x.seriesInstanceUID))).toBe(true);
      expect(answered.filter((u) => u.includes(y.seriesInstanceUID) || u.includes(b.studyInstanceUID))).toEqual([]);
    } finally {
      await close();
    }
  });

  it('the same link in a second fresh browser: already used, said in plain words, and nothing shown', async () => {
    const { page, close } = await freshPage();
    try {
      await page.goto(link);
      const alert = page.getByRole('alert');
      await alert.waitFor();
      expect(await alert.textContent()).toMatch(/^This link has already been used\. A share link opens once only.*If that was not you, tell the patient/);
      expect(await page.locator('li.study').count()).toBe(0);
      expect(await page.evaluate(() => sessionStorage.getItem('dicom-vault.token'))).toBeNull();
      await screenshot(page, 'share-used-360');
      expect(await seriousOf(page)).toEqual([]);
    } finally {
      await close();
    }
  });

  it('an expired code and an unknown one each say so', async () => {
    const { code } = node.vault.grants.createShareCode(account, grantId, new Date(), 500);
    await new Promise((r) => setTimeout(r, 700));
    const expired = await freshPage();
    const unknown = await freshPage();
    const none = await freshPage();
    try {
      await expired.page.goto(shareUrl(origin, code));
      await expired.page.getByRole('alert').waitFor();
      expect(await expired.page.getByRole('alert').textContent()).toMatch(/^This link has expired: a share link must be opened within 10 minutes/);
      await unknown.page.goto(shareUrl(origin, 'dvs_not-a-code'));
      await unknown.page.getByRole('alert').waitFor();
      expect(await unknown.page.getByRole('alert').textContent()).toMatch(/^This link is not valid\. Check that it was copied whole/);
      // Without a code at all: what the page is for.
      await none.page.goto(`${origin}/share`);
      await none.page.getByRole('status').filter({ hasText: 'This page opens share links' }).waitFor();
    } finally {
      for (const p of [expired, unknown, none]) await p.close();
    }
  });

  it('once the patient revokes, the open page says the access has ended and forgets the token', async () => {
    const id = await grant({ grantee: { kind: 'link' }, studies: [b.studyInstanceUID], notAfter: null });
    const { page, close } = await freshPage();
    try {
      await page.goto(shareUrl(origin, node.vault.grants.createShareCode(account, id).code));
      await page.getByRole('heading', { name: 'The study you may open' }).waitFor({ timeout: 30_000 });
      expect(await page.locator('dd.until').textContent()).toMatch(/or earlier if the patient revokes it/);
      expect(await page.locator('li.study').count()).toBe(1);
      expect(node.vault.grants.revoke(id, `patient:${account}`, account)).toBe(true);
      await page.reload();
      await page.getByRole('alert').waitFor();
      expect(await page.getByRole('alert').textContent()).toMatch(/^The patient has revoked this access, or it has ended/);
      expect(await page.evaluate(() => sessionStorage.getItem('dicom-vault.token'))).toBeNull();
    } finally {
      await close();
    }
  });
});
