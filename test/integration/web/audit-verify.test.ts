// The patient page's audit verification (src/web/common/audit-verify.ts) against a real node that
// anchors on the run's anvil: a patient whose study a granted doctor read and another doctor was
// refused; the module, run in Node and then bundled into Debian's chromium, checks every entry's
// proof, the head's signature under the pinned key, and the anchored head on the chain. Entries are
// pending until their head is anchored, verified after; an entry edited on disk, a head re-signed
// with another key and a wrongly pinned key each turn the log's status into a warning that says why.
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { gzipSync } from 'node:zlib';
import { build } from 'rolldown';
import { toEventSelector, toFunctionSelector } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChainClient } from '../../../anchor/chain/client.ts';
import { anchorArtifact } from '../../../anchor/contract/abi.ts';
import { DEV_ACCOUNTS as NODE_DEV_ACCOUNTS, DEV_CHAIN_IDS as NODE_DEV_CHAIN_IDS } from '../../../anchor/dev-chain.ts';
import { MerkleTree, rootFromInclusionPath as nodeRootFromPath, treeHead as nodeTreeHead } from '../../../anchor/merkle.ts';
import { planStudy } from '../../../bench/generate.ts';
import { headCid } from '../../../src/audit/head.ts';
import { AUDIT_DB_FILE } from '../../../src/audit/store.ts';
import { createKeyFile, readKeyFile, signStatement } from '../../../src/grants/signing.ts';
import { draftStatement } from '../../../src/grants/statement.ts';
import { consistencyProof, Frontier, verifyConsistency as nodeVerifyConsistency } from '../../../src/audit/tree.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { createLogger } from '../../../src/shell/log.ts';
import type { RunningNode } from '../../../src/shell/server.ts';
import {
  ANCHOR_CODE_SHA256,
  ANCHORED_AT_SELECTOR,
  ANCHORED_TOPIC,
  type AuditVerification,
  cidText,
  DEV_ACCOUNTS,
  DEV_CHAIN_IDS,
  headCidBytes,
  leafHash,
  rootFromInclusionPath,
  sha256,
  toHex,
  treeHead,
  type VerifyAuditOptions,
  verifyConsistency,
  verifyPatientAudit,
} from '../../../src/web/common/audit-verify.ts';
import { useSharedChain, type TestChain } from '../../support/anvil.ts';
import { launchBrowser } from '../../support/browser.ts';
import { stow } from '../../support/dicomweb.ts';
import { bytesOf } from '../../support/generated.ts';
import { startNodeWithTester } from '../../support/node.ts';

const JSON_TYPE = 'application/dicom+json';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the browser-side checks agree with the node-side modules they mirror', () => {
  it('constants: selector, event topic, contract code, development chains and accounts', async () => {
    expect(ANCHORED_AT_SELECTOR).toBe(toFunctionSelector('anchoredAt(bytes32)'));
    expect(ANCHORED_TOPIC).toBe(toEventSelector('Anchored(bytes32,uint256)'));
    const code = anchorArtifact().deployedBytecode;
    expect(toHex(await sha256(Buffer.from(code.slice(2), 'hex')))).toBe(ANCHOR_CODE_SHA256);
    expect(DEV_CHAIN_IDS).toEqual(NODE_DEV_CHAIN_IDS);
    expect(DEV_ACCOUNTS).toEqual(NODE_DEV_ACCOUNTS.map((a) => a.toLowerCase()));
  });

  it('hashing, inclusion and consistency: the same roots and verdicts as anchor/merkle.ts and src/audit/tree.ts', async () => {
    const body = 'dicom-vault audit log test\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n2026-12-08T00:00:00.000Z\n0 -\n';
    expect(cidText(await headCidBytes(body))).toBe(headCid(body).toString());
    expect(Buffer.from(await headCidBytes(body))).toEqual(Buffer.from(headCid(body).bytes));
    for (const n of [1, 2, 3, 5, 8, 13]) {
      const data = Array.from({ length: n }, (_, i) => Buffer.from(`leaf ${i}`));
      const tree = MerkleTree.fromLeaves(data);
      expect(Buffer.from(await treeHead(n, tree.root))).toEqual(Buffer.from(nodeTreeHead(n, tree.root)));
      for (let i = 0; i < n; i++) {
        const path = tree.inclusionPath(i);
        const mine = await rootFromInclusionPath(await leafHash(data[i]!), i, n, path);
        expect(Buffer.from(mine!)).toEqual(Buffer.from(tree.root));
        expect(Buffer.from(mine!)).toEqual(Buffer.from(nodeRootFromPath(await leafHash(data[i]!), i, n, path)!));
        // A changed leaf or a path for another index leads elsewhere (or nowhere).
        const wrong = await rootFromInclusionPath(await leafHash(Buffer.from('changed')), i, n, path);
        expect(wrong === undefined || !Buffer.from(wrong).equals(tree.root)).toBe(true);
      }
      // Consistency between every pair of sizes of the same growing log.
      const nodes = new Map<string, Uint8Array>();
      const f = Frontier.empty();
      const roots: Uint8Array[] = [];
      for (const d of data) {
        for (const t of f.push(await leafHash(d))) nodes.set(`${t.level}/${t.index}`, t.hash);
        roots.push(f.root());
      }
      const read = (level: number, index: number) => nodes.get(`${level}/${index}`)!;
      for (let m = 1; m <= n; m++) {
        const proof = consistencyProof(read, m, n);
        expect(await verifyConsistency(m, n, proof, roots[m - 1]!, roots[n - 1]!)).toBe(nodeVerifyConsistency(m, n, proof, roots[m - 1]!, roots[n - 1]!));
        expect(await verifyConsistency(m, n, proof, roots[m - 1]!, roots[n - 1]!)).toBe(true);
        if (m < n) expect(await verifyConsistency(m, n, proof, roots[m - 1]!, roots[m - 1]!)).toBe(false);
      }
    }
  });
});

describe("a patient's audit log, verified by the page's module against a real node and chain", () => {
  let chain: TestChain;
  let node: RunningNode;
  let api: string;
  let dataDir: string;
  let session: string;
  let options: VerifyAuditOptions;
  let seed = 2600;

  /** Ingests a study of another patient, so that a batch closes and carries the latest head; waits until a head covering every entry so far is anchored. */
  async function anchorTheLog(): Promise<number> {
    await sleep(300); // a head is signed every 100 ms while entries arrive
    node.vault.audit.log.flush();
    const size = node.vault.audit.store.size();
    const other = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: seed++, patientId: 'AV-OTHER' });
    expect((await stow(node.url, await Promise.all(other.instances.map(bytesOf)))).status).toBe(200);
    for (let i = 0; i < 300; i++) {
      for (const h of node.vault.audit.store.recentHeads(20)) {
        if (h.size < size) break;
        const view = (await (await fetch(`${api}/api/audit/head?size=${h.size}`)).json()) as { receipt: unknown };
        if (view.receipt !== null) return h.size;
      }
      await sleep(100);
    }
    throw new Error(`no head of ${size} entries or more was anchored`);
  }

  beforeAll(async () => {
    chain = await useSharedChain();
    dataDir = await mkdtemp(join(tmpdir(), 'dicom-vault-web-audit-'));
    const nodeOptions = resolveNodeOptions(
      {
        port: '0',
        'data-dir': dataDir,
        'dimse-port': 'off',
        'chain-rpc': chain.rpcUrl,
        'chain-id': String(chain.chainId),
        contract: chain.contract,
        'chain-key-file': await chain.keyFile(3),
        'anchor-batch-size': '1000',
        'anchor-interval': '1',
        confirmations: '1',
        'audit-head-interval': '100',
      },
      {},
    );
    node = await startNodeWithTester(nodeOptions, createLogger('silent'), { anchoring: true, anchorService: { pollIntervalMs: 50 } });
    api = node.url.replace('/dicom-web', '');
    const study = planStudy({ kind: 'single', instances: 2, rows: 16, columns: 16, seed: 2599, patientId: 'AV-1' });
    expect((await stow(node.url, await Promise.all(study.instances.map(bytesOf)))).status).toBe(200);
    // The study's own batch first, so that the accesses below wait for the next one.
    for (let i = 0; i < 300 && (await fetch(`${node.url}/studies/${study.studyInstanceUID}/receipt`)).status !== 200; i++) await sleep(100);
    const identity = node.vault.identity;
    const account = identity.createPatient([{ id: 'AV-1', issuer: null }]);
    session = identity.issueToken('patient', account);
    const drWho = identity.addUser('dr.who', ['grantee']).token;
    const drNo = identity.addUser('dr.no', ['grantee']).token;
    const keyPath = join(dataDir, 'patient.key');
    const made = createKeyFile(keyPath, { account, node: node.vault.grants.nodeId });
    identity.addPatientKey(account, { keyId: made.keyId, kind: 'ed25519', publicKey: made.publicKeyPem });
    const statement = draftStatement(
      { nodeId: node.vault.grants.nodeId, account, patientIds: identity.patientIds(account), now: new Date() },
      { grantee: { kind: 'user', id: 'dr.who' }, studies: [study.studyInstanceUID] },
    );
    await node.vault.grants.add({ statement, proof: signStatement(statement, readKeyFile(keyPath)) }, account);
    // The granted doctor reads the study; a doctor without a grant finds nothing (404: out of scope
    // reads as unknown); a caller with a token the node does not know is refused (401).
    const read = (token: string) =>
      fetch(`${node.url}/studies/${study.studyInstanceUID}/metadata`, { headers: { accept: JSON_TYPE, authorization: `Bearer ${token}` } });
    expect((await read(drWho)).status).toBe(200);
    expect((await read(drNo)).status).toBe(404);
    expect((await read('dvu_not-a-token')).status).toBe(401);
    const genesis = await createChainClient({ rpcUrl: chain.rpcUrl }).public.getBlock({ blockNumber: 0n });
    const nodeKey = ((await (await fetch(`${api}/api/audit/key`)).json()) as { publicKey: string }).publicKey;
    options = {
      baseUrl: api,
      token: session,
      nodeKey,
      chain: { rpcUrl: chain.rpcUrl, pin: { chainId: chain.chainId, contract: chain.contract, genesisHash: genesis.hash } },
    };
  }, 180_000);

  afterAll(async () => {
    try {
      await node?.close();
    } finally {
      await chain?.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  const doctorRows = (v: AuditVerification) => ({
    access: v.entries.find((e) => e.record?.kind === 'access' && (e.record.who as { id: string }).id === 'user:dr.who'),
    ungranted: v.entries.find((e) => e.record?.kind === 'access' && (e.record.who as { id: string }).id === 'user:dr.no'),
    refusal: v.entries.find((e) => e.record?.kind === 'refused' && (e.record.what as { status: number }).status === 401),
  });

  it('before the head is anchored: the new entries proven in a signed head, pending; the older ones in the anchored head', async () => {
    await sleep(300);
    const v = await verifyPatientAudit(options);
    expect(v.problems).toEqual([]);
    expect(v.status).toBe('pending-anchor');
    const { access, ungranted, refusal } = doctorRows(v);
    for (const row of [access, ungranted, refusal]) {
      expect(row?.status).toBe('pending-anchor');
      expect(row?.reason).toMatch(/^in the signed head of \d+ entries; its anchor on the chain is pending$/);
    }
    expect(v.head?.signatureValid).toBe(true);
    // The study's version entry came before the study's own batch, which carried a head covering
    // it: the latest anchored head, tied to the head shown by a consistency proof.
    const version = v.entries.find((e) => e.record?.kind === 'version')!;
    expect(version.status, version.reason).toBe('verified');
    expect(version.reason).toMatch(/^in the head of \d+ entries, which extends the anchored head of \d+, anchored in block \d+/);
    expect(v.anchor?.status).toBe('verified');
    expect(v.anchor!.head).toBeLessThanOrEqual(access!.index);
    expect(v.summary).toMatch(/^\d+ of \d+ entries verified; \d+ wait for their anchor/);
  });

  it('once the head is anchored: every entry verified, the anchor checked on the pinned chain (self-attested: anvil)', async () => {
    const anchoredSize = await anchorTheLog();
    const v = await verifyPatientAudit(options);
    expect(v.problems).toEqual([]);
    expect(v.status).toBe('verified');
    expect(v.entries.length).toBeGreaterThan(4);
    for (const e of v.entries) expect(e.status, `${e.index}: ${e.reason}`).toBe('verified');
    const { access, refusal } = doctorRows(v);
    expect(access?.record?.why).toMatch(/^grant /);
    expect(refusal?.record).toMatchObject({ who: { id: 'unidentified' }, why: 'unknown token' });
    expect(doctorRows(v).ungranted?.record?.why).toBe('no grant in force');
    expect(doctorRows(v).ungranted?.status).toBe('verified');
    expect(v.anchor).toMatchObject({ status: 'verified', chainId: chain.chainId, pinned: true });
    expect(v.anchor!.head).toBeGreaterThanOrEqual(anchoredSize);
    expect(v.anchor!.selfAttested.join(' ')).toMatch(/development chain/);
    expect(v.firstUse).toBe(false);
    expect(v.summary).toMatch(/^All \d+ entries verified/);
  });

  it('an anchor on a chain or contract the patient did not pin does not verify', async () => {
    const pin = options.chain.pin!;
    // The doctor's rows: proven into the anchored head (see the last test).
    const only = { ...options, query: { grantee: 'user:dr.who' } };
    const otherContract = await verifyPatientAudit({ ...only, chain: { ...options.chain, pin: { ...pin, contract: `0x${'12'.repeat(20)}` } } });
    expect(otherContract.status).toBe('warning');
    expect(otherContract.anchor).toMatchObject({
      status: 'failed',
      reason: `the anchor is at contract ${chain.contract}, not at the pinned 0x${'12'.repeat(20)}`,
    });
    for (const e of otherContract.entries.filter((x) => x.head === otherContract.anchor!.head)) expect(e.status).toBe('failed');
    // The same chain id with another first block: a chain started anew (a back-dated genesis, say).
    const otherGenesis = await verifyPatientAudit({ ...only, chain: { ...options.chain, pin: { ...pin, genesisHash: `0x${'ab'.repeat(32)}` } } });
    expect(otherGenesis.anchor?.status).toBe('failed');
    expect(otherGenesis.anchor?.reason).toMatch(/another chain under the same id/);
    // A chain that cannot be reached proves nothing either way: pending, not failed.
    const down = await verifyPatientAudit({ ...only, chain: { ...options.chain, rpcUrl: 'http://127.0.0.1:9/' } });
    expect(down.anchor?.status).toBe('pending');
    expect(down.anchor?.reason).toMatch(/could not be checked: the chain at http:\/\/127\.0\.0\.1:9\/ cannot be reached/);
    expect(down.status).toBe('pending-anchor');
  });

  it("runs in Debian's chromium, bundled, fetching from the node's origin and the chain (CORS), with the same verdicts", async () => {
    // anvil answers cross-origin requests (its --no-cors is not given).
    const preflight = await fetch(chain.rpcUrl, {
      method: 'OPTIONS',
      headers: { origin: api, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toMatch(/^\*|http/);
    await anchorTheLog();
    const out = await mkdtemp(join(tmpdir(), 'dicom-vault-web-bundle-'));
    const browser = await launchBrowser();
    try {
      await build({
        input: join(import.meta.dirname, '../../../src/web/common/audit-verify.ts'),
        output: { dir: out, format: 'iife', name: 'AuditVerify', minify: true, entryFileNames: 'audit-verify.js' },
        logLevel: 'silent',
      });
      const code = await readFile(join(out, 'audit-verify.js'), 'utf8');
      const size = { bytes: Buffer.byteLength(code), gzip: gzipSync(code).length };
      console.log(`audit-verify bundle: ${size.bytes} bytes, ${size.gzip} gzipped`);
      expect(size.gzip).toBeLessThan(8_000);
      expect(code).not.toMatch(/node:|Buffer\./);
      const page = await browser.newPage();
      // A page of the node's origin: the patient API is same-origin, the chain's RPC cross-origin.
      await page.goto(`${api}/healthz`);
      await page.addScriptTag({ content: code });
      const v = (await page.evaluate(
        (o) => (globalThis as unknown as { AuditVerify: { verifyPatientAudit: typeof verifyPatientAudit } }).AuditVerify.verifyPatientAudit(o),
        { baseUrl: api, token: session, nodeKey: options.nodeKey!, chain: options.chain },
      )) as AuditVerification;
      expect(v.problems).toEqual([]);
      expect(v.status).toBe('verified');
      for (const e of v.entries) expect(e.status, `${e.index}: ${e.reason}`).toBe('verified');
      expect(doctorRows(v).access?.status).toBe('verified');
      expect(doctorRows(v).refusal?.status).toBe('verified');
      expect(v.anchor).toMatchObject({ status: 'verified', chainId: chain.chainId });
      // The details opened in the browser too (WebCrypto AES-GCM), when the page holds the keys.
      const subjectKeys = Object.fromEntries([...new Set(v.entries.map((e) => e.subject))].map((s) => [s, node.vault.audit.keys.key(s)!.toString('base64')]));
      const opened = (await page.evaluate(
        (o) => (globalThis as unknown as { AuditVerify: { verifyPatientAudit: typeof verifyPatientAudit } }).AuditVerify.verifyPatientAudit(o),
        { baseUrl: api, token: session, nodeKey: options.nodeKey!, chain: options.chain, subjectKeys, query: { grantee: 'user:dr.who' } },
      )) as AuditVerification;
      expect(opened.status).toBe('verified');
      expect(opened.entries.length).toBeGreaterThan(0);
      for (const e of opened.entries) expect(e.detailsVerified).toBe(true);
    } finally {
      await browser.close();
      await rm(out, { recursive: true, force: true });
    }
  });

  it("with the patient's entry keys the details are opened in the browser; details changed on the way are caught", async () => {
    const subjects = new Set((await verifyPatientAudit(options)).entries.map((e) => e.subject));
    const subjectKeys = Object.fromEntries([...subjects].map((s) => [s, node.vault.audit.keys.key(s)!.toString('base64')]));
    const only = { ...options, subjectKeys, query: { grantee: 'user:dr.who' } };
    const v = await verifyPatientAudit(only);
    expect(v.status).toBe('verified');
    for (const e of v.entries) expect(e.detailsVerified).toBe(true);
    expect(doctorRows(v).access?.record?.why).toMatch(/^grant /);
    // A lying node (or anything between it and the page) names another doctor in one entry: the
    // proofs still hold (they cover the ciphertext), the details opened here do not match.
    const target = doctorRows(v).access!;
    const lying: VerifyAuditOptions['fetch'] = async (input, init) => {
      const res = await fetch(input, init);
      if (!input.includes('/api/patient/audit?')) return res;
      const body = (await res.json()) as { entries: Array<{ index: number; record: { who: { id: string } } }> };
      for (const e of body.entries) if (e.index === target.index) e.record.who.id = 'user:dr.nobody';
      return new Response(JSON.stringify(body), { status: res.status, headers: { 'content-type': 'application/json' } });
    };
    const lied = await verifyPatientAudit({ ...only, fetch: lying });
    expect(lied.status).toBe('warning');
    const row = lied.entries.find((e) => e.index === target.index)!;
    expect(row.status).toBe('failed');
    expect(row.reason).toBe(`the node showed details for entry ${target.index} that are not what the entry holds (shown here: what it holds)`);
    expect((row.record!.who as { id: string }).id).toBe('user:dr.who');
    // Without the keys the same lie goes unseen: the details are the node's word, and say so.
    const unseen = await verifyPatientAudit({ ...options, query: { grantee: 'user:dr.who' }, fetch: lying });
    const shown = unseen.entries.find((e) => e.index === target.index)!;
    expect(shown).toMatchObject({ status: 'verified', detailsVerified: false });
  });

  it('a wrongly pinned key: the mismatch is reported and nothing verifies', async () => {
    const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    const v = await verifyPatientAudit({ ...options, nodeKey: other });
    expect(v.keyMismatch).toEqual({ pinned: other, served: options.nodeKey });
    expect(v.status).toBe('warning');
    expect(v.problems.join('\n')).toMatch(/not the one you pinned/);
    expect(v.entries.length).toBeGreaterThan(0);
    for (const e of v.entries) expect(e.status).toBe('failed');
    expect(v.head?.signatureValid).toBe(false);
    // First use (nothing pinned): the served key is taken and returned for the page to pin.
    const { nodeKey: _pinned, ...unpinned } = options;
    const first = await verifyPatientAudit(unpinned);
    expect(first.firstUse).toBe(true);
    expect(first.nodeKey).toBe(options.nodeKey);
  });

  it('an entry edited on disk: its row fails with the reason, and the log is a warning', async () => {
    const before = await verifyPatientAudit(options);
    const target = doctorRows(before).access!;
    const db = new DatabaseSync(join(dataDir, AUDIT_DB_FILE));
    const { leaf } = db.prepare('SELECT leaf FROM entries WHERE idx = ?').get(target.index) as { leaf: Uint8Array };
    const changed = Buffer.from(leaf);
    changed[changed.length - 5]! ^= 1;
    db.prepare('UPDATE entries SET leaf = ? WHERE idx = ?').run(changed, target.index);
    try {
      const v = await verifyPatientAudit(options);
      expect(v.status).toBe('warning');
      const row = v.entries.find((e) => e.index === target.index)!;
      expect(row.status).toBe('failed');
      expect(row.reason).toBe(`entry ${target.index} was changed: it no longer hashes into the signed head of ${row.head} entries`);
      // Its details no longer open either (the leaf commits to the ciphertext).
      expect(row.record).toBeNull();
      expect(v.summary).toMatch(/^Warning: 1 of \d+ entries failed verification/);
      // The others still verify: the warning points at the one entry.
      expect(v.entries.filter((e) => e.status === 'failed').map((e) => e.index)).toEqual([target.index]);
    } finally {
      db.prepare('UPDATE entries SET leaf = ? WHERE idx = ?').run(leaf, target.index);
      db.close();
    }
  });

  it('a head signed with another key: the head and every entry proven into it fail', async () => {
    // The doctor's rows only: the newest of them is old, so the node proves them into its anchored
    // head (the patient's own reads of the log, newer than that head, would bring a new one).
    const only = { ...options, query: { grantee: 'user:dr.who' } };
    const v0 = await verifyPatientAudit(only);
    expect(v0.anchor?.status).toBe('verified');
    const size = v0.head!.size;
    const db = new DatabaseSync(join(dataDir, AUDIT_DB_FILE));
    const { body, signature } = db.prepare('SELECT body, signature FROM heads WHERE size = ?').get(size) as { body: string; signature: Uint8Array };
    const forged = sign(null, Buffer.from(body, 'utf8'), generateKeyPairSync('ed25519').privateKey);
    db.prepare('UPDATE heads SET signature = ? WHERE size = ?').run(forged, size);
    try {
      const v = await verifyPatientAudit(only);
      expect(v.entries.length).toBeGreaterThan(0);
      expect(v.status).toBe('warning');
      expect(v.problems).toContain(`the head of ${size} entries is not signed by the node's pinned key`);
      expect(v.head).toMatchObject({ size, signatureValid: false });
      for (const e of v.entries.filter((x) => x.head === size)) {
        expect(e.status).toBe('failed');
        expect(e.reason).toMatch(/not signed by the node's pinned key/);
      }
    } finally {
      db.prepare('UPDATE heads SET signature = ? WHERE size = ?').run(signature, size);
      db.close();
    }
  });
});
