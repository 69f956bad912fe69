// A patient's audit entries as a patient archive carries them (src/audit/portable.ts), checked by
// the receiving node offline: on a real audit log (SQLite files), every way the evidence can lie
// is refused with its reason, and the true evidence passes with every proof and record counted.
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openLeaf } from '../../../src/audit/entry.ts';
import { HeadSigner, publicKeyText } from '../../../src/audit/head.ts';
import { AuditLog } from '../../../src/audit/log.ts';
import { checkPortableAudit, withoutSubjectKeys, type PortableAudit } from '../../../src/audit/portable.ts';
import { AUDIT_DB_FILE, SqliteAuditLogStore } from '../../../src/audit/store.ts';
import { AUDIT_KEYS_DB_FILE, SqliteAuditKeyStore } from '../../../src/audit/subject-keys.ts';

let dir: string;
let close: () => void;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'audit-portable-'));
});
afterEach(() => {
  close();
  rmSync(dir, { recursive: true, force: true });
});

/** A log of 12 entries, alternately about PAT-A and PAT-B; PAT-A's exported as the shell does. */
async function exported(): Promise<{ audit: PortableAudit; signer: HeadSigner }> {
  const store = SqliteAuditLogStore.open(join(dir, AUDIT_DB_FILE));
  const keys = SqliteAuditKeyStore.open(join(dir, AUDIT_KEYS_DB_FILE), randomBytes(32));
  const signer = HeadSigner.loadOrCreate(join(dir, 'audit-signing.key'));
  const log = new AuditLog({ store, keys, signer, origin: 'test-node' }, { headIntervalMs: 0 });
  close = () => {
    log.close();
    store.close();
    keys.close();
  };
  const a = keys.subjectFor({ id: 'PAT-A', issuer: null });
  const b = keys.subjectFor({ id: 'PAT-B', issuer: null });
  for (let i = 0; i < 12; i++)
    await log.append({ kind: 'access', who: { id: 'user:dr' }, what: { action: 'retrieve', study: `1.2.${i}` }, why: 'staff policy' }, i % 2 === 0 ? a : b);
  log.flush();
  const head = log.signHead() ?? store.latestHead()!;
  const key = keys.key(a)!;
  const audit: PortableAudit = {
    key: { algorithm: 'Ed25519', publicKey: publicKeyText(signer.publicKey) },
    head: {
      size: head.size,
      root: Buffer.from(head.root).toString('base64'),
      time: head.time,
      cid: head.cid,
      body: head.body,
      signature: Buffer.from(head.signature).toString('base64'),
    },
    keys: { [a]: key.toString('base64') },
    entries: store.query({ subjects: [a], limit: 100 }).map((e) => ({
      index: e.index,
      time: new Date(e.time).toISOString(),
      record: openLeaf(e.leaf, key) ?? null,
      leaf: Buffer.from(e.leaf).toString('base64'),
      head: head.size,
      proof: log.inclusion(e.index, head.size).map((h) => Buffer.from(h).toString('base64')),
    })),
  };
  // As it travels: JSON text in the sealed part.
  return { audit: JSON.parse(JSON.stringify(audit)) as PortableAudit, signer };
}

const flip = (b64: string): string => {
  const b = Buffer.from(b64, 'base64');
  b[b.length - 1]! ^= 0x80;
  return b.toString('base64');
};

describe('a patient archive’s audit entries, checked by the receiving node', () => {
  it('passes the true evidence, every proof and every record checked', async () => {
    const { audit, signer } = await exported();
    const r = checkPortableAudit(audit, signer.publicKey);
    expect(r).toEqual({
      ok: true,
      check: { entries: 6, proofs: 6, records: 6, head: { size: 12, cid: audit.head!.cid, time: audit.head!.time }, key: audit.key.publicKey },
    });
    expect(withoutSubjectKeys(audit)).not.toHaveProperty('keys');
  });

  /** PAT-A's entry `index` (the export lists them newest first). */
  const at = (a: PortableAudit, index: number) => a.entries.find((e) => e.index === index)!;
  const lies: Array<[string, (a: PortableAudit) => void, RegExp]> = [
    [
      'an inclusion proof altered',
      (a) => {
        at(a, 4).proof![0] = flip(at(a, 4).proof![0]!);
      },
      /entry 4: its inclusion proof does not lead/,
    ],
    ['a proof cut short', (a) => void at(a, 0).proof!.pop(), /entry 0: its inclusion proof does not lead/],
    [
      'a leaf altered',
      (a) => {
        at(a, 2).leaf = flip(at(a, 2).leaf);
      },
      /entry 2: its inclusion proof does not lead/,
    ],
    [
      'an entry moved to another index',
      (a) => {
        at(a, 2).index = 3;
      },
      /entry 3: its index or time is not its leaf's/,
    ],
    ['an entry without its proof', (a) => void delete at(a, 10).proof, /entry 10 carries no inclusion proof/],
    [
      'a record rewritten beside its leaf',
      (a) => {
        at(a, 0).record!.why = 'granted';
      },
      /entry 0: the details shown are not those sealed in its leaf/,
    ],
    [
      'the head re-signed by another key',
      (a) => {
        a.head!.signature = sign(null, Buffer.from(a.head!.body), generateKeyPairSync('ed25519').privateKey).toString('base64');
      },
      /the head is not signed by the archive's audit key/,
    ],
    [
      'the head claiming more entries',
      (a) => {
        a.head!.size = 13;
      },
      /the head's fields are not its body's/,
    ],
    [
      'the head dropped',
      (a) => {
        a.head = null;
      },
      /6 entries but no signed head/,
    ],
  ];
  for (const [what, lie, reason] of lies)
    it(`refuses ${what}`, async () => {
      const { audit } = await exported();
      lie(audit);
      const r = checkPortableAudit(audit);
      expect(r.ok).toBe(false);
      expect(r.ok ? '' : r.reason).toMatch(reason);
    });

  it("refuses another node's key where the sender's is pinned", async () => {
    const { audit } = await exported();
    const r = checkPortableAudit(audit, generateKeyPairSync('ed25519').publicKey);
    expect(r).toEqual({ ok: false, reason: "audit: the audit key is not the sending node's pinned key" });
  });
});
