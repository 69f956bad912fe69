// Who is calling: every DICOMweb route needs a bearer token (issue 23, part 1). Local accounts from
// `dicom-vault user`, their roles, revocation on the next request, tokens refused over plain HTTP
// from the network, HTTPS, and `--open` for development on loopback only.
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planStudy } from '../../../bench/generate.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';
import { bytesOf } from '../../support/generated.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';
import { killed, run, serve } from '../../support/process.ts';
import { forgetToken } from '../../support/auth.ts';
import { stow } from '../../support/dicomweb.ts';
import { captureLogs } from '../../support/logs.ts';

const study = planStudy({ kind: 'single', instances: 2, rows: 32, columns: 32, seed: 2301 });

/** A GET with exactly these headers (the suite's token injection steps aside when Authorization is set; `none` sends an empty one it ignores). */
async function get(url: string, authorization: string | undefined): Promise<{ status: number; challenge: string | null; body: any }> {
  const headers: Record<string, string> = { accept: 'application/dicom+json' };
  if (authorization !== undefined) headers.authorization = authorization;
  const res = await fetch(url, { headers });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body };
}

/** An address of this machine that is not loopback: requests to it arrive from the network, as a remote client's would. */
function externalAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  throw new Error('this machine has no non-loopback IPv4 address to test remote callers with');
}

describe('identity: every DICOMweb route needs a bearer token', () => {
  let node: TestNode;
  let other: TestNode;
  beforeAll(async () => {
    node = await startTestNode();
    other = await startTestNode();
    const stored = await stow(node.url, await Promise.all(study.instances.map(bytesOf)));
    expect(stored.status).toBe(200);
  });
  afterAll(async () => {
    await Promise.allSettled([node?.stop(), other?.stop()]);
  });

  const routes = (): string[] => {
    const i = study.instances[0]!;
    const s = `${node.url}/studies/${study.studyInstanceUID}`;
    return [
      `${node.url}/studies`,
      `${s}/metadata`,
      `${s}/series/${i.seriesInstanceUID}/instances`,
      `${s}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}/frames/1`,
      `${s}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}/rendered`,
      `${s}/receipt`,
    ];
  };

  it('answers 401 with a Bearer challenge without a token, on every route (search, retrieve, store)', async () => {
    for (const url of routes()) {
      const r = await get(url, '');
      expect(r.status, url).toBe(401);
      expect(r.challenge, url).toMatch(/^Bearer realm="dicom-vault", error="invalid_request"/);
      expect(r.body.code).toBe('UNAUTHORIZED');
    }
    const res = await fetch(`${node.url}/studies`, {
      method: 'POST',
      headers: { authorization: '', 'content-type': 'application/dicom' },
      body: new Uint8Array(10),
    });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
  });

  it('refuses a malformed header, an unknown token, and a token of another node, saying which', async () => {
    const url = `${node.url}/studies`;
    const basic = await get(url, 'Basic dGVzdGVyOnNlY3JldA==');
    expect(basic.status).toBe(401);
    expect(basic.body.message).toMatch(/must be "Bearer <token>"/);
    const unknown = await get(url, 'Bearer dvu_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    expect(unknown.status).toBe(401);
    expect(unknown.challenge).toMatch(/error="invalid_token"/);
    const foreign = await get(url, `Bearer ${other.token}`);
    expect(foreign.status).toBe(401);
    expect(foreign.challenge).toMatch(/error="invalid_token"/);
    // The right token works.
    const ok = await get(url, `Bearer ${node.token}`);
    expect(ok.status).toBe(200);
    expect(ok.body).toHaveLength(1);
  });

  it('gives each role what it may do: ingest stores and reads nothing, admin reads no image data, staff reads all', async () => {
    const ingest = node.vault.identity.addUser('modality-1', ['ingest']).token;
    const admin = node.vault.identity.addUser('operator-1', ['admin']).token;
    const staff = node.vault.identity.addUser('radiologist-1', ['staff']).token;
    const extra = planStudy({ kind: 'single', instances: 1, rows: 32, columns: 32, seed: 2302 });
    const body = await bytesOf(extra.instances[0]!);
    const stored = await fetch(`${node.url}/studies`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ingest}`, 'content-type': 'application/dicom', accept: 'application/dicom+json' },
      body,
    });
    expect(stored.status).toBe(200);
    for (const token of [ingest, admin]) {
      const r = await get(`${node.url}/studies`, `Bearer ${token}`);
      expect(r.status).toBe(403);
      expect(r.body.message).toMatch(/reads no image data/);
    }
    const adminStore = await fetch(`${node.url}/studies`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/dicom' },
      body,
    });
    expect(adminStore.status).toBe(403);
    const all = await get(`${node.url}/studies`, `Bearer ${staff}`);
    expect(all.status).toBe(200);
    expect(all.body).toHaveLength(2);
  });

  it('refuses a bearer token sent over plain HTTP from the network, unless a trusted proxy says the client used HTTPS', async () => {
    const address = externalAddress();
    const plain = await startTestNode({ flags: { host: '0.0.0.0' } });
    const proxied = await startTestNode({ flags: { host: '0.0.0.0', 'trusted-proxies': address } });
    try {
      for (const n of [plain, proxied]) {
        const port = new URL(n.url).port;
        const remote = `http://${address}:${port}${new URL(n.url).pathname}/studies`;
        const r = await get(remote, `Bearer ${n.token}`);
        expect(r.status).toBe(401);
        expect(r.body.message).toMatch(/only over HTTPS, on loopback, or from a trusted proxy/);
        // The same token on loopback is fine.
        expect([200, 204]).toContain((await get(`${n.url}/studies`, `Bearer ${n.token}`)).status);
      }
      const port = new URL(proxied.url).port;
      const viaProxy = await fetch(`http://${address}:${port}${new URL(proxied.url).pathname}/studies`, {
        headers: { authorization: `Bearer ${proxied.token}`, 'x-forwarded-proto': 'https', accept: 'application/dicom+json' },
      });
      expect([200, 204]).toContain(viaProxy.status);
      // An untrusted peer cannot claim HTTPS.
      const port2 = new URL(plain.url).port;
      const forged = await fetch(`http://${address}:${port2}${new URL(plain.url).pathname}/studies`, {
        headers: { authorization: `Bearer ${plain.token}`, 'x-forwarded-proto': 'https', forwarded: 'proto=https', accept: 'application/dicom+json' },
      });
      expect(forged.status).toBe(401);
    } finally {
      await Promise.allSettled([plain.stop(), proxied.stop()]);
    }
  });
});

describe('identity over HTTPS', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'dv-tls-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('serves HTTPS with --tls-cert/--tls-key and takes tokens over it from the network', async () => {
    const address = externalAddress();
    const cert = join(work, 'cert.pem');
    const key = join(work, 'key.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=dicom-vault-test',
        '-addext',
        `subjectAltName=IP:${address}`,
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    const node = await startTestNode({ flags: { host: '0.0.0.0', 'tls-cert': cert, 'tls-key': key } });
    try {
      expect(node.url).toMatch(/^https:/);
      const ca = await readFile(cert);
      const remote = new URL(`https://${address}:${new URL(node.url).port}${new URL(node.url).pathname}/studies`);
      const answer = (authorization?: string) =>
        new Promise<number>((resolve, reject) => {
          const req = https.request(remote, { ca, headers: { accept: 'application/dicom+json', ...(authorization ? { authorization } : {}) } }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          });
          req.on('error', reject);
          req.end();
        });
      expect([200, 204]).toContain(await answer(`Bearer ${node.token}`));
      expect(await answer()).toBe(401);
    } finally {
      forgetToken(node.url);
      await node.stop();
    }
  });

  it('refuses to start with a certificate it cannot read, or with half of the pair', () => {
    expect(() => resolveNodeOptions({ 'tls-cert': '/nonexistent.pem' }, {})).toThrow(/--tls-cert and --tls-key go together/);
  });
});

describe('dicom-vault user (the CLI) and --open', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'dv-users-'));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('prints a token once, lists accounts without tokens, and a revocation takes effect on the next request', async () => {
    const node = await serve(dataDir);
    try {
      const added = await run(['user', 'add', 'dr.house', '--role', 'staff', '--json', '--data-dir', dataDir]);
      expect(added.code, added.stderr).toBe(0);
      const { token, roles } = JSON.parse(added.stdout) as { token: string; roles: string[] };
      expect(roles).toEqual(['staff']);
      expect(token).toMatch(/^dvu_/);
      const plain = await run(['user', 'add', 'pacs', '--role', 'ingest', '--data-dir', dataDir]);
      expect(plain.stdout.trim()).toMatch(/^dvu_\S+$/);
      expect(plain.stderr).toMatch(/shown once/);

      const list = await run(['user', 'list', '--json', '--data-dir', dataDir]);
      expect(list.stdout).not.toContain(token);
      expect(JSON.parse(list.stdout).map((u: { name: string }) => u.name)).toEqual(expect.arrayContaining(['dr.house', 'pacs', 'tester']));
      // The database keeps only the hash.
      expect((await readFile(join(dataDir, 'identity.db'))).includes(Buffer.from(token))).toBe(false);

      expect([200, 204]).toContain((await get(`${node.url}/studies`, `Bearer ${token}`)).status);
      const revoked = await run(['user', 'revoke', 'dr.house', '--data-dir', dataDir]);
      expect(revoked.code, revoked.stderr).toBe(0);
      const after = await get(`${node.url}/studies`, `Bearer ${token}`);
      expect(after.status).toBe(401);
      expect(after.body.message).toMatch(/revoked/);
      expect((await run(['user', 'revoke', 'dr.house', '--data-dir', dataDir])).code).not.toBe(0);
      expect((await run(['user', 'add', 'x', '--role', 'superuser', '--data-dir', dataDir])).stderr).toMatch(/unknown role superuser/);
    } finally {
      node.child.kill('SIGTERM');
      await killed(node.child);
    }
  });

  it('--open serves loopback without identity and warns; on any other address it refuses to start', async () => {
    const refused = await run(['serve', '--open', '--host', '0.0.0.0', '--port', '0', '--data-dir', join(dataDir, 'open')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/--open serves everyone without identity: it is refused on 0\.0\.0\.0/);
    expect(() => resolveNodeOptions({ open: '1', host: '::' }, {})).toThrow(/refused on ::/);
    expect(() => resolveNodeOptions({ host: '0.0.0.0' }, { DICOM_VAULT_OPEN: '1' })).toThrow(/refused/);

    const logs = captureLogs();
    const open = await startTestNode({ flags: { open: '1' }, logger: logs.logger });
    try {
      expect([200, 204]).toContain((await get(`${open.url}/studies`, '')).status);
      expect(logs.find('OPEN MODE', 40)).toHaveLength(1);
    } finally {
      await open.stop();
    }
  });
});
