//! Host uid/gid ranges for instances' user namespaces: one per instance, across every
//! tenant and host, picked at create (the lowest free range of
//! [`HubConfig::uid_ranges`](crate::HubConfig)) and kept for the instance's life, so its
//! volume stays owned by its ids through stop, sleep, restarts and moves. The store's
//! unique index on the base among live instances is the guarantee; a deleted instance's
//! range is free again.
//!
//! Ranges are global while the tenant lock is not: two creates in different tenants (or
//! on two hubs) may pick the same range; the store refuses the second with a conflict
//! and it picks again.

use crate::error::{HubError, HubResult};
use crate::Hub;
use hangar_store::{InstanceFilter, StoreError};
use hangar_types::api::Instance;
use hangar_types::generation::Generation;
use hangar_types::idmap::IdRange;
use hangar_types::{ErrorCode, HostId, InstanceState, Name};

/// Picks after a lost race before giving up with the store's conflict.
const ATTEMPTS: usize = 5;

impl Hub {
    /// The lowest range no live instance holds; no_capacity naming the pool when every
    /// range is taken.
    pub(crate) async fn free_uid_range(&self) -> HubResult<IdRange> {
        let taken = self
            .store
            .list_instances(&InstanceFilter::default())
            .await?
            .into_iter()
            .filter(|i| i.state != InstanceState::Deleted)
            .filter_map(|i| i.ids.map(|r| r.base))
            .collect();
        let pool = &self.config.uid_ranges;
        pool.first_free(&taken).ok_or_else(|| {
            HubError::new(
                ErrorCode::NoCapacity,
                format!(
                    "no free uid range for a new instance's user namespace: all {} ranges of host ids {} are held by instances; delete instances first",
                    pool.ranges(),
                    pool.span()
                ),
            )
        })
    }

    /// Inserts a new instance with a free uid range (and its host's generation bump, as
    /// [`hangar_store::Store::insert_instance`]), picking again if another create took
    /// the range meanwhile. Nothing is written when no range is free.
    pub(crate) async fn insert_with_uid_range(&self, inst: &mut Instance, host: &Name) -> HubResult<Option<(HostId, Generation)>> {
        let mut attempt = 0;
        loop {
            inst.ids = Some(self.free_uid_range().await?);
            match self.store.insert_instance(inst, Some(host)).await {
                Err(StoreError::Conflict(what)) if attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(%what, attempt, "uid range taken meanwhile; picking again");
                }
                other => return Ok(other?),
            }
        }
    }
}
