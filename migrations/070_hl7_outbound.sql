-- HL7 v2 outbound (facades/hl7v2/outbound): destinations and the transactional outbox (DESIGN.md principle 3).

-- One row per receiving interface (an Epic Bridges or Cerner Open Engine inbound channel, or any MLLP peer).
-- Settings that only the outbound code reads (TLS, filter, ACK timeout, retry policy, MSH and dialect
-- overrides) live in `config`, so new options need no migration.
CREATE TABLE hl7_destination (
  name text PRIMARY KEY,
  host text NOT NULL,
  port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
  profile text NOT NULL CHECK (profile IN ('epic', 'cerner', 'generic')),
  message_types text[] NOT NULL,
  config jsonb NOT NULL DEFAULT '{}',
  -- A paused destination still queues; its workers just stop claiming.
  paused boolean NOT NULL DEFAULT false,
  -- 'file' when it came from HL7_DESTINATIONS_FILE (re-applied at every start), 'api' otherwise.
  source text NOT NULL DEFAULT 'api',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per message to deliver to one destination. Written by the repository change hook inside the
-- writing transaction; claimed by workers with FOR UPDATE SKIP LOCKED and a lease, so several processes
-- share the queue without sending a row twice and a crashed process's rows are picked up again.
CREATE TABLE hl7_outbox (
  -- Also the delivery order: per (destination, patient_key) rows are sent strictly in id order.
  id bigserial PRIMARY KEY,
  destination text NOT NULL REFERENCES hl7_destination (name),
  -- 'ORU', 'ORM:NW', 'ORM:XO', 'ORM:CA', 'ORM:SC', ... : what to build.
  event text NOT NULL,
  -- The resource the message is built from ('DiagnosticReport/1'); changes that arrive before a row is
  -- first built coalesce into it (see the unique index below).
  group_key text NOT NULL,
  -- The change that caused it ('Observation/7/_history/2').
  trigger_ref text NOT NULL,
  -- The ordering lane: 'Patient/<id>', or the group key when the resource names no patient.
  patient_key text NOT NULL,
  state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sending', 'delivered', 'dead')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- A claim is a lease: the claimer's token and when another worker may take the row over.
  claim_token text,
  lease_until timestamptz,
  -- The message exactly as sent (CR-separated segments), fixed at the first attempt so that every retry
  -- resends the same bytes and the same MSH-10.
  payload text,
  control_id text,
  message_type text,
  ack text,
  ack_code text,
  last_error text,
  replay_of bigint REFERENCES hl7_outbox (id),
  -- The message_log row (direction 'out') written when the row reached delivered or dead.
  message_log_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  first_sent_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Claiming: the open rows of one destination in order.
CREATE INDEX hl7_outbox_open_idx ON hl7_outbox (destination, id) WHERE state IN ('queued', 'sending');
-- "Is an earlier row of this lane still open?" (per-patient order).
CREATE INDEX hl7_outbox_lane_idx ON hl7_outbox (destination, patient_key, id) WHERE state IN ('queued', 'sending');
-- Coalescing: one not-yet-built row per destination, resource and event.
CREATE UNIQUE INDEX hl7_outbox_coalesce_idx ON hl7_outbox (destination, group_key, event) WHERE state = 'queued' AND payload IS NULL;
-- Operator lists: per destination and state, newest first.
CREATE INDEX hl7_outbox_list_idx ON hl7_outbox (destination, state, id);
