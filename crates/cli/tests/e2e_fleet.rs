//! The fleet, end to end: three hosts on one machine (the local one and two made by the
//! `local` provider as network namespaces), pools scaled across them, drain, host stop
//! and start, agent kill -9 and restart, a partition and its healing, staleness without
//! false alarms under load, and one-shot reconcile from a file.

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

fn members(f: &Fleet) -> Vec<Value> {
    f.json(&["instance", "list", "--tenant", "acme", "--pool", "workers"]).as_array().unwrap().clone()
}

fn ids(list: &[Value]) -> BTreeSet<String> {
    list.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

fn on_host<'a>(list: &'a [Value], host: &str) -> Vec<&'a Value> {
    list.iter().filter(|i| i["host"] == host).collect()
}

fn host_state(f: &Fleet, host: &str) -> String {
    f.json(&["host", "info", host])["state"].as_str().unwrap().to_string()
}

fn pool(f: &Fleet) -> Value {
    f.json(&["pool", "info", "acme/workers"])
}

fn wait_converged(f: &Fleet) -> Value {
    let mut last = Value::Null;
    wait_until("pool acme/workers converged", || {
        last = pool(f);
        last["converged"] == true
    });
    last
}

/// The host's agent PID, from the provider's pid file.
fn agent_pid(f: &Fleet, host: &str) -> u32 {
    std::fs::read_to_string(f.data_dir().join("hosts").join(host).join("agent.pid")).unwrap().trim().parse().unwrap()
}

/// The network namespace of a host, through its agent process.
fn netns_of(f: &Fleet, host: &str) -> String {
    format!("/proc/{}/ns/net", agent_pid(f, host))
}

#[test]
fn three_hosts_pools_drain_stop_start_kill_partition() {
    // A short stale threshold keeps this test short; the defaults are measured by `hangar bench heartbeat`.
    let mut f = common::up_with(&["--stale-after", "4"]);

    // ---- hosts
    for h in ["node-b", "node-c"] {
        let out = f.run(&["host", "add", h, "--provider", "local"]);
        assert!(out.contains("ready"), "{out}");
    }
    let hosts = f.json(&["host", "list"]);
    let states: BTreeMap<String, String> = hosts.as_array().unwrap().iter().map(|h| (h["name"].as_str().unwrap().into(), h["state"].as_str().unwrap().into())).collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(states.values().all(|s| s == "ready"), "{states:?}");
    let st = f.json(&["host", "status", "node-b"]);
    assert_eq!(st["host"], "node-b");
    assert!(st["mem_total_mib"].as_u64().unwrap() > 0);
    // A second host of the same name is refused; bad provider names say what exists.
    assert!(f.fail(&["host", "add", "node-b", "--provider", "local"]).contains("already exists"));
    assert!(f.fail(&["host", "add", "node-x", "--provider", "cloud"]).contains("available: local"));

    // ---- pools: create, scale up across hosts
    f.run(&["tenant", "create", "acme", "--max-running", "8", "--max-instances", "12", "--max-mem", "4096"]);
    f.run(&["pool", "create", "acme/workers", "--cpus", "1", "--mem", "64", "--disk", "64", "--running", "4", "--warm", "2", "--sleeping", "1"]);
    let p = wait_converged(&f);
    assert_eq!((p["actual"]["running"].as_u64(), p["actual"]["warm"].as_u64(), p["actual"]["sleeping"].as_u64()), (Some(4), Some(2), Some(1)));
    let list = members(&f);
    assert_eq!(list.len(), 7);
    for h in ["local", "node-b", "node-c"] {
        assert!(!on_host(&list, h).is_empty(), "no member on {h}: spread failed: {:?}", p["hosts"]);
    }
    // Scaling beyond a quota names the quota and changes nothing.
    let err = f.fail(&["pool", "scale", "acme/workers", "--running", "9"]);
    assert!(err.contains("max_running"), "{err}");
    assert_eq!(pool(&f)["pool"]["counts"]["running"], 4);

    // ---- staleness without false positives while the machine is loaded
    let burners: Vec<std::process::Child> = (0..3).map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap()).collect();
    std::thread::sleep(Duration::from_secs(10));
    for mut b in burners {
        let _ = b.kill();
        let _ = b.wait();
    }
    let ev = f.json(&["events", "--last", "500"]);
    let false_stale: Vec<&Value> = ev.as_array().unwrap().iter().filter(|e| e["message"].as_str().is_some_and(|m| m.contains("-> stale"))).collect();
    assert!(false_stale.is_empty(), "a live host went stale under load: {false_stale:?}");

    // ---- scale down: newest first
    let before = members(&f);
    let oldest: BTreeSet<String> = {
        let mut v: Vec<&Value> = before.iter().collect();
        v.sort_by_key(|i| i["created_at"].as_str().unwrap().to_string());
        v.iter().take(2).map(|i| i["id"].as_str().unwrap().to_string()).collect()
    };
    f.run(&["pool", "scale", "acme/workers", "--running", "2", "--warm", "0", "--sleeping", "0"]);
    wait_converged(&f);
    assert_eq!(ids(&members(&f)), oldest, "scale down did not keep the oldest members");

    // ---- drain node-b: its members move elsewhere; nothing new lands there
    f.run(&["pool", "scale", "acme/workers", "--running", "4"]);
    wait_converged(&f);
    if on_host(&members(&f), "node-b").is_empty() {
        panic!("no member on node-b to drain: {:?}", pool(&f)["hosts"]);
    }
    f.run(&["host", "drain", "node-b"]);
    wait_until("node-b drained", || on_host(&members(&f), "node-b").is_empty() && pool(&f)["converged"] == true);
    assert_eq!(pool(&f)["actual"]["running"], 4);
    f.run(&["host", "undrain", "node-b"]);
    assert_eq!(host_state(&f, "node-b"), "ready");
    // Undrained, it is the emptiest host: the next member lands there.
    f.run(&["pool", "scale", "acme/workers", "--running", "5"]);
    wait_converged(&f);
    assert_eq!(on_host(&members(&f), "node-b").len(), 1, "{:?}", pool(&f)["hosts"]);

    // ---- host stop / start: volumes, addresses, states persist
    // A running member on node-c with a sentinel in its volume and one in /tmp (tmpfs:
    // it survives only if the sandbox is never restarted).
    let list = members(&f);
    let c_member = on_host(&list, "node-c").into_iter().find(|i| i["state"] == "running").expect("a running member on node-c")["name"].as_str().unwrap().to_string();
    let c_ref = format!("acme/{c_member}");
    f.run(&["instance", "exec", &c_ref, "--", "sh", "-c", "echo keep > /home/sentinel; echo alive > /tmp/alive"]);

    let c_before: Vec<Value> = on_host(&members(&f), "node-c").into_iter().cloned().collect();
    assert!(c_before.iter().any(|i| i["name"] == c_member.as_str()), "the sentinel member left node-c");
    let all_before = ids(&members(&f));
    f.run(&["host", "stop", "node-c"]);
    assert_eq!(host_state(&f, "node-c"), "stopped");
    std::thread::sleep(Duration::from_secs(3));
    let during = members(&f);
    assert_eq!(ids(&during), all_before, "a stopped host's members were replaced or lost");
    assert!(on_host(&during, "node-c").iter().all(|i| i["observed"] == "unknown"));
    f.run(&["host", "start", "node-c"]);
    assert_eq!(host_state(&f, "node-c"), "ready");
    wait_converged(&f);
    let after = members(&f);
    assert_eq!(ids(&after), all_before);
    for b in &c_before {
        let a = after.iter().find(|i| i["id"] == b["id"]).unwrap();
        assert_eq!(a["address"], b["address"], "address changed across host stop/start");
        assert_eq!(a["state"], b["state"]);
    }
    assert_eq!(f.run(&["instance", "exec", &c_ref, "--", "cat", "/home/sentinel"]).trim(), "keep");
    f.run(&["instance", "exec", &c_ref, "--", "sh", "-c", "echo alive > /tmp/alive"]);

    // ---- kill -9 the agent: stale within the threshold, instances unknown and kept,
    // restarted agent adopts them (the sandbox never restarted: /tmp survives)
    let pid = agent_pid(&f, "node-c");
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let t0 = Instant::now();
    wait_until("node-c stale", || host_state(&f, "node-c") != "ready");
    let stale_after = t0.elapsed();
    assert!(stale_after < Duration::from_secs(30), "took {stale_after:?}");
    let during = members(&f);
    assert_eq!(ids(&during), all_before, "a dead host's members were deleted or duplicated");
    assert!(on_host(&during, "node-c").iter().all(|i| i["observed"] == "unknown"));
    f.run(&["host", "start", "node-c"]);
    wait_converged(&f);
    assert_eq!(ids(&members(&f)), all_before, "restart duplicated members");
    assert_eq!(f.run(&["instance", "exec", &c_ref, "--", "cat", "/tmp/alive"]).trim(), "alive", "the sandbox was restarted, not adopted");

    // ---- partition node-b from the hub: instances keep running, host goes stale, heals
    let b_member = on_host(&members(&f), "node-b").first().map(|i| format!("acme/{}", i["name"].as_str().unwrap()));
    assert!(b_member.is_some());
    let ns = netns_of(&f, "node-b");
    let nft = |script: &str| {
        let mut c = Command::new("nsenter").arg(format!("--net={ns}")).args(["nft", "-f", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success(), "nft in {ns}: {script}");
    };
    if let Some(b) = &b_member {
        f.run(&["instance", "exec", b, "--", "sh", "-c", "echo alive > /tmp/alive"]);
    }
    let cut = std::time::Instant::now();
    nft("table inet hgtest_partition { chain out { type filter hook output priority 0; policy drop; oifname \"lo\" accept; }; chain in { type filter hook input priority 0; policy drop; iifname \"lo\" accept; }; }");
    wait_until("node-b stale while partitioned", || host_state(&f, "node-b") == "stale");
    // The partition lasts 60 s; all along, the stale host's members are neither replaced
    // nor duplicated elsewhere.
    while cut.elapsed() < Duration::from_secs(60) {
        assert_eq!(ids(&members(&f)), all_before, "a partitioned host's members were replaced");
        assert_eq!(host_state(&f, "node-b"), "stale", "a partitioned host left stale before healing");
        std::thread::sleep(Duration::from_secs(5));
    }
    nft("delete table inet hgtest_partition");
    wait_until("node-b ready after healing", || host_state(&f, "node-b") == "ready");
    wait_converged(&f);
    assert_eq!(ids(&members(&f)), all_before, "healing duplicated members");
    if let Some(b) = &b_member {
        assert_eq!(f.run(&["instance", "exec", b, "--", "cat", "/tmp/alive"]).trim(), "alive", "the partitioned host's instance did not keep running");
    }

    // ---- the desired-state document of a host
    let doc = f.json(&["agent", "desired", "--host", "node-b"]);
    assert_eq!(doc["host"], "node-b");
    assert_eq!(doc["schema_version"], 1);
    assert!(doc["pools"].as_array().unwrap().iter().any(|p| p["name"] == "workers"));
    assert!(doc["tenants"].as_array().unwrap().iter().any(|t| t["name"] == "acme"));

    // ---- events for the decisions
    let ev = f.json(&["events", "--last", "1000"]);
    let actions: BTreeSet<String> = ev.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    for a in ["host.add", "pool.create", "pool.scale", "pool.reconcile", "host.drain", "host.stop", "host.start", "host.state", "instance.create"] {
        assert!(actions.contains(a), "no {a} event: {actions:?}");
    }

    // ---- teardown: pool delete, host remove
    f.run(&["pool", "delete", "acme/workers"]);
    wait_until("members gone", || f.json(&["instance", "list", "--tenant", "acme"]).as_array().unwrap().is_empty());
    // ---- onboarding: a sandbox tenant with gateway and worker pools, and its dashboard
    let out = f.run(&["new", "sandbox", "demo", "--workers", "2", "--warm", "0"]);
    assert!(out.contains("next:"), "{out}");
    let dash = f.json(&["connect", "demo"]);
    let pools: BTreeSet<String> = dash["pools"].as_array().unwrap().iter().map(|p| p["pool"]["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(pools, BTreeSet::from(["gateway".to_string(), "workers".to_string()]));
    assert!(dash["pools"].as_array().unwrap().iter().all(|p| p["converged"] == true), "{dash:#}");
    assert_eq!(dash["instances"].as_array().unwrap().len(), 3);
    assert!(dash["network"].as_str().is_some_and(|n| n.ends_with(".0/24")), "{dash:#}");
    assert!(dash["next"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("hangar pool scale demo/workers")));
    // Running it again completes nothing new and fails nothing.
    f.run(&["new", "sandbox", "demo", "--workers", "2", "--warm", "0"]);
    assert_eq!(f.json(&["instance", "list", "--tenant", "demo"]).as_array().unwrap().len(), 3);
    for p in ["gateway", "workers"] {
        f.run(&["pool", "delete", &format!("demo/{p}")]);
    }
    wait_until("demo members gone", || f.json(&["instance", "list", "--tenant", "demo"]).as_array().unwrap().is_empty());

    f.run(&["host", "remove", "node-c"]);
    assert!(!f.data_dir().join("hosts/node-c").exists());
    assert!(f.fail(&["host", "info", "node-c"]).contains("not found"));
    f.kill9();
}

/// `hangar agent reconcile`: one-shot convergence from a file, no hub at all.
#[test]
fn one_shot_reconcile_from_a_file() {
    require_root();
    let dir = tempfile::Builder::new().prefix("hangar-oneshot-").tempdir().unwrap();
    let agent_dir = dir.path().join("agent");
    struct Down(std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Command::new(bin()).args(["down", "--purge", "--data-dir"]).arg(&self.0).output();
        }
    }
    let _down = Down(dir.path().to_path_buf());
    let doc = |desired: &str, extra: &str| {
        format!(
            r#"{{"schema_version":1,"host":"solo","host_id":"0190f0d2-7a34-7c3e-9b1a-00000000b001","generation":1,
               "tenants":[{{"name":"acme","quotas":{{"max_vcpus":4,"max_mem_mib":1024,"max_running":2,"max_instances":4,"max_disk_gib":4}}}}],
               "pools":[],
               "instances":[{{"id":"0190f0d2-7a34-7c3e-9b1a-00000000b0a1","tenant":"acme","name":"solo1","ids":{{"base":1048576,"size":65536}},
                 "spec":{{"image":"host","vcpus":1,"mem_mib":64,"disk_mib":64{extra}}},"desired":"{desired}","generation":1}}]}}"#
        )
    };
    let file = dir.path().join("desired.json");
    let reconcile = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Command::new(bin()).args(["agent", "reconcile", "--volumes", "dir", "--desired"]).arg(&file).arg("--agent-dir").arg(&agent_dir).output().unwrap()
    };
    // Bad documents are refused before anything happens, naming the field. (An unknown
    // field is a newer hub's optional one and is ignored: issue 13, protocol types.)
    let o = reconcile(&doc("running", "").replace(r#""vcpus":1"#, r#""vcpus":"one""#));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("instances[0].spec.vcpus"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = reconcile(&doc("running", "").replace(r#""max_running":2"#, r#""max_running":0"#));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tenants[0].quotas.max_running"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!agent_dir.join("runtime").exists(), "a refused document still touched the host");

    let o = reconcile(&doc("running", ""));
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("converged"));
    let list = Command::new("runc").arg("--root").arg(agent_dir.join("runtime")).args(["list", "-q"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("i00000000b0a1"), "{}", String::from_utf8_lossy(&list.stdout));
    // Idempotent: again changes nothing and still converges.
    assert!(reconcile(&doc("running", "")).status.success());
    // Delete: the sandbox and its volume go.
    let o = reconcile(&doc("deleted", ""));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = Command::new("runc").arg("--root").arg(agent_dir.join("runtime")).args(["list", "-q"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).trim().is_empty());
}

/// Tenant networks span hosts: a tenant's instances on two namespace hosts reach each
/// other over its VXLAN overlay; other tenants (on the same hosts) and an isolated
/// tenant's own instances do not; the overlay device goes with the tenant's last
/// instance on a host.
#[test]
fn a_tenant_network_spans_hosts_and_stays_its_own() {
    let f = common::up();
    for h in ["node-b", "node-c"] {
        f.run(&["host", "add", h, "--provider", "local"]);
    }
    f.run(&["tenant", "create", "acme"]);
    f.run(&["tenant", "create", "zeta"]);
    f.run(&["tenant", "create", "iso", "--isolated"]);
    for (inst, host) in [("acme/a", "node-b"), ("acme/b", "node-c"), ("zeta/z", "node-c"), ("zeta/w", "node-b"), ("iso/x", "node-b"), ("iso/y", "node-c")] {
        f.run(&["instance", "create", inst, "--host", host, "--start", "--", "sleep", "infinity"]);
    }
    let addr = |i: &str| f.json(&["instance", "info", i])["address"].as_str().unwrap().to_string();
    let ping = |from: &str, to: &str| f.try_run(&["instance", "exec", from, "--", "ping", "-c1", "-W1", to]).status.success();
    let (a, b, z, w, x, y) = (addr("acme/a"), addr("acme/b"), addr("zeta/z"), addr("zeta/w"), addr("iso/x"), addr("iso/y"));
    // The overlay comes up with the next desired document of each host.
    wait_until("acme/a reaches acme/b on another host", || ping("acme/a", &b));
    assert!(ping("acme/b", &a), "acme/b cannot reach acme/a across hosts");
    wait_until("zeta/z reaches zeta/w on another host", || ping("zeta/z", &w));
    for (from, to) in [("acme/a", &z), ("acme/a", &w), ("acme/b", &w), ("zeta/z", &a), ("zeta/w", &b), ("iso/x", &a)] {
        assert!(!ping(from, to), "{from} reaches {to} of another tenant");
    }
    assert!(!ping("iso/x", &y) && !ping("iso/y", &x), "an isolated tenant's instances reach each other across hosts");
    let v = f.json(&["net", "verify"]);
    assert_eq!(v["ok"], true, "{v:#}");

    // A stalled agent (stopped, its TCP still accepting) costs its own checks, not the
    // report: hosts are probed in parallel and every hub-to-agent call has a deadline.
    let pid = std::fs::read_to_string(f.data_dir().join("hosts/node-c/agent.pid")).unwrap().trim().to_string();
    let signal = |sig: &str| assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success(), "kill {sig} {pid}");
    signal("-STOP");
    let t = Instant::now();
    let out = f.try_run(&["net", "verify", "--json"]);
    let took = t.elapsed();
    signal("-CONT");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("net verify with a stalled host: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["ok"], false, "a stalled host verified: {v:#}");
    let checks = v["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["host"] == "node-c" && c["ok"] == false), "no failed check for the stalled host: {v:#}");
    assert!(checks.iter().filter(|c| c["host"] == "node-b").count() > 1 && checks.iter().filter(|c| c["host"] == "node-b").all(|c| c["ok"] == true), "the other host's checks suffered: {v:#}");
    assert!(took < Duration::from_secs(120), "net verify waited {took:?} for a stalled host");
    wait_until("node-c answers again", || f.json(&["net", "verify"])["ok"] == true);

    // acme's last instance on node-c goes: node-b's acme overlay device goes too.
    let dev = |host: &str| {
        let out = Command::new("nsenter").arg(format!("--net={}", netns_of(&f, host))).args(["ip", "-br", "link"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("hgx")).count()
    };
    assert_eq!(dev("node-b"), 3, "node-b: one overlay device per tenant");
    f.run(&["instance", "delete", "acme/b"]);
    wait_until("node-b drops acme's overlay", || dev("node-b") == 2);
}
