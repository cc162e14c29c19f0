//! `hangar down`: everything a data dir's fleet runs on this machine, stopped and removed.

use crate::hub::HubPaths;
use crate::providers::local::{remove_host_dir, HostNet};
use anyhow::{bail, Context, Result};
use hangar_agent::identity::AgentPaths;
use std::path::Path;
use std::time::Duration;

/// Where hangar keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hangar";

/// Whether a command line is a `hangar` process of the fleet in `dir`: started with
/// this data dir, or with none at all while it is the default one.
fn uses(dir: &Path, args: &[String]) -> bool {
    if !crate::proc::is_hangar(args) {
        return false;
    }
    let needle = dir.to_string_lossy();
    let names_it = args.iter().skip(1).any(|a| a.starts_with(needle.as_ref()));
    let runs_fleet = args.get(1).is_some_and(|c| matches!(c.as_str(), "up" | "hub" | "agent"));
    let default_dir = !args.iter().any(|a| a.starts_with("--data-dir") || a.starts_with("--agent-dir")) && dir == Path::new(DEFAULT_DATA_DIR);
    names_it || (runs_fleet && default_dir)
}

/// `hangar down`: stops everything a data dir's fleet runs on this machine: its
/// `hangar` processes, its sandboxes (and their cgroups), its volume pool mount and
/// loop device. With `purge`, removes the data dir too.
pub async fn down(data_dir: &Path, purge: bool) -> Result<Vec<String>> {
    let mut done = vec![];
    let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    let pids = crate::proc::find(|a| uses(&data_dir, a));
    crate::proc::stop_all(&pids, |a| uses(&data_dir, a), Duration::from_secs(5)).await;
    if !pids.is_empty() {
        done.push(format!("stopped {} hangar process(es)", pids.len()));
    }
    // Best effort: every step runs even when an earlier one failed, so one stuck object
    // does not leave the rest behind; the errors are reported together at the end.
    let mut errors: Vec<String> = vec![];
    // Hosts made by the local provider first: their agents were stopped above.
    let hosts_dir = data_dir.join("hosts");
    if let Ok(rd) = std::fs::read_dir(&hosts_dir) {
        let range = read_cluster_range(&data_dir);
        let net = HostNet::new(&data_dir, &range);
        for e in rd.flatten().filter(|e| e.path().is_dir()) {
            let host = e.file_name().to_string_lossy().into_owned();
            let errs = remove_host_dir(&net, &e.path(), &host, purge).await;
            if errs.is_empty() {
                done.push(format!("stopped host {host}"));
            }
            errors.extend(errs.into_iter().map(|x| format!("host {host}: {x}")));
        }
        net.remove();
    }
    let paths = AgentPaths::new(data_dir.join("agent"));
    let r = hangar_agent::teardown(&paths, hangar_agent::Teardown::Everything(hangar_agent::drivers::HostNetwork::Shared)).await;
    done.extend(r.done);
    errors.extend(r.errors);
    // The shared parent cgroups go too once no sandbox of any fleet uses them
    // (rmdir of a non-empty cgroup fails, which is what keeps others' safe).
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in rd.flatten() {
            let _ = std::fs::remove_dir(c.path().join("hangar"));
        }
    }
    if !errors.is_empty() {
        bail!("some things could not be removed (the rest was; the data dir was kept):\n  {}", errors.join("\n  "));
    }
    // Never delete through a mount: a pool still mounted below the data dir (busy, lazily
    // detached) would have its volumes deleted with it.
    let prefix = format!("{}/", data_dir.display());
    let mounted: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    if purge && !mounted.is_empty() {
        bail!("not removing {}: still mounted below it: {}", data_dir.display(), mounted.join(", "));
    }
    if purge && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("cannot remove {}", data_dir.display()))?;
        done.push(format!("removed {}", data_dir.display()));
    }
    Ok(done)
}

/// The cluster range a data dir's hub was started with, as its local agent last saw it.
fn read_cluster_range(data_dir: &Path) -> hangar_types::net::ClusterRange {
    std::fs::read_to_string(HubPaths::new(data_dir).root.join("cluster-range")).ok().and_then(|r| r.trim().parse().ok()).unwrap_or_default()
}
