-- Presigned uploads (docs/api.md): the bytes go straight to S3; this row remembers what the
-- client declared so that completing the upload can verify it. Keyed by the document id
-- (the upload id clients see); the document row carries the life cycle visible to the
-- rest of the system (pending → stored | failed), this row the upload's own.
CREATE TABLE upload.upload_sessions (
    document_id         uuid PRIMARY KEY REFERENCES upload.documents (id) ON DELETE CASCADE,
    owner_id            text NOT NULL,
    size_bytes          bigint NOT NULL CHECK (size_bytes > 0),
    sha256              text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    part_size           bigint NOT NULL CHECK (part_size > 0),
    -- the S3 multipart upload id; NULL when the file fits one presigned PUT
    multipart_upload_id text,
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'failed')),
    -- why a failed upload failed: aborted | expired | checksum_mismatch | duplicate
    failure_reason      text,
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- the owner's live upload of some content, reused by a repeated POST /v1/uploads
CREATE INDEX upload_sessions_owner_sha256_pending ON upload.upload_sessions (owner_id, sha256)
    WHERE status = 'pending';
CREATE INDEX upload_sessions_expires_pending ON upload.upload_sessions (expires_at)
    WHERE status = 'pending';
