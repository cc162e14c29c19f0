-- Tenants whose instances must not reach each other (bridge port isolation).
ALTER TABLE tenants ADD COLUMN isolated INTEGER NOT NULL DEFAULT 0;
