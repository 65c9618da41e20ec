CREATE TABLE upload.documents (
    id           uuid PRIMARY KEY,
    owner_id     text NOT NULL,
    filename     text NOT NULL,
    content_type text NOT NULL,
    object_key   text NOT NULL UNIQUE,
    size_bytes   bigint,
    sha256       text,
    status       text NOT NULL CHECK (status IN ('pending', 'stored', 'failed', 'deleted')),
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- newest-first keyset pages per owner
CREATE INDEX documents_owner_created ON upload.documents (owner_id, created_at DESC, id DESC);
-- one live copy of some content per owner: the arbiter of concurrent duplicate uploads
CREATE UNIQUE INDEX documents_owner_sha256_stored ON upload.documents (owner_id, sha256)
    WHERE status = 'stored';
CREATE INDEX documents_pending ON upload.documents (created_at) WHERE status = 'pending';

CREATE TABLE upload.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    topic        text NOT NULL,
    key          text NOT NULL,
    value        jsonb NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON upload.outbox (id) WHERE published_at IS NULL;
