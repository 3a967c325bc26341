-- HL7 v2 outbound: a 'superseded' outbox state. A standalone-Observation ORU whose Observation a
-- DiagnosticReport then lists (typically the same FHIR transaction, Observation entry first) is not sent:
-- the report's ORU carries it. The row stays visible to operators with the reason and the row that carries it.
ALTER TABLE hl7_outbox DROP CONSTRAINT hl7_outbox_state_check;
ALTER TABLE hl7_outbox ADD CONSTRAINT hl7_outbox_state_check
  CHECK (state IN ('queued', 'sending', 'delivered', 'dead', 'superseded'));
ALTER TABLE hl7_outbox ADD COLUMN superseded_by bigint REFERENCES hl7_outbox (id);
