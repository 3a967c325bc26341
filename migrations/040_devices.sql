-- Patient–device association (issue 9). The FHIR resources (Device, Location, DeviceUseStatement,
-- AuditEvent) are canonical and written through the repository; these tables are the module's own
-- lookup mirror so that resolving "which patient was this device on at time T" is one indexed query
-- on every reading, and so the quarantine of held readings can be listed and assigned.

-- Devices registered through `device add` (the Device resource holds the details).
CREATE TABLE device_registry (
  device_id text PRIMARY KEY,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Beds and rooms registered through the admin API (Location resources).
CREATE TABLE location_registry (
  location_id text PRIMARY KEY,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Identifiers of known devices (serial number, EUI-64, port, vendor ids): (system, value) → Device id.
-- system '' means "no system given"; a lookup without a system matches any system, and more than one
-- device answering is treated as ambiguous (never guessed).
CREATE TABLE device_identifier (
  system text NOT NULL DEFAULT '',
  value text NOT NULL,
  device_id text NOT NULL,
  PRIMARY KEY (system, value)
);
CREATE INDEX device_identifier_value_idx ON device_identifier (value);
CREATE INDEX device_identifier_device_idx ON device_identifier (device_id);

-- Beds (Location resources) by identifier, so an HL7 PV1-3 point-of-care^room^bed or a bare code finds them.
CREATE TABLE location_identifier (
  system text NOT NULL DEFAULT '',
  value text NOT NULL,
  location_id text NOT NULL,
  PRIMARY KEY (system, value)
);
CREATE INDEX location_identifier_value_idx ON location_identifier (value);

-- One row per DeviceUseStatement: the half-open window [period_start, period_end) during which the
-- device (optionally at a bed) is on the patient. period_end NULL = still associated.
CREATE TABLE device_association (
  id text PRIMARY KEY,
  device_id text NOT NULL,
  patient_id text NOT NULL,
  location_id text,
  period_start timestamptz NOT NULL,
  period_end timestamptz,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  ended_by text,
  CHECK (period_end IS NULL OR period_end > period_start)
);
CREATE INDEX device_association_device_idx ON device_association (device_id, period_start);
CREATE INDEX device_association_location_idx ON device_association (location_id, period_start);

-- Readings that could not be filed to a patient (no association at the reading's time, ambiguous
-- association, implausible value, time in the future): the FHIR transaction Bundle that would have
-- been filed is kept whole and filed only when an operator assigns a patient.
CREATE TABLE held_reading (
  id text PRIMARY KEY,
  source text NOT NULL CHECK (source IN ('hl7v2', 'serial')),
  message_id text,
  device_identifiers jsonb NOT NULL,
  location text,
  reading_at timestamptz NOT NULL,
  bundle jsonb NOT NULL,
  reason text NOT NULL,
  status text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'assigned', 'discarded')),
  held_at timestamptz NOT NULL DEFAULT now(),
  resolved_at timestamptz,
  resolved_by text,
  patient_id text,
  resolution_note text,
  -- sha-256 of the held bundle: a retransmission of the same reading does not queue it twice.
  bundle_hash text NOT NULL
);
CREATE INDEX held_reading_status_idx ON held_reading (status, held_at);
CREATE INDEX held_reading_hash_idx ON held_reading (bundle_hash);

-- Exact duplicate readings (same device, code, time, value) dropped per device, for operators.
CREATE TABLE device_reading_counter (
  device_key text PRIMARY KEY,
  filed bigint NOT NULL DEFAULT 0,
  held bigint NOT NULL DEFAULT 0,
  duplicates bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);
