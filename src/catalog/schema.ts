// The catalog's SQLite schema. Studies, series and instances carry the attributes QIDO-RS
// answers with (as DICOM JSON text) and a few indexed columns for common keys (columns.ts);
// study_versions holds every DAG root, anchor_queue the roots still to be anchored. What a
// CatalogScope filters on (scope.ts) has columns of its own: each instance's kind, each study's
// Issuer of Patient ID, and key_object_references, the instances each key object selection names.

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
];

export const CATALOG_SCHEMA_VERSION = MIGRATIONS.length;
