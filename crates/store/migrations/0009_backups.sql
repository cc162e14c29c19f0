-- Backups: targets, each tenant's settings, every recorded backup and its file index,
-- the progress of running backup operations, and purges scheduled by hard deletes.

-- `sealed_spec` is the target (with its S3 keys) encrypted by the hub; `location` is
-- what users see.
CREATE TABLE backup_targets (
    name        TEXT    NOT NULL PRIMARY KEY,
    location    TEXT    NOT NULL,
    sealed_spec TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- `sealed_password` is the tenant's repository password, encrypted by the hub; made
-- once, by whichever hub needs it first.
CREATE TABLE backup_settings (
    tenant          TEXT    NOT NULL PRIMARY KEY,
    target          TEXT,
    sealed_password TEXT,
    policy          TEXT    NOT NULL DEFAULT '{}',
    last_run_at     INTEGER
);

CREATE TABLE backups (
    id            TEXT    NOT NULL PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    instance      TEXT    NOT NULL,
    instance_id   TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    files         INTEGER NOT NULL,
    dirs          INTEGER NOT NULL,
    added_bytes   INTEGER NOT NULL,
    id_base       INTEGER
);
CREATE INDEX backups_instance ON backups (tenant, instance, created_at);
CREATE INDEX backups_instance_id ON backups (instance_id);

-- One row per entry of a backup; `parent` is the directory holding it ('' at the root)
-- so a directory listing is one index range, `name` its last part for `find`.
CREATE TABLE backup_files (
    backup_id TEXT    NOT NULL,
    path      TEXT    NOT NULL,
    parent    TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    mtime     INTEGER,
    kind      TEXT    NOT NULL,
    PRIMARY KEY (backup_id, path)
) WITHOUT ROWID;
CREATE INDEX backup_files_parent ON backup_files (backup_id, parent, name);
CREATE INDEX backup_files_name ON backup_files (name);

-- Progress of running backup, restore and check operations; the hub's job runner
-- writes it on every poll (which also shows it is alive).
CREATE TABLE backup_progress (
    operation_id     TEXT    NOT NULL PRIMARY KEY,
    files            INTEGER NOT NULL DEFAULT 0,
    bytes            INTEGER NOT NULL DEFAULT 0,
    total_bytes      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE backup_purges (
    instance_id TEXT    NOT NULL PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    instance    TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    due_at      INTEGER NOT NULL
);
