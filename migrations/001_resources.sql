-- Current version of every resource, one row per (type, id). Deleted resources keep a row
-- (deleted = true, content NULL) so that a read answers 410 Gone and the id is never reused silently.
CREATE TABLE resource (
  resource_type text NOT NULL,
  id text NOT NULL,
  version_id integer NOT NULL,
  last_updated timestamptz NOT NULL,
  deleted boolean NOT NULL DEFAULT false,
  -- The JSON exactly as served (meta included); text, so reads stream it without re-serialising.
  content text,
  -- 'Patient/<id>' for every patient compartment the resource belongs to (access control, $export).
  compartments text[] NOT NULL DEFAULT '{}',
  -- resource_history.seq of this version: a global, monotonic change order.
  seq bigint NOT NULL,
  PRIMARY KEY (resource_type, id)
);
CREATE INDEX resource_compartments_idx ON resource USING gin (compartments);
CREATE INDEX resource_type_updated_idx ON resource (resource_type, last_updated);
CREATE INDEX resource_seq_idx ON resource (seq);

-- Every version ever written, including deletions (method DELETE, content NULL).
CREATE TABLE resource_history (
  seq bigserial PRIMARY KEY,
  resource_type text NOT NULL,
  id text NOT NULL,
  version_id integer NOT NULL,
  last_updated timestamptz NOT NULL,
  deleted boolean NOT NULL DEFAULT false,
  method text NOT NULL,
  content text,
  UNIQUE (resource_type, id, version_id)
);
CREATE INDEX resource_history_updated_idx ON resource_history (last_updated, seq);
CREATE INDEX resource_history_type_updated_idx ON resource_history (resource_type, last_updated, seq);
