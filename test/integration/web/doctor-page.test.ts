// The doctor's page on its own, in a real browser: its sign-in form passes axe at 360 and 1280 px;
// markup in a study description or a patient name (a hostile PACS, a typo) is shown as text and
// never becomes an element; the page is served with its strict CSP and no inline script.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement } from '../../../src/grants/statement.ts';
import { pageCsp } from '../../../src/shell/doctor.ts';
import { buildPage } from '../../../src/web/build.ts';
import { axeViolations, type Browser, launchBrowser, screenshot } from '../../support/browser.ts';
import { stow } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { PYDICOM_DATA, requirePydicom } from '../../support/pydicom.ts';

const STUDY = '1.2.826.0.1.3680043.8.498.2631';
const DESCRIPTION = '<img src=x onerror="document.title=\'pwned\'">Head <b>CT</b>';
const PATIENT = '<script>alert(1)</script>^Eve';

const HOSTILE = `
import sys, pydicom
src, out, study, description, name = sys.argv[1:6]
ds = pydicom.dcmread(src)
ds.StudyInstanceUID, ds.PatientID = study, 'PAT-X'
ds.SeriesInstanceUID = study + '.1'
ds.SOPInstanceUID = study + '.1.1'
ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
ds.StudyDescription, ds.PatientName = description, name
ds.save_as(out, write_like_original=False)
`;

describe("the doctor's page", () => {
  let node: TestNode;
  let browser: Browser;
  let work: string;
  let token: string;

  beforeAll(async () => {
    requirePydicom();
    work = mkdtempSync(join(tmpdir(), 'dv-doctor-page-'));
    await buildPage('doctor');
    node = await startTestNode();
    const file = join(work, 'hostile.dcm');
    execFileSync('/usr/bin/python3', ['-c', HOSTILE, join(PYDICOM_DATA, 'test_files', 'CT_small.dcm'), file, STUDY, DESCRIPTION, PATIENT]);
    expect((await stow(node.url, [readFileSync(file)])).status).toBe(200);
    const identity = node.vault.identity;
    const account = identity.createPatient([{ id: 'PAT-X', issuer: null }]);
    const made = createKeyFile(join(work, 'patient.key'), { account, node: node.vault.grants.nodeId });
    identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    token = identity.addUser('dr.foreman', ['grantee']).token;
    const statement = draftStatement(
      { nodeId: node.vault.grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() },
      { grantee: { kind: 'user', id: 'dr.foreman' }, studies: [STUDY], notAfter: null },
    );
    await node.vault.grants.add({ statement, proof: signStatement(statement, readKeyFile(join(work, 'patient.key'))) }, account);
    browser = await launchBrowser();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await node?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('the sign-in form: accessible at 360 and 1280 px', async () => {
    const page = await browser.newPage({ viewport: { width: 360, height: 780 } });
    await page.goto(`${new URL(node.url).origin}/doctor/`);
    await page.getByLabel('Access token').waitFor();
    expect(await page.getByRole('button', { name: 'Sign in with your hospital account' }).count()).toBe(0); // no provider configured
    for (const width of [360, 1280]) {
      await page.setViewportSize({ width, height: 800 });
      await screenshot(page, `doctor-sign-in-${width}`);
      const serious = (await axeViolations(page)).filter((v) => v.impact === 'serious' || v.impact === 'critical');
      expect(serious).toEqual([]);
    }
    await page.close();
  });

  it('shows markup in a description or a name as text', async () => {
    const page = await browser.newPage();
    const dialogs: string[] = [];
    page.on('dialog', async (d) => {
      dialogs.push(d.message());
      await d.dismiss();
    });
    await page.goto(`${new URL(node.url).origin}/doctor/`);
    await page.getByLabel('Access token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const card = page.locator('ul.studies > li');
    await card.first().waitFor({ timeout: 30_000 });
    expect(await card.locator('h3').textContent()).toBe(DESCRIPTION);
    expect(await card.textContent()).toContain('<script>alert(1)</script> Eve');
    expect(await card.locator('img, script, b').count()).toBe(0);
    expect(await page.title()).not.toBe('pwned');
    expect(dialogs).toEqual([]);
    expect(await card.getByRole('link', { name: `Open in the viewer: ${DESCRIPTION}` }).count()).toBe(1);
    await page.close();
  });

  it('is served with a strict CSP, no inline script', async () => {
    const res = await fetch(`${new URL(node.url).origin}/doctor/`);
    expect(res.headers.get('content-security-policy')).toBe(pageCsp());
    expect(pageCsp()).toContain("script-src 'self';");
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await res.text()).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
  });
});
