// The viewer's generated files (src/shell/viewer.ts) from the installed release's own index.html:
// no inline script is left (the CSP allows none), every path is under /viewer/, our boot script
// comes before OHIF's bundle, the service worker is gone; app-config.js names this node's
// DICOMweb prefix for QIDO and WADO and nothing else.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DICOMWEB_PREFIX } from '../../../src/shell/config.ts';
import { appConfig, VIEWER_CSP, VIEWER_DIR, VIEWER_WORKER_CSP, viewerIndex } from '../../../src/shell/viewer.ts';

describe('the viewer page made from the release', () => {
  const html = viewerIndex(readFileSync(join(VIEWER_DIR, 'index.html'), 'utf8'));

  it('has no inline script, every path under /viewer/, boot.js before the bundle, no service worker', () => {
    const scripts = [...html.matchAll(/<script([^>]*)>([^<]*)<\/script>/g)];
    expect(scripts.length).toBeGreaterThan(2);
    for (const [, attrs, body] of scripts) {
      expect(attrs).toMatch(/\bsrc="\/viewer\//);
      expect(body).toBe('');
    }
    const srcs = scripts.map(([, attrs]) => /src="([^"]+)"/.exec(attrs!)![1]);
    expect(srcs.indexOf('/viewer/dicom-vault/boot.js')).toBeLessThan(srcs.findIndex((s) => /app\.bundle\.[0-9a-f]+\.js$/.test(s!)));
    expect(srcs).toContain('/viewer/app-config.js');
    expect(html).not.toContain('init-service-worker');
    expect([...html.matchAll(/(?:href|src)="(\/[^"]*)"/g)].map((m) => m[1]).filter((p) => !p!.startsWith('/viewer/'))).toEqual([]);
  });

  it("app-config.js: one DICOMweb data source, this node's, relative", () => {
    const window: { config?: any } = {};
    new Function('window', appConfig())(window);
    expect(window.config.routerBasename).toBe('/viewer');
    expect(window.config.dataSources).toHaveLength(1);
    const { configuration } = window.config.dataSources[0];
    expect([configuration.qidoRoot, configuration.wadoRoot, configuration.wadoUriRoot]).toEqual([DICOMWEB_PREFIX, DICOMWEB_PREFIX, DICOMWEB_PREFIX]);
    expect(configuration).toMatchObject({ qidoSupportsIncludeField: true, supportsFuzzyMatching: false, supportsWildcard: true, staticWado: false });
  });

  it("the workers' policy differs from the page's by 'unsafe-eval' only", () => {
    expect(VIEWER_CSP).not.toContain("'unsafe-eval'");
    expect(VIEWER_CSP).not.toMatch(/script-src[^;]*'unsafe-inline'/);
    expect(VIEWER_WORKER_CSP.replace(" 'unsafe-eval'", '')).toBe(VIEWER_CSP);
  });
});
