//! A hostile tenant against logs and exec, with the real binary and real sandboxes:
//! each test names one attack and fails if its defence is removed.

mod common;

use hangar_types::api::ExecRequest;
use hangar_types::{ErrorCode, InstanceId};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A fleet with a tenant `acme` and a running instance `acme/<name>` running `command`.
fn fleet_with(up_args: &[&str], name: &str, command: &[&str]) -> common::Fleet {
    let f = common::up_with(up_args);
    f.run(&["tenant", "create", "acme"]);
    let mut args = vec!["instance", "create", &*format!("acme/{name}"), "--start", "--"].into_iter().map(str::to_string).collect::<Vec<_>>();
    args.extend(command.iter().map(|s| s.to_string()));
    f.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    f
}

fn sandbox_of(f: &common::Fleet, name: &str) -> String {
    let id: InstanceId = f.json(&["instance", "info", &format!("acme/{name}")])["id"].as_str().unwrap().parse().unwrap();
    id.sandbox_id().to_string()
}

/// The log files of a sandbox on the host: the live one and its rotated ones, with sizes.
fn log_files(f: &common::Fleet, sandbox: &str) -> Vec<(PathBuf, u64)> {
    let dir = f.data_dir().join("agent/logs");
    let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{sandbox}.log")))
        .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect();
    v.sort();
    v
}

fn exec(command: &[&str], env: &[(&str, &str)], timeout_secs: u64) -> ExecRequest {
    ExecRequest {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        timeout_secs: Some(timeout_secs),
    }
}


#[test]
fn yes_in_a_sandbox_cannot_fill_the_host_disk_with_its_log() {
    let f = fleet_with(&["--log-max-mib", "1", "--log-files", "3"], "yes", &["yes"]);
    let sandbox = sandbox_of(&f, "yes");
    let cap = 1u64 << 20;
    // `yes` writes as fast as it may for a while; the files never pass the cap.
    let started = Instant::now();
    let mut rotated = false;
    while started.elapsed() < Duration::from_secs(6) {
        let files = log_files(&f, &sandbox);
        assert!(files.len() <= 3, "more log files than --log-files 3: {files:?}");
        for (p, len) in &files {
            assert!(*len <= cap, "{} is {len} bytes, over --log-max-mib 1", p.display());
        }
        rotated |= files.len() == 3;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(rotated, "the log was never rotated: {:?}", log_files(&f, &sandbox));
    // The workload is not stopped for it: its output is still being copied.
    let newest = log_files(&f, &sandbox).iter().filter_map(|(p, _)| std::fs::metadata(p).ok()?.modified().ok()?.elapsed().ok()).min();
    assert!(newest.is_some_and(|d| d < Duration::from_secs(2)), "no log was written in the last 2 s: {newest:?}");

    // The tail is read from the end: 5 lines, fast, whatever the log's size.
    let t = Instant::now();
    let out = f.run(&["instance", "logs", "acme/yes", "--tail", "5"]);
    assert!(t.elapsed() < Duration::from_secs(5), "instance logs --tail 5 took {:?}", t.elapsed());
    assert_eq!(out.lines().collect::<Vec<_>>(), ["y"; 5], "{out}");
    // --lines is the same flag under its older name.
    assert_eq!(f.run(&["instance", "logs", "acme/yes", "--lines", "2"]).lines().count(), 2);
    // Asking for more than fits in one answer is cut at 1 MiB, not read whole.
    let j = f.json(&["instance", "logs", "acme/yes", "--tail", "10000000"]);
    assert!(j["lines"].as_array().unwrap().len() <= 10_000, "the answer holds more lines than any call may ask");
    f.run(&["instance", "delete", "acme/yes"]);
    common::wait_until("the deleted instance's logs are removed, rotated ones too", || log_files(&f, &sandbox).is_empty());
}

#[test]
fn logs_follow_sees_new_lines_as_they_are_written() {
    let f = fleet_with(&[], "ticker", &["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.3; done"]);
    let mut child = std::process::Command::new(common::bin())
        .args(["instance", "logs", "acme/ticker", "--tail", "1", "--follow"])
        .env("HANGAR_CONFIG", f.config())
        .env_remove("HANGAR_TOKEN")
        .env_remove("HANGAR_HUB")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<u64> = vec![];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 6 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            seen.extend(l.strip_prefix("tick-").and_then(|n| n.parse::<u64>().ok()));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.len() >= 6, "--follow printed only {seen:?} in 30 s");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "lines lost or repeated: {seen:?}");
}

#[test]
fn exec_timeout_of_ten_to_the_twelve_is_refused_not_overflowed() {
    let f = fleet_with(&[], "box", &["sleep", "infinity"]);
    let c = f.client().unwrap();
    for t in [1_000_000_000_000u64, u64::MAX] {
        let (status, body) = common::block_on(c.raw("POST", "/v1/tenants/acme/instances/box/exec", Some(&serde_json::json!({"command": ["true"], "timeout_secs": t})))).unwrap();
        assert_eq!(status, 400, "timeout_secs {t}: {body}");
        assert!(body["message"].as_str().unwrap().contains("timeout_secs"), "the error names the field: {body}");
    }
    let err = f.fail(&["instance", "exec", "acme/box", "--timeout", "1000000000000", "--", "true"]);
    assert!(err.contains("timeout_secs") && err.contains("3600"), "{err}");
    // Within the limit it works.
    assert_eq!(f.run(&["instance", "exec", "acme/box", "--timeout", "3600", "--", "echo", "ok"]), "ok\n");
}

#[test]
fn exec_flood_past_the_per_instance_limit_is_refused_with_429() {
    let f = fleet_with(&[], "box", &["sleep", "infinity"]);
    let sandbox = sandbox_of(&f, "box");
    let c = f.client().unwrap();
    let results = common::block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let c = c.clone();
            set.spawn(async move { c.instance_exec("acme", "box", &exec(&["sleep", "4"], &[], 30)).await });
        }
        // While they sleep: host-side helpers (runc exec) are bounded by the limit too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let helpers = common::host_command_lines().into_iter().filter(|(_, l)| l.contains(" exec ") && l.contains(&sandbox)).count();
        assert!(helpers <= 8, "{helpers} host processes exec into the sandbox, past the limit of 8");
        let mut out = vec![];
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(refused.iter().all(|e| e.code() == Some(ErrorCode::TooManyRequests)), "only 429s: {refused:?}");
    assert_eq!((ok, refused.len()), (8, 12), "8 run at once, the rest are refused");
    assert!(refused[0].to_string().contains("8 commands already run"), "{}", refused[0]);
    // Once they are done, exec works again.
    assert_eq!(f.run(&["instance", "exec", "acme/box", "--", "echo", "again"]), "again\n");
}

#[test]
fn exec_env_is_not_visible_in_any_host_process_command_line() {
    let f = fleet_with(&[], "box", &["sleep", "infinity"]);
    let c = f.client().unwrap();
    let secret = format!("s3cr3t-{}", std::process::id());
    let got = common::block_on(async {
        let req = exec(&["sh", "-c", "sleep 3; echo $API_KEY"], &[("API_KEY", &secret)], 30);
        let run = c.instance_exec("acme", "box", &req);
        let look = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            common::host_command_lines().into_iter().filter(|(_, l)| l.contains(&secret)).collect::<Vec<_>>()
        };
        tokio::join!(run, look)
    });
    let (res, leaks) = got;
    assert_eq!(leaks, vec![], "the exec's env is in a host command line");
    assert_eq!(res.unwrap().stdout.trim(), secret, "the env reaches the command");
    // The process file it went through is gone.
    let sandbox = sandbox_of(&f, "box");
    let exec_dir = f.data_dir().join("agent/bundles").join(&sandbox).join("exec");
    assert_eq!(std::fs::read_dir(&exec_dir).map(|d| d.count()).unwrap_or(0), 0, "process files left in {}", exec_dir.display());
}

#[test]
fn nul_bytes_in_exec_command_or_env_are_a_400_not_a_500() {
    let f = fleet_with(&[], "box", &["sleep", "infinity"]);
    let c = f.client().unwrap();
    let path = "/v1/tenants/acme/instances/box/exec";
    for (body, field) in [
        (serde_json::json!({"command": ["echo", "a\u{0}b"]}), "command[1]"),
        (serde_json::json!({"command": ["true"], "env": {"K": "a\u{0}b"}}), "env value"),
        (serde_json::json!({"command": ["true"], "env": {"K\u{0}": "v"}}), "env name"),
    ] {
        let (status, answer) = common::block_on(c.raw("POST", path, Some(&body))).unwrap();
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_argument", "{answer}");
        assert!(answer["message"].as_str().unwrap().contains(field), "the error names {field}: {answer}");
    }
    // An instance's env too.
    let (status, answer) = common::block_on(c.raw("POST", "/v1/tenants/acme/instances", Some(&serde_json::json!({
        "name": "evil", "image": "host", "vcpus": 1, "mem_mib": 64, "disk_mib": 64, "env": {"K": "a\u{0}"}
    }))))
    .unwrap();
    assert_eq!(status, 400, "{answer}");
    // The CLI cannot even carry a NUL (argv is NUL-terminated): what it reports for
    // a refused exec is the hub's message.
    let err = f.fail(&["instance", "exec", "acme/box", "--timeout", "0", "--", "true"]);
    assert!(err.contains("timeout_secs must be at least 1"), "{err}");
}

#[test]
fn fork_bomb_in_an_exec_is_stopped_by_the_sandbox_pids_limit() {
    let f = fleet_with(&[], "box", &["sleep", "infinity"]);
    let c = f.client().unwrap();
    let limit = common::block_on(c.instance_stats("acme", "box")).unwrap().pids_limit;
    assert!(limit < 4096, "the sandbox has a pids limit: {limit}");
    // Far more processes than the limit, each living long enough to be counted.
    let script = format!("for i in $(seq {}); do sleep 20 >/dev/null 2>&1 & done 2>/dev/null; echo forked", limit + 500);
    let r = common::block_on(c.instance_exec("acme", "box", &exec(&["sh", "-c", &script], &[], 60))).unwrap();
    // The shell gives up at the first fork the limit refuses (dash exits 2 for it).
    assert!(!r.stdout.contains("forked"), "every fork succeeded: {r:?}");
    let pids = common::block_on(c.instance_stats("acme", "box")).unwrap().pids;
    // The exec's children are in the sandbox's cgroup (else pids would stay near 1) and
    // the limit held.
    assert!(pids + 10 >= limit && pids <= limit, "pids {pids}, limit {limit}");
    let sleeping = common::host_command_lines().into_iter().filter(|(_, l)| l.trim() == "sleep 20").count() as u64;
    assert!(sleeping <= limit, "{sleeping} forked processes on the host, past the limit {limit}");
    f.run(&["instance", "stop", "acme/box"]);
}

#[test]
fn a_workload_keeps_its_log_across_an_agent_kill9() {
    // The workload holds its FIFO read-write: no SIGPIPE while no agent reads, and the
    // next agent copies what it wrote meanwhile.
    let mut f = fleet_with(&[], "ticker", &["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"]);
    let last = |f: &common::Fleet| -> u64 {
        f.run(&["instance", "logs", "acme/ticker", "--tail", "1"]).trim().strip_prefix("tick-").and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    common::wait_until("the workload's first lines", || last(&f) > 2);
    common::crash_and_restart(&mut f);
    let after_restart = last(&f);
    common::wait_until("lines written after the restart", || last(&f) > after_restart + 5);
    let i = f.json(&["instance", "info", "acme/ticker"]);
    assert_eq!(i["observed"], "running", "{i}");
}
