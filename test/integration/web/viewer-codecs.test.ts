// The viewer decodes what the node sends as stored: a JPEG 2000 lossless MR (pydicom's
// MR_small_jp2klossless.dcm) is sent by WADO-RS in its own transfer syntax and decoded in the
// browser by OHIF's WebAssembly codec, under the viewer's CSP ('wasm-unsafe-eval' and nothing
// looser on the page; its workers also 'unsafe-eval', which the decoders' Emscripten glue needs):
// its pixels are read back from the viewport canvas, no CSP violation is reported, no file of the
// release is missing.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Browser, launchBrowser, screenshot } from '../../support/browser.ts';
import { stow } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { PYDICOM_DATA, requirePydicom } from '../../support/pydicom.ts';

describe('the viewer decodes compressed images in the browser', () => {
  let node: TestNode;
  let browser: Browser;
  let study: string;

  beforeAll(async () => {
    requirePydicom();
    node = await startTestNode();
    expect((await stow(node.url, [readFileSync(join(PYDICOM_DATA, 'test_files', 'MR_small_jp2klossless.dcm'))])).status).toBe(200);
    const found = (await (await fetch(`${node.url}/studies`, { headers: { accept: 'application/dicom+json' } })).json()) as any[];
    study = found[0]['0020000D'].Value[0];
    browser = await launchBrowser();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await node?.stop();
  });

  it('renders a JPEG 2000 lossless image with no CSP violation', { timeout: 240_000 }, async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const violations: string[] = [];
    page.on('console', (msg) => {
      if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
      if (process.env.VIEWER_DEBUG && (msg.type() === 'error' || msg.type() === 'warning')) console.log(`[page ${msg.type()}] ${msg.text().slice(0, 400)}`);
    });
    const frames: Array<{ status: number; body: string }> = [];
    const missing: string[] = [];
    // The release's files only: the doctor's page, left for the viewer below, may have a request of
    // its own (its grant list) aborted by that navigation.
    page.on('requestfailed', (req) => {
      if (new URL(req.url()).pathname.startsWith('/viewer/')) missing.push(`${req.url()}: ${req.failure()?.errorText}`);
    });
    page.on('response', async (res) => {
      if (res.status() >= 400 && new URL(res.url()).pathname.startsWith('/viewer/')) missing.push(`${res.url()}: ${res.status()}`);
      if (res.url().includes('/frames/')) frames.push({ status: res.status(), body: (await res.body()).subarray(0, 400).toString('latin1') });
    });
    const origin = new URL(node.url).origin;
    // The token where the doctor's page leaves it (the test account: staff, reads everything).
    await page.goto(`${origin}/doctor/`);
    await page.evaluate((token) => sessionStorage.setItem('dicom-vault.token', token), node.token);
    await page.goto(`${origin}/viewer/?StudyInstanceUIDs=${study}`);
    await expect
      .poll(
        () =>
          page.evaluate(() => {
            const canvas = (globalThis as any).document.querySelector('.cornerstone-canvas');
            if (!canvas || canvas.width === 0) return 0;
            const { data } = canvas.getContext('2d', { willReadFrequently: true }).getImageData(0, 0, canvas.width, canvas.height);
            const values = new Set<number>();
            for (let i = 0; i < data.length; i += 4) values.add(data[i]);
            return values.size;
          }),
        { timeout: Number(process.env.VIEWER_WAIT ?? 120_000), interval: 1_000 },
      )
      .toBeGreaterThan(32)
      .catch(async (err) => {
        await screenshot(page, 'viewer-jpeg2000-failed');
        if (process.env.VIEWER_DEBUG) console.log(JSON.stringify(frames));
        throw err;
      });
    await screenshot(page, 'viewer-jpeg2000');
    expect(frames.length).toBeGreaterThan(0);
    // Sent as stored: JPEG 2000 lossless (the part's Content-Type names the transfer syntax).
    expect(frames.every((f) => f.status === 200 && /transfer-syntax=1\.2\.840\.10008\.1\.2\.4\.90/.test(f.body))).toBe(true);
    expect(violations).toEqual([]);
    // Every file of the release the page asked for was there (its paths rewritten under /viewer/).
    expect(missing).toEqual([]);
    await page.close();
  });
});
