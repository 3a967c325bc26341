-- `_since` exports list the resources deleted since then in the manifest's `deleted` array (Bulk Data 2.0):
-- their files are recorded like the others, with kind 'deleted'.
ALTER TABLE export_file DROP CONSTRAINT export_file_kind_check;
ALTER TABLE export_file ADD CONSTRAINT export_file_kind_check CHECK (kind IN ('output', 'error', 'deleted'));
