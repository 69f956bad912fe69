// The catalog under a CatalogScope (src/catalog/scope.ts, scope-sql.ts): what a scope does not
// cover reads exactly as unknown (undefined, [], false) at every read, and counts, modalities and
// SOP Classes of studies and series are those of the visible instances, in results and in matching.
// The seed (test/support/scope-catalog.ts): study A of P1/HOSP_A with CT (3), MR (2), SR, KOS
// (referencing CT 1 and MR 2) and a presentation state; study B of P2 (no issuer), CT (2); study C
// of P1/HOSP_B, MR (1).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { Catalog } from '../../../src/catalog/catalog.ts';
import type { CatalogQuery } from '../../../src/catalog/records.ts';
import { CATALOG_SCHEMA_VERSION } from '../../../src/catalog/schema.ts';
import type { CatalogScope, ScopeClause } from '../../../src/catalog/scope.ts';
import { TAGS } from '../../../src/dicom/attributes.ts';
import type { AttributeFilter } from '../../../src/dicom/matching.ts';
import { evidence, KEY_IMAGES, SERIES, SOP, STUDY, scopeSeed, sopOf } from '../../support/scope-catalog.ts';

const ALL: CatalogQuery = { filters: [], limit: 1000, offset: 0 };
const of = (...clauses: ScopeClause[]): CatalogScope => ({ clauses });

const a = {
  ct: [1, 2, 3].map((n) => sopOf(SERIES.aCt, n)),
  mr: [1, 2].map((n) => sopOf(SERIES.aMr, n)),
  sr: sopOf(SERIES.aSr, 1),
  ko: sopOf(SERIES.aKo, 1),
  pr: sopOf(SERIES.aPr, 1),
};
const bCt = [1, 2].map((n) => sopOf(SERIES.bCt, n));
const cMr = sopOf(SERIES.cMr, 1);
const EVERY = [...a.ct, ...a.mr, a.sr, a.ko, a.pr, ...bCt, cMr].sort();

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function seeded(): Catalog {
  const catalog = Catalog.open({ path: ':memory:' });
  for (const c of scopeSeed()) catalog.commitStudyVersion(c);
  return catalog;
}

/** The SOP Instance UIDs the scope shows, read three ways that must agree: QIDO, WADO's list, one by one. */
function visible(catalog: Catalog, scope: CatalogScope | undefined): string[] {
  const byQuery = catalog
    .queryInstances(ALL, scope)
    .map((r) => r.sopInstanceUID)
    .sort();
  const byList = Object.values(STUDY)
    .flatMap((study) => catalog.listInstances({ study }, { metadata: false }, scope).map((i) => i.sopInstanceUID))
    .sort();
  const byOne = EVERY.filter((sop) => catalog.getInstance(sop, {}, scope) !== undefined);
  expect(byList).toEqual(byQuery);
  expect(byOne).toEqual(byQuery);
  return byQuery;
}

function studies(catalog: Catalog, scope: CatalogScope | undefined): string[] {
  const found = catalog
    .queryStudies(ALL, scope)
    .map((r) => r.studyInstanceUID)
    .sort();
  // hasStudy and versions agree with the search.
  expect(
    Object.values(STUDY)
      .filter((s) => catalog.hasStudy(s, scope))
      .sort(),
  ).toEqual(found);
  expect(
    Object.values(STUDY)
      .filter((s) => catalog.versions(s, scope).length > 0 && catalog.latestVersion(s, scope) !== undefined)
      .sort(),
  ).toEqual(found);
  return found;
}

function series(catalog: Catalog, scope: CatalogScope | undefined): string[] {
  const found = catalog
    .querySeries(ALL, scope)
    .map((r) => r.seriesInstanceUID)
    .sort();
  const has = Object.entries(SERIES)
    .filter(([key, se]) => catalog.hasSeries(STUDY[key[0] as 'a' | 'b' | 'c'], se, scope))
    .map(([, se]) => se)
    .sort();
  expect(has).toEqual(found);
  return found;
}

/** The computed attributes of study `study` as a scoped QIDO study search answers them. */
function studyCounts(catalog: Catalog, study: string, scope: CatalogScope) {
  const record = catalog.queryStudies({ ...ALL, study }, scope)[0];
  expect(record).toBeDefined();
  const attrs = record!.attributes;
  return {
    modalities: attrs[TAGS.ModalitiesInStudy]?.Value ?? [],
    sopClasses: attrs[TAGS.SOPClassesInStudy]?.Value ?? [],
    series: attrs[TAGS.NumberOfStudyRelatedSeries]?.Value?.[0],
    instances: attrs[TAGS.NumberOfStudyRelatedInstances]?.Value?.[0],
  };
}

const filter = (key: string, tag: string, vr: string, value: string): AttributeFilter => ({ key, tag, vr, value });

describe('CatalogScope: no scope and the empty scope', () => {
  it('no scope shows everything with the stored counts; an empty scope shows nothing at any read', () => {
    const catalog = seeded();
    expect(visible(catalog, undefined)).toEqual(EVERY);
    expect(studies(catalog, undefined)).toEqual(Object.values(STUDY).sort());
    const stored = catalog.queryStudies({ ...ALL, study: STUDY.a })[0]!.attributes;
    expect(stored[TAGS.NumberOfStudyRelatedInstances]?.Value).toEqual([8]);
    expect(stored[TAGS.ModalitiesInStudy]?.Value).toEqual(['CT', 'KO', 'MR', 'PR', 'SR']);

    const none = of();
    expect(visible(catalog, none)).toEqual([]);
    expect(studies(catalog, none)).toEqual([]);
    expect(series(catalog, none)).toEqual([]);
    expect(catalog.getInstance(a.ct[0]!, { study: STUDY.a, series: SERIES.aCt }, none)).toBeUndefined();
    expect(catalog.visibleInstances({ study: STUDY.a }, none).size).toBe(0);
    catalog.close();
  });
});

describe('CatalogScope: each field alone', () => {
  it('patients: the Patient ID, with issuers agreeing (an issuer-less ref or study matches any)', () => {
    const catalog = seeded();
    expect(studies(catalog, of({ patients: [{ id: 'P1', issuer: 'HOSP_A' }] }))).toEqual([STUDY.a]);
    expect(studies(catalog, of({ patients: [{ id: 'P1', issuer: 'HOSP_B' }] }))).toEqual([STUDY.c]);
    // A ref without an issuer: every study of the Patient ID, whatever its issuer.
    expect(studies(catalog, of({ patients: [{ id: 'P1', issuer: null }] }))).toEqual([STUDY.a, STUDY.c].sort());
    // Study B recorded no issuer: a ref with one matches it.
    expect(studies(catalog, of({ patients: [{ id: 'P2', issuer: 'HOSP_A' }] }))).toEqual([STUDY.b]);
    expect(studies(catalog, of({ patients: [{ id: 'P1', issuer: 'HOSP_C' }] }))).toEqual([]);
    expect(studies(catalog, of({ patients: [{ id: 'P3', issuer: null }] }))).toEqual([]);
    expect(studies(catalog, of({ patients: [] }))).toEqual([]);
    // Patient IDs match exactly, not as a pattern or a prefix.
    expect(studies(catalog, of({ patients: [{ id: 'P*', issuer: null }] }))).toEqual([]);
    expect(visible(catalog, of({ patients: [{ id: 'P2', issuer: null }] }))).toEqual(bCt);
    catalog.close();
  });

  it('studies and series', () => {
    const catalog = seeded();
    expect(visible(catalog, of({ studies: [STUDY.c] }))).toEqual([cMr]);
    expect(visible(catalog, of({ series: [SERIES.aMr] }))).toEqual(a.mr);
    expect(series(catalog, of({ series: [SERIES.aMr] }))).toEqual([SERIES.aMr]);
    expect(studies(catalog, of({ series: [SERIES.aMr, SERIES.cMr] }))).toEqual([STUDY.a, STUDY.c].sort());
    expect(visible(catalog, of({ studies: [] }))).toEqual([]);
    expect(visible(catalog, of({ series: [] }))).toEqual([]);
    catalog.close();
  });

  it('modalities: the series Modality', () => {
    const catalog = seeded();
    expect(visible(catalog, of({ modalities: ['CT'] }))).toEqual([...a.ct, ...bCt].sort());
    expect(visible(catalog, of({ modalities: ['SR', 'PR'] }))).toEqual([a.sr, a.pr].sort());
    expect(visible(catalog, of({ modalities: ['ct'] }))).toEqual([]);
    catalog.close();
  });

  it('kinds: by SOP Class', () => {
    const catalog = seeded();
    expect(visible(catalog, of({ kinds: ['image'] }))).toEqual([...a.ct, ...a.mr, ...bCt, cMr].sort());
    expect(visible(catalog, of({ kinds: ['report'] }))).toEqual([a.sr]);
    expect(visible(catalog, of({ kinds: ['key-object'] }))).toEqual([a.ko]);
    expect(visible(catalog, of({ kinds: ['other'] }))).toEqual([a.pr]);
    expect(visible(catalog, of({ kinds: [] }))).toEqual([]);
    // At the study and series levels too (it once left SQLite no plan: "no query solution").
    expect(studies(catalog, of({ kinds: [] }))).toEqual([]);
    expect(series(catalog, of({ kinds: [] }))).toEqual([]);
    expect(studies(catalog, of({ kinds: [] }, { studies: [STUDY.c] }))).toEqual([STUDY.c]);
    catalog.close();
  });

  it('referencedByKeyObjects: the images a KOS of their study names, not the KOS itself nor evidence of another study', () => {
    const catalog = seeded();
    expect(visible(catalog, of({ referencedByKeyObjects: true }))).toEqual([...KEY_IMAGES].sort());
    // The KOS is shown when its kind is.
    expect(visible(catalog, of({ kinds: ['key-object'], referencedByKeyObjects: true }))).toEqual([a.ko, ...KEY_IMAGES].sort());
    expect(visible(catalog, of({ kinds: [], referencedByKeyObjects: true }))).toEqual([...KEY_IMAGES].sort());
    expect(visible(catalog, of({ kinds: ['report'], referencedByKeyObjects: true }))).toEqual([a.sr, ...KEY_IMAGES].sort());
    catalog.close();
  });
});

describe('CatalogScope: fields combined and clauses ORed', () => {
  it('within a clause every field must match', () => {
    const catalog = seeded();
    expect(visible(catalog, of({ patients: [{ id: 'P1', issuer: 'HOSP_A' }], modalities: ['CT'] }))).toEqual(a.ct);
    expect(visible(catalog, of({ patients: [{ id: 'P1', issuer: null }], modalities: ['MR'], kinds: ['image'] }))).toEqual([...a.mr, cMr].sort());
    expect(visible(catalog, of({ studies: [STUDY.a], series: [SERIES.bCt] }))).toEqual([]);
    expect(visible(catalog, of({ patients: [{ id: 'P2', issuer: null }], studies: [STUDY.a] }))).toEqual([]);
    expect(visible(catalog, of({ studies: [STUDY.a], series: [SERIES.aCt], referencedByKeyObjects: true }))).toEqual([KEY_IMAGES[0]]);
    // A grant of images, reports and key images of one patient: everything of A but the PR... and the PR
    // travels with images (kind 'other').
    const grant: ScopeClause = { patients: [{ id: 'P1', issuer: 'HOSP_A' }], kinds: ['image', 'other', 'report', 'key-object'], referencedByKeyObjects: true };
    expect(visible(catalog, of(grant))).toEqual([...a.ct, ...a.mr, a.sr, a.ko, a.pr].sort());
    catalog.close();
  });

  it('any clause makes an instance visible', () => {
    const catalog = seeded();
    expect(visible(catalog, of({ studies: [STUDY.b] }, { series: [SERIES.aSr] }))).toEqual([...bCt, a.sr].sort());
    expect(visible(catalog, of({ patients: [] }, { kinds: ['key-object'] }))).toEqual([a.ko]);
    expect(visible(catalog, of({ modalities: ['MR'], patients: [{ id: 'P1', issuer: 'HOSP_B' }] }, { referencedByKeyObjects: true }))).toEqual(
      [cMr, ...KEY_IMAGES].sort(),
    );
    expect(studies(catalog, of({ studies: [STUDY.b] }, { series: [SERIES.aSr] }))).toEqual([STUDY.a, STUDY.b].sort());
    catalog.close();
  });
});

describe('CatalogScope: counts and derived attributes over the visible instances', () => {
  it('a series-scoped clause: the study counts one series, its modality and SOP Class', () => {
    const catalog = seeded();
    const scope = of({ series: [SERIES.aMr] });
    expect(studyCounts(catalog, STUDY.a, scope)).toEqual({ modalities: ['MR'], sopClasses: [SOP.mr], series: 1, instances: 2 });
    const [se] = catalog.querySeries({ ...ALL, study: STUDY.a }, scope);
    expect(se?.seriesInstanceUID).toBe(SERIES.aMr);
    expect(se?.attributes[TAGS.NumberOfSeriesRelatedInstances]?.Value).toEqual([2]);
    expect(se?.studyAttributes[TAGS.NumberOfStudyRelatedInstances]?.Value).toEqual([2]);
    const instances = catalog.queryInstances({ ...ALL, study: STUDY.a }, scope);
    expect(instances.map((r) => r.sopInstanceUID)).toEqual(a.mr);
    expect(instances[0]?.studyAttributes[TAGS.ModalitiesInStudy]?.Value).toEqual(['MR']);
    expect(instances[0]?.seriesAttributes[TAGS.NumberOfSeriesRelatedInstances]?.Value).toEqual([2]);
    catalog.close();
  });

  it('a modality-scoped clause: CT only, in study A and in study B', () => {
    const catalog = seeded();
    const scope = of({ modalities: ['CT'] });
    expect(studyCounts(catalog, STUDY.a, scope)).toEqual({ modalities: ['CT'], sopClasses: [SOP.ct], series: 1, instances: 3 });
    expect(studyCounts(catalog, STUDY.b, scope)).toEqual({ modalities: ['CT'], sopClasses: [SOP.ct], series: 1, instances: 2 });
    catalog.close();
  });

  it('a kind-scoped clause counts instances within a series', () => {
    const catalog = seeded();
    const scope = of({ studies: [STUDY.a], referencedByKeyObjects: true });
    expect(studyCounts(catalog, STUDY.a, scope)).toEqual({ modalities: ['CT', 'MR'], sopClasses: [SOP.ct, SOP.mr], series: 2, instances: 2 });
    const counts = catalog
      .querySeries({ ...ALL, study: STUDY.a }, scope)
      .map((r) => [r.seriesInstanceUID, r.attributes[TAGS.NumberOfSeriesRelatedInstances]?.Value?.[0]]);
    expect(counts).toEqual([
      [SERIES.aCt, 1],
      [SERIES.aMr, 1],
    ]);
    catalog.close();
  });

  it('whole studies keep their stored counts; beside a narrower clause, counts are what any clause shows', () => {
    const catalog = seeded();
    const whole = { modalities: ['CT', 'KO', 'MR', 'PR', 'SR'], sopClasses: [SOP.ct, SOP.mr, SOP.pr, SOP.sr, SOP.kos].sort(), series: 5, instances: 8 };
    expect(studyCounts(catalog, STUDY.a, of({ patients: [{ id: 'P1', issuer: 'HOSP_A' }] }))).toEqual(whole);
    expect(studyCounts(catalog, STUDY.a, of({ studies: [STUDY.a] }, { series: [SERIES.aMr] }))).toEqual(whole);
    expect(studyCounts(catalog, STUDY.a, of({ studies: [STUDY.b] }, { series: [SERIES.aMr] }))).toEqual({
      modalities: ['MR'],
      sopClasses: [SOP.mr],
      series: 1,
      instances: 2,
    });
    expect(studyCounts(catalog, STUDY.b, of({ studies: [STUDY.b] }, { series: [SERIES.aMr] }))).toEqual({
      modalities: ['CT'],
      sopClasses: [SOP.ct],
      series: 1,
      instances: 2,
    });
    // Series shown whole (no kinds): their stored counts, also when matched.
    const scope = of({ studies: [STUDY.a], modalities: ['CT', 'MR'] });
    const counts = catalog.querySeries({ ...ALL, study: STUDY.a }, scope).map((r) => r.attributes[TAGS.NumberOfSeriesRelatedInstances]?.Value?.[0]);
    expect(counts).toEqual([3, 2]);
    const matching = catalog.querySeries(
      { ...ALL, filters: [filter('NumberOfSeriesRelatedInstances', TAGS.NumberOfSeriesRelatedInstances, 'IS', '2')] },
      scope,
    );
    expect(matching.map((r) => r.seriesInstanceUID)).toEqual([SERIES.aMr]);
    expect(
      catalog.queryStudies(
        { ...ALL, filters: [filter('ModalitiesInStudy', TAGS.ModalitiesInStudy, 'CS', 'SR')] },
        of({ patients: [{ id: 'P1', issuer: null }] }),
      ).length,
    ).toBe(1);
    catalog.close();
  });

  it('QIDO matches the visible modalities and counts, never the hidden ones', () => {
    const catalog = seeded();
    const scope = of({ series: [SERIES.aMr] });
    const modalities = (value: string) => catalog.queryStudies({ ...ALL, filters: [filter('ModalitiesInStudy', TAGS.ModalitiesInStudy, 'CS', value)] }, scope);
    expect(modalities('MR').map((r) => r.studyInstanceUID)).toEqual([STUDY.a]);
    // Study A has a CT series, which this caller may not know of.
    expect(modalities('CT')).toEqual([]);
    const unscoped = catalog.queryStudies({ ...ALL, filters: [filter('ModalitiesInStudy', TAGS.ModalitiesInStudy, 'CS', 'CT')] });
    expect(unscoped.map((r) => r.studyInstanceUID).sort()).toEqual([STUDY.a, STUDY.b]);
    const count = (key: string, tag: string, value: string) => catalog.queryStudies({ ...ALL, filters: [filter(key, tag, 'IS', value)] }, scope).length;
    expect(count('NumberOfStudyRelatedInstances', TAGS.NumberOfStudyRelatedInstances, '2')).toBe(1);
    expect(count('NumberOfStudyRelatedInstances', TAGS.NumberOfStudyRelatedInstances, '8')).toBe(0);
    expect(count('NumberOfStudyRelatedSeries', TAGS.NumberOfStudyRelatedSeries, '1')).toBe(1);
    expect(count('NumberOfStudyRelatedSeries', TAGS.NumberOfStudyRelatedSeries, '5')).toBe(0);
    const sopClasses = (value: string) =>
      catalog.queryStudies({ ...ALL, filters: [filter('SOPClassesInStudy', TAGS.SOPClassesInStudy, 'UI', value)] }, scope).length;
    expect(sopClasses(SOP.mr)).toBe(1);
    expect(sopClasses(SOP.sr)).toBe(0);
    const seriesCount = (value: string) =>
      catalog.querySeries(
        { ...ALL, filters: [filter('NumberOfSeriesRelatedInstances', TAGS.NumberOfSeriesRelatedInstances, 'IS', value)] },
        of({ studies: [STUDY.a], kinds: ['image'], series: [SERIES.aCt] }),
      ).length;
    expect(seriesCount('3')).toBe(1);
    expect(seriesCount('1')).toBe(0);
    catalog.close();
  });
});

describe('CatalogScope: key object references follow the KOS', () => {
  it('a KOS stored again with other references replaces its references', () => {
    const catalog = seeded();
    const kos = catalog.getInstance(a.ko)!;
    const latest = catalog.latestVersion(STUDY.a)!;
    const metadata = { ...kos.metadata, ...evidence(STUDY.a, [{ series: SERIES.aCt, sops: [a.ct[2]!], sopClass: SOP.ct }]) };
    catalog.commitStudyVersion({
      studyInstanceUID: STUDY.a,
      version: latest.version + 1,
      root: 'bafyroot-a-2',
      prev: latest.root,
      createdAt: latest.createdAt,
      instances: [{ ...kos, metadata, layout: kos.layout, sha256: 'f'.repeat(64), nodeCid: 'bafy-kos-2' }],
    });
    expect(visible(catalog, of({ referencedByKeyObjects: true }))).toEqual([a.ct[2]!]);
    catalog.close();
  });
});

describe('CatalogScope: a malformed key object selection', () => {
  it('is stored, and only its well-formed references open anything', () => {
    const catalog = seeded();
    const kos = catalog.getInstance(a.ko)!;
    const latest = catalog.latestVersion(STUDY.a)!;
    const ref = (sop: unknown) => ({ '00081155': { vr: 'UI', Value: [sop] } });
    const metadata = {
      ...kos.metadata,
      '0040A375': {
        vr: 'SQ',
        Value: [
          'not an item',
          7,
          null,
          { '00081115': { vr: 'SQ', Value: 'not a list' } },
          {
            '00081115': { vr: 'SQ', Value: [42, { '00081199': { vr: 'SQ', Value: [null, 'x', {}, ref(null), { '00081155': { vr: 'UI' } }, ref(a.mr[0])] } }] },
          },
          { '00081115': { vr: 'SQ' } },
        ],
      },
    };
    catalog.commitStudyVersion({
      studyInstanceUID: STUDY.a,
      version: latest.version + 1,
      root: 'bafyroot-a-2',
      prev: latest.root,
      createdAt: latest.createdAt,
      instances: [{ ...kos, metadata: metadata as typeof kos.metadata, layout: kos.layout, sha256: 'd'.repeat(64) }],
    });
    expect(visible(catalog, of({ referencedByKeyObjects: true }))).toEqual([a.mr[0]!]);
    expect(visible(catalog, of({ kinds: ['key-object'] }))).toEqual([a.ko]);
    catalog.close();
  });
});

describe('CatalogScope: the migration from schema 1', () => {
  it('a catalog written before the scope columns is migrated on open and answers every scope as a new one does', () => {
    const dir = mkdtempSync(join(tmpdir(), 'scope-migration-'));
    dirs.push(dir);
    const path = join(dir, 'catalog.db');
    const old = new DatabaseSync(path);
    old.exec(readFileSync(join(import.meta.dirname, 'fixtures', 'catalog-schema-1.sql'), 'utf8'));
    expect((old.prepare('PRAGMA user_version').get() as { user_version: number }).user_version).toBe(1);
    old.close();

    const migrated = Catalog.open({ path });
    const fresh = seeded();
    const db = new DatabaseSync(path);
    expect((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version).toBe(CATALOG_SCHEMA_VERSION);
    // The new columns and table hold what a commit of today writes.
    const snapshot = (q: string) => db.prepare(q).all();
    expect(snapshot('SELECT sop_uid, kind FROM instances ORDER BY sop_uid')).toEqual(
      EVERY.map((sop) => ({ sop_uid: sop, kind: sop === a.sr ? 'report' : sop === a.ko ? 'key-object' : sop === a.pr ? 'other' : 'image' })),
    );
    expect(snapshot('SELECT study_uid, patient_id, issuer FROM studies ORDER BY study_uid')).toEqual([
      { study_uid: STUDY.a, patient_id: 'P1', issuer: 'HOSP_A' },
      { study_uid: STUDY.b, patient_id: 'P2', issuer: null },
      { study_uid: STUDY.c, patient_id: 'P1', issuer: 'HOSP_B' },
    ]);
    expect(snapshot('SELECT * FROM key_object_references ORDER BY referenced_sop_uid')).toEqual(
      [...KEY_IMAGES].sort().map((ref) => ({ study_uid: STUDY.a, kos_sop_uid: a.ko, referenced_sop_uid: ref })),
    );
    db.close();

    const scopes: CatalogScope[] = [
      of({ patients: [{ id: 'P1', issuer: 'HOSP_A' }] }),
      of({ patients: [{ id: 'P2', issuer: 'HOSP_A' }] }),
      of({ series: [SERIES.aMr] }, { modalities: ['CT'] }),
      of({ kinds: ['report', 'other'] }),
      of({ patients: [{ id: 'P1', issuer: null }], kinds: ['key-object'], referencedByKeyObjects: true }),
    ];
    for (const scope of scopes) {
      expect(visible(migrated, scope)).toEqual(visible(fresh, scope));
      expect(migrated.queryStudies(ALL, scope)).toEqual(fresh.queryStudies(ALL, scope));
      expect(migrated.querySeries(ALL, scope)).toEqual(fresh.querySeries(ALL, scope));
    }
    // And a commit after the migration keeps them up to date.
    const kos = migrated.getInstance(a.ko)!;
    const latest = migrated.latestVersion(STUDY.a)!;
    migrated.commitStudyVersion({
      studyInstanceUID: STUDY.a,
      version: latest.version + 1,
      root: 'bafyroot-a-2',
      prev: latest.root,
      createdAt: latest.createdAt,
      instances: [
        {
          ...kos,
          metadata: { ...kos.metadata, ...evidence(STUDY.a, [{ series: SERIES.aMr, sops: [a.mr[0]!], sopClass: SOP.mr }]) },
          layout: kos.layout,
          sha256: 'e'.repeat(64),
        },
      ],
    });
    expect(visible(migrated, of({ referencedByKeyObjects: true }))).toEqual([a.mr[0]!]);
    migrated.close();
    fresh.close();
  });
});
