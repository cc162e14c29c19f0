//! Snapshots of instance volumes: which names a user may give, which belong to the
//! scheduler or to backups, the schedule syntax (`hourly,keep=24`, `every=15m`, `off`),
//! when a scheduled snapshot is due and which ones retention removes. Pure: the caller
//! passes the clock.
//!
//! Names share one namespace per volume: a user's (`before-upgrade`, or `snap-<time>`
//! by default), the scheduler's (`auto-<time>`, the time it was taken, UTC) and the
//! backup's temporary ones (`bk-...`), which no listing shows and no retention touches.

use crate::names::Name;
use serde::{Deserialize, Serialize};

/// Snapshots the backup capability takes for a consistent read; never listed here,
/// never pruned by a schedule.
pub const BACKUP_PREFIX: &str = "bk-";
/// Snapshots a move takes to send the volume to the target host; never listed,
/// never pruned by a schedule, gone with the source's copy.
pub const MOVE_PREFIX: &str = "mv-";
/// Snapshots the agent's schedule takes; the only ones retention removes.
pub const SCHEDULED_PREFIX: &str = "auto-";
/// The default name of a snapshot taken by hand without `--name`.
pub const MANUAL_PREFIX: &str = "snap-";

/// The shortest interval a schedule may have.
pub const MIN_EVERY_SECS: u64 = 60;
/// The most snapshots a schedule may keep.
pub const MAX_KEEP: u32 = 1000;

/// A name a user may give a snapshot: a [`Name`] not starting with a prefix hangar
/// keeps for itself. The error names the field and says what to use.
pub fn check_user_name(s: &str) -> Result<Name, String> {
    let name: Name = s.parse().map_err(|e| format!("name: {e}"))?;
    for (prefix, owner) in [(BACKUP_PREFIX, "backups"), (SCHEDULED_PREFIX, "scheduled snapshots"), (MOVE_PREFIX, "moves")] {
        if s.starts_with(prefix) {
            return Err(format!("name: '{s}' starts with '{prefix}', which hangar keeps for {owner}: choose another name"));
        }
    }
    Ok(name)
}

/// Whether a snapshot held on a host is one users see (every one but backups' own).
pub fn is_listed(name: &str) -> bool {
    !name.starts_with(BACKUP_PREFIX) && !name.starts_with(MOVE_PREFIX)
}

/// Whether a snapshot was taken by a schedule.
pub fn is_scheduled(name: &str) -> bool {
    name.starts_with(SCHEDULED_PREFIX)
}

/// `<prefix>YYYYMMDD-HHMMSS` (UTC) of a Unix time.
fn timed_name(prefix: &str, unix_secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{prefix}{:04}{:02}{:02}-{:02}{:02}{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
}

/// The name the schedule gives the snapshot it takes at `unix_secs`.
pub fn scheduled_name(unix_secs: i64) -> String {
    timed_name(SCHEDULED_PREFIX, unix_secs)
}

/// The default name of a snapshot taken by hand at `unix_secs`.
pub fn manual_name(unix_secs: i64) -> String {
    timed_name(MANUAL_PREFIX, unix_secs)
}

/// When a scheduled snapshot was taken, from its name; none for any other name.
pub fn scheduled_time(name: &str) -> Option<i64> {
    let rest = name.strip_prefix(SCHEDULED_PREFIX)?;
    let (d, t) = rest.split_once('-')?;
    if d.len() != 8 || t.len() != 6 || !d.bytes().chain(t.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    utc_seconds(&format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]), &format!("{}:{}:{}", &t[..2], &t[2..4], &t[4..]))
}

/// `2026-11-30` and `18:15:16` (UTC, as `btrfs subvolume list` prints with TZ=UTC) as
/// Unix seconds.
pub fn utc_seconds(date: &str, time_of_day: &str) -> Option<i64> {
    let d: Vec<u32> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<u32> = time_of_day.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (&[y, mo, da], &[h, mi, s]) = (d.as_slice(), t.as_slice()) else { return None };
    let date = time::Date::from_calendar_date(y as i32, time::Month::try_from(u8::try_from(mo).ok()?).ok()?, u8::try_from(da).ok()?).ok()?;
    let tod = time::Time::from_hms(u8::try_from(h).ok()?, u8::try_from(mi).ok()?, u8::try_from(s).ok()?).ok()?;
    Some(time::PrimitiveDateTime::new(date, tod).assume_utc().unix_timestamp())
}

/// Scheduled snapshots of one instance: one every `every_secs` (aligned to multiples
/// of it since the Unix epoch, so `hourly` is on the hour), the newest `keep` kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSchedule {
    pub every_secs: u64,
    pub keep: u32,
}

impl SnapshotSchedule {
    /// Parses `hourly`, `daily`, `every=<n>(m|h|d)`, each with an optional `keep=N`
    /// (default 24 hourly, 7 daily, 10 otherwise); `off` is none. Errors say what to write.
    pub fn parse(s: &str) -> Result<Option<SnapshotSchedule>, String> {
        const SYNTAX: &str = "write hourly, daily or every=<n>m|h|d, optionally with ,keep=N (e.g. \"hourly,keep=24\"), or off";
        let s = s.trim();
        if s == "off" {
            return Ok(None);
        }
        let mut every = None;
        let mut keep = None;
        for part in s.split(',').map(str::trim) {
            let (every_here, keep_here) = match part.split_once('=') {
                None if part == "hourly" => (Some((3600, 24)), None),
                None if part == "daily" => (Some((86400, 7)), None),
                Some(("every", v)) => (Some((parse_interval(v)?, 10)), None),
                Some(("keep", v)) => {
                    let k: u32 = v.parse().map_err(|_| format!("snapshot schedule: keep '{v}' is not a number"))?;
                    if k == 0 || k > MAX_KEEP {
                        return Err(format!("snapshot schedule: keep={k} is out of range: keep 1 to {MAX_KEEP} snapshots"));
                    }
                    (None, Some(k))
                }
                _ => return Err(format!("snapshot schedule: '{part}' is not understood: {SYNTAX}")),
            };
            if every_here.is_some() && every.replace(every_here).is_some() {
                return Err(format!("snapshot schedule: '{s}' gives the interval twice: {SYNTAX}"));
            }
            if keep_here.is_some() && keep.replace(keep_here).is_some() {
                return Err(format!("snapshot schedule: '{s}' gives keep twice"));
            }
        }
        let Some(Some((every_secs, default_keep))) = every else {
            return Err(format!("snapshot schedule: '{s}' has no interval: {SYNTAX}"));
        };
        Ok(Some(SnapshotSchedule { every_secs, keep: keep.flatten().unwrap_or(default_keep) }))
    }

    /// Whether a snapshot is due at `now`, given when the newest scheduled one was
    /// taken: once per interval slot.
    pub fn due(&self, newest: Option<i64>, now: i64) -> bool {
        let slot = |t: i64| t.div_euclid(self.every_secs as i64);
        newest.is_none_or(|n| slot(now) > slot(n))
    }

    /// The scheduled snapshots (by name, with their times) that retention removes: all
    /// but the newest `keep`. Names that are not the schedule's are never returned.
    pub fn prune<'a>(&self, snapshots: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut mine: Vec<(i64, &str)> = snapshots.into_iter().filter_map(|n| Some((scheduled_time(n)?, n))).collect();
        mine.sort();
        let extra = mine.len().saturating_sub(self.keep as usize);
        mine[..extra].iter().map(|(_, n)| n.to_string()).collect()
    }
}

impl std::fmt::Display for SnapshotSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.every_secs {
            3600 => write!(f, "hourly")?,
            86400 => write!(f, "daily")?,
            s if s % 86400 == 0 => write!(f, "every={}d", s / 86400)?,
            s if s % 3600 == 0 => write!(f, "every={}h", s / 3600)?,
            s => write!(f, "every={}m", s / 60)?,
        }
        write!(f, ",keep={}", self.keep)
    }
}

/// The hub's answer to a host about to take a scheduled snapshot (`POST
/// /v1/agent/instances/{id}/snapshot-admission`): a refusal is a 422 instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotAdmission {
    pub admitted: bool,
}

/// The hub asks an agent for a snapshot of a sandbox's volume (`POST
/// /v1/sandboxes/{id}/snapshots` on the agent's endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSnapshotCreate {
    pub name: crate::ids::SnapshotId,
}

/// The hub asks an agent to replace a stopped sandbox's volume by a snapshot; the
/// volume keeps its size limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSnapshotRestore {
    pub disk_mib: u64,
}

fn parse_interval(v: &str) -> Result<u64, String> {
    let bad = || format!("snapshot schedule: every='{v}' is not an interval: write a number and m, h or d, e.g. every=15m");
    let (n, unit) = v.split_at(v.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86400),
        _ => return Err(bad()),
    }
    .ok_or_else(bad)?;
    if secs < MIN_EVERY_SECS {
        return Err(format!("snapshot schedule: every={v} is too often: the shortest interval is 1m"));
    }
    if secs > 366 * 86400 {
        return Err(format!("snapshot schedule: every={v} is longer than a year"));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for ok in ["before-upgrade", "a", "snap-20261130-120000", "b1"] {
            assert_eq!(check_user_name(ok).unwrap().as_str(), ok);
        }
        for (bad, says) in [
            ("", "name: name is empty"),
            ("Before", "must start with a lowercase letter"),
            ("a_b", "may only contain"),
            ("bk-1", "keeps for backups"),
            ("auto-20261130-120000", "keeps for scheduled snapshots"),
            (&"x".repeat(64), "longer than 63"),
        ] {
            let e = check_user_name(bad).unwrap_err();
            assert!(e.starts_with("name: ") && e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn listed_and_scheduled() {
        assert!(!is_listed("bk-0190f0d2"));
        assert!(is_listed("auto-20261130-120000") && is_listed("before-upgrade"));
        assert!(is_scheduled("auto-20261130-120000") && !is_scheduled("snap-20261130-120000"));
    }

    #[test]
    fn timed_names_round_trip() {
        // 2026-11-30 18:15:16 UTC
        let t = 1_796_062_516;
        assert_eq!(scheduled_name(t), "auto-20261130-181516");
        assert_eq!(manual_name(t), "snap-20261130-181516");
        assert_eq!(scheduled_time(&scheduled_name(t)), Some(t));
        assert_eq!(utc_seconds("2026-11-30", "18:15:16"), Some(t));
        for (d, tod) in [("2026-11-31", "00:00:00"), ("2026-11", "00:00:00"), ("2026-11-30", "24:00:00"), ("x", "y"), ("2026-11-30", "-")] {
            assert_eq!(utc_seconds(d, tod), None, "{d} {tod}");
        }
        for not in ["snap-20261130-181516", "auto-2026113-181516", "auto-20261330-181516", "auto-20261130-256000", "auto-x", "bk-20261130-181516"] {
            assert_eq!(scheduled_time(not), None, "{not}");
        }
    }

    #[test]
    fn schedules_parse() {
        let s = |every_secs, keep| Ok(Some(SnapshotSchedule { every_secs, keep }));
        for (text, want) in [
            ("hourly", s(3600, 24)),
            ("hourly,keep=24", s(3600, 24)),
            ("daily", s(86400, 7)),
            ("keep=3,daily", s(86400, 3)),
            ("every=15m", s(900, 10)),
            ("every=1m,keep=2", s(60, 2)),
            ("every=2h, keep=12", s(7200, 12)),
            ("every=1d,keep=1000", s(86400, 1000)),
            ("off", Ok(None)),
        ] {
            assert_eq!(SnapshotSchedule::parse(text), want, "{text}");
        }
        for (text, says) in [
            ("", "not understood"),
            ("weekly", "not understood"),
            ("keep=3", "no interval"),
            ("every=30s", "not an interval"),
            ("every=0m", "too often"),
            ("every=m", "not an interval"),
            ("every=400d", "longer than a year"),
            ("every=99999999999999999d", "not an interval"),
            ("hourly,keep=0", "out of range"),
            ("hourly,keep=1001", "out of range"),
            ("hourly,keep=x", "not a number"),
            ("hourly,daily", "interval twice"),
            ("hourly,keep=1,keep=2", "keep twice"),
        ] {
            let e = SnapshotSchedule::parse(text).unwrap_err();
            assert!(e.starts_with("snapshot schedule: ") && e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn schedules_display_as_they_parse() {
        for text in ["hourly,keep=24", "daily,keep=7", "every=15m,keep=10", "every=2h,keep=3", "every=2d,keep=1"] {
            let s = SnapshotSchedule::parse(text).unwrap().unwrap();
            assert_eq!(s.to_string(), text);
        }
    }

    #[test]
    fn due_once_per_slot() {
        let hourly = SnapshotSchedule { every_secs: 3600, keep: 24 };
        for (newest, now, due) in [
            (None, 10, true),
            (Some(3600), 3601, false),
            (Some(3600), 7199, false),
            (Some(3600), 7200, true),
            // Taken late in its slot: the next one is still on the next hour.
            (Some(7199), 7200, true),
            // A clock that went back never makes one due.
            (Some(7200), 3700, false),
        ] {
            assert_eq!(hourly.due(newest, now), due, "{newest:?} {now}");
        }
    }

    #[test]
    fn prune_keeps_the_newest_and_only_touches_scheduled() {
        let s = SnapshotSchedule { every_secs: 60, keep: 2 };
        let names = ["auto-20261130-120300", "before-upgrade", "auto-20261130-120100", "bk-x", "auto-20261130-120200", "snap-20261130-110000"];
        assert_eq!(s.prune(names), ["auto-20261130-120100"]);
        assert!(SnapshotSchedule { every_secs: 60, keep: 5 }.prune(names).is_empty());
        assert_eq!(SnapshotSchedule { every_secs: 60, keep: 1 }.prune(names), ["auto-20261130-120100", "auto-20261130-120200"]);
    }
}
