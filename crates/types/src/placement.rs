//! Placement: which host a new instance goes to. Pure, like [`crate::pool::plan`]: the
//! hub lists hosts and their instances, [`choose`] decides.
//!
//! Only a ready host with an endpoint is ever chosen (never a draining, stale, stopped
//! or missing one). It must fit the instance within its capacity times the overcommit
//! factors; among those that fit, the lowest score wins: the host's memory share with
//! the instance, plus 0.01 per instance it holds, so hosts of equal capacity (made on
//! one machine) spread by count, also for instances that hold no memory.

use crate::api::{Capacity, HostState, Instance, InstanceSpec};
use crate::error::ErrorCode;
use crate::names::Name;

/// How far a host's promises may exceed its capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Overcommit {
    pub cpu: f64,
    pub mem: f64,
    pub disk: f64,
}

/// What a host's instances take: vCPU and memory of those that hold resources, disk
/// and count of all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub vcpus: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
    pub instances: u64,
}

impl Load {
    pub fn of<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> Load {
        let mut l = Load::default();
        for i in instances {
            l.instances += 1;
            l.disk_mib += i.spec.disk_mib;
            if i.state.holds_resources() {
                l.vcpus += i.spec.vcpus as u64;
                l.mem_mib += i.spec.mem_mib;
            }
        }
        l
    }
}

/// A host as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: Name,
    pub state: HostState,
    /// Whether it reported an endpoint (an agent that never reported cannot run anything).
    pub reachable: bool,
    pub capacity: Capacity,
    pub load: Load,
}

/// Why no host was chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The pinned host does not exist.
    NoSuchHost(Name),
    /// The pinned host exists but takes nothing new.
    NotReady(Name, HostState),
    /// No candidate has room.
    NoRoom { vcpus: u32, mem_mib: u64, disk_mib: u64 },
}

impl Refusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::NoSuchHost(_) => ErrorCode::InvalidArgument,
            Refusal::NotReady(..) | Refusal::NoRoom { .. } => ErrorCode::NoCapacity,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoSuchHost(h) => write!(f, "host: no host named '{h}': see `hangar host list`"),
            Refusal::NotReady(h, s) => write!(f, "host '{h}' is {}: only a ready host takes new instances", s.as_str()),
            Refusal::NoRoom { vcpus, mem_mib, disk_mib } => {
                write!(f, "no ready host has room for {vcpus} vCPU, {mem_mib} MiB memory, {disk_mib} MiB disk: add a host or free capacity")
            }
        }
    }
}

/// The score of placing `spec` on `host` (lower is better), or None if it may not go
/// there: not ready, not reachable, or no room.
pub fn score(host: &Candidate, spec: &InstanceSpec, oc: Overcommit) -> Option<f64> {
    if host.state != HostState::Ready || !host.reachable {
        return None;
    }
    let (c, l) = (&host.capacity, &host.load);
    let fits = (l.vcpus + spec.vcpus as u64) as f64 <= c.vcpus as f64 * oc.cpu
        && (l.mem_mib + spec.mem_mib) as f64 <= c.mem_mib as f64 * oc.mem
        && (l.disk_mib + spec.disk_mib) as f64 <= c.disk_mib as f64 * oc.disk;
    if !fits {
        return None;
    }
    Some((l.mem_mib + spec.mem_mib) as f64 / c.mem_mib.max(1) as f64 + l.instances as f64 * 0.01)
}

/// The index in `hosts` of the host `spec` goes to: the pinned one if `pin` names one
/// (it must be ready and fit), else the lowest score; the first of equals wins.
pub fn choose(hosts: &[Candidate], spec: &InstanceSpec, pin: Option<&Name>, oc: Overcommit) -> Result<usize, Refusal> {
    if let Some(want) = pin {
        match hosts.iter().find(|h| &h.name == want) {
            None => return Err(Refusal::NoSuchHost(want.clone())),
            Some(h) if h.state != HostState::Ready => return Err(Refusal::NotReady(want.clone(), h.state)),
            Some(_) => {}
        }
    }
    let mut best: Option<(f64, usize)> = None;
    for (i, h) in hosts.iter().enumerate() {
        if pin.is_some_and(|p| p != &h.name) {
            continue;
        }
        let Some(s) = score(h, spec, oc) else { continue };
        if best.is_none_or(|(b, _)| s < b) {
            best = Some((s, i));
        }
    }
    best.map(|(_, i)| i).ok_or(Refusal::NoRoom { vcpus: spec.vcpus, mem_mib: spec.mem_mib, disk_mib: spec.disk_mib })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageRef;

    const OC: Overcommit = Overcommit { cpu: 1.0, mem: 1.0, disk: 1.0 };

    fn spec(vcpus: u32, mem_mib: u64, disk_mib: u64) -> InstanceSpec {
        InstanceSpec { image: ImageRef::Host, vcpus, mem_mib, disk_mib, command: vec![], env: Default::default(), secrets: vec![] }
    }

    fn host(name: &str, state: HostState, load: Load) -> Candidate {
        Candidate { name: name.parse().unwrap(), state, reachable: true, capacity: Capacity { vcpus: 4, mem_mib: 1000, disk_mib: 1000 }, load }
    }

    fn load(vcpus: u64, mem_mib: u64, disk_mib: u64, instances: u64) -> Load {
        Load { vcpus, mem_mib, disk_mib, instances }
    }

    #[test]
    fn only_ready_reachable_hosts_are_ever_chosen() {
        use HostState::*;
        for state in [Joining, Ready, Draining, Stale, Offline, Stopped, Missing, Removed] {
            for reachable in [true, false] {
                let h = Candidate { reachable, ..host("a", state, Load::default()) };
                let chosen = choose(std::slice::from_ref(&h), &spec(1, 10, 10), None, OC).is_ok();
                assert_eq!(chosen, state == Ready && reachable, "{state:?} reachable={reachable}");
            }
        }
    }

    #[test]
    fn capacity_times_overcommit_bounds_each_resource() {
        // (load, spec, overcommit, fits)
        let table = [
            (load(3, 0, 0, 0), spec(1, 1, 1), OC, true),
            (load(4, 0, 0, 0), spec(1, 1, 1), OC, false),
            (load(4, 0, 0, 0), spec(1, 1, 1), Overcommit { cpu: 2.0, ..OC }, true),
            (load(0, 900, 0, 0), spec(1, 100, 1), OC, true),
            (load(0, 901, 0, 0), spec(1, 100, 1), OC, false),
            (load(0, 901, 0, 0), spec(1, 100, 1), Overcommit { mem: 1.5, ..OC }, true),
            (load(0, 0, 1000, 0), spec(1, 1, 1), OC, false),
            (load(0, 0, 1000, 0), spec(1, 1, 1), Overcommit { disk: 4.0, ..OC }, true),
        ];
        for (l, s, oc, fits) in table {
            assert_eq!(score(&host("a", HostState::Ready, l), &s, oc).is_some(), fits, "{l:?} {s:?} {oc:?}");
        }
    }

    #[test]
    fn score_is_memory_share_plus_a_hundredth_per_instance() {
        let s = score(&host("a", HostState::Ready, load(0, 200, 0, 3)), &spec(1, 300, 0), OC).unwrap();
        assert!((s - (0.5 + 0.03)).abs() < 1e-9, "{s}");
    }

    #[test]
    fn lowest_memory_share_wins_then_fewest_instances() {
        let hosts = [host("a", HostState::Ready, load(0, 500, 0, 1)), host("b", HostState::Ready, load(0, 100, 0, 5)), host("c", HostState::Ready, load(0, 100, 0, 2))];
        assert_eq!(choose(&hosts, &spec(1, 10, 0), None, OC), Ok(2));
        // Equal scores: the first listed wins.
        let same = [host("a", HostState::Ready, load(0, 100, 0, 2)), host("b", HostState::Ready, load(0, 100, 0, 2))];
        assert_eq!(choose(&same, &spec(1, 10, 0), None, OC), Ok(0));
        // Sleeping members hold no memory: the count alone spreads them.
        let idle = [host("a", HostState::Ready, load(0, 0, 0, 4)), host("b", HostState::Ready, load(0, 0, 0, 3))];
        assert_eq!(choose(&idle, &spec(1, 0, 0), None, OC), Ok(1));
    }

    #[test]
    fn a_busy_or_unready_best_host_is_skipped() {
        let hosts = [host("a", HostState::Draining, Load::default()), host("b", HostState::Ready, load(4, 0, 0, 0)), host("c", HostState::Ready, load(0, 900, 0, 9))];
        assert_eq!(choose(&hosts, &spec(1, 50, 0), None, OC), Ok(2));
        assert_eq!(choose(&hosts, &spec(1, 200, 0), None, OC), Err(Refusal::NoRoom { vcpus: 1, mem_mib: 200, disk_mib: 0 }));
    }

    #[test]
    fn a_pin_names_the_host_or_says_why_not() {
        let hosts = [host("a", HostState::Ready, Load::default()), host("b", HostState::Stopped, Load::default()), host("c", HostState::Ready, load(4, 0, 0, 0))];
        let pin = |s: &str| -> Name { s.parse().unwrap() };
        assert_eq!(choose(&hosts, &spec(1, 1, 1), Some(&pin("a")), OC), Ok(0));
        assert_eq!(choose(&hosts, &spec(1, 1, 1), Some(&pin("zz")), OC), Err(Refusal::NoSuchHost(pin("zz"))));
        assert_eq!(choose(&hosts, &spec(1, 1, 1), Some(&pin("b")), OC), Err(Refusal::NotReady(pin("b"), HostState::Stopped)));
        // Pinned to a full host: no room, even though another host has some.
        assert!(matches!(choose(&hosts, &spec(1, 1, 1), Some(&pin("c")), OC), Err(Refusal::NoRoom { .. })));
    }

    #[test]
    fn refusals_read_as_the_hubs_errors() {
        let n: Name = "node-b".parse().unwrap();
        assert_eq!(Refusal::NoSuchHost(n.clone()).to_string(), "host: no host named 'node-b': see `hangar host list`");
        assert_eq!(Refusal::NotReady(n.clone(), HostState::Draining).to_string(), "host 'node-b' is draining: only a ready host takes new instances");
        assert_eq!(
            Refusal::NoRoom { vcpus: 2, mem_mib: 64, disk_mib: 10 }.to_string(),
            "no ready host has room for 2 vCPU, 64 MiB memory, 10 MiB disk: add a host or free capacity"
        );
        assert_eq!(Refusal::NoSuchHost(n.clone()).code(), ErrorCode::InvalidArgument);
        assert_eq!(Refusal::NotReady(n, HostState::Stale).code(), ErrorCode::NoCapacity);
    }

    #[test]
    fn load_counts_resources_of_holding_instances_only() {
        let mk = |state| crate::quota::instance(spec(2, 100, 10), state);
        let list = [mk(crate::InstanceState::Running), mk(crate::InstanceState::Sleeping)];
        assert_eq!(Load::of(&list), load(2, 100, 20, 2));
    }
}
