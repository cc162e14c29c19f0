//! `hangar bench --only backup`: a first backup of a generated tree, an incremental one
//! after a 5% change, and a restore, each next to `restic backup` / `restic restore` of
//! the same tree to the same kind of target (a directory) in the same run. Both tools
//! back up a read-only snapshot of the volume.

use anyhow::{bail, Context, Result};
use hangar_client::HubClient;
use hangar_types::api::{ImageRef, InstanceCreate, InstanceSpec, OperationStatus};
use hangar_types::backups::{BackupRestore, BackupTargetAdd, BackupTargetSet};
use hangar_types::OperationId;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One comparison: seconds for hangar and for restic, and the bytes they moved.
pub struct Sample {
    pub metric: &'static str,
    pub hangar_secs: f64,
    pub restic_secs: f64,
    pub bytes: u64,
}

const PASSWORD: &str = "hangar-bench-restic";

/// Where the agent keeps a volume on this machine (the harness's own fleet).
fn volume_path(data: &Path, volume: &str) -> Result<PathBuf> {
    let mut stack = vec![data.join("agent/storage")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) || e.file_name() == "snapshots" {
                continue;
            }
            if e.file_name() == volume {
                return Ok(p);
            }
            if p.components().count() < data.components().count() + 6 {
                stack.push(p);
            }
        }
    }
    bail!("volume {volume} not found under {}", data.join("agent/storage").display())
}

/// Deterministic incompressible bytes (xorshift), so neither tool dedups or compresses
/// what a real workspace would not let it.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// About `mib` MiB: 40% in 16 KiB files (many small), 60% in four large files.
fn generate(root: &Path, mib: u64, seed: u64) -> Result<u64> {
    let total = mib << 20;
    let small = (total * 4 / 10) / (16 << 10);
    for i in 0..small {
        let dir = root.join(format!("src/d{:03}", i % 500));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i}.dat")), noise(16 << 10, seed + i))?;
    }
    std::fs::create_dir_all(root.join("big"))?;
    for i in 0..4 {
        std::fs::write(root.join(format!("big/large{i}.bin")), noise((total * 6 / 10 / 4) as usize, seed + 1_000_000 + i))?;
    }
    Ok(total)
}

/// Rewrites about 5% of the tree: every twentieth small file and a slice of one large file.
fn change(root: &Path, mib: u64) -> Result<()> {
    let small = ((mib << 20) * 4 / 10) / (16 << 10);
    for i in (0..small).step_by(20) {
        std::fs::write(root.join(format!("src/d{:03}/f{i}.dat", i % 500)), noise(16 << 10, 7_000_000 + i))?;
    }
    let big = root.join("big/large0.bin");
    let mut bytes = std::fs::read(&big)?;
    let n = (bytes.len() / 20).min(bytes.len());
    bytes[..n].copy_from_slice(&noise(n, 9_000_000));
    std::fs::write(big, bytes)?;
    Ok(())
}

/// Writes the generator's dirty pages out (`syncfs` of the volume's filesystem), so that
/// neither tool pays for them: whichever went first would (hangar's read-only snapshot
/// commits the filesystem, and restic reads through the page cache after it).
fn settle(vol: &Path) -> Result<()> {
    if !Command::new("sync").arg("-f").arg(vol).status()?.success() {
        bail!("sync -f {} failed", vol.display());
    }
    Ok(())
}

fn restic(repo: &Path, args: &[&str]) -> Result<Duration> {
    let pw = repo.with_extension("pw");
    std::fs::write(&pw, PASSWORD)?;
    let t = Instant::now();
    let o = Command::new("restic").arg("-r").arg(repo).arg("--password-file").arg(&pw).arg("--no-cache").args(args).output().context("cannot run restic (apt-get install restic)")?;
    if !o.status.success() {
        bail!("restic {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(t.elapsed())
}

/// `restic backup` of a read-only btrfs snapshot of `vol`, as hangar backs up one (a
/// consistent tree, and the same cold page cache: a snapshot's files are other inodes
/// than the volume's, whose pages the generator left cached). The snapshot is made at
/// the same path each time, so restic finds its parent; only restic's run is timed.
fn restic_of_snapshot(repo: &Path, vol: &Path) -> Result<Duration> {
    let snap = vol.parent().and_then(Path::parent).context("the volume has no pool")?.join("bench-restic-snapshot");
    let btrfs = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let o = Command::new("btrfs").args(args).output()?;
        if !o.status.success() {
            bail!("btrfs {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    };
    btrfs(&["subvolume".as_ref(), "snapshot".as_ref(), "-r".as_ref(), vol.as_os_str(), snap.as_os_str()])?;
    let took = restic(repo, &["backup", &snap.display().to_string()]);
    btrfs(&["subvolume".as_ref(), "delete".as_ref(), snap.as_os_str()])?;
    took
}

/// Waits for operation `id`, asked for at `asked`, on the hub's long-poll (answered the
/// moment it ends, so the time is the job's, not a poll interval's); the time from the
/// request to the end, the request's own call included.
async fn finish(c: &HubClient, id: OperationId, asked: Instant) -> Result<Duration> {
    let op = c.operation_wait_final(id, Duration::from_secs(3600)).await?;
    if op.status != OperationStatus::Succeeded {
        bail!("{} {}: {}", op.kind, op.status.as_str(), op.error.unwrap_or_default());
    }
    Ok(asked.elapsed())
}

/// Runs the comparison on the fleet whose data dir is `data` (tenant `bench` exists).
pub async fn run(c: &HubClient, data: &Path, work: &Path, mib: u64) -> Result<Vec<Sample>> {
    let spec = InstanceSpec { image: ImageRef::Host, vcpus: 1, mem_mib: 128, disk_mib: mib * 3 + 256, command: vec![], env: Default::default(), secrets: vec![] };
    let op = c.instance_create("bench", &InstanceCreate::new("bk".parse()?, spec, false)).await?;
    c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    let inst = c.instance_get("bench", "bk").await?;
    let vol = volume_path(data, inst.id.sandbox_id().as_str())?;
    let bytes = generate(&vol, mib, 1)?;
    settle(&vol)?;
    let (hangar_target, restic_repo) = (work.join("hangar-target"), work.join("restic-repo"));
    std::fs::create_dir_all(&hangar_target)?;
    let req = BackupTargetAdd { name: "bench-dir".parse()?, location: format!("dir:{}", hangar_target.display()), endpoint: None, region: None, access_key: None, secret_key: None };
    c.backup_target_add(&req).await?;
    c.backup_target_set("bench", &BackupTargetSet { target: Some("bench-dir".parse()?) }).await?;
    restic(&restic_repo, &["init", "--repository-version", "2"])?;
    let mut out = vec![];

    let asked = Instant::now();
    let first = finish(c, c.backup_create("bench", "bk").await?.id, asked).await?;
    let r_first = restic_of_snapshot(&restic_repo, &vol)?;
    out.push(Sample { metric: "first backup", hangar_secs: first.as_secs_f64(), restic_secs: r_first.as_secs_f64(), bytes });

    change(&vol, mib)?;
    settle(&vol)?;
    let asked = Instant::now();
    let incr = finish(c, c.backup_create("bench", "bk").await?.id, asked).await?;
    let r_incr = restic_of_snapshot(&restic_repo, &vol)?;
    out.push(Sample { metric: "incremental backup (5% changed)", hangar_secs: incr.as_secs_f64(), restic_secs: r_incr.as_secs_f64(), bytes });

    let backup = c.backup_list("bench", "bk").await?.pop().context("no backup recorded")?;
    // Like with like: both restore the whole tree into an empty directory (hangar: the
    // emptied volume of the stopped instance), neither makes an instance.
    for e in std::fs::read_dir(&vol)? {
        let p = e?.path();
        if p.is_dir() { std::fs::remove_dir_all(&p)? } else { std::fs::remove_file(&p)? }
    }
    let req = BackupRestore { backup: backup.id, path: None, as_instance: None, force: false };
    let asked = Instant::now();
    let restore = finish(c, c.backup_restore("bench", "bk", &req).await?.id, asked).await?;
    let dest = work.join("restic-restore");
    let r_restore = restic(&restic_repo, &["restore", "latest", "--target", &dest.display().to_string()])?;
    out.push(Sample { metric: "restore (into an empty volume)", hangar_secs: restore.as_secs_f64(), restic_secs: r_restore.as_secs_f64(), bytes });

    for n in ["bk"] {
        let op = c.instance_delete("bench", n).await?;
        c.operation_wait_final(op.id, Duration::from_secs(120)).await?;
    }
    c.backup_target_set("bench", &BackupTargetSet { target: None }).await?;
    c.backup_target_remove("bench-dir").await?;
    Ok(out)
}
