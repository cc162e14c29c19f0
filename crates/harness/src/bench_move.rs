//! `hangar bench --only move`: a workspace of `mib` MiB moved between two hosts
//! (network namespaces of this machine) by `hangar instance move`, next to the raw
//! tool in the same run: a read-only snapshot of the same volume sent with
//! `btrfs send` over plain TCP from the source host's namespace into `btrfs receive`
//! in the target's pool, and the peer a user would pick: the same through OpenSSH
//! (`btrfs send | ssh 'btrfs receive'`). While the move's first pass runs, 10 MiB are written in the
//! instance, so its final pass (and the downtime: stopped on the source until running
//! on the target, as the move reports it) carries them.

use crate::bench_copy::{instance_on, raw_stream, ssh_stream, RawSink};
use crate::fleet::{wait_host, Fleet};
use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::moves::{InstanceMove, MovePhase};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct MoveBench {
    /// Bytes of the volume's data (the file written before the move).
    pub bytes: u64,
    /// The move: request to `done` (the source's copy removed), and to `started`
    /// (running on the target).
    pub move_secs: f64,
    pub started_secs: f64,
    /// `btrfs send | btrfs receive` of the same subvolume between the same hosts.
    pub raw_secs: f64,
    /// The peer: the same, through OpenSSH (`btrfs send | ssh 'btrfs receive'`).
    pub ssh_secs: f64,
    pub downtime_ms: u64,
    /// Bytes the move sent in all, and in its first pass.
    pub sent_bytes: u64,
    pub first_pass_bytes: u64,
    /// Whether the 10 MiB were written while the first pass ran (on a small volume the
    /// first pass may end before them).
    pub delta_in_first_pass: bool,
    /// Each phase as first seen, seconds after the request (polled every 50 ms).
    /// (The move's bytes are recorded at the end of each pass, not during it.)
    pub phases: Vec<(MovePhase, f64)>,
}

const HOSTS: [&str; 2] = ["bmv-a", "bmv-b"];
const DELTA: u64 = 10 << 20;

fn btrfs_delete(path: &std::path::Path) {
    if path.exists() {
        let _ = Command::new("btrfs").args(["subvolume", "delete"]).arg(path).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

pub async fn run(c: &HubClient, fleet: &Fleet, tenant: &str, mib: u64) -> Result<MoveBench> {
    for h in HOSTS {
        c.host_add(&HostAdd { name: h.parse()?, provider: Some("local".into()), join_ttl_secs: None }).await?;
        wait_host(c, h, HostState::Ready, Duration::from_secs(60)).await?;
    }
    let src = instance_on(c, tenant, "mvsrc", HOSTS[0], mib + 256).await?;
    let sb = src.id.sandbox_id().to_string();
    let pool = |h: &str| fleet.data_dir().join("hosts").join(h).join("agent/storage/pool");
    let vol = pool(HOSTS[0]).join("volumes").join(&sb);
    // Random bytes, written on the host straight into the volume.
    let big = vol.join("big.bin");
    let ok = Command::new("dd").arg("if=/dev/urandom").arg(format!("of={}", big.display())).args(["bs=1M", &format!("count={mib}"), "status=none"]).status()?.success();
    if !ok || !Command::new("sync").status()?.success() {
        bail!("cannot write {}", big.display());
    }
    let bytes = std::fs::metadata(&big)?.len();
    let sum = |p: &std::path::Path| -> Result<String> {
        let o = Command::new("sha256sum").arg(p).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string())
    };
    let sha = sum(&big)?;

    // Raw: a read-only snapshot of the same volume, sent between the same two hosts.
    let snap = pool(HOSTS[0]).join("raw-bench-snap");
    let into = pool(HOSTS[1]).join("raw-bench-recv");
    btrfs_delete(&into.join("raw-bench-snap"));
    btrfs_delete(&snap);
    if !Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(&vol).arg(&snap).stdout(Stdio::null()).status()?.success() {
        bail!("cannot snapshot {}", vol.display());
    }
    std::fs::create_dir_all(&into)?;
    let (send, receive) = (format!("btrfs send -q {}", snap.display()), format!("btrfs receive -q {}", into.display()));
    let raw = raw_stream(c, HOSTS, &send, RawSink::Command(receive.clone())).await;
    let received = into.join("raw-bench-snap").join("big.bin");
    let raw_same = raw.is_ok() && sum(&received).is_ok_and(|s| s == sha);
    btrfs_delete(&into.join("raw-bench-snap"));
    // The peer, the same through OpenSSH.
    let ssh = if raw_same { ssh_stream(c, HOSTS, &send, RawSink::Command(receive), fleet.dir.path()).await } else { Ok(0.0) };
    let ssh_same = ssh.is_ok() && sum(&received).is_ok_and(|s| s == sha);
    btrfs_delete(&into.join("raw-bench-snap"));
    let _ = std::fs::remove_dir(&into);
    btrfs_delete(&snap);
    let raw_secs = raw?;
    if !raw_same {
        bail!("the raw receive does not hold the volume's bytes");
    }
    let ssh_secs = ssh?;
    if !ssh_same {
        bail!("the receive through ssh does not hold the volume's bytes");
    }

    // The move, with 10 MiB written in the instance while the first pass runs.
    let t = Instant::now();
    c.instance_move(tenant, "mvsrc", &InstanceMove::to(HOSTS[1].parse()?)).await?;
    let mut phases: Vec<(MovePhase, f64)> = vec![];
    let mut first_pass_bytes = 0u64;
    let mut delta: Option<tokio::task::JoinHandle<Result<bool>>> = None;
    let first_snapshot = pool(HOSTS[0]).join("snapshots").join(&sb).join("mv-1");
    let m = loop {
        let m = c.instance_move_status(tenant, "mvsrc").await?;
        if phases.last().map(|p| p.0) != Some(m.phase) {
            phases.push((m.phase, t.elapsed().as_secs_f64()));
        }
        // The move records its bytes at each phase's end: at `stopping`, the first pass.
        if m.phase == MovePhase::Stopping {
            first_pass_bytes = m.bytes;
        }
        if delta.is_none() && m.phase == MovePhase::Sending && first_snapshot.exists() {
            // The first pass's snapshot exists: the write lands after it.
            let (c, tenant) = (c.clone(), tenant.to_string());
            delta = Some(tokio::spawn(async move {
                // `sync FILE`: a plain `sync` waits on every filesystem of the (shared)
                // machine and, still running at the stop, held it for a second.
                let cmd = format!("head -c {DELTA} /dev/urandom > /home/delta.bin && sync /home/delta.bin");
                let r = c.instance_exec(&tenant, "mvsrc", &ExecRequest { command: vec!["sh".into(), "-c".into(), cmd], env: Default::default(), timeout_secs: Some(60) }).await?;
                // Still in the first pass once written?
                let after = c.instance_move_status(&tenant, "mvsrc").await?;
                Ok(r.exit_code == 0 && after.phase == MovePhase::Sending)
            }));
        }
        if m.phase.is_final() {
            break m;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("the move is still {} after 30 min", m.phase);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let move_secs = t.elapsed().as_secs_f64();
    if m.phase != MovePhase::Done {
        bail!("the move ended {}: {}", m.phase, m.error.unwrap_or_default());
    }
    let delta_in_first_pass = match delta {
        Some(h) => h.await?.unwrap_or(false),
        None => false,
    };
    let started_secs = phases.iter().find(|p| p.0 == MovePhase::Started).or_else(|| phases.iter().find(|p| p.0 == MovePhase::Done)).map(|p| p.1).unwrap_or(move_secs);
    let moved = pool(HOSTS[1]).join("volumes").join(&sb);
    if sum(&moved.join("big.bin"))? != sha {
        bail!("the moved volume's file differs from the original");
    }
    if delta_in_first_pass && std::fs::metadata(moved.join("delta.bin")).map(|m| m.len()).unwrap_or(0) != DELTA {
        bail!("the 10 MiB written during the first pass did not arrive");
    }
    let op = c.instance_delete(tenant, "mvsrc").await?;
    c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    Ok(MoveBench {
        bytes,
        move_secs,
        started_secs,
        raw_secs,
        ssh_secs,
        downtime_ms: m.downtime_ms.context("the move reported no downtime")?,
        sent_bytes: m.bytes,
        first_pass_bytes,
        delta_in_first_pass,
        phases,
    })
}
