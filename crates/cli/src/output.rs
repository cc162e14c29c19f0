//! How the CLI shows things: human tables by default, JSON with `--json`.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use hangar_types::api::*;
use serde::Serialize;
use std::io::IsTerminal;
use std::time::Duration;

pub struct Out {
    pub json: bool,
}

fn ago(t: Option<time::OffsetDateTime>) -> String {
    match t {
        None => "never".into(),
        Some(t) => {
            let s = (time::OffsetDateTime::now_utc() - t).whole_seconds();
            format!("{s}s ago")
        }
    }
}

fn ts(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl Out {
    fn print_json<T: Serialize + ?Sized>(&self, v: &T) {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
    }

    fn table(&self, header: &[&str], rows: Vec<Vec<String>>) {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
        for r in rows {
            t.add_row(r);
        }
        println!("{t}");
    }

    pub fn message<T: Serialize>(&self, v: &T, text: &str) {
        self.item(v, text)
    }

    pub fn item<T: Serialize>(&self, v: &T, text: &str) {
        if self.json {
            self.print_json(v);
        } else if !text.is_empty() {
            println!("{text}");
        }
    }

    /// A harness tool's report: its JSON with `--json`, else its text.
    pub fn report(&self, r: &hangar_harness::Report) -> i32 {
        match &r.json {
            Some(v) => self.item(v, &r.text),
            None => println!("{}", r.text),
        }
        r.code
    }

    /// A spinner on a terminal, nothing otherwise (or with --json).
    pub fn spinner(&self, what: &str) -> Option<indicatif::ProgressBar> {
        if self.json || !std::io::stderr().is_terminal() {
            return None;
        }
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(what.to_string());
        pb.enable_steady_tick(Duration::from_millis(100));
        Some(pb)
    }

    pub fn tenants(&self, ts_: &[Tenant]) {
        if self.json {
            return self.print_json(ts_);
        }
        self.table(
            &["NAME", "NET ID", "SUBNET", "MAX VCPUS", "MAX MEM MIB", "MAX RUNNING", "MAX INSTANCES", "MAX DISK GIB"],
            ts_.iter()
                .map(|t| {
                    let q = &t.quotas;
                    vec![t.name.to_string(), t.net_id.to_string(), format!("/{}", t.net_prefix), q.max_vcpus.to_string(), q.max_mem_mib.to_string(), q.max_running.to_string(), q.max_instances.to_string(), q.max_disk_gib.to_string()]
                })
                .collect(),
        );
    }

    pub fn tenant_info(&self, t: &TenantInfo) {
        if self.json {
            return self.print_json(t);
        }
        let (q, u) = (&t.tenant.quotas, &t.usage);
        println!("tenant {} (net id {}, a /{} subnet, created {})", t.tenant.name, t.tenant.net_id, t.tenant.net_prefix, ts(t.tenant.created_at));
        self.table(
            &["QUOTA", "USED", "LIMIT"],
            vec![
                vec!["vcpus".into(), u.vcpus.to_string(), q.max_vcpus.to_string()],
                vec!["memory (MiB)".into(), u.mem_mib.to_string(), q.max_mem_mib.to_string()],
                vec!["running".into(), u.running.to_string(), q.max_running.to_string()],
                vec!["instances".into(), u.instances.to_string(), q.max_instances.to_string()],
                vec!["disk (GiB)".into(), format!("{:.2}", u.disk_mib as f64 / 1024.0), q.max_disk_gib.to_string()],
            ],
        );
    }

    pub fn instances(&self, list: &[Instance]) {
        if self.json {
            return self.print_json(list);
        }
        self.table(
            &["INSTANCE", "POOL", "STATE", "OBSERVED", "HOST", "ADDRESS", "CPUS", "MEM MIB", "DISK MIB", "IMAGE"],
            list.iter()
                .map(|i| {
                    vec![
                        format!("{}/{}", i.tenant, i.name),
                        i.pool.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        i.state.to_string(),
                        i.observed.to_string(),
                        i.host.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
                        i.address.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                        i.spec.vcpus.to_string(),
                        i.spec.mem_mib.to_string(),
                        i.spec.disk_mib.to_string(),
                        String::from(i.spec.image.clone()),
                    ]
                })
                .collect(),
        );
    }

    /// `net_prefix`: the prefix length of the instance's tenant subnet.
    pub fn instance(&self, i: &Instance, net_prefix: u8) {
        if self.json {
            return self.print_json(i);
        }
        let rows = vec![
            ("instance", format!("{}/{}", i.tenant, i.name)),
            ("id", i.id.to_string()),
            ("state", i.state.to_string()),
            ("desired", format!("{:?}", i.desired).to_lowercase()),
            ("observed", i.observed.to_string()),
            ("host", i.host.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "-".into())),
            ("address", i.address.map(|a| format!("{a}/{net_prefix}")).unwrap_or_else(|| "-".into())),
            ("gateway", i.address.map(|a| hangar_types::net::gateway_of(a, net_prefix).to_string()).unwrap_or_else(|| "-".into())),
            ("bridge", i.address.map(|a| hangar_types::net::bridge_name(hangar_types::net::subnet_of(a, net_prefix))).unwrap_or_else(|| "-".into())),
            ("image", String::from(i.spec.image.clone())),
            ("resources", format!("{} vCPU, {} MiB memory, {} MiB disk", i.spec.vcpus, i.spec.mem_mib, i.spec.disk_mib)),
            ("command", if i.spec.command.is_empty() { "sleep infinity".into() } else { i.spec.command.join(" ") }),
            ("generation", i.generation.to_string()),
            ("error", i.error.clone().unwrap_or_else(|| "-".into())),
            ("created", ts(i.created_at)),
            ("updated", ts(i.updated_at)),
        ];
        for (k, v) in rows {
            println!("{k:>11}: {v}");
        }
    }

    pub fn stats(&self, s: &InstanceStats) {
        if self.json {
            return self.print_json(s);
        }
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
        println!("cpu: {:.3} s", s.cpu_usage_ns as f64 / 1e9);
        println!("memory: {} of {}", mib(s.memory_bytes), mib(s.memory_limit_bytes));
        println!("pids: {} of {}", s.pids, s.pids_limit);
        println!("disk: {}", s.disk_used_bytes.map(mib).unwrap_or_else(|| "-".into()));
    }

    pub fn hosts(&self, hs: &[Host]) {
        if self.json {
            return self.print_json(hs);
        }
        self.table(
            &["HOST", "STATE", "PROVIDER", "VCPUS", "MEM MIB", "DISK MIB", "INSTANCES", "ACTIVE", "LAST HEARTBEAT", "DRIVERS"],
            hs.iter()
                .map(|h| {
                    vec![
                        h.name.to_string(),
                        h.state.as_str().into(),
                        h.provider.clone().unwrap_or_else(|| "-".into()),
                        h.capacity.vcpus.to_string(),
                        h.capacity.mem_mib.to_string(),
                        h.capacity.disk_mib.to_string(),
                        h.instances.to_string(),
                        h.active.to_string(),
                        ago(h.last_heartbeat),
                        h.drivers.join(","),
                    ]
                })
                .collect(),
        );
    }

    pub fn snapshots(&self, list: &[hangar_types::api::Snapshot]) {
        if self.json {
            return self.print_json(list);
        }
        let mib = |b: Option<u64>| b.map(|b| format!("{:.1}", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into());
        self.table(
            &["SNAPSHOT", "CREATED", "SIZE MIB", "EXCLUSIVE MIB", "BY"],
            list.iter()
                .map(|s| vec![s.name.to_string(), ts(s.created_at), mib(s.referenced_bytes), mib(s.exclusive_bytes), if s.scheduled { "schedule" } else { "hand" }.into()])
                .collect(),
        );
    }

    pub fn images(&self, list: &[Image]) {
        if self.json {
            return self.print_json(list);
        }
        self.table(
            &["IMAGE", "KIND", "PATH", "SIZE MIB", "SHA256", "CREATED"],
            list.iter()
                .map(|i| {
                    vec![
                        i.name.to_string(),
                        i.kind.as_str().into(),
                        i.path.clone(),
                        format!("{:.1}", i.size_bytes as f64 / 1048576.0),
                        i.sha256.as_deref().map(|h| h[..12.min(h.len())].to_string()).unwrap_or_else(|| "-".into()),
                        ts(i.created_at),
                    ]
                })
                .collect(),
        );
    }

    pub fn tokens(&self, list: &[Token]) {
        if self.json {
            return self.print_json(list);
        }
        let opt = |t: Option<time::OffsetDateTime>, none: &str| t.map(ts).unwrap_or_else(|| none.into());
        self.table(
            &["ID", "SCOPE", "ROLE", "DESCRIPTION", "CREATED", "EXPIRES", "LAST USED"],
            list.iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.tenant.as_ref().map(|n| format!("tenant {n}")).unwrap_or_else(|| "admin".into()),
                        t.role.as_str().to_string(),
                        t.description.clone().unwrap_or_default(),
                        ts(t.created_at),
                        opt(t.expires_at, "never"),
                        opt(t.last_used_at, "-"),
                    ]
                })
                .collect(),
        );
    }

    pub fn host(&self, h: &Host) {
        if self.json {
            return self.print_json(h);
        }
        println!("host {} ({}), state {}", h.name, h.id, h.state.as_str());
        println!("capacity: {} vCPU, {} MiB memory, {} MiB disk", h.capacity.vcpus, h.capacity.mem_mib, h.capacity.disk_mib);
        println!("instances: {}", h.instances);
        println!("endpoint: {}", h.endpoint.as_deref().unwrap_or("-"));
        println!("drivers: {}", h.drivers.join(", "));
        println!("agent: {}", h.agent_version.as_deref().unwrap_or("-"));
        println!("last heartbeat: {}", ago(h.last_heartbeat));
        println!("certificate: {}{}", h.cert_fingerprint.as_deref().unwrap_or("-"), if h.cert_rotation_pending { " (rotation asked)" } else { "" });
    }

    pub fn net_verify(&self, r: &hangar_types::net::NetVerifyReport) {
        if self.json {
            return self.print_json(r);
        }
        self.table(
            &["HOST", "CHECK", "OK", "DETAIL"],
            r.checks.iter().map(|c| vec![c.host.clone(), c.check.clone(), if c.ok { "ok".into() } else { "FAIL".into() }, c.detail.clone()]).collect(),
        );
        let bad = r.checks.iter().filter(|c| !c.ok).count();
        println!("{}", if r.ok { format!("network ok: {} checks passed", r.checks.len()) } else { format!("network NOT ok: {bad} of {} checks failed", r.checks.len()) });
    }

    pub fn pools(&self, ps: &[PoolInfo]) {
        if self.json {
            return self.print_json(ps);
        }
        let c = |d: u32, a: u32| format!("{a}/{d}");
        self.table(
            &["POOL", "ROLE", "RUNNING", "WARM", "SLEEPING", "PENDING", "FAILED", "CONVERGED", "LAST ERROR"],
            ps.iter()
                .map(|p| {
                    vec![
                        format!("{}/{}", p.pool.tenant, p.pool.name),
                        p.pool.role.to_string(),
                        c(p.pool.counts.running, p.actual.running),
                        c(p.pool.counts.warm, p.actual.warm),
                        c(p.pool.counts.sleeping, p.actual.sleeping),
                        p.actual.pending.to_string(),
                        p.actual.failed.to_string(),
                        if p.converged { "yes".into() } else { "no".into() },
                        p.pool.last_error.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
        );
    }

    pub fn pool(&self, p: &PoolInfo) {
        if self.json {
            return self.print_json(p);
        }
        let s = &p.pool.spec;
        println!("pool {}/{} (role {})", p.pool.tenant, p.pool.name, p.pool.role);
        println!("  spec      {} vCPU, {} MiB memory, {} MiB disk, image {}", s.vcpus, s.mem_mib, s.disk_mib, String::from(s.image.clone()));
        println!("  desired   running {}, warm {}, sleeping {}", p.pool.counts.running, p.pool.counts.warm, p.pool.counts.sleeping);
        println!("  actual    running {}, warm {}, sleeping {}, pending {}, failed {}", p.actual.running, p.actual.warm, p.actual.sleeping, p.actual.pending, p.actual.failed);
        println!("  converged {}", if p.converged { "yes" } else { "no" });
        if let Some(e) = &p.pool.last_error {
            println!("  error     {e}");
        }
        for a in &p.actions {
            println!("  did       {a}");
        }
        if !p.hosts.is_empty() {
            self.table(
                &["HOST", "RUNNING", "WARM", "SLEEPING", "PENDING", "FAILED"],
                p.hosts
                    .iter()
                    .map(|(h, t)| vec![h.clone(), t.running.to_string(), t.warm.to_string(), t.sleeping.to_string(), t.pending.to_string(), t.failed.to_string()])
                    .collect(),
            );
        }
    }

    pub fn node_status(&self, n: &NodeStatus) {
        if self.json {
            return self.print_json(n);
        }
        println!("host {} ({}), kernel {}, agent {}", n.host, n.hostname, n.kernel, n.agent_version);
        println!("  uptime {}s, load {:.2} {:.2} {:.2}, memory {} of {} MiB available", n.uptime_secs, n.load[0], n.load[1], n.load[2], n.mem_available_mib, n.mem_total_mib);
        println!("  capacity {} vCPU, {} MiB, {} MiB disk; drivers {}; generation {}", n.capacity.vcpus, n.capacity.mem_mib, n.capacity.disk_mib, n.drivers.join(","), n.generation);
        self.table(
            &["INSTANCE", "DESIRED", "OBSERVED", "MEMORY MIB", "PIDS"],
            n.instances
                .iter()
                .map(|i| {
                    vec![
                        format!("{}/{}", i.tenant, i.name),
                        format!("{:?}", i.desired).to_lowercase(),
                        i.observed.to_string(),
                        i.memory_bytes.map(|b| format!("{:.1}", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into()),
                        i.pids.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
        );
    }

    pub fn events(&self, es: &[Event]) {
        if self.json {
            return self.print_json(es);
        }
        self.table(
            &["TIME", "ACTOR", "ACTION", "OBJECT", "RESULT", "MESSAGE"],
            es.iter()
                .map(|e| vec![ts(e.time), e.actor.clone(), e.action.clone(), e.object.clone(), e.result.clone(), e.message.clone().unwrap_or_default()])
                .collect(),
        );
    }

    /// A list as JSON with --json, else as a table of `rows`.
    pub fn table_or_json<T: Serialize>(&self, list: &[T], header: &[&str], rows: Vec<Vec<String>>) {
        if self.json {
            return self.print_json(list);
        }
        self.table(header, rows);
    }
}
