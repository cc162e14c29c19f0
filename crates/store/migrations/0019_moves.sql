-- Issue 15: moves of instances between hosts. One row per move, its phase written before
-- the hub acts on it, so a restarted hub continues or rolls back from it. At most one
-- open (not final) move per instance.
CREATE TABLE moves (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    source_host TEXT NOT NULL,
    target_host TEXT NOT NULL,
    previous_state TEXT NOT NULL,
    phase TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    downtime_ms INTEGER,
    keep_source_until INTEGER,
    error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE UNIQUE INDEX moves_open ON moves (instance_id) WHERE phase NOT IN ('done', 'rolled_back');
