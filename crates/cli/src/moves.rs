//! `hangar instance move TENANT/NAME --to HOST [--wait] [--keep-source DURATION]` and
//! `hangar host evacuate HOST [--parallel N] [--wait]`.

use crate::args::parse_ref;
use crate::output::Out;
use anyhow::{bail, Result};
use hangar_client::HubClient;
use hangar_types::api::OperationStatus;
use hangar_types::moves::{Evacuation, EvacuationOutcome, HostEvacuate, InstanceMove, MovePhase, MoveStatus, MoveVia};
use hangar_types::Name;
use std::time::{Duration, Instant};

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

pub async fn move_cmd(c: &HubClient, out: &Out, instance: &str, to: &str, via: MoveVia, wait: bool, keep_source: Option<Duration>) -> Result<i32> {
    let r = parse_ref("instance", instance)?;
    let to: Name = to.parse().map_err(|e| anyhow::anyhow!("--to '{to}': {e}"))?;
    let req = InstanceMove { to, keep_source_secs: keep_source.map(|d| d.as_secs()).unwrap_or(0), via };
    let started = Instant::now();
    let mut m = c.instance_move(r.tenant.as_str(), r.name.as_str(), &req).await?;
    if !wait {
        out.item(&m, &format!("moving {r} from host {} to {} (move {}); `hangar instance info {r}` shows where it is", m.source, m.target, m.id));
        return Ok(0);
    }
    let mut seen: Option<(MovePhase, u64)> = None;
    let (mut last_bytes, mut last_at) = (0u64, Instant::now());
    loop {
        if !out.json && seen != Some((m.phase, m.bytes / (8 << 20))) {
            let rate = if m.bytes > last_bytes { (m.bytes - last_bytes) as f64 / last_at.elapsed().as_secs_f64().max(0.001) } else { 0.0 };
            eprintln!("{:>6.1}s  {:<11} {} sent{}", started.elapsed().as_secs_f64(), m.phase.as_str(), mib(m.bytes), if rate > 0.0 { format!(", {}/s", mib(rate as u64)) } else { String::new() });
            seen = Some((m.phase, m.bytes / (8 << 20)));
            (last_bytes, last_at) = (m.bytes, Instant::now());
        }
        if m.phase.is_final() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        m = c.instance_move_status(r.tenant.as_str(), r.name.as_str()).await?;
    }
    report(out, &r.to_string(), &m, started.elapsed())
}

fn report(out: &Out, r: &str, m: &MoveStatus, took: Duration) -> Result<i32> {
    if m.phase == MovePhase::RolledBack {
        if out.json {
            out.item(m, "");
        }
        bail!("the move of {r} to host {} failed and was rolled back: it stays on host {}, {}: {}", m.target, m.source, m.previous_state, m.error.as_deref().unwrap_or("no reason recorded"));
    }
    let down = m.downtime_ms.map(|d| format!("{:.2} s", d as f64 / 1000.0)).unwrap_or_else(|| "not measured (the hub restarted during it)".into());
    out.item(m, &format!("moved {r} from host {} to {} via {} in {:.1} s: {} sent, downtime {down}; it is {} there", m.source, m.target, m.via, took.as_secs_f64(), mib(m.bytes), m.previous_state));
    Ok(0)
}

pub async fn evacuate_cmd(c: &HubClient, out: &Out, host: &str, parallel: u32, wait: bool) -> Result<i32> {
    let started = Instant::now();
    let mut e = c.host_evacuate(host, &HostEvacuate { parallel }).await?;
    if !wait {
        out.item(&e, &format!("evacuating host {host}: {} instance(s), {parallel} at once (operation {}); `hangar host evacuate {host} --wait` follows it", e.items.len(), e.operation_id));
        return Ok(0);
    }
    let mut seen: Vec<(EvacuationOutcome, Option<MovePhase>)> = vec![];
    loop {
        let now: Vec<_> = e.items.iter().map(|i| (i.outcome, i.phase)).collect();
        if !out.json && now != seen {
            let done = e.items.iter().filter(|i| i.outcome.is_final()).count();
            let moving: Vec<String> = e.items.iter().filter(|i| i.outcome == EvacuationOutcome::Moving).map(|i| format!("{}/{} ({})", i.tenant, i.instance, i.phase.map(MovePhase::as_str).unwrap_or("starting"))).collect();
            eprintln!("{:>6.1}s  {done}/{} done{}", started.elapsed().as_secs_f64(), e.items.len(), if moving.is_empty() { String::new() } else { format!("; moving {}", moving.join(", ")) });
            seen = now;
        }
        if e.status.is_final() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        e = c.host_evacuation(host).await?;
    }
    evacuation_table(out, &e);
    let failed = e.items.iter().filter(|i| i.outcome == EvacuationOutcome::Failed).count();
    if e.status != OperationStatus::Succeeded {
        bail!("{failed} of {} instance(s) stay on host {host} (see the table); the host stays drained", e.items.len());
    }
    if !out.json {
        println!("host {host} is empty: {} instance(s) moved in {:.1} s; it stays drained (`hangar host undrain {host}` or `hangar host remove {host}`)", e.items.len(), started.elapsed().as_secs_f64());
    }
    Ok(0)
}

/// Each instance of an evacuation and where it went (or why it stayed).
fn evacuation_table(out: &Out, e: &Evacuation) {
    let rows = e
        .items
        .iter()
        .map(|i| {
            let to = i.target.as_ref().map(ToString::to_string).unwrap_or_default();
            let result = match i.outcome {
                EvacuationOutcome::Waiting => "waiting".to_string(),
                EvacuationOutcome::Moving => format!("moving to {to} ({})", i.phase.map(MovePhase::as_str).unwrap_or("starting")),
                EvacuationOutcome::Moved => format!("moved to {to}"),
                EvacuationOutcome::Failed => format!("failed: {}", i.error.as_deref().unwrap_or("no reason recorded")),
            };
            vec![format!("{}/{}", i.tenant, i.instance), i.state.to_string(), result]
        })
        .collect();
    if out.json {
        out.item(e, "");
    } else {
        out.table_or_json(&e.items, &["INSTANCE", "STATE", "RESULT"], rows);
    }
}
