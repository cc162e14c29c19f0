-- Secrets of a tenant, sealed by the hub (AEAD under a key file in its data dir): the
-- store never holds a value in the clear. `version` comes from the generation counter,
-- so a changed value always has a higher one.
CREATE TABLE secrets (
    tenant     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    sealed     BLOB    NOT NULL,
    size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Tokens that open one port of one instance through the hub's HTTP proxy; only the
-- SHA-256 of the secret is kept.
CREATE TABLE proxy_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    hash       TEXT    NOT NULL UNIQUE,
    tenant     TEXT    NOT NULL,
    instance   TEXT    NOT NULL,
    -- The instance it was issued for: a later instance of the same name is not it.
    instance_id TEXT   NOT NULL,
    port       INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX proxy_tokens_instance ON proxy_tokens (tenant, instance);
