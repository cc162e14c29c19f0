-- Issue 15: how a move carries the volume (`transfer`, or `backup` through the tenant's
-- backup target).
ALTER TABLE moves ADD COLUMN via TEXT NOT NULL DEFAULT 'transfer';

-- Issue 15: evacuations of hosts (`hangar host evacuate`). One row per evacuation, keyed
-- by the operation that tracks it, and one row per instance that was on the host when it
-- began: which move carries it, to where, and how it ended. The moves themselves are in
-- `moves`; an item's move is recorded once started, and a hub that restarts before that
-- finds it again by the instance's newest move.
CREATE TABLE evacuations (
    operation_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    parallel INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX evacuations_host ON evacuations (host, created_at);
CREATE TABLE evacuation_items (
    operation_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT NOT NULL,
    target_host TEXT,
    move_id TEXT,
    error TEXT,
    PRIMARY KEY (operation_id, instance_id)
);
