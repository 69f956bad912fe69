// The catalog's instance_counts (src/catalog/schema.ts, migration 3): the current instances per
// study, series, kind and SOP Class, from which a scope without key object references counts
// what its caller sees (src/catalog/scope-sql.ts, "Counting"). The counts must stay those of the
// current instances across every write: re-sent instances (a retired version, the same bytes
// again), an SOP instance whose kind changes, instances moved to another series; and a catalog
// written before the table existed gets it filled when it is opened.
//
// Oracle: the same scope with one more clause that asks for key object references and matches
// nothing shows the same instances but is not countable, so the catalog reads the instances
// themselves; every answer must be the same both ways, and the numbers those a user expects.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { Catalog } from '../../../src/catalog/catalog.ts';
import type { CatalogInstance, CatalogQuery } from '../../../src/catalog/records.ts';
import { CATALOG_SCHEMA_VERSION } from '../../../src/catalog/schema.ts';
import type { CatalogScope, ScopeClause } from '../../../src/catalog/scope.ts';
import { TAGS } from '../../../src/dicom/attributes.ts';
import type { AttributeFilter } from '../../../src/dicom/matching.ts';
import type { DicomJsonDataset } from '../../../src/dicom/model.ts';
import { SERIES, SOP, STUDY, scopeSeed, sopOf } from '../../support/scope-catalog.ts';

const ALL: CatalogQuery = { filters: [], limit: 1000, offset: 0 };
const of = (...clauses: ScopeClause[]): CatalogScope => ({ clauses });
/** Matches nothing, and makes the scope it joins read the instances rather than the counts. */
const UNCOUNTABLE: ScopeClause = { studies: ['2.25.1'], referencedByKeyObjects: true };
const uncounted = (scope: CatalogScope): CatalogScope => ({ clauses: [...scope.clauses, UNCOUNTABLE] });

const P1A = { id: 'P1', issuer: 'HOSP_A' };
const SCOPES: CatalogScope[] = [
  of({ kinds: ['image'] }),
  of({ kinds: ['report'] }),
  // A grantee's series grant: images (and what travels with them) of one series.
  of({ patients: [P1A], studies: [STUDY.a], series: [SERIES.aCt], kinds: ['image', 'other'] }),
  of({ modalities: ['CT', 'SR'], kinds: ['image', 'report'] }, { studies: [STUDY.b] }),
  of({ kinds: [] }, { series: [SERIES.aMr], kinds: ['image'] }),
  of({ patients: [{ id: 'P1', issuer: null }], kinds: ['other', 'key-object'] }),
];

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function fileCatalog(): { catalog: Catalog; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'instance-counts-'));
  dirs.push(dir);
  const path = join(dir, 'catalog.db');
  const catalog = Catalog.open({ path });
  for (const c of scopeSeed()) catalog.commitStudyVersion(c);
  return { catalog, path };
}

/** Stores `instances` as the study's next version. */
function store(catalog: Catalog, study: string, instances: CatalogInstance[]): void {
  const latest = catalog.latestVersion(study)!;
  catalog.commitStudyVersion({
    studyInstanceUID: study,
    version: latest.version + 1,
    root: `bafyroot-${study}-${latest.version + 1}`,
    prev: latest.root,
    createdAt: latest.createdAt,
    instances,
  });
}

let resent = 0;
/** The current instance `sop`, changed: new bytes unless `sha256` says otherwise. */
function changed(catalog: Catalog, sop: string, change: { sopClassUID?: string; series?: string; sha256?: string }): CatalogInstance {
  const inst = catalog.getInstance(sop)!;
  const metadata: DicomJsonDataset = { ...inst.metadata };
  if (change.sopClassUID !== undefined) metadata[TAGS.SOPClassUID] = { vr: 'UI', Value: [change.sopClassUID] };
  if (change.series !== undefined) metadata[TAGS.SeriesInstanceUID] = { vr: 'UI', Value: [change.series] };
  return {
    ...inst,
    metadata,
    layout: inst.layout,
    sopClassUID: change.sopClassUID ?? inst.sopClassUID,
    seriesInstanceUID: change.series ?? inst.seriesInstanceUID,
    sha256: change.sha256 ?? (++resent).toString(16).padStart(64, '0'),
  };
}

/** instance_counts as stored, and as a count of the current instances gives it. */
function countsOf(path: string): { stored: unknown[]; recounted: unknown[] } {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return {
      stored: db.prepare('SELECT study_uid, series_uid, kind, sop_class_uid, n FROM instance_counts ORDER BY 1, 2, 3, 4').all(),
      recounted: db
        .prepare('SELECT study_uid, series_uid, kind, sop_class_uid, count(*) AS n FROM instances WHERE current = 1 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4')
        .all(),
    };
  } finally {
    db.close();
  }
}

/** The unscoped counts and SOP Classes the study and series rows store (commits read them from instance_counts). */
function storedOf(path: string): { stored: unknown[]; recounted: unknown[] } {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return {
      stored: db
        .prepare(
          `SELECT se.study_uid, se.series_uid, se.instance_count AS n, s.instance_count AS study_n, s.attributes -> '$."00080062".Value' AS classes
           FROM series se JOIN studies s ON s.study_uid = se.study_uid ORDER BY 1, 2`,
        )
        .all(),
      recounted: db
        .prepare(
          `SELECT i.study_uid, i.series_uid, count(*) AS n,
             (SELECT count(*) FROM instances x WHERE x.study_uid = i.study_uid AND x.current = 1) AS study_n,
             (SELECT json_group_array(sop_class_uid) FROM (SELECT DISTINCT sop_class_uid FROM instances x WHERE x.study_uid = i.study_uid AND x.current = 1 ORDER BY 1)) AS classes
           FROM instances i WHERE i.current = 1 GROUP BY 1, 2 ORDER BY 1, 2`,
        )
        .all(),
    };
  } finally {
    db.close();
  }
}

function expectCountsCurrent(path: string): void {
  const { stored, recounted } = countsOf(path);
  expect(stored.length).toBeGreaterThan(0);
  expect(stored).toEqual(recounted);
  const rows = storedOf(path);
  expect(rows.stored).toEqual(rows.recounted);
}

const filter = (key: string, tag: string, vr: string, value: string): AttributeFilter => ({ key, tag, vr, value });

/** Every scoped read the counts feed answers the same counted and uncounted. */
function expectAgreement(catalog: Catalog, scope: CatalogScope): void {
  const other = uncounted(scope);
  expect(catalog.queryStudies(ALL, scope)).toEqual(catalog.queryStudies(ALL, other));
  expect(catalog.querySeries(ALL, scope)).toEqual(catalog.querySeries(ALL, other));
  for (const study of Object.values(STUDY)) {
    const q = { ...ALL, study };
    expect(catalog.queryInstances(q, scope)).toEqual(catalog.queryInstances(q, other));
    expect(catalog.queryInstances({ ...q, instanceFields: [TAGS.SOPInstanceUID] }, scope)).toEqual(
      catalog.queryInstances({ ...q, instanceFields: [TAGS.SOPInstanceUID] }, other),
    );
    const sops = (s: CatalogScope) => catalog.listInstances({ study }, { metadata: false }, s).map((i) => i.sopInstanceUID);
    expect(sops(scope)).toEqual(sops(other));
    expect(catalog.visibleInstances({ study }, scope)).toEqual(catalog.visibleInstances({ study }, other));
    for (const se of Object.values(SERIES)) {
      expect(catalog.visibleInstances({ study, series: se }, scope)).toEqual(catalog.visibleInstances({ study, series: se }, other));
    }
  }
  // Matching on the derived attributes: every value shown finds its study (series), both ways.
  for (const r of catalog.queryStudies(ALL, scope)) {
    for (const [key, tag, vr] of [
      ['NumberOfStudyRelatedInstances', TAGS.NumberOfStudyRelatedInstances, 'IS'],
      ['SOPClassesInStudy', TAGS.SOPClassesInStudy, 'UI'],
    ] as const) {
      for (const value of r.attributes[tag]?.Value ?? []) {
        const q = { ...ALL, filters: [filter(key, tag, vr, String(value))] };
        const found = catalog.queryStudies(q, scope).map((x) => x.studyInstanceUID);
        expect(found).toContain(r.studyInstanceUID);
        expect(found).toEqual(catalog.queryStudies(q, other).map((x) => x.studyInstanceUID));
      }
    }
  }
  for (const r of catalog.querySeries(ALL, scope)) {
    const n = r.attributes[TAGS.NumberOfSeriesRelatedInstances]?.Value?.[0];
    const q = { ...ALL, filters: [filter('NumberOfSeriesRelatedInstances', TAGS.NumberOfSeriesRelatedInstances, 'IS', String(n))] };
    const found = catalog.querySeries(q, scope).map((x) => x.seriesInstanceUID);
    expect(found).toContain(r.seriesInstanceUID);
    expect(found).toEqual(catalog.querySeries(q, other).map((x) => x.seriesInstanceUID));
  }
}

function expectAllAgree(catalog: Catalog): void {
  for (const scope of SCOPES) expectAgreement(catalog, scope);
}

/** The computed attributes of study `study` under `scope`, or undefined when it does not show it. */
function studyCounts(catalog: Catalog, study: string, scope: CatalogScope) {
  const attrs = catalog.queryStudies({ ...ALL, study }, scope)[0]?.attributes;
  if (attrs === undefined) return undefined;
  return {
    modalities: attrs[TAGS.ModalitiesInStudy]?.Value ?? [],
    sopClasses: attrs[TAGS.SOPClassesInStudy]?.Value ?? [],
    series: attrs[TAGS.NumberOfStudyRelatedSeries]?.Value?.[0],
    instances: attrs[TAGS.NumberOfStudyRelatedInstances]?.Value?.[0],
  };
}

function seriesCounts(catalog: Catalog, study: string, scope: CatalogScope): Array<[string, unknown]> {
  return catalog.querySeries({ ...ALL, study }, scope).map((r) => [r.seriesInstanceUID, r.attributes[TAGS.NumberOfSeriesRelatedInstances]?.Value?.[0]]);
}

const IMAGES = of({ kinds: ['image'] });
const REPORTS = of({ kinds: ['report'] });

describe('instance_counts: kept by every commit', () => {
  it('after the seed: a kinds-scoped search counts what the instances count', () => {
    const { catalog, path } = fileCatalog();
    expectCountsCurrent(path);
    expect(studyCounts(catalog, STUDY.a, IMAGES)).toEqual({ modalities: ['CT', 'MR'], sopClasses: [SOP.ct, SOP.mr], series: 2, instances: 5 });
    expectAllAgree(catalog);
    catalog.close();
  });

  it('re-sent instances: the retired version is not counted, the same bytes again change nothing', () => {
    const { catalog, path } = fileCatalog();
    const ct = [1, 2, 3].map((n) => sopOf(SERIES.aCt, n));
    store(catalog, STUDY.a, [changed(catalog, ct[0]!, {}), changed(catalog, ct[1]!, { sha256: catalog.getInstance(ct[1]!)!.sha256 })]);
    // Then once more with new bytes: two retired revisions of the same instance.
    store(catalog, STUDY.a, [changed(catalog, ct[0]!, {})]);
    expect(catalog.instanceHistory(STUDY.a, ct[0]!).map((r) => r.replacedIn)).toEqual([2, 3, null]);
    expect(catalog.instanceHistory(STUDY.a, ct[1]!)).toHaveLength(1);
    expectCountsCurrent(path);
    expect(studyCounts(catalog, STUDY.a, IMAGES)).toEqual({ modalities: ['CT', 'MR'], sopClasses: [SOP.ct, SOP.mr], series: 2, instances: 5 });
    expect(seriesCounts(catalog, STUDY.a, IMAGES)).toEqual([
      [SERIES.aCt, 3],
      [SERIES.aMr, 2],
    ]);
    expectAllAgree(catalog);
    catalog.close();
  });

  it('an SOP instance whose kind changes leaves its old group and joins its new one', () => {
    const { catalog, path } = fileCatalog();
    const sr = sopOf(SERIES.aSr, 1);
    expect(studyCounts(catalog, STUDY.a, REPORTS)).toEqual({ modalities: ['SR'], sopClasses: [SOP.sr], series: 1, instances: 1 });
    // The report's SOP Instance UID sent again as a CT image: no report left in study A.
    store(catalog, STUDY.a, [changed(catalog, sr, { sopClassUID: SOP.ct })]);
    expectCountsCurrent(path);
    expect(studyCounts(catalog, STUDY.a, REPORTS)).toBeUndefined();
    expect(catalog.queryStudies(ALL, REPORTS)).toEqual([]);
    expect(studyCounts(catalog, STUDY.a, IMAGES)).toEqual({ modalities: ['CT', 'MR', 'SR'], sopClasses: [SOP.ct, SOP.mr], series: 3, instances: 6 });
    expectAllAgree(catalog);

    // The presentation state sent again as a report: study A shows a report again, in the PR series.
    store(catalog, STUDY.a, [changed(catalog, sopOf(SERIES.aPr, 1), { sopClassUID: SOP.sr })]);
    expectCountsCurrent(path);
    expect(studyCounts(catalog, STUDY.a, REPORTS)).toEqual({ modalities: ['PR'], sopClasses: [SOP.sr], series: 1, instances: 1 });

    // The same bytes again with another class (the refresh of a retried STOW rewrites the class
    // too): a CT image becomes a report in place, without a new revision.
    const ct3 = sopOf(SERIES.aCt, 3);
    store(catalog, STUDY.a, [changed(catalog, ct3, { sopClassUID: SOP.sr, sha256: catalog.getInstance(ct3)!.sha256 })]);
    expect(catalog.instanceHistory(STUDY.a, ct3)).toHaveLength(1);
    expectCountsCurrent(path);
    expect(studyCounts(catalog, STUDY.a, REPORTS)).toEqual({ modalities: ['CT', 'PR'], sopClasses: [SOP.sr], series: 2, instances: 2 });
    expect(seriesCounts(catalog, STUDY.a, IMAGES)).toEqual([
      [SERIES.aCt, 2],
      [SERIES.aMr, 2],
      [SERIES.aSr, 1],
    ]);
    expectAllAgree(catalog);
    catalog.close();
  });

  it('instances moved to another series: the emptied series is counted nowhere', () => {
    const { catalog, path } = fileCatalog();
    const moved = `${SERIES.aMr}.9`;
    // One MR image to the new series, then the other: the old series counts 1, then is gone.
    store(catalog, STUDY.a, [changed(catalog, sopOf(SERIES.aMr, 1), { series: moved })]);
    expectCountsCurrent(path);
    expect(seriesCounts(catalog, STUDY.a, IMAGES)).toEqual([
      [SERIES.aCt, 3],
      [SERIES.aMr, 1],
      [moved, 1],
    ]);
    expectAllAgree(catalog);
    store(catalog, STUDY.a, [changed(catalog, sopOf(SERIES.aMr, 2), { series: moved })]);
    expectCountsCurrent(path);
    expect(studyCounts(catalog, STUDY.a, IMAGES)).toEqual({ modalities: ['CT', 'MR'], sopClasses: [SOP.ct, SOP.mr], series: 2, instances: 5 });
    expect(seriesCounts(catalog, STUDY.a, IMAGES)).toEqual([
      [SERIES.aCt, 3],
      [moved, 2],
    ]);
    expect(catalog.queryStudies(ALL, of({ series: [SERIES.aMr], kinds: ['image'] }))).toEqual([]);
    expectAllAgree(catalog);
    catalog.close();
  });
});

describe('instance_counts: older catalogs', () => {
  /** The history the migrated catalog and a fresh one both get: the seed, a re-send, a kind change. */
  function history(catalog: Catalog): void {
    for (const c of scopeSeed()) catalog.commitStudyVersion(c);
    store(catalog, STUDY.a, [changed(catalog, sopOf(SERIES.aCt, 1), {}), changed(catalog, sopOf(SERIES.aSr, 1), { sopClassUID: SOP.mr })]);
    store(catalog, STUDY.b, [changed(catalog, sopOf(SERIES.bCt, 2), { series: `${SERIES.bCt}.9` })]);
  }

  it('a catalog of schema 2 (retired revisions in it) gets the counts of its current instances when opened', () => {
    const dir = mkdtempSync(join(tmpdir(), 'instance-counts-'));
    dirs.push(dir);
    const path = join(dir, 'catalog.db');
    const writer = Catalog.open({ path });
    history(writer);
    writer.close();
    // What a node before migration 3 left: the same tables without instance_counts and its triggers.
    const db = new DatabaseSync(path);
    db.exec(`DROP TRIGGER instance_counts_insert; DROP TRIGGER instance_counts_update; DROP TRIGGER instance_counts_delete;
      DROP TABLE instance_counts; PRAGMA user_version = 2`);
    expect((db.prepare('SELECT count(*) AS n FROM instances WHERE current = 0').get() as { n: number }).n).toBe(3);
    db.close();

    const migrated = Catalog.open({ path });
    const check = new DatabaseSync(path, { readOnly: true });
    expect((check.prepare('PRAGMA user_version').get() as { user_version: number }).user_version).toBe(CATALOG_SCHEMA_VERSION);
    check.close();
    expectCountsCurrent(path);
    const fresh = Catalog.open({ path: ':memory:' });
    history(fresh);
    for (const scope of SCOPES) {
      expect(migrated.queryStudies(ALL, scope)).toEqual(fresh.queryStudies(ALL, scope));
      expect(migrated.querySeries(ALL, scope)).toEqual(fresh.querySeries(ALL, scope));
    }
    expect(studyCounts(migrated, STUDY.a, IMAGES)).toEqual({ modalities: ['CT', 'MR', 'SR'], sopClasses: [SOP.ct, SOP.mr], series: 3, instances: 6 });
    expect(studyCounts(migrated, STUDY.b, IMAGES)).toEqual({ modalities: ['CT'], sopClasses: [SOP.ct], series: 2, instances: 2 });
    expectAllAgree(migrated);
    // And the triggers keep them from then on.
    store(migrated, STUDY.a, [changed(migrated, sopOf(SERIES.aPr, 1), { sopClassUID: SOP.ct })]);
    expectCountsCurrent(path);
    expect(studyCounts(migrated, STUDY.a, IMAGES)?.instances).toBe(7);
    migrated.close();
    fresh.close();
  });

  it('a catalog of schema 1 gets them too', () => {
    const dir = mkdtempSync(join(tmpdir(), 'instance-counts-'));
    dirs.push(dir);
    const path = join(dir, 'catalog.db');
    const old = new DatabaseSync(path);
    old.exec(readFileSync(join(import.meta.dirname, 'fixtures', 'catalog-schema-1.sql'), 'utf8'));
    old.close();
    const migrated = Catalog.open({ path });
    expectCountsCurrent(path);
    expect(studyCounts(migrated, STUDY.a, IMAGES)).toEqual({ modalities: ['CT', 'MR'], sopClasses: [SOP.ct, SOP.mr], series: 2, instances: 5 });
    expectAllAgree(migrated);
    migrated.close();
  });
});
