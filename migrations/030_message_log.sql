-- The message log: every message a facade received or sent, kept raw, with what became of it.
-- Channel-neutral (mllp, serial, ...) so that every facade shares one log, one search and one replay.
CREATE TABLE message_log (
  id text PRIMARY KEY,
  -- Monotonic order for listing and keyset paging (ids are random UUIDs).
  seq bigserial NOT NULL UNIQUE,
  channel text NOT NULL,
  direction text NOT NULL CHECK (direction IN ('in', 'out')),
  -- Who sent it: for HL7 v2 'MSH-3^MSH-4' (application^facility); the peer address is kept apart.
  sender text,
  receiver text,
  remote_address text,
  control_id text,
  message_type text,
  version text,
  status text NOT NULL CHECK (status IN ('received', 'processed', 'error', 'held')),
  error text,
  -- The acknowledgement we sent back (or received, for outbound), as text.
  ack text,
  raw bytea NOT NULL,
  -- 'Type/id' of every resource the message produced or updated.
  resource_refs text[] NOT NULL DEFAULT '{}',
  -- 'Patient/id' of the patients concerned, so the log can be searched by patient.
  patient_refs text[] NOT NULL DEFAULT '{}',
  -- Replays are new rows pointing at the message they re-ran; the original stays as it was.
  replay_of text REFERENCES message_log (id),
  attempts integer NOT NULL DEFAULT 1,
  received_at timestamptz NOT NULL DEFAULT now(),
  processed_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_log_received_idx ON message_log (received_at, seq);
CREATE INDEX message_log_status_idx ON message_log (status, seq);
CREATE INDEX message_log_type_idx ON message_log (message_type, seq);
-- Duplicate detection: same channel, direction, sender and control id.
CREATE INDEX message_log_control_idx ON message_log (channel, direction, sender, control_id);
CREATE INDEX message_log_patient_idx ON message_log USING gin (patient_refs);
