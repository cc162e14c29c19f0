//! The soak's `transfer` scenario: an instance moved back and forth between two hosts
//! and a file copied across hosts, while the source or the target agent is killed
//! with -9 at a random moment and restarted. Every round checks: the instance is on
//! exactly one host (the placed one holds its volume, the other none), running, its
//! bytes intact; a move's and a transfer's reported progress never went down; no
//! staging (btrfs receive, copy staging, `mv-` snapshots) is left; no ticket is left
//! open in the store.
//!
//! `HANGAR_SOAK_TRANSFER_MIB` sets the size of the moved and copied file (default 32:
//! one round fits well inside the CI band's 60 s; a few hundred for a long run).

use crate::fleet::{wait_host, Fleet};
use anyhow::{anyhow, bail, Context, Result};
use hangar_client::HubClient;
use hangar_store::TransferStore;
use hangar_types::api::*;
use hangar_types::files::{CopyEnd, CopyRequest};
use hangar_types::moves::{InstanceMove, MovePhase, MoveStatus};
use hangar_types::ObservedState;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TENANT: &str = "soaktx";
const HOSTS: [&str; 2] = ["tx-a", "tx-b"];
/// The moved instance; `txa` and `txb` stay on `tx-a` and `tx-b` (copy peers).
const MOVED: &str = "tx1";

/// What the scenario carries from round to round.
pub struct TxState {
    mib: u64,
    /// SHA-256 of `/home/tx.bin` in the moved instance.
    sha: String,
    /// How long the last move and copy with no fault took: kills land at a random
    /// moment inside the next ones.
    last_move_ms: u64,
    last_copy_ms: u64,
    /// Kills that landed while a move or copy was still running (for the error text).
    pub kills_mid_flight: u64,
}

fn mib() -> u64 {
    std::env::var("HANGAR_SOAK_TRANSFER_MIB").ok().and_then(|v| v.parse().ok()).filter(|&m| m > 0).unwrap_or(32)
}

async fn wait_op(c: &HubClient, op: Operation) -> Result<()> {
    let op = c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    if op.status != OperationStatus::Succeeded {
        bail!("{} {} {}: {}", op.kind, op.target, op.status.as_str(), op.error.unwrap_or_default());
    }
    Ok(())
}

async fn exec(c: &HubClient, name: &str, cmd: &str) -> Result<String> {
    let r = c.instance_exec(TENANT, name, &ExecRequest { command: vec!["sh".into(), "-c".into(), cmd.into()], env: Default::default(), timeout_secs: Some(120) }).await?;
    if r.exit_code != 0 {
        bail!("`{cmd}` in {TENANT}/{name} exited {}: {}", r.exit_code, r.stderr.trim());
    }
    Ok(r.stdout)
}

async fn sha(c: &HubClient, name: &str, path: &str) -> Result<String> {
    Ok(exec(c, name, &format!("sha256sum {path} | cut -d' ' -f1")).await?.trim().to_string())
}

/// The two hosts, the tenant, the moved instance with its file and the two peers.
async fn setup(c: &HubClient) -> Result<TxState> {
    for h in HOSTS {
        if c.host_get(h).await.is_err() {
            c.host_add(&HostAdd { name: h.parse()?, provider: Some("local".into()), join_ttl_secs: None }).await?;
        }
        wait_host(c, h, HostState::Ready, Duration::from_secs(90)).await?;
    }
    let mib = mib();
    c.tenant_create(&TenantCreate {
        name: TENANT.parse()?,
        quotas: Some(Quotas { max_vcpus: 64, max_mem_mib: 65536, max_running: 8, max_instances: 8, max_disk_gib: 1000 }),
        isolated: false,
        net_prefix: None,
    })
    .await?;
    // Room for the file and a copy of it (the volume's limit is the disk size).
    let disk = mib * 3 + 128;
    for (name, host) in [(MOVED, HOSTS[0]), ("txa", HOSTS[0]), ("txb", HOSTS[1])] {
        let spec = InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 64, disk_mib: disk, command: vec![], env: Default::default(), secrets: vec![] };
        let mut req = InstanceCreate::new(name.parse()?, spec, true);
        req.host = Some(host.parse()?);
        wait_op(c, c.instance_create(TENANT, &req).await?).await?;
    }
    exec(c, MOVED, &format!("head -c {} /dev/urandom > /home/tx.bin && sync", mib << 20)).await?;
    let sha = sha(c, MOVED, "/home/tx.bin").await?;
    Ok(TxState { mib, sha, last_move_ms: 3000, last_copy_ms: 1000, kills_mid_flight: 0 })
}

fn agent_dir(data: &Path, host: &str) -> PathBuf {
    data.join("hosts").join(host).join("agent")
}

/// kill -9 of `host`'s agent, then `host start` until it is ready again.
async fn kill_and_restart(c: &HubClient, data: &Path, host: &str) -> Result<()> {
    let pid_file = hangar_node::proc::PidFile::new(data.join("hosts").join(host).join("agent.pid"));
    if let Some(pid) = pid_file.live(hangar_node::proc::is_hangar) {
        hangar_node::proc::signal(pid, nix::sys::signal::Signal::SIGKILL);
        // Until the process is gone (a start would otherwise find it alive).
        let t = Instant::now();
        while pid_file.live(hangar_node::proc::is_hangar).is_some() && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    c.host_action(host, "start").await.with_context(|| format!("host start {host} after kill -9"))?;
    wait_host(c, host, HostState::Ready, Duration::from_secs(90)).await?;
    Ok(())
}

/// The hub's store, read beside the running hub (SQLite in WAL mode).
async fn store(data: &Path) -> Result<hangar_store::SqliteStore> {
    Ok(hangar_store::SqliteStore::open(&data.join("hub/hangar.db")).await?)
}

/// Tickets still open after everything that used them ended (the hub fails the ones a
/// killed agent left; they may take a moment): none within 30 s.
async fn no_open_tickets(st: &hangar_store::SqliteStore) -> Result<()> {
    let t = Instant::now();
    loop {
        let open = st.list_open_transfers().await?;
        if open.is_empty() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(30) {
            let ids: Vec<String> = open.iter().map(|t| format!("{} ({:?}, {} bytes)", t.id, t.state, t.bytes)).collect();
            bail!("tickets left open: {}", ids.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Watches every open transfer's recorded bytes: an error if one ever goes down.
#[derive(Default)]
struct Progress(HashMap<String, u64>);

impl Progress {
    async fn sample(&mut self, st: &hangar_store::SqliteStore) -> Result<()> {
        for t in st.list_open_transfers().await? {
            let seen = self.0.entry(t.id.to_string()).or_insert(0);
            if t.bytes < *seen {
                bail!("transfer {}'s progress went back from {} to {} bytes", t.id, seen, t.bytes);
            }
            *seen = t.bytes;
        }
        Ok(())
    }
}

/// What a host still holds of `sb` besides its volume: received or staged snapshots,
/// the move's `mv-` snapshots, copy staging directories inside the volume.
fn leftovers(data: &Path, host: &str, sb: &str) -> Vec<String> {
    let pool = agent_dir(data, host).join("storage/pool");
    let mut out = vec![];
    let staged = pool.join("transfers").join(sb);
    if staged.exists() {
        out.push(staged.display().to_string());
    }
    if let Ok(d) = std::fs::read_dir(pool.join("snapshots").join(sb)) {
        out.extend(d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("mv-")).map(|e| e.path().display().to_string()));
    }
    if let Ok(d) = std::fs::read_dir(pool.join("volumes").join(sb)) {
        out.extend(d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".hangar-copy-")).map(|e| e.path().display().to_string()));
    }
    out
}

/// Retries `check` for up to 30 s (cleanup after a kill runs in the background).
async fn within_30s(what: &str, mut check: impl FnMut() -> Vec<String>) -> Result<()> {
    let t = Instant::now();
    loop {
        let left = check();
        if left.is_empty() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("{what}: {}", left.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The instance `name` is placed on exactly one host: that host has its volume and
/// reports it running, the other has no volume and does not report it, and neither
/// holds staging of it.
async fn placed_once(c: &HubClient, data: &Path, name: &str) -> Result<String> {
    let t = Instant::now();
    let i = loop {
        let i = c.instance_get(TENANT, name).await?;
        if i.observed == ObservedState::Running {
            break i;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("{TENANT}/{name} is {} (observed {}) on {:?} 60 s after the round's faults", i.state, i.observed, i.host);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let owner = i.host.as_ref().map(|h| h.to_string()).ok_or_else(|| anyhow!("{TENANT}/{name} is placed nowhere"))?;
    let other = HOSTS.iter().find(|h| **h != owner).ok_or_else(|| anyhow!("{TENANT}/{name} is on {owner}, not one of {HOSTS:?}"))?;
    let sb = i.id.sandbox_id().to_string();
    let vol = |h: &str| agent_dir(data, h).join("storage/pool/volumes").join(&sb);
    if !vol(&owner).is_dir() {
        bail!("{name} is placed on {owner}, which has no volume of it");
    }
    within_30s(&format!("{name}: {other} still holds a volume of it"), || if vol(other).exists() { vec![vol(other).display().to_string()] } else { vec![] }).await?;
    if c.host_status(other).await?.instances.iter().any(|x| x.id == i.id) {
        bail!("{name} is placed on {owner} but {other} reports it too");
    }
    within_30s(&format!("{name}: staging left"), || HOSTS.iter().flat_map(|h| leftovers(data, h, &sb)).collect()).await?;
    Ok(owner)
}

/// What the round's steps look at: the hub, the fleet's data dir, the hub's store.
struct Env<'a> {
    c: &'a HubClient,
    data: &'a Path,
    st: &'a hangar_store::SqliteStore,
}

/// Follows the move to its end, sampling its bytes and the tickets' every 100 ms;
/// `kill` (host, after) is carried out at that moment, then the host restarted.
async fn follow_move(e: &Env<'_>, kill: Option<(&str, Duration)>, s: &mut TxState) -> Result<MoveStatus> {
    let (c, data, st) = (e.c, e.data, e.st);
    let t = Instant::now();
    let mut last = 0u64;
    let mut kill = kill;
    let mut progress = Progress::default();
    loop {
        let m = c.instance_move_status(TENANT, MOVED).await?;
        if m.bytes < last {
            bail!("the move's progress went back from {last} to {} bytes ({})", m.bytes, m.phase);
        }
        last = m.bytes;
        progress.sample(st).await?;
        if let Some((host, after)) = kill
            && t.elapsed() >= after
        {
            if !m.phase.is_final() {
                s.kills_mid_flight += 1;
            }
            kill_and_restart(c, data, host).await?;
            kill = None;
            continue;
        }
        if m.phase.is_final() && kill.is_none() {
            return Ok(m);
        }
        if t.elapsed() > Duration::from_secs(180) {
            bail!("the move is still {} after 180 s ({last} bytes)", m.phase);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Copies `from`'s `/home/<file>` into `to`'s `/home/<as_name>`; `kill` (host,
/// after) lands during it. A copy cut by the kill must leave nothing partial in place,
/// and the retry must work.
async fn copy(e: &Env<'_>, (from, to, as_name): (&str, &str, &str), kill: Option<(&str, Duration)>, s: &mut TxState) -> Result<()> {
    let (c, data, st) = (e.c, e.data, e.st);
    exec(c, to, &format!("rm -f /home/{as_name}")).await?;
    let end = |i: &str, p: String| -> Result<CopyEnd> { Ok(CopyEnd { tenant: TENANT.parse()?, instance: i.parse()?, path: p }) };
    let req = CopyRequest { from: end(from, "/home/tx.bin".into())?, to: end(to, format!("/home/{as_name}"))?, recursive: false };
    let call = c.files_copy(&req);
    tokio::pin!(call);
    let mut progress = Progress::default();
    let t = Instant::now();
    let mut killed = false;
    let r = loop {
        tokio::select! {
            r = &mut call => break r,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                progress.sample(st).await?;
                if let Some((host, after)) = kill.filter(|_| !killed)
                    && t.elapsed() >= after
                {
                    killed = true;
                    s.kills_mid_flight += 1;
                    kill_and_restart(c, data, host).await?;
                }
            }
        }
    };
    if let Some((host, _)) = kill.filter(|_| !killed) {
        // The copy ended first: the kill lands now, on an idle agent.
        kill_and_restart(c, data, host).await?;
    }
    let size = s.mib << 20;
    match r {
        Ok(done) if done.written.bytes == size => {
            if kill.is_none() {
                s.last_copy_ms = t.elapsed().as_millis() as u64;
            }
        }
        Ok(done) => bail!("copy {from} -> {to} wrote {} bytes of {size}", done.written.bytes),
        Err(e) if killed => {
            // Cut by the kill: nothing partial in place, then the retry works.
            let there = exec(c, to, &format!("test ! -e /home/{as_name} || sha256sum /home/{as_name} | cut -d' ' -f1")).await?;
            if !there.trim().is_empty() && there.trim() != s.sha {
                bail!("a copy cut by kill -9 ({e}) left a partial /home/{as_name} in {to}");
            }
            let done = c.files_copy(&req).await.with_context(|| format!("the copy after the kill ({e})"))?;
            if done.written.bytes != size {
                bail!("the retried copy wrote {} bytes of {size}", done.written.bytes);
            }
        }
        Err(e) => return Err(e).with_context(|| format!("copy {from} -> {to} with no fault")),
    }
    let got = sha(c, to, &format!("/home/{as_name}")).await?;
    if got != s.sha {
        bail!("the copy in {to} has checksum {got}, the original {}", s.sha);
    }
    Ok(())
}

/// One round: a move with a kill at a random moment, the invariants, a cross-host copy
/// with a kill during it, a copy back, the invariants again.
pub async fn round(fleet: &Fleet, c: &HubClient, state: &mut Option<TxState>, rng: &mut dyn FnMut() -> u64) -> Result<()> {
    if state.is_none() {
        *state = Some(setup(c).await.context("transfer setup")?);
    }
    let s = state.as_mut().expect("set above");
    let data = fleet.data_dir();
    let st = store(&data).await?;
    let r = async {
        let src = c.instance_get(TENANT, MOVED).await?.host.map(|h| h.to_string()).ok_or_else(|| anyhow!("{MOVED} is placed nowhere"))?;
        let dst = HOSTS.iter().find(|h| **h != src).map(|h| h.to_string()).ok_or_else(|| anyhow!("{MOVED} is on {src}"))?;
        // Source, target, or nobody; at a random moment of a move's usual length.
        let kill_move = match rng() % 5 {
            0 | 1 => Some(src.as_str()),
            2 | 3 => Some(dst.as_str()),
            _ => None,
        }
        .map(|h| (h, Duration::from_millis(rng() % s.last_move_ms.max(500))));
        let t = Instant::now();
        c.instance_move(TENANT, MOVED, &InstanceMove::to(dst.parse()?)).await?;
        let env = Env { c, data: &data, st: &st };
        let m = follow_move(&env, kill_move, s).await?;
        if kill_move.is_none() {
            s.last_move_ms = t.elapsed().as_millis() as u64;
        }
        let expect = if m.phase == MovePhase::Done { &dst } else { &src };
        if m.phase != MovePhase::Done && kill_move.is_none() {
            bail!("a move with no fault ended {}: {}", m.phase, m.error.unwrap_or_default());
        }
        let owner = placed_once(c, &data, MOVED).await?;
        if &owner != expect {
            bail!("the move ended {} but {MOVED} is placed on {owner}", m.phase);
        }
        for p in ["txa", "txb"] {
            placed_once(c, &data, p).await?;
        }
        let got = sha(c, MOVED, "/home/tx.bin").await?;
        if got != s.sha {
            bail!("after the move ({}) {MOVED}'s file has checksum {got}, expected {}", m.phase, s.sha);
        }
        no_open_tickets(&st).await?;
        // A copy across hosts (to the peer on the other host), killed at random, and back.
        let peer = if owner == HOSTS[0] { "txb" } else { "txa" };
        let peer_host = if owner == HOSTS[0] { HOSTS[1] } else { HOSTS[0] };
        let kill_copy = match rng() % 4 {
            0 => Some(owner.as_str()),
            1 => Some(peer_host),
            _ => None,
        }
        .map(|h| (h, Duration::from_millis(rng() % s.last_copy_ms.max(200))));
        copy(&env, (MOVED, peer, "tx.bin"), kill_copy, s).await?;
        copy(&env, (peer, MOVED, "back.bin"), None, s).await?;
        placed_once(c, &data, MOVED).await?;
        no_open_tickets(&st).await?;
        let who = |k: Option<(&str, Duration)>| k.map(|(h, d)| format!("{h} at {} ms", d.as_millis())).unwrap_or_else(|| "none".into());
        eprintln!("transfer: move {src} -> {dst} {} (kill {}), copy (kill {}); {} kills mid-flight so far", m.phase, who(kill_move), who(kill_copy), s.kills_mid_flight);
        Ok(())
    }
    .await;
    st.close().await;
    r
}
