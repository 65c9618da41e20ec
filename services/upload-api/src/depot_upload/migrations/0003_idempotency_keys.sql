-- Idempotency-Key records: the first successful response per (owner, key), kept for replay.
CREATE TABLE upload.idempotency_keys (
    owner_id    text NOT NULL,
    key         text NOT NULL,
    sha256      text NOT NULL,
    document    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (owner_id, key)
);
CREATE INDEX idempotency_keys_created ON upload.idempotency_keys (created_at);
