// The browser tools the page and viewer tests stand on, checked on their own so that a page test
// that passes cannot pass because a tool silently did nothing: Debian's chromium starts, its virtual
// authenticator makes a real passkey for a page on loopback, and axe-core does report a violation
// that is there.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addVirtualAuthenticator, axeViolations, type Browser, launchBrowser } from '../../support/browser.ts';

const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tools</title></head>
<body><main><h1>Tools</h1><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="1" height="1"></main></body></html>`;

let browser: Browser;
let server: Server;
let origin: string;

beforeAll(async () => {
  browser = await launchBrowser();
  server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': "default-src 'self'; img-src data:" });
    res.end(PAGE);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://localhost:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => server?.close(resolve));
});

describe('browser tools', () => {
  it("creates a passkey with chromium's virtual authenticator", async () => {
    const page = await browser.newPage();
    await page.goto(origin);
    const authenticator = await addVirtualAuthenticator(page);
    const id = await page.evaluate(async () => {
      const nav = (globalThis as unknown as { navigator: { credentials: { create(o: unknown): Promise<{ id: string }> } } }).navigator;
      const credential = await nav.credentials.create({
        publicKey: {
          challenge: new Uint8Array(32),
          rp: { name: 'tools', id: 'localhost' },
          user: { id: new Uint8Array([1, 2, 3]), name: 'p', displayName: 'p' },
          pubKeyCredParams: [{ type: 'public-key', alg: -7 }],
          authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
        },
      });
      return credential.id;
    });
    const held = await authenticator.credentials();
    expect(held).toHaveLength(1);
    const [passkey] = held;
    expect(Buffer.from(passkey?.credentialId ?? '', 'base64').toString('base64url')).toBe(id);
    expect(passkey?.rpId).toBe('localhost');
    await page.close();
  });

  it('axe-core runs under a strict CSP and finds an image without a text alternative', async () => {
    const page = await browser.newPage();
    await page.goto(origin);
    const violations = await axeViolations(page);
    expect(violations.map((v) => v.id)).toContain('image-alt');
    await page.close();
  });
});
