//! `hangar snapshot ...` and `hangar instance update --snapshot-schedule`.

use crate::api::finish;
use crate::args::{parse_ref, SnapshotCmd};
use crate::output::Out;
use anyhow::{bail, Result};
use hangar_client::HubClient;
use hangar_types::api::*;
use hangar_types::snapshots::{check_user_name, SnapshotSchedule};
use hangar_types::InstanceState;

fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "size not measured yet".into())
}

pub async fn snapshot_cmd(c: &HubClient, out: &Out, cmd: &SnapshotCmd) -> Result<i32> {
    match cmd {
        SnapshotCmd::Create { instance, name } => {
            let r = parse_ref("instance", instance)?;
            if let Some(n) = name {
                check_user_name(n).map_err(|e| anyhow::anyhow!("--{e}"))?;
            }
            let s = c.snapshot_create(r.tenant.as_str(), r.name.as_str(), &SnapshotCreate { name: name.clone() }).await?;
            out.item(&s, &format!("snapshot '{}' of {r} taken at {} ({})", s.name, rfc3339(s.created_at), mib(s.referenced_bytes)));
        }
        SnapshotCmd::List { instance } => {
            let r = parse_ref("instance", instance)?;
            out.snapshots(&c.snapshot_list(r.tenant.as_str(), r.name.as_str()).await?);
        }
        SnapshotCmd::Delete { instance, snapshot } => {
            let r = parse_ref("instance", instance)?;
            let s = c.snapshot_delete(r.tenant.as_str(), r.name.as_str(), snapshot).await?;
            out.item(&s, &format!("snapshot '{}' of {r} deleted", s.name));
        }
        SnapshotCmd::Restore { instance, snapshot, force, wait } => {
            let r = parse_ref("instance", instance)?;
            if *force && !out.json {
                let i = c.instance_get(r.tenant.as_str(), r.name.as_str()).await?;
                if !matches!(i.state, InstanceState::Created | InstanceState::Stopped) {
                    // Said up front: the workload is about to be stopped.
                    eprintln!("{r} is {}: stopping it, restoring '{snapshot}', then starting it again", i.state);
                }
            }
            let res = c.snapshot_restore(r.tenant.as_str(), r.name.as_str(), snapshot, &SnapshotRestore { force: *force }).await;
            let res = match res {
                Err(hangar_client::ClientError::Api(e)) if e.code == hangar_types::ErrorCode::IllegalTransition && !*force => {
                    bail!("{}", e.message.replace("give --force", "run again with --force"))
                }
                r => r?,
            };
            let text = format!("{r} restored from snapshot '{}' (taken {})", res.snapshot.name, rfc3339(res.snapshot.created_at));
            match res.operation.clone() {
                Some(op) => {
                    finish(c, out, op, wait, |_| format!("{text}; running again")).await?;
                }
                None => out.item(&res, &text),
            }
        }
    }
    Ok(0)
}

pub async fn instance_update(c: &HubClient, out: &Out, instance: &str, schedule: Option<&str>) -> Result<i32> {
    let r = parse_ref("instance", instance)?;
    let Some(schedule) = schedule else { bail!("nothing to update: give --snapshot-schedule SCHEDULE (e.g. \"hourly,keep=24\", or off)") };
    SnapshotSchedule::parse(schedule).map_err(|e| anyhow::anyhow!("--{}", e.replacen("snapshot schedule", "snapshot-schedule", 1)))?;
    let info = c.snapshot_schedule_set(r.tenant.as_str(), r.name.as_str(), &SnapshotScheduleSet { schedule: schedule.to_string() }).await?;
    let text = match &info.schedule {
        Some(s) => format!("{r}: scheduled snapshots {s} (taken and pruned by its host)"),
        None => format!("{r}: no scheduled snapshots"),
    };
    out.item(&info, &text);
    Ok(0)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
