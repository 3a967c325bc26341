-- Every process that files results (a server worker, a node) says which destination list it has loaded, at each
-- refresh. A change of the destinations is answered only once every live process has loaded it, so that with several
-- processes "results filed after the destination was added are sent" holds as with one.
CREATE TABLE hl7_outbound_process (
  process text PRIMARY KEY,
  version text NOT NULL,
  seen_at timestamptz NOT NULL DEFAULT now()
);
