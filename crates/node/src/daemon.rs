//! The background daemon: `hangar up` started detached (its own session, so it outlives
//! the terminal), with a PID file and a log in the data dir.

use crate::config;
use crate::proc::{is_hangar, PidFile};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn pid_file(d: &Path) -> PidFile {
    PidFile::new(d.join("hangar.pid"))
}

pub fn log_file(d: &Path) -> PathBuf {
    d.join("hangar.log")
}

/// The daemon's PID if the PID file names a live `hangar` process.
fn live_pid(d: &Path) -> Option<u32> {
    pid_file(d).live(is_hangar)
}

/// A started daemon: its PID and the hub it answers at.
pub struct Started {
    pub pid: u32,
    pub hub_url: String,
}

/// Starts `hangar ARGS` (an `up`) for `data_dir` in the background and returns once its
/// hub answers; refuses a second copy.
pub async fn start(data_dir: &Path, args: &[String], config_path: &Path) -> Result<Started> {
    if let Some(pid) = live_pid(data_dir) {
        bail!("hangar is already running for {} (pid {pid}): stop it with `hangar daemon stop`", data_dir.display());
    }
    hangar_agent::files::ensure_dir(data_dir, hangar_agent::files::TRAVERSE_DIR).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let log = private_log(&log_file(data_dir))?;
    // setsid: the daemon leaves this terminal's session and survives it.
    let child = Command::new("setsid")
        .arg(std::env::current_exe()?)
        .args(args)
        .env("HANGAR_CONFIG", config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the daemon (is setsid installed?)")?;
    pid_file(data_dir).write(child.id())?;
    // Wait until it answers, so `start` returning means it is up.
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if live_pid(data_dir).is_none() {
            bail!("the daemon exited during startup: see {}", log_file(data_dir).display());
        }
        if let Ok(cfg) = config::load(config_path)
            && hub_answers(&cfg).await {
                return Ok(Started { pid: child.id(), hub_url: cfg.hub_url });
            }
    }
    bail!("the daemon did not answer within 30s: see {}", log_file(data_dir).display())
}

async fn hub_answers(cfg: &config::ClientConfig) -> bool {
    match hangar_client::HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token) {
        Ok(c) => c.info().await.is_ok(),
        Err(_) => false,
    }
}

/// Whether the daemon runs and whether the hub of the client config answers.
pub struct Status {
    pub pid: Option<u32>,
    pub hub_answers: bool,
}

pub async fn status(data_dir: &Path, config_path: &Path) -> Status {
    let hub_answers = match config::load(config_path) {
        Ok(cfg) => hub_answers(&cfg).await,
        Err(_) => false,
    };
    Status { pid: live_pid(data_dir), hub_answers }
}

/// The last `lines` lines of the daemon's log.
pub fn log_tail(data_dir: &Path, lines: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(log_file(data_dir)).with_context(|| format!("no log at {}", log_file(data_dir).display()))?;
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].iter().map(|l| l.to_string()).collect())
}

/// Stops the daemon (its instances keep running); the PID it had, if it ran.
pub async fn stop(data_dir: &Path) -> Option<u32> {
    let pid = live_pid(data_dir);
    if let Some(pid) = pid {
        crate::proc::stop(pid, is_hangar, Duration::from_secs(10)).await;
    }
    pid_file(data_dir).remove();
    pid
}

/// Opens a log for appending, 0600 (also one an older hangar made 0644): agents and
/// hubs log tenants' errors.
pub(crate) fn private_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(hangar_agent::files::PRIVATE_FILE).open(path)?;
    hangar_agent::files::make_private(path)?;
    Ok(f)
}
