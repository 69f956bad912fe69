// A real browser for the page and viewer tests: Debian's chromium driven by playwright-core (its own
// browser download needs the web, which these machines do not reach), with WebAuthn through
// Chromium's virtual authenticator (the DevTools protocol's WebAuthn domain) and axe-core for the
// accessibility checks. Screenshots go to test-artifacts/ (ignored by git), never into the tree.
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { type Browser, type BrowserContext, type CDPSession, chromium, type Page } from 'playwright-core';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'];
export const ARTIFACTS = join(import.meta.dirname, '..', '..', 'test-artifacts');

/** Debian's chromium, headless. Fails (never skips) when it is not installed. */
export async function launchBrowser(): Promise<Browser> {
  const executablePath = CHROMIUM.find((p) => existsSync(p));
  if (!executablePath) throw new Error('chromium is not installed: run test/services/setup.sh');
  return chromium.launch({
    executablePath,
    headless: true,
    // Root in a container has no user namespaces for chromium's sandbox; the pages under test are
    // our own, served from loopback.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
}

export interface VirtualAuthenticator {
  readonly cdp: CDPSession;
  readonly authenticatorId: string;
  /** The passkeys the authenticator holds (credential id, rpId, user handle, sign count). */
  credentials(): Promise<Array<{ credentialId: string; rpId?: string; userHandle?: string; signCount: number }>>;
  remove(): Promise<void>;
}

/**
 * Adds a platform-like authenticator (CTAP2, internal transport, resident keys, user verification
 * that always succeeds) to one page; navigator.credentials then creates and uses real passkeys.
 */
export async function addVirtualAuthenticator(page: Page): Promise<VirtualAuthenticator> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return {
    cdp,
    authenticatorId,
    async credentials() {
      const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
      return credentials;
    },
    async remove() {
      await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
    },
  };
}

const require = createRequire(import.meta.url);

export interface AxeViolation {
  id: string;
  impact: 'minor' | 'moderate' | 'serious' | 'critical' | null;
  help: string;
  nodes: Array<{ target: string[]; html: string }>;
}

/**
 * Runs axe-core inside the page (WCAG 2.2 A and AA rules) and returns its violations. The script
 * goes in through the DevTools protocol, so the page's Content-Security-Policy needs no exception.
 */
export async function axeViolations(page: Page): Promise<AxeViolation[]> {
  await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') }).catch(async () => {
    // A strict CSP refuses the injected <script>; evaluate the source in the page's world instead.
    const { readFile } = await import('node:fs/promises');
    await page.evaluate(await readFile(require.resolve('axe-core/axe.min.js'), 'utf8'));
  });
  return page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run(ctx: unknown, opts: unknown): Promise<{ violations: AxeViolation[] }> } }).axe;
    // The node's tsconfig has no DOM library; the page's document is reached through globalThis.
    const doc = (globalThis as unknown as { document: unknown }).document;
    const result = await axe.run(doc, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] },
    });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => ({ target: n.target, html: n.html })),
    }));
  });
}

/** Saves a full-page screenshot under test-artifacts/ and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

export type { Browser, BrowserContext, Page };
