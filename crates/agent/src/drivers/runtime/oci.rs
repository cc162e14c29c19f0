//! runc and crun, driven through their command lines with a private state root.

use super::logs::{self, LogLimits, LogPumps};
use super::{bundle, Runtime, RuntimeError, SandboxSpec, SandboxStatus};
use crate::identity::AgentPaths;
use hangar_types::api::{ExecRequest, ExecResult, InstanceStats};
use hangar_types::SandboxId;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Which OCI runtime program; everything else is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    Runc,
    Crun,
}

pub(super) fn open_runc(paths: &AgentPaths, logs: LogLimits) -> Arc<dyn Runtime> {
    Arc::new(OciRuntime::new(Flavor::Runc, paths, logs))
}

pub(super) fn open_crun(paths: &AgentPaths, logs: LogLimits) -> Arc<dyn Runtime> {
    Arc::new(OciRuntime::new(Flavor::Crun, paths, logs))
}

/// An OCI runtime with its own state root (`--root`), so each agent has its own
/// namespace of sandboxes and never touches anyone else's.
pub struct OciRuntime {
    flavor: Flavor,
    state_root: PathBuf,
    bundles: PathBuf,
    /// Parsed state files by sandbox dir, keyed by their mtime and length: a state file
    /// holds the whole OCI config (tens of KiB) and barely ever changes, and every
    /// convergence pass looks at every sandbox.
    state_cache: std::sync::Mutex<std::collections::HashMap<PathBuf, (StateKey, std::sync::Arc<RuncState>)>>,
    /// Where each sandbox's log is (`AgentPaths::log_file`).
    paths: AgentPaths,
    /// The copies of the workloads' output into their logs.
    pumps: LogPumps,
    /// Numbers each exec's process file.
    exec_seq: std::sync::atomic::AtomicU64,
}

type StateKey = (std::time::SystemTime, u64);

/// What status, pause and resume need of runc's `state.json`.
#[derive(serde::Deserialize)]
struct RuncState {
    init_process_pid: u64,
    init_process_start: u64,
    #[serde(default)]
    cgroup_paths: std::collections::BTreeMap<String, String>,
}

/// Output of exec is capped so a chatty command cannot exhaust the agent's memory.
const MAX_OUTPUT: usize = hangar_types::api::EXEC_OUTPUT_MAX_BYTES;

impl OciRuntime {
    fn new(flavor: Flavor, paths: &AgentPaths, logs: LogLimits) -> Self {
        OciRuntime {
            flavor,
            state_root: paths.runtime_root(),
            bundles: paths.bundles(),
            state_cache: Default::default(),
            paths: paths.clone(),
            pumps: LogPumps::new(logs),
            exec_seq: Default::default(),
        }
    }

    fn program(&self) -> &'static str {
        match self.flavor {
            Flavor::Runc => "runc",
            Flavor::Crun => "crun",
        }
    }

    /// The runtime command with its state root. crun 1.8 refuses a hybrid cgroup layout
    /// whose cgroup2 mount (/sys/fs/cgroup/unified) lists controllers ("cgroups in hybrid
    /// mode not supported, drop all controllers from cgroupv2"), so crun is wrapped in
    /// `unshare -m` with that mount removed in its private mount namespace.
    fn cmd(&self) -> Command {
        match self.flavor {
            Flavor::Runc => {
                let mut c = Command::new("runc");
                c.arg("--root").arg(&self.state_root);
                c
            }
            Flavor::Crun => {
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c", "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun \"$@\"", "crun"]);
                c.arg("--root").arg(&self.state_root);
                c
            }
        }
    }

    async fn run(&self, action: &'static str, id: &str, args: &[&str]) -> Result<Vec<u8>, RuntimeError> {
        let out = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| RuntimeError::Spawn { program: self.program().into(), source })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.contains("does not exist") || stderr.contains("not found") || stderr.contains("No such file") {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        Err(RuntimeError::Command { runtime: self.program(), action, id: id.to_string(), stderr })
    }

    /// Whether the sandbox's init handles SIGTERM. PID 1 of a namespace ignores signals
    /// it has no handler for (`sleep infinity` is the classic case), so waiting out a
    /// grace period after TERM would only delay the KILL that follows.
    async fn init_catches_sigterm(&self, id: &SandboxId) -> bool {
        let Ok(out) = self.run("state", id.as_str(), &["state", id.as_str()]).await else { return true };
        let pid = serde_json::from_slice::<serde_json::Value>(&out).ok().and_then(|v| v["pid"].as_u64());
        let Some(pid) = pid else { return true };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return true };
        let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
        caught.is_none_or(|mask| mask & (1 << (15 - 1)) != 0)
    }

    /// Writes the bundle and runs the sandbox detached (`run -d`), its stdio on the log
    /// file.
    async fn run_detached(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let bundle = self.bundle_dir(&spec.id);
        // A bundle left by a crash may hold a stale rootfs: start from scratch.
        let _ = std::fs::remove_dir_all(&bundle);
        std::fs::create_dir_all(&bundle).map_err(|e| RuntimeError::Bundle { id: spec.id.to_string(), detail: e.to_string() })?;
        bundle::write(&bundle, spec)?;
        if let Some(dir) = spec.log_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let log_err = |e: std::io::Error| RuntimeError::Bundle { id: spec.id.to_string(), detail: format!("log {}: {e}", spec.log_path.display()) };
        let fifo = bundle.join(logs::LOG_FIFO);
        let log = logs::workload_stdio(&fifo).map_err(log_err)?;
        let rx = logs::reader(&fifo).map_err(log_err)?;
        let log2 = log.try_clone().map_err(log_err)?;
        // Detached, with the workload's stdio on the log FIFO, which the sandbox holds
        // read-write: it does not depend on the agent staying alive (see `logs`).
        let out = self
            .cmd()
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(&spec.id)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .await
            .map_err(|source| RuntimeError::Spawn { program: self.program().into(), source })?;
        if !out.success() {
            let _ = self.run("delete", spec.id.as_str(), &["delete", "--force", spec.id.as_str()]).await;
            // runc's own complaint went to the FIFO, which nobody writes to any more.
            let said = logs::read_to_end(rx, 64 << 10, Duration::from_secs(1)).await;
            let _ = self.pumps.append(&spec.log_path, said.as_bytes());
            let last: Vec<&str> = said.lines().rev().take(3).collect();
            return Err(RuntimeError::Command {
                runtime: self.program(),
                action: "run",
                id: spec.id.to_string(),
                stderr: last.into_iter().rev().collect::<Vec<_>>().join(" | "),
            });
        }
        self.pumps.start(&spec.id, rx, &spec.log_path).map_err(log_err)?;
        Ok(())
    }

    fn bundle_dir(&self, id: &SandboxId) -> PathBuf {
        self.bundles.join(id)
    }

    /// Copies the output of every live sandbox into its log again after an agent
    /// restart (a sandbox started by this agent has its copy already): until then its
    /// writes block on the full FIFO. Every convergence pass lists, so this is the hook.
    fn reattach_logs(&self, listed: &[(SandboxId, SandboxStatus)]) {
        for (id, _) in listed.iter().filter(|(_, st)| *st != SandboxStatus::Stopped) {
            let fifo = self.bundle_dir(id).join(logs::LOG_FIFO);
            if !fifo.exists() {
                continue;
            }
            if let Err(e) = self.pumps.attach(id, &fifo, &self.paths.log_file(id)) {
                tracing::warn!(sandbox = %id, error = %e, "cannot copy the workload's output into its log");
            }
        }
    }

    fn runc_state(&self, id: &SandboxId) -> Option<std::sync::Arc<RuncState>> {
        self.state_file(&self.state_root.join(id)).ok().flatten()
    }

    /// The parsed state file of a sandbox dir (from the cache while unchanged); None if
    /// there is none, an error if it does not parse (runc writing it right now).
    fn state_file(&self, dir: &std::path::Path) -> std::io::Result<Option<std::sync::Arc<RuncState>>> {
        let path = dir.join("state.json");
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = (meta.modified()?, meta.len());
        if let Some((k, st)) = self.state_cache.lock().expect("state cache").get(dir)
            && *k == key {
                return Ok(Some(st.clone()));
            }
        let raw = match std::fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let st: std::sync::Arc<RuncState> = std::sync::Arc::new(serde_json::from_slice(&raw).map_err(std::io::Error::other)?);
        self.state_cache.lock().expect("state cache").insert(dir.to_path_buf(), (key, st.clone()));
        Ok(Some(st))
    }

    /// A sandbox's status read the way runc itself works it out, from its state file,
    /// /proc and the freezer cgroup: no process spawned (a `runc state` or `runc list`
    /// costs several milliseconds on every convergence pass). None if there is no state
    /// file; an unreadable one is an error so callers fall back to runc.
    fn status_from_files(&self, dir: &std::path::Path) -> std::io::Result<Option<SandboxStatus>> {
        let Some(st) = self.state_file(dir)? else { return Ok(None) };
        let (pid, start) = (st.init_process_pid, st.init_process_start);
        // Alive means: the pid exists, is the same process (start time) and is no zombie.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
            let rest: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            // rest[0] is field 3 (state); starttime is field 22.
            rest.first().is_some_and(|st| *st != "Z" && *st != "X") && rest.get(19).and_then(|x| x.parse::<u64>().ok()) == Some(start)
        });
        if !alive {
            return Ok(Some(SandboxStatus::Stopped));
        }
        if dir.join("exec.fifo").exists() {
            return Ok(Some(SandboxStatus::Created));
        }
        Ok(Some(if freezer_frozen(&st) { SandboxStatus::Paused } else { SandboxStatus::Running }))
    }

    /// Every sandbox of the state root, from files; None if any state is unreadable
    /// (then `runc list` decides).
    fn runc_list_from_files(&self) -> Option<Vec<(SandboxId, SandboxStatus)>> {
        let mut out = vec![];
        let mut dirs = std::collections::HashSet::new();
        for e in std::fs::read_dir(&self.state_root).ok()?.flatten() {
            let name = e.file_name().to_str()?.to_string();
            if let Some(st) = self.status_from_files(&e.path()).ok()? {
                out.extend(sandbox_id(&name).map(|id| (id, st)));
            }
            dirs.insert(e.path());
        }
        // Forget sandboxes that are gone.
        self.state_cache.lock().expect("state cache").retain(|d, _| dirs.contains(d));
        Some(out)
    }
}

/// The freezer file of a sandbox and the values meaning frozen / thawed (v1 or v2).
fn freezer_file(state: &RuncState) -> Option<(PathBuf, &'static str, &'static str)> {
    let paths = &state.cgroup_paths;
    if let Some(f) = paths.get("freezer") {
        return Some((PathBuf::from(f).join("freezer.state"), "FROZEN", "THAWED"));
    }
    paths.get("").map(|u| (PathBuf::from(u).join("cgroup.freeze"), "1", "0"))
}

fn freezer_frozen(state: &RuncState) -> bool {
    freezer_file(state).and_then(|(f, frozen, _)| std::fs::read_to_string(f).ok().map(|s| s.trim() == frozen)).unwrap_or(false)
}

/// A listed container as a sandbox id; None, with a warning, for one that is not (the
/// state root is the agent's own, so only a hand-made container can be).
fn sandbox_id(name: &str) -> Option<SandboxId> {
    name.parse().map_err(|e| tracing::warn!(error = %e, "skipping a container that is no hangar sandbox")).ok()
}

fn parse_status(s: &str) -> SandboxStatus {
    match s {
        "running" => SandboxStatus::Running,
        "paused" | "pausing" => SandboxStatus::Paused,
        "created" | "creating" => SandboxStatus::Created,
        _ => SandboxStatus::Stopped,
    }
}

#[async_trait::async_trait]
impl Runtime for OciRuntime {
    fn name(&self) -> &'static str {
        self.program()
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        // No status call up front (a process spawn on the start path): callers start
        // what they saw absent, and a leftover with the same id is handled below.
        match self.run_detached(spec).await {
            Err(RuntimeError::Command { stderr, .. }) if stderr.contains("exists") => match self.status(&spec.id).await? {
                Some(SandboxStatus::Running) => Ok(()),
                _ => {
                    self.stop(&spec.id, Duration::from_secs(1)).await?;
                    self.run_detached(spec).await
                }
            },
            other => other,
        }
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        // runc: thaw the freezer cgroup directly, which is all `runc resume` does.
        if self.flavor == Flavor::Runc
            && let Some(state) = self.runc_state(id)
                && let Some((file, _, thawed)) = freezer_file(&state)
                    && std::fs::write(&file, thawed).is_ok() {
                        return Ok(());
                    }
        match self.run("resume", id.as_str(), &["resume", id.as_str()]).await {
            Ok(_) => Ok(()),
            // Not paused (already running): nothing to do. One spawn instead of two.
            Err(RuntimeError::Command { stderr, .. }) if stderr.contains("not paused") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn status(&self, id: &SandboxId) -> Result<Option<SandboxStatus>, RuntimeError> {
        if self.flavor == Flavor::Runc
            && let Ok(st) = self.status_from_files(&self.state_root.join(id)) {
                return Ok(st);
            }
        match self.run("state", id.as_str(), &["state", id.as_str()]).await {
            Ok(out) => {
                let v: serde_json::Value = serde_json::from_slice(&out)
                    .map_err(|e| RuntimeError::Parse { runtime: self.program(), action: "state", detail: e.to_string() })?;
                Ok(Some(parse_status(v["status"].as_str().unwrap_or(""))))
            }
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self) -> Result<Vec<(SandboxId, SandboxStatus)>, RuntimeError> {
        if !self.state_root.exists() {
            return Ok(vec![]);
        }
        let from_files = if self.flavor == Flavor::Runc { self.runc_list_from_files() } else { None };
        let listed = match from_files {
            Some(l) => l,
            None => {
                let out = self.run("list", "-", &["list", "--format", "json"]).await?;
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
                v.as_array()
                    .map(|a| a.iter().filter_map(|c| Some((sandbox_id(c["id"].as_str()?)?, parse_status(c["status"].as_str().unwrap_or(""))))).collect())
                    .unwrap_or_default()
            }
        };
        self.reattach_logs(&listed);
        Ok(listed)
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        match self.status(id).await? {
            Some(SandboxStatus::Paused) => Ok(()),
            None => Err(RuntimeError::NotFound(id.to_string())),
            _ => {
                // runc: freeze the cgroup directly (what `runc pause` does); else the CLI.
                let direct = self.flavor == Flavor::Runc
                    && self.runc_state(id).and_then(|st| freezer_file(&st)).is_some_and(|(file, frozen, _)| std::fs::write(file, frozen).is_ok());
                if !direct {
                    self.run("pause", id.as_str(), &["pause", id.as_str()]).await?;
                }
                // The freezer may still be FREEZING when the command returns (crun):
                // report warm only once every task is frozen.
                for _ in 0..100 {
                    if self.status(id).await? == Some(SandboxStatus::Paused) {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(RuntimeError::Command { runtime: self.program(), action: "pause", id: id.to_string(), stderr: "the sandbox did not freeze within 1s".into() })
            }
        }
    }

    async fn stop(&self, id: &SandboxId, grace: Duration) -> Result<(), RuntimeError> {
        let Some(status) = self.status(id).await? else {
            let _ = std::fs::remove_dir_all(self.bundle_dir(id));
            return Ok(());
        };
        if status == SandboxStatus::Paused {
            // A frozen task cannot handle a signal: thaw first so TERM can do its work.
            self.run("resume", id.as_str(), &["resume", id.as_str()]).await?;
        }
        if matches!(status, SandboxStatus::Running | SandboxStatus::Paused) && self.init_catches_sigterm(id).await {
            let _ = self.run("kill", id.as_str(), &["kill", id.as_str(), "TERM"]).await;
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline {
                if !matches!(self.status(id).await?, Some(SandboxStatus::Running)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // delete --force SIGKILLs what is left and removes the cgroups.
        match self.run("delete", id.as_str(), &["delete", "--force", id.as_str()]).await {
            Ok(_) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_dir_all(self.bundle_dir(id));
        Ok(())
    }

    async fn exec(&self, id: &SandboxId, req: &ExecRequest) -> Result<ExecResult, RuntimeError> {
        // Exec into a frozen sandbox would hang until it thaws: refuse it up front.
        match self.status(id).await? {
            Some(SandboxStatus::Running) => {}
            None => return Err(RuntimeError::NotFound(id.to_string())),
            Some(other) => {
                return Err(RuntimeError::Command { runtime: self.program(), action: "exec", id: id.to_string(), stderr: format!("the sandbox is {other:?}, not running").to_lowercase() })
            }
        }
        let seq = self.exec_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let files = ExecFiles::write(&self.bundle_dir(id), seq, req).map_err(|detail| RuntimeError::Bundle { id: id.to_string(), detail })?;
        // The command and its environment are in the process file, never in an argv
        // (`ps` shows argv to every user of the host). runc and crun put the process in
        // the sandbox's cgroups, so its pids limit counts it and its children.
        let mut c = self.cmd();
        c.arg("exec").arg("--process").arg(&files.process).arg("--pid-file").arg(&files.pid).arg(id);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = c.spawn().map_err(|source| RuntimeError::Spawn { program: self.program().into(), source })?;
        let so = child.stdout.take().expect("piped stdout");
        let se = child.stderr.take().expect("piped stderr");
        let secs = req.timeout_secs.unwrap_or(60);
        let work = async {
            let (o, e, st) = tokio::join!(read_capped(so), read_capped(se), child.wait());
            (o, e, st)
        };
        let ((stdout, cut_out), (stderr, cut_err), status) = match tokio::time::timeout(Duration::from_secs(secs), work).await {
            Ok(r) => r,
            Err(_) => {
                // Killing runc alone would leave the command running in the sandbox.
                files.kill_process();
                return Err(RuntimeError::ExecTimeout { id: id.to_string(), secs });
            }
        };
        let status = status.map_err(|source| RuntimeError::Spawn { program: self.program().into(), source })?;
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(ExecResult {
            exit_code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            truncated: cut_out || cut_err,
        })
    }

    async fn stats(&self, id: &SandboxId) -> Result<InstanceStats, RuntimeError> {
        if self.status(id).await?.is_none() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        Ok(cgroup_stats(id))
    }

    async fn session(&self, id: &SandboxId, req: &hangar_types::session::SessionRequest) -> Result<super::SessionProcess, RuntimeError> {
        self.session_spawn(id, req).await
    }

}

/// Reads a stream to its end, keeping the first [`MAX_OUTPUT`] bytes; true if it had more.
async fn read_capped(mut r: impl tokio::io::AsyncRead + Unpin) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut cut = false;
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let keep = n.min(MAX_OUTPUT - buf.len());
                buf.extend_from_slice(&chunk[..keep]);
                cut |= keep < n;
            }
        }
    }
    (buf, cut)
}

/// One exec's process file (the OCI `process` runc and crun take with `--process`) and
/// pid file, in the bundle's private `exec` dir; removed when dropped.
struct ExecFiles {
    process: PathBuf,
    pid: PathBuf,
}

impl ExecFiles {
    /// The sandbox's own process (user, capabilities, rlimits, environment: from its
    /// `config.json`) with the request's command, environment and /home as cwd.
    fn write(bundle: &std::path::Path, seq: u64, req: &ExecRequest) -> Result<ExecFiles, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let config = bundle.join("config.json");
        let raw = std::fs::read(&config).map_err(|e| format!("cannot read {}: {e}", config.display()))?;
        let spec: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", config.display()))?;
        let mut process = spec.get("process").cloned().filter(|p| p.is_object()).ok_or_else(|| format!("{} has no process", config.display()))?;
        let base: Vec<String> = process["env"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
        let mut env: Vec<String> = base.into_iter().filter(|kv| !req.env.contains_key(kv.split('=').next().unwrap_or_default())).collect();
        env.extend(req.env.iter().map(|(k, v)| format!("{k}={v}")));
        process["args"] = serde_json::json!(req.command);
        process["env"] = serde_json::json!(env);
        process["cwd"] = serde_json::json!("/home");
        process["terminal"] = serde_json::json!(false);
        if let Some(p) = process.as_object_mut() {
            p.remove("consoleSize");
        }
        let dir = bundle.join("exec");
        crate::files::ensure_dir(&dir, crate::files::PRIVATE_DIR).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let files = ExecFiles { process: dir.join(format!("{seq}.json")), pid: dir.join(format!("{seq}.pid")) };
        let _ = std::fs::remove_file(&files.process);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::files::PRIVATE_FILE)
            .open(&files.process)
            .map_err(|e| format!("cannot create {}: {e}", files.process.display()))?;
        serde_json::to_writer(&mut f, &process).map_err(|e| format!("cannot write {}: {e}", files.process.display()))?;
        Ok(files)
    }

    /// SIGKILLs the command (not runc): its pid is in the pid file once it started.
    fn kill_process(&self) {
        let pid = std::fs::read_to_string(&self.pid).ok().and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|p| *p > 1) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.process);
        let _ = std::fs::remove_file(&self.pid);
    }
}

/// Reads a sandbox's accounting straight from its cgroup (`/hangar/<id>`), for runc and
/// crun alike and without spawning anything. Handles cgroup v1 and the unified v2 layout.
fn cgroup_stats(id: &SandboxId) -> InstanceStats {
    let read = |p: String| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let num = |p: String| read(p).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    if super::unified_cgroups() {
        let d = format!("/sys/fs/cgroup/hangar/{id}");
        let cpu_us = read(format!("{d}/cpu.stat"))
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.parse::<u64>().ok())))
            .unwrap_or(0);
        let limit = |f: &str| read(format!("{d}/{f}")).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
        return InstanceStats {
            cpu_usage_ns: cpu_us * 1000,
            memory_bytes: num(format!("{d}/memory.current")),
            memory_limit_bytes: limit("memory.max"),
            pids: num(format!("{d}/pids.current")),
            pids_limit: limit("pids.max"),
            disk_used_bytes: None,
        };
    }
    let g = |ctl: &str, f: &str| format!("/sys/fs/cgroup/{ctl}/hangar/{id}/{f}");
    InstanceStats {
        cpu_usage_ns: num(g("cpuacct", "cpuacct.usage")),
        memory_bytes: num(g("memory", "memory.usage_in_bytes")),
        memory_limit_bytes: num(g("memory", "memory.limit_in_bytes")),
        pids: num(g("pids", "pids.current")),
        pids_limit: read(g("pids", "pids.max")).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX),
        disk_used_bytes: None,
    }
}

// Interactive sessions (`crate::session` drives them): the exec path with a terminal.
impl OciRuntime {
    async fn session_spawn(&self, id: &SandboxId, req: &hangar_types::session::SessionRequest) -> Result<super::SessionProcess, RuntimeError> {
        let refuse = |stderr: String| RuntimeError::Command { runtime: self.program(), action: "exec", id: id.to_string(), stderr };
        match self.status(id).await? {
            Some(SandboxStatus::Running) => {}
            None => return Err(RuntimeError::NotFound(id.to_string())),
            Some(other) => return Err(refuse(format!("the sandbox is {other:?}, not running").to_lowercase())),
        }
        let seq = self.exec_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let exec = ExecRequest { command: req.command.clone(), env: req.env.clone(), timeout_secs: None };
        let bundle_err = |detail: String| RuntimeError::Bundle { id: id.to_string(), detail };
        let files = ExecFiles::write(&self.bundle_dir(id), seq, &exec).map_err(bundle_err)?;
        let mut c = self.cmd();
        c.arg("exec").arg("--process").arg(&files.process).arg("--pid-file").arg(&files.pid).arg(id).kill_on_drop(true);
        // With a terminal, runc makes the PTY inside the sandbox (its controlling
        // terminal; `tty` names /dev/pts/N there) and, in the foreground, copies between
        // it and its own stdio: a PTY of ours, whose size it copies on SIGWINCH. (A
        // console socket would hand over the inner PTY, but runc only allows one when
        // it detaches, and then nobody gets the exit status.)
        let pty = if req.tty {
            files.set_terminal(req.rows, req.cols).map_err(bundle_err)?;
            let (master, slave) = open_pty(req.rows, req.cols).map_err(|e| bundle_err(format!("cannot open a PTY: {e}")))?;
            let io = |fd: &std::os::fd::OwnedFd| fd.try_clone().map(Stdio::from).map_err(|e| bundle_err(format!("cannot share the PTY: {e}")));
            c.stdin(io(&slave)?).stdout(io(&slave)?).stderr(io(&slave)?);
            Some(master)
        } else {
            c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        };
        let child = c.spawn().map_err(|source| RuntimeError::Spawn { program: self.program().into(), source })?;
        // Our copies of the PTY's slave end go with the command, so the master reads
        // EOF (EIO) once runc is gone.
        drop(c);
        Ok(super::SessionProcess { child, pty, files: Box::new(files) })
    }
}

/// A new PTY pair (master, slave) of this size.
fn open_pty(rows: u16, cols: u16) -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(name.as_c_str(), rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())?;
    if rows > 0 && cols > 0 {
        rustix::termios::tcsetwinsize(&master, rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 })?;
    }
    Ok((master, slave))
}

impl ExecFiles {
    /// Turns the process file into one with a terminal of this size.
    fn set_terminal(&self, rows: u16, cols: u16) -> Result<(), String> {
        use std::io::Write;
        let raw = std::fs::read(&self.process).map_err(|e| format!("cannot read {}: {e}", self.process.display()))?;
        let mut process: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", self.process.display()))?;
        process["terminal"] = serde_json::json!(true);
        if rows > 0 && cols > 0 {
            process["consoleSize"] = serde_json::json!({ "height": rows, "width": cols });
        }
        let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&self.process).map_err(|e| format!("cannot open {}: {e}", self.process.display()))?;
        f.write_all(&serde_json::to_vec(&process).map_err(|e| e.to_string())?).map_err(|e| format!("cannot write {}: {e}", self.process.display()))
    }
}

impl super::SessionFiles for ExecFiles {
    fn kill_process(&self) {
        ExecFiles::kill_process(self)
    }
}
