// The catalog's SQLite schema. Studies, series and instances carry the attributes QIDO-RS
// answers with (as DICOM JSON text) and a few indexed columns for common keys (columns.ts);
// study_versions holds every DAG root, anchor_queue the roots still to be anchored. What a
// CatalogScope filters on (scope.ts) has columns of its own: each instance's kind, each study's
// Issuer of Patient ID, and key_object_references, the instances each key object selection names;
// instance_counts holds the current instances per study, series, kind and SOP Class.

/**
 * The references of key object selections, as rows of key_object_references, for the current
 * instances `i` that the caller's WHERE (appended) picks: each SOP Instance UID in Current
 * Requested Procedure Evidence Sequence > Referenced Series Sequence > Referenced SOP Sequence
 * (PS3.3 C.17.2) of the instance's DICOM JSON metadata. Evidence items naming another study are
 * passed over: a reference opens instances of the selection's own study only. The CASEs keep
 * json_each and ->> to items that are objects, whatever a malformed file put in the sequence.
 */
export const INSERT_KOS_REFERENCES = `
  INSERT OR IGNORE INTO key_object_references (study_uid, kos_sop_uid, referenced_sop_uid)
  SELECT i.study_uid, i.sop_uid, CASE WHEN sop.type = 'object' THEN sop.value ->> '$."00081155".Value[0]' END
  FROM instances i,
    json_each(i.metadata, '$."0040A375".Value') ev,
    json_each(CASE WHEN ev.type = 'object' THEN ev.value END, '$."00081115".Value') rs,
    json_each(CASE WHEN rs.type = 'object' THEN rs.value END, '$."00081199".Value') sop
  WHERE CASE WHEN sop.type = 'object' THEN sop.value ->> '$."00081155".Value[0]' END IS NOT NULL
    AND coalesce(CASE WHEN ev.type = 'object' THEN ev.value ->> '$."0020000D".Value[0]' END, i.study_uid) = i.study_uid
    AND i.current = 1`;

/** MIGRATIONS[n] takes the schema from user_version n to n + 1. Append only. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE studies (
    study_uid        TEXT PRIMARY KEY,
    patient_id       TEXT,
    study_date       TEXT,
    study_time       TEXT,
    accession_number TEXT,
    series_count     INTEGER NOT NULL DEFAULT 0,
    instance_count   INTEGER NOT NULL DEFAULT 0,
    attributes       TEXT NOT NULL
  ) STRICT;
  CREATE INDEX studies_patient_id ON studies (patient_id);
  CREATE INDEX studies_study_date ON studies (study_date);
  CREATE INDEX studies_accession_number ON studies (accession_number);

  CREATE TABLE series (
    study_uid      TEXT NOT NULL REFERENCES studies (study_uid),
    series_uid     TEXT NOT NULL,
    modality       TEXT,
    series_number  INTEGER,
    instance_count INTEGER NOT NULL DEFAULT 0,
    attributes     TEXT NOT NULL,
    PRIMARY KEY (study_uid, series_uid)
  ) STRICT;
  CREATE INDEX series_series_uid ON series (series_uid);
  CREATE INDEX series_modality ON series (modality);

  -- Every revision of every instance; current = 0 rows are history (other bytes received
  -- later for the same SOP Instance UID) and are never shown by queries.
  CREATE TABLE instances (
    id                  INTEGER PRIMARY KEY,
    study_uid           TEXT NOT NULL REFERENCES studies (study_uid),
    series_uid          TEXT NOT NULL,
    sop_uid             TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    instance_number     INTEGER,
    size                INTEGER NOT NULL,
    sha256              TEXT NOT NULL,
    node_cid            TEXT NOT NULL,
    metadata            TEXT NOT NULL,
    layout              TEXT NOT NULL,
    version             INTEGER NOT NULL,
    replaced_in         INTEGER,
    current             INTEGER NOT NULL
  ) STRICT;
  CREATE UNIQUE INDEX instances_current_sop ON instances (sop_uid, study_uid) WHERE current = 1;
  CREATE INDEX instances_current_series ON instances (study_uid, series_uid, instance_number) WHERE current = 1;
  CREATE INDEX instances_history ON instances (study_uid, sop_uid, id);

  CREATE TABLE study_versions (
    study_uid      TEXT NOT NULL REFERENCES studies (study_uid),
    version        INTEGER NOT NULL,
    root           TEXT NOT NULL,
    prev           TEXT,
    created_at     TEXT NOT NULL,
    instance_count INTEGER NOT NULL,
    PRIMARY KEY (study_uid, version)
  ) STRICT;

  CREATE TABLE anchor_queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    root        TEXT NOT NULL,
    study_uid   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    enqueued_at TEXT NOT NULL
  ) STRICT;
  `,
  // 2: what a CatalogScope filters on. dv_instance_kind is src/dicom/sop-classes.ts's
  // instanceKind, registered by Catalog.open before the migrations run.
  `
  ALTER TABLE instances ADD COLUMN kind TEXT NOT NULL DEFAULT 'other' CHECK (kind IN ('image', 'report', 'key-object', 'other'));
  UPDATE instances SET kind = dv_instance_kind(sop_class_uid);
  -- Whether a series has instances of some kinds, and an instance's kind, from the index alone
  -- (the column comes after metadata and layout in the row, past their overflow pages).
  CREATE INDEX instances_current_kind ON instances (study_uid, series_uid, kind, sop_uid) WHERE current = 1;

  ALTER TABLE studies ADD COLUMN issuer TEXT;
  UPDATE studies SET issuer = nullif(trim(attributes ->> '$."00100021".Value[0]'), '');
  DROP INDEX studies_patient_id;
  CREATE INDEX studies_patient ON studies (patient_id, issuer);

  -- The instances each current key object selection references, by study: rows of a selection
  -- are replaced whenever it is stored again.
  CREATE TABLE key_object_references (
    study_uid          TEXT NOT NULL,
    kos_sop_uid        TEXT NOT NULL,
    referenced_sop_uid TEXT NOT NULL,
    PRIMARY KEY (study_uid, referenced_sop_uid, kos_sop_uid)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX key_object_references_kos ON key_object_references (study_uid, kos_sop_uid);
  ${INSERT_KOS_REFERENCES} AND i.kind = 'key-object';
  `,
  // 3: how many current instances each (study, series, kind, SOP Class) has, so that a scope
  // whose instance-level condition is kinds alone counts a study's or a series' visible
  // instances from a few rows instead of every instance (scope-sql.ts, catalog.ts). Triggers keep
  // it in the transaction of every write to instances, whichever statement makes it; a row
  // leaves when its count reaches 0. Filled here from the kind index (the kind column sits past
  // the rows' metadata overflow pages; sop_class_uid is near the head of the row).
  `
  CREATE TABLE instance_counts (
    study_uid     TEXT NOT NULL,
    series_uid    TEXT NOT NULL,
    kind          TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    n             INTEGER NOT NULL CHECK (n > 0),
    PRIMARY KEY (study_uid, series_uid, kind, sop_class_uid)
  ) STRICT, WITHOUT ROWID;
  INSERT INTO instance_counts (study_uid, series_uid, kind, sop_class_uid, n)
  SELECT study_uid, series_uid, kind, sop_class_uid, count(*) FROM instances INDEXED BY instances_current_kind
  WHERE current = 1 GROUP BY study_uid, series_uid, kind, sop_class_uid;

  CREATE TRIGGER instance_counts_insert AFTER INSERT ON instances WHEN NEW.current = 1 BEGIN
    INSERT INTO instance_counts (study_uid, series_uid, kind, sop_class_uid, n) VALUES (NEW.study_uid, NEW.series_uid, NEW.kind, NEW.sop_class_uid, 1)
      ON CONFLICT DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER instance_counts_delete AFTER DELETE ON instances WHEN OLD.current = 1 BEGIN
    DELETE FROM instance_counts WHERE study_uid = OLD.study_uid AND series_uid = OLD.series_uid AND kind = OLD.kind AND sop_class_uid = OLD.sop_class_uid AND n = 1;
    UPDATE instance_counts SET n = n - 1 WHERE study_uid = OLD.study_uid AND series_uid = OLD.series_uid AND kind = OLD.kind AND sop_class_uid = OLD.sop_class_uid;
  END;
  -- A row retired (current 1 -> 0), made current again, or whose counted columns changed: out
  -- of its old group, into its new one.
  CREATE TRIGGER instance_counts_update AFTER UPDATE OF study_uid, series_uid, kind, sop_class_uid, current ON instances
  WHEN OLD.current IS NOT NEW.current OR (NEW.current = 1 AND (OLD.study_uid IS NOT NEW.study_uid OR OLD.series_uid IS NOT NEW.series_uid
    OR OLD.kind IS NOT NEW.kind OR OLD.sop_class_uid IS NOT NEW.sop_class_uid)) BEGIN
    DELETE FROM instance_counts WHERE OLD.current = 1 AND study_uid = OLD.study_uid AND series_uid = OLD.series_uid AND kind = OLD.kind
      AND sop_class_uid = OLD.sop_class_uid AND n = 1;
    UPDATE instance_counts SET n = n - 1 WHERE OLD.current = 1 AND study_uid = OLD.study_uid AND series_uid = OLD.series_uid AND kind = OLD.kind
      AND sop_class_uid = OLD.sop_class_uid;
    INSERT INTO instance_counts (study_uid, series_uid, kind, sop_class_uid, n) SELECT NEW.study_uid, NEW.series_uid, NEW.kind, NEW.sop_class_uid, 1
      WHERE NEW.current = 1 ON CONFLICT DO UPDATE SET n = n + 1;
  END;
  `,
];

export const CATALOG_SCHEMA_VERSION = MIGRATIONS.length;
