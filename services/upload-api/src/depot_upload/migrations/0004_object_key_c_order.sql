-- The reconciler merges the S3 listing (byte order) with keyset pages of documents by
-- object_key; this index serves that order without sorting the table.
CREATE INDEX documents_object_key_c ON upload.documents (object_key COLLATE "C");
