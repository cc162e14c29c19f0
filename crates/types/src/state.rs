//! The instance state machine.
//!
//! One function, [`transition`], decides every legal move of an instance's lifecycle
//! state. User requests (start, stop, ...) are checked against it before anything is
//! recorded; observations reported by the agent move `starting`/`stopping` forward.
//! The desired state the agent converges to is derived from the lifecycle state
//! ([`InstanceState::desired`]), so the two can never disagree.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The lifecycle state the hub records for an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Exists (volume made), has never run or was created stopped.
    Created,
    /// Asked to run; not yet confirmed running by its host.
    Starting,
    /// Confirmed running.
    Running,
    /// Frozen in memory (cgroup freezer); resumes in milliseconds.
    Warm,
    /// Asked to stop; not yet confirmed stopped.
    Stopping,
    /// Not running; volume and identity kept.
    Stopped,
    /// Parked by a pool: processes stopped and memory released, volume and address
    /// kept; waking it is a start. Differs from `stopped` in who may use it: a pool
    /// wakes sleeping members before it starts stopped ones or creates new ones.
    Sleeping,
    /// Its host reported a failure (start failed, sandbox lost).
    Failed,
    /// Asked to be deleted; the record goes away once the host confirms.
    Deleted,
}

impl InstanceState {
    pub const ALL: [InstanceState; 9] = [
        InstanceState::Created,
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Warm,
        InstanceState::Stopping,
        InstanceState::Stopped,
        InstanceState::Sleeping,
        InstanceState::Failed,
        InstanceState::Deleted,
    ];

    /// What the host should make true for an instance in this state.
    pub fn desired(self) -> DesiredState {
        match self {
            InstanceState::Created
            | InstanceState::Stopping
            | InstanceState::Stopped
            | InstanceState::Sleeping
            | InstanceState::Failed => DesiredState::Stopped,
            InstanceState::Starting | InstanceState::Running => DesiredState::Running,
            InstanceState::Warm => DesiredState::Warm,
            InstanceState::Deleted => DesiredState::Deleted,
        }
    }

    /// Whether the instance holds CPU and memory on its host (counts against quotas).
    pub fn holds_resources(self) -> bool {
        matches!(self, InstanceState::Starting | InstanceState::Running | InstanceState::Warm)
    }

    /// Whether the instance counts as running for the `max_running` quota.
    pub fn counts_as_running(self) -> bool {
        matches!(self, InstanceState::Starting | InstanceState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Created => "created",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Warm => "warm",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Sleeping => "sleeping",
            InstanceState::Failed => "failed",
            InstanceState::Deleted => "deleted",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InstanceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        InstanceState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown instance state '{s}'"))
    }
}

/// What a host must converge an instance to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Volume present, no process.
    Stopped,
    Running,
    /// Processes frozen.
    Warm,
    /// Sandbox and volume removed.
    Deleted,
}

impl DesiredState {
    /// Whether a host that observed `observed` has converged to this desired state: the
    /// one observation that means done (a deleted instance is `gone`).
    pub fn is_met_by(self, observed: ObservedState) -> bool {
        matches!(
            (self, observed),
            (DesiredState::Running, ObservedState::Running)
                | (DesiredState::Warm, ObservedState::Warm)
                | (DesiredState::Stopped, ObservedState::Stopped)
                | (DesiredState::Deleted, ObservedState::Gone)
        )
    }
}

/// What a host reports it found for an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObservedState {
    /// No report yet, or the host is not reporting.
    Unknown,
    /// Volume present, no sandbox process.
    Stopped,
    Running,
    /// Sandbox frozen.
    Warm,
    /// The host tried and failed; the report carries the error.
    Failed,
    /// Nothing of the instance is left on the host.
    Gone,
}

impl ObservedState {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservedState::Unknown => "unknown",
            ObservedState::Stopped => "stopped",
            ObservedState::Running => "running",
            ObservedState::Warm => "warm",
            ObservedState::Failed => "failed",
            ObservedState::Gone => "gone",
        }
    }
}

impl fmt::Display for ObservedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ObservedState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            ObservedState::Unknown,
            ObservedState::Stopped,
            ObservedState::Running,
            ObservedState::Warm,
            ObservedState::Failed,
            ObservedState::Gone,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown observed state '{s}'"))
    }
}

/// A move of the state machine: a user request or a confirmed observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    Start,
    Stop,
    Warm,
    Resume,
    /// Park: stop the processes, keep volume and address (pools use it).
    Sleep,
    Delete,
    /// The host reported this state after acting on the current generation.
    Observed(ObservedState),
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transition::Start => f.write_str("start"),
            Transition::Stop => f.write_str("stop"),
            Transition::Warm => f.write_str("warm"),
            Transition::Resume => f.write_str("resume"),
            Transition::Sleep => f.write_str("sleep"),
            Transition::Delete => f.write_str("delete"),
            Transition::Observed(o) => write!(f, "observe {o}"),
        }
    }
}

/// A request that the current state does not allow. The message says what would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition} an instance that is {from}{}", hint(*from, *transition))]
pub struct IllegalTransition {
    pub from: InstanceState,
    pub transition: Transition,
}

fn hint(from: InstanceState, t: Transition) -> &'static str {
    use InstanceState as S;
    match (from, t) {
        (S::Running, Transition::Start) => ": it is already running",
        (S::Stopped | S::Created, Transition::Resume) => ": start it instead",
        (S::Stopped | S::Created, Transition::Stop) => ": it is not running",
        (S::Warm, Transition::Start) => ": resume it instead",
        (S::Sleeping, Transition::Resume) => ": start it to wake it",
        (S::Sleeping, Transition::Stop) => ": it is not running",
        (S::Sleeping, Transition::Sleep) => ": it is already sleeping",
        (S::Starting | S::Stopping, _) => ": wait for the current operation to finish",
        (S::Deleted, _) => ": it is being deleted",
        _ => "",
    }
}

/// The one function that decides every legal move.
///
/// Requests are strict: anything not listed is illegal. Observations never fail for a
/// live instance (the host is the source of truth for what runs). The caller applies
/// only observations the host made for the instance's current generation, so a report
/// always answers the latest request.
pub fn transition(from: InstanceState, t: Transition) -> Result<InstanceState, IllegalTransition> {
    use InstanceState as S;
    use ObservedState as O;
    let illegal = Err(IllegalTransition { from, transition: t });
    match t {
        Transition::Start => match from {
            S::Created | S::Stopped | S::Sleeping | S::Failed => Ok(S::Starting),
            _ => illegal,
        },
        Transition::Stop => match from {
            S::Starting | S::Running | S::Warm => Ok(S::Stopping),
            _ => illegal,
        },
        Transition::Warm => match from {
            S::Running => Ok(S::Warm),
            _ => illegal,
        },
        Transition::Resume => match from {
            S::Warm => Ok(S::Running),
            _ => illegal,
        },
        Transition::Sleep => match from {
            S::Created | S::Stopped | S::Starting | S::Running | S::Warm => Ok(S::Sleeping),
            _ => illegal,
        },
        Transition::Delete => match from {
            S::Deleted => illegal,
            _ => Ok(S::Deleted),
        },
        Transition::Observed(o) => Ok(match (from, o) {
            // Deleted is terminal: the record is dropped when the host reports Gone.
            (S::Deleted, _) => S::Deleted,
            (_, O::Unknown) => from,
            (S::Starting, O::Running) => S::Running,
            (S::Starting, O::Failed) => S::Failed,
            // Reports are only applied for the current generation, so `stopped` while
            // starting means the host started the workload and it has already exited.
            (S::Starting, O::Stopped) => S::Stopped,
            (S::Running, O::Stopped) => S::Stopped, // the workload exited by itself
            (S::Running | S::Warm, O::Failed) => S::Failed,
            (S::Warm, O::Stopped) => S::Stopped,
            (S::Stopping, O::Stopped) => S::Stopped,
            (S::Stopping, O::Failed) => S::Failed,
            (S::Sleeping, O::Failed) => S::Failed,
            (S::Created | S::Stopped | S::Sleeping | S::Failed | S::Running | S::Warm | S::Starting | S::Stopping, O::Gone) => S::Failed,
            (s, _) => s,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState as S;
    use ObservedState as O;

    const REQUESTS: [Transition; 6] =
        [Transition::Start, Transition::Stop, Transition::Warm, Transition::Resume, Transition::Sleep, Transition::Delete];

    /// Every (state, request) pair: the legal ones and where they lead; all others are illegal.
    #[test]
    fn requests_exhaustive() {
        let legal: &[(S, Transition, S)] = &[
            (S::Created, Transition::Start, S::Starting),
            (S::Stopped, Transition::Start, S::Starting),
            (S::Failed, Transition::Start, S::Starting),
            (S::Sleeping, Transition::Start, S::Starting),
            (S::Created, Transition::Sleep, S::Sleeping),
            (S::Stopped, Transition::Sleep, S::Sleeping),
            (S::Starting, Transition::Sleep, S::Sleeping),
            (S::Running, Transition::Sleep, S::Sleeping),
            (S::Warm, Transition::Sleep, S::Sleeping),
            (S::Sleeping, Transition::Delete, S::Deleted),
            (S::Starting, Transition::Stop, S::Stopping),
            (S::Running, Transition::Stop, S::Stopping),
            (S::Warm, Transition::Stop, S::Stopping),
            (S::Running, Transition::Warm, S::Warm),
            (S::Warm, Transition::Resume, S::Running),
            (S::Created, Transition::Delete, S::Deleted),
            (S::Starting, Transition::Delete, S::Deleted),
            (S::Running, Transition::Delete, S::Deleted),
            (S::Warm, Transition::Delete, S::Deleted),
            (S::Stopping, Transition::Delete, S::Deleted),
            (S::Stopped, Transition::Delete, S::Deleted),
            (S::Failed, Transition::Delete, S::Deleted),
        ];
        for from in S::ALL {
            for t in REQUESTS {
                let expected = legal.iter().find(|(f, tt, _)| *f == from && *tt == t).map(|(_, _, to)| *to);
                match (transition(from, t), expected) {
                    (Ok(to), Some(e)) => assert_eq!(to, e, "{from} --{t}-->"),
                    (Err(err), None) => {
                        assert_eq!(err.from, from);
                        assert!(err.to_string().starts_with(&format!("cannot {t}")), "{err}");
                    }
                    (got, e) => panic!("{from} --{t}--> got {got:?}, expected {e:?}"),
                }
            }
        }
    }

    /// Every (state, observation) pair: observations never fail and only confirm.
    #[test]
    fn observations_exhaustive() {
        let moves: &[(S, O, S)] = &[
            (S::Starting, O::Running, S::Running),
            (S::Starting, O::Failed, S::Failed),
            (S::Starting, O::Stopped, S::Stopped),
            (S::Starting, O::Gone, S::Failed),
            (S::Running, O::Stopped, S::Stopped),
            (S::Running, O::Failed, S::Failed),
            (S::Running, O::Gone, S::Failed),
            (S::Warm, O::Stopped, S::Stopped),
            (S::Warm, O::Failed, S::Failed),
            (S::Warm, O::Gone, S::Failed),
            (S::Stopping, O::Stopped, S::Stopped),
            (S::Stopping, O::Failed, S::Failed),
            (S::Stopping, O::Gone, S::Failed),
            (S::Created, O::Gone, S::Failed),
            (S::Stopped, O::Gone, S::Failed),
            (S::Sleeping, O::Failed, S::Failed),
            (S::Sleeping, O::Gone, S::Failed),
        ];
        let all_obs = [O::Unknown, O::Stopped, O::Running, O::Warm, O::Failed, O::Gone];
        for from in S::ALL {
            for o in all_obs {
                let to = transition(from, Transition::Observed(o)).expect("observations never fail");
                let expected = moves.iter().find(|(f, oo, _)| *f == from && *oo == o).map(|(_, _, t)| *t).unwrap_or(from);
                assert_eq!(to, expected, "{from} --observe {o}-->");
            }
        }
    }

    #[test]
    fn desired_follows_lifecycle() {
        assert_eq!(S::Starting.desired(), DesiredState::Running);
        assert_eq!(S::Warm.desired(), DesiredState::Warm);
        assert_eq!(S::Failed.desired(), DesiredState::Stopped);
        assert_eq!(S::Sleeping.desired(), DesiredState::Stopped);
        assert!(!S::Sleeping.holds_resources());
        assert_eq!(S::Deleted.desired(), DesiredState::Deleted);
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<S>().unwrap(), s);
        }
    }

    #[test]
    fn each_desired_state_is_met_by_exactly_one_observation() {
        use DesiredState as D;
        let all_obs = [O::Unknown, O::Stopped, O::Running, O::Warm, O::Failed, O::Gone];
        for (d, only) in [(D::Running, O::Running), (D::Warm, O::Warm), (D::Stopped, O::Stopped), (D::Deleted, O::Gone)] {
            for o in all_obs {
                assert_eq!(d.is_met_by(o), o == only, "{d:?} met by {o}?");
            }
        }
    }

    #[test]
    fn illegal_messages_help() {
        let e = transition(S::Stopped, Transition::Resume).unwrap_err();
        assert_eq!(e.to_string(), "cannot resume an instance that is stopped: start it instead");
    }
}
