-- Why a message is held ('association': a device reading waiting for a patient–device association;
-- 'identity-conflict': its identifiers match another patient's data), and how an operator resolved it.
ALTER TABLE message_log ADD COLUMN hold_kind text;
ALTER TABLE message_log ADD COLUMN resolution text;
CREATE INDEX message_log_hold_idx ON message_log (hold_kind, seq) WHERE status = 'held';
