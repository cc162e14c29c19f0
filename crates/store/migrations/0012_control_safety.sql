-- Issue 13: renewable host certificates, expiring join and API tokens, and a counter
-- every hub checks its token cache against.

-- A renewed certificate the host has not used yet: the old one keeps working until the
-- agent presents the new one (a crash between the hub's write and the agent's cannot
-- lock a host out).
ALTER TABLE hosts ADD COLUMN cert_fingerprint_next TEXT;
CREATE UNIQUE INDEX hosts_cert_fingerprint_next ON hosts (cert_fingerprint_next);
-- NULL: never expires (join tokens made before this migration).
ALTER TABLE hosts ADD COLUMN join_token_expires_at INTEGER;

-- NULL: never expires (tokens made before this migration, or without --ttl).
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;

-- Bumped in the transaction that removes any token: a hub's cached verification is good
-- only while this has not moved, so a revocation on one hub reaches every hub at once.
INSERT OR IGNORE INTO meta (key, value) VALUES ('token_epoch', 0);
