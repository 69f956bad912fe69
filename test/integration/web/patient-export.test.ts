// "Take everything to another provider" on the patient's page (GDPR Art. 20, issues 25 and 26), in
// a real browser against a real node: the patient pastes the receiving node's public key, the page
// follows the export while the node prepares it, fetches the archive with the session's token and
// offers it as a download; the downloaded file is a patient archive that the receiving node
// imports (the CLI's `import`), with the patient's two studies and not the other patient's. A key
// that is no key is refused with the reason. axe-core on the section at 360 px.
//
// It also makes the README's two pictures of the page (generated studies, no patient's data):
// test-artifacts/readme-patient-{360,1280}.png, the visible part of the page at a phone's and a
// desktop's width, copied by hand into test/screenshots/ when the page changes.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error dcmjs ships no type declarations; only DicomMessage.readFile and write are used (typed below).
import dcmjsModule from 'dcmjs';
import { type GeneratedStudy, planStudy } from '../../../bench/generate.ts';
import { createKeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement } from '../../../src/grants/statement.ts';
import { isPatientArchive } from '../../../src/transfer/patient-archive.ts';
import { buildPage } from '../../../src/web/build.ts';
import { ARTIFACTS, axeViolations, type Browser, launchBrowser, type Page } from '../../support/browser.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { run } from '../../support/process.ts';

const dcmjs = dcmjsModule as {
  data: { DicomMessage: { readFile(buffer: ArrayBuffer): { dict: Record<string, unknown>; write(): ArrayBuffer } } };
};

/** A generated instance with a study description and a (made-up) patient name, for a page that reads like a patient's. */
function withTexts(bytes: Buffer, description: string, name: string): Buffer {
  const dataset = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
  dataset.dict['00081030'] = { vr: 'LO', Value: [description] };
  dataset.dict['00100010'] = { vr: 'PN', Value: [{ Alphabetic: name }] };
  return Buffer.from(dataset.write());
}

describe("the patient's page: everything for another provider", () => {
  let node: TestNode;
  let origin: string;
  let work: string;
  let receiver: string;
  let browser: Browser;
  let page: Page;
  let mine: GeneratedStudy[];
  let account: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-patient-export-'));
    receiver = await mkdtemp(join(tmpdir(), 'dv-patient-export-b-'));
    await buildPage('patient');
    node = await startTestNode();
    origin = new URL(node.url).origin;
    mine = [
      planStudy({ kind: 'single', instances: 3, rows: 64, columns: 64, seed: 2631, patientId: 'PAT-E' }),
      planStudy({ kind: 'single', instances: 2, rows: 64, columns: 64, seed: 2632, patientId: 'PAT-E' }),
    ];
    const other = planStudy({ kind: 'single', instances: 1, rows: 64, columns: 64, seed: 2633, patientId: 'PAT-E-OTHER' });
    const texts = ['MR knee, left', 'MR brain without contrast', 'Another patient'];
    for (const [i, s] of [...mine, other].entries()) {
      const parts = await Promise.all(s.instances.map(async (x) => withTexts(await bytesOf(x), texts[i]!, 'Example^Alex')));
      expect((await stow(node.url, parts)).status).toBe(200);
    }
    account = node.vault.identity.createPatient([{ id: 'PAT-E', issuer: null }]);
    // A grant to a doctor, so that "who can see" shows one (and the README's picture too).
    node.vault.identity.addUser('dr.jones', ['grantee']);
    const made = createKeyFile(join(work, 'patient.key'), { account, node: node.vault.grants.nodeId });
    node.vault.identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    const statement = draftStatement(
      { nodeId: node.vault.grants.nodeId, account, patientIds: node.vault.identity.patientIds(account), now: new Date() },
      { grantee: { kind: 'user', id: 'dr.jones' }, studies: [mine[0]!.studyInstanceUID], notAfter: new Date(Date.now() + 7 * 24 * 3_600_000) },
    );
    await node.vault.grants.add({ statement, proof: signStatement(statement, readKeyFile(join(work, 'patient.key'))) }, account);

    browser = await launchBrowser();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true })).newPage();
    // Signed in: the session a passkey sign-in gives (patient-page.test.ts signs in with a real passkey).
    const expiresAt = new Date(Date.now() + 3_600_000);
    const token = node.vault.identity.issueToken('patient', account, expiresAt);
    await page.goto(origin);
    await page.evaluate(
      ([t, at]) => sessionStorage.setItem('dicom-vault.session', JSON.stringify({ token: t, expiresAt: at })),
      [token, expiresAt.toISOString()],
    );
    await page.reload();
    await page.getByRole('heading', { name: 'Your studies' }).waitFor({ timeout: 30_000 });
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await node?.stop();
    await rm(work, { recursive: true, force: true });
    await rm(receiver, { recursive: true, force: true });
  });

  it("the README's pictures: the page at 1280 and 360 px", async () => {
    // Thumbnails decoded and every study's row complete before the picture.
    await page.waitForFunction(() => {
      const imgs = [...(globalThis as any).document.querySelectorAll('li.study img')] as Array<{ complete: boolean; naturalWidth: number }>;
      return imgs.length === 2 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    });
    await expect.poll(() => page.locator('li.grant').count()).toBe(1);
    for (const width of [1280, 360]) {
      await page.setViewportSize({ width, height: width === 360 ? 780 : 900 });
      await page.evaluate(() => (globalThis as any).scrollTo(0, 0));
      await page.screenshot({ path: join(ARTIFACTS, `readme-patient-${width}.png`) });
    }
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('a key that is no key is refused, with the reason', async () => {
    const section = page.locator('#export');
    await section.getByLabel("The receiving provider's key").fill('-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----');
    await section.getByRole('button', { name: 'Prepare the file' }).click();
    await expect.poll(() => section.getByRole('alert').textContent()).toMatch(/^That did not work: /);
  });

  it("prepares the file, downloads it with the session, and the receiving node imports the patient's two studies", { timeout: 180_000 }, async () => {
    const pub = await run(['public-key', '--data-dir', receiver]);
    expect(pub.code, pub.stderr).toBe(0);
    const section = page.locator('#export');
    // What it does and does not do, in plain words, before anything is asked.
    const words = (await section.textContent()) ?? '';
    expect(words).toMatch(/sealed to the receiving provider's key: only their system can open it/);
    expect(words).toMatch(/Nothing is deleted or changed here/);
    await section.getByLabel("The receiving provider's key").fill(pub.stdout);
    await section.getByRole('button', { name: 'Prepare the file' }).click();
    const download = section.getByRole('link', { name: 'Download the file' });
    await download.waitFor({ timeout: 120_000 });
    expect(await section.locator('.export-state [role=status]').textContent()).toMatch(/^Your file is ready: 2 studies, [\d.]+ (KB|MB)\.$/);
    expect(await download.getAttribute('href')).toMatch(/^blob:/);

    const [file] = await Promise.all([page.waitForEvent('download'), download.click()]);
    expect(file.suggestedFilename()).toMatch(/^patient-export-[0-9a-f-]+\.car$/);
    const path = join(work, 'from-page.car');
    await file.saveAs(path);
    expect(await isPatientArchive(path)).toBe(true);
    // Sealed: the Patient ID is nowhere in the file in clear.
    expect((await readFile(path)).includes(Buffer.from('PAT-E'))).toBe(false);

    const imported = await run(['import', path, '--json', '--data-dir', receiver]);
    expect(imported.code, imported.stderr).toBe(0);
    expect((JSON.parse(imported.stdout) as { studies: Array<{ study: string }> }).studies.map((s) => s.study).sort()).toEqual(
      mine.map((s) => s.studyInstanceUID).sort(),
    );

    await page.setViewportSize({ width: 360, height: 780 });
    await section.screenshot({ path: join(ARTIFACTS, 'patient-export-ready-360.png') });
    const serious = (await axeViolations(page)).filter((v) => v.impact === 'serious' || v.impact === 'critical');
    expect(serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`)).toEqual([]);
    expect(await page.evaluate(() => (globalThis as any).document.documentElement.scrollWidth)).toBeLessThanOrEqual(360);
  });

  it('erasure (moved to its own file with the export) still asks: one study, confirmed, listed as waiting', async () => {
    const section = page.locator('#erasure');
    await section.getByRole('button', { name: 'Ask for erasure' }).click();
    await expect.poll(() => section.getByRole('alert').textContent()).toMatch(/Tick the box to confirm/);
    await section.getByLabel('One study').check();
    await section.getByLabel('Study', { exact: true }).selectOption(mine[1]!.studyInstanceUID);
    await section.getByLabel('I understand that this cannot be undone').check();
    await section.getByRole('button', { name: 'Ask for erasure' }).click();
    await section.getByText('Your request is recorded').waitFor();
    expect(await section.locator('li').first().textContent()).toMatch(/^MR brain without contrast: waiting for a decision/);
  });
});
