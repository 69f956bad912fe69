// The access seam (src/access/policy.ts): every DICOMweb route passes through one policy and is recorded
// once. A policy that refuses everything must refuse every route, STOW included, with 403 and the
// policy's reason, and store nothing; a policy that allows everything must see the resource each
// URL names, and every access must land in the audit sink exactly once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccessAction, AccessPolicy, AccessResource, AuditEvent } from '../../../src/access/policy.ts';
import { buildApp } from '../../../src/shell/app.ts';
import { planStudy, type GeneratedStudy } from '../../../bench/generate.ts';
import { createLogger } from '../../../src/shell/log.ts';
import { openPolicy } from '../../../src/access/policy.ts';
import { bytesOf } from '../../support/generated.ts';
import { multipartBody } from '../../support/dicomweb.ts';
import { startTestNode, type TestNode } from '../../support/node.ts';

type Mode = 'allow' | 'deny';

interface RouteCase {
  /** Fastify's route, to check the table covers every route the app registers. */
  route: string;
  method: 'GET' | 'POST';
  path: string;
  accept?: string;
  contentType?: string;
  body?: Buffer;
  action: AccessAction;
  dataType?: string;
  study?: string;
  series?: string;
  instance?: string;
}

const DENIED = 'test policy: nobody may do anything';

describe('access seam', () => {
  let node: TestNode;
  let mode: Mode = 'allow';
  const audit: AuditEvent[] = [];
  const asked: AccessResource[] = [];
  const policy: AccessPolicy = {
    identify: async (request) => ({ id: String(request.headers['x-test-user'] ?? 'nobody'), roles: ['staff'], method: 'token' }),
    authorize: async (_principal, resource) => {
      asked.push(resource);
      return mode === 'allow' ? { allowed: true } : { allowed: false, reason: DENIED };
    },
  };
  let study: GeneratedStudy;
  let bytes: Buffer;
  let cases: RouteCase[];

  beforeAll(async () => {
    node = await startTestNode({ access: policy, audit: { record: (e) => void audit.push(e) } });
    study = planStudy({ kind: 'single', instances: 1, rows: 16, columns: 16, seed: 401 });
    bytes = await bytesOf(study.instances[0]!);
    const boundary = 'access-test';
    const stowBody = multipartBody([bytes], boundary);
    const stowType = `multipart/related; type="application/dicom"; boundary=${boundary}`;
    const s = study.studyInstanceUID;
    const se = study.seriesInstanceUID;
    const i = study.instances[0]!.sopInstanceUID;
    const inst = `/studies/${s}/series/${se}/instances/${i}`;
    const dicom = 'multipart/related; type="application/dicom"; transfer-syntax=*';
    const json = 'application/dicom+json';
    const octets = 'multipart/related; type="application/octet-stream"';
    cases = [
      { route: 'POST /studies', method: 'POST', path: '/studies', contentType: stowType, body: stowBody, action: 'store' },
      { route: 'POST /studies/:study', method: 'POST', path: `/studies/${s}`, contentType: 'application/dicom', body: bytes, action: 'store', study: s },
      { route: 'GET /studies', method: 'GET', path: `/studies?StudyInstanceUID=${s}`, accept: json, action: 'search' },
      { route: 'GET /studies/:study/series', method: 'GET', path: `/studies/${s}/series`, accept: json, action: 'search', study: s },
      { route: 'GET /series', method: 'GET', path: `/series?StudyInstanceUID=${s}`, accept: json, action: 'search' },
      {
        route: 'GET /studies/:study/series/:series/instances',
        method: 'GET',
        path: `/studies/${s}/series/${se}/instances`,
        accept: json,
        action: 'search',
        study: s,
        series: se,
      },
      { route: 'GET /studies/:study/instances', method: 'GET', path: `/studies/${s}/instances`, accept: json, action: 'search', study: s },
      { route: 'GET /instances', method: 'GET', path: `/instances?SOPInstanceUID=${i}`, accept: json, action: 'search' },
      { route: 'GET /studies/:study', method: 'GET', path: `/studies/${s}`, accept: dicom, action: 'retrieve', dataType: 'dicom', study: s },
      {
        route: 'GET /studies/:study/series/:series',
        method: 'GET',
        path: `/studies/${s}/series/${se}`,
        accept: dicom,
        action: 'retrieve',
        dataType: 'dicom',
        study: s,
        series: se,
      },
      {
        route: 'GET /studies/:study/series/:series/instances/:instance',
        method: 'GET',
        path: inst,
        accept: dicom,
        action: 'retrieve',
        dataType: 'dicom',
        study: s,
        series: se,
        instance: i,
      },
      {
        route: 'GET /studies/:study/metadata',
        method: 'GET',
        path: `/studies/${s}/metadata`,
        accept: json,
        action: 'retrieve',
        dataType: 'metadata',
        study: s,
      },
      {
        route: 'GET /studies/:study/series/:series/metadata',
        method: 'GET',
        path: `/studies/${s}/series/${se}/metadata`,
        accept: json,
        action: 'retrieve',
        dataType: 'metadata',
        study: s,
        series: se,
      },
      {
        route: 'GET /studies/:study/series/:series/instances/:instance/metadata',
        method: 'GET',
        path: `${inst}/metadata`,
        accept: json,
        action: 'retrieve',
        dataType: 'metadata',
        study: s,
        series: se,
        instance: i,
      },
      {
        route: 'GET /studies/:study/series/:series/instances/:instance/frames/:frames',
        method: 'GET',
        path: `${inst}/frames/1`,
        accept: octets,
        action: 'retrieve',
        dataType: 'frames',
        study: s,
        series: se,
        instance: i,
      },
      {
        route: 'GET /studies/:study/series/:series/instances/:instance/bulk/*',
        method: 'GET',
        path: `${inst}/bulk/7FE00010`,
        accept: octets,
        action: 'retrieve',
        dataType: 'bulkdata',
        study: s,
        series: se,
        instance: i,
      },
      // PNG: the instance is 16 x 16 of noise, whose JPEG would be larger than its pixels, which the
      // JPEG encoder (src/dicom/render/image.ts) cannot yet write.
      ...(['rendered', 'thumbnail'] as const).flatMap((what): RouteCase[] => [
        {
          route: `GET /studies/:study/${what}`,
          method: 'GET',
          path: `/studies/${s}/${what}`,
          accept: 'image/png',
          action: 'retrieve',
          dataType: 'rendered',
          study: s,
        },
        {
          route: `GET /studies/:study/series/:series/${what}`,
          method: 'GET',
          path: `/studies/${s}/series/${se}/${what}`,
          accept: 'image/png',
          action: 'retrieve',
          dataType: 'rendered',
          study: s,
          series: se,
        },
        {
          route: `GET /studies/:study/series/:series/instances/:instance/${what}`,
          method: 'GET',
          path: `${inst}/${what}`,
          accept: 'image/png',
          action: 'retrieve',
          dataType: 'rendered',
          study: s,
          series: se,
          instance: i,
        },
        {
          route: `GET /studies/:study/series/:series/instances/:instance/frames/:frames/${what}`,
          method: 'GET',
          path: `${inst}/frames/1/${what}`,
          accept: 'image/png',
          action: 'retrieve',
          dataType: 'rendered',
          study: s,
          series: se,
          instance: i,
        },
      ]),
      {
        route: 'GET /studies/:study/receipt',
        method: 'GET',
        path: `/studies/${s}/receipt`,
        accept: 'application/json',
        action: 'retrieve',
        dataType: 'receipt',
        study: s,
      },
    ];
  });
  afterAll(async () => node?.stop());

  const call = async (c: RouteCase, user: string): Promise<{ status: number; text: string }> => {
    const headers: Record<string, string> = { 'x-test-user': user };
    if (c.accept) headers.accept = c.accept;
    if (c.contentType) headers['content-type'] = c.contentType;
    const res = await fetch(`${node.url}${c.path}`, { method: c.method, headers, ...(c.body ? { body: c.body } : {}) });
    return { status: res.status, text: await res.text() };
  };

  const expectedResource = (c: RouteCase): Record<string, unknown> => ({
    action: c.action,
    ...(c.dataType ? { dataType: c.dataType } : {}),
    ...(c.study ? { studyInstanceUID: c.study } : {}),
    ...(c.series ? { seriesInstanceUID: c.series } : {}),
    ...(c.instance ? { sopInstanceUID: c.instance } : {}),
  });

  it('lists every DICOMweb route the app registers', async () => {
    // Built (not started) from the same factory and vault, to see its routes as they are declared.
    const app = buildApp({
      logger: createLogger('silent'),
      store: node.vault.store,
      keys: node.vault.keys,
      catalog: node.vault.catalog,
      writer: node.vault.writer,
      chunkSize: 4096,
      access: openPolicy,
      audit: { record: () => undefined },
    });
    const routes: string[] = [];
    app.addHook('onRoute', (r) => {
      const methods = [r.method].flat().filter((m) => m !== 'HEAD');
      if (r.url.startsWith('/dicom-web/')) for (const m of methods) routes.push(`${m} ${r.url.slice('/dicom-web'.length)}`);
    });
    await app.ready();
    await app.close();
    expect([...new Set(routes)].sort()).toEqual(cases.map((c) => c.route).sort());
  });

  it("refuses every route with 403 and the policy's reason when the policy denies, and stores nothing", async () => {
    mode = 'deny';
    audit.length = 0;
    try {
      for (const c of cases) {
        const r = await call(c, 'mallory');
        expect(r.status, c.route).toBe(403);
        expect(JSON.parse(r.text), c.route).toEqual({ code: 'FORBIDDEN', message: DENIED });
      }
    } finally {
      mode = 'allow';
    }
    // Denied accesses are recorded too, with who asked and what was refused.
    expect(audit).toHaveLength(cases.length);
    cases.forEach((c, n) => {
      expect(audit[n]!.principal, c.route).toEqual({ id: 'mallory', roles: ['staff'], method: 'token' });
      expect(audit[n]!.status, c.route).toBe(403);
      expect(audit[n]!.resource, c.route).toEqual(expect.objectContaining(expectedResource(c)));
    });
    // The STOWs were refused before their bodies were read: nothing of the study exists.
    expect(node.vault.catalog.hasStudy(study.studyInstanceUID)).toBe(false);
    const q = await fetch(`${node.url}/studies?StudyInstanceUID=${study.studyInstanceUID}`, { headers: { accept: 'application/dicom+json' } });
    expect(q.status).toBe(204);
  });

  it('asks the policy about, and records once, every access with its action and the study, series and instance it names', async () => {
    mode = 'allow';
    audit.length = 0;
    asked.length = 0;
    for (const c of cases) {
      const r = await call(c, 'alice');
      // The receipt route answers 404 ANCHOR_DISABLED on a node without anchoring; all others succeed.
      if (c.route.endsWith('/receipt')) expect(JSON.parse(r.text).code, c.route).toBe('ANCHOR_DISABLED');
      else expect(r.status, `${c.route}: ${r.text.slice(0, 200)}`).toBe(200);
    }
    expect(asked).toHaveLength(cases.length);
    expect(audit).toHaveLength(cases.length);
    cases.forEach((c, n) => {
      const level = c.instance ? 'instance' : c.series ? 'series' : c.study ? 'study' : 'studies';
      expect(asked[n], c.route).toEqual({ ...expectedResource(c), level });
      const e = audit[n]!;
      expect(e.resource, c.route).toEqual({ ...expectedResource(c), level });
      expect(e.principal, c.route).toEqual({ id: 'alice', roles: ['staff'], method: 'token' });
      expect(e.method, c.route).toBe(c.method);
      expect(e.url, c.route).toBe(`/dicom-web${c.path}`);
      expect(e.status, c.route).toBe(c.route.endsWith('/receipt') ? 404 : 200);
      expect(e.complete, c.route).toBe(true);
      expect(Number.isNaN(Date.parse(e.time)), c.route).toBe(false);
    });
  });

  it('lets a policy decide per study: a grant for one study does not open another', async () => {
    const other = planStudy({ kind: 'single', instances: 1, rows: 8, columns: 8, seed: 402 });
    expect(
      (await fetch(`${node.url}/studies`, { method: 'POST', headers: { 'content-type': 'application/dicom' }, body: await bytesOf(other.instances[0]!) }))
        .status,
    ).toBe(200);
    const granted = study.studyInstanceUID;
    policy.authorize = async (_p, resource) =>
      resource.studyInstanceUID === granted ? { allowed: true } : { allowed: false, reason: 'no grant for this study' };
    try {
      const ok = await fetch(`${node.url}/studies/${granted}/metadata`, { headers: { accept: 'application/dicom+json' } });
      expect(ok.status).toBe(200);
      const refused = await fetch(`${node.url}/studies/${other.studyInstanceUID}/metadata`, { headers: { accept: 'application/dicom+json' } });
      expect(refused.status).toBe(403);
      expect(await refused.json()).toEqual({ code: 'FORBIDDEN', message: 'no grant for this study' });
    } finally {
      policy.authorize = async () => ({ allowed: true });
    }
  });
});
