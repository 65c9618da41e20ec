-- Why an indexed entry has no text (document.index_failed's reason: object_missing,
-- unsupported_type, …); NULL when its text was extracted. Such an entry is findable by
-- filename only, and the web console says so after a reload too.
ALTER TABLE search.index_entries ADD COLUMN extraction_failure text;
