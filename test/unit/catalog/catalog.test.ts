import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { Catalog } from '../../../src/catalog/catalog.ts';
import type { CatalogInstance } from '../../../src/catalog/records.ts';
import { CATALOG_SCHEMA_VERSION } from '../../../src/catalog/schema.ts';
import type { DicomJsonDataset, DicomJsonElement } from '../../../src/dicom/model.ts';
import { isVaultError } from '../../../src/core/errors.ts';

const CT_IMAGE = '1.2.840.10008.5.1.4.1.1.2';
const MR_IMAGE = '1.2.840.10008.5.1.4.1.1.4';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const STUDY = '1.2.826.0.1.3680043.8.498.1';
const OTHER_STUDY = '1.2.826.0.1.3680043.8.498.2';
const SERIES_A = `${STUDY}.1`;
const SERIES_B = `${STUDY}.2`;
const NOW = '2024-05-01T10:00:00.000Z';

const str = (vr: string, ...values: Array<string | number>): DicomJsonElement => ({ vr, Value: values });
const pn = (alphabetic: string): DicomJsonElement => ({ vr: 'PN', Value: [{ Alphabetic: alphabetic }] });

function inst(
  study: string,
  series: string,
  sop: string,
  opts: { attrs?: DicomJsonDataset; bytes?: string; cid?: string; sopClass?: string } = {},
): CatalogInstance {
  const sopClass = opts.sopClass ?? CT_IMAGE;
  const metadata: DicomJsonDataset = {
    '00080016': str('UI', sopClass),
    '00080018': str('UI', sop),
    '0020000D': str('UI', study),
    '0020000E': str('UI', series),
    ...opts.attrs,
  };
  return {
    studyInstanceUID: study,
    seriesInstanceUID: series,
    sopInstanceUID: sop,
    sopClassUID: sopClass,
    transferSyntaxUID: EXPLICIT_LE,
    size: 4096,
    sha256: createHash('sha256')
      .update(opts.bytes ?? sop)
      .digest('hex'),
    nodeCid: opts.cid ?? `bafy-${sop}`,
    metadata,
    layout: {
      transferSyntaxUID: EXPLICIT_LE,
      datasetOffset: 300,
      pixelData: { valueOffset: 900, valueLength: 2048, encapsulated: false, vr: 'OW' },
      frames: [[{ offset: 900, length: 2048 }]],
      bulk: { '7FE00010': { offset: 900, length: 2048 } },
    },
  };
}

/** Commits on top of the study's latest version, as the study writer does. */
function commit(catalog: Catalog, study: string, instances: CatalogInstance[], root?: string) {
  const latest = catalog.latestVersion(study);
  const version = (latest?.version ?? 0) + 1;
  return catalog.commitStudyVersion({
    studyInstanceUID: study,
    version,
    root: root ?? `bafyroot-${study}-${version}`,
    prev: latest?.root ?? null,
    instances,
    createdAt: NOW,
  });
}

function catch_(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'catalog-test-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('Catalog: versions', () => {
  it('commits a new study and serves its instances back with metadata and layout', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const a = inst(STUDY, SERIES_A, `${SERIES_A}.1`, { attrs: { '00100010': pn('Doe^John') } });
    const v = commit(catalog, STUDY, [a]);
    expect(v).toEqual({ studyInstanceUID: STUDY, version: 1, root: `bafyroot-${STUDY}-1`, prev: null, createdAt: NOW, instanceCount: 1 });
    expect(catalog.latestVersion(STUDY)).toEqual(v);

    const back = catalog.getInstance(a.sopInstanceUID);
    expect(back).toEqual(a);
    expect(catalog.getInstance(a.sopInstanceUID, { study: STUDY, series: SERIES_A })?.nodeCid).toBe(a.nodeCid);
    expect(catalog.getInstance(a.sopInstanceUID, { study: OTHER_STUDY })).toBeUndefined();
    expect(catalog.getInstance(a.sopInstanceUID, { series: SERIES_B })).toBeUndefined();
    expect(catalog.getInstance('1.2.3.4.5')).toBeUndefined();
    catalog.close();
  });

  it('refuses a commit whose parent is not the latest version (CONFLICT) and changes nothing', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const v1 = commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.1`)]);

    // Two writers read v1; the first wins, the second must retry.
    const v2 = catalog.commitStudyVersion({
      studyInstanceUID: STUDY,
      version: 2,
      root: 'root-writer-1',
      prev: v1.root,
      instances: [inst(STUDY, SERIES_A, `${SERIES_A}.2`)],
      createdAt: NOW,
    });
    const err = catch_(() =>
      catalog.commitStudyVersion({
        studyInstanceUID: STUDY,
        version: 2,
        root: 'root-writer-2',
        prev: v1.root,
        instances: [inst(STUDY, SERIES_A, `${SERIES_A}.3`)],
        createdAt: NOW,
      }),
    );
    expect(isVaultError(err, 'CONFLICT')).toBe(true);
    expect((err as { status: number }).status).toBe(409);

    // A "new study" commit for a study that exists is a conflict too.
    const err2 = catch_(() =>
      catalog.commitStudyVersion({
        studyInstanceUID: STUDY,
        version: 1,
        root: 'root-x',
        prev: null,
        instances: [inst(STUDY, SERIES_A, `${SERIES_A}.4`)],
        createdAt: NOW,
      }),
    );
    expect(isVaultError(err2, 'CONFLICT')).toBe(true);

    expect(catalog.versions(STUDY).map((v) => v.root)).toEqual([v1.root, v2.root]);
    expect(catalog.getInstance(`${SERIES_A}.3`)).toBeUndefined();
    expect(catalog.getInstance(`${SERIES_A}.4`)).toBeUndefined();
    expect(catalog.listInstances({ study: STUDY })).toHaveLength(2);
    expect(catalog.pendingAnchors(10).map((p) => p.root)).toEqual([v1.root, v2.root]);
    catalog.close();
  });

  it('rolls back the whole commit when one instance is refused', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const err = catch_(() =>
      catalog.commitStudyVersion({
        studyInstanceUID: STUDY,
        version: 1,
        root: 'r1',
        prev: null,
        instances: [inst(STUDY, SERIES_A, `${SERIES_A}.1`), inst(OTHER_STUDY, SERIES_A, `${SERIES_A}.2`)],
        createdAt: NOW,
      }),
    );
    expect(isVaultError(err)).toBe(true);
    expect(catalog.latestVersion(STUDY)).toBeUndefined();
    expect(catalog.getInstance(`${SERIES_A}.1`)).toBeUndefined();
    expect(catalog.pendingAnchors(10)).toEqual([]);
    // The study can still be committed afterwards.
    expect(commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.1`)]).version).toBe(1);
    catalog.close();
  });

  it('keeps replaced bytes of a SOP Instance as history, shows only the current ones', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const sop = `${SERIES_A}.1`;
    const first = inst(STUDY, SERIES_A, sop, { bytes: 'first', cid: 'cid-first', attrs: { '00200013': str('IS', 1) } });
    const second = inst(STUDY, SERIES_A, sop, { bytes: 'second', cid: 'cid-second', attrs: { '00200013': str('IS', 7) } });
    commit(catalog, STUDY, [first]);
    const v2 = commit(catalog, STUDY, [second]);

    expect(v2.instanceCount).toBe(1);
    expect(catalog.getInstance(sop)?.nodeCid).toBe('cid-second');
    expect(catalog.listInstances({ study: STUDY }).map((i) => i.nodeCid)).toEqual(['cid-second']);
    const history = catalog.instanceHistory(STUDY, sop);
    expect(history.map((h) => [h.instance.nodeCid, h.version, h.replacedIn])).toEqual([
      ['cid-first', 1, 2],
      ['cid-second', 2, null],
    ]);
    expect(history[0]!.instance.sha256).toBe(first.sha256);
    expect(history[0]!.instance.metadata['00200013']).toEqual(str('IS', 1));

    // The same bytes again (a retried STOW) add no history; the newest DAG node is recorded.
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, sop, { bytes: 'second', cid: 'cid-second-again' })]);
    expect(catalog.instanceHistory(STUDY, sop)).toHaveLength(2);
    expect(catalog.getInstance(sop)?.nodeCid).toBe('cid-second-again');
    catalog.close();
  });

  it("reads an instance's layout once per instance node, and follows a replacement to the new node's layout", () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const sop = `${SERIES_A}.1`;
    const first = inst(STUDY, SERIES_A, sop, { bytes: 'first', cid: 'cid-first' });
    first.layout = { ...first.layout, frames: [[{ offset: 100, length: 10 }]] };
    commit(catalog, STUDY, [first]);
    const a = catalog.getInstance(sop)!;
    const b = catalog.getInstance(sop)!;
    expect(a.layout).toEqual(first.layout);
    expect(b.layout).toBe(a.layout); // parsed once, shared (layouts are never mutated)
    const second = inst(STUDY, SERIES_A, sop, { bytes: 'second', cid: 'cid-second' });
    second.layout = { ...second.layout, frames: [[{ offset: 200, length: 20 }]] };
    commit(catalog, STUDY, [second]);
    expect(catalog.getInstance(sop)!.layout).toEqual(second.layout);
    expect(catalog.getInstance(sop)!.metadata).toEqual(second.metadata);
    catalog.close();
  });

  it('reopens a file database with everything committed', () => {
    const path = join(tempDir(), 'catalog.db');
    const catalog = Catalog.open({ path });
    const a = inst(STUDY, SERIES_A, `${SERIES_A}.1`);
    const v1 = commit(catalog, STUDY, [a]);
    const v2 = commit(catalog, STUDY, [inst(STUDY, SERIES_B, `${SERIES_B}.1`)]);
    catalog.close();

    const again = Catalog.open({ path });
    expect(again.versions(STUDY)).toEqual([v1, v2]);
    expect(again.getInstance(a.sopInstanceUID)).toEqual(a);
    expect(again.listInstances({ study: STUDY })).toHaveLength(2);
    expect(again.pendingAnchors(10).map((p) => p.root)).toEqual([v1.root, v2.root]);
    // The next writer continues the chain.
    expect(commit(again, STUDY, [inst(STUDY, SERIES_B, `${SERIES_B}.2`)]).prev).toBe(v2.root);
    again.close();

    const db = new DatabaseSync(path);
    expect((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version).toBe(CATALOG_SCHEMA_VERSION);
    expect((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode).toBe('wal');
    db.close();
  });

  it('refuses to open a catalog written by a newer schema', () => {
    const path = join(tempDir(), 'catalog.db');
    const db = new DatabaseSync(path);
    db.exec('PRAGMA user_version = 999');
    db.close();
    const err = catch_(() => Catalog.open({ path }));
    expect(isVaultError(err, 'CONFIG_INVALID')).toBe(true);
  });
});

describe('Catalog: derived attributes and listing', () => {
  it('counts series and instances and lists modalities of the study', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const ct = { '00080060': str('CS', 'CT'), '00200011': str('IS', 1) };
    const mr = { '00080060': str('CS', 'MR'), '00200011': str('IS', 2) };
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.1`, { attrs: ct }), inst(STUDY, SERIES_A, `${SERIES_A}.2`, { attrs: ct })]);
    const v2 = commit(catalog, STUDY, [inst(STUDY, SERIES_B, `${SERIES_B}.1`, { attrs: mr, sopClass: MR_IMAGE })]);
    expect(v2.instanceCount).toBe(3);

    const [study] = catalog.queryStudies({ filters: [], limit: 10, offset: 0 });
    expect(study!.attributes['00201206']).toEqual(str('IS', 2));
    expect(study!.attributes['00201208']).toEqual(str('IS', 3));
    expect(study!.attributes['00080061']).toEqual(str('CS', 'CT', 'MR'));
    expect(study!.attributes['00080062']).toEqual(str('UI', CT_IMAGE, MR_IMAGE));
    const series = catalog.querySeries({ filters: [], study: STUDY, limit: 10, offset: 0 });
    expect(series.map((s) => [s.seriesInstanceUID, s.attributes['00201209']?.Value?.[0]])).toEqual([
      [SERIES_A, 2],
      [SERIES_B, 1],
    ]);
    catalog.close();
  });

  it('keeps SOP Classes in Study right over one-instance versions, and drops a class whose last instance was replaced', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const classes = () => catalog.queryStudies({ filters: [], limit: 10, offset: 0 })[0]!.attributes['00080062'];
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.1`)]);
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.2`, { sopClass: MR_IMAGE })]);
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.3`)]);
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.3`)]);
    expect(classes()).toEqual(str('UI', CT_IMAGE, MR_IMAGE));
    // The only MR instance sent again, now as CT: MR is gone from the study.
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.2`, { bytes: 'as CT' })]);
    expect(classes()).toEqual(str('UI', CT_IMAGE));
    commit(catalog, STUDY, [inst(STUDY, SERIES_B, `${SERIES_B}.1`, { sopClass: MR_IMAGE })]);
    expect(classes()).toEqual(str('UI', CT_IMAGE, MR_IMAGE));
    catalog.close();
  });

  it('moves a re-sent instance to its new series and drops the emptied series', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const sop = `${STUDY}.9.1`;
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, sop, { attrs: { '00080060': str('CS', 'CT') } })]);
    commit(catalog, STUDY, [inst(STUDY, SERIES_B, sop, { bytes: 'fixed', attrs: { '00080060': str('CS', 'MR') } })]);
    expect(catalog.getInstance(sop)?.seriesInstanceUID).toBe(SERIES_B);
    expect(catalog.hasSeries(STUDY, SERIES_A)).toBe(false);
    const [study] = catalog.queryStudies({ filters: [], limit: 10, offset: 0 });
    expect(study!.attributes['00201206']).toEqual(str('IS', 1));
    expect(study!.attributes['00080061']).toEqual(str('CS', 'MR'));
    catalog.close();
  });

  it('takes study attributes from the latest instances, without erasing values with empty ones', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    commit(catalog, STUDY, [
      inst(STUDY, SERIES_A, `${SERIES_A}.1`, {
        attrs: { '00100010': pn('Doe^John'), '00080050': str('SH', 'ACC1'), '00081030': str('LO', 'Old description') },
      }),
    ]);
    commit(catalog, STUDY, [
      inst(STUDY, SERIES_A, `${SERIES_A}.2`, {
        attrs: { '00100010': pn('Doe^Johnny'), '00080050': { vr: 'SH' }, '00081030': str('LO', 'New description') },
      }),
    ]);
    const [study] = catalog.queryStudies({ filters: [], limit: 10, offset: 0 });
    expect(study!.attributes['00100010']).toEqual(pn('Doe^Johnny'));
    expect(study!.attributes['00081030']).toEqual(str('LO', 'New description'));
    expect(study!.attributes['00080050']).toEqual(str('SH', 'ACC1'));
    catalog.close();
  });

  it('lists a series by InstanceNumber as a number, instances without one last', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const n = (i: number) => ({ '00200013': str('IS', i) });
    commit(catalog, STUDY, [
      inst(STUDY, SERIES_A, `${SERIES_A}.5`),
      inst(STUDY, SERIES_A, `${SERIES_A}.10`, { attrs: n(10) }),
      inst(STUDY, SERIES_A, `${SERIES_A}.2`, { attrs: n(2) }),
      inst(STUDY, SERIES_A, `${SERIES_A}.1`, { attrs: n(1) }),
      inst(STUDY, SERIES_B, `${SERIES_B}.1`, { attrs: n(1) }),
    ]);
    expect(catalog.listInstances({ study: STUDY, series: SERIES_A }).map((i) => i.sopInstanceUID)).toEqual([
      `${SERIES_A}.1`,
      `${SERIES_A}.2`,
      `${SERIES_A}.10`,
      `${SERIES_A}.5`,
    ]);
    expect(catalog.listInstances({ study: STUDY })).toHaveLength(5);
    expect(catalog.listInstances({ study: OTHER_STUDY })).toEqual([]);
    catalog.close();
  });

  it('lists the same instances, metadata and layout when told to read metadata only on use (metadata: false)', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const n = (i: number) => ({ '00200013': str('IS', i) });
    commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.2`, { attrs: n(2) }), inst(STUDY, SERIES_A, `${SERIES_A}.1`, { attrs: n(1) })]);
    const eager = catalog.listInstances({ study: STUDY });
    const later = catalog.listInstances({ study: STUDY }, { metadata: false });
    expect(later.map((i) => [i.sopInstanceUID, i.nodeCid, i.sha256, i.size])).toEqual(eager.map((i) => [i.sopInstanceUID, i.nodeCid, i.sha256, i.size]));
    expect(later.map((i) => i.metadata)).toEqual(eager.map((i) => i.metadata));
    expect(later.map((i) => i.layout)).toEqual(eager.map((i) => i.layout));
    catalog.close();
  });
});

describe('Catalog: anchor queue', () => {
  it('hands out committed roots oldest first, and forgets anchored ones', () => {
    const catalog = Catalog.open({ path: ':memory:' });
    const r1 = commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.1`)]).root;
    const r2 = commit(catalog, OTHER_STUDY, [inst(OTHER_STUDY, `${OTHER_STUDY}.1`, `${OTHER_STUDY}.1.1`)]).root;
    const r3 = commit(catalog, STUDY, [inst(STUDY, SERIES_A, `${SERIES_A}.2`)]).root;

    expect(catalog.pendingAnchors(10)).toEqual([
      { root: r1, studyInstanceUID: STUDY, version: 1, enqueuedAt: NOW },
      { root: r2, studyInstanceUID: OTHER_STUDY, version: 1, enqueuedAt: NOW },
      { root: r3, studyInstanceUID: STUDY, version: 2, enqueuedAt: NOW },
    ]);
    expect(catalog.pendingAnchors(2).map((p) => p.root)).toEqual([r1, r2]);
    expect(catalog.markAnchored([r1, 'not-queued'])).toBe(1);
    expect(catalog.pendingAnchors(10).map((p) => p.root)).toEqual([r2, r3]);
    catalog.close();
  });
});
