-- Images an admin registered: instances name them instead of host paths.
CREATE TABLE images (
    name       TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN ('dir', 'tar')),
    path       TEXT    NOT NULL,
    sha256     TEXT,
    size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at INTEGER NOT NULL
);
