//! Processes of this machine, the one way hangar looks at and stops them: a PID is only
//! ever acted on after its command line (from /proc) says it is the process meant, so a
//! recycled PID of something else is never signalled.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The arguments of a live process; `None` if it is gone or a zombie (which no longer
/// runs, though its PID still exists).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state letter follows the command name, which may itself hold ')'.
    if stat.rsplit(')').next()?.split_whitespace().next()? == "Z" {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    Some(raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// Whether `pid` runs with arguments that `matches` accepts.
pub fn is(pid: u32, matches: impl Fn(&[String]) -> bool) -> bool {
    cmdline(pid).is_some_and(|a| matches(&a))
}

/// Whether a command line is a `hangar` binary's (its first argument names it).
pub fn is_hangar(args: &[String]) -> bool {
    args.first().is_some_and(|a0| a0.ends_with("hangar"))
}

/// PIDs of live processes other than this one whose arguments `matches` accepts.
pub fn find(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && is(*pid, &matches))
        .collect()
}

/// Sends `sig`; a process that is already gone is not an error worth reporting.
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(p), sig);
    }
}

/// SIGTERM to every PID, up to `grace` for them to exit, then SIGKILL to those left and
/// up to 2 s more. `matches` says whether a PID is still the process meant. Returns the
/// PIDs that are still there at the end.
pub async fn stop_all(pids: &[u32], matches: impl Fn(&[String]) -> bool, grace: Duration) -> Vec<u32> {
    let left = |pids: &[u32]| -> Vec<u32> { pids.iter().copied().filter(|p| is(*p, &matches)).collect() };
    let mut alive = left(pids);
    for p in &alive {
        signal(*p, Signal::SIGTERM);
    }
    for (sig, wait) in [(Some(Signal::SIGKILL), grace), (None, Duration::from_secs(2))] {
        let deadline = Instant::now() + wait;
        while !alive.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            alive = left(&alive);
        }
        if let Some(sig) = sig {
            for p in &alive {
                signal(*p, sig);
            }
        }
    }
    alive
}

/// [`stop_all`] for one process: whether it is gone.
pub async fn stop(pid: u32, matches: impl Fn(&[String]) -> bool, grace: Duration) -> bool {
    stop_all(&[pid], matches, grace).await.is_empty()
}

/// This binary's path. After an upgrade replaced the file, /proc/self/exe reads
/// "PATH (deleted)": the new binary at PATH is the one to run.
pub fn own_exe() -> std::io::Result<PathBuf> {
    let p = std::env::current_exe()?;
    let s = p.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(orig) => PathBuf::from(orig),
        None => p,
    })
}

/// A file holding the PID of a process hangar started.
#[derive(Clone, Debug)]
pub struct PidFile(pub PathBuf);

impl PidFile {
    pub fn new(path: impl AsRef<Path>) -> PidFile {
        PidFile(path.as_ref().to_path_buf())
    }

    /// The PID written, whatever runs under it now.
    pub fn read(&self) -> Option<u32> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }

    pub fn write(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(&self.0, pid.to_string())
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.0);
    }

    /// The PID, if it names a live process whose arguments `matches` accepts.
    pub fn live(&self, matches: impl Fn(&[String]) -> bool) -> Option<u32> {
        self.read().filter(|p| is(*p, matches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_a_child_and_spares_what_does_not_match() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let sleeps = |a: &[String]| a.first().is_some_and(|a0| a0 == "sleep") && a.get(1).is_some_and(|x| x == "30");
        // Right after fork the child still shows the test's command line until it execs.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is(pid, sleeps) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(is(pid, sleeps));
        assert!(find(sleeps).contains(&pid));
        // A process that does not match is never signalled: it still runs afterwards.
        assert!(stop(pid, |a| a.iter().any(|x| x == "31"), Duration::from_millis(200)).await);
        assert!(child.try_wait().unwrap().is_none());
        // Reaped in a thread, as hangar's supervisors do, so the exit is observable.
        let reaper = std::thread::spawn(move || child.wait());
        assert!(stop(pid, sleeps, Duration::from_secs(5)).await);
        assert!(reaper.join().unwrap().is_ok());
        assert!(!is(pid, sleeps));
    }

    #[test]
    fn a_pid_file_names_only_a_matching_live_process() {
        let dir = tempfile::tempdir().unwrap();
        let f = PidFile::new(dir.path().join("x.pid"));
        assert_eq!(f.read(), None);
        f.write(std::process::id()).unwrap();
        assert_eq!(f.live(|_| true), Some(std::process::id()));
        assert_eq!(f.live(|_| false), None);
        f.remove();
        assert_eq!(f.read(), None);
    }
}
