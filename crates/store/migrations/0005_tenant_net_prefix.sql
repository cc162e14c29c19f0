-- Tenant subnets bigger than a /24: the prefix length, the subnet spanning the block of
-- net ids that starts at net_id.
ALTER TABLE tenants ADD COLUMN net_prefix INTEGER NOT NULL DEFAULT 24;
