-- Each instance's block of host uids/gids for its sandbox's user namespace: the host id
-- of root inside (the block is 65536 ids wide, bases aligned to that from 2^20, see
-- hangar_types::idmap). Kept for the instance's life; unique among instances not yet
-- deleted, so the store itself refuses to hand a block out twice, and a deleted
-- instance's block is free again.
ALTER TABLE instances ADD COLUMN uid_base INTEGER;
-- Instances made before user namespaces get blocks now, in the order they were made.
UPDATE instances SET uid_base = 1048576 + 65536 * (
    SELECT COUNT(*) FROM instances AS earlier WHERE earlier.state != 'deleted' AND earlier.rowid < instances.rowid
) WHERE state != 'deleted';
CREATE UNIQUE INDEX instances_uid_base ON instances (uid_base) WHERE state != 'deleted';
