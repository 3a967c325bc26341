-- DICOM facade (issue 8): the imaging index. Instances live in the blob store (bytes as received);
-- these tables answer C-FIND / QIDO-RS and locate blobs for C-MOVE / C-GET / WADO-RS. The FHIR
-- ImagingStudy is derived from them: `fhir_dirty` is set in the same transaction as an instance and
-- cleared by the ImagingStudy sync, so a crash after the DIMSE success still updates FHIR on restart.

-- One row per study, carrying the patient attributes too (patient-level C-FIND groups these rows).
CREATE TABLE dicom_study (
  study_uid text PRIMARY KEY,
  patient_id text NOT NULL DEFAULT '',
  issuer text NOT NULL DEFAULT '',
  patient_name text NOT NULL DEFAULT '',
  patient_birth_date text NOT NULL DEFAULT '',
  patient_sex text NOT NULL DEFAULT '',
  study_date text NOT NULL DEFAULT '',
  study_time text NOT NULL DEFAULT '',
  accession text NOT NULL DEFAULT '',
  study_id text NOT NULL DEFAULT '',
  description text NOT NULL DEFAULT '',
  referring_physician text NOT NULL DEFAULT '',
  -- Study- and patient-level attributes (DICOM JSON model) of the latest instance, for responses.
  attrs json NOT NULL,
  imaging_study_id text,
  fhir_dirty boolean NOT NULL DEFAULT true,
  -- Bumped by every instance; the sync clears fhir_dirty only if no instance arrived while it ran.
  change_seq bigint NOT NULL DEFAULT 1,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dicom_study_patient_idx ON dicom_study (patient_id, issuer);
CREATE INDEX dicom_study_date_idx ON dicom_study (study_date);
CREATE INDEX dicom_study_accession_idx ON dicom_study (accession);
CREATE INDEX dicom_study_dirty_idx ON dicom_study (study_uid) WHERE fhir_dirty;

CREATE TABLE dicom_series (
  series_uid text PRIMARY KEY,
  study_uid text NOT NULL REFERENCES dicom_study (study_uid) ON DELETE CASCADE,
  modality text NOT NULL DEFAULT '',
  series_number integer,
  description text NOT NULL DEFAULT '',
  body_part text NOT NULL DEFAULT '',
  series_date text NOT NULL DEFAULT '',
  attrs json NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dicom_series_study_idx ON dicom_series (study_uid);

CREATE TABLE dicom_instance (
  sop_uid text PRIMARY KEY,
  series_uid text NOT NULL REFERENCES dicom_series (series_uid) ON DELETE CASCADE,
  study_uid text NOT NULL,
  sop_class_uid text NOT NULL,
  instance_number integer,
  transfer_syntax text NOT NULL,
  blob_key text NOT NULL,
  size bigint NOT NULL,
  -- Uncompressed pixel data: offset of the value in the blob, its length and the frame geometry (frames).
  pixel_offset bigint,
  pixel_length bigint,
  frames integer,
  -- Every attribute except bulk data, in the DICOM JSON model (WADO-RS metadata, QIDO includefield);
  -- json, not jsonb: it is only ever read whole, and jsonb conversion doubled the insert cost on PGlite.
  metadata json NOT NULL,
  source_ae text NOT NULL DEFAULT '',
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dicom_instance_series_idx ON dicom_instance (series_uid, instance_number);
CREATE INDEX dicom_instance_study_idx ON dicom_instance (study_uid);

-- Modality worklist: a mirror of active imaging ServiceRequests, kept by a repository change hook
-- inside the writing transaction (so it is never out of step with FHIR), queried by C-FIND MWL.
CREATE TABLE dicom_worklist (
  service_request_id text PRIMARY KEY,
  patient_ref text NOT NULL DEFAULT '',
  accession text NOT NULL DEFAULT '',
  modality text NOT NULL DEFAULT '',
  station_ae text NOT NULL DEFAULT '',
  start_date text NOT NULL DEFAULT '',
  start_time text NOT NULL DEFAULT '',
  study_uid text NOT NULL,
  status text NOT NULL,
  procedure_code text NOT NULL DEFAULT '',
  procedure_text text NOT NULL DEFAULT ''
);
CREATE INDEX dicom_worklist_accession_idx ON dicom_worklist (accession);
CREATE INDEX dicom_worklist_study_idx ON dicom_worklist (study_uid);
CREATE INDEX dicom_worklist_start_idx ON dicom_worklist (start_date);

-- Modality Performed Procedure Steps: the attributes received so far (N-CREATE merged with N-SETs).
CREATE TABLE dicom_mpps (
  sop_uid text PRIMARY KEY,
  status text NOT NULL,
  attrs json NOT NULL,
  procedure_id text,
  service_request_id text,
  updated_at timestamptz NOT NULL DEFAULT now()
);
