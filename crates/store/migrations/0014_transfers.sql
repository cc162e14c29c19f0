-- Issue 15: host-to-host transfers. One row per ticket the hub issued: which hosts, what
-- object, until when the target accepts it, and how it ended. A row that is not final
-- is an open ticket (the monitor fails those past their expiry with no progress).
CREATE TABLE transfers (
    id TEXT PRIMARY KEY,
    source_host TEXT NOT NULL,
    target_host TEXT NOT NULL,
    object TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX transfers_open ON transfers (state) WHERE state IN ('expected', 'running');
