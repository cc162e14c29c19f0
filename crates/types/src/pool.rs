//! The pool planner: from a pool's members and its desired counts, the next requests
//! that move it toward those counts. Pure: the hub executes the plan through the same
//! paths as user requests (quotas, state machine, events) and plans again next pass.
//!
//! Scaling order, as mature fleet managers do it:
//! - to add running: resume warm first (milliseconds), then wake sleeping, then start
//!   stopped, then create;
//! - to add warm: freeze surplus running, else start (or create) one to freeze later;
//! - to add sleeping: park surplus running, then surplus warm, then stopped, else create;
//! - to remove: newest first.
//!
//! Members a user acted on recently (`held`) count where they are but are never moved.
//! Members on a host that is draining (`evacuate`) are ignored for the counts, and
//! deleted once confirmed members elsewhere cover their state.

use crate::api::PoolCounts;
use crate::ids::InstanceId;
use crate::state::{transition, InstanceState, Transition};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: InstanceId,
    pub state: InstanceState,
    /// Orders members: larger is newer.
    pub created_ns: i128,
    pub held: bool,
    pub evacuate: bool,
}

/// The state a new member is created in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateAs {
    Running,
    Sleeping,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolAction {
    Create(CreateAs),
    Request(InstanceId, Transition),
}

/// Which count a state fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bucket {
    Running,
    Warm,
    Sleeping,
    /// Created or stopped: free to start, park or remove.
    Idle,
    /// Failed: replaced, then removed.
    Failed,
    /// Stopping or deleted: on the way; left alone.
    Moving,
}

fn bucket(s: InstanceState) -> Bucket {
    match s {
        InstanceState::Starting | InstanceState::Running => Bucket::Running,
        InstanceState::Warm => Bucket::Warm,
        InstanceState::Sleeping => Bucket::Sleeping,
        InstanceState::Created | InstanceState::Stopped => Bucket::Idle,
        InstanceState::Failed => Bucket::Failed,
        InstanceState::Stopping | InstanceState::Deleted => Bucket::Moving,
    }
}

/// The next requests for a pool. Every `Request` in the plan is legal for the member's
/// state (checked against [`transition`]); no member appears twice.
pub fn plan(members: &[Member], want: PoolCounts) -> Vec<PoolAction> {
    let mut sorted: Vec<Member> = members.to_vec();
    sorted.sort_by_key(|m| (m.created_ns, m.id));
    let active: Vec<Member> = sorted.iter().copied().filter(|m| !m.evacuate).collect();
    let of = |b: Bucket| -> Vec<Member> { active.iter().copied().filter(|m| bucket(m.state) == b).collect() };
    let (running, warm, sleeping, idle) = (of(Bucket::Running), of(Bucket::Warm), of(Bucket::Sleeping), of(Bucket::Idle));
    let (mut n_run, mut n_warm, mut n_sleep) = (running.len() as u32, warm.len() as u32, sleeping.len() as u32);
    let mut used: Vec<InstanceId> = vec![];
    let mut out: Vec<PoolAction> = vec![];

    // Candidates not held and not yet used; `newest` picks from the end.
    let pick = |list: &[Member], used: &[InstanceId], newest: bool, t: Transition| -> Option<Member> {
        let ok = |m: &&Member| !m.held && !used.contains(&m.id) && transition(m.state, t).is_ok();
        if newest { list.iter().rev().find(ok).copied() } else { list.iter().find(ok).copied() }
    };
    let request = |m: Member, t: Transition, used: &mut Vec<InstanceId>, out: &mut Vec<PoolAction>| {
        used.push(m.id);
        out.push(PoolAction::Request(m.id, t));
    };

    // 1. running
    while n_run < want.running {
        if let Some(m) = pick(&warm, &used, false, Transition::Resume) {
            request(m, Transition::Resume, &mut used, &mut out);
            n_warm -= 1;
        } else if let Some(m) = pick(&sleeping, &used, false, Transition::Start) {
            request(m, Transition::Start, &mut used, &mut out);
            n_sleep -= 1;
        } else if let Some(m) = pick(&idle, &used, false, Transition::Start) {
            request(m, Transition::Start, &mut used, &mut out);
        } else {
            out.push(PoolAction::Create(CreateAs::Running));
        }
        n_run += 1;
    }
    // 2. warm: only a running member can be frozen.
    while n_warm < want.warm {
        if n_run > want.running {
            // The newest surplus member; if it is still starting it is frozen on a later
            // pass rather than freezing an older one and leaving too few running.
            let newest = running.iter().rev().find(|m| !m.held && !used.contains(&m.id)).copied();
            if let Some(m) = newest.filter(|m| transition(m.state, Transition::Warm).is_ok()) {
                request(m, Transition::Warm, &mut used, &mut out);
            }
            n_run -= 1;
        } else if let Some(m) = pick(&idle, &used, false, Transition::Start) {
            request(m, Transition::Start, &mut used, &mut out);
        } else {
            out.push(PoolAction::Create(CreateAs::Running));
        }
        n_warm += 1;
    }
    // 3. sleeping
    while n_sleep < want.sleeping {
        if n_run > want.running && pick(&running, &used, true, Transition::Sleep).is_some() {
            let m = pick(&running, &used, true, Transition::Sleep).expect("checked");
            request(m, Transition::Sleep, &mut used, &mut out);
            n_run -= 1;
        } else if n_warm > want.warm && pick(&warm, &used, true, Transition::Sleep).is_some() {
            let m = pick(&warm, &used, true, Transition::Sleep).expect("checked");
            request(m, Transition::Sleep, &mut used, &mut out);
            n_warm -= 1;
        } else if let Some(m) = pick(&idle, &used, false, Transition::Sleep) {
            request(m, Transition::Sleep, &mut used, &mut out);
        } else {
            out.push(PoolAction::Create(CreateAs::Sleeping));
        }
        n_sleep += 1;
    }
    // 4. surplus goes, newest first.
    for (list, n, target) in [(&running, n_run, want.running), (&warm, n_warm, want.warm), (&sleeping, n_sleep, want.sleeping)] {
        for _ in target..n {
            match pick(list, &used, true, Transition::Delete) {
                Some(m) => request(m, Transition::Delete, &mut used, &mut out),
                None => break,
            }
        }
    }
    for m in idle.iter().chain(of(Bucket::Failed).iter()) {
        if !m.held && !used.contains(&m.id) {
            request(*m, Transition::Delete, &mut used, &mut out);
        }
    }
    // 5. evacuation: a member on a draining host goes once confirmed members elsewhere
    // fill its state's count.
    let confirmed = |s: InstanceState| active.iter().filter(|m| m.state == s).count() as u32;
    for m in sorted.iter().filter(|m| m.evacuate && !m.held) {
        let covered = match bucket(m.state) {
            Bucket::Running => confirmed(InstanceState::Running) >= want.running,
            Bucket::Warm => confirmed(InstanceState::Warm) >= want.warm,
            Bucket::Sleeping => confirmed(InstanceState::Sleeping) >= want.sleeping,
            Bucket::Idle | Bucket::Failed => true,
            Bucket::Moving => false,
        };
        if covered && transition(m.state, Transition::Delete).is_ok() {
            request(*m, Transition::Delete, &mut used, &mut out);
        }
    }
    out
}

/// Whether a pool's members match its counts exactly and nothing is on the way.
pub fn converged(members: &[Member], want: PoolCounts) -> bool {
    let count = |s: InstanceState| members.iter().filter(|m| m.state == s && !m.evacuate).count() as u32;
    members.iter().all(|m| matches!(m.state, InstanceState::Running | InstanceState::Warm | InstanceState::Sleeping) && !m.evacuate)
        && count(InstanceState::Running) == want.running
        && count(InstanceState::Warm) == want.warm
        && count(InstanceState::Sleeping) == want.sleeping
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState as S;

    fn m(n: u128, state: S) -> Member {
        Member { id: InstanceId(uuid::Uuid::from_u128(n)), state, created_ns: n as i128, held: false, evacuate: false }
    }
    fn counts(running: u32, warm: u32, sleeping: u32) -> PoolCounts {
        PoolCounts { running, warm, sleeping }
    }
    fn id(n: u128) -> InstanceId {
        InstanceId(uuid::Uuid::from_u128(n))
    }
    use PoolAction::*;

    #[test]
    fn empty_pool_creates() {
        let p = plan(&[], counts(2, 1, 1));
        assert_eq!(p, vec![Create(CreateAs::Running), Create(CreateAs::Running), Create(CreateAs::Running), Create(CreateAs::Sleeping)]);
    }

    #[test]
    fn running_comes_from_warm_then_sleeping_then_stopped_then_new() {
        let members = [m(1, S::Stopped), m(2, S::Sleeping), m(3, S::Warm)];
        let p = plan(&members, counts(4, 0, 0));
        assert_eq!(
            p,
            vec![
                Request(id(3), Transition::Resume),
                Request(id(2), Transition::Start),
                Request(id(1), Transition::Start),
                Create(CreateAs::Running)
            ]
        );
    }

    #[test]
    fn scale_down_removes_newest_first() {
        let members = [m(1, S::Running), m(2, S::Running), m(3, S::Running)];
        assert_eq!(plan(&members, counts(1, 0, 0)), vec![Request(id(3), Transition::Delete), Request(id(2), Transition::Delete)]);
    }

    #[test]
    fn surplus_running_becomes_warm_and_sleeping() {
        let members = [m(1, S::Running), m(2, S::Running), m(3, S::Running)];
        assert_eq!(plan(&members, counts(1, 1, 1)), vec![Request(id(3), Transition::Warm), Request(id(2), Transition::Sleep)]);
    }

    #[test]
    fn warm_waits_for_a_starting_surplus() {
        // One starting member beyond the running count: no new member, freeze it later.
        let members = [m(1, S::Running), m(2, S::Starting)];
        assert_eq!(plan(&members, counts(1, 1, 0)), vec![]);
        let members = [m(1, S::Running), m(2, S::Running)];
        assert_eq!(plan(&members, counts(1, 1, 0)), vec![Request(id(2), Transition::Warm)]);
    }

    #[test]
    fn held_members_count_but_are_not_moved() {
        let mut a = m(1, S::Running);
        a.held = true;
        let members = [a, m(2, S::Running)];
        // Scale to 0: only the unheld one goes.
        assert_eq!(plan(&members, counts(0, 0, 0)), vec![Request(id(2), Transition::Delete)]);
        // A held stopped member is neither started nor deleted; a new one is made.
        let mut b = m(3, S::Stopped);
        b.held = true;
        assert_eq!(plan(&[b], counts(1, 0, 0)), vec![Create(CreateAs::Running)]);
    }

    #[test]
    fn failed_members_are_replaced_and_removed() {
        let members = [m(1, S::Failed), m(2, S::Running)];
        assert_eq!(plan(&members, counts(2, 0, 0)), vec![Create(CreateAs::Running), Request(id(1), Transition::Delete)]);
    }

    #[test]
    fn evacuation_replaces_before_it_removes() {
        let mut a = m(1, S::Running);
        a.evacuate = true;
        // Not covered yet: a replacement is created, the old one stays.
        assert_eq!(plan(&[a], counts(1, 0, 0)), vec![Create(CreateAs::Running)]);
        // The replacement still starting: nothing more.
        assert_eq!(plan(&[a, m(2, S::Starting)], counts(1, 0, 0)), vec![]);
        // Replacement running: the old one goes.
        assert_eq!(plan(&[a, m(2, S::Running)], counts(1, 0, 0)), vec![Request(id(1), Transition::Delete)]);
    }

    #[test]
    fn converged_pool_plans_nothing() {
        let members = [m(1, S::Running), m(2, S::Warm), m(3, S::Sleeping)];
        assert!(plan(&members, counts(1, 1, 1)).is_empty());
        assert!(converged(&members, counts(1, 1, 1)));
        assert!(!converged(&members, counts(2, 1, 1)));
    }

    /// Every plan over every small pool is legal, touches each member at most once, and
    /// applying it (with creates landing in their state) never overshoots a count.
    #[test]
    fn plans_are_legal_for_every_small_pool() {
        let states = S::ALL;
        let mut checked = 0;
        for a in states {
            for b in states {
                for c in states {
                    for want in [counts(0, 0, 0), counts(1, 0, 0), counts(2, 1, 0), counts(1, 1, 1), counts(3, 2, 2)] {
                        let members = [m(1, a), m(2, b), m(3, c)];
                        let p = plan(&members, want);
                        let mut seen = std::collections::HashSet::new();
                        for act in &p {
                            if let Request(i, t) = act {
                                assert!(seen.insert(*i), "{members:?} {want:?}: member twice in {p:?}");
                                let st = members.iter().find(|x| x.id == *i).unwrap().state;
                                assert!(transition(st, *t).is_ok(), "{st} --{t}--> illegal in {p:?}");
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 9 * 9 * 9 * 5);
    }
}
