// The audit log on real SQLite files: what it records, its proofs, its privacy, and every attack on
// the file that `audit verify` must catch and name (issue 24: an entry edited, deleted, two
// swapped, the log cut back and grown again, a head signed with another key, an anchored head
// the log does not have, another patient's proof, a flood of refusals, a full disk).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyInclusion } from '../../../anchor/merkle.ts';
import { type AuditRecord, openLeaf, parseLeaf } from '../../../src/audit/entry.ts';
import { HeadSigner, verifyHeadSignature } from '../../../src/audit/head.ts';
import { AuditLog } from '../../../src/audit/log.ts';
import { AUDIT_DB_FILE, SqliteAuditLogStore } from '../../../src/audit/store.ts';
import { AUDIT_KEYS_DB_FILE, NODE_SUBJECT, SqliteAuditKeyStore } from '../../../src/audit/subject-keys.ts';
import { verifyConsistency } from '../../../src/audit/tree.ts';
import { verifyLog } from '../../../src/audit/verify.ts';
import { ThreadAuditWriter } from '../../../src/audit/writer.ts';
import { isVaultError } from '../../../src/core/errors.ts';

const access = (who: string, study: string): AuditRecord => ({
  kind: 'access',
  who: { id: who, roles: ['staff'] },
  what: { action: 'retrieve', study, dataType: 'frames' },
  where: { address: '127.0.0.1', method: 'GET', url: `/dicom-web/studies/${study}` },
  why: 'staff policy',
});

let dir: string;
let master: Buffer;
const opened: Array<{ close(): void }> = [];

/** `thread`: batches written by a writer thread, as the node does. */
function open(options: { pragmas?: string[]; maxQueued?: number; thread?: boolean } = {}) {
  const store = SqliteAuditLogStore.open(join(dir, AUDIT_DB_FILE), options.pragmas ? { pragmas: options.pragmas } : {});
  const keys = SqliteAuditKeyStore.open(join(dir, AUDIT_KEYS_DB_FILE), master);
  const signer = HeadSigner.loadOrCreate(join(dir, 'audit-signing.key'));
  const writer = options.thread ? new ThreadAuditWriter({ path: join(dir, AUDIT_DB_FILE), pragmas: options.pragmas ?? [], maxBatch: 10_000 }) : undefined;
  const log = new AuditLog(
    { store, keys, signer, origin: 'test-node', ...(writer ? { writer } : {}) },
    { headIntervalMs: 0, ...(options.maxQueued ? { maxQueued: options.maxQueued } : {}) },
  );
  const all = {
    store,
    keys,
    signer,
    log,
    close() {
      log.close();
      writer?.close();
      store.close();
      keys.close();
    },
  };
  opened.push(all);
  return all;
}

/** 20 entries in 4 batches of 5 (a head after each): alternately about patients A and B. */
async function fill(log: AuditLog, a: string, b: string, from = 0, count = 20): Promise<void> {
  for (let i = from; i < from + count; i += 5) {
    await Promise.all(Array.from({ length: 5 }, (_, j) => log.append(access('user:dr', `1.2.${i + j}`), (i + j) % 2 === 0 ? a : b)));
    await new Promise((r) => setTimeout(r, 2));
  }
}

function raw(): DatabaseSync {
  return new DatabaseSync(join(dir, AUDIT_DB_FILE));
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'audit-log-'));
  master = randomBytes(32);
});
afterEach(() => {
  for (const o of opened.splice(0)) {
    try {
      o.close();
    } catch {
      // closed by the test already
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('audit log', () => {
  it('appends entries durably, signs linked heads, and proves inclusion and consistency', async () => {
    const { log, store, keys, signer } = open();
    const a = keys.subjectFor({ id: 'PAT-A', issuer: null });
    const b = keys.subjectFor({ id: 'PAT-B', issuer: 'HOSP' });
    await fill(log, a, b);
    expect(store.size()).toBe(20);
    const heads = store.heads();
    expect(heads.map((h) => h.size)).toEqual([5, 10, 15, 20]);
    for (const h of heads) expect(verifyHeadSignature(h, signer.publicKey)).toBe(true);
    for (let i = 1; i < heads.length; i++) {
      expect(verifyConsistency(heads[i - 1]!.size, heads[i]!.size, heads[i]!.proof, heads[i - 1]!.root, heads[i]!.root)).toBe(true);
      // and between any two heads, served on demand
      expect(verifyConsistency(heads[0]!.size, heads[i]!.size, log.consistency(heads[0]!.size, heads[i]!.size), heads[0]!.root, heads[i]!.root)).toBe(true);
    }
    for (let i = 0; i < 20; i++) {
      const e = store.entry(i)!;
      const h = store.headCovering(i)!;
      expect(verifyInclusion(e.leaf, i, h.size, log.inclusion(i, h.size), h.root)).toBe(true);
      expect(verifyInclusion(e.leaf, i, 20, log.inclusion(i, 20), heads[3]!.root)).toBe(true);
    }
    const report = verifyLog(store, signer.publicKey);
    expect(report).toMatchObject({ ok: true, entries: 20, heads: 4, verifiedThrough: 20, problems: [] });
  });

  it('keeps proving the entries of a log written before subtree hashes moved into the entries, and grows it', async () => {
    const first = open();
    await fill(first.log, NODE_SUBJECT, NODE_SUBJECT, 0, 15);
    first.close();
    // The earlier layout: every subtree hash in `nodes`, none in the entries' rows.
    const db = raw();
    const level = (bytes: Uint8Array, l: number) => bytes.subarray(l * 32, (l + 1) * 32);
    for (const r of db.prepare('SELECT idx, hashes FROM entries WHERE hashes IS NOT NULL').all() as Array<{ idx: number; hashes: Uint8Array }>)
      for (let l = 0; l * 32 < r.hashes.length; l++)
        db.prepare('INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)').run(l, (r.idx + 1) / 2 ** l - 1, level(r.hashes, l));
    db.exec('UPDATE entries SET hashes = NULL');
    db.close();
    const { log, store, signer } = open();
    await fill(log, NODE_SUBJECT, NODE_SUBJECT, 15, 10);
    expect(store.size()).toBe(25);
    const head = store.latestHead()!;
    expect(head.size).toBe(25);
    for (let i = 0; i < 25; i++) expect(verifyInclusion(store.entry(i)!.leaf, i, 25, log.inclusion(i, 25), head.root)).toBe(true);
    // Heads signed in the earlier layout extend to the new one.
    for (const old of store.heads().filter((h) => h.size <= 15))
      expect(verifyConsistency(old.size, 25, log.consistency(old.size, 25), old.root, head.root)).toBe(true);
    expect(verifyLog(store, signer.publicKey)).toMatchObject({ ok: true, entries: 25 });
  });

  it("seals each entry under its patient's key: another patient's key does not open it, nor is their proof this entry's", async () => {
    const { log, store, keys } = open();
    const a = keys.subjectFor({ id: 'PAT-A', issuer: null });
    const b = keys.subjectFor({ id: 'PAT-B', issuer: null });
    await fill(log, a, b);
    const ea = store.entry(0)!;
    const eb = store.entry(1)!;
    expect(ea.subject).toBe(a);
    expect(openLeaf(ea.leaf, keys.key(a)!)).toMatchObject({ kind: 'access', what: { study: '1.2.0' } });
    expect(openLeaf(ea.leaf, keys.key(b)!)).toBeUndefined();
    // Nothing of the patient or the study stands in clear in the leaf.
    expect(Buffer.from(ea.leaf).includes('1.2.0')).toBe(false);
    expect(Buffer.from(ea.leaf).includes('PAT-A')).toBe(false);
    // B's proof does not prove A's entry (and the other way round).
    expect(verifyInclusion(ea.leaf, 1, 20, log.inclusion(1, 20), store.latestHead()!.root)).toBe(false);
    expect(verifyInclusion(eb.leaf, 0, 20, log.inclusion(0, 20), store.latestHead()!.root)).toBe(false);
    // A patient with the Patient ID under any issuer finds their subject; another does not.
    expect(keys.subjectsOf([{ id: 'PAT-A', issuer: 'ANY' }])).toEqual([a]);
    expect(keys.subjectsOf([{ id: 'PAT-C', issuer: null }])).toEqual([]);
  });

  it("still verifies once a patient's key is destroyed, though their entries no longer open", async () => {
    const { log, store, keys, signer } = open();
    const a = keys.subjectFor({ id: 'PAT-A', issuer: null });
    await fill(log, a, NODE_SUBJECT);
    expect(keys.destroy(a)).toBe(true);
    expect(keys.key(a)).toBeUndefined();
    expect(verifyLog(store, signer.publicKey).ok).toBe(true);
    await log.append(access('user:dr', '1.2.99'), a); // about an erased patient: the node's key
    expect(store.entry(20)!.subject).toBe(NODE_SUBJECT);
  });

  describe('attacks on the file, each caught and named', () => {
    async function attacked(edit: (db: DatabaseSync) => void) {
      const o = open();
      const a = o.keys.subjectFor({ id: 'PAT-A', issuer: null });
      await fill(o.log, a, NODE_SUBJECT);
      const originalHeads = o.store.heads();
      o.close();
      const db = raw();
      edit(db);
      db.close();
      const again = open();
      return { again, originalHeads };
    }

    it('an entry edited on disk: names it', async () => {
      const { again } = await attacked((db) => {
        const { leaf } = db.prepare('SELECT leaf FROM entries WHERE idx = 7').get() as { leaf: Uint8Array };
        const b = Buffer.from(leaf);
        b[b.length - 20]! ^= 0x01;
        db.prepare('UPDATE entries SET leaf = ? WHERE idx = 7').run(b);
      });
      const r = verifyLog(again.store, again.signer.publicKey);
      expect(r.ok).toBe(false);
      expect(r.first).toMatchObject({ kind: 'changed', index: 7 });
    });

    it('the last entry edited: the head that covers it no longer matches', async () => {
      const { again } = await attacked((db) => {
        const { leaf } = db.prepare('SELECT leaf FROM entries WHERE idx = 19').get() as { leaf: Uint8Array };
        const b = Buffer.from(leaf);
        b[b.length - 1]! ^= 0x80;
        db.prepare('UPDATE entries SET leaf = ? WHERE idx = 19').run(b);
      });
      const r = verifyLog(again.store, again.signer.publicKey);
      expect(r.first).toMatchObject({ kind: 'head-mismatch', index: 15, head: 20 });
      expect(r.first!.message).toContain('entry 19 was changed');
    });

    it('an entry deleted: names it as dropped', async () => {
      const { again } = await attacked((db) => db.prepare('DELETE FROM entries WHERE idx = 11').run());
      const r = verifyLog(again.store, again.signer.publicKey);
      expect(r.first).toMatchObject({ kind: 'dropped', index: 11 });
    });

    it('two entries swapped: names the first as moved', async () => {
      const { again } = await attacked((db) => {
        const x = db.prepare('SELECT leaf FROM entries WHERE idx = 4').get() as { leaf: Uint8Array };
        const y = db.prepare('SELECT leaf FROM entries WHERE idx = 9').get() as { leaf: Uint8Array };
        db.prepare('UPDATE entries SET leaf = ? WHERE idx = 4').run(y.leaf);
        db.prepare('UPDATE entries SET leaf = ? WHERE idx = 9').run(x.leaf);
      });
      const r = verifyLog(again.store, again.signer.publicKey);
      expect(r.first).toMatchObject({ kind: 'reordered', index: 4 });
    });

    it('an entry inserted: names where', async () => {
      const { again } = await attacked((db) => {
        // Every entry from 6 on moves up one; a copy of entry 5 goes in at 6.
        db.exec('UPDATE entries SET idx = -idx - 1 WHERE idx >= 6; UPDATE entries SET idx = -idx WHERE idx < 0');
        const { leaf, subject, time } = db.prepare('SELECT leaf, subject, time FROM entries WHERE idx = 5').get() as {
          leaf: Uint8Array;
          subject: string;
          time: number;
        };
        db.prepare('INSERT INTO entries (idx, subject, time, leaf) VALUES (6, ?, ?, ?)').run(subject, time, leaf);
      });
      const r = verifyLog(again.store, again.signer.publicKey);
      expect(r.first).toMatchObject({ kind: 'inserted', index: 6 });
    });

    it('the log cut back and grown again with other entries (heads kept): names the first replaced entry', async () => {
      const { again } = await attacked((db) => db.prepare('DELETE FROM entries WHERE idx >= 12').run());
      // The node (or an intruder with its key) appends other entries from 12 on.
      await fill(again.log, NODE_SUBJECT, NODE_SUBJECT, 0, 10);
      const r = verifyLog(again.store, again.signer.publicKey);
      expect(r.ok).toBe(false);
      expect(r.first).toMatchObject({ kind: 'changed', index: 12 });
      expect(r.problems.map((p) => p.kind)).toContain('head-mismatch');
    });

    it('the log and its heads cut back and grown again, re-signed with the node key: the anchored heads catch it', async () => {
      const { again, originalHeads } = await attacked((db) => {
        db.prepare('DELETE FROM entries WHERE idx >= 12').run();
        db.prepare('DELETE FROM heads WHERE size > 10').run();
      });
      await fill(again.log, NODE_SUBJECT, NODE_SUBJECT, 0, 10);
      // Without the chain the rewrite is self-consistent but for the entries' dates...
      const anchors = originalHeads.map((h) => ({ cid: h.cid, ok: true, detail: 'receipt verified' }));
      const r = verifyLog(again.store, again.signer.publicKey, anchors);
      expect(r.ok).toBe(false);
      // ...the chain holds heads of 15 and 20 entries that this log no longer has.
      expect(r.problems.filter((p) => p.kind === 'anchor-missing')).toHaveLength(2);
    });

    it('a head signed with another key', async () => {
      const { again } = await attacked((db) => {
        const other = HeadSigner.loadOrCreate(join(dir, 'other.key'));
        const { body } = db.prepare('SELECT body FROM heads WHERE size = 10').get() as { body: string };
        const fields = {
          body,
          signature: other.sign({ origin: 'x', size: 1, root: new Uint8Array(32), time: new Date().toISOString(), prevSize: 0, prevHash: undefined }).signature,
        };
        db.prepare('UPDATE heads SET signature = ? WHERE size = 10').run(fields.signature);
      });
      const r = verifyLog(again.store, again.signer.publicKey);
      expect(r.problems).toEqual([expect.objectContaining({ kind: 'head-signature', head: 10 })]);
    });

    it('an anchored head that does not match the log, or whose receipt fails', async () => {
      const { again } = await attacked(() => undefined);
      const r = verifyLog(again.store, again.signer.publicKey, [
        { cid: 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku', ok: true, detail: 'block 7' },
        { cid: again.store.heads()[0]!.cid, ok: false, detail: 'the transaction is not on chain' },
      ]);
      expect(r.problems.map((p) => p.kind).sort()).toEqual(['anchor-invalid', 'anchor-missing']);
    });
  });

  it.each([false, true])('lets an entry be changed until it is taken to be written, never after (writer thread: %s)', async (thread) => {
    const { log, store, keys, signer } = open({ thread });
    const early = log.appendOpen(access('user:dr', '1.2.early'));
    // Changed in the same turn (as a QIDO's response, folded into its access entry).
    expect(
      early.amend((r) => {
        r.what = { ...r.what, status: 200, bodyBytes: 1234 };
      }),
    ).toBe(true);
    const late = log.appendOpen(access('user:dr', '1.2.late'));
    const [i, j] = await Promise.all([early.written, late.written]);
    // Written: no change reaches the sealed entry any more, and the caller is told.
    expect(
      late.amend((r) => {
        r.what = { ...r.what, status: 500 };
      }),
    ).toBe(false);
    const opened = (k: number) => openLeaf(store.entry(k)!.leaf, keys.key(NODE_SUBJECT)!)!;
    expect(opened(i).what).toMatchObject({ study: '1.2.early', status: 200, bodyBytes: 1234 });
    expect(opened(j).what).toEqual({ action: 'retrieve', study: '1.2.late', dataType: 'frames' });
    log.flush();
    expect(verifyLog(store, signer.publicKey)).toMatchObject({ ok: true, entries: 2 });
  });

  it('keeps up with a flood of refusals, counting what it cannot write one by one in a summary entry', async () => {
    const { log, store, keys } = open({ maxQueued: 1_000 });
    const refused: AuditRecord = { kind: 'refused', who: { id: 'unidentified' }, what: { action: 'retrieve', status: 401 }, why: 'unknown token' };
    for (let i = 0; i < 20_000; i++) log.note(refused);
    log.flush();
    const n = store.size();
    expect(n).toBe(1_001);
    const summary = openLeaf(store.entry(n - 1)!.leaf, keys.key(NODE_SUBJECT)!)!;
    expect(summary).toMatchObject({ kind: 'summary', what: { counts: { 'unknown token': 19_000 } } });
  });

  it('refuses entries when the file cannot grow (a full disk); what was written stays whole', async () => {
    const { log, store } = open({ pragmas: ['max_page_count = 40'] });
    let failure: unknown;
    for (let i = 0; i < 2_000 && failure === undefined; i++) {
      await log.append(access('user:dr', `1.2.${i}`)).catch((err: unknown) => {
        failure = err;
      });
    }
    expect(isVaultError(failure, 'AUDIT_UNAVAILABLE')).toBe(true);
    const before = store.size();
    expect(log.failure?.code).toBe('AUDIT_UNAVAILABLE');
    // What was written is whole: the failed batch left nothing half done.
    expect(parseLeaf(store.entry(before - 1)!.leaf)?.index).toBe(before - 1);
    expect(verifyLog(store, log.publicKey).ok).toBe(true);
  });

  describe('with a writer thread (as the node writes)', () => {
    it('appends from many requests at once in order, each resolved with its own index, and heads and proofs verify', async () => {
      const { log, store, keys, signer } = open({ thread: true });
      const a = keys.subjectFor({ id: 'PAT-A', issuer: null });
      const indexes = await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(access('user:dr', `1.2.${i}`), i % 2 === 0 ? a : NODE_SUBJECT)));
      expect(indexes).toEqual(Array.from({ length: 300 }, (_, i) => i));
      // Each resolved index is that entry: sealed under its subject's key, with its study.
      for (const i of [0, 1, 151, 299]) {
        const e = store.entry(i)!;
        expect(e.subject).toBe(i % 2 === 0 ? a : NODE_SUBJECT);
        expect(openLeaf(e.leaf, keys.key(e.subject)!)?.what.study).toBe(`1.2.${i}`);
      }
      log.note(access('user:dr', '1.2.note'));
      log.flush();
      expect(store.size()).toBe(301);
      expect(store.heads().length).toBeGreaterThan(0);
      expect(verifyLog(store, signer.publicKey)).toMatchObject({ ok: true, entries: 301 });
    });

    it('refuses entries when the file cannot grow (a full disk), and counts a flood of refusals it is behind on', async () => {
      const full = open({ thread: true, pragmas: ['max_page_count = 40'] });
      let failure: unknown;
      for (let i = 0; i < 2_000 && failure === undefined; i++) {
        await full.log.append(access('user:dr', `1.2.${i}`)).catch((err: unknown) => {
          failure = err;
        });
      }
      expect(isVaultError(failure, 'AUDIT_UNAVAILABLE')).toBe(true);
      expect(full.log.failure?.code).toBe('AUDIT_UNAVAILABLE');
      expect(verifyLog(full.store, full.log.publicKey).ok).toBe(true);
      full.close();
      rmSync(dir, { recursive: true, force: true });
      dir = mkdtempSync(join(tmpdir(), 'audit-log-'));

      const { log, store, keys } = open({ thread: true, maxQueued: 1_000 });
      const refused: AuditRecord = { kind: 'refused', who: { id: 'unidentified' }, what: { action: 'retrieve', status: 401 }, why: 'unknown token' };
      for (let i = 0; i < 20_000; i++) log.note(refused);
      log.flush();
      const n = store.size();
      expect(n).toBe(1_001);
      expect(openLeaf(store.entry(n - 1)!.leaf, keys.key(NODE_SUBJECT)!)).toMatchObject({ kind: 'summary', what: { counts: { 'unknown token': 19_000 } } });
    });
  });
});
