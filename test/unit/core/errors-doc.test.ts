// The error catalogue is documented: every code in src/core/errors.ts has a row in the README with
// the same status, and the README lists no code that does not exist.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../../../src/core/errors.ts';

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
const table = readme.slice(readme.indexOf('<!-- errors:start -->'), readme.indexOf('<!-- errors:end -->'));
const rows = new Map([...table.matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1]!, Number(m[2])]));

describe('error catalogue', () => {
  it('documents every code with its HTTP status', () => {
    for (const [code, { status }] of Object.entries(ERRORS)) expect(rows.get(code), code).toBe(status);
  });
  it('documents no code that does not exist', () => {
    for (const code of rows.keys()) expect(Object.keys(ERRORS)).toContain(code);
  });
});
