// The shared SQLite helpers: the bounded statement cache and the one write transaction.
import { DatabaseSync } from 'node:sqlite';
import { describe, expect, it } from 'vitest';
import { StatementCache, transaction } from '../../../src/core/sqlite.ts';
import { isVaultError } from '../../../src/core/errors.ts';

function db(): DatabaseSync {
  const d = new DatabaseSync(':memory:');
  d.exec('CREATE TABLE t (v INTEGER)');
  return d;
}
const count = (d: DatabaseSync): number => (d.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n;

describe('StatementCache', () => {
  it('prepares each SQL text once and keeps at most its bound, dropping the least recently used', () => {
    const d = db();
    const cache = new StatementCache(d, 2);
    const a = cache.get('SELECT 1');
    expect(cache.get('SELECT 1')).toBe(a);
    const b = cache.get('SELECT 2');
    cache.get('SELECT 1'); // now SELECT 2 is the least recently used
    cache.get('SELECT 3');
    expect(cache.size).toBe(2);
    expect(cache.get('SELECT 1')).toBe(a);
    expect(cache.get('SELECT 2')).not.toBe(b);
  });
});

describe('transaction', () => {
  it('commits what fn wrote and returns its result', () => {
    const d = db();
    expect(
      transaction(d, () => {
        d.exec('INSERT INTO t VALUES (1)');
        return 'done';
      }),
    ).toBe('done');
    expect(count(d)).toBe(1);
    expect(d.isTransaction).toBe(false);
  });

  it('rolls back everything when fn throws, and rethrows its error', () => {
    const d = db();
    const boom = new Error('boom');
    expect(() =>
      transaction(d, () => {
        d.exec('INSERT INTO t VALUES (1)');
        throw boom;
      }),
    ).toThrow(boom);
    expect(count(d)).toBe(0);
    expect(d.isTransaction).toBe(false);
  });

  it('refuses a transaction inside another, leaving the outer one to roll back whole', () => {
    const d = db();
    let inner: unknown;
    expect(() =>
      transaction(d, () => {
        d.exec('INSERT INTO t VALUES (1)');
        try {
          transaction(d, () => d.exec('INSERT INTO t VALUES (2)'));
        } catch (err) {
          inner = err;
          throw err;
        }
      }),
    ).toThrow();
    expect(isVaultError(inner) && inner.code).toBe('INTERNAL');
    expect(count(d)).toBe(0);
  });

  it('keeps the error of fn when SQLite has already rolled back', () => {
    const d = db();
    // A ROLLBACK issued by fn itself leaves no transaction: the helper must not ROLLBACK again.
    expect(() =>
      transaction(d, () => {
        d.exec('INSERT INTO t VALUES (1)');
        d.exec('ROLLBACK');
        throw new Error('after rollback');
      }),
    ).toThrow('after rollback');
    expect(count(d)).toBe(0);
  });
});
