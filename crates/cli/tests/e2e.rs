//! End to end, with the real binary: a hub and an agent on loopback, real runc
//! sandboxes and a real btrfs pool.

mod common;

use serde_json::Value;

#[test]
fn user_flow_from_create_to_delete() {
    let f = common::up();
    f.run(&["tenant", "create", "acme", "--max-vcpus", "8", "--max-mem", "8192", "--max-running", "4", "--max-instances", "10", "--max-disk", "20"]);
    f.run(&["instance", "create", "acme/web", "--image", "host", "--cpus", "1", "--mem", "256", "--disk", "1024", "--", "sleep", "infinity"]);
    let out = f.run(&["instance", "start", "acme/web"]);
    assert!(out.contains("running on host local"), "{out}");
    let out = f.run(&["instance", "exec", "acme/web", "--", "sh", "-c", "echo hi > /home/hi.txt; cat /home/hi.txt"]);
    assert_eq!(out, "hi\n");
    // The exit code of the command is the CLI's exit code.
    let o = f.try_run(&["instance", "exec", "acme/web", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));

    f.run(&["instance", "warm", "acme/web"]);
    let i = f.json(&["instance", "info", "acme/web"]);
    assert_eq!((i["state"].as_str(), i["observed"].as_str()), (Some("warm"), Some("warm")));
    let err = f.fail(&["instance", "exec", "acme/web", "--", "true"]);
    assert!(err.contains("warm"), "{err}");
    f.run(&["instance", "resume", "acme/web"]);
    f.run(&["instance", "stop", "acme/web"]);
    let i = f.json(&["instance", "info", "acme/web"]);
    assert_eq!((i["state"].as_str(), i["observed"].as_str()), (Some("stopped"), Some("stopped")));
    f.run(&["instance", "start", "acme/web"]);
    assert_eq!(f.run(&["instance", "exec", "acme/web", "--", "cat", "/home/hi.txt"]), "hi\n");

    // Logs hold the workload's output.
    f.run(&["instance", "create", "acme/talker", "--start", "--", "sh", "-c", "echo hello-from-workload; exec sleep infinity"]);
    let logs = f.json(&["instance", "logs", "acme/talker"]);
    assert!(logs["lines"].as_array().unwrap().iter().any(|l| l == "hello-from-workload"), "{logs}");

    let stats = f.json(&["instance", "stats", "acme/web"]);
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["pids"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["memory_limit_bytes"].as_u64().unwrap(), 256 * 1024 * 1024, "{stats}");

    let list = f.json(&["instance", "list", "--tenant", "acme"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["talker", "web"]);

    let events = f.json(&["events", "acme", "--last", "5"]);
    assert_eq!(events.as_array().unwrap().len(), 5);
    let all = f.json(&["events", "acme", "--last", "200"]);
    let actions: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["tenant.create", "instance.create", "instance.start", "instance.warm", "instance.resume", "instance.stop", "instance.exec"] {
        assert!(actions.contains(&a), "no {a} event in {actions:?}");
    }

    f.run(&["instance", "delete", "acme/web"]);
    f.run(&["instance", "delete", "acme/talker"]);
    assert_eq!(f.json(&["instance", "list", "--tenant", "acme"]), Value::Array(vec![]));
    // Nothing of them is left on the host.
    let runc = std::process::Command::new("runc").arg("--root").arg(f.data_dir().join("agent/runtime")).args(["list", "-q"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&runc.stdout).trim(), "", "sandboxes left behind");
    // A tenant token works (and so is cached by the hub) until its tenant is destroyed.
    let tok = f.json(&["token", "create", "--tenant", "acme"])["token"].as_str().unwrap().to_string();
    f.run(&["instance", "list", "--tenant", "acme", "--token", &tok]);
    f.run(&["tenant", "destroy", "acme"]);
    let err = f.fail(&["instance", "list", "--tenant", "acme", "--token", &tok]);
    assert!(err.contains("invalid token"), "{err}");
}

#[test]
fn daemon_runs_in_the_background_and_refuses_a_second_copy() {
    common::require_root();
    let dir = tempfile::Builder::new().prefix("hangar-e2e-daemon-").tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("config.json");
    struct Down(std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            common::down(&self.0);
        }
    }
    let _down = Down(data.clone());
    let hangar = |args: &[&str]| std::process::Command::new(common::bin()).args(args).env("HANGAR_CONFIG", &cfg).output().unwrap();
    let d = data.to_str().unwrap();
    let port = common::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let start = hangar(&["daemon", "start", "--data-dir", d, "--listen", &listen, "--pool-size-mib", "1024"]);
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    let again = hangar(&["daemon", "start", "--data-dir", d, "--listen", &listen]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
    let st: Value = serde_json::from_slice(&hangar(&["daemon", "status", "--data-dir", d, "--json"]).stdout).unwrap();
    assert_eq!(st["state"], "running", "{st}");
    // The CLI found the hub through the config the daemon wrote.
    assert!(hangar(&["tenant", "create", "acme"]).status.success());
    let logs = hangar(&["daemon", "logs", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("hangar is up"));
    let stop = hangar(&["daemon", "stop", "--data-dir", d]);
    assert!(stop.status.success());
    let st = hangar(&["daemon", "status", "--data-dir", d, "--json"]);
    assert_eq!(st.status.code(), Some(3));
    assert_eq!(serde_json::from_slice::<Value>(&st.stdout).unwrap()["state"], "stopped");
}

#[test]
fn shell_completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let o = std::process::Command::new(common::bin()).args(["completions", shell]).output().unwrap();
        assert!(o.status.success());
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains("instance") && s.contains("tenant"), "{shell} completions lack commands");
    }
}
