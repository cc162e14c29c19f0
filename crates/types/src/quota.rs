//! The one quota-fit check. A change (one instance moving to a state, or a pool at new
//! counts) adds a [`Demand`] to what the tenant's other instances use ([`Usage`]); the
//! change fits if no quota the demand adds to would be passed. Pure: the hub gathers the
//! usage under the tenant's lock and turns an [`Excess`] into its error.
//!
//! Quotas are checked in one order, counts first (instances, running), then resources
//! (vCPU, memory, disk); the first one passed is the one named.

use crate::api::{Instance, InstanceSpec, PoolCounts, Quotas, Usage};
use crate::state::InstanceState;

/// One of a tenant's quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    MaxInstances,
    MaxRunning,
    MaxVcpus,
    MaxMemMib,
    MaxDiskGib,
}

impl Quota {
    /// The order quotas are checked in.
    pub const ALL: [Quota; 5] = [Quota::MaxInstances, Quota::MaxRunning, Quota::MaxVcpus, Quota::MaxMemMib, Quota::MaxDiskGib];

    /// The field name, as in [`Quotas`] and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::MaxInstances => "max_instances",
            Quota::MaxRunning => "max_running",
            Quota::MaxVcpus => "max_vcpus",
            Quota::MaxMemMib => "max_mem_mib",
            Quota::MaxDiskGib => "max_disk_gib",
        }
    }

    /// The limit in the unit usage is counted in (disk in MiB).
    fn limit(self, q: &Quotas) -> u64 {
        match self {
            Quota::MaxInstances => q.max_instances as u64,
            Quota::MaxRunning => q.max_running as u64,
            Quota::MaxVcpus => q.max_vcpus as u64,
            Quota::MaxMemMib => q.max_mem_mib,
            Quota::MaxDiskGib => q.max_disk_gib * 1024,
        }
    }
}

/// What a change adds to a tenant's use, in the units of [`Usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    pub instances: u64,
    pub running: u64,
    pub vcpus: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl Demand {
    /// One instance with `spec` in state `to`: it counts as an instance with its disk
    /// unless deleted, holds vCPU and memory only in states that hold resources, and
    /// counts as running only in states that do.
    pub fn instance(spec: &InstanceSpec, to: InstanceState) -> Demand {
        let exists = to != InstanceState::Deleted;
        let holds = to.holds_resources();
        Demand {
            instances: exists as u64,
            running: to.counts_as_running() as u64,
            vcpus: if holds { spec.vcpus as u64 } else { 0 },
            mem_mib: if holds { spec.mem_mib } else { 0 },
            disk_mib: if exists { spec.disk_mib } else { 0 },
        }
    }

    /// A pool of `spec` members at `counts`: running and warm members hold vCPU and
    /// memory, every member counts and has its disk.
    pub fn pool(spec: &InstanceSpec, counts: PoolCounts) -> Demand {
        let holding = (counts.running + counts.warm) as u64;
        Demand {
            instances: counts.total() as u64,
            running: counts.running as u64,
            vcpus: holding * spec.vcpus as u64,
            mem_mib: holding * spec.mem_mib,
            disk_mib: counts.total() as u64 * spec.disk_mib,
        }
    }

    /// A new snapshot: it shares every block with its volume when taken, so it adds only
    /// its metadata, counted as 1 MiB; it grows (and counts, see [`add_snapshots`]) as
    /// the volume moves away from it. A tenant already at its disk quota cannot take one.
    pub fn snapshot() -> Demand {
        Demand { disk_mib: 1, ..Default::default() }
    }

    fn of(&self, quota: Quota) -> u64 {
        match quota {
            Quota::MaxInstances => self.instances,
            Quota::MaxRunning => self.running,
            Quota::MaxVcpus => self.vcpus,
            Quota::MaxMemMib => self.mem_mib,
            Quota::MaxDiskGib => self.disk_mib,
        }
    }
}

/// What instances use of a tenant's quotas.
pub fn usage<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> Usage {
    let mut u = Usage::default();
    for i in instances {
        u.instances += 1;
        u.disk_mib += i.spec.disk_mib;
        if i.state.holds_resources() {
            u.vcpus += i.spec.vcpus;
            u.mem_mib += i.spec.mem_mib;
        }
        if i.state.counts_as_running() {
            u.running += 1;
        }
    }
    u
}

/// Usage with the tenant's snapshots: what they hold alone (their exclusive bytes, the
/// space deleting them would free) counts as disk, rounded up to whole MiB.
pub fn add_snapshots(mut u: Usage, exclusive_bytes: u64) -> Usage {
    u.disk_mib += exclusive_bytes.div_ceil(1024 * 1024);
    u
}

fn used(u: &Usage, quota: Quota) -> u64 {
    match quota {
        Quota::MaxInstances => u.instances as u64,
        Quota::MaxRunning => u.running as u64,
        Quota::MaxVcpus => u.vcpus as u64,
        Quota::MaxMemMib => u.mem_mib,
        Quota::MaxDiskGib => u.disk_mib,
    }
}

/// A quota a change would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Excess {
    pub quota: Quota,
    /// The quota, in usage units (disk in MiB).
    pub limit: u64,
    /// What the tenant would use with the change, in the same units.
    pub need: u64,
}

/// Whether `demand` fits on top of `usage` under `quotas`. Only quotas the demand adds
/// to are checked: a change never fails for use it does not add.
pub fn check(quotas: &Quotas, usage: &Usage, demand: &Demand) -> Result<(), Excess> {
    for quota in Quota::ALL {
        let add = demand.of(quota);
        if add == 0 {
            continue;
        }
        let need = used(usage, quota) + add;
        let limit = quota.limit(quotas);
        if need > limit {
            return Err(Excess { quota, limit, need });
        }
    }
    Ok(())
}

impl Excess {
    /// The message for one instance's change: "tenant 't' quota max_running is 1; this
    /// would make it 2" (disk in GiB).
    pub fn instance_message(&self, tenant: &str) -> String {
        let (limit, would) = match self.quota {
            Quota::MaxDiskGib => ((self.limit / 1024).to_string(), format!("{:.2}", self.need as f64 / 1024.0)),
            _ => (self.limit.to_string(), self.need.to_string()),
        };
        format!("tenant '{tenant}' quota {} is {limit}; this would make it {would}", self.quota.as_str())
    }

    /// The message for a snapshot that does not fit (disk in MiB, snapshots included).
    pub fn snapshot_message(&self, tenant: &str) -> String {
        format!(
            "tenant '{tenant}' quota {} is {} MiB and its volumes and snapshots already use {} MiB: delete snapshots or raise the quota",
            self.quota.as_str(),
            self.limit,
            self.need.saturating_sub(1)
        )
    }

    /// The message for a pool at new counts (memory and disk in MiB).
    pub fn pool_message(&self, tenant: &str, pool: &str, counts: PoolCounts) -> String {
        let unit = match self.quota {
            Quota::MaxMemMib => " MiB",
            Quota::MaxDiskGib => " MiB of disk",
            _ => "",
        };
        format!(
            "tenant '{tenant}' quota {} is {}{unit}; pool {pool} at {} needs {}{unit} with the tenant's other instances: lower the counts or raise the quota",
            self.quota.as_str(),
            self.limit,
            counts_text(counts),
            self.need
        )
    }
}

/// Pool counts as the hub's messages write them.
pub fn counts_text(c: PoolCounts) -> String {
    format!("running {}, warm {}, sleeping {}", c.running, c.warm, c.sleeping)
}

/// An instance of `spec` in `state`, for tests of the pure functions over instances.
#[cfg(test)]
pub(crate) fn instance(spec: InstanceSpec, state: InstanceState) -> Instance {
    Instance {
        id: crate::InstanceId::new(),
        tenant: "t".parse().unwrap(),
        name: "i".parse().unwrap(),
        spec,
        host: None,
        state,
        desired: state.desired(),
        observed: crate::ObservedState::Unknown,
        generation: crate::Generation::ZERO,
        error: None,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        updated_at: time::OffsetDateTime::UNIX_EPOCH,
        address: None,
        pool: None,
        held_until: None,
        ids: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageRef;

    fn spec(vcpus: u32, mem_mib: u64, disk_mib: u64) -> InstanceSpec {
        InstanceSpec { image: ImageRef::Host, vcpus, mem_mib, disk_mib, command: vec![], env: Default::default(), secrets: vec![] }
    }

    const Q: Quotas = Quotas { max_vcpus: 4, max_mem_mib: 1024, max_running: 2, max_instances: 3, max_disk_gib: 1 };

    fn usage_of(instances: u32, running: u32, vcpus: u32, mem_mib: u64, disk_mib: u64) -> Usage {
        Usage { vcpus, mem_mib, running, instances, disk_mib }
    }

    #[test]
    fn instance_demand_follows_the_state() {
        let s = spec(2, 256, 100);
        let table = [
            (InstanceState::Created, Demand { instances: 1, running: 0, vcpus: 0, mem_mib: 0, disk_mib: 100 }),
            (InstanceState::Starting, Demand { instances: 1, running: 1, vcpus: 2, mem_mib: 256, disk_mib: 100 }),
            (InstanceState::Running, Demand { instances: 1, running: 1, vcpus: 2, mem_mib: 256, disk_mib: 100 }),
            (InstanceState::Warm, Demand { instances: 1, running: 0, vcpus: 2, mem_mib: 256, disk_mib: 100 }),
            (InstanceState::Sleeping, Demand { instances: 1, running: 0, vcpus: 0, mem_mib: 0, disk_mib: 100 }),
            (InstanceState::Stopped, Demand { instances: 1, running: 0, vcpus: 0, mem_mib: 0, disk_mib: 100 }),
            (InstanceState::Deleted, Demand::default()),
        ];
        for (to, want) in table {
            assert_eq!(Demand::instance(&s, to), want, "{to}");
        }
    }

    #[test]
    fn pool_demand_counts_members_by_bucket() {
        let d = Demand::pool(&spec(2, 64, 10), PoolCounts { running: 3, warm: 2, sleeping: 4 });
        assert_eq!(d, Demand { instances: 9, running: 3, vcpus: 10, mem_mib: 320, disk_mib: 90 });
    }

    #[test]
    fn usage_counts_resources_only_where_held() {
        let mk = |state| instance(spec(1, 100, 10), state);
        let list = [mk(InstanceState::Running), mk(InstanceState::Warm), mk(InstanceState::Sleeping), mk(InstanceState::Stopped)];
        assert_eq!(usage(&list), usage_of(4, 1, 2, 200, 40));
    }

    /// Every quota, just at its limit (fits) and one past it (named), alone.
    #[test]
    fn each_quota_fits_at_its_limit_and_fails_one_past_it() {
        let empty = Usage::default();
        let table: [(Quota, Demand, Demand); 5] = [
            (Quota::MaxInstances, Demand { instances: 3, ..Default::default() }, Demand { instances: 4, ..Default::default() }),
            (Quota::MaxRunning, Demand { running: 2, ..Default::default() }, Demand { running: 3, ..Default::default() }),
            (Quota::MaxVcpus, Demand { vcpus: 4, ..Default::default() }, Demand { vcpus: 5, ..Default::default() }),
            (Quota::MaxMemMib, Demand { mem_mib: 1024, ..Default::default() }, Demand { mem_mib: 1025, ..Default::default() }),
            (Quota::MaxDiskGib, Demand { disk_mib: 1024, ..Default::default() }, Demand { disk_mib: 1025, ..Default::default() }),
        ];
        for (quota, fits, over) in table {
            assert_eq!(check(&Q, &empty, &fits), Ok(()), "{quota:?}");
            let e = check(&Q, &empty, &over).unwrap_err();
            assert_eq!(e.quota, quota);
            assert_eq!(e.need, quota.limit(&Q) + 1);
        }
    }

    #[test]
    fn usage_and_demand_add_up() {
        let u = usage_of(2, 1, 3, 1000, 1000);
        assert_eq!(check(&Q, &u, &Demand { instances: 1, ..Default::default() }), Ok(()));
        assert_eq!(check(&Q, &u, &Demand { instances: 2, ..Default::default() }).unwrap_err(), Excess { quota: Quota::MaxInstances, limit: 3, need: 4 });
        assert_eq!(check(&Q, &u, &Demand { mem_mib: 25, ..Default::default() }).unwrap_err(), Excess { quota: Quota::MaxMemMib, limit: 1024, need: 1025 });
    }

    #[test]
    fn use_the_change_does_not_add_to_is_not_checked() {
        // Already over memory (quotas are fixed, but state can move by observation):
        // a change that adds no memory still fits.
        let u = usage_of(0, 0, 0, 5000, 0);
        assert_eq!(check(&Q, &u, &Demand { instances: 1, disk_mib: 10, ..Default::default() }), Ok(()));
        assert_eq!(check(&Q, &u, &Demand::default()), Ok(()));
    }

    #[test]
    fn counts_are_named_before_resources() {
        let all_over = Demand { instances: 9, running: 9, vcpus: 9, mem_mib: 9999, disk_mib: 9999 };
        let mut seen = vec![];
        let mut q = Q;
        // Lift each quota once it is named: the next one in order is named.
        for _ in 0..5 {
            let e = check(&q, &Usage::default(), &all_over).unwrap_err();
            seen.push(e.quota);
            match e.quota {
                Quota::MaxInstances => q.max_instances = 100,
                Quota::MaxRunning => q.max_running = 100,
                Quota::MaxVcpus => q.max_vcpus = 100,
                Quota::MaxMemMib => q.max_mem_mib = 100_000,
                Quota::MaxDiskGib => q.max_disk_gib = 100,
            }
        }
        assert_eq!(seen, Quota::ALL.to_vec());
        assert_eq!(check(&q, &Usage::default(), &all_over), Ok(()));
    }

    #[test]
    fn instance_messages_are_the_hubs() {
        let table = [
            (Excess { quota: Quota::MaxInstances, limit: 2, need: 3 }, "tenant 'acme' quota max_instances is 2; this would make it 3"),
            (Excess { quota: Quota::MaxRunning, limit: 1, need: 2 }, "tenant 'acme' quota max_running is 1; this would make it 2"),
            (Excess { quota: Quota::MaxVcpus, limit: 4, need: 5 }, "tenant 'acme' quota max_vcpus is 4; this would make it 5"),
            (Excess { quota: Quota::MaxMemMib, limit: 512, need: 1024 }, "tenant 'acme' quota max_mem_mib is 512; this would make it 1024"),
            (Excess { quota: Quota::MaxDiskGib, limit: 2048, need: 2100 }, "tenant 'acme' quota max_disk_gib is 2; this would make it 2.05"),
        ];
        for (e, want) in table {
            assert_eq!(e.instance_message("acme"), want);
        }
    }

    #[test]
    fn snapshots_count_as_disk() {
        let u = usage_of(1, 0, 0, 0, 768);
        for (exclusive, disk_mib) in [(0, 768), (1, 769), (1 << 20, 769), ((1 << 20) + 1, 770), (300 << 20, 1068)] {
            assert_eq!(add_snapshots(u, exclusive).disk_mib, disk_mib, "{exclusive}");
        }
        // A snapshot fits while the tenant is under its disk quota, and not at it.
        for (exclusive, fits) in [(0, true), (255 << 20, true), (256 << 20, false), (300 << 20, false)] {
            let r = check(&Q, &add_snapshots(u, exclusive), &Demand::snapshot());
            assert_eq!(r.is_ok(), fits, "{exclusive}: {r:?}");
        }
        // Instances feel the snapshots too.
        let e = check(&Q, &add_snapshots(u, 300 << 20), &Demand::instance(&spec(1, 64, 64), InstanceState::Created)).unwrap_err();
        assert_eq!((e.quota, e.need), (Quota::MaxDiskGib, 1132));
        let e = check(&Q, &add_snapshots(u, 300 << 20), &Demand::snapshot()).unwrap_err();
        assert_eq!(e.snapshot_message("acme"), "tenant 'acme' quota max_disk_gib is 1024 MiB and its volumes and snapshots already use 1068 MiB: delete snapshots or raise the quota");
    }

    #[test]
    fn pool_messages_are_the_hubs() {
        let c = PoolCounts { running: 9, warm: 0, sleeping: 0 };
        let tail = "with the tenant's other instances: lower the counts or raise the quota";
        let table = [
            (Excess { quota: Quota::MaxRunning, limit: 8, need: 9 }, format!("tenant 'acme' quota max_running is 8; pool workers at running 9, warm 0, sleeping 0 needs 9 {tail}")),
            (Excess { quota: Quota::MaxMemMib, limit: 4096, need: 5000 }, format!("tenant 'acme' quota max_mem_mib is 4096 MiB; pool workers at running 9, warm 0, sleeping 0 needs 5000 MiB {tail}")),
            (
                Excess { quota: Quota::MaxDiskGib, limit: 10240, need: 20000 },
                format!("tenant 'acme' quota max_disk_gib is 10240 MiB of disk; pool workers at running 9, warm 0, sleeping 0 needs 20000 MiB of disk {tail}"),
            ),
        ];
        for (e, want) in table {
            assert_eq!(e.pool_message("acme", "workers", c), want);
        }
    }
}
