-- Snapshots of instance volumes, as their hosts report them (names, sizes) and as the
-- hub took them (time, by hand or by schedule). A deleted snapshot stays a short while
-- as a tombstone (deleted_at set) so a report made before the delete cannot revive it.
CREATE TABLE snapshots (
    instance_id      TEXT    NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    referenced_bytes INTEGER CHECK (referenced_bytes >= 0),
    exclusive_bytes  INTEGER CHECK (exclusive_bytes >= 0),
    scheduled        INTEGER NOT NULL CHECK (scheduled IN (0, 1)),
    deleted_at       INTEGER,
    PRIMARY KEY (instance_id, name)
);

-- An instance's snapshot schedule (absent: none).
CREATE TABLE snapshot_schedules (
    instance_id TEXT    NOT NULL PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    every_secs  INTEGER NOT NULL CHECK (every_secs > 0),
    keep        INTEGER NOT NULL CHECK (keep > 0)
);
