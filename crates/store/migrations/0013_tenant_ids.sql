-- Issue 13: events and operations belong to a tenant by id, not by name, so a new
-- tenant with an old name sees nothing of the old one. Rows made before this migration
-- get the id of the tenant that has their name now (a tenant destroyed and made again
-- before the upgrade cannot be told apart from its namesake).
ALTER TABLE events ADD COLUMN tenant_id TEXT;
UPDATE events SET tenant_id = (SELECT id FROM tenants WHERE tenants.name = events.tenant) WHERE tenant IS NOT NULL;
CREATE INDEX events_tenant_id ON events (tenant_id, id);

ALTER TABLE operations ADD COLUMN tenant_id TEXT;
UPDATE operations SET tenant_id = (SELECT id FROM tenants WHERE tenants.name = operations.tenant) WHERE tenant IS NOT NULL;
