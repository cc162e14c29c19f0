-- Pools of identical instances held at desired counts, pool membership and the manual
-- hold-off of instances, and the provider that made a host.

CREATE TABLE pools (
    tenant     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    spec       TEXT    NOT NULL,
    running    INTEGER NOT NULL CHECK (running >= 0),
    warm       INTEGER NOT NULL CHECK (warm >= 0),
    sleeping   INTEGER NOT NULL CHECK (sleeping >= 0),
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);

ALTER TABLE instances ADD COLUMN pool TEXT;
ALTER TABLE instances ADD COLUMN held_until INTEGER;
CREATE INDEX instances_pool ON instances (tenant, pool);

ALTER TABLE hosts ADD COLUMN provider TEXT;
