-- Issue 13: `host rotate-cert`, read-only tokens, tracked `tenant destroy --force`.

-- The certificate fingerprint an admin asked to have replaced (`host rotate-cert`): the
-- host's document asks its agent to renew while its current certificate is still this
-- one; once the renewed one is promoted the request is done by itself.
ALTER TABLE hosts ADD COLUMN cert_rotate_from TEXT;

-- A token's role: 'admin' or 'tenant' (by its tenant column, as before), or 'viewer'
-- (read-only, admin-wide or one tenant's). NULL: made before this migration.
ALTER TABLE tokens ADD COLUMN role TEXT;

-- A `tenant destroy --force` under way: the id of its operation. Set before the first
-- step; a hub that restarts resumes every tenant that has one.
ALTER TABLE tenants ADD COLUMN destroy_operation TEXT;
-- What a multi-step operation has done so far (e.g. `3/5 instances, 1/1 pools removed`).
ALTER TABLE operations ADD COLUMN progress TEXT;
