// The key store's memory (issue 21): unwrapped study keys are cached for speed, but not one per
// study for the life of the process (a soak stores a study every few seconds; a hospital, millions),
// and an erased key is never served from that cache, whoever erased it.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KeyStore, type PatientRef } from '../../../src/format/keys.ts';

const dirs: string[] = [];
const stores: KeyStore[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function openStore(cacheSize?: number, at?: { dir: string; master: Buffer }): { store: KeyStore; dir: string; master: Buffer } {
  const dir = at?.dir ?? mkdtempSync(join(tmpdir(), 'dv-keys-'));
  if (at === undefined) dirs.push(dir);
  const master = at?.master ?? randomBytes(32);
  const store = KeyStore.open({ path: join(dir, 'keys.db'), masterKey: master, ...(cacheSize === undefined ? {} : { cacheSize }) });
  stores.push(store);
  return { store, dir, master };
}

const alice: PatientRef = { patientId: 'ALICE', issuer: '' };
const bob: PatientRef = { patientId: 'BOB', issuer: 'HOSP' };

describe('KeyStore cache', () => {
  it('keeps at most its bound of unwrapped keys, however many studies it serves', () => {
    // Each new study's key is an fsynced insert: a small bound keeps the test quick.
    const { store } = openStore(16);
    const first = store.getOrCreate('1.2.3.0', alice);
    for (let i = 1; i < 100; i++) store.getOrCreate(`1.2.3.${i}`, i % 2 === 0 ? alice : bob);
    expect(store.cachedKeys).toBe(16);
    // A study whose key left the cache still gets its own key, unwrapped again from its row.
    const again = store.get('1.2.3.0');
    expect(again?.keyId).toBe(first.keyId);
    expect(Buffer.compare(again!.key, first.key)).toBe(0);
    expect(Buffer.compare(again!.anchorSalt, first.anchorSalt)).toBe(0);
    expect(store.cachedKeys).toBe(16);
  });

  it('drops the least recently used key first', () => {
    const { store } = openStore(2);
    const a = store.getOrCreate('1.2.840.1', alice);
    store.getOrCreate('1.2.840.2', alice);
    expect(store.get('1.2.840.1')).toBe(a); // a hit: now 1.2.840.2 is the least recently used
    store.getOrCreate('1.2.840.3', alice);
    expect(store.cachedKeys).toBe(2);
    expect(store.get('1.2.840.1')).toBe(a); // still cached: the same object, not unwrapped again
  });

  it('serves no erased study key from the cache: a study, a patient, or either erased by another process', () => {
    const { store, dir, master } = openStore(8);
    for (const s of ['1.9.1', '1.9.2']) store.getOrCreate(s, alice);
    const kept = store.getOrCreate('1.9.3', bob);
    expect(store.cachedKeys).toBe(3);

    store.destroy({ studies: ['1.9.1'] });
    expect(store.get('1.9.1')).toBeUndefined();
    expect(() => store.require('1.9.1')).toThrow(expect.objectContaining({ code: 'KEY_NOT_FOUND' }));
    expect(store.get('1.9.2')).toBeDefined();

    store.destroy({ studies: [], patient: alice });
    expect(store.get('1.9.2')).toBeUndefined();
    expect(store.get('1.9.3')).toBe(kept);

    // Another connection to the same keys.db (an operator's `dicom-vault erase` beside the node).
    const other = openStore(8, { dir, master }).store;
    other.destroy({ studies: [], patient: bob });
    expect(store.get('1.9.3')).toBeUndefined();
    expect(store.cachedKeys).toBe(0);

    // A study stored again after its erasure gets a new key, not the cached one.
    const fresh = store.getOrCreate('1.9.3', bob);
    expect(fresh.keyId).not.toBe(kept.keyId);
    expect(Buffer.compare(fresh.key, kept.key)).not.toBe(0);
  });
});
