-- Withdrawals (a sent result entered-in-error, cancelled or deleted) look up which destinations received a
-- report or result by its group key; without this index that is a scan of the whole outbox.
CREATE INDEX hl7_outbox_group_key_idx ON hl7_outbox (group_key, destination);
