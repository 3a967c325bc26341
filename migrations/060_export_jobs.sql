-- Bulk Data $export jobs. Durable: a job survives restarts, and any number of server processes share the
-- table; a worker claims a job with FOR UPDATE SKIP LOCKED and holds it by renewing a lease.
CREATE TABLE export_job (
  id text PRIMARY KEY,
  -- AccessPolicy.actor of the client that started the job: only it may see the status or download files.
  owner text NOT NULL,
  status text NOT NULL CHECK (status IN ('accepted', 'in-progress', 'completed', 'failed', 'cancelled')),
  -- The kick-off URL as the client sent it (manifest "request").
  request_url text NOT NULL,
  -- The parsed request: level, group, types, _since, _typeFilter, _elements, patients, access restrictions.
  request jsonb NOT NULL,
  -- The consistent cut: every resource version with seq <= cut_seq, and nothing after it.
  transaction_time timestamptz NOT NULL,
  cut_seq bigint NOT NULL,
  -- Transactions that were writing resource_history at kick-off (they may hold seqs <= cut_seq without having
  -- committed): the worker waits for them to end before reading.
  cut_xids text[] NOT NULL DEFAULT '{}',
  -- OperationOutcome issues for the manifest's error file (warnings at kick-off, problems during the run).
  issues jsonb NOT NULL DEFAULT '[]',
  -- Types whose files are complete: a reclaimed job resumes after them.
  done_types text[] NOT NULL DEFAULT '{}',
  exported bigint NOT NULL DEFAULT 0,
  progress text,
  error_status integer,
  error jsonb,
  worker text,
  lease_until timestamptz,
  attempts integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  completed_at timestamptz,
  expires_at timestamptz
);
CREATE INDEX export_job_claim_idx ON export_job (status, created_at);
CREATE INDEX export_job_owner_idx ON export_job (owner, status);
CREATE INDEX export_job_expires_idx ON export_job (expires_at);

-- One row per written file; the blob key carries the attempt so a stale worker never overwrites a new one's file.
CREATE TABLE export_file (
  job_id text NOT NULL REFERENCES export_job (id) ON DELETE CASCADE,
  name text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('output', 'error')),
  resource_type text NOT NULL,
  part integer NOT NULL,
  count integer NOT NULL,
  size bigint NOT NULL,
  blob_key text NOT NULL,
  PRIMARY KEY (job_id, name)
);
