//! `hangar backup ...`, `hangar tenant update --backup-target` and the purge of
//! `instance delete --hard`: arguments, calls and what they show.

use crate::args::{parse_name, parse_ref};
use crate::output::Out;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hangar_client::{ClientError, HubClient};
use hangar_types::api::{Operation, OperationStatus};
use hangar_types::backups::*;
use hangar_types::{ErrorCode, InstanceRef};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Where backups go (admins).
    #[command(subcommand)]
    Target(TargetCmd),
    /// Back up an instance now, from a snapshot of its volume.
    Create {
        instance: String,
        /// Wait for it to finish, showing progress.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// An instance's backups: id, time, size, files, added bytes.
    List { instance: String },
    /// Browse a backup's files from the index (the repository is not opened).
    Files {
        instance: String,
        /// A backup id or a unique prefix of it.
        backup: String,
        /// A directory (lists it) or a file; the volume's root if left out.
        path: Option<String>,
    },
    /// Find files by name in every backup of an instance (`*`, `?`, `[..]` match).
    Find { instance: String, pattern: String },
    /// Restore a backup (or one path of it) into the instance, or into a new one.
    Restore {
        instance: String,
        backup: String,
        /// Only this file or directory, relative to the volume's root (e.g. home/notes.md).
        #[arg(long)]
        path: Option<String>,
        /// Restore into a new instance of this name (TENANT/NAME or NAME), created stopped.
        #[arg(long = "as")]
        as_instance: Option<String>,
        /// Restore into the instance even while it runs.
        #[arg(long)]
        force: bool,
        /// Return at once with the operation.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Check the integrity of the tenant's repository.
    Check {
        instance: String,
        /// Also read and verify every pack (reads the whole repository).
        #[arg(long)]
        read_data: bool,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// The repository location and password of a tenant, for `restic` (admins).
    Key { tenant: String },
    /// Retention and schedule of a tenant's backups.
    Policy(PolicyArgs),
    /// Backups of hard-deleted instances, due for removal.
    #[command(subcommand)]
    Purge(PurgeCmd),
    /// Cancel a running backup, restore or check.
    Cancel { operation: String },
}

#[derive(Args)]
pub struct FollowArgs {
    /// Seconds to wait for the operation.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

#[derive(Subcommand)]
pub enum TargetCmd {
    /// Add a target (checked first: write, read, list and delete a probe).
    Add {
        name: String,
        /// `dir:/absolute/path` or `s3://bucket/prefix`.
        location: String,
        /// S3: the endpoint URL (default: AWS for the region).
        #[arg(long)]
        endpoint: Option<String>,
        /// S3: a file holding the access key id.
        #[arg(long)]
        access_key_file: Option<PathBuf>,
        /// S3: a file holding the secret access key.
        #[arg(long)]
        secret_key_file: Option<PathBuf>,
        #[arg(long)]
        region: Option<String>,
    },
    /// Check a target again; says which step failed.
    Check { name: String },
    List,
    /// Remove a target no tenant uses (the data in it stays).
    Remove { name: String },
}

#[derive(Args)]
pub struct PolicyArgs {
    pub tenant: String,
    #[arg(long)]
    pub keep_last: Option<u32>,
    #[arg(long)]
    pub keep_daily: Option<u32>,
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// hourly, daily or weekly: back up every instance of the tenant that often, then
    /// apply the keep rules.
    #[arg(long)]
    pub schedule: Option<String>,
}

#[derive(Subcommand)]
pub enum PurgeCmd {
    List,
    /// Keep the backups of a hard-deleted instance.
    Cancel { instance: String },
}

fn read_key_file(flag: &str, path: &Option<PathBuf>) -> Result<Option<String>> {
    path.as_ref()
        .map(|p| std::fs::read_to_string(p).map(|s| s.trim().to_string()).with_context(|| format!("--{flag}: cannot read {}", p.display())))
        .transpose()
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

fn ts(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub async fn tenant_update(c: &HubClient, out: &Out, tenant: &str, backup_target: Option<&str>) -> Result<i32> {
    let Some(target) = backup_target else { bail!("nothing to update: give --backup-target NAME (or none)") };
    let target = if target == "none" { None } else { Some(parse_name("--backup-target", target)?) };
    let s = c.backup_target_set(tenant, &BackupTargetSet { target }).await?;
    out.item(&s, &format!("tenant '{tenant}' backs up to {}", s.target.as_ref().map(ToString::to_string).unwrap_or_else(|| "nothing (backups off)".into())));
    Ok(0)
}

/// `instance delete --hard`: schedules the purge of the instance's backups first (an
/// instance without backups has nothing to purge).
pub async fn schedule_purge(c: &HubClient, out: &Out, r: &InstanceRef) -> Result<()> {
    match c.backup_purge_schedule(r.tenant.as_str(), r.name.as_str()).await {
        Ok(p) => {
            if !out.json {
                eprintln!("backups of {r} are purged at {} unless `hangar backup purge cancel {r}`", ts(p.due_at));
            }
            Ok(())
        }
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound && e.message.contains("no backups") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Follows a backup operation to its end with a progress bar; fails unless it succeeded.
async fn follow(c: &HubClient, out: &Out, op: Operation, timeout: u64) -> Result<BackupProgress> {
    let bar = (!out.json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        pb.set_message(format!("{} {}", op.kind, op.target));
        pb
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    let p = loop {
        let p = c.backup_progress(op.id).await?;
        if let Some(pb) = &bar {
            pb.set_length(p.total_bytes.unwrap_or(p.bytes).max(p.bytes));
            pb.set_position(p.bytes);
            pb.set_message(format!("{} {} ({} files)", op.kind, op.target, p.files));
        }
        if p.operation.status.is_final() {
            break p;
        }
        if std::time::Instant::now() > deadline {
            bail!("{} {} is still running after {timeout}s: follow it with `hangar operation` id {} or cancel it with `hangar backup cancel {}`", op.kind, op.target, op.id, op.id);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    match p.operation.status {
        OperationStatus::Succeeded => Ok(p),
        s => bail!("{} {} {}: {}", op.kind, op.target, s.as_str(), p.operation.error.as_deref().unwrap_or("no reason given")),
    }
}

pub async fn backup_cmd(c: &HubClient, out: &Out, cmd: &BackupCmd) -> Result<i32> {
    match cmd {
        BackupCmd::Target(TargetCmd::Add { name, location, endpoint, access_key_file, secret_key_file, region }) => {
            let req = BackupTargetAdd {
                name: parse_name("name", name)?,
                location: location.clone(),
                endpoint: endpoint.clone(),
                region: region.clone(),
                access_key: read_key_file("access-key-file", access_key_file)?,
                secret_key: read_key_file("secret-key-file", secret_key_file)?,
            };
            let t = c.backup_target_add(&req).await?;
            out.item(&t, &format!("backup target '{}' added: {} (checked: write, read, list, delete)", t.name, t.location));
        }
        BackupCmd::Target(TargetCmd::Check { name }) => {
            let t = c.backup_target_check(name).await?;
            out.item(&t, &format!("backup target '{}' ({}) passed: write, read, list, delete", t.name, t.location));
        }
        BackupCmd::Target(TargetCmd::List) => {
            let list = c.backup_target_list().await?;
            out.table_or_json(&list, &["TARGET", "LOCATION", "ADDED"], list.iter().map(|t| vec![t.name.to_string(), t.location.clone(), ts(t.created_at)]).collect());
        }
        BackupCmd::Target(TargetCmd::Remove { name }) => {
            let t = c.backup_target_remove(name).await?;
            out.item(&t, &format!("backup target '{}' removed (its data stays where it is)", t.name));
        }
        BackupCmd::Create { instance, wait, follow: f } => {
            let r = parse_ref("instance", instance)?;
            let op = c.backup_create(r.tenant.as_str(), r.name.as_str()).await?;
            if !*wait {
                out.item(&op, &format!("backup of {r} started: operation {} (`hangar backup list {r}` shows it once done)", op.id));
                return Ok(0);
            }
            let p = follow(c, out, op, f.timeout).await?;
            let latest = c.backup_list(r.tenant.as_str(), r.name.as_str()).await?.into_iter().last();
            match latest {
                Some(b) => out.item(&b, &format!("backup {} of {r}: {} files, {} MiB, {} MiB added ({} MiB/s)", &b.id[..8.min(b.id.len())], b.files, mib(b.bytes), mib(b.added_bytes), mib(p.rate))),
                None => out.item(&p, &format!("backup of {r} done")),
            }
        }
        BackupCmd::List { instance } => {
            let r = parse_ref("instance", instance)?;
            let list = c.backup_list(r.tenant.as_str(), r.name.as_str()).await?;
            out.table_or_json(
                &list,
                &["BACKUP", "TIME", "SIZE MIB", "FILES", "ADDED MIB", "TARGET"],
                list.iter().map(|b| vec![b.id[..8.min(b.id.len())].to_string(), ts(b.created_at), mib(b.bytes), b.files.to_string(), mib(b.added_bytes), b.target.to_string()]).collect(),
            );
        }
        BackupCmd::Files { instance, backup, path } => {
            let r = parse_ref("instance", instance)?;
            let list = c.backup_files(r.tenant.as_str(), r.name.as_str(), backup, path.as_deref().unwrap_or("")).await?;
            out.table_or_json(
                &list,
                &["PATH", "KIND", "SIZE", "MODIFIED"],
                list.iter().map(|f| vec![f.path.clone(), f.kind.as_str().into(), f.size.to_string(), f.mtime.map(ts).unwrap_or_default()]).collect(),
            );
        }
        BackupCmd::Find { instance, pattern } => {
            let r = parse_ref("instance", instance)?;
            let list = c.backup_find(r.tenant.as_str(), r.name.as_str(), pattern).await?;
            out.table_or_json(
                &list,
                &["BACKUP", "BACKUP TIME", "PATH", "SIZE", "MODIFIED"],
                list.iter().map(|f| vec![f.backup[..8.min(f.backup.len())].to_string(), ts(f.backup_time), f.file.path.clone(), f.file.size.to_string(), f.file.mtime.map(ts).unwrap_or_default()]).collect(),
            );
        }
        BackupCmd::Restore { instance, backup, path, as_instance, force, no_wait, follow: f } => {
            let r = parse_ref("instance", instance)?;
            let as_instance = match as_instance {
                None => None,
                Some(s) if s.contains('/') => {
                    let a = parse_ref("--as", s)?;
                    if a.tenant != r.tenant {
                        bail!("--as: a restore stays in the tenant: use {}/NAME", r.tenant);
                    }
                    Some(a.name)
                }
                Some(s) => Some(parse_name("--as", s)?),
            };
            let req = BackupRestore { backup: backup.clone(), path: path.clone(), as_instance: as_instance.clone(), force: *force };
            let op = c.backup_restore(r.tenant.as_str(), r.name.as_str(), &req).await?;
            if *no_wait {
                out.item(&op, &format!("restore started: operation {}", op.id));
                return Ok(0);
            }
            let p = follow(c, out, op, f.timeout).await?;
            let into = as_instance.map(|n| format!("{}/{n}", r.tenant)).unwrap_or_else(|| r.to_string());
            out.item(&p, &format!("restored {}{} into {into}", backup, path.as_ref().map(|p| format!(":{p}")).unwrap_or_default()));
        }
        BackupCmd::Check { instance, read_data, follow: f } => {
            let r = parse_ref("instance", instance)?;
            let op = c.backup_check(r.tenant.as_str(), r.name.as_str(), &BackupCheck { read_data: *read_data }).await?;
            let p = follow(c, out, op, f.timeout).await?;
            out.item(&p, &format!("repository of tenant '{}' is intact{}", r.tenant, if *read_data { " (every pack read and verified)" } else { "" }));
        }
        BackupCmd::Key { tenant } => {
            let k = c.backup_key(tenant).await?;
            let mut text = format!("repository: {}\npassword:   {}", k.repository, k.password);
            if let (Some(a), Some(s)) = (&k.access_key, &k.secret_key) {
                text.push_str(&format!("\nAWS_ACCESS_KEY_ID={a}\nAWS_SECRET_ACCESS_KEY={s}"));
            }
            out.item(&k, &text);
        }
        BackupCmd::Policy(a) => {
            let schedule = a.schedule.as_deref().map(str::parse::<BackupSchedule>).transpose().map_err(|e| anyhow::anyhow!("--schedule: {e}"))?;
            let policy = BackupPolicy { keep_last: a.keep_last, keep_daily: a.keep_daily, keep_weekly: a.keep_weekly, keep_monthly: a.keep_monthly, schedule };
            let s = c.backup_policy_set(&a.tenant, &policy).await?;
            out.item(&s, &format!("backup policy of '{}' set", a.tenant));
        }
        BackupCmd::Purge(PurgeCmd::List) => {
            let list = c.backup_purge_list().await?;
            out.table_or_json(&list, &["INSTANCE", "TARGET", "DUE"], list.iter().map(|p| vec![format!("{}/{}", p.tenant, p.instance), p.target.to_string(), ts(p.due_at)]).collect());
        }
        BackupCmd::Purge(PurgeCmd::Cancel { instance }) => {
            let r = parse_ref("instance", instance)?;
            let p = c.backup_purge_cancel(r.tenant.as_str(), r.name.as_str()).await?;
            out.item(&p, &format!("purge of {r}'s backups cancelled: they stay"));
        }
        BackupCmd::Cancel { operation } => {
            let id = operation.parse().map_err(|_| anyhow::anyhow!("operation: '{operation}' is not an operation id"))?;
            let p = c.backup_cancel(id).await?;
            out.item(&p, &format!("cancelling {} {}", p.operation.kind, p.operation.target));
        }
    }
    Ok(0)
}
