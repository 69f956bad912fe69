import { describe, expect, it } from 'vitest';
import pkg from '../package.json' with { type: 'json' };

describe('runtime', () => {
  it('runs on the Node pinned in devDependencies, not the machine default', () => {
    expect(process.version).toBe(`v${pkg.devDependencies.node}`);
  });
});
