//! A sandbox's pinned namespaces: a user namespace with the instance's id mapping and a
//! network namespace it owns, each kept alive by a bind mount (like `ip netns add`), so
//! the sandbox joins both by path and its runtime makes neither on the start path.
//!
//! A user namespace can only be made by a single-threaded process (`unshare(2)` and
//! `setns(2)` refuse `CLONE_NEWUSER` in a multithreaded one, which the agent is), so
//! each pair is made by a helper: util-linux `unshare --user --net` running a shell that
//! says it is ready and waits on its stdin. No `fork` in the agent, no `unsafe`. The
//! agent keeps a few such helpers ready ([`Spares`]); pinning one to a sandbox is then
//! two map writes and two bind mounts: the agent (root in the parent user namespace)
//! writes the instance's mapping into the helper's `uid_map`/`gid_map`, bind-mounts its
//! `ns/user` and `ns/net`, and closes the helper's stdin, which ends it. A helper whose
//! agent dies reads EOF and exits too, so helpers never outlive their agent.

use super::NetError;
use hangar_types::idmap::IdRange;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// Where pinned user namespaces live (`hg-<host>-<sandbox>`, beside `/run/netns`): a
/// tmpfs, so they go with the kernel objects at reboot.
pub(super) const USERNS_DIR: &str = "/run/hangar/userns";

/// Helpers kept ready: enough for a few starts in a row; a burst past them makes its
/// own helpers on the start path (one light `unshare` spawn each).
const SPARES: usize = 2;

/// How long a helper may take to make its namespaces.
const READY_WITHIN: Duration = Duration::from_secs(10);

fn sys(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let context = context.into();
    move |source| NetError::Sys { context, source }
}

/// A live helper in fresh user and network namespaces (loopback up, no id mapping yet).
pub(super) struct Spare {
    /// Killed if dropped unfinished (`kill_on_drop`).
    child: Option<tokio::process::Child>,
    /// Closing it ends the helper.
    stdin: Option<tokio::process::ChildStdin>,
    /// Held unreaped in `child`, so the pid cannot be reused while this lives.
    pid: u32,
}

impl Spare {
    /// Starts a helper and waits until its namespaces exist; brings its loopback up.
    async fn make() -> Result<Spare, NetError> {
        let mut child = tokio::process::Command::new("unshare")
            .args(["--user", "--net", "--", "sh", "-c", "echo ready; read _"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(sys("run unshare (util-linux) to make a sandbox's user namespace"))?;
        let pid = child.id().ok_or_else(|| NetError::Sys { context: "unshare".into(), source: std::io::Error::other("exited at once") })?;
        let stdin = child.stdin.take();
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let ready = tokio::time::timeout(READY_WITHIN, out.read_line(&mut line)).await;
        if !matches!(ready, Ok(Ok(n)) if n > 0) {
            let _ = child.start_kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut err)).await;
            }
            return Err(NetError::Sys {
                context: "unshare --user --net".into(),
                source: std::io::Error::other(format!("no user namespace was made ({}): are user namespaces enabled (user.max_user_namespaces)?", err.trim())),
            });
        }
        let spare = Spare { child: Some(child), stdin, pid };
        super::bridge::loopback_up(PathBuf::from(format!("/proc/{pid}/ns/net"))).await?;
        Ok(spare)
    }

    /// Gives the namespaces the mapping `ids` (0..size inside) and pins them at `user`
    /// and `net`; the helper ends. Nothing is left pinned on error.
    fn pin(mut self, ids: IdRange, user: &Path, net: &Path) -> Result<(), NetError> {
        let map = format!("0 {} {}\n", ids.base, ids.size);
        for f in ["uid_map", "gid_map"] {
            let p = format!("/proc/{}/{f}", self.pid);
            std::fs::write(&p, &map).map_err(sys(format!("write {p}")))?;
        }
        let r = bind_ns(&format!("/proc/{}/ns/user", self.pid), user).and_then(|()| bind_ns(&format!("/proc/{}/ns/net", self.pid), net));
        if r.is_err() {
            let _ = unpin(user);
            let _ = unpin(net);
        }
        self.finish();
        r
    }

    /// Ends the helper (EOF on its stdin) and reaps it in the background.
    fn finish(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// Bind-mounts the namespace file `from` at `to`, made as an empty file first.
fn bind_ns(from: &str, to: &Path) -> Result<(), NetError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(sys(format!("create {}", dir.display())))?;
    }
    std::fs::File::create(to).map_err(sys(format!("create {}", to.display())))?;
    nix::mount::mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| NetError::Sys { context: format!("bind-mount {from} at {}", to.display()), source: e.into() })
}

/// Whether `path` is a pinned namespace (a bind mount of an nsfs file), not the empty
/// file left when the mount is gone (a reboot, an agent killed while pinning).
pub(super) fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Unmounts and removes a pinned namespace; Ok if absent.
pub(super) fn unpin(path: &Path) -> Result<(), NetError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
    std::fs::remove_file(path).map_err(sys(format!("remove {}", path.display())))
}

/// The helpers kept ready ([`Spare`]); dropping it ends them.
#[derive(Default)]
pub(super) struct Spares(tokio::sync::Mutex<Vec<Spare>>);

impl Spares {
    /// Pins a pair for `ids` at `user` and `net` from a ready helper, or from one made
    /// now when none is ready (or the ready one died).
    pub(super) async fn pin(&self, ids: IdRange, user: &Path, net: &Path) -> Result<(), NetError> {
        loop {
            let Some(spare) = self.0.lock().await.pop() else { break };
            match spare.pin(ids, user, net) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!(error = %e, "a ready sandbox namespace helper failed; trying another"),
            }
        }
        Spare::make().await?.pin(ids, user, net)
    }

    /// Makes helpers until [`SPARES`] are ready (off the start path).
    pub(super) async fn top_up(&self) -> Result<(), NetError> {
        while self.0.lock().await.len() < SPARES {
            let s = Spare::make().await?;
            self.0.lock().await.push(s);
        }
        Ok(())
    }

    /// Ends every ready helper.
    pub(super) async fn clear(&self) {
        for mut s in self.0.lock().await.drain(..) {
            s.finish();
        }
    }
}
