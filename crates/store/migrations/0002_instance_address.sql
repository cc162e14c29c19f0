-- Each instance's address on its tenant network. NULL until allocated; unique within a
-- tenant, so the store itself refuses to hand one address out twice.
ALTER TABLE instances ADD COLUMN address TEXT;
CREATE UNIQUE INDEX instances_tenant_address ON instances (tenant, address);
