-- The compensation worker's inbox: one row per compensation event applied (docs/events.md).
CREATE TABLE upload.processed_events (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
-- Orphan objects moved to quarantine/<key> instead of being deleted on sight (docs/reconciler.md);
-- the purge deletes the copy once purge_after has passed and stamps purged_at (audit).
CREATE TABLE upload.quarantine (
    quarantined_key text PRIMARY KEY,
    object_key      text NOT NULL,
    size_bytes      bigint NOT NULL,
    run_id          uuid,
    quarantined_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    purge_after     timestamptz NOT NULL,
    purged_at       timestamptz
);
