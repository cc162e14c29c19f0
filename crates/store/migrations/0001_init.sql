-- The hub's schema, version 1.
--
-- Conventions: ids are hyphenated UUID text; timestamps are INTEGER unix nanoseconds
-- (UTC), which sort naturally and round-trip `OffsetDateTime` exactly; composite values
-- (quotas, capacity, spec, drivers) are JSON text, since nothing queries inside them.
--
-- There are no foreign keys on purpose: operations and events are history and must
-- outlive the objects they name, and the hub checks references (e.g. a tenant with
-- instances cannot be deleted) where it can answer with a useful error.

CREATE TABLE tenants (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    quotas     TEXT    NOT NULL,
    net_id     INTEGER NOT NULL UNIQUE CHECK (net_id > 0),
    created_at INTEGER NOT NULL
);

CREATE TABLE hosts (
    id                 TEXT    NOT NULL PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    state              TEXT    NOT NULL,
    capacity           TEXT    NOT NULL,
    endpoint           TEXT,
    drivers            TEXT    NOT NULL,
    agent_version      TEXT,
    last_heartbeat     INTEGER,
    -- UNIQUE (NULLs are distinct in SQLite): a token or certificate names one host.
    join_token_hash    TEXT    UNIQUE,
    cert_fingerprint   TEXT    UNIQUE,
    desired_generation INTEGER NOT NULL,
    created_at         INTEGER NOT NULL
);

CREATE TABLE instances (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    spec       TEXT    NOT NULL,
    host       TEXT,
    state      TEXT    NOT NULL,
    desired    TEXT    NOT NULL,
    observed   TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    error      TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant, name)
);
CREATE INDEX instances_host ON instances (host, tenant, name);

CREATE TABLE operations (
    id           TEXT    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL,
    tenant       TEXT,
    target       TEXT    NOT NULL,
    instance_id  TEXT,
    target_state TEXT,
    status       TEXT    NOT NULL,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX operations_status ON operations (status, created_at);

-- AUTOINCREMENT: ids are never reused, so an event id is a stable cursor.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    tenant  TEXT,
    object  TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    result  TEXT    NOT NULL,
    message TEXT
);
CREATE INDEX events_tenant ON events (tenant, id);

CREATE TABLE tokens (
    id          TEXT    NOT NULL PRIMARY KEY,
    hash        TEXT    NOT NULL UNIQUE,
    tenant      TEXT,
    description TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX tokens_tenant ON tokens (tenant);

-- Counters that must survive restarts; `generation` backs `Store::next_generation`.
CREATE TABLE meta (
    key   TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('generation', 0);
