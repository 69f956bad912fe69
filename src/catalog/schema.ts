// The catalog's SQLite schema. Studies, series and instances carry the attributes QIDO-RS
// answers with (as DICOM JSON text) and a few indexed columns for common keys (columns.ts);
// study_versions holds every DAG root, anchor_queue the roots still to be anchored.

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
];

export const CATALOG_SCHEMA_VERSION = MIGRATIONS.length;
