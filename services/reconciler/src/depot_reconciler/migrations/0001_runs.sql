-- One row per reconcile run: the plan (findings) is persisted with it, apply works from it.
CREATE TABLE reconcile.runs (
    id          uuid PRIMARY KEY,
    status      text NOT NULL CHECK (status IN ('running', 'planned', 'applying', 'applied', 'failed')),
    apply       boolean NOT NULL DEFAULT false,
    checks      text[] NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    -- {"findings": {class: n}, "scanned": {"objects": n, "documents": n}, "applied": {...}}
    counts      jsonb NOT NULL DEFAULT '{}',
    error       text
);
CREATE INDEX runs_started ON reconcile.runs (started_at DESC);

-- The plan: what the scan saw. ``details`` keeps the state it saw so apply can re-check it.
CREATE TABLE reconcile.findings (
    id         bigserial PRIMARY KEY,
    run_id     uuid NOT NULL REFERENCES reconcile.runs (id) ON DELETE CASCADE,
    class      text NOT NULL CHECK (class IN ('orphan_object', 'missing_blob', 'stale_upload', 'unindexed',
                                              'ghost_index_entry', 'stuck_outbox')),
    -- a document id, an object key (orphan_object) or an outbox event id (stuck_outbox)
    subject    text NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}',
    -- filled by apply: the compensation type emitted (or none), when, and what happened
    action     text,
    applied_at timestamptz,
    outcome    text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (run_id, class, subject)
);
CREATE INDEX findings_run_id ON reconcile.findings (run_id, id);

-- The reconciler's own transactional outbox (depot_common.outbox), same shape as upload.outbox.
CREATE TABLE reconcile.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    topic        text NOT NULL,
    key          text NOT NULL,
    value        jsonb NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON reconcile.outbox (id) WHERE published_at IS NULL;

-- Audit trail of every action: what, why, which run, when. Kept when runs are pruned.
CREATE TABLE reconcile.audit (
    id         bigserial PRIMARY KEY,
    run_id     uuid NOT NULL,
    finding_id bigint,
    class      text NOT NULL,
    subject    text NOT NULL,
    action     text NOT NULL,
    reason     text NOT NULL,
    event_id   uuid,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_run ON reconcile.audit (run_id, id);
