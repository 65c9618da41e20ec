-- One row per document ever seen. The filename is indexed whole, and split into words at
-- punctuation (quarterly-report.pdf → quarterly, report, pdf) both exact and stemmed. 'removed' rows are tombstones: they keep the version of
-- the delete so a stale document.stored (redelivery, redrive) never resurrects the document.
CREATE TABLE search.index_entries (
    document_id  uuid PRIMARY KEY,
    owner_id     text NOT NULL,
    filename     text,
    content_type text,
    size_bytes   bigint,
    sha256       text,
    version      integer NOT NULL,
    status       text NOT NULL CHECK (status IN ('indexed', 'removed')),
    body         text,
    tsv          tsvector GENERATED ALWAYS AS (
        setweight(
            to_tsvector('simple', coalesce(filename, ''))
            || to_tsvector('simple', regexp_replace(coalesce(filename, ''), '[[:punct:]]+', ' ', 'g'))
            || to_tsvector('english', regexp_replace(coalesce(filename, ''), '[[:punct:]]+', ' ', 'g')),
            'A')
        || setweight(to_tsvector('english', coalesce(body, '')), 'B')
    ) STORED,
    indexed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX index_entries_tsv ON search.index_entries USING gin (tsv);
CREATE INDEX index_entries_owner ON search.index_entries (owner_id);

-- The EventConsumer's inbox: an event id recorded here has been applied (at most once).
CREATE TABLE search.processed_events (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
