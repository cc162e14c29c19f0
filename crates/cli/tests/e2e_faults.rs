//! End to end: bad input, tenant isolation, enforced limits, crashes and disk safety.

mod common;

use common::{Fleet, bin, down, free_port, require_root, wait_until};
use hangar_client::HubClient;
use hangar_types::api::OperationStatus;
use hangar_types::SandboxId;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn client_at(config: &Path) -> HubClient {
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    HubClient::new(cfg["hub_url"].as_str().unwrap(), cfg["ca_pem"].as_str().unwrap(), cfg["token"].as_str().unwrap()).unwrap()
}

fn client(f: &Fleet) -> HubClient {
    client_at(&f.config())
}

/// The PID of a sandbox's first process, from runc's state under the agent's runtime root.
fn sandbox_pid(agent_dir: &Path, sandbox: &SandboxId) -> u64 {
    let o = Command::new("runc").arg("--root").arg(agent_dir.join("runtime")).args(["state", sandbox.as_str()]).output().unwrap();
    assert!(o.status.success(), "runc state {sandbox}: {}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "running", "{v}");
    v["pid"].as_u64().unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn bad_input_is_refused_with_code_and_message_and_changes_nothing() {
    let f = common::up();
    f.run(&["tenant", "create", "acme", "--max-instances", "2", "--max-running", "1", "--max-mem", "512"]);
    let c = client(&f);
    let rt = rt();
    let before = f.run(&["instance", "list", "--json"]);
    // (method, path, body, expected status, expected code, substring of message)
    let cases: &[(&str, &str, Value, u16, &str, &str)] = &[
        ("POST", "/v1/tenants", json!({"name": "Bad Name"}), 400, "invalid_argument", "must start with a lowercase letter"),
        ("POST", "/v1/tenants", json!({"name": "ok", "colour": "red"}), 400, "invalid_argument", "unknown field `colour`"),
        ("POST", "/v1/tenants", json!({}), 400, "invalid_argument", "missing field `name`"),
        ("POST", "/v1/tenants", json!({"name": "acme"}), 409, "already_exists", "tenant 'acme' already exists"),
        ("POST", "/v1/tenants/acme/instances", json!({"name": "w", "image": "host", "vcpus": 0, "mem_mib": 64, "disk_mib": 64}), 400, "invalid_argument", "vcpus must be between 1 and 256"),
        ("POST", "/v1/tenants/acme/instances", json!({"name": "w", "image": "host", "vcpus": -1, "mem_mib": 64, "disk_mib": 64}), 400, "invalid_argument", "vcpus"),
        ("POST", "/v1/tenants/acme/instances", json!({"name": "w", "image": "No Image", "vcpus": 1, "mem_mib": 64, "disk_mib": 64}), 400, "invalid_argument", "image 'No Image' is not known"),
        ("POST", "/v1/tenants/acme/instances", json!({"name": "w", "image": "nope", "vcpus": 1, "mem_mib": 64, "disk_mib": 64}), 409, "conflict", "image: no image 'nope' is registered"),
        ("POST", "/v1/tenants/acme/instances", json!({"name": "w", "image": "dir:/etc", "vcpus": 1, "mem_mib": 64, "disk_mib": 64}), 400, "invalid_argument", "image: 'dir:/etc' is refused"),
        ("POST", "/v1/tenants/acme/instances", json!({"name": "w", "image": "host", "vcpus": 1, "mem_mib": 64}), 400, "invalid_argument", "missing field `disk_mib`"),
        ("POST", "/v1/tenants/acme/instances", json!({"name": "w", "image": "host", "vcpus": 1, "mem_mib": 64, "disk_mib": 64, "gpu": 1}), 400, "invalid_argument", "unknown field `gpu`"),
        ("POST", "/v1/tenants/nope/instances", json!({"name": "w", "image": "host", "vcpus": 1, "mem_mib": 64, "disk_mib": 64}), 404, "not_found", "tenant 'nope' not found"),
        ("POST", "/v1/tenants/acme/instances", json!({"name": "w", "image": "host", "vcpus": 1, "mem_mib": 1024, "disk_mib": 64, "start": true}), 422, "quota_exceeded", "quota max_mem_mib is 512"),
        ("GET", "/v1/tenants/acme/instances/ghost", Value::Null, 404, "not_found", "instance 'acme/ghost' not found"),
        ("POST", "/v1/tenants/acme/instances/ghost/start", Value::Null, 404, "not_found", "not found"),
        ("GET", "/v1/operations/not-a-uuid", Value::Null, 400, "invalid_argument", "not an operation id"),
        ("GET", "/v1/nowhere", Value::Null, 404, "not_found", "no such API route"),
    ];
    for (method, path, body, status, code, msg) in cases {
        let body = if body.is_null() { None } else { Some(body) };
        let (st, v) = rt.block_on(c.raw(method, path, body)).unwrap();
        assert_eq!(st, *status, "{method} {path} {body:?} -> {v}");
        assert_eq!(v["code"], *code, "{method} {path} -> {v}");
        assert!(v["message"].as_str().unwrap().contains(msg), "{method} {path}: message {:?} lacks {msg:?}", v["message"]);
    }
    assert_eq!(f.run(&["instance", "list", "--json"]), before, "a refused request changed the store");

    // Quotas name the quota and its value; illegal moves say what to do instead.
    f.run(&["instance", "create", "acme/a", "--mem", "128", "--", "sleep", "infinity"]);
    f.run(&["instance", "create", "acme/b", "--mem", "128", "--", "sleep", "infinity"]);
    let err = f.fail(&["instance", "create", "acme/c", "--mem", "128"]);
    assert!(err.contains("quota max_instances is 2"), "{err}");
    f.run(&["instance", "start", "acme/a"]);
    let err = f.fail(&["instance", "start", "acme/b"]);
    assert!(err.contains("quota max_running is 1"), "{err}");
    let err = f.fail(&["instance", "resume", "acme/b"]);
    assert!(err.contains("cannot resume an instance that is created"), "{err}");
    let err = f.fail(&["instance", "start", "acme/a"]);
    assert!(err.contains("already running"), "{err}");
    // CLI-side validation names the flag.
    let err = f.fail(&["instance", "create", "acme/z", "--cpus", "0"]);
    assert!(err.contains("--cpus must be between 1 and 256"), "{err}");
    let err = f.fail(&["instance", "create", "nopath"]);
    assert!(err.contains("TENANT/NAME"), "{err}");
    // Hub settings out of range stop `up` before anything is made.
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "5000"] {
        let err = f.fail(&["up", "--data-dir", dir.path().join("d").to_str().unwrap(), "--cpu-overcommit", bad]);
        assert!(err.contains("--cpu-overcommit must be between 1 and 4096"), "{err}");
    }
    assert!(!dir.path().join("d").exists(), "a refused `up` made its data dir");
    // Wrong or missing token.
    let (st, v) = rt.block_on(c.with_token("hat_wrong").raw("GET", "/v1/tenants", None)).unwrap();
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthenticated")));
    let o = Command::new(bin()).args(["tenant", "list"]).env("HANGAR_CONFIG", f.config()).env("HANGAR_TOKEN", "hat_wrong").output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid token"));
    // A tenant with instances is not destroyed.
    let err = f.fail(&["tenant", "destroy", "acme"]);
    assert!(err.contains("still has 2 instance(s)"), "{err}");
}

#[test]
fn tenant_token_sees_only_its_tenant() {
    let mut f = common::up();
    f.run(&["tenant", "create", "acme"]);
    f.run(&["tenant", "create", "zeta"]);
    f.run(&["instance", "create", "zeta/secret", "--", "sleep", "infinity"]);
    let tok = f.json(&["token", "create", "--tenant", "acme"])["token"].as_str().unwrap().to_string();
    f.extra_env.push(("HANGAR_TOKEN".into(), tok.clone()));
    let tenants = f.json(&["tenant", "list"]);
    assert_eq!(tenants.as_array().unwrap().len(), 1);
    assert_eq!(tenants[0]["name"], "acme");
    for args in [
        vec!["tenant", "info", "zeta"],
        vec!["instance", "info", "zeta/secret"],
        vec!["instance", "list", "--tenant", "zeta"],
        vec!["instance", "start", "zeta/secret"],
        vec!["instance", "delete", "zeta/secret"],
        vec!["events", "zeta"],
    ] {
        let err = f.fail(&args);
        assert!(err.contains("tenant 'zeta' not found"), "{args:?}: {err}");
    }
    assert_eq!(f.json(&["instance", "list"]), Value::Array(vec![]));
    let err = f.fail(&["tenant", "create", "mine"]);
    assert!(err.contains("admin token"), "{err}");
    let err = f.fail(&["host", "list"]);
    assert!(err.contains("admin token"), "{err}");
    // Its own tenant works.
    f.run(&["instance", "create", "acme/own", "--", "sleep", "infinity"]);
    assert_eq!(f.json(&["instance", "list"]).as_array().unwrap().len(), 1);
    let events = f.json(&["events", "--last", "100"]);
    assert!(events.as_array().unwrap().iter().all(|e| e["tenant"] == "acme"), "{events}");
    // No secret lands in the log.
    f.extra_env.clear();
    assert!(!f.log().contains(&tok), "a token appeared in the log");
}

#[test]
fn memory_and_pids_limits_are_enforced() {
    let f = common::up();
    f.run(&["tenant", "create", "acme"]);
    f.run(&["instance", "create", "acme/small", "--mem", "32", "--start", "--", "sleep", "infinity"]);
    // A shell variable of ~100 MB cannot live in a 32 MiB cgroup: the OOM killer ends it.
    let o = f.try_run(&["instance", "exec", "acme/small", "--", "sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("survived"), "allocation beyond the memory limit succeeded");
    assert_ne!(o.status.code(), Some(0));
    // The sandbox itself is still there.
    assert_eq!(f.run(&["instance", "exec", "acme/small", "--", "echo", "alive"]), "alive\n");
    // pids: the agent caps every sandbox at 1024 tasks; a fork loop hits it. (In the
    // 32 MiB sandbox the sleeps would hit the memory limit first.)
    f.run(&["instance", "create", "acme/forky", "--mem", "512", "--start", "--", "sleep", "infinity"]);
    let o = f.try_run(&["instance", "exec", "acme/forky", "--timeout", "60", "--", "sh", "-c", "i=0; while [ $i -lt 1100 ]; do sleep 30 & i=$((i+1)); done 2>&1 | head -1; echo spawned"]);
    let both = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(both.contains("Cannot fork") || both.contains("Resource temporarily unavailable"), "no fork failure: {both}");
    let stats = f.json(&["instance", "stats", "acme/forky"]);
    assert_eq!(stats["pids_limit"], 1024, "{stats}");
    assert!(stats["pids"].as_u64().unwrap() <= 1024, "{stats}");
    f.run(&["instance", "delete", "acme/small"]);
    f.run(&["instance", "delete", "acme/forky"]);
}

#[test]
fn kill9_of_hub_and_agent_loses_nothing() {
    require_root();
    let dir = tempfile::Builder::new().prefix("hangar-e2e-split-").tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("config.json");
    let cleanup = Cleanup(data.clone());
    let hangar = |args: &[&str]| Command::new(bin()).args(args).env("HANGAR_CONFIG", &cfg).output().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    assert!(hangar(&["init", "--data-dir", data.to_str().unwrap(), "--listen", &listen]).status.success());
    let spawn = |args: Vec<String>, log: &str| {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join(log)).unwrap();
        Command::new(bin()).args(&args).env("HANGAR_CONFIG", &cfg).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap()
    };
    let hub_args = vec!["hub".to_string(), "serve".into(), "--data-dir".into(), data.display().to_string(), "--listen".into(), listen.clone()];
    let mut hub = spawn(hub_args.clone(), "hub.log");
    wait_until("hub answers", || hangar(&["tenant", "list"]).status.success());
    let add: Value = serde_json::from_slice(&hangar(&["host", "add", "node-a", "--json"]).stdout).unwrap();
    let token = add["join_token"].as_str().unwrap();
    let agent_dir = data.join("agent");
    let j = hangar(&["agent", "join", "--hub", &format!("https://127.0.0.1:{port}"), "--token", token, "--agent-dir", agent_dir.to_str().unwrap()]);
    assert!(j.status.success(), "{}", String::from_utf8_lossy(&j.stderr));
    // A join token works once.
    let again = hangar(&["agent", "join", "--hub", &format!("https://127.0.0.1:{port}"), "--token", token, "--agent-dir", dir.path().join("other").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("unknown or already used"), "{}", String::from_utf8_lossy(&again.stderr));
    let agent_args = vec!["agent".to_string(), "run".into(), "--agent-dir".into(), agent_dir.display().to_string(), "--pool-size-mib".into(), "2048".into(), "--interval".into(), "0.5".into()];
    let mut agent = spawn(agent_args.clone(), "agent.log");
    wait_until("host ready", || String::from_utf8_lossy(&hangar(&["host", "list", "--json"]).stdout).contains("\"ready\""));

    assert!(hangar(&["tenant", "create", "acme"]).status.success());
    // The workload counts its own starts: a restart or a duplicate would add a line.
    let cmd = "echo start >> /home/starts; exec sleep infinity";
    let o = hangar(&["instance", "create", "acme/keep", "--start", "--", "sh", "-c", cmd]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // kill -9 the agent: the sandbox keeps running; a request made meanwhile converges later.
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(hangar(&["instance", "create", "acme/later", "--no-wait"]).status.success());
    let stop_op = hangar(&["instance", "stop", "acme/keep", "--no-wait", "--json"]);
    assert!(stop_op.status.success());
    // kill -9 the hub as well, mid-operation.
    hub.kill().unwrap();
    hub.wait().unwrap();
    hub = spawn(hub_args, "hub.log");
    wait_until("hub answers again", || hangar(&["tenant", "list"]).status.success());
    agent = spawn(agent_args.clone(), "agent.log");
    let op: Value = serde_json::from_slice(&stop_op.stdout).unwrap();
    let c = client_at(&cfg);
    let rt = rt();
    wait_until("stop converges after restarts", || {
        let i: Value = serde_json::from_slice(&hangar(&["instance", "info", "acme/keep", "--json"]).stdout).unwrap_or_default();
        i["state"] == "stopped" && i["observed"] == "stopped"
    });
    let op_now: Value = serde_json::from_slice(&hangar(&["instance", "list", "--json"]).stdout).unwrap();
    let names: Vec<&str> = op_now.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["keep", "later"], "an instance was lost or duplicated");
    // The operation made before both crashes completes, and as a success.
    let op_id = op["id"].as_str().unwrap().parse().unwrap();
    let done = rt.block_on(c.operation_wait_final(op_id, Duration::from_secs(120))).unwrap();
    assert_eq!(done.status, OperationStatus::Succeeded, "the stop operation ended {}: {:?}", done.status.as_str(), done.error);
    wait_until("later created", || {
        let i: Value = serde_json::from_slice(&hangar(&["instance", "info", "acme/later", "--json"]).stdout).unwrap_or_default();
        i["observed"] == "stopped"
    });
    let st = hangar(&["instance", "start", "acme/keep"]);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let starts = hangar(&["instance", "exec", "acme/keep", "--", "cat", "/home/starts"]);
    assert_eq!(String::from_utf8_lossy(&starts.stdout), "start\nstart\n", "one start before the stop, one after");

    // Now kill -9 the agent while the instance runs and start the agent again:
    // the sandbox is adopted, not restarted: after the new agent demonstrably converged
    // (the hub got a report from it, and reports follow convergence passes), the
    // sandbox's process is the very one from before.
    let sandbox = rt.block_on(c.instance_get("acme", "keep")).unwrap().id.sandbox_id();
    let pid_before = sandbox_pid(&agent_dir, &sandbox);
    agent.kill().unwrap();
    agent.wait().unwrap();
    let restarted_at = time::OffsetDateTime::now_utc();
    agent = spawn(agent_args.clone(), "agent.log");
    wait_until("a report from the restarted agent", || {
        rt.block_on(c.host_get("node-a")).unwrap().last_heartbeat.is_some_and(|t| t > restarted_at)
    });
    let i = rt.block_on(c.instance_get("acme", "keep")).unwrap();
    assert_eq!(i.observed.to_string(), "running", "{i:?}");
    assert_eq!(sandbox_pid(&agent_dir, &sandbox), pid_before, "the agent restarted a running sandbox instead of adopting it");
    let starts = hangar(&["instance", "exec", "acme/keep", "--", "cat", "/home/starts"]);
    assert_eq!(String::from_utf8_lossy(&starts.stdout), "start\nstart\n", "the agent restarted a running sandbox");
    for p in [&mut agent, &mut hub] {
        let _ = p.kill();
        let _ = p.wait();
    }
    drop(cleanup);
}

#[test]
fn a_pool_file_holding_another_filesystem_is_never_formatted() {
    require_root();
    let dir = tempfile::Builder::new().prefix("hangar-e2e-disk-").tempdir().unwrap();
    let data = dir.path().join("data");
    let _cleanup = Cleanup(data.clone());
    let img = data.join("agent/storage/pool.img");
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    assert!(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img).status().unwrap().success());
    let o = Command::new(bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("HANGAR_CONFIG", dir.path().join("config.json"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "hangar up accepted an ext4 pool file");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ext4"), "the error should name what the file holds: {err}");
    let blkid = Command::new("blkid").arg("-p").arg(&img).output().unwrap();
    assert!(String::from_utf8_lossy(&blkid.stdout).contains("TYPE=\"ext4\""), "the file was changed");
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        down(&self.0);
    }
}
