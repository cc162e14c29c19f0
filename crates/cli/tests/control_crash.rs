//! Issue 13, crash windows: the hub killed (abort, like kill -9) at each step of `init`
//! and of `pool delete` through test-only failpoints (`HANGAR_FAILPOINT`), then run
//! again: nothing is lost or left half-done.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn hangar(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(bin()).args(args).env("HANGAR_CONFIG", config).envs(env.iter().copied()).output().unwrap()
}

/// For every step of `init`: a kill there leaves no client config or one whose token
/// works; `init` run again finishes, and the hub it made serves the admin token.
#[test]
fn init_killed_at_every_step_leaves_nothing_or_a_usable_admin_token() {
    for step in ["init.after-keys", "init.after-db", "init.after-token", "init.after-config"] {
        let dir = tempfile::tempdir().unwrap();
        let (data, config) = (dir.path().join("data"), dir.path().join("config.json"));
        let listen = format!("127.0.0.1:{}", free_port());
        let args = ["init", "--data-dir", data.to_str().unwrap(), "--listen", &listen];
        let o = hangar(&config, &args, &[("HANGAR_FAILPOINT", step)]);
        assert!(!o.status.success(), "{step}: init did not stop at the failpoint");
        assert!(data.join("hub/init.partial").exists(), "{step}: the interrupted init left no marker");
        // Serving an interrupted init is refused, never half-made.
        let serve = hangar(&config, &["hub", "serve", "--data-dir", data.to_str().unwrap(), "--listen", &listen], &[]);
        assert!(!serve.status.success() && String::from_utf8_lossy(&serve.stderr).contains("hangar init"), "{step}: {serve:?}");
        let o = hangar(&config, &args, &[]);
        assert!(o.status.success(), "{step}: init again: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!data.join("hub/init.partial").exists());
        let mut hub = Command::new(bin())
            .args(["hub", "serve", "--data-dir", data.to_str().unwrap(), "--listen", &listen])
            .env("HANGAR_CONFIG", &config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let cfg = hangar_node::config::load(&config).unwrap();
        let ok = block_on(async {
            let c = hangar_client::HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token).unwrap();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if c.tenant_list().await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        let _ = hub.kill();
        let _ = hub.wait();
        assert!(ok, "{step}: the admin token in the client config does not work");
    }
}

/// `pool delete` killed after it marked the pool (counts zero) and after its first
/// member: after a restart the reconciler never brings a member back, the members go,
/// and the delete run again removes the pool.
#[test]
fn pool_delete_killed_mid_way_converges_to_no_members() {
    for step in ["pool.delete.after-mark", "pool.delete.after-member"] {
        require_root();
        let once = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        std::fs::remove_file(&once).unwrap();
        let mut opts = FleetOptions::new(bin(), "hangar-crash-");
        opts.pool_size_mib = 2048;
        opts.env = vec![("HANGAR_FAILPOINT".into(), step.into()), ("HANGAR_FAILPOINT_ONCE".into(), once.to_str().unwrap().into())];
        let mut f = block_on(Fleet::start(opts)).unwrap_or_else(|e| panic!("{e:#}"));
        f.run(&["tenant", "create", "acme", "--max-running", "8", "--max-instances", "8", "--max-mem", "4096"]);
        f.run(&["pool", "create", "acme/workers", "--cpus", "1", "--mem", "64", "--disk", "64", "--running", "3"]);
        let c = f.client().unwrap();
        wait_until("3 running members", || block_on(c.pool_members("acme", "workers")).is_ok_and(|m| m.iter().filter(|i| i.state == hangar_types::InstanceState::Running).count() == 3));
        let o = f.try_run(&["pool", "delete", "acme/workers"]);
        assert!(!o.status.success(), "{step}: the delete did not hit the failpoint");
        assert!(once.exists(), "{step}: the failpoint did not fire");
        crash_and_restart(&mut f);
        let c = f.client().unwrap();
        // Converges to no members within 30 s, and none comes back meanwhile.
        let t = Instant::now();
        loop {
            let m = block_on(c.pool_members("acme", "workers")).unwrap_or_default();
            let live = m.iter().filter(|i| i.state != hangar_types::InstanceState::Deleted).count();
            assert!(live <= 3, "{step}: a member was added after the crash: {m:?}");
            if m.is_empty() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "{step}: members left 30 s after the restart: {m:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
        let p = block_on(c.pool_info("acme", "workers")).unwrap();
        assert_eq!(p.pool.counts, hangar_types::api::PoolCounts::default(), "{step}: the pool was not marked for deletion");
        f.run(&["pool", "delete", "acme/workers"]);
        assert!(block_on(c.pool_list("acme")).unwrap().is_empty());
        assert!(block_on(c.instance_list(Some("acme"))).unwrap().is_empty());
    }
}
