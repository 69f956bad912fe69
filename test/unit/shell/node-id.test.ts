// node.json's nodeId: made once with a new data directory, added once to a node.json of an older
// release (its other fields kept), the same ever after: grants are signed for it.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NODE_FILE, nodeIdOf, readIdentity, writeIdentity } from '../../../src/shell/data-dir.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dicom-vault-node-id-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('nodeId', () => {
  it('is written with a new identity and read back unchanged', () => {
    writeIdentity(dir, new Uint8Array(32).fill(1));
    const id = readIdentity(dir)!.nodeId!;
    expect(id).toMatch(UUID);
    expect(nodeIdOf(dir)).toBe(id);
    expect(nodeIdOf(dir)).toBe(id);
  });

  it('is added once to a node.json without one, keeping its other fields and its mode', () => {
    const old = { format: 1, masterKeyFingerprint: 'ab'.repeat(16), createdAt: '2025-01-01T00:00:00.000Z' };
    writeFileSync(join(dir, NODE_FILE), JSON.stringify(old), { mode: 0o600 });
    const id = nodeIdOf(dir);
    expect(id).toMatch(UUID);
    expect(JSON.parse(readFileSync(join(dir, NODE_FILE), 'utf8'))).toEqual({ ...old, nodeId: id });
    expect(statSync(join(dir, NODE_FILE)).mode & 0o777).toBe(0o600);
    expect(nodeIdOf(dir)).toBe(id);
  });

  it('needs a node.json', () => {
    expect(() => nodeIdOf(dir)).toThrow(/node\.json is missing/);
  });
});
