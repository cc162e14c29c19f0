-- Public keys a tenant registered for the SSH gateway. `public_key` is the key's type
-- and base64 blob as OpenSSH writes them (no comment); a key is registered once per
-- tenant, under one name.
CREATE TABLE ssh_keys (
    tenant      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    algorithm   TEXT    NOT NULL,
    public_key  TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    comment     TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name),
    UNIQUE (tenant, fingerprint)
);
